/**
 * Issue 4's benchmarks, side by side in one run:
 *  - CGI: a C hello and a /bin/sh hello through `gatehouse serve`, Apache
 *    httpd mod_cgid (event MPM), nginx + fcgiwrap and lighttpd mod_cgi, at 1,
 *    16 and 64 connections (requests/s and p99);
 *  - FastCGI: a PHP hello through `gatehouse serve` -> php-fpm and through
 *    nginx -> php-fpm, 16 connections, each front with its own php-fpm pool
 *    of the same configuration (4 workers, pm static): a php-fpm worker
 *    serves one connection at a time, so a front that keeps its connections
 *    open (gatehouse, by default) would otherwise hold every worker and
 *    starve the next front measured. Two more fronts are yardsticks,
 *    bench/lib/minimal-fastcgi-proxy.mjs: the least a node:http proxy does
 *    per request, with none of the checks, and the same on bare node:net
 *    sockets (--net), to show what Node itself costs.
 */
import { expectBody, freePort, startNginx, startPhpFpm, startProcess, waitForListener, wrk } from './lib/peers.mjs';
import {
  RECOMMENDED_NODE_FLAGS,
  makeHelloCgiBin,
  startApacheCgid,
  startGatehouseServe,
  startLighttpdCgi,
  startNginxFcgiwrap,
} from './lib/cgi-peers.mjs';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export async function runServeBench({
  duration = 6,
  connectionCounts = [1, 16, 64],
  scripts = ['hello-c', 'hello-sh'],
  serveArgs = [],
} = {}) {
  const { cgiBin } = makeHelloCgiBin();
  const stacks = [
    ['gatehouse serve', await startGatehouseServe({ args: ['--cgi-bin', cgiBin, ...serveArgs] })],
    ['Apache httpd mod_cgid (event)', await startApacheCgid({ cgiBin })],
    ['nginx + fcgiwrap', await startNginxFcgiwrap({ cgiBin })],
    ['lighttpd mod_cgi', await startLighttpdCgi({ cgiBin })],
  ];
  for (const [, stack] of stacks) for (const script of scripts) await expectBody(`${stack.url}/cgi-bin/${script}`, 'hello\n');
  const rows = [];
  const ratios = [];
  for (const script of scripts) {
    for (const connections of connectionCounts) {
      const measured = {};
      for (const [name, stack] of stacks) {
        process.stdout.write(`  ${script} ${connections} conn ${name}... `);
        const result = await wrk({ url: `${stack.url}/cgi-bin/${script}`, connections, seconds: duration });
        console.log(`${fmt(result.requestsPerSecond)} req/s`);
        measured[name] = result.requestsPerSecond;
        rows.push({
          script,
          connections,
          server: name,
          'req/s': fmt(result.requestsPerSecond),
          'p99 ms': fmt(result.p99, 1),
          errors: result.non2xx || result.socketErrors ? `${result.non2xx} non-2xx ${result.socketErrors}` : '',
        });
      }
      const ours = measured['gatehouse serve'];
      ratios.push(
        `${script}, ${connections} conn: gatehouse / Apache mod_cgid = ${fmt(ours / measured['Apache httpd mod_cgid (event)'], 2)}x, / nginx+fcgiwrap = ${fmt(ours / measured['nginx + fcgiwrap'], 2)}x, / lighttpd = ${fmt(ours / measured['lighttpd mod_cgi'], 2)}x`,
      );
    }
  }
  for (const [, stack] of stacks) await stack.stop();

  // FastCGI: one php-fpm pool per front, all configured alike (see the top of this file).
  const nginxFpm = await startPhpFpm({ workers: 4 });
  const nginx = await startNginx({ fastcgiPass: `unix:${nginxFpm.socketPath}`, scriptFilename: nginxFpm.script });
  const serveFpm = await startPhpFpm({ workers: 4 });
  const config = join(serveFpm.dir, 'gatehouse-bench-serve.toml');
  writeFileSync(
    config,
    `[[fastcgi]]\nurl = "/"\nupstreams = ["unix:${serveFpm.socketPath}"]\nscript-filename = "${serveFpm.script}"\nmax-connections = 4\n`,
  );
  const serve = await startGatehouseServe({ args: ['--config', config] });
  const minimalProxy = join(dirname(fileURLToPath(import.meta.url)), 'lib', 'minimal-fastcgi-proxy.mjs');
  const startYardstick = async (flags, describe) => {
    const fpm = await startPhpFpm({ workers: 4 });
    const port = await freePort();
    const proxy = startProcess(process.execPath, [
      ...RECOMMENDED_NODE_FLAGS,
      minimalProxy,
      ...flags,
      String(port),
      fpm.socketPath,
      fpm.script,
    ]);
    await waitForListener({ host: '127.0.0.1', port }, 10_000, proxy.alive, describe);
    return `http://127.0.0.1:${port}/`;
  };
  const minimalUrl = await startYardstick([], 'the minimal FastCGI proxy');
  const rawNetUrl = await startYardstick(['--net'], 'the minimal FastCGI proxy (--net)');
  const fronts = [
    ['nginx -> php-fpm', nginx.url],
    ['gatehouse serve -> php-fpm', `${serve.url}/`],
    ['minimal node:http proxy -> php-fpm (yardstick)', minimalUrl],
    ['minimal node:net proxy, no HTTP checks -> php-fpm (yardstick)', rawNetUrl],
  ];
  for (const [, url] of fronts) await expectBody(url, 'hello\n');
  const fastcgi = {};
  for (const round of [1, 2]) {
    for (const [name, url] of fronts) {
      process.stdout.write(`  php hello round ${round} ${name}... `);
      const result = await wrk({ url, connections: 16, seconds: duration });
      console.log(`${fmt(result.requestsPerSecond)} req/s`);
      (fastcgi[name] ??= []).push(result.requestsPerSecond);
      rows.push({
        script: 'hello.php',
        connections: 16,
        server: name,
        'req/s': fmt(result.requestsPerSecond),
        'p99 ms': fmt(result.p99, 1),
        errors: result.non2xx || result.socketErrors ? `${result.non2xx} non-2xx ${result.socketErrors}` : '',
      });
    }
  }
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  const ratio = (a, b) => fmt(mean(fastcgi[a]) / mean(fastcgi[b]), 2);
  ratios.push(
    `hello.php, 16 conn: gatehouse serve -> php-fpm / nginx -> php-fpm = ${ratio('gatehouse serve -> php-fpm', 'nginx -> php-fpm')}x (target >= 0.8x)`,
  );
  ratios.push(
    `hello.php, 16 conn: minimal node:http proxy / nginx -> php-fpm = ${ratio('minimal node:http proxy -> php-fpm (yardstick)', 'nginx -> php-fpm')}x (the most a node:http front reached here)`,
  );
  ratios.push(
    `hello.php, 16 conn: minimal node:net proxy / nginx -> php-fpm = ${ratio('minimal node:net proxy, no HTTP checks -> php-fpm (yardstick)', 'nginx -> php-fpm')}x (the most any front on Node's sockets reached here)`,
  );
  ratios.push(
    `hello.php, 16 conn: gatehouse serve / minimal node:http proxy = ${ratio('gatehouse serve -> php-fpm', 'minimal node:http proxy -> php-fpm (yardstick)')}x`,
  );
  return {
    title: 'gatehouse serve vs Apache mod_cgid, nginx + fcgiwrap, lighttpd; serve -> php-fpm vs nginx -> php-fpm',
    rows,
    verdicts: ratios,
  };
}

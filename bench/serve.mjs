/**
 * Issue 4's benchmarks, side by side in one run:
 *  - CGI: a C hello and a /bin/sh hello through `gatehouse serve`, Apache
 *    httpd mod_cgid (event MPM), nginx + fcgiwrap and lighttpd mod_cgi, at 1,
 *    16 and 64 connections (requests/s and p99);
 *  - FastCGI: a PHP hello through `gatehouse serve` -> php-fpm and through
 *    nginx -> php-fpm (the same php-fpm pool, 4 workers, 16 connections).
 */
import { expectBody, startNginx, startPhpFpm, wrk } from './lib/peers.mjs';
import { makeHelloCgiBin, startApacheCgid, startGatehouseServe, startLighttpdCgi, startNginxFcgiwrap } from './lib/cgi-peers.mjs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export async function runServeBench({ duration = 6, connectionCounts = [1, 16, 64], scripts = ['hello-c', 'hello-sh'], serveArgs = [] } = {}) {
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

  // FastCGI: the same php-fpm pool behind nginx and behind gatehouse serve.
  const fpm = await startPhpFpm({ workers: 4 });
  const nginx = await startNginx({ fastcgiPass: `unix:${fpm.socketPath}`, scriptFilename: fpm.script });
  const config = join(fpm.dir, 'gatehouse-bench-serve.toml');
  writeFileSync(config, `[[fastcgi]]\nurl = "/"\nupstreams = ["unix:${fpm.socketPath}"]\nscript-filename = "${fpm.script}"\nmax-connections = 4\n`);
  const serve = await startGatehouseServe({ args: ['--config', config] });
  await expectBody(nginx.url, 'hello\n');
  await expectBody(`${serve.url}/`, 'hello\n');
  const fastcgi = {};
  for (const round of [1, 2]) {
    for (const [name, url] of [
      ['nginx -> php-fpm', nginx.url],
      ['gatehouse serve -> php-fpm', `${serve.url}/`],
    ]) {
      process.stdout.write(`  php hello round ${round} ${name}... `);
      const result = await wrk({ url, connections: 16, seconds: duration });
      console.log(`${fmt(result.requestsPerSecond)} req/s`);
      (fastcgi[name] ??= []).push(result.requestsPerSecond);
      rows.push({ script: 'hello.php', connections: 16, server: name, 'req/s': fmt(result.requestsPerSecond), 'p99 ms': fmt(result.p99, 1), errors: result.non2xx || result.socketErrors ? `${result.non2xx} non-2xx ${result.socketErrors}` : '' });
    }
  }
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  ratios.push(`hello.php, 16 conn: gatehouse serve -> php-fpm / nginx -> php-fpm = ${fmt(mean(fastcgi['gatehouse serve -> php-fpm']) / mean(fastcgi['nginx -> php-fpm']), 2)}x (target >= 0.8x)`);
  return { title: 'gatehouse serve vs Apache mod_cgid, nginx + fcgiwrap, lighttpd; serve -> php-fpm vs nginx -> php-fpm', rows, verdicts: ratios };
}

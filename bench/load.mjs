#!/usr/bin/env node
/**
 * Issue 17, items 3 and 4 (fair under load, cost per request), side by side
 * in one run, taking turns so a change in the machine's load hits every stack:
 *  - CGI, C hello: `gatehouse serve` (cgid daemon, access log on, to a file)
 *    against lighttpd mod_cgi, nginx + fcgiwrap (4) and Apache mod_cgid, at 1,
 *    16, 64 and 256 connections with wrk's default 2 s timeout; requests/s,
 *    p50/p99/max, requests past the timeout, and the CPU time per request of
 *    serve's front and daemon from /proc;
 *  - FastCGI: hello.php through `gatehouse serve`, through the node:http
 *    yardstick (bench/lib/minimal-fastcgi-proxy.mjs) and through nginx, each in
 *    front of its own php-fpm pool (4 workers), 16 connections: the front's CPU
 *    time per request;
 *  - idle memory: RSS and PSS (/proc/PID/smaps_rollup) of serve's front and
 *    daemon and of the peers, before any load.
 *
 *   node bench/load.mjs [--duration 4] [--repeats 2] [--only cgi,fastcgi,memory] [--no-write]
 *   (after `npx tsc -p .`; writes its section into bench/README.md)
 */
import { parseArgs } from 'node:util';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import {
  childrenOf,
  cpuMicros,
  expectBody,
  freePort,
  memory,
  startNginx,
  startPhpFpm,
  startProcess,
  stopAll,
  tempDir,
  tree,
  waitForListener,
  wrk,
} from './lib/peers.mjs';
import {
  RECOMMENDED_NODE_FLAGS,
  SERVE_USER_ARGS,
  makeHelloCgiBin,
  startApacheCgid,
  startLighttpdCgi,
  startNginxFcgiwrap,
} from './lib/cgi-peers.mjs';
import { markdownTable, renderSection, writeSection } from './lib/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = join(here, '../dist/src/cli/main.js');
const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const sum = (values) => values.reduce((a, b) => a + b, 0);

async function startServe({ args, dir, nodeArgs = RECOMMENDED_NODE_FLAGS }) {
  const port = await freePort();
  const running = startProcess(process.execPath, [
    ...nodeArgs,
    MAIN,
    'serve',
    ...SERVE_USER_ARGS,
    '--listen',
    `127.0.0.1:${port}`,
    '--access-log',
    join(dir, `access-${port}.log`),
    '--error-log',
    join(dir, `error-${port}.log`),
    '--runtime-dir',
    join(dir, `run-${port}`),
    ...args,
  ]);
  await waitForListener({ host: '127.0.0.1', port }, 60_000, running.alive, 'gatehouse serve').catch((error) => {
    throw new Error(`gatehouse serve did not start: ${error.message}\n${running.output()}`);
  });
  const front = running.child.pid;
  // The daemon is the front's only child while idle.
  let daemon;
  for (let waited = 0; daemon === undefined && waited < 5000; waited += 50) {
    daemon = childrenOf(front)[0];
    if (daemon === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { ...running, url: `http://127.0.0.1:${port}`, front, daemon, pids: daemon ? [front, daemon] : [front] };
}

async function cgiSection({ duration, repeats, dir }) {
  const { cgiBin } = makeHelloCgiBin();
  const serve = await startServe({ args: ['--cgi-bin', cgiBin], dir });
  const lighttpd = await startLighttpdCgi({ cgiBin });
  const fcgiwrap = await startNginxFcgiwrap({ cgiBin });
  const apache = await startApacheCgid({ cgiBin });
  const stacks = [
    { name: 'gatehouse serve (cgid daemon, access log on)', short: 'serve', stack: serve },
    { name: 'lighttpd mod_cgi', short: 'lighttpd', stack: lighttpd },
    { name: 'nginx + fcgiwrap (4)', short: 'fcgiwrap', stack: fcgiwrap },
    { name: 'Apache httpd mod_cgid (event)', short: 'apache', stack: apache },
  ];
  for (const { stack } of stacks) await expectBody(`${stack.url}/cgi-bin/hello-c`, 'hello\n');
  // Idle memory before any load (after one request each, so every stack has started what it starts).
  const idle = {
    serveFront: memory([serve.front]),
    serveDaemon: memory([serve.daemon]),
    lighttpd: memory(tree(lighttpd.child.pid)),
    apache: memory(tree(apache.child.pid)),
  };
  const points = [
    { connections: 1, who: ['serve', 'lighttpd', 'fcgiwrap'] },
    { connections: 16, who: ['serve', 'lighttpd', 'fcgiwrap', 'apache'] },
    { connections: 64, who: ['serve', 'lighttpd', 'fcgiwrap'] },
    { connections: 256, who: ['serve', 'lighttpd', 'fcgiwrap'] },
  ];
  const results = new Map();
  const loads = [];
  for (let round = 0; round < repeats; round++) {
    for (const point of points) {
      for (const entry of stacks.filter((stack) => point.who.includes(stack.short))) {
        const pids = entry.short === 'serve' ? [serve.front, serve.daemon] : [];
        const before = pids.map((pid) => cpuMicros([pid]));
        const result = await wrk({
          url: `${entry.stack.url}/cgi-bin/hello-c`,
          connections: point.connections,
          seconds: duration,
          timeoutSeconds: 2,
        });
        const after = pids.map((pid) => cpuMicros([pid]));
        const answered = Math.max(1, result.requests);
        result.frontCpu = pids.length ? (after[0] - before[0]) / answered : NaN;
        result.daemonCpu = pids.length ? (after[1] - before[1]) / answered : NaN;
        const key = `${point.connections}/${entry.short}`;
        if (!results.has(key)) results.set(key, []);
        results.get(key).push(result);
        loads.push(os.loadavg()[0]);
        console.log(
          `  ${point.connections} conn ${entry.name}: ${fmt(result.requestsPerSecond)} req/s, p99 ${fmt(result.p99, 1)} ms, timeouts ${result.timeouts}${pids.length ? `, front ${fmt(result.frontCpu)} + daemon ${fmt(result.daemonCpu)} µs/req` : ''}, load ${fmt(os.loadavg()[0], 1)}`,
        );
      }
    }
  }
  for (const { stack } of stacks) await stack.stop();
  const rows = [];
  const of = (connections, short) => results.get(`${connections}/${short}`) ?? [];
  for (const point of points) {
    for (const entry of stacks.filter((stack) => point.who.includes(stack.short))) {
      const runs = of(point.connections, entry.short);
      rows.push({
        connections: point.connections,
        server: entry.name,
        'req/s (median)': fmt(median(runs.map((run) => run.requestsPerSecond))),
        runs: runs.map((run) => fmt(run.requestsPerSecond)).join(' / '),
        'p50 ms': fmt(median(runs.map((run) => run.p50)), 1),
        'p99 ms': fmt(median(runs.map((run) => run.p99)), 1),
        'p99 runs': runs.map((run) => fmt(run.p99, 0)).join(' / '),
        'past 2 s': sum(runs.map((run) => run.timeouts)),
        'front+daemon CPU µs/req':
          entry.short === 'serve'
            ? `${fmt(median(runs.map((run) => run.frontCpu)))} + ${fmt(median(runs.map((run) => run.daemonCpu)))}`
            : '',
      });
    }
  }
  const rps = (connections, short) => median(of(connections, short).map((run) => run.requestsPerSecond));
  const p99 = (connections, short) => median(of(connections, short).map((run) => run.p99));
  const timeouts = (connections, short) => sum(of(connections, short).map((run) => run.timeouts));
  const serveCpu = median(of(16, 'serve').map((run) => run.frontCpu + run.daemonCpu));
  const verdict = (ok) => (ok ? 'met' : 'MISSED');
  const verdicts = [
    `16 conn: front + daemon CPU ${fmt(serveCpu)} µs per request against 0.71-0.73 ms before (target: 20% less, <= 576 µs): ${verdict(serveCpu <= 576)}`,
    `16 conn: serve / nginx + fcgiwrap = ${fmt(rps(16, 'serve') / rps(16, 'fcgiwrap'), 2)}x (target >= 1.0x), / Apache mod_cgid = ${fmt(rps(16, 'serve') / rps(16, 'apache'), 2)}x (target >= 1.2x), / lighttpd = ${fmt(rps(16, 'serve') / rps(16, 'lighttpd'), 2)}x`,
    `1 conn: serve p99 ${fmt(p99(1, 'serve'), 1)} ms, lighttpd ${fmt(p99(1, 'lighttpd'), 1)} ms = ${fmt(p99(1, 'serve') / p99(1, 'lighttpd'), 2)}x (target <= 2x): ${verdict(p99(1, 'serve') <= 2 * p99(1, 'lighttpd'))}`,
    ...[64, 256].map(
      (connections) =>
        `${connections} conn: serve p99 ${fmt(p99(connections, 'serve'))} ms = ${fmt(p99(connections, 'serve') / p99(connections, 'lighttpd'), 2)}x lighttpd's, ${fmt(p99(connections, 'serve') / p99(connections, 'fcgiwrap'), 2)}x nginx + fcgiwrap's (target <= 2x both); past 2 s: serve ${timeouts(connections, 'serve')}, lighttpd ${timeouts(connections, 'lighttpd')}, fcgiwrap ${timeouts(connections, 'fcgiwrap')} (target 0)`,
    ),
  ];
  const memoryRows = [
    { process: 'gatehouse serve: front', ...idle.serveFront },
    { process: 'gatehouse serve: cgid daemon', ...idle.serveDaemon },
    {
      process: 'gatehouse serve: front + daemon',
      rss: idle.serveFront.rss + idle.serveDaemon.rss,
      pss: idle.serveFront.pss + idle.serveDaemon.pss,
    },
    { process: 'lighttpd (all processes)', ...idle.lighttpd },
    { process: 'Apache httpd mod_cgid (all processes)', ...idle.apache },
  ].map((row) => ({ process: row.process, 'RSS MB': fmt(row.rss, 1), 'PSS MB': fmt(row.pss, 1) }));
  verdicts.push(
    `idle: the cgid daemon alone ${fmt(idle.serveDaemon.rss, 1)} MB RSS (target <= 40 MB): ${verdict(idle.serveDaemon.rss <= 40)}`,
  );
  return { rows, verdicts, memoryRows, loads };
}

async function fastcgiSection({ duration, repeats, dir }) {
  const nginxFpm = await startPhpFpm({ workers: 4 });
  const nginx = await startNginx({ fastcgiPass: `unix:${nginxFpm.socketPath}`, scriptFilename: nginxFpm.script });
  const serveFpm = await startPhpFpm({ workers: 4 });
  const { writeFileSync } = await import('node:fs');
  const config = join(serveFpm.dir, 'gatehouse-bench-load.toml');
  writeFileSync(
    config,
    `[[fastcgi]]\nurl = "/"\nupstreams = ["unix:${serveFpm.socketPath}"]\nscript-filename = "${serveFpm.script}"\nmax-connections = 4\n`,
  );
  const serve = await startServe({ args: ['--config', config], dir });
  const yardFpm = await startPhpFpm({ workers: 4 });
  const port = await freePort();
  const yard = startProcess(process.execPath, [
    ...RECOMMENDED_NODE_FLAGS,
    join(here, 'lib', 'minimal-fastcgi-proxy.mjs'),
    String(port),
    yardFpm.socketPath,
    yardFpm.script,
  ]);
  await waitForListener({ host: '127.0.0.1', port }, 10_000, yard.alive, 'the minimal FastCGI proxy');
  const fronts = [
    { name: 'nginx -> php-fpm (nginx workers)', url: nginx.url, pids: () => childrenOf(nginx.child.pid) },
    { name: 'gatehouse serve -> php-fpm (front)', url: `${serve.url}/`, pids: () => [serve.front] },
    { name: 'minimal node:http proxy -> php-fpm (yardstick)', url: `http://127.0.0.1:${port}/`, pids: () => [yard.child.pid] },
  ];
  for (const front of fronts) await expectBody(front.url, 'hello\n');
  const runs = new Map(fronts.map((front) => [front.name, []]));
  for (let round = 0; round < repeats; round++) {
    for (const front of fronts) {
      const pids = front.pids();
      const before = cpuMicros(pids);
      const result = await wrk({ url: front.url, connections: 16, seconds: duration });
      result.cpu = (cpuMicros(pids) - before) / Math.max(1, result.requests);
      runs.get(front.name).push(result);
      console.log(
        `  php ${front.name}: ${fmt(result.requestsPerSecond)} req/s, front CPU ${fmt(result.cpu)} µs/req, load ${fmt(os.loadavg()[0], 1)}`,
      );
    }
  }
  await serve.stop();
  const rows = fronts.map((front) => {
    const list = runs.get(front.name);
    return {
      front: front.name,
      'req/s (median)': fmt(median(list.map((run) => run.requestsPerSecond))),
      runs: list.map((run) => fmt(run.requestsPerSecond)).join(' / '),
      'p99 ms': fmt(median(list.map((run) => run.p99)), 1),
      'front CPU µs/req (median)': fmt(median(list.map((run) => run.cpu))),
      'CPU runs': list.map((run) => fmt(run.cpu)).join(' / '),
    };
  });
  const cpu = (name) => median(runs.get(name).map((run) => run.cpu));
  const ours = cpu(fronts[1].name);
  const verdicts = [
    `front CPU per request, gatehouse serve / node:http yardstick = ${fmt(ours / cpu(fronts[2].name), 2)}x (target <= 1.1x): ${ours <= 1.1 * cpu(fronts[2].name) ? 'met' : 'MISSED'}`,
    `front CPU per request, gatehouse serve / nginx = ${fmt(ours / cpu(fronts[0].name), 2)}x (2.0-2.2x before)`,
    `requests/s, gatehouse serve / nginx = ${fmt(median(runs.get(fronts[1].name).map((run) => run.requestsPerSecond)) / median(runs.get(fronts[0].name).map((run) => run.requestsPerSecond)), 2)}x`,
  ];
  return { rows, verdicts };
}

export async function runLoadBench({ duration = 4, repeats = 2, only = ['cgi', 'fastcgi'] } = {}) {
  const dir = tempDir('gatehouse-bench-load-');
  const parts = [];
  const verdicts = [];
  let loads = [];
  if (only.includes('cgi')) {
    const cgi = await cgiSection({ duration, repeats, dir });
    parts.push(
      '#### CGI, C hello (wrk waits at most 2 s per response)',
      '',
      markdownTable(cgi.rows),
      '',
      '#### Idle memory',
      '',
      markdownTable(cgi.memoryRows),
    );
    verdicts.push(...cgi.verdicts);
    loads = cgi.loads;
  }
  if (only.includes('fastcgi')) {
    const fastcgi = await fastcgiSection({ duration, repeats, dir });
    parts.push('', '#### FastCGI route: hello.php, 16 connections', '', markdownTable(fastcgi.rows));
    verdicts.push(...fastcgi.verdicts);
  }
  return {
    title: `Issue 17: fair under load and cost per request (${duration} s per run, ${repeats} rounds taken in turns, medians)`,
    rows: [],
    body: parts.join('\n'),
    verdicts,
    notes: [
      `${os.cpus().length} cores; load average during the CGI runs ${loads.length ? `${fmt(Math.min(...loads), 1)}-${fmt(Math.max(...loads), 1)}` : '-'} (other work shared the machine).`,
      "past 2 s: responses that took longer than the 2 s wrk was told to wait, which it leaves out of p50 and p99. CPU µs/req: user+system time of serve's front and daemon from /proc over the run, divided by the responses wrk counted (scripts not included).",
      'serve runs with `--max-semi-space-size=64` (gatehouse-serve(8)) and its access log on, written to a file; the peers as configured in bench/lib.',
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '4' },
      repeats: { type: 'string', default: '2' },
      only: { type: 'string', default: 'cgi,fastcgi' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => stopAll().finally(() => process.exit(130)));
  let status = 0;
  try {
    const result = await runLoadBench({ duration: Number(values.duration), repeats: Number(values.repeats), only: values.only.split(',') });
    console.log(`\n${result.title}\n\n${result.body}`);
    for (const line of [...result.verdicts, ...result.notes]) console.log(`- ${line}`);
    if (!values['no-write']) {
      const command = `npx tsc -p . && node bench/load.mjs --duration ${values.duration} --repeats ${values.repeats} --only ${values.only}`;
      const section = renderSection('load', { ...result, rows: [] }, command).replace('(no rows)', result.body);
      writeSection(join(here, 'README.md'), 'load', section);
      console.log('\nresults written to bench/README.md');
    }
  } catch (error) {
    console.error(error?.stack ?? error);
    status = 1;
  } finally {
    await stopAll();
  }
  process.exit(status);
}

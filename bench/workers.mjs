#!/usr/bin/env node
/**
 * `gatehouse serve --workers 2` against `--workers 1` (issue 17), in one run,
 * on three routes of the same configuration: a static file, a C hello CGI
 * (through the cgid daemon) and a PHP hello through php-fpm (FastCGI). wrk
 * -t2 -c16 per point; rounds in ABBA order (1 2, then 2 1) so that the load
 * from elsewhere hits both sides alike. For every run:
 *
 *  - requests/s and the ratio 2 workers / 1 worker (target >= 0.95);
 *  - CPU per request from /proc (user + system of the front processes: the
 *    single serve, or the supervisor and its workers; the cgid daemon apart);
 *  - each worker's share of the requests, counted from the access log's %P
 *    (both sides write the same "%P" log to a file; target 30-70% each).
 *
 * Each side has its own php-fpm pool of 4 (pm static): a php-fpm worker holds
 * one kept-alive connection, so with 2 fronts' workers max-connections is 2
 * per worker (4 in all, as with one worker) — see gatehouse-serve(8) WORKERS.
 *
 *   npx tsc -p . && node bench/workers.mjs [--duration SECONDS] [--rounds N] [--connections C]
 *
 * Results go to standard output; bench/WORKERS.md records them with this command.
 */
import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync, openSync, readSync, closeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuMicros, expectBody, freePort, startPhpFpm, startProcess, stopAll, tempDir, waitForListener, wrk } from './lib/peers.mjs';
import { RECOMMENDED_NODE_FLAGS, SERVE_USER_ARGS, makeHelloCgiBin } from './lib/cgi-peers.mjs';
import { markdownTable } from './lib/report.mjs';
import { setTimeout as sleep } from 'node:timers/promises';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    connections: { type: 'string', default: '16' },
  },
});
const duration = Number(values.duration);
const rounds = Number(values.rounds);
const connections = Number(values.connections);
if (!(duration >= 1 && duration <= 60) || !(rounds >= 1 && rounds <= 10) || !(connections >= 1 && connections <= 1024)) {
  console.error('--duration 1..60 seconds, --rounds 1..10, --connections 1..1024');
  process.exit(2);
}

/** Live children of `parent` whose command line contains `word`. */
function childrenMatching(parent, word) {
  const found = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== parent) continue;
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').includes(word)) found.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return found;
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
/** CPU time (µs) of the reaped children of `pids` (cutime + cstime): for the cgid daemon, its scripts'. */
function childrenCpuMicros(pids) {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[13]) + Number(fields[14]);
    } catch {
      /* gone */
    }
  }
  return (ticks * 1_000_000) / CLOCK_TICKS;
}

/** The lines appended to `file` since `offset`, and the new offset. */
function readFrom(file, offset) {
  const size = statSync(file).size;
  const buffer = Buffer.alloc(size - offset);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buffer, 0, buffer.length, offset);
  } finally {
    closeSync(fd);
  }
  return { lines: buffer.toString('latin1').split('\n').filter(Boolean), offset: size };
}

const { dir: cgiDir, cgiBin } = makeHelloCgiBin();
const docroot = join(cgiDir, 'www');
mkdirSync(docroot);
writeFileSync(join(docroot, 'hello.txt'), 'hello\n');

async function startSide(workers) {
  const fpm = await startPhpFpm({ workers: 4 });
  const dir = tempDir('gatehouse-bench-workers-');
  const accessLog = join(dir, 'access.log');
  writeFileSync(accessLog, '');
  const config = join(dir, 'serve.toml');
  writeFileSync(
    config,
    `docroot = "${docroot}"
cgi-bin = "${cgiBin}"
access-log = "${accessLog}"
access-log-format = "%P"

[[fastcgi]]
url = "/php/"
upstreams = ["unix:${fpm.socketPath}"]
script-filename = "${fpm.script}"
max-connections = ${4 / workers}
`,
  );
  const port = await freePort();
  const running = startProcess(process.execPath, [
    ...RECOMMENDED_NODE_FLAGS,
    join(repo, 'dist/src/cli/main.js'),
    'serve',
    ...SERVE_USER_ARGS,
    '--config',
    config,
    '--listen',
    `127.0.0.1:${port}`,
    '--workers',
    String(workers),
  ]);
  await waitForListener({ host: '127.0.0.1', port }, 15_000, running.alive, `serve --workers ${workers}`);
  const base = `http://127.0.0.1:${port}`;
  for (let waited = 0; workers > 1 && !/with \d+ workers/.test(running.output()) && waited < 15_000; waited += 50) await sleep(50);
  for (const [path, body] of [
    ['/hello.txt', 'hello\n'],
    ['/cgi-bin/hello-c', 'hello\n'],
    ['/php/', 'hello\n'],
  ])
    await expectBody(`${base}${path}`, body);
  const main = running.child.pid;
  const workerPids = workers > 1 ? childrenMatching(main, 'serve') : [main];
  const daemon = childrenMatching(main, 'cgid');
  return { name: `--workers ${workers}`, workers, base, main, workerPids, daemon, accessLog, offset: statSync(accessLog).size };
}

const sides = [await startSide(1), await startSide(2)];
const routes = [
  ['static', '/hello.txt'],
  // wrk opens its connections once and keeps them: the shares above are decided by who accepted those 16.
  // A connection per request shows how the accepts themselves spread.
  ['static, a connection per request', '/hello.txt', ['Connection: close']],
  ['CGI (C hello)', '/cgi-bin/hello-c'],
  ['FastCGI (php-fpm)', '/php/'],
];
// Warm-up, not measured: V8 compiles the hot paths of each route in every process first.
for (const side of sides)
  for (const [, path, headers = []] of routes)
    await wrk({ url: `${side.base}${path}`, connections, seconds: Math.min(2, duration), headers });
const results = {};
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? sides : [...sides].reverse();
  for (const [route, path, headers = []] of routes) {
    for (const side of order) {
      const fronts = [side.main, ...side.workerPids.filter((pid) => pid !== side.main)];
      const before = { front: cpuMicros(fronts), daemon: cpuMicros(side.daemon), scripts: childrenCpuMicros(side.daemon) };
      ({ offset: side.offset } = readFrom(side.accessLog, side.offset));
      process.stdout.write(`  round ${round + 1} ${route} ${side.name}... `);
      const run = await wrk({ url: `${side.base}${path}`, connections, seconds: duration, headers });
      const after = { front: cpuMicros(fronts), daemon: cpuMicros(side.daemon), scripts: childrenCpuMicros(side.daemon) };
      // The access log is written in batches: wait until it has a line per request wrk counted (bounded).
      let lines = [];
      for (let waited = 0; waited < 5000; waited += 50) {
        const read = readFrom(side.accessLog, side.offset);
        lines = read.lines;
        if (lines.length >= run.requests) break;
        await sleep(50);
      }
      side.offset = statSync(side.accessLog).size;
      const byPid = side.workerPids.map((pid) => lines.filter((line) => Number(line) === pid).length);
      const served = byPid.reduce((a, b) => a + b, 0) || 1;
      console.log(`${run.requestsPerSecond.toFixed(0)} req/s`);
      (results[`${route}|${side.name}`] ??= []).push({
        rps: run.requestsPerSecond,
        frontUs: (after.front - before.front) / run.requests,
        daemonUs: (after.daemon - before.daemon) / run.requests,
        scriptsUs: (after.scripts - before.scripts) / run.requests,
        shares: byPid.map((count) => count / served),
        errors: run.non2xx + (run.socketErrors ? 1 : 0),
        socketErrors: run.socketErrors,
      });
    }
  }
}
// Resident memory after the runs, per process (VmRSS).
const rss = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const memory = sides.map((side) => {
  const parts = [
    side.workers > 1 ? `supervisor ${rss(side.main).toFixed(0)}` : `serve ${rss(side.main).toFixed(0)}`,
    ...(side.workers > 1 ? side.workerPids.map((pid) => `worker ${rss(pid).toFixed(0)}`) : []),
    ...side.daemon.map((pid) => `cgid daemon ${rss(pid).toFixed(0)}`),
  ];
  return `${side.name}: ${parts.join(', ')} MiB RSS`;
});
await stopAll();

const mean = (list) => list.reduce((a, b) => a + b, 0) / list.length;
const rows = [];
const verdicts = [];
for (const [route] of routes) {
  for (const side of sides) {
    const runs = results[`${route}|${side.name}`];
    rows.push({
      route,
      side: side.name,
      'req/s (mean)': mean(runs.map((run) => run.rps)).toFixed(0),
      runs: runs.map((run) => run.rps.toFixed(0)).join(' / '),
      'front CPU µs/req': mean(runs.map((run) => run.frontUs)).toFixed(0),
      'cgid daemon CPU µs/req': route.startsWith('CGI') ? mean(runs.map((run) => run.daemonUs)).toFixed(0) : '-',
      'scripts CPU µs/req': route.startsWith('CGI') ? mean(runs.map((run) => run.scriptsUs)).toFixed(0) : '-',
      'share per worker':
        side.workers > 1 ? runs.map((run) => run.shares.map((share) => `${(share * 100).toFixed(0)}%`).join('+')).join(', ') : '-',
      errors: runs.map((run) => run.errors).reduce((a, b) => a + b, 0) || '',
    });
  }
  // Per round, the ratio of runs that ran next to each other; the mean of those.
  const one = results[`${route}|--workers 1`];
  const two = results[`${route}|--workers 2`];
  const ratios = two.map((run, index) => run.rps / one[index].rps);
  const shares = two.flatMap((run) => run.shares);
  verdicts.push(
    `${route}: 2 workers / 1 worker = ${mean(ratios).toFixed(2)}x (rounds ${ratios.map((r) => r.toFixed(2)).join(', ')}; target >= 0.95); worker shares ${Math.round(Math.min(...shares) * 100)}-${Math.round(Math.max(...shares) * 100)}% (target 30-70%)`,
  );
}
console.log(
  `\nmachine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}; wrk -t2 -c${connections} -d${duration}s, ${rounds} rounds ABBA\n`,
);
console.log(markdownTable(rows));
for (const verdict of verdicts) console.log(`- ${verdict}`);
for (const line of memory) console.log(`- ${line}`);
process.exit(0);

#!/usr/bin/env node
/**
 * gatehouse kfcgi benchmark (issue 6), behind one nginx, with wrk:
 *
 *   1. fixed pool vs spawn-fcgi: the same libfcgi program, 4 workers each
 *      (target: within 5%, since the manager is out of the data path);
 *   2. variable pool vs fixed pool with the gatehouse worker library (Node)
 *      (target: at least 0.8x);
 *   3. dynamic pool (-D, starting at one worker, growing to -N) vs fixed
 *      pool of the same size, with the libfcgi program and with php-cgi
 *      (issue 17: at least 0.95x); the dynamic pool's size after the run;
 *   4. the manager's resident memory after each run.
 *
 *   npx tsc -p . && node bench/kfcgi.mjs [--duration SECONDS] [--rounds N] [--connections C] [--only TEXT ...]
 *
 * Rounds alternate their order (A B C, then C B A) so that load from
 * elsewhere on the machine hits every side alike; the table gives the median
 * of the rounds. Results go
 * to standard output; bench/KFCGI.md records them with this command.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNginx, stopAll as stopPeers, wrk as runWrk } from './lib/peers.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '4' },
    connections: { type: 'string', default: '16' },
    workers: { type: 'string', default: '4' },
    // Run only the sides whose names contain this text (for investigating one; ratios need both sides).
    only: { type: 'string', multiple: true },
  },
});
const duration = Number(values.duration);
const rounds = Number(values.rounds);
const connections = Number(values.connections);
const workers = Number(values.workers);

const work = mkdtempSync(join(tmpdir(), 'gatehouse-bench-kfcgi-'));
const cleanups = [];
const stopAll = async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(work, { recursive: true, force: true });
};
process.on('SIGINT', () => stopAll().then(() => process.exit(130)));

function start(command, args, options = {}) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let output = '';
  child.stdout.on('data', (chunk) => (output += chunk));
  child.stderr.on('data', (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    await Promise.race([exited, sleep(8000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { child, stop, output: () => output, exited };
}

async function waitForPath(path, connect) {
  for (let i = 0; i < 200; i += 1) {
    try {
      execFileSync('/usr/bin/cgi-fcgi', ['-bind', '-connect', path], {
        env: { REQUEST_METHOD: 'GET', SCRIPT_FILENAME: '/x' },
        stdio: 'ignore',
        timeout: 2000,
      });
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`nothing answered on ${path} (${connect})`);
}

/** CPU seconds a process has used (utime + stime), from /proc. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rss(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

// --- the program, nginx ---------------------------------------------------------
const hello = join(work, 'hello-libfcgi');
execFileSync('gcc', ['-O2', '-o', hello, join(root, 'test/fixtures/kfcgi/hello-libfcgi.c'), '-lfcgi']);
const kcgiExt = join(work, 'kcgi-extension-worker');
execFileSync('gcc', ['-O2', '-o', kcgiExt, join(root, 'test/fixtures/kfcgi/kcgi-extension-worker.c')]);
const nodeWorker = join(root, 'dist/test/fixtures/kfcgi/node-worker.js');
const WARM_UP_SECONDS = 3;
const gatehouse = join(root, 'dist/src/cli/main.js');
const { readStatus } = await import(join(root, 'dist/src/kfcgi/status.js'));
const socket = join(work, 'app.sock');
const statusSocket = join(work, 'status.sock');
// php-cgi runs SCRIPT_FILENAME; the other programs ignore it, so one nginx serves every side.
const phpScript = join(work, 'hello.php');
writeFileSync(phpScript, '<?php header("Content-Type: text/plain"); echo "hello from php-cgi pid ", getmypid(), "\\n";');
const phpCgi = '/usr/bin/php-cgi';
// One php-cgi process per worker (no children of its own), never leaving after a number of requests.
const phpEnv = { ...process.env, PHP_FCGI_CHILDREN: '0', PHP_FCGI_MAX_REQUESTS: '0' };

// One nginx for every side, started before them (each side binds the socket it passes to).
const nginx = await startNginx({ fastcgiPass: `unix:${socket}`, scriptFilename: phpScript });
// A second nginx that keeps its FastCGI connections alive (fastcgi_keep_conn on, keepalive = wrk's connections):
// a variable pool then pays its descriptor hand-off once per kept-alive connection, not per request.
const nginxKeepalive = await startNginx({ fastcgiPass: `unix:${socket}`, scriptFilename: phpScript, upstreamKeepalive: connections });
cleanups.push(stopPeers);

async function wrk() {
  return wrkAt(nginx.url);
}

async function wrkKeepalive() {
  return wrkAt(nginxKeepalive.url);
}

/**
 * A warm-up run first (not counted), then the measured one: a pool that grows starts its workers during the
 * first seconds (a Node worker takes a few hundred ms, seconds when a dozen start at once on 2 cores), and
 * each worker's JIT warms up on its share of the requests; measured cold, a short run is mostly start-up.
 */
async function wrkAt(url) {
  await runWrk({ url, connections, seconds: WARM_UP_SECONDS });
  const result = await runWrk({ url, connections, seconds: duration });
  return {
    requestsPerSecond: result.requestsPerSecond,
    non2xx: result.non2xx,
    errors: result.socketErrors,
    latency: `p99 ${result.p99} ms`,
  };
}

// --- the sides ---------------------------------------------------------------------
async function withSpawnFcgi(run) {
  rmSync(socket, { force: true });
  const output = execFileSync('/usr/bin/spawn-fcgi', ['-s', socket, '-F', String(workers), '-M', '0660', '--', hello], {
    encoding: 'utf8',
  });
  const pids = [...output.matchAll(/PID: (\d+)/g)].map((match) => Number(match[1]));
  try {
    await waitForPath(socket, 'spawn-fcgi');
    return { ...(await run()), managerRss: null };
  } finally {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {}
    }
    await sleep(300);
    rmSync(socket, { force: true });
  }
}

async function withKfcgi(args, run, env = process.env) {
  const kfcgi = start(process.execPath, [gatehouse, 'kfcgi', '-d', '-p', '/', '-s', socket, '-S', statusSocket, ...args], { env });
  try {
    await waitForPath(socket, `kfcgi ${args.join(' ')}`);
    await sleep(1200); // past the start-up check
    const cpuBefore = cpuSeconds(kfcgi.child.pid);
    const result = await run();
    const managerCpu = cpuSeconds(kfcgi.child.pid) - cpuBefore;
    const status = await readStatus(statusSocket);
    return { ...result, managerRss: rss(kfcgi.child.pid), managerCpu, workersAfter: status.workers };
  } finally {
    await kfcgi.stop();
  }
}

const sides = {
  'spawn-fcgi, libfcgi': () => withSpawnFcgi(wrk),
  'kfcgi fixed, libfcgi': () => withKfcgi(['-n', String(workers), hello], wrk),
  'kfcgi fixed, Node worker': () => withKfcgi(['-n', String(workers), process.execPath, nodeWorker], wrk),
  'kfcgi variable, Node worker': () =>
    withKfcgi(['-r', '-n', String(workers), '-N', String(connections), process.execPath, nodeWorker], wrk),
  'kfcgi variable -C 16, Node worker': () =>
    withKfcgi(['-r', '-n', String(workers), '-N', String(workers), '-C', '16', process.execPath, nodeWorker], wrk),
  // As many workers as this machine has cores: fewer processes to wake per connection.
  [`kfcgi fixed -n ${cpus().length}, Node worker`]: () => withKfcgi(['-n', String(cpus().length), process.execPath, nodeWorker], wrk),
  [`kfcgi variable -n ${cpus().length} -C 16, Node worker`]: () =>
    withKfcgi(['-r', '-n', String(cpus().length), '-N', String(cpus().length), '-C', '16', process.execPath, nodeWorker], wrk),
  'kfcgi variable, C extension worker': () => withKfcgi(['-r', '-n', String(workers), '-N', String(connections), kcgiExt], wrk),
  // Behind nginx with upstream keep-alive: one connection per worker is kcgi's model, so -N as many as nginx keeps.
  'kfcgi fixed, Node worker, nginx keep-alive': () => withKfcgi(['-n', String(workers), process.execPath, nodeWorker], wrkKeepalive),
  'kfcgi variable, Node worker, nginx keep-alive': () =>
    withKfcgi(['-r', '-n', String(workers), '-N', String(connections), process.execPath, nodeWorker], wrkKeepalive),
  'kfcgi variable -C 16, Node worker, nginx keep-alive': () =>
    withKfcgi(['-r', '-n', String(workers), '-N', String(workers), '-C', '16', process.execPath, nodeWorker], wrkKeepalive),
  'kfcgi variable, C extension worker, nginx keep-alive': () =>
    withKfcgi(['-r', '-n', String(workers), '-N', String(connections), kcgiExt], wrkKeepalive),
  'kfcgi fixed, libfcgi, nginx keep-alive': () => withKfcgi(['-n', String(workers), hello], wrkKeepalive),
  // The dynamic pool starts at one worker and grows to the fixed pool's size under the load (-w long enough to keep them).
  'kfcgi dynamic, libfcgi': () => withKfcgi(['-D', '-n', '1', '-N', String(workers), '-w', '60', hello], wrk),
  'kfcgi fixed, php-cgi': () => withKfcgi(['-n', String(workers), phpCgi], wrk, phpEnv),
  'kfcgi dynamic, php-cgi': () => withKfcgi(['-D', '-n', '1', '-N', String(workers), '-w', '60', phpCgi], wrk, phpEnv),
};

if (values.only) for (const name of Object.keys(sides)) if (!values.only.some((text) => name.includes(text))) delete sides[name];
const results = Object.fromEntries(Object.keys(sides).map((name) => [name, []]));
try {
  for (let round = 0; round < rounds; round += 1) {
    // A B C ... then ... C B A: every side runs early and late equally often (ABBA), so drift in the
    // machine's load does not favour one side.
    const order = round % 2 === 0 ? Object.entries(sides) : Object.entries(sides).reverse();
    for (const [name, run] of order) {
      const result = await run();
      results[name].push(result);
      console.error(
        `round ${round + 1} ${name}: ${result.requestsPerSecond.toFixed(0)} req/s, latency ${result.latency}, non-2xx ${result.non2xx}${result.errors ? `, socket errors ${result.errors}` : ''}${result.managerRss ? `, manager RSS ${(result.managerRss / 1048576).toFixed(1)} MiB` : ''}${result.managerCpu !== undefined ? `, manager CPU ${(result.managerCpu * 1000).toFixed(0)} ms` : ''}${result.workersAfter ? `, ${result.workersAfter} worker(s) after the run` : ''}`,
      );
    }
  }
} finally {
  await stopAll();
}

const median = (numbers) => {
  const sorted = [...numbers].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const row = (name) => {
  const runs = results[name];
  const rps = median(runs.map((run) => run.requestsPerSecond));
  const failed = runs.reduce((sum, run) => sum + run.non2xx, 0);
  const rssValues = runs.map((run) => run.managerRss).filter((value) => value !== null);
  return {
    name,
    rps,
    failed,
    runs: runs.map((run) => run.requestsPerSecond.toFixed(0)).join(' / '),
    rss: rssValues.length ? `${(median(rssValues) / 1048576).toFixed(1)} MiB` : '-',
  };
};
const table = Object.keys(sides).map(row);
console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}; wrk -t2 -c${connections} -d${duration}s through nginx (1 worker process), ${workers} workers, ${rounds} rounds in ABBA order, median`,
);
console.log('| side | requests/s (median) | rounds | non-2xx | manager RSS |');
console.log('| --- | ---: | --- | ---: | ---: |');
for (const entry of table) console.log(`| ${entry.name} | ${entry.rps.toFixed(0)} | ${entry.runs} | ${entry.failed} | ${entry.rss} |`);
// Ratios are taken per round between sides that ran next to each other, then the median of those: the
// machine's load drifts between rounds far more than within one.
const pairedRatio = (numerator, denominator) => {
  if (!results[numerator] || !results[denominator]) return 'not measured in this run (--only)';
  const ratios = results[numerator].map((run, index) => run.requestsPerSecond / results[denominator][index].requestsPerSecond);
  const sorted = [...ratios].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  const value = sorted.length % 2 ? sorted[Math.floor(middle)] : (sorted[middle - 1] + sorted[middle]) / 2;
  return `${value.toFixed(3)} (rounds: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')})`;
};
console.log(`\nkfcgi fixed / spawn-fcgi (libfcgi): ${pairedRatio('kfcgi fixed, libfcgi', 'spawn-fcgi, libfcgi')} (target >= 0.95)`);
console.log(
  `kfcgi variable / fixed (Node worker, one connection per worker as in kcgi): ${pairedRatio('kfcgi variable, Node worker', 'kfcgi fixed, Node worker')} (target >= 0.8)`,
);
console.log(
  `kfcgi variable -C 16 / fixed (Node worker): ${pairedRatio('kfcgi variable -C 16, Node worker', 'kfcgi fixed, Node worker')} (target >= 0.8)`,
);
console.log(
  `kfcgi variable -n ${cpus().length} -C 16 / fixed -n ${cpus().length} (Node worker, one worker per core): ${pairedRatio(`kfcgi variable -n ${cpus().length} -C 16, Node worker`, `kfcgi fixed -n ${cpus().length}, Node worker`)} (target >= 0.8)`,
);
console.log(
  `kfcgi variable (C extension worker) / fixed (libfcgi): ${pairedRatio('kfcgi variable, C extension worker', 'kfcgi fixed, libfcgi')}`,
);
console.log(
  `with nginx upstream keep-alive: kfcgi variable / fixed (Node worker): ${pairedRatio('kfcgi variable, Node worker, nginx keep-alive', 'kfcgi fixed, Node worker, nginx keep-alive')}; variable -C 16 / fixed (Node worker): ${pairedRatio('kfcgi variable -C 16, Node worker, nginx keep-alive', 'kfcgi fixed, Node worker, nginx keep-alive')}; variable (C extension worker) / fixed (libfcgi): ${pairedRatio('kfcgi variable, C extension worker, nginx keep-alive', 'kfcgi fixed, libfcgi, nginx keep-alive')}`,
);
console.log(
  `kfcgi dynamic -n 1 -N ${workers} / fixed -n ${workers} (libfcgi): ${pairedRatio('kfcgi dynamic, libfcgi', 'kfcgi fixed, libfcgi')} (target >= 0.95)`,
);
console.log(
  `kfcgi dynamic -n 1 -N ${workers} / fixed -n ${workers} (php-cgi): ${pairedRatio('kfcgi dynamic, php-cgi', 'kfcgi fixed, php-cgi')} (target >= 0.95)`,
);

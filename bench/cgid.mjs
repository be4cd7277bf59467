#!/usr/bin/env node
/**
 * Issue 5's benchmarks, side by side in one run (C hello CGI, wrk, bounded):
 *  - `gatehouse serve` starting scripts through the cgid daemon, in-process
 *    with posix_spawn, and in-process with child_process.spawn (fork), each
 *    with a small front and with a front holding about 1.5 GB of live heap;
 *  - Apache httpd mod_cgid (event MPM), nginx + fcgiwrap and lighttpd mod_cgi
 *    on the same script;
 *  - nginx + `gatehouse cgid --fastcgi` vs nginx + fcgiwrap, same nginx config.
 * Besides requests/s and p99 it reports the CPU time per request of the
 * serving processes (front and daemon), read from /proc, which a busy
 * machine disturbs less than requests/s.
 *
 *   node bench/cgid.mjs [--duration SECONDS] [--repeats N] [--connections N] [--no-write]
 *   (after `npx tsc -p .`; writes its results into bench/CGID.md)
 */
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  childrenOf,
  cpuMicros,
  expectBody,
  freePort,
  requireProgram,
  startNginx,
  startProcess,
  stopAll,
  tempDir,
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

/** A module loaded with --import that keeps about `megabytes` of live objects for the life of the process. */
function ballastModule(dir, megabytes) {
  const file = join(dir, 'ballast.mjs');
  // Two thirds in double arrays (dense, resident), one third in small objects (pointer-rich, like an app's heap).
  writeFileSync(
    file,
    `const keep = [];
const doubles = Math.round(${megabytes} * 2 / 3);
for (let i = 0; i < doubles; i++) { const a = new Array(131072); for (let j = 0; j < a.length; j++) a[j] = i + j + 0.5; keep.push(a); }
const objects = Math.round(${megabytes} / 3 * 1048576 / 48);
const chunk = [];
for (let i = 0; i < objects; i++) { chunk.push({ id: i, name: 'x', next: null }); if (chunk.length === 100000) { keep.push(chunk.splice(0)); } }
keep.push(chunk);
globalThis.__gatehouseBenchBallast = keep;
`,
  );
  return file;
}

/** GETs `url` and checks that exactly `length` body bytes arrive. */
async function fetchLength(url, length) {
  const { default: http } = await import('node:http');
  const received = await new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let total = 0;
        res.on('data', (chunk) => (total += chunk.length));
        res.on('end', () => resolve(total));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  if (received !== length) throw new Error(`${url} sent ${received} bytes, expected ${length}`);
}

function rssMegabytes(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}

async function startServe({ cgiBin, mode, ballastMb, dir }) {
  const port = await freePort();
  const nodeArgs = [
    ...RECOMMENDED_NODE_FLAGS,
    ...(ballastMb ? ['--max-old-space-size=6144', '--import', ballastModule(dir, ballastMb)] : []),
  ];
  const running = startProcess(process.execPath, [
    ...nodeArgs,
    MAIN,
    'serve',
    ...SERVE_USER_ARGS,
    '--listen',
    `127.0.0.1:${port}`,
    '--access-log',
    'off',
    '--cgi-bin',
    cgiBin,
    '--cgi-spawn',
    mode,
    '--runtime-dir',
    join(dir, `run-${port}`),
  ]);
  await waitForListener({ host: '127.0.0.1', port }, 120_000, running.alive, 'gatehouse serve').catch((error) => {
    throw new Error(`gatehouse serve did not start: ${error.message}\n${running.output()}`);
  });
  const front = running.child.pid;
  const daemon = mode === 'daemon' ? childrenOf(front)[0] : undefined;
  return { ...running, url: `http://127.0.0.1:${port}`, pids: daemon ? [front, daemon] : [front], front, daemon };
}

async function startCgidFastcgi({ cgiBin, dir }) {
  const socketPath = join(dir, 'cgid-fcgi.sock');
  const face = startProcess(process.execPath, [
    ...RECOMMENDED_NODE_FLAGS,
    MAIN,
    'cgid',
    '--fastcgi',
    `unix:${socketPath}`,
    ...SERVE_USER_ARGS,
  ]);
  await waitForListener({ path: socketPath }, 20_000, face.alive, 'gatehouse cgid --fastcgi');
  const nginx = await startNginx({ fastcgiPass: `unix:${socketPath}`, scriptFilename: join(cgiBin, 'hello-c') });
  return {
    url: nginx.url.replace(/\/$/, ''),
    pids: [face.child.pid],
    stop: async () => {
      await nginx.stop();
      await face.stop();
    },
  };
}

async function startFcgiwrapSameConfig({ cgiBin, dir, children }) {
  const socketPath = join(dir, `fcgiwrap-${children}.sock`);
  const wrap = startProcess(requireProgram('/usr/sbin/fcgiwrap'), ['-s', `unix:${socketPath}`, '-c', String(children)]);
  await waitForListener({ path: socketPath }, 10_000, wrap.alive, 'fcgiwrap');
  const nginx = await startNginx({ fastcgiPass: `unix:${socketPath}`, scriptFilename: join(cgiBin, 'hello-c') });
  // With -c above 1 the preforked children serve and the parent only watches them: count them all.
  for (let waited = 0; children > 1 && childrenOf(wrap.child.pid).length < children && waited < 5000; waited += 50) await sleep(50);
  const pids = [wrap.child.pid, ...childrenOf(wrap.child.pid)];
  return {
    url: nginx.url.replace(/\/$/, ''),
    pids,
    stop: async () => {
      await nginx.stop();
      await wrap.stop();
    },
  };
}

export async function runCgidBench({ duration = 4, repeats = 3, connections = 16, ballastMb = 1536 } = {}) {
  const { cgiBin } = makeHelloCgiBin();
  writeFileSync(
    join(cgiBin, 'big'),
    `#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec head -c ${50 * 1024 * 1024} /dev/zero\n`,
    { mode: 0o755 },
  );
  const dir = tempDir('gatehouse-bench-cgid-');
  const stacks = [];
  const add = async (name, path, start) => {
    process.stdout.write(`  starting ${name}... `);
    const stack = await start();
    await expectBody(`${stack.url}${path}`, 'hello\n');
    console.log(stack.front ? `front RSS ${fmt(rssMegabytes(stack.front))} MB` : 'ok');
    stacks.push({ name, path, stack, runs: [], cpu: [] });
  };
  for (const ballast of [0, ballastMb]) {
    for (const mode of ['daemon', 'in-process', 'fork']) {
      await add(
        `gatehouse serve, ${mode === 'daemon' ? 'cgid daemon' : mode === 'fork' ? 'in-process child_process.spawn' : 'in-process posix_spawn'}, ${ballast ? `${(ballast / 1024).toFixed(1)} GB front` : 'small front'}`,
        '/cgi-bin/hello-c',
        () => startServe({ cgiBin, mode, ballastMb: ballast, dir }),
      );
    }
  }
  await add('Apache httpd mod_cgid (event)', '/cgi-bin/hello-c', () => startApacheCgid({ cgiBin }));
  await add('nginx + fcgiwrap (1 nginx worker, 4 fcgiwrap)', '/cgi-bin/hello-c', () => startNginxFcgiwrap({ cgiBin }));
  await add('lighttpd mod_cgi', '/cgi-bin/hello-c', () => startLighttpdCgi({ cgiBin }));
  await add('nginx + gatehouse cgid --fastcgi (1 process)', '/', () => startCgidFastcgi({ cgiBin, dir }));
  await add('nginx + fcgiwrap, same nginx config (-c 1)', '/', () => startFcgiwrapSameConfig({ cgiBin, dir, children: 1 }));
  await add('nginx + fcgiwrap, same nginx config (-c 4)', '/', () => startFcgiwrapSameConfig({ cgiBin, dir, children: 4 }));

  // Taking turns, so that a change in the machine's load hits every stack.
  for (let round = 0; round < repeats; round++) {
    for (const entry of stacks) {
      const before = entry.stack.pids ? cpuMicros(entry.stack.pids) : NaN;
      const result = await wrk({ url: `${entry.stack.url}${entry.path}`, connections, seconds: duration });
      const after = entry.stack.pids ? cpuMicros(entry.stack.pids) : NaN;
      entry.runs.push(result);
      entry.cpu.push((after - before) / Math.max(1, result.requests));
      console.log(
        `  ${entry.name}: ${fmt(result.requestsPerSecond)} req/s, p99 ${fmt(result.p99, 1)} ms${result.non2xx || result.socketErrors ? `, errors ${result.non2xx} ${result.socketErrors}` : ''}`,
      );
    }
  }
  // The daemon stays out of the data path: 50 MB responses cost the daemon only the spawn.
  const dataPath = stacks.find((entry) => entry.name.startsWith('gatehouse serve, cgid daemon, small')).stack;
  const bytes = 50 * 1024 * 1024;
  const fronts = [cpuMicros([dataPath.front]), cpuMicros([dataPath.daemon])];
  const started = Date.now();
  for (let index = 0; index < 5; index++) await fetchLength(`${dataPath.url}/cgi-bin/big`, bytes);
  const seconds = (Date.now() - started) / 1000;
  const dataPathNote = `Data path: 5 responses of 50 MB through the cgid daemon stack in ${fmt(seconds, 1)} s (${fmt((5 * 50) / seconds)} MB/s); CPU used meanwhile: front ${fmt((cpuMicros([dataPath.front]) - fronts[0]) / 1000)} ms, daemon ${fmt((cpuMicros([dataPath.daemon]) - fronts[1]) / 1000)} ms (the bytes go from the script to the front directly; the daemon only starts the script).`;
  console.log(`  ${dataPathNote}`);
  for (const entry of stacks) await entry.stack.stop();

  // Medians: on a shared machine one disturbed run should not move the result.
  const median = (values) => {
    const sorted = [...values].sort((a, b) => a - b);
    const middle = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  };
  const rps = new Map(stacks.map((entry) => [entry.name, median(entry.runs.map((run) => run.requestsPerSecond))]));
  const cpu = new Map(stacks.map((entry) => [entry.name, median(entry.cpu) / 1000]));
  const rows = stacks.map((entry) => ({
    stack: entry.name,
    'req/s (median)': fmt(rps.get(entry.name)),
    runs: entry.runs.map((run) => fmt(run.requestsPerSecond)).join(' / '),
    'p99 ms (median)': fmt(median(entry.runs.map((run) => run.p99)), 1),
    'serving CPU ms/req': entry.stack.pids ? fmt(cpu.get(entry.name), 3) : '-',
    errors: entry.runs.map((run) => run.non2xx + (run.socketErrors ? 1 : 0)).reduce((a, b) => a + b, 0) || '',
  }));
  const get = (prefix) => rps.get([...rps.keys()].find((name) => name.startsWith(prefix)));
  const cpuOf = (prefix) => cpu.get([...cpu.keys()].find((name) => name.startsWith(prefix)));
  const gb = (ballastMb / 1024).toFixed(1);
  const daemonSmall = get('gatehouse serve, cgid daemon, small');
  const daemonLarge = get(`gatehouse serve, cgid daemon, ${gb}`);
  const lighttpd = get('lighttpd');
  const verdicts = [
    `gatehouse serve (cgid daemon) / lighttpd mod_cgi = ${fmt(daemonSmall / lighttpd, 2)}x (target >= 1.0x)`,
    `cgid daemon, ${gb} GB front / small front = ${fmt(daemonLarge / daemonSmall, 2)}x in requests/s (target within 10%); front+daemon CPU per request ${fmt(cpuOf(`gatehouse serve, cgid daemon, ${gb}`), 3)} vs ${fmt(cpuOf('gatehouse serve, cgid daemon, small'), 3)} ms`,
    `in-process posix_spawn, ${gb} GB / small = ${fmt(get(`gatehouse serve, in-process posix_spawn, ${gb}`) / get('gatehouse serve, in-process posix_spawn, small'), 2)}x; child_process.spawn, ${gb} GB / small = ${fmt(get(`gatehouse serve, in-process child_process.spawn, ${gb}`) / get('gatehouse serve, in-process child_process.spawn, small'), 2)}x`,
    `nginx + gatehouse cgid --fastcgi / nginx + fcgiwrap (same config, -c 1) = ${fmt(get('nginx + gatehouse cgid') / get('nginx + fcgiwrap, same nginx config (-c 1)'), 2)}x, (-c 4) = ${fmt(get('nginx + gatehouse cgid') / get('nginx + fcgiwrap, same nginx config (-c 4)'), 2)}x (target >= 1.0x)`,
    `gatehouse serve (cgid daemon) / Apache mod_cgid = ${fmt(daemonSmall / get('Apache'), 2)}x`,
  ];
  return {
    title: `CGI daemon: C hello CGI at ${connections} connections, ${duration} s per run, ${repeats} runs per stack taken in turns (medians)`,
    rows,
    verdicts,
    notes: [
      dataPathNote,
      `The large front is \`gatehouse serve\` started with \`node --import ballast.mjs\` holding about ${ballastMb} MB of live objects (two thirds dense double arrays, one third small objects); its RSS is printed when it starts.`,
      "serving CPU ms/req: user+system CPU of the front and the daemon (or the FastCGI process) per request, from /proc; it leaves out the scripts themselves and the peers' own front processes where they are not listed.",
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '4' },
      repeats: { type: 'string', default: '3' },
      connections: { type: 'string', default: '16' },
      'ballast-mb': { type: 'string', default: '1536' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => stopAll().finally(() => process.exit(130)));
  let status = 0;
  try {
    const options = {
      duration: Number(values.duration),
      repeats: Number(values.repeats),
      connections: Number(values.connections),
      ballastMb: Number(values['ballast-mb']),
    };
    const result = await runCgidBench(options);
    console.log(`\n${result.title}\n\n${markdownTable(result.rows)}`);
    for (const line of [...result.verdicts, ...result.notes]) console.log(`- ${line}`);
    if (!values['no-write']) {
      const command = `npx tsc -p . && node bench/cgid.mjs --duration ${values.duration} --repeats ${values.repeats} --connections ${values.connections}`;
      writeSection(join(here, 'CGID.md'), 'cgid', renderSection('cgid', result, command));
      console.log('\nresults written to bench/CGID.md');
    }
  } catch (error) {
    console.error(error?.stack ?? error);
    status = 1;
  } finally {
    await stopAll();
  }
  process.exit(status);
}

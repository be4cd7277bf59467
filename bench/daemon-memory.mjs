#!/usr/bin/env node
/**
 * Issue 17, item 4: the memory of the cgid daemon, idle and after a bounded
 * burst of spawns, and what its Node flags cost per spawn.
 *
 *  - Flags A/B: the daemon started by CgidSupervisor (as gatehouse serve
 *    starts it) with no Node flags and with DAEMON_NODE_FLAGS (what serve
 *    passes), taking turns; for each: RSS and PSS (/proc/PID/smaps_rollup)
 *    once it is ready, then N spawns of a C hello CGI, 16 at a time, driven
 *    straight through the supervisor (no HTTP front in the way), with the
 *    daemon's CPU time per spawn (/proc) and spawns/s, then RSS and PSS again.
 *  - Idle memory beside the peers: gatehouse serve's front and daemon after
 *    one request and after N requests (16 at a time), lighttpd and Apache
 *    mod_cgid (all their processes), and a bare
 *    `node -e 'setInterval(...)'` for scale.
 *
 *   node bench/daemon-memory.mjs [--spawns 2000] [--repeats 3] [--also='FLAGS']... [--only flags,peers] [--no-write]
 *   (after `npx tsc -p .`; writes its section into bench/CGID.md)
 */
import { parseArgs } from 'node:util';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { childrenOf, cpuMicros, expectBody, memory, startProcess, stopAll, tempDir, tree } from './lib/peers.mjs';
import { makeHelloCgiBin, startApacheCgid, startGatehouseServe, startLighttpdCgi } from './lib/cgi-peers.mjs';
import { markdownTable, renderSection, writeSection } from './lib/report.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const MAIN = join(here, '../dist/src/cli/main.js');
const { CgidSupervisor, DAEMON_NODE_FLAGS } = await import(join(here, '../dist/src/cgid/supervisor.js'));

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const median = (values) => {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Long enough for a GC after start-up or a burst, as a daemon that waits for work would have. */
const SETTLE_MS = 2000;

/** Runs `count` jobs, `concurrency` at a time. */
async function inParallel(count, concurrency, job) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      await job();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function spawnBurst(supervisor, file, count) {
  let failed = 0;
  await inParallel(count, 16, async () => {
    const script = await supervisor.spawn({ file, argv: [file], cwd: dirname(file), env: { PATH: '/usr/bin:/bin' }, stdinEmpty: true });
    script.stdin.end();
    script.stdout.resume();
    script.stderr.resume();
    const exit = await script.exited;
    if (exit.code !== 0) failed++;
  });
  return failed;
}

async function flagsSection({ spawns, repeats, cgiBin, also }) {
  const file = join(cgiBin, 'hello-c');
  const variants = [
    { name: 'no Node flags (before)', flags: [] },
    { name: `${DAEMON_NODE_FLAGS.join(' ')} (what serve passes)`, flags: [...DAEMON_NODE_FLAGS] },
    ...also.map((flags) => ({ name: flags, flags: flags.split(/\s+/).filter(Boolean) })),
  ];
  const runs = new Map(variants.map((variant) => [variant.name, []]));
  for (let round = 0; round < repeats; round++) {
    for (const variant of variants) {
      const dir = tempDir('gatehouse-bench-daemon-memory-');
      const supervisor = new CgidSupervisor({
        socketPath: join(dir, 'cgisock'),
        log: (line) => console.error(`  daemon: ${line}`),
        command: { file: process.execPath, args: [...variant.flags, MAIN, 'cgid'] },
      });
      await supervisor.start();
      const pid = supervisor.daemonPid;
      await sleep(SETTLE_MS);
      const idle = memory([pid]);
      const cpuBefore = cpuMicros([pid]);
      const started = process.hrtime.bigint();
      const failed = await spawnBurst(supervisor, file, spawns);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const cpu = (cpuMicros([pid]) - cpuBefore) / spawns;
      await sleep(SETTLE_MS);
      const after = memory([pid]);
      await supervisor.stop();
      const run = { idle, after, rate: spawns / seconds, cpu, failed };
      runs.get(variant.name).push(run);
      console.log(
        `  ${variant.name}: idle ${fmt(idle.rss, 1)} MB RSS / ${fmt(idle.pss, 1)} PSS, after ${spawns} spawns ${fmt(after.rss, 1)} / ${fmt(after.pss, 1)}; ${fmt(run.rate)} spawns/s, daemon ${fmt(cpu)} µs CPU per spawn, load ${fmt(os.loadavg()[0], 1)}`,
      );
    }
  }
  const rows = variants.map((variant) => {
    const list = runs.get(variant.name);
    const column = (pick, digits = 1) => fmt(median(list.map(pick)), digits);
    return {
      'daemon started with': variant.name,
      'idle RSS MB': column((run) => run.idle.rss),
      'idle PSS MB': column((run) => run.idle.pss),
      [`after ${spawns} spawns RSS MB`]: column((run) => run.after.rss),
      'runs (after RSS)': list.map((run) => fmt(run.after.rss, 1)).join(' / '),
      'after PSS MB': column((run) => run.after.pss),
      'spawns/s': column((run) => run.rate, 0),
      'runs (spawns/s)': list.map((run) => fmt(run.rate)).join(' / '),
      'daemon CPU µs/spawn': column((run) => run.cpu, 0),
      'runs (CPU)': list.map((run) => fmt(run.cpu)).join(' / '),
      'non-zero exits': list.reduce((sum, run) => sum + run.failed, 0),
    };
  });
  const of = (index, pick) => median(runs.get(variants[index].name).map(pick));
  const verdicts = [
    `daemon idle RSS ${fmt(
      of(0, (run) => run.idle.rss),
      1,
    )} -> ${fmt(
      of(1, (run) => run.idle.rss),
      1,
    )} MB, after ${spawns} spawns ${fmt(
      of(0, (run) => run.after.rss),
      1,
    )} -> ${fmt(
      of(1, (run) => run.after.rss),
      1,
    )} MB (target <= 40 MB: ${of(1, (run) => Math.max(run.idle.rss, run.after.rss)) <= 40 ? 'met' : 'MISSED'})`,
    `with the flags / without: daemon CPU per spawn ${fmt(of(1, (run) => run.cpu) / of(0, (run) => run.cpu), 2)}x, spawns/s ${fmt(of(1, (run) => run.rate) / of(0, (run) => run.rate), 2)}x`,
  ];
  return { rows, verdicts };
}

function get(url, agent) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode));
      })
      .on('error', reject);
  });
}

async function peersSection({ spawns, cgiBin }) {
  const serve = await startGatehouseServe({ args: ['--cgi-bin', cgiBin, '--runtime-dir', join(tempDir('gatehouse-bench-run-'), 'run')] });
  const lighttpd = await startLighttpdCgi({ cgiBin });
  const apache = await startApacheCgid({ cgiBin });
  const bare = startProcess(process.execPath, ['-e', 'setInterval(() => {}, 1e9)']);
  for (const stack of [serve, lighttpd, apache]) await expectBody(`${stack.url}/cgi-bin/hello-c`, 'hello\n');
  const front = serve.child.pid;
  const daemon = childrenOf(front)[0];
  await sleep(SETTLE_MS);
  const rows = [];
  const row = (name, pids) => {
    const { rss, pss } = memory(pids);
    rows.push({ process: name, 'RSS MB': fmt(rss, 1), 'PSS MB': fmt(pss, 1), processes: pids.length });
  };
  row('gatehouse serve: front, idle', [front]);
  row('gatehouse serve: cgid daemon, idle', [daemon]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  let errors = 0;
  const started = process.hrtime.bigint();
  await inParallel(spawns, 16, async () => {
    if ((await get(`${serve.url}/cgi-bin/hello-c`, agent)) !== 200) errors++;
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  agent.destroy();
  await sleep(SETTLE_MS);
  row(`gatehouse serve: front, after ${spawns} requests`, [front]);
  row(`gatehouse serve: cgid daemon, after ${spawns} requests`, [daemon]);
  row('gatehouse serve: front + daemon, after', [front, daemon]);
  row('lighttpd mod_cgi (all processes)', tree(lighttpd.child.pid));
  row('Apache httpd mod_cgid, event MPM (all processes)', tree(apache.child.pid));
  row("bare node -e 'setInterval(...)', for scale", [bare.child.pid]);
  for (const stack of [serve, lighttpd, apache, bare]) await stack.stop();
  const notes = [
    `the ${spawns} requests through serve took ${fmt(seconds, 1)} s (${fmt(spawns / seconds)} requests/s, ${errors} not 200).`,
  ];
  return { rows, notes };
}

export async function runDaemonMemoryBench({ spawns = 2000, repeats = 3, also = [], only = ['flags', 'peers'] } = {}) {
  const { cgiBin } = makeHelloCgiBin();
  const flags = await flagsSection({ spawns, repeats, cgiBin, also });
  const peers = only.includes('peers') ? await peersSection({ spawns, cgiBin }) : { rows: [], notes: [] };
  return {
    title: `cgid daemon memory, idle and after ${spawns} spawns (${repeats} rounds taken in turns, medians)`,
    body: [
      '#### The daemon with and without its Node flags (spawns driven straight through CgidSupervisor, 16 at a time)',
      '',
      markdownTable(flags.rows),
      '',
      '#### Idle memory of serve and the peers (C hello CGI)',
      '',
      markdownTable(peers.rows),
    ].join('\n'),
    verdicts: flags.verdicts,
    notes: [
      ...peers.notes,
      `RSS and PSS from /proc/PID/smaps_rollup, ${SETTLE_MS / 1000} s after start-up (and after one request) and ${SETTLE_MS / 1000} s after the burst. RSS counts the pages of the node binary the process touched (30-31 MB for a bare Node 20 here), which every Node process on the machine shares; PSS divides shared pages among the processes mapping them, so it moves with what else runs.`,
      "serve's front runs with `--max-semi-space-size=64` (gatehouse-serve(8)); its daemon gets DAEMON_NODE_FLAGS (src/cgid/supervisor.ts), never the front's flags.",
    ],
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      spawns: { type: 'string', default: '2000' },
      repeats: { type: 'string', default: '3' },
      // More flag sets to try beside the two (each one string: --also='--no-opt --max-semi-space-size=1').
      also: { type: 'string', multiple: true, default: [] },
      only: { type: 'string', default: 'flags,peers' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  for (const signal of ['SIGINT', 'SIGTERM']) process.once(signal, () => stopAll().finally(() => process.exit(130)));
  let status = 0;
  try {
    const result = await runDaemonMemoryBench({
      spawns: Number(values.spawns),
      repeats: Number(values.repeats),
      also: values.also,
      only: values.only.split(','),
    });
    console.log(`\n${result.title}\n\n${result.body}`);
    for (const line of [...result.verdicts, ...result.notes]) console.log(`- ${line}`);
    if (!values['no-write']) {
      const command = `npx tsc -p . && node bench/daemon-memory.mjs --spawns ${values.spawns} --repeats ${values.repeats}`;
      const section = renderSection('cgid-memory', { ...result, rows: [] }, command).replace('(no rows)', result.body);
      writeSection(join(here, 'CGID.md'), 'cgid-memory', section);
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

/**
 * The gatehouse worker library vs npm node-fastcgi: the same hello app
 * (bench/apps/), the same process count under spawn-fcgi (children share one
 * unix socket as fd 0), the same nginx config in front, wrk at 1, 16 and 64
 * connections. Both stacks are up at once and are measured in turns, so
 * drift on a shared machine hits both.
 */
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuMicros, expectBody, spawnFcgi, startNginx, tempDir, wrk } from './lib/peers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const GATEHOUSE_WORKER = join(here, '../dist/src/fastcgi/index.js');

export const IMPLEMENTATIONS = {
  'node-fastcgi': join(here, 'apps/hello-node-fastcgi.cjs'),
  gatehouse: join(here, 'apps/hello-gatehouse.mjs'),
};

/** Starts `processes` copies of an app behind its own nginx; returns its URL. */
export async function startStack(app, processes) {
  const dir = tempDir('gatehouse-bench-worker-');
  const socketPath = join(dir, 'app.sock');
  const { pids } = await spawnFcgi({ socketPath, children: processes, command: process.execPath, args: [app] });
  const nginx = await startNginx({ fastcgiPass: `unix:${socketPath}` });
  await expectBody(nginx.url, 'hello\n');
  return { url: nginx.url, pids };
}

/** Mean requests/s and p99 over the runs of one point; errors added up. */
function meanOf(list) {
  const mean = (key) => list.reduce((sum, result) => sum + result[key], 0) / list.length;
  return {
    requestsPerSecond: mean('requestsPerSecond'),
    p99: mean('p99'),
    cpuMicrosPerRequest: mean('cpuMicrosPerRequest'),
    runs: list.map((result) => result.requestsPerSecond.toFixed(0)).join(' / '),
    non2xx: list.reduce((sum, result) => sum + result.non2xx, 0),
    socketErrors: list
      .map((result) => result.socketErrors)
      .filter(Boolean)
      .join('; '),
  };
}

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export async function runWorkerBench({ duration = 8, repeats = 2, processCounts = [1, 2], connectionCounts = [1, 16, 64] } = {}) {
  const implementations = Object.keys(IMPLEMENTATIONS).filter((name) => name !== 'gatehouse' || existsSync(GATEHOUSE_WORKER));
  const notes = [];
  if (!implementations.includes('gatehouse'))
    notes.push(`gatehouse worker library not built (${GATEHOUSE_WORKER} missing): only node-fastcgi measured`);
  const rows = [];
  const verdicts = [];
  for (const processes of processCounts) {
    const stacks = {};
    for (const name of implementations) {
      try {
        stacks[name] = await startStack(IMPLEMENTATIONS[name], processes);
      } catch (error) {
        // The baseline must run; gatehouse failing to start is a finding to record, not a reason to lose the baseline.
        if (name !== 'gatehouse') throw error;
        console.error(`gatehouse with ${processes} process(es) did not start: ${error.message}`);
        notes.push(`gatehouse with ${processes} process(es) did not start: ${String(error.message).split('\n')[0]}`);
      }
    }
    for (const connections of connectionCounts) {
      const runs = Object.fromEntries(Object.keys(stacks).map((name) => [name, []]));
      // A B, then B A (and so on): neither always gets the warmer or the quieter machine.
      for (let repeat = 0; repeat < repeats; repeat++) {
        const order = repeat % 2 ? Object.keys(stacks).reverse() : Object.keys(stacks);
        for (const name of order) {
          process.stdout.write(`  ${name}, ${processes} process(es), ${connections} connection(s), run ${repeat + 1}... `);
          const cpuBefore = cpuMicros(stacks[name].pids);
          const result = await wrk({ url: stacks[name].url, connections, seconds: duration });
          // The app processes' CPU per request: steadier than requests/s on a shared machine.
          result.cpuMicrosPerRequest = (cpuMicros(stacks[name].pids) - cpuBefore) / result.requests;
          runs[name].push(result);
          console.log(
            `${fmt(result.requestsPerSecond)} req/s, p99 ${fmt(result.p99, 2)} ms${result.non2xx || result.socketErrors ? `, errors: ${result.non2xx} non-2xx ${result.socketErrors}` : ''}`,
          );
        }
      }
      const results = Object.fromEntries(Object.entries(runs).map(([name, list]) => [name, meanOf(list)]));
      const ours = results.gatehouse;
      const theirs = results['node-fastcgi'];
      const ratio = ours && theirs ? ours.requestsPerSecond / theirs.requestsPerSecond : NaN;
      rows.push({
        processes,
        connections,
        'node-fastcgi req/s': fmt(theirs?.requestsPerSecond),
        'node-fastcgi runs': theirs?.runs ?? '-',
        'node-fastcgi p99 ms': fmt(theirs?.p99, 2),
        'gatehouse req/s': fmt(ours?.requestsPerSecond),
        'gatehouse runs': ours?.runs ?? '-',
        'gatehouse p99 ms': fmt(ours?.p99, 2),
        'node-fastcgi CPU µs/req': fmt(theirs?.cpuMicrosPerRequest),
        'gatehouse CPU µs/req': fmt(ours?.cpuMicrosPerRequest),
        'CPU/req ratio': ours && theirs ? `${(theirs.cpuMicrosPerRequest / ours.cpuMicrosPerRequest).toFixed(2)}x` : '-',
        'gatehouse / node-fastcgi': Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : '-',
        'target 2x': Number.isFinite(ratio) ? (ratio >= 2 ? 'met' : 'MISSED') : 'not measured',
        errors: Object.entries(results)
          .filter(([, result]) => result.non2xx || result.socketErrors)
          .map(([name, result]) => `${name}: ${result.non2xx} non-2xx ${result.socketErrors}`)
          .join('; '),
      });
    }
  }
  const measured = rows.filter((row) => row['target 2x'] !== 'not measured');
  const met = measured.filter((row) => row['target 2x'] === 'met').length;
  verdicts.push(`gatehouse >= 2x node-fastcgi: met at ${met} of ${measured.length} points measured`);
  notes.push(
    `wrk -t1 at 1 connection, -t2 otherwise, ${duration} s per run, ${repeats} runs per point taking turns (req/s and p99 are their means), --latency (p99 from its latency distribution); nginx 1 worker process, fastcgi_pass to a unix socket, no upstream keep-alive; apps started by spawn-fcgi -F N (N processes sharing the socket as fd 0). CPU µs/req: user + system time of the app processes (from /proc) during the wrk run, divided by the requests wrk counted; CPU/req ratio = node-fastcgi's / gatehouse's (above 1: gatehouse spends less).`,
  );
  return { title: 'Worker library vs node-fastcgi behind nginx (hello app)', rows, verdicts, notes };
}

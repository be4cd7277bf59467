/**
 * `gatehouse serve --workers 2` with metrics, at the interfaces a user
 * touches: the public port, the supervisor's metrics listener, a real
 * Prometheus, promtool and `gatehouse status`. The request counters add up to
 * exactly what was sent over both workers (which worker served each request
 * is read from the access log's %P); the per-process defaults are sane (the
 * supervisor's start time and descriptor limit, once; memory summed); the
 * daemon's numbers appear once. A worker stopped with SIGSTOP is left out of
 * a scrape that says so, its counters kept; a worker killed with SIGKILL
 * keeps its counts in the sums, and its successor is added; a SIGHUP that
 * changes max-scripts shows in the metrics.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { httpRequest } from '../kit/http.js';
import { promtoolCheck, sampleValue, scrape, type Sample, scrapeUntil } from '../kit/metrics.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { procStatusField } from '../kit/proc.js';
import { freePort, tempDir, waitForListener } from '../kit/process.js';
import { startPrometheus } from '../kit/prometheus.js';
import { startGatehouse, type RunningServe } from '../kit/serve.js';
import { waitFor, waitForValue } from '../kit/wait.js';

function gatehouse(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [GATEHOUSE_MAIN, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

const CGI_OK = { route: 'cgi', status_class: '2xx' };
/** Scrapes wait up to 20 s (workers starting, a stopped one answering late) and show the gatehouse_ lines when they give up. */
const WORKER_SCRAPES = { timeoutMs: 20_000, contextPrefix: 'gatehouse_' };

function siteConfig(maxScripts: number): string {
  return `cgi-bin = "cgi"
max-scripts = ${maxScripts}
access-log = "access.log"
access-log-format = "%P %>s %r"
`;
}

async function startSite(t: { after(fn: () => unknown): void }) {
  const dir = tempDir(t, 'gatehouse-metrics-workers-');
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'cgi', 'hi.sh'), `#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi\\n'\n`, { mode: 0o755 });
  const config = join(dir, 'serve.toml');
  writeFileSync(config, siteConfig(4));
  const metricsPort = await freePort();
  const started = Date.now();
  const server = await startGatehouse(t, 'serve', ['--config', config, '--workers', '2', '--metrics', `127.0.0.1:${metricsPort}`], {
    cwd: dir,
  });
  const line = await waitForValue(
    () => /listening on .* with 2 workers \(pids (\d+), (\d+)\)/.exec(server.output()),
    (match) => match !== null,
    "the supervisor's line naming both workers",
  );
  await waitForListener({ host: '127.0.0.1', port: metricsPort }, { what: "the supervisor's metrics", process: server, timeoutMs: 15_000 });
  return { dir, config, server, metricsPort, started, workers: [Number(line![1]), Number(line![2])], accessLog: join(dir, 'access.log') };
}

/** The pids in the access log's lines (the %P field), one per request. */
function servedBy(accessLog: string): number[] {
  if (!existsSync(accessLog)) return [];
  return readFileSync(accessLog, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => Number(line.split(' ', 1)[0]));
}

/**
 * CGI requests in concurrent batches of 8 until at least `atLeast` were sent
 * and both workers served some (bounded: 400 at most); how many were sent.
 */
async function load(server: RunningServe, accessLog: string, workers: number[], atLeast: number): Promise<number> {
  let sent = 0;
  const before = servedBy(accessLog).length;
  const both = () => {
    const served = servedBy(accessLog).slice(before);
    return workers.every((pid) => served.includes(pid));
  };
  while (sent < 400 && (sent < atLeast || !both())) {
    const answers = await Promise.all(Array.from({ length: 8 }, () => httpRequest(`${server.base}/cgi-bin/hi.sh`, { timeoutMs: 20_000 })));
    for (const answer of answers) assert.equal(answer.status, 200);
    sent += answers.length;
    if (sent >= atLeast)
      await waitForValue(
        () => servedBy(accessLog).length - before,
        (lines) => lines === sent,
        'an access log line for every request sent',
      );
  }
  return sent;
}

test('serve --workers 2 --metrics: the counts add up over both workers; process metrics once; promtool; Prometheus; gatehouse status', async (t) => {
  const { server, metricsPort, started, workers, accessLog } = await startSite(t);
  const supervisor = server.child.pid!;
  const sent = await load(server, accessLog, workers, 40);
  const shares = workers.map((pid) => servedBy(accessLog).filter((served) => served === pid).length);
  t.diagnostic(`${sent} requests; by worker: ${shares.join(', ')}`);
  assert.ok(
    shares.every((share) => share > 0),
    'both workers served requests',
  );

  const { text, samples } = await scrapeUntil(
    metricsPort,
    // Both workers answering (on a loaded machine one may miss the 500 ms now and then: the next scrape has it).
    (found) =>
      sampleValue(found, 'gatehouse_serve_workers_scraped') === 2 &&
      sampleValue(found, 'gatehouse_http_requests_total', CGI_OK) === sent &&
      sampleValue(found, 'gatehouse_cgi_script_exits_total', { reason: 'exit', code: '0' }) === sent,
    `${sent} CGI requests answered and their scripts reaped, over both workers`,
    WORKER_SCRAPES,
  );
  const one = (name: string) => samples.filter((sample) => sample.name === name);
  assert.equal(sampleValue(samples, 'gatehouse_serve_workers'), 2);
  assert.equal(sampleValue(samples, 'gatehouse_serve_worker_respawns_total'), 0);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawns_total'), sent);
  assert.equal(sampleValue(samples, 'gatehouse_http_request_duration_seconds_count', { route: 'cgi' }), sent);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 4, "the workers' shares of max-scripts 4 added up");
  assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'serve' }), 1);
  // The shared daemon: once, not once per worker.
  assert.equal(one('gatehouse_cgid_daemon_up').length, 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_up'), 1);
  // Per-process facts: the supervisor's, once.
  assert.equal(one('process_start_time_seconds').length, 1);
  const startTime = sampleValue(samples, 'process_start_time_seconds')!;
  assert.ok(
    startTime >= Math.floor(started / 1000) - 1 && startTime <= Date.now() / 1000,
    `the start time ${startTime} is the supervisor's`,
  );
  const maxFds = Number(/Max open files\s+(\d+)/.exec(readFileSync(`/proc/${supervisor}/limits`, 'utf8'))![1]);
  assert.equal(sampleValue(samples, 'process_max_fds'), maxFds, "the supervisor's descriptor limit, not a sum");
  assert.equal(one('nodejs_version_info').length, 1);
  assert.equal(one('nodejs_version_info')[0]!.labels.version, process.version);
  // Memory is summed over the three processes: more than any one of them holds.
  const rss = [supervisor, ...workers].map((pid) => Number(procStatusField(pid, 'VmRSS').split(/\s+/)[0]) * 1024);
  const summed = sampleValue(samples, 'process_resident_memory_bytes')!;
  assert.ok(summed > 1.5 * Math.max(...rss), `resident memory ${summed} is the sum of ${rss.join(' + ')}, not one process's`);
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);

  // A real Prometheus scraping the supervisor reads the summed total.
  const prometheus = await startPrometheus(t, [{ job: 'serve', address: `127.0.0.1:${metricsPort}` }]);
  await prometheus.waitForTargets();
  for (const [promql, expected] of [
    ['gatehouse_http_requests_total{job="serve",route="cgi",status_class="2xx"}', sent],
    ['gatehouse_cgi_spawns_total{job="serve"}', sent],
    ['gatehouse_serve_workers_scraped{job="serve"}', 2],
    ['count(process_start_time_seconds{job="serve"})', 1],
  ] as const) {
    assert.equal(await prometheus.valueWhen(promql, expected), expected, promql);
  }

  // gatehouse status: the supervisor's pid, the workers' rows added up, how many answered.
  const table = await gatehouse(['status', `127.0.0.1:${metricsPort}`]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`^gatehouse serve( \\S+)?, pid ${supervisor}, started \\S+; workers: 2 of 2 answered$`, 'm'));
  assert.match(table.stdout, /^cgi scripts\s+0\s+4\s+0\s+0\s+\S+$/m, 'no script running, 2 + 2 free slots');
  const json = await gatehouse(['status', '--json', `127.0.0.1:${metricsPort}`]);
  assert.equal(json.code, 0, json.stderr);
  const document = JSON.parse(json.stdout) as { pid: number; pools: unknown[]; workers: unknown };
  assert.equal(document.pid, supervisor);
  assert.deepEqual(document.workers, { configured: 2, answered: 2 });
  assert.deepEqual(document.pools, [{ name: 'cgi scripts', active: 0, idle: 4, queue: 0, max: 4, maxReached: 0 }]);
});

test('serve --workers 2 --metrics: a stopped worker is left out and the scrape says so; a killed one keeps its counts; a reload shows', async (t) => {
  const { config, server, metricsPort, workers, accessLog } = await startSite(t);
  const sent = await load(server, accessLog, workers, 16);
  const everyone = (found: Sample[]) =>
    sampleValue(found, 'gatehouse_serve_workers_scraped') === 2 && sampleValue(found, 'gatehouse_http_requests_total', CGI_OK) === sent;
  await scrapeUntil(metricsPort, everyone, `${sent} requests counted, both workers answering`, WORKER_SCRAPES);

  // SIGSTOP: the worker cannot answer. The scrape still answers, says 1 of 2, keeps its counters, leaves out its gauges.
  const [stopped, killed] = workers as [number, number];
  process.kill(stopped, 'SIGSTOP');
  try {
    // The other worker answers (on a loaded machine it may miss one scrape's 500 ms too: the wait is bounded).
    const { samples } = await scrapeUntil(
      metricsPort,
      (found) => sampleValue(found, 'gatehouse_serve_workers_scraped') === 1,
      'a scrape with the running worker only',
      WORKER_SCRAPES,
    );
    assert.equal(sampleValue(samples, 'gatehouse_http_requests_total', CGI_OK), sent, "the stopped worker's counters stand");
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 2, "the stopped worker's share left out");
    // Log lines are written asynchronously: wait for it (bounded).
    await waitForValue(
      () => server.output(),
      (output) => new RegExp(`metrics: worker \\d \\(pid ${stopped}\\) did not answer within \\d+ ms`).test(output),
      "the supervisor's warning naming the stopped worker",
    );
    await waitFor(async () => {
      const table = await gatehouse(['status', `127.0.0.1:${metricsPort}`]);
      assert.equal(table.code, 0, table.stderr);
      return /; workers: 1 of 2 answered$/m.test(table.stdout);
    }, 'gatehouse status saying 1 of 2 workers answered');
  } finally {
    process.kill(stopped, 'SIGCONT');
  }
  await scrapeUntil(metricsPort, everyone, 'the stopped worker answering again', WORKER_SCRAPES);

  // SIGKILL: the supervisor starts another; the dead worker's counts stay in the sums, its successor's are added.
  process.kill(killed, 'SIGKILL');
  await waitForValue(
    () => server.output(),
    (output) => new RegExp(`worker \\d \\(pid ${killed}\\) killed by SIGKILL`).test(output),
    "the supervisor's line about the killed worker",
  );
  const { samples: afterKill } = await scrape({ port: metricsPort });
  assert.equal(sampleValue(afterKill, 'gatehouse_http_requests_total', CGI_OK), sent, "the dead worker's requests still counted");
  assert.equal(sampleValue(afterKill, 'gatehouse_serve_worker_respawns_total'), 1);
  // How many answered depends on whether the successor already listens (it starts 100 ms after the death): the
  // scrape says so either way, and the sums above do not depend on it.
  const answered = sampleValue(afterKill, 'gatehouse_serve_workers_scraped');
  assert.ok(answered !== undefined && answered <= 2, `the scrape says how many answered: ${answered}`);
  const restarted = await waitForValue(
    () => /worker \d restarted \(pid (\d+)\)/.exec(server.output()),
    (match) => match !== null,
    "the killed worker's restart",
  );
  const survivors = [stopped, Number(restarted![1])];
  await scrapeUntil(metricsPort, everyone, 'the restarted worker answering', WORKER_SCRAPES);
  const more = await load(server, accessLog, survivors, 8);
  await scrapeUntil(
    metricsPort,
    (found) => sampleValue(found, 'gatehouse_http_requests_total', CGI_OK) === sent + more,
    `${sent} + ${more} requests counted after the restart`,
    WORKER_SCRAPES,
  );

  // SIGHUP with max-scripts 6: every worker reloads its share (3 + 3), and the metrics read the new limiters.
  writeFileSync(config, siteConfig(6));
  process.kill(server.child.pid!, 'SIGHUP');
  await scrapeUntil(
    metricsPort,
    (found) => sampleValue(found, 'gatehouse_cgi_scripts_max') === 6 && sampleValue(found, 'gatehouse_serve_workers_scraped') === 2,
    'max-scripts 6 after the reload',
    WORKER_SCRAPES,
  );
  const json = await gatehouse(['status', '--json', `127.0.0.1:${metricsPort}`]);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual((JSON.parse(json.stdout) as { pools: unknown[] }).pools, [
    { name: 'cgi scripts', active: 0, idle: 6, queue: 0, max: 6, maxReached: 0 },
  ]);
});

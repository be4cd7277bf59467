/**
 * serve --workers with metrics, the parts that add up (src/metrics/workers.ts):
 * the supervisor's registry merged with its workers' (the per-process
 * defaults that a sum would make nonsense of are the supervisor's own, the
 * cgid daemon's numbers appear once), the counters of a late or dead worker
 * kept so the sums never go back, the status rows added up, and the serve
 * metrics following what a reload replaces (the script limiter, the FastCGI
 * clients). Real prom-client registries; promtool checks each exposition.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ScriptLimiter } from '../../src/cgi/limiter.js';
import type { PoolStats } from '../../src/fastcgi/client/pool.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { ServeMetrics, type ServeMetricsSource } from '../../src/metrics/serve.js';
import { formatStatusTable, statusDocument } from '../../src/metrics/status.js';
import {
  KeptCounts,
  mergeMetrics,
  mergePools,
  registerSupervisorMetrics,
  type WorkerFleet,
  type WorkerReport,
} from '../../src/metrics/workers.js';
import { parseExposition, promtoolCheck, sampleValue, type Sample } from '../kit/metrics.js';

const stats = (connections: number, opened: number): PoolStats => ({
  connections,
  idle: 0,
  queued: 0,
  opened,
  waited: 0,
  starved: 0,
  connectionCap: 8,
});

/** A worker's registry: `requests` CGI requests answered 200, its share of max-scripts. */
async function workerReport(requests: number, maxScripts: number): Promise<{ report: WorkerReport; metrics: ServeMetrics }> {
  const metrics = new ServeMetrics(await MetricsRegistry.create('serve'));
  const limiter = new ScriptLimiter(maxScripts, 0);
  metrics.attach({ servers: [], limiter, fastcgiClients: [], daemon: null });
  // The request counter is the front's; a registry's own counter stands in for what the channels would count.
  const counter = metrics.registry.counter({ name: 'test_requests_total', help: 'requests', labelNames: ['route'] });
  counter.inc({ route: 'cgi' }, requests);
  return { report: { metrics: await metrics.registry.json(), pools: metrics.statusPools() }, metrics };
}

function fleet(daemon: WorkerFleet['daemon']): WorkerFleet {
  return { configured: 2, restarts: 0, daemon, gather: async () => ({ running: [], reports: [] }) };
}

function only(samples: Sample[], name: string): Sample[] {
  return samples.filter((sample) => sample.name === name);
}

test("the supervisor's registry and two workers': sums, the supervisor's own process facts, the daemon once; promtool", async () => {
  const supervisor = await MetricsRegistry.create('serve');
  const scraped = registerSupervisorMetrics(supervisor, fleet({ available: true, starts: 2, daemonPid: process.pid }));
  scraped.set(2);
  const one = await workerReport(30, 2);
  const two = await workerReport(10, 2);
  try {
    const own = await supervisor.json();
    const merged = await mergeMetrics(own, [one.report.metrics, two.report.metrics]);
    const samples = parseExposition(merged.text);
    assert.equal(sampleValue(samples, 'test_requests_total', { route: 'cgi' }), 40, 'summed over the workers');
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 4, 'two shares of 2');
    assert.equal(sampleValue(samples, 'gatehouse_serve_workers'), 2);
    assert.equal(sampleValue(samples, 'gatehouse_serve_workers_scraped'), 2);
    assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_up'), 1, 'the daemon once, from the supervisor');
    assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_restarts_total'), 1);
    assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'serve' }), 1);
    // Per-process facts: one sample each, the supervisor's value (prom-client would omit the start time, and sum the limit).
    const ownValue = (name: string) => own.find((metric) => metric.name === name)!.values[0]!.value;
    assert.equal(only(samples, 'process_start_time_seconds').length, 1);
    assert.equal(sampleValue(samples, 'process_start_time_seconds'), ownValue('process_start_time_seconds'));
    assert.equal(sampleValue(samples, 'process_max_fds'), ownValue('process_max_fds'));
    assert.equal(
      sampleValue(samples, 'gatehouse_cgid_daemon_resident_memory_bytes'),
      ownValue('gatehouse_cgid_daemon_resident_memory_bytes'),
      "the daemon's memory once, not added to the workers'",
    );
    assert.equal(only(samples, 'nodejs_version_info').length, 1);
    assert.equal(only(samples, 'nodejs_version_info')[0]!.labels.version, process.version);
    // Quantities add up: three registries in one process each read the same resident size.
    const rss = ownValue('process_resident_memory_bytes');
    assert.ok(sampleValue(samples, 'process_resident_memory_bytes')! > 2 * rss, 'memory is the sum of the processes');
    const verdict = await promtoolCheck(merged.text);
    assert.equal(verdict.code, 0, verdict.output);
  } finally {
    one.metrics.detach();
    two.metrics.detach();
  }
});

test("a late worker's counters stand at its last answer, a dead worker's stay in the sums; gauges are not kept", async () => {
  const supervisor = await MetricsRegistry.create('serve');
  registerSupervisorMetrics(supervisor, fleet(null));
  const kept = new KeptCounts();
  const scrape = async (running: number[], answers: Array<{ worker: number; report: WorkerReport }>) => {
    const extra = await kept.update(running, answers);
    const merged = await mergeMetrics(await supervisor.json(), [...extra, ...answers.map((answer) => answer.report.metrics)]);
    const samples = parseExposition(merged.text);
    const verdict = await promtoolCheck(merged.text);
    assert.equal(verdict.code, 0, verdict.output);
    return {
      requests: sampleValue(samples, 'test_requests_total', { route: 'cgi' }),
      max: sampleValue(samples, 'gatehouse_cgi_scripts_max'),
    };
  };
  const first = await workerReport(30, 2);
  const second = await workerReport(10, 2);
  try {
    assert.deepEqual(
      await scrape(
        [1, 2],
        [
          { worker: 1, report: first.report },
          { worker: 2, report: second.report },
        ],
      ),
      { requests: 40, max: 4 },
    );
    // Worker 2 does not answer: its gauge is left out, its counter stands at its last answer.
    assert.deepEqual(await scrape([1, 2], [{ worker: 1, report: first.report }]), { requests: 40, max: 2 });
    // Worker 2 died; worker 3 took its slot and counted 5: 30 + 10 (kept) + 5.
    const third = await workerReport(5, 2);
    try {
      const answers = [
        { worker: 1, report: first.report },
        { worker: 3, report: third.report },
      ];
      assert.deepEqual(await scrape([1, 3], answers), { requests: 45, max: 4 });
      assert.deepEqual(await scrape([1, 3], answers), { requests: 45, max: 4 }, 'the dead worker is counted once, not at each scrape');
    } finally {
      third.metrics.detach();
    }
  } finally {
    first.metrics.detach();
    second.metrics.detach();
  }
});

test('status rows add up by pool; the table says how many workers answered', () => {
  const pools = mergePools([
    [
      { name: 'cgi scripts', active: 1, idle: 1, queue: 0, max: 2, maxReached: 3 },
      { name: 'fastcgi unix:/run/php.sock', active: 2, idle: 0, queue: 1, max: 4, maxReached: 4 },
    ],
    [{ name: 'cgi scripts', active: 0, idle: 2, queue: 2, max: 2, maxReached: 1 }],
  ]);
  assert.deepEqual(pools, [
    { name: 'cgi scripts', active: 1, idle: 3, queue: 2, max: 4, maxReached: 4 },
    { name: 'fastcgi unix:/run/php.sock', active: 2, idle: 0, queue: 1, max: 4, maxReached: 4 },
  ]);
  const document = statusDocument('serve', pools, { workers: { configured: 3, answered: 2 } });
  assert.match(formatStatusTable(document).split('\n')[0]!, /; workers: 2 of 3 answered$/);
  assert.doesNotMatch(formatStatusTable(statusDocument('serve', pools)).split('\n')[0]!, /workers/);
});

test('after a reload the serve metrics read the new limiter and FastCGI clients; counters never go back', async () => {
  const metrics = new ServeMetrics(await MetricsRegistry.create('serve'));
  // What serve passes: getters on the front, whose parts a reload replaces.
  let limiter = new ScriptLimiter(4, 10);
  let clients: ServeMetricsSource['fastcgiClients'] = [{ upstream: 'unix:/run/old.sock', stats: stats(2, 7) }];
  metrics.attach({
    servers: [],
    get limiter() {
      return limiter;
    },
    get fastcgiClients() {
      return clients;
    },
    daemon: null,
  });
  const read = async () => {
    metrics.refresh();
    return parseExposition(await metrics.registry.metrics());
  };
  try {
    limiter.tryAcquire();
    limiter.tryAcquire();
    let samples = await read();
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 4);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_running'), 2);
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections_opened_total', { upstream: 'unix:/run/old.sock' }), 7);

    // The reload: max-scripts 9, the route now on another upstream plus a second client to the old one.
    limiter = new ScriptLimiter(9, 3);
    clients = [
      { upstream: 'unix:/run/new.sock', stats: stats(1, 1) },
      { upstream: 'unix:/run/old.sock', stats: stats(0, 2) },
    ];
    samples = await read();
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 9);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_queue_max'), 3);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_running'), 0);
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', { upstream: 'unix:/run/new.sock' }), 1);
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', { upstream: 'unix:/run/old.sock' }), 0);
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', { upstream: 'unix:/run/new.sock' }), 0);
    // 7 by the replaced client, carried, plus 2 by the new one: the counter does not go back to 2.
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections_opened_total', { upstream: 'unix:/run/old.sock' }), 9);

    // Another reload drops the old upstream: its gauges go, its counters stay.
    clients = [{ upstream: 'unix:/run/new.sock', stats: stats(1, 1) }];
    samples = await read();
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', { upstream: 'unix:/run/old.sock' }), undefined);
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections_opened_total', { upstream: 'unix:/run/old.sock' }), 9);
    const verdict = await promtoolCheck(await metrics.registry.metrics());
    assert.equal(verdict.code, 0, verdict.output);
  } finally {
    metrics.detach();
  }
});

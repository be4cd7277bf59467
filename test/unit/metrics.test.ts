/**
 * The metrics registries: every metric documented in the manuals with its
 * type and labels, and every documented metric registered (both ways, for
 * kfcgi and cgid --fastcgi); every exposition passes `promtool check
 * metrics`; registries of several processes add up with prom-client's
 * AggregatorRegistry (what serve --workers does: test/unit/metrics-workers.test.ts);
 * prom-client is loaded only when a command is given a metrics address.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { registerFaceMetrics } from '../../src/metrics/cgid.js';
import { registerKfcgiMetrics, respawnLabels } from '../../src/metrics/kfcgi.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { ServeMetrics } from '../../src/metrics/serve.js';
import { registerSupervisorMetrics } from '../../src/metrics/workers.js';
import { MeteredSpawner, registerLimiterMetrics, registerScriptMetrics, SPAWN_DAEMON_UNAVAILABLE } from '../../src/metrics/scripts.js';
import { ScriptLimiter } from '../../src/cgi/limiter.js';
import type { PoolStatus } from '../../src/metrics/status.js';
import type { ScriptSpawner, SpawnedScript } from '../../src/spawn/spawner.js';
import { SpawnError } from '../../src/spawn/spawner.js';
import { documentedMetrics, parseExposition, promtoolCheck, sampleValue } from '../kit/metrics.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const manual = (name: string) => readFileSync(path.join(root, 'man', name), 'utf8');

function poolStatus(mode: PoolStatus['mode'], overrides: Partial<PoolStatus> = {}): PoolStatus {
  const variable = mode === 'variable';
  return {
    pid: 100,
    mode,
    listen: '/run/app.sock',
    startedAt: new Date(0).toISOString(),
    workers: 2,
    minWorkers: 2,
    maxWorkers: 4,
    busy: 1,
    idle: 1,
    starting: 0,
    pids: [201, 202],
    accepted: variable ? 7 : null,
    handedOver: variable ? 6 : null,
    poolFull: variable ? 1 : null,
    maxReached: 1,
    queued: variable ? 1 : null,
    respawns: 3,
    respawnCauses: { 'signal SIGKILL': 2, 'exit 1': 1 },
    restarts: 0,
    recycled: 0,
    released: 0,
    backlog: { configured: 128, queued: 0, limit: 128, maxQueued: variable ? null : 5 },
    processes: [
      { pid: 201, state: 'busy', startedAt: new Date(0).toISOString(), cpuSeconds: 1.5, rssBytes: 1_000_000, connections: 1 },
      { pid: 202, state: 'idle', startedAt: new Date(0).toISOString(), cpuSeconds: 0.5, rssBytes: 2_000_000, connections: 0 },
    ],
    ...overrides,
  };
}

async function kfcgiRegistry(mode: PoolStatus['mode'], status = poolStatus(mode), reaped = 4): Promise<MetricsRegistry> {
  const registry = await MetricsRegistry.create('kfcgi');
  registerKfcgiMetrics(registry, { status: () => status, reapedWorkersCpuSeconds: () => reaped });
  return registry;
}

class FakeSpawner implements ScriptSpawner {
  async spawn(request: { file: string }): Promise<SpawnedScript> {
    if (request.file.endsWith('missing')) throw new SpawnError(request.file, 'ENOENT', 'no such file or directory');
    return { pid: 1, exited: Promise.resolve({ code: 3, signal: null }) } as unknown as SpawnedScript;
  }
}

async function cgidRegistry(): Promise<MetricsRegistry> {
  const registry = await MetricsRegistry.create('cgid');
  const spawner = new MeteredSpawner(new FakeSpawner(), registerScriptMetrics(registry));
  registerFaceMetrics(registry, { activeRequests: 2, connectionCount: 1 });
  await spawner.spawn({ file: '/srv/x', argv: [], cwd: '/', env: {} });
  await spawner.spawn({ file: '/srv/missing', argv: [], cwd: '/', env: {} }).catch(() => undefined);
  return registry;
}

/** The registries' gatehouse_* metrics against the manual's METRICS section, both ways, with types and labels. */
function compareWithManual(page: string, registries: MetricsRegistry[]): void {
  const documented = new Map(documentedMetrics(manual(page)).map((metric) => [metric.name, metric]));
  assert.ok(documented.size >= 5, `${page}: the METRICS section lists only ${documented.size} metrics`);
  const registered = new Map<string, { name: string; type: string; labels: string[] }>();
  for (const registry of registries)
    for (const metric of registry.describe()) if (metric.name.startsWith('gatehouse_')) registered.set(metric.name, metric);
  for (const [name, metric] of registered) {
    const entry = documented.get(name);
    assert.ok(entry, `${page} does not document ${name} (${metric.type})`);
    assert.equal(entry.type, metric.type, `${page}: ${name} is a ${metric.type}`);
    assert.deepEqual(entry.labels, metric.labels, `${page}: the labels of ${name}`);
  }
  for (const name of documented.keys()) assert.ok(registered.has(name), `${page} documents ${name}, which is not registered`);
  assert.match(manual(page), /process_\*[\s\S]*nodejs_\*/, `${page} mentions the process_* and nodejs_* defaults`);
}

test('kfcgi: every metric in gatehouse-kfcgi(8), every documented one registered for some kind of pool', async () => {
  compareWithManual('gatehouse-kfcgi.8', [await kfcgiRegistry('fixed'), await kfcgiRegistry('dynamic'), await kfcgiRegistry('variable')]);
});

test('cgid --fastcgi: every metric in gatehouse-cgid(8), and the other way round', async () => {
  compareWithManual('gatehouse-cgid.8', [await cgidRegistry()]);
});

/** serve's registry with every part a front can have: CGI routes through the cgid daemon, and a FastCGI route. */
async function serveRegistry(): Promise<{ registry: MetricsRegistry; metrics: ServeMetrics }> {
  const registry = await MetricsRegistry.create('serve');
  const metrics = new ServeMetrics(registry);
  const spawner = metrics.meter(new FakeSpawner());
  metrics.attach({
    servers: [],
    limiter: new ScriptLimiter(2, 1),
    fastcgiClients: [
      { upstream: 'unix:/run/php.sock', stats: { connections: 1, idle: 1, queued: 0, opened: 1, waited: 0, starved: 0, connectionCap: 4 } },
    ],
    daemon: { available: true, starts: 1, daemonPid: process.pid },
  });
  await spawner.spawn({ file: '/srv/x', argv: [], cwd: '/', env: {} });
  await spawner.spawn({ file: '/srv/missing', argv: [], cwd: '/', env: {} }).catch(() => undefined);
  return { registry, metrics };
}

test('serve: every metric in gatehouse-serve(8), and the other way round (a worker front and a --workers supervisor)', async () => {
  const { registry, metrics } = await serveRegistry();
  const supervisor = await MetricsRegistry.create('serve');
  registerSupervisorMetrics(supervisor, {
    configured: 2,
    restarts: 0,
    daemon: { available: true, starts: 1, daemonPid: process.pid },
    gather: async () => ({ running: [], reports: [] }),
  });
  try {
    compareWithManual('gatehouse-serve.8', [registry, supervisor]);
    const verdict = await promtoolCheck(await registry.metrics());
    assert.equal(verdict.code, 0, verdict.output);
  } finally {
    metrics.detach();
  }
});

test('serve: the registries of several worker processes add up with AggregatorRegistry (one registry per process)', async () => {
  const { AggregatorRegistry } = await import('prom-client');
  const one = await serveRegistry();
  const two = await serveRegistry();
  try {
    const merged = AggregatorRegistry.aggregate([await one.registry.json(), await two.registry.json()]);
    const text = await merged.metrics();
    const samples = parseExposition(text);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_spawns_total'), 4);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_failures_total', { errno: 'ENOENT' }), 2);
    assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 4, 'two workers of max-scripts 2');
    assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', { upstream: 'unix:/run/php.sock' }), 2);
    assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'serve' }), 1);
    const verdict = await promtoolCheck(text);
    assert.equal(verdict.code, 0, verdict.output);
  } finally {
    one.metrics.detach();
    two.metrics.detach();
  }
});

test('every exposition passes promtool check metrics (the prom-client defaults it rejects are left out)', async () => {
  for (const registry of [await kfcgiRegistry('fixed'), await kfcgiRegistry('variable'), await cgidRegistry()]) {
    const text = await registry.metrics();
    const verdict = await promtoolCheck(text);
    assert.equal(verdict.code, 0, `${registry.command}: ${verdict.output}`);
    assert.match(text, /^process_cpu_seconds_total /m);
    assert.match(text, /^nodejs_heap_size_used_bytes /m);
    assert.doesNotMatch(text, /^nodejs_active_handles_total/m);
  }
});

test("kfcgi: the pool's numbers as metrics (variable-only counts only in variable pools)", async () => {
  const fixed = parseExposition(await (await kfcgiRegistry('fixed')).metrics());
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_workers', { state: 'busy' }), 1);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_respawns_total', { reason: 'signal', code: 'SIGKILL' }), 2);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_respawns_total', { reason: 'exit', code: '1' }), 1);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_listen_queue_max'), 5);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_worker_resident_memory_bytes', { pid: '202' }), 2_000_000);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_workers_resident_memory_bytes'), 3_000_000);
  // Reaped workers (4 s) plus the running ones (1.5 + 0.5).
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_workers_cpu_seconds_total'), 6);
  assert.equal(sampleValue(fixed, 'gatehouse_kfcgi_accepted_connections_total'), undefined, 'a fixed pool accepts nothing itself');
  const variable = parseExposition(await (await kfcgiRegistry('variable')).metrics());
  assert.equal(sampleValue(variable, 'gatehouse_kfcgi_accepted_connections_total'), 7);
  assert.equal(sampleValue(variable, 'gatehouse_kfcgi_queued_connections'), 1);
  assert.deepEqual(respawnLabels('spawn error'), { reason: 'spawn_error', code: '' });
});

test('kfcgi: one status per scrape; the workers CPU counter never goes back when a worker is reaped between two readings', async () => {
  let status = poolStatus('fixed');
  let reaped = 4;
  let reads = 0;
  const registry = await MetricsRegistry.create('kfcgi');
  registerKfcgiMetrics(registry, {
    status: () => {
      reads += 1;
      return status;
    },
    reapedWorkersCpuSeconds: () => reaped,
  });
  const read = async () => sampleValue(parseExposition(await registry.metrics()), 'gatehouse_kfcgi_workers_cpu_seconds_total');
  reads = 0;
  assert.equal(await read(), 6);
  assert.equal(reads, 1, 'one pool status (a /proc walk) per scrape');
  // Worker 201 exited: it is no longer running, and the manager has not counted it as reaped yet.
  status = poolStatus('fixed', { processes: status.processes.slice(1) });
  assert.equal(await read(), 6);
  reaped = 5.6;
  assert.equal(await read(), 6.1);
});

test('scripts: spawns, failures by errno, exits by status, the limiter read at each scrape', async () => {
  const registry = await cgidRegistry();
  const limiter = new ScriptLimiter(2, 0);
  registerLimiterMetrics(registry, limiter);
  limiter.tryAcquire();
  limiter.tryAcquire();
  assert.equal(await limiter.acquire(), null, 'the queue (0) is full');
  // The exit is counted once the script's exited promise settles.
  await new Promise((resolve) => setImmediate(resolve));
  const samples = parseExposition(await registry.metrics());
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawns_total'), 2);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_failures_total', { errno: 'ENOENT' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_duration_seconds_count'), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_script_exits_total', { reason: 'exit', code: '3' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_alive'), 0);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_running'), 2);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_queue_rejections_total'), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgid_fastcgi_requests_active'), 2);
});

test('spawn failures: the errno name, or daemon_unavailable or unknown (never a made-up errno), as gatehouse-serve(8) says', async () => {
  const registry = await MetricsRegistry.create('serve');
  const failures: Error[] = [
    new SpawnError('/srv/x', 'EACCES', 'permission denied'),
    SpawnError.daemonUnavailable('/srv/x', 'the cgid daemon is not running (restarting)'),
    SpawnError.daemonUnavailable('/srv/x', 'the cgid daemon went away before starting the script'),
    new Error('a spawner that names no errno'),
  ];
  const spawner = new MeteredSpawner(
    {
      spawn: async () => {
        throw failures.shift()!;
      },
    },
    registerScriptMetrics(registry),
  );
  for (let count = 0; count < 4; count += 1) await assert.rejects(spawner.spawn({ file: '/srv/x', argv: [], cwd: '/', env: {} }));
  const failed = parseExposition(await registry.metrics()).filter((sample) => sample.name === 'gatehouse_cgi_spawn_failures_total');
  assert.deepEqual(Object.fromEntries(failed.map((sample) => [sample.labels.errno, sample.value])), {
    EACCES: 1,
    [SPAWN_DAEMON_UNAVAILABLE]: 2,
    unknown: 1,
  });
  // The manual's entry: every errno-like value it names is a real errno, and it names the two words that are not.
  const serve = manual('gatehouse-serve.8');
  const start = serve.indexOf('.It Li gatehouse_cgi_spawn_failures_total');
  const entry = serve.slice(start, serve.indexOf('\n.It ', start + 1));
  const errnoLike = [...entry.matchAll(/\bE[A-Z0-9]{2,}\b/g)].map((match) => match[0]);
  assert.ok(errnoLike.length >= 3, entry);
  for (const name of errnoLike) assert.ok(name in os.constants.errno, `gatehouse-serve(8) names ${name}, which is no errno`);
  for (const word of [SPAWN_DAEMON_UNAVAILABLE, 'unknown']) assert.match(entry, new RegExp(`^\\.Li ${word}\\b`, 'm'));
});

test("registries of several processes add up with prom-client's AggregatorRegistry; the info gauge is not doubled", async () => {
  const { AggregatorRegistry } = await import('prom-client');
  const one = await cgidRegistry();
  const two = await cgidRegistry();
  const merged = AggregatorRegistry.aggregate([await one.json(), await two.json()]);
  const text = await merged.metrics();
  const samples = parseExposition(text);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawns_total'), 4);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_failures_total', { errno: 'ENOENT' }), 2);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_duration_seconds_count'), 2);
  assert.equal(sampleValue(samples, 'gatehouse_cgid_fastcgi_requests_active'), 4);
  assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'cgid' }), 1);
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);
});

test('prom-client is loaded only by the metrics registry, and only when a command asks for metrics', () => {
  const src = path.join(root, 'src');
  const files = (dir: string): string[] =>
    readdirSync(dir).flatMap((entry) => {
      const full = path.join(dir, entry);
      return statSync(full).isDirectory() ? files(full) : full.endsWith('.ts') ? [full] : [];
    });
  const loaders = files(src).filter((file) =>
    /^\s*import\s+(?!type\b)[^;]*from\s+'prom-client'|import\('prom-client'\)/m.test(readFileSync(file, 'utf8')),
  );
  assert.deepEqual(
    loaders.map((file) => path.relative(src, file)),
    [path.join('metrics', 'registry.ts')],
  );
  // The library and a command run without a metrics address load no metrics module at all.
  const probe = `
    const before = new Set(Object.keys(require.cache));
    await import(${JSON.stringify(path.join(root, 'dist/src/index.js'))});
    await import(${JSON.stringify(path.join(root, 'dist/src/http/index.js'))});
    const loaded = Object.keys(require.cache).filter((key) => !before.has(key) && key.includes('prom-client'));
    process.stdout.write(JSON.stringify(loaded));
  `;
  const output = execFileSync(process.execPath, ['--input-type=commonjs', '-e', `(async () => {${probe}})()`], { encoding: 'utf8' });
  assert.deepEqual(JSON.parse(output), []);
});

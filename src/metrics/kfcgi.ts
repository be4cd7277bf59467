/**
 * kfcgi's metrics: what its status socket reports (the pool's own counters,
 * the kernel's listen queue, each worker's CPU and memory from /proc), read
 * once per scrape. The pool keeps counting whether or not anyone scrapes;
 * nothing here runs between scrapes.
 *
 * Names, types and labels are documented in gatehouse-kfcgi(8), METRICS.
 */
import type { PoolStatus } from './status.js';
import type { MetricsRegistry } from './registry.js';

export interface KfcgiMetricsSource {
  /** The pool's status (reads /proc for every worker: called once per scrape). */
  status(): PoolStatus;
  /** CPU seconds of the workers the manager has reaped, their own children included (the manager's cutime + cstime); null without /proc. */
  reapedWorkersCpuSeconds(): number | null;
}

/** "exit 1", "signal SIGKILL", "spawn error" (RespawnTally's causes) as the reason and code labels. */
export function respawnLabels(cause: string): { reason: string; code: string } {
  const match = /^(exit|signal) (\S+)$/.exec(cause);
  if (match) return { reason: match[1]!, code: match[2]! };
  return { reason: cause.replace(/\W+/g, '_'), code: '' };
}

export function registerKfcgiMetrics(metrics: MetricsRegistry, source: KfcgiMetricsSource): void {
  // One status per scrape: prom-client calls every metric's collect() synchronously, one after another, when a
  // scrape starts; the snapshot is dropped in the microtask after them, so the next scrape reads afresh.
  let snapshot: PoolStatus | null = null;
  const current = (): PoolStatus => {
    if (snapshot === null) {
      snapshot = source.status();
      queueMicrotask(() => (snapshot = null));
    }
    return snapshot;
  };
  // Counts that only one kind of pool keeps are registered for that kind only: a fixed pool has no 0 for "accepted".
  const { mode } = source.status();
  const variable = mode === 'variable';
  /** A counter whose total the pool keeps, set at each scrape. */
  const total = (name: string, help: string, read: (status: PoolStatus) => number) =>
    metrics.counter({
      name,
      help,
      collect() {
        this.reset();
        this.inc(read(current()));
      },
    });
  /** A level read at each scrape; NaN when the kernel or /proc cannot tell. */
  const level = (name: string, help: string, read: (status: PoolStatus) => number | null, aggregator?: 'sum' | 'max' | 'first') =>
    metrics.gauge({
      name,
      help,
      ...(aggregator ? { aggregator } : {}),
      collect() {
        this.set(read(current()) ?? Number.NaN);
      },
    });

  metrics.gauge({
    name: 'gatehouse_kfcgi_pool_info',
    help: 'Always 1; the labels name the kind of pool (fixed, dynamic, variable) and its socket.',
    labelNames: ['mode', 'listen'],
    aggregator: 'first',
    collect() {
      const status = current();
      this.reset();
      this.set({ mode: status.mode, listen: status.listen }, 1);
    },
  });
  metrics.gauge({
    name: 'gatehouse_kfcgi_workers',
    help: 'Workers by state: busy (holding a connection), idle (waiting for one), starting; absent when /proc cannot tell.',
    labelNames: ['state'],
    collect() {
      const status = current();
      this.reset();
      for (const state of ['busy', 'idle', 'starting'] as const) {
        const value = status[state];
        if (value !== null) this.set({ state }, value);
      }
    },
  });
  level('gatehouse_kfcgi_pool_workers', 'Workers in the pool now (not counting those being released or replaced).', (s) => s.workers);
  level('gatehouse_kfcgi_pool_min_workers', 'The least workers the pool keeps (-n).', (s) => s.minWorkers);
  level('gatehouse_kfcgi_pool_max_workers', 'The most workers the pool runs (-N; -n in a fixed pool).', (s) => s.maxWorkers);
  level(
    'gatehouse_kfcgi_listen_queue',
    "Connections waiting in the socket's listen queue now (the kernel's count).",
    (s) => s.backlog.queued,
  );
  if (!variable)
    level(
      'gatehouse_kfcgi_listen_queue_max',
      'Fixed and dynamic pools: the most connections seen waiting in the listen queue (sampled every 50 ms).',
      (s) => s.backlog.maxQueued,
      'max',
    );
  level(
    'gatehouse_kfcgi_listen_queue_limit',
    'The listen queue length the kernel applies (the effective backlog).',
    (s) => s.backlog.limit,
  );
  level('gatehouse_kfcgi_listen_backlog', 'The listen backlog asked for (-l).', (s) => s.backlog.configured);
  if (variable) {
    level('gatehouse_kfcgi_queued_connections', 'Variable pools: accepted connections waiting for a free worker.', (s) => s.queued);
    total('gatehouse_kfcgi_accepted_connections_total', 'Variable pools: connections the manager accepted.', (s) => s.accepted ?? 0);
    total('gatehouse_kfcgi_handed_over_connections_total', 'Variable pools: connections handed to workers.', (s) => s.handedOver ?? 0);
    total('gatehouse_kfcgi_pool_full_total', 'Variable pools: connections that found every worker busy at -N.', (s) => s.poolFull ?? 0);
    total('gatehouse_kfcgi_recycles_total', 'Variable pools: workers replaced after -R connections.', (s) => s.recycled);
  }
  total(
    'gatehouse_kfcgi_max_workers_reached_total',
    'Times the pool was at its largest with connections waiting (once per episode).',
    (s) => s.maxReached,
  );
  metrics.counter({
    name: 'gatehouse_kfcgi_respawns_total',
    help: 'Workers started again after an unexpected exit, by the exit: reason exit (code: the status) or signal (code: its name), or spawn_error.',
    labelNames: ['reason', 'code'],
    collect() {
      const status = current();
      this.reset();
      for (const [cause, count] of Object.entries(status.respawnCauses)) this.inc(respawnLabels(cause), count);
    },
  });
  total('gatehouse_kfcgi_restarts_total', 'SIGHUP restarts of the pool.', (s) => s.restarts);
  if (mode !== 'fixed')
    total('gatehouse_kfcgi_releases_total', 'Variable and dynamic pools: workers released after -w idle seconds.', (s) => s.released);
  metrics.gauge({
    name: 'gatehouse_kfcgi_worker_resident_memory_bytes',
    help: "Resident memory of one worker's process tree (the worker and what it forked), by pid; absent without /proc.",
    labelNames: ['pid'],
    collect() {
      this.reset();
      for (const worker of current().processes) if (worker.rssBytes !== null) this.set({ pid: String(worker.pid) }, worker.rssBytes);
    },
  });
  metrics.counter({
    name: 'gatehouse_kfcgi_worker_cpu_seconds_total',
    help: "CPU seconds (user + system) of one worker's process tree, children it reaped included, by pid; absent without /proc.",
    labelNames: ['pid'],
    collect() {
      this.reset();
      for (const worker of current().processes) if (worker.cpuSeconds !== null) this.inc({ pid: String(worker.pid) }, worker.cpuSeconds);
    },
  });
  level('gatehouse_kfcgi_workers_resident_memory_bytes', 'Resident memory of every running worker, summed; NaN without /proc.', (s) =>
    s.processes.some((worker) => worker.rssBytes !== null) ? s.processes.reduce((sum, worker) => sum + (worker.rssBytes ?? 0), 0) : null,
  );
  // Running workers' trees plus every worker already reaped (the manager's cutime): it only grows, as a counter must.
  let highest = 0;
  metrics.counter({
    name: 'gatehouse_kfcgi_workers_cpu_seconds_total',
    help: 'CPU seconds used by every worker since the manager started, those that exited included.',
    collect() {
      const reaped = source.reapedWorkersCpuSeconds();
      this.reset();
      if (reaped === null) return; // without /proc: stays 0
      const running = current().processes.reduce((sum, worker) => sum + (worker.cpuSeconds ?? 0), 0);
      // A worker reaped between the two readings would count in neither for this one scrape: never go back.
      highest = Math.max(highest, reaped + running);
      this.inc(highest);
    },
  });
}

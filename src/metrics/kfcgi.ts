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

/**
 * What each registration step writes with: the registry, and the pool's
 * status read once per scrape. prom-client calls every metric's collect()
 * synchronously, one after another, when a scrape starts; the snapshot is
 * dropped in the microtask after them, so the next scrape reads afresh.
 */
class KfcgiScrape {
  readonly metrics: MetricsRegistry;
  readonly #source: KfcgiMetricsSource;
  #snapshot: PoolStatus | null = null;

  constructor(metrics: MetricsRegistry, source: KfcgiMetricsSource) {
    this.metrics = metrics;
    this.#source = source;
  }

  /** The status of this scrape (read at its first metric). */
  current(): PoolStatus {
    if (this.#snapshot === null) {
      this.#snapshot = this.#source.status();
      queueMicrotask(() => (this.#snapshot = null));
    }
    return this.#snapshot;
  }

  /** A counter whose total the pool keeps, set at each scrape. */
  total(name: string, help: string, read: (status: PoolStatus) => number): void {
    const current = () => this.current();
    this.metrics.counter({
      name,
      help,
      collect() {
        this.reset();
        this.inc(read(current()));
      },
    });
  }

  /** A level read at each scrape; NaN when the kernel or /proc cannot tell. */
  level(name: string, help: string, read: (status: PoolStatus) => number | null, aggregator?: 'sum' | 'max' | 'first'): void {
    const current = () => this.current();
    this.metrics.gauge({
      name,
      help,
      ...(aggregator ? { aggregator } : {}),
      collect() {
        this.set(read(current()) ?? Number.NaN);
      },
    });
  }
}

/**
 * Registers kfcgi's metrics in the order the manual lists them. Counts that
 * only one kind of pool keeps are registered for that kind only: a fixed pool
 * has no 0 for "accepted".
 */
export function registerKfcgiMetrics(metrics: MetricsRegistry, source: KfcgiMetricsSource): void {
  const scrape = new KfcgiScrape(metrics, source);
  const { mode } = source.status();
  registerPoolSize(scrape);
  registerListenQueue(scrape, mode);
  if (mode === 'variable') registerVariablePoolCounts(scrape);
  registerRestarts(scrape, mode);
  registerWorkerResources(scrape, source);
}

/** The pool's kind and socket, its workers by state, and its size and bounds. */
function registerPoolSize(scrape: KfcgiScrape): void {
  scrape.metrics.gauge({
    name: 'gatehouse_kfcgi_pool_info',
    help: 'Always 1; the labels name the kind of pool (fixed, dynamic, variable) and its socket.',
    labelNames: ['mode', 'listen'],
    aggregator: 'first',
    collect() {
      const status = scrape.current();
      this.reset();
      this.set({ mode: status.mode, listen: status.listen }, 1);
    },
  });
  scrape.metrics.gauge({
    name: 'gatehouse_kfcgi_workers',
    help: 'Workers by state: busy (holding a connection), idle (waiting for one), starting; absent when /proc cannot tell.',
    labelNames: ['state'],
    collect() {
      const status = scrape.current();
      this.reset();
      for (const state of ['busy', 'idle', 'starting'] as const) {
        const value = status[state];
        if (value !== null) this.set({ state }, value);
      }
    },
  });
  scrape.level(
    'gatehouse_kfcgi_pool_workers',
    'Workers in the pool now (not counting those being released or replaced).',
    (s) => s.workers,
  );
  scrape.level('gatehouse_kfcgi_pool_min_workers', 'The least workers the pool keeps (-n).', (s) => s.minWorkers);
  scrape.level('gatehouse_kfcgi_pool_max_workers', 'The most workers the pool runs (-N; -n in a fixed pool).', (s) => s.maxWorkers);
}

/** The socket's listen queue as the kernel reports it, and the backlog asked for. */
function registerListenQueue(scrape: KfcgiScrape, mode: PoolStatus['mode']): void {
  scrape.level(
    'gatehouse_kfcgi_listen_queue',
    "Connections waiting in the socket's listen queue now (the kernel's count).",
    (s) => s.backlog.queued,
  );
  if (mode !== 'variable')
    scrape.level(
      'gatehouse_kfcgi_listen_queue_max',
      'Fixed and dynamic pools: the most connections seen waiting in the listen queue (sampled every 50 ms).',
      (s) => s.backlog.maxQueued,
      'max',
    );
  scrape.level(
    'gatehouse_kfcgi_listen_queue_limit',
    'The listen queue length the kernel applies (the effective backlog).',
    (s) => s.backlog.limit,
  );
  scrape.level('gatehouse_kfcgi_listen_backlog', 'The listen backlog asked for (-l).', (s) => s.backlog.configured);
}

/** Variable pools only: the connections the manager accepts, queues and hands over itself. */
function registerVariablePoolCounts(scrape: KfcgiScrape): void {
  scrape.level('gatehouse_kfcgi_queued_connections', 'Variable pools: accepted connections waiting for a free worker.', (s) => s.queued);
  scrape.total('gatehouse_kfcgi_accepted_connections_total', 'Variable pools: connections the manager accepted.', (s) => s.accepted ?? 0);
  scrape.total('gatehouse_kfcgi_handed_over_connections_total', 'Variable pools: connections handed to workers.', (s) => s.handedOver ?? 0);
  scrape.total(
    'gatehouse_kfcgi_pool_full_total',
    'Variable pools: connections that found every worker busy at -N.',
    (s) => s.poolFull ?? 0,
  );
  scrape.total('gatehouse_kfcgi_recycles_total', 'Variable pools: workers replaced after -R connections.', (s) => s.recycled);
}

/** Times the pool ran full, and workers started again: respawned by cause, restarted by SIGHUP, released when idle. */
function registerRestarts(scrape: KfcgiScrape, mode: PoolStatus['mode']): void {
  scrape.total(
    'gatehouse_kfcgi_max_workers_reached_total',
    'Times the pool was at its largest with connections waiting (once per episode).',
    (s) => s.maxReached,
  );
  scrape.metrics.counter({
    name: 'gatehouse_kfcgi_respawns_total',
    help: 'Workers started again after an unexpected exit, by the exit: reason exit (code: the status) or signal (code: its name), or spawn_error.',
    labelNames: ['reason', 'code'],
    collect() {
      const status = scrape.current();
      this.reset();
      for (const [cause, count] of Object.entries(status.respawnCauses)) this.inc(respawnLabels(cause), count);
    },
  });
  scrape.total('gatehouse_kfcgi_restarts_total', 'SIGHUP restarts of the pool.', (s) => s.restarts);
  if (mode !== 'fixed')
    scrape.total(
      'gatehouse_kfcgi_releases_total',
      'Variable and dynamic pools: workers released after -w idle seconds.',
      (s) => s.released,
    );
}

/** Memory and CPU of each worker's process tree and of all of them, from /proc. */
function registerWorkerResources(scrape: KfcgiScrape, source: KfcgiMetricsSource): void {
  scrape.metrics.gauge({
    name: 'gatehouse_kfcgi_worker_resident_memory_bytes',
    help: "Resident memory of one worker's process tree (the worker and what it forked), by pid; absent without /proc.",
    labelNames: ['pid'],
    collect() {
      this.reset();
      for (const worker of scrape.current().processes) if (worker.rssBytes !== null) this.set({ pid: String(worker.pid) }, worker.rssBytes);
    },
  });
  scrape.metrics.counter({
    name: 'gatehouse_kfcgi_worker_cpu_seconds_total',
    help: "CPU seconds (user + system) of one worker's process tree, children it reaped included, by pid; absent without /proc.",
    labelNames: ['pid'],
    collect() {
      this.reset();
      for (const worker of scrape.current().processes)
        if (worker.cpuSeconds !== null) this.inc({ pid: String(worker.pid) }, worker.cpuSeconds);
    },
  });
  scrape.level(
    'gatehouse_kfcgi_workers_resident_memory_bytes',
    'Resident memory of every running worker, summed; NaN without /proc.',
    (s) =>
      s.processes.some((worker) => worker.rssBytes !== null) ? s.processes.reduce((sum, worker) => sum + (worker.rssBytes ?? 0), 0) : null,
  );
  registerWorkersCpu(scrape, source);
}

/** Running workers' trees plus every worker already reaped (the manager's cutime): it only grows, as a counter must. */
function registerWorkersCpu(scrape: KfcgiScrape, source: KfcgiMetricsSource): void {
  let highest = 0;
  scrape.metrics.counter({
    name: 'gatehouse_kfcgi_workers_cpu_seconds_total',
    help: 'CPU seconds used by every worker since the manager started, those that exited included.',
    collect() {
      const reaped = source.reapedWorkersCpuSeconds();
      this.reset();
      if (reaped === null) return; // without /proc: stays 0
      const running = scrape.current().processes.reduce((sum, worker) => sum + (worker.cpuSeconds ?? 0), 0);
      // A worker reaped between the two readings would count in neither for this one scrape: never go back.
      highest = Math.max(highest, reaped + running);
      this.inc(highest);
    },
  });
}

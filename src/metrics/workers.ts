/**
 * serve --workers N with `metrics`: the supervisor's listener. The workers
 * open none; at each scrape (and each /status request) the supervisor asks
 * every running worker over its IPC channel for its registry as JSON and its
 * status rows (ServeMetricsListener.report(), src/metrics/serve.ts), waits a
 * bounded time, and adds up what came back with prom-client's
 * AggregatorRegistry.aggregate, each metric by its own `aggregator` (sum
 * unless it says otherwise). The supervisor's own registry goes first: its
 * process metrics, the shared cgid daemon's (only the supervisor watches the
 * daemon, so they appear once), and how many workers answered.
 *
 * prom-client's process and Node defaults, added up: CPU, memory, heap, open
 * descriptors, handles and GC are summed (the server's processes together),
 * the event-loop lag gauges take their min, max or mean; three are per-process
 * facts that a sum would make nonsense of, and they are the supervisor's own:
 * process_start_time_seconds (prom-client omits it when aggregating; the
 * supervisor's start is the server's, unchanged when a worker is restarted),
 * process_max_fds (a limit, not a quantity) and nodejs_version_info.
 *
 * Counters must never go back: Prometheus reads a drop as a counter reset,
 * and the rise when the missing counts return as that much new work (a
 * worker late for one scrape would show as a burst of all its requests). So
 * the counters and histograms of each worker's last answer are kept
 * (KeptCounts): a worker that did not answer in time is left out of the
 * scrape's gauges and of gatehouse_serve_workers_scraped, and its counters
 * stand at its last answer; a worker that died keeps its last counts in every
 * later scrape, so only what it counted after its last answer is lost. Gauges
 * are never kept.
 */
import type { Gauge } from 'prom-client';
import { SERVE_WORKER_METRICS_TIMEOUT_MS } from '../limits.js';
import type { ListenAddress } from '../options/listen-address.js';
import { MetricsEndpoint } from './endpoint.js';
import { aggregateRegistries, aggregateRegistriesJson, MetricsRegistry, type MetricsJson } from './registry.js';
import { type DaemonSource, registerDaemonMetrics } from './serve.js';
import { statusDocument, type StatusPool } from './status.js';

export type { MetricsJson } from './registry.js';

/** What a worker answers a scrape with. */
export interface WorkerReport {
  /** Its registry, as getMetricsAsJSON() gives it. */
  metrics: MetricsJson;
  /** Its status rows (its share of the script slots, its FastCGI connections). */
  pools: StatusPool[];
}

/** What the supervisor's listener reads of the supervisor (src/serve/workers.ts). */
export interface WorkerFleet {
  /** `workers` as configured. */
  readonly configured: number;
  /** Workers started again after one died. */
  readonly restarts: number;
  /** The shared cgid daemon's supervisor, when scripts start through it. */
  readonly daemon: DaemonSource | null;
  /**
   * Asks every running worker: `running` names each (one key per process
   * started, never reused), `reports` are the answers that came back within
   * `timeoutMs`.
   */
  gather(timeoutMs: number): Promise<{ running: number[]; reports: Array<{ worker: number; report: WorkerReport }> }>;
}

/** The defaults that are one process's facts: the supervisor's value is reported, not a sum. */
const SUPERVISOR_ONLY = new Set(['process_start_time_seconds', 'process_max_fds', 'nodejs_version_info']);

/** The supervisor's registry and the workers', added up (the supervisor's first: its aggregator choices win). */
export function mergeMetrics(own: MetricsJson, workers: MetricsJson[]): Promise<{ text: string; contentType: string }> {
  const first = own.map((metric) => (SUPERVISOR_ONLY.has(metric.name) ? { ...metric, aggregator: 'first' as const } : metric));
  return aggregateRegistries([first, ...workers]);
}

/** The supervisor's own gatehouse_serve_* metrics (and the daemon's); the gauge of workers scraped, set at each scrape. */
export function registerSupervisorMetrics(registry: MetricsRegistry, fleet: WorkerFleet): Gauge<string> {
  registry.gauge({ name: 'gatehouse_serve_workers', help: 'Worker processes configured (workers).' }).set(fleet.configured);
  const scraped = registry.gauge({
    name: 'gatehouse_serve_workers_scraped',
    help: 'Workers whose numbers are in this scrape; fewer than gatehouse_serve_workers while one restarts or did not answer in time.',
  });
  registry.counter({
    name: 'gatehouse_serve_worker_respawns_total',
    help: 'Workers that died and were started again in their slot (counted when they died).',
    collect() {
      this.reset();
      this.inc(fleet.restarts);
    },
  });
  if (fleet.daemon) registerDaemonMetrics(registry, fleet.daemon);
  return scraped;
}

/** The workers' status rows added up by pool name, in the order they first appear; a number unknown everywhere stays null. */
export function mergePools(lists: StatusPool[][]): StatusPool[] {
  const merged = new Map<string, StatusPool>();
  const add = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : a + b);
  for (const pools of lists)
    for (const pool of pools) {
      const row = merged.get(pool.name);
      if (!row) {
        merged.set(pool.name, { ...pool });
        continue;
      }
      row.active = add(row.active, pool.active);
      row.idle = add(row.idle, pool.idle);
      row.queue = add(row.queue, pool.queue);
      row.max = add(row.max, pool.max);
      row.maxReached = add(row.maxReached, pool.maxReached);
    }
  return [...merged.values()];
}

/**
 * The counters and histograms of each worker's last answer: what the sums
 * keep of a worker that is late (its last answer) or gone (added up with the
 * other dead ones).
 */
/** What a dead worker's counts keep: what only grows. */
const KEPT_TYPES = new Set(['counter', 'histogram']);

export class KeptCounts {
  /** Each running worker's last answer, counters and histograms only. */
  #last = new Map<number, MetricsJson>();
  #dead: MetricsJson = [];

  /**
   * After a gather: the counts to add to the answers (every dead worker's,
   * added up, and the last answer of each running worker that did not answer).
   */
  async update(running: readonly number[], answers: ReadonlyArray<{ worker: number; report: WorkerReport }>): Promise<MetricsJson[]> {
    const alive = new Set(running);
    const gone: MetricsJson[] = [];
    for (const [worker, counts] of this.#last)
      if (!alive.has(worker)) {
        gone.push(counts);
        this.#last.delete(worker);
      }
    for (const { worker, report } of answers)
      this.#last.set(
        worker,
        report.metrics.filter((metric) => KEPT_TYPES.has(String(metric.type)) && (metric.aggregator ?? 'sum') === 'sum'),
      );
    if (gone.length > 0) this.#dead = await aggregateRegistriesJson([this.#dead, ...gone]);
    const answered = new Set(answers.map((answer) => answer.worker));
    const late = running.flatMap((worker) => (answered.has(worker) ? [] : [this.#last.get(worker) ?? []]));
    return [this.#dead, ...late];
  }
}

export class SupervisorMetrics {
  readonly #registry: MetricsRegistry;
  readonly #endpoint: MetricsEndpoint;

  private constructor(registry: MetricsRegistry, endpoint: MetricsEndpoint) {
    this.#registry = registry;
    this.#endpoint = endpoint;
  }

  /** Loads prom-client and binds `address` (503 until serve()), before the workers start. */
  static async open(address: ListenAddress, log: (line: string) => void): Promise<SupervisorMetrics> {
    const registry = await MetricsRegistry.create('serve');
    const endpoint = await MetricsEndpoint.open(address, { log });
    return new SupervisorMetrics(registry, endpoint);
  }

  describe(): string {
    return this.#endpoint.describe();
  }

  /** Starts answering from the workers of `fleet`. */
  serve(fleet: WorkerFleet, timeoutMs = SERVE_WORKER_METRICS_TIMEOUT_MS): void {
    const registry = this.#registry;
    const scraped = registerSupervisorMetrics(registry, fleet);
    const kept = new KeptCounts();
    // A worker that does not answer in time is named in the error log by the supervisor (ServeSupervisor.gather).
    const gather = async () => {
      const { running, reports } = await fleet.gather(timeoutMs);
      return { reports: reports.map((answer) => answer.report), kept: await kept.update(running, reports) };
    };
    this.#endpoint.serve({
      metrics: async () => {
        const { reports, kept } = await gather();
        scraped.set(reports.length);
        return mergeMetrics(await registry.json(), [...kept, ...reports.map((report) => report.metrics)]);
      },
      status: async () => {
        const { reports } = await gather();
        return statusDocument('serve', mergePools(reports.map((report) => report.pools)), {
          workers: { configured: fleet.configured, answered: reports.length },
        });
      },
    });
  }

  close(): Promise<void> {
    return this.#endpoint.close();
  }
}

/**
 * One Prometheus registry per gatehouse process, made with prom-client (the
 * exposition format, escaping and histogram maths are its, not ours). The
 * library is loaded only when a command is given a metrics address, so
 * metrics cost nothing when they are off: no module, no timer, no
 * subscription.
 *
 * Every registry carries prom-client's `process_*` and `nodejs_*` defaults
 * and `gatehouse_info`. Each metric states how it adds up across processes
 * (prom-client's `aggregator`: sum, unless said otherwise), so that serve
 * --workers merges its workers' registries with prom-client's
 * AggregatorRegistry.aggregate(registry.json() of each) instead of exposing
 * one set per worker (src/metrics/workers.ts).
 */
import { readFileSync } from 'node:fs';
import { METRICS_EVENT_LOOP_RESOLUTION_MS } from '../limits.js';
import type {
  Counter,
  CounterConfiguration,
  Gauge,
  GaugeConfiguration,
  Histogram,
  HistogramConfiguration,
  MetricObjectWithValues,
  MetricValue,
  Registry,
} from 'prom-client';

type PromClient = typeof import('prom-client');

/** One process's registry as JSON (MetricsRegistry.json()). */
export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/**
 * Registries of several processes added up (prom-client's
 * AggregatorRegistry.aggregate), each metric by the `aggregator` of its first
 * occurrence: the exposition and its content type.
 */
export async function aggregateRegistries(lists: MetricsJson[]): Promise<{ text: string; contentType: string }> {
  const { AggregatorRegistry } = await import('prom-client');
  const merged = AggregatorRegistry.aggregate(lists);
  return { text: await merged.metrics(), contentType: merged.contentType };
}

/** The same, as JSON again (to be added up once more later). */
export async function aggregateRegistriesJson(lists: MetricsJson[]): Promise<MetricsJson> {
  const { AggregatorRegistry } = await import('prom-client');
  return AggregatorRegistry.aggregate(lists).getMetricsAsJSON();
}

/** The commands that expose metrics; `gatehouse_info{command}` and the status document name them. */
export type MetricsCommand = 'serve' | 'cgid' | 'kfcgi';

/**
 * prom-client defaults that `promtool check metrics` rejects: gauges whose
 * names end in _total (a suffix reserved for counters). Their labelled twins
 * (nodejs_active_handles{type}, ...) carry the same counts and stay.
 */
const DEFAULTS_PROMTOOL_REJECTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/** The package's version (gatehouse_info, the status document). */
export function gatehouseVersion(): string {
  if (version === null) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
      version = pkg.version ?? 'unknown';
    } catch {
      version = 'unknown';
    }
  }
  return version;
}
let version: string | null = null;

type Config<C> = Omit<C, 'registers'>;

export class MetricsRegistry {
  readonly command: MetricsCommand;
  readonly #prom: PromClient;
  readonly #registry: Registry;

  /** Loads prom-client (only now) and makes the registry with the defaults. */
  static async create(command: MetricsCommand): Promise<MetricsRegistry> {
    return new MetricsRegistry(await import('prom-client'), command);
  }

  private constructor(prom: PromClient, command: MetricsCommand) {
    this.#prom = prom;
    this.command = command;
    this.#registry = new prom.Registry();
    prom.collectDefaultMetrics({ register: this.#registry, eventLoopMonitoringPrecision: METRICS_EVENT_LOOP_RESOLUTION_MS });
    for (const name of DEFAULTS_PROMTOOL_REJECTS) this.#registry.removeSingleMetric(name);
    this.gauge({
      name: 'gatehouse_info',
      help: 'Always 1; the labels name the command and the installed version.',
      labelNames: ['command', 'version'],
      aggregator: 'first',
    }).set({ command, version: gatehouseVersion() }, 1);
  }

  counter<T extends string>(config: Config<CounterConfiguration<T>>): Counter<T> {
    return new this.#prom.Counter({ ...config, registers: [this.#registry] });
  }

  gauge<T extends string>(config: Config<GaugeConfiguration<T>>): Gauge<T> {
    return new this.#prom.Gauge({ ...config, registers: [this.#registry] });
  }

  histogram<T extends string>(config: Config<HistogramConfiguration<T>>): Histogram<T> {
    return new this.#prom.Histogram({ ...config, registers: [this.#registry] });
  }

  /** The exposition, in Prometheus's text format. */
  metrics(): Promise<string> {
    return this.#registry.metrics();
  }

  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Every metric with its values, as AggregatorRegistry.aggregate() takes them (one array per process). */
  json(): Promise<MetricObjectWithValues<MetricValue<string>>[]> {
    return this.#registry.getMetricsAsJSON();
  }

  /** Name, type and label names of every metric registered (the manual test compares them with the manuals). */
  describe(): Array<{ name: string; type: string; labels: string[] }> {
    return this.#registry.getMetricsAsArray().map((metric) => {
      const labels = (metric as unknown as { labelNames?: readonly string[] }).labelNames ?? [];
      return { name: metric.name, type: String(metric.type), labels: [...labels] };
    });
  }
}

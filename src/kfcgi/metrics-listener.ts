/**
 * kfcgi's -M: the metrics listener (Prometheus at /metrics, the status
 * document at /status). Like the pool's socket and the status socket it is
 * bound before the jail and the privilege drop, owned by -u, and removed at
 * exit from inside the jail only while it is still ours; prom-client is
 * loaded before the jail too (the jail holds no node_modules).
 */
import { clockTicksPerSecond, type ProcView } from '../sys/index.js';
import { MetricsEndpoint } from '../metrics/endpoint.js';
import { registerKfcgiMetrics } from '../metrics/kfcgi.js';
import { MetricsRegistry } from '../metrics/registry.js';
import { kfcgiPoolRow, statusDocument } from '../metrics/status.js';
import { OwnedSocketPath } from './listener.js';
import type { Logger } from './log.js';
import type { KfcgiConfig } from './options.js';
import type { Pool } from './supervisor.js';

export class KfcgiMetricsListener {
  readonly #endpoint: MetricsEndpoint;
  readonly #registry: MetricsRegistry;
  readonly #owned: OwnedSocketPath | null;

  /** Loads prom-client and binds -M (before the jail). */
  static async open(config: KfcgiConfig, log: Logger): Promise<KfcgiMetricsListener | null> {
    if (config.metrics === null) return null;
    const registry = await MetricsRegistry.create('kfcgi');
    const endpoint = await MetricsEndpoint.open(config.metrics, {
      owner: config.socketUser,
      removeSocketOnClose: false,
      log: (line) => log.warning(line),
    });
    const owned = endpoint.address.kind === 'unix' ? new OwnedSocketPath(endpoint.address.path) : null;
    log.info(`metrics on ${endpoint.describe()} (/metrics for Prometheus, /status for gatehouse status)`);
    return new KfcgiMetricsListener(endpoint, registry, owned);
  }

  private constructor(endpoint: MetricsEndpoint, registry: MetricsRegistry, owned: OwnedSocketPath | null) {
    this.#endpoint = endpoint;
    this.#registry = registry;
    this.#owned = owned;
  }

  /** Starts answering from the running pool. */
  serve(pool: Pool, proc: ProcView): void {
    registerKfcgiMetrics(this.#registry, {
      status: () => pool.status(),
      reapedWorkersCpuSeconds: () => {
        const own = proc.stat(process.pid);
        return own === null ? null : own.childCpuTicks / clockTicksPerSecond();
      },
    });
    this.#endpoint.serve({
      metrics: async () => ({ text: await this.#registry.metrics(), contentType: this.#registry.contentType }),
      status: () => {
        const status = pool.status();
        return statusDocument('kfcgi', [kfcgiPoolRow(status)], { kfcgi: status });
      },
    });
  }

  /** Stops listening and removes the socket file (if still ours); returns what happened to it, for the log. */
  async close(): Promise<string | null> {
    await this.#endpoint.close();
    return this.#owned?.remove() ?? null;
  }
}

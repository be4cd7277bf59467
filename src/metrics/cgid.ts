/**
 * cgid --fastcgi's metrics (`--metrics ADDR`): the scripts it runs (spawns,
 * latency, failures, exits; src/metrics/scripts.ts) and its FastCGI side
 * (requests in flight, connections from the web server), plus the status
 * document. Names are documented in gatehouse-cgid(8), METRICS.
 */
import type { FastCGIServer } from '../fastcgi/worker/server.js';
import type { ListenAddress } from '../sys/index.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import { MetricsEndpoint } from './endpoint.js';
import { MetricsRegistry } from './registry.js';
import { MeteredSpawner, registerScriptMetrics, type ScriptMetrics } from './scripts.js';
import { statusDocument, type StatusPool } from './status.js';

/** What the face's metrics read of its FastCGI server. */
export type FaceServer = Pick<FastCGIServer, 'activeRequests' | 'connectionCount'>;

/** The face's own gauges (the scripts' are registerScriptMetrics'). */
export function registerFaceMetrics(registry: MetricsRegistry, server: FaceServer): void {
  registry.gauge({
    name: 'gatehouse_cgid_fastcgi_requests_active',
    help: 'FastCGI requests in flight (a script starting, running, or its output being sent).',
    collect() {
      this.set(server.activeRequests);
    },
  });
  registry.gauge({
    name: 'gatehouse_cgid_fastcgi_connections',
    help: 'FastCGI connections open from the web server.',
    collect() {
      this.set(server.connectionCount);
    },
  });
}

/** The face's one pool for gatehouse status: its requests in flight. */
export function faceStatusRow(server: FaceServer): StatusPool {
  return { name: 'cgi scripts', active: server.activeRequests, idle: null, queue: null, max: null, maxReached: null };
}

export class FaceMetrics {
  readonly #registry: MetricsRegistry;
  readonly #endpoint: MetricsEndpoint;
  readonly #scripts: ScriptMetrics;

  constructor(registry: MetricsRegistry, endpoint: MetricsEndpoint) {
    this.#registry = registry;
    this.#endpoint = endpoint;
    this.#scripts = registerScriptMetrics(registry);
  }

  describe(): string {
    return this.#endpoint.describe();
  }

  /** `spawner`, counted and timed. */
  meter(spawner: ScriptSpawner): ScriptSpawner {
    return new MeteredSpawner(spawner, this.#scripts);
  }

  /** Starts answering, with the face's own numbers read from `server` at each scrape. */
  serve(server: FaceServer): void {
    registerFaceMetrics(this.#registry, server);
    this.#endpoint.serve({
      metrics: async () => ({ text: await this.#registry.metrics(), contentType: this.#registry.contentType }),
      status: () => statusDocument('cgid', [faceStatusRow(server)]),
    });
  }

  close(): Promise<void> {
    return this.#endpoint.close();
  }
}

/** Loads prom-client and binds the metrics address. */
export async function openFaceMetrics(address: ListenAddress, log: (line: string) => void): Promise<FaceMetrics> {
  const registry = await MetricsRegistry.create('cgid');
  const endpoint = await MetricsEndpoint.open(address, { log });
  return new FaceMetrics(registry, endpoint);
}

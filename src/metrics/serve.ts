/**
 * gatehouse serve's metrics. Nothing in the request path knows about them:
 * they subscribe to node:diagnostics_channel (Node's own http.server and
 * net.server channels, and gatehouse's handler and FastCGI client channels,
 * src/diagnostics.ts) and read the state the front already keeps (the script
 * limiter, the FastCGI pools, the cgid daemon's supervisor) at each scrape.
 * With no metrics address nothing subscribes, and every publisher skips its
 * message.
 *
 * Names, types and labels are documented in gatehouse-serve(8), METRICS.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { ServerResponse } from 'node:http';
import type net from 'node:net';
import {
  cgiChannels,
  clientChannels,
  fastcgiChannels,
  type ClientCreateMessage,
  type ClientErrorMessage,
  type HandlerCreateMessage,
  type HandlerErrorMessage,
} from '../diagnostics.js';
import { ErrorCode } from '../errors.js';
import { METRICS_REQUEST_BUCKETS } from '../limits.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import type { ListenAddress } from '../options/listen-address.js';
import { MetricsEndpoint } from './endpoint.js';
import { MetricsRegistry } from './registry.js';
import { CarriedTotal, MeteredSpawner, registerLimiterMetrics, registerScriptMetrics, type ScriptMetrics } from './scripts.js';
import { statusDocument, type StatusPool } from './status.js';
import type { WorkerReport } from './workers.js';
import type { ScriptLimiter } from '../cgi/limiter.js';
import type { PoolStats } from '../fastcgi/client/pool.js';
import { ProcView } from '../sys/index.js';

/** What the front is made of, as the metrics read it. */
export interface ServeMetricsSource {
  /** The front's HTTP listeners (requests and connections of other servers in the process are not counted). */
  servers: readonly net.Server[];
  /**
   * The CGI routes' script limiter, when there are CGI routes. Read at each
   * scrape, like fastcgiClients: a reload (SIGHUP) builds a new limiter and new
   * clients, so serve passes getters that read the front's current ones.
   */
  readonly limiter: ScriptLimiter | null;
  /** Every FastCGI route's clients, one per upstream. */
  readonly fastcgiClients: ReadonlyArray<{ readonly upstream: string; readonly stats: PoolStats }>;
  /** The cgid daemon's supervisor, when scripts start through it. */
  daemon: DaemonSource | null;
}

/** What the metrics read of the cgid daemon's supervisor (CgidSupervisor). */
export interface DaemonSource {
  /** True while a daemon is connected and takes orders. */
  readonly available: boolean;
  /** Daemons started so far (1 after the first start). */
  readonly starts: number;
  /** The running daemon's pid; undefined while none runs. */
  readonly daemonPid: number | undefined;
}

/** Where a request went: a FastCGI route, a CGI script, or everything else (files, errors before routing). */
export type RouteKind = 'fastcgi' | 'cgi' | 'static';

const STARTED = Symbol('gatehouse.metrics.started');
const ROUTE = Symbol('gatehouse.metrics.route');
interface MeteredResponse extends ServerResponse {
  [STARTED]?: number;
  [ROUTE]?: RouteKind;
}
interface MeteredSocket extends net.Socket {
  server?: net.Server;
}

const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

export class ServeMetrics {
  readonly registry: MetricsRegistry;
  readonly #scripts: ScriptMetrics;
  readonly #unsubscribe: Array<() => void> = [];
  #source: ServeMetricsSource | null = null;
  #limiterRegistered = false;
  /** Upstreams whose counters were set to 0 (a reload may add some). */
  readonly #upstreamsSeen = new Set<string>();
  #upstreamCounters: Array<{ inc(labels: { upstream: string }, value: number): void }> = [];

  constructor(registry: MetricsRegistry) {
    this.registry = registry;
    this.#scripts = registerScriptMetrics(registry);
  }

  /** `spawner`, counted and timed (installed before the front is made: the CGI handler takes its spawner then). */
  meter(spawner: ScriptSpawner): ScriptSpawner {
    return new MeteredSpawner(spawner, this.#scripts);
  }

  /** Registers the front's metrics and subscribes to the channels. */
  attach(source: ServeMetricsSource): void {
    this.#source = source;
    const registry = this.registry;
    const servers = new Set<net.Server>(source.servers);
    this.#attachHttpRequests(registry, servers);
    this.#attachHttpConnections(registry, servers);
    this.#attachCgi(registry);
    if (source.daemon) registerDaemonMetrics(registry, source.daemon);
    this.#attachFastCGI(registry, source);
    this.refresh();
  }

  /**
   * Before each scrape: what a reload added since (a first CGI route, a new
   * FastCGI upstream) gets its metrics, the upstream's counters from 0.
   */
  refresh(): void {
    const source = this.#source;
    if (!source) return;
    if (!this.#limiterRegistered && source.limiter) {
      this.#limiterRegistered = true;
      registerLimiterMetrics(this.registry, () => source.limiter);
    }
    for (const { upstream } of source.fastcgiClients) {
      if (this.#upstreamsSeen.has(upstream)) continue;
      this.#upstreamsSeen.add(upstream);
      for (const counter of this.#upstreamCounters) counter.inc({ upstream }, 0);
    }
  }

  #subscribe<M>(channel: { subscribe(fn: (m: M) => void): void; unsubscribe(fn: (m: M) => void): unknown }, listener: (m: M) => void) {
    channel.subscribe(listener);
    this.#unsubscribe.push(() => channel.unsubscribe(listener));
  }

  /** Requests of the front's servers: answered by route and status class, their duration, those under way. */
  #attachHttpRequests(registry: MetricsRegistry, servers: Set<net.Server>): void {
    const requests = registry.counter({
      name: 'gatehouse_http_requests_total',
      help: 'HTTP requests answered, by route (fastcgi, cgi, static: everything else) and status class (aborted: the connection closed before the response ended).',
      labelNames: ['route', 'status_class'],
    });
    const duration = registry.histogram({
      name: 'gatehouse_http_request_duration_seconds',
      help: 'Time from the request head read to the response ended (or the connection closed), by route.',
      labelNames: ['route'],
      buckets: METRICS_REQUEST_BUCKETS,
    });
    let inFlight = 0;
    registry.gauge({
      name: 'gatehouse_http_requests_in_flight',
      help: 'HTTP requests read and not yet answered.',
      collect() {
        this.set(inFlight);
      },
    });
    // Label sets made once: the hot path allocates none.
    const requestLabels = new Map<string, { route: RouteKind; status_class: string }>();
    for (const route of ['fastcgi', 'cgi', 'static'] as const)
      for (const statusClass of [...STATUS_CLASSES, 'aborted'])
        requestLabels.set(`${route} ${statusClass}`, { route, status_class: statusClass });
    const routeLabels = { fastcgi: { route: 'fastcgi' }, cgi: { route: 'cgi' }, static: { route: 'static' } } as const;
    function onResponseClose(this: MeteredResponse): void {
      const started = this[STARTED];
      if (started === undefined) return;
      this[STARTED] = undefined;
      inFlight -= 1;
      const route = this[ROUTE] ?? 'static';
      const statusClass = this.writableFinished ? (STATUS_CLASSES[Math.floor(this.statusCode / 100) - 1] ?? '5xx') : 'aborted';
      requests.inc(requestLabels.get(`${route} ${statusClass}`)!);
      duration.observe(routeLabels[route], (performance.now() - started) / 1000);
    }
    this.#subscribe(diagnosticsChannel.channel('http.server.request.start'), (message: unknown) => {
      const { response, server } = message as { response: MeteredResponse; server: net.Server };
      if (!servers.has(server)) return;
      inFlight += 1;
      response[STARTED] = performance.now();
      response.on('close', onResponseClose);
    });
    const markRoute = (route: RouteKind) => (message: HandlerCreateMessage) => {
      (message.request.res as MeteredResponse)[ROUTE] = route;
    };
    this.#subscribe(cgiChannels.create, markRoute('cgi'));
    this.#subscribe(fastcgiChannels.create, markRoute('fastcgi'));
  }

  /** Client connections of the front's servers: open, accepted, and the bytes read and written on them. */
  #attachHttpConnections(registry: MetricsRegistry, servers: Set<net.Server>): void {
    let open = 0;
    let accepted = 0;
    let closedBytesIn = 0;
    let closedBytesOut = 0;
    const sockets = new Set<net.Socket>();
    registry.gauge({
      name: 'gatehouse_http_connections',
      help: 'Client connections open.',
      collect() {
        this.set(open);
      },
    });
    registry.counter({
      name: 'gatehouse_http_connections_total',
      help: 'Client connections accepted.',
      collect() {
        this.reset();
        this.inc(accepted);
      },
    });
    const bytes = (name: string, help: string, closed: () => number, live: (socket: net.Socket) => number) =>
      registry.counter({
        name,
        help,
        collect() {
          let total = closed();
          for (const socket of sockets) total += live(socket);
          this.reset();
          this.inc(total);
        },
      });
    bytes(
      'gatehouse_http_received_bytes_total',
      'Bytes read from clients (request heads and bodies), on open connections and closed ones.',
      () => closedBytesIn,
      (socket) => socket.bytesRead,
    );
    bytes(
      'gatehouse_http_sent_bytes_total',
      'Bytes written to clients (response heads and bodies), on open connections and closed ones.',
      () => closedBytesOut,
      (socket) => socket.bytesWritten,
    );
    function onSocketClose(this: net.Socket): void {
      if (!sockets.delete(this)) return;
      open -= 1;
      closedBytesIn += this.bytesRead;
      closedBytesOut += this.bytesWritten;
    }
    this.#subscribe(diagnosticsChannel.channel('net.server.socket'), (message: unknown) => {
      const { socket } = message as { socket: MeteredSocket };
      if (socket.server === undefined || !servers.has(socket.server)) return;
      open += 1;
      accepted += 1;
      sockets.add(socket);
      socket.on('close', onSocketClose);
    });
  }

  #attachCgi(registry: MetricsRegistry): void {
    const timeouts = registry.counter({
      name: 'gatehouse_cgi_script_timeouts_total',
      help: 'Scripts killed because they wrote nothing for the script timeout (answered 504 when no head was sent).',
    });
    this.#subscribe(cgiChannels.error, (message: HandlerErrorMessage) => {
      if (message.error.code === ErrorCode.CGI_SCRIPT_TIMEOUT) timeouts.inc();
    });
  }

  #attachFastCGI(registry: MetricsRegistry, source: ServeMetricsSource): void {
    const requests = registry.counter({
      name: 'gatehouse_fastcgi_upstream_requests_total',
      help: 'Requests sent to a FastCGI application, by upstream.',
      labelNames: ['upstream'],
    });
    const errors = registry.counter({
      name: 'gatehouse_fastcgi_upstream_errors_total',
      help: 'Requests to a FastCGI application that failed, by upstream and error code (GH_UPSTREAM_REFUSED, GH_UPSTREAM_TIMEOUT, ...).',
      labelNames: ['upstream', 'code'],
    });
    const timeouts = registry.counter({
      name: 'gatehouse_fastcgi_upstream_timeouts_total',
      help: 'Requests to a FastCGI application that timed out (connecting, or no data for the read timeout), by upstream.',
      labelNames: ['upstream'],
    });
    // Every upstream starts at 0, so a rate over the first failures is right (refresh() does it, after a reload too).
    this.#upstreamCounters = [requests, timeouts];
    this.#subscribe(clientChannels.create, (message: ClientCreateMessage) => requests.inc({ upstream: message.request.upstream }));
    this.#subscribe(clientChannels.error, (message: ClientErrorMessage) => {
      const { upstream } = message.request;
      const { code } = message.error;
      errors.inc({ upstream, code });
      if (code === ErrorCode.UPSTREAM_TIMEOUT || code === ErrorCode.UPSTREAM_CONNECT_TIMEOUT) timeouts.inc({ upstream });
    });
    // The current clients, read at each scrape (a reload replaces them), summed by upstream (two routes may share one application).
    const byUpstream = (read: (stats: PoolStats) => number) => {
      const totals = new Map<string, number>();
      for (const client of source.fastcgiClients) totals.set(client.upstream, (totals.get(client.upstream) ?? 0) + read(client.stats));
      return totals;
    };
    const level = (name: string, help: string, read: (stats: PoolStats) => number) =>
      registry.gauge({
        name,
        help,
        labelNames: ['upstream'],
        collect() {
          // An upstream a reload removed is no longer reported.
          this.reset();
          for (const [upstream, value] of byUpstream(read)) this.set({ upstream }, value);
        },
      });
    const total = (name: string, help: string, read: (stats: PoolStats) => number) => {
      // Per upstream, what the clients a reload replaced had counted is carried on (src/metrics/scripts.ts).
      const carried = new Map<string, CarriedTotal>();
      return registry.counter({
        name,
        help,
        labelNames: ['upstream'],
        collect() {
          const current = new Map<string, Array<readonly [object, number]>>();
          for (const client of source.fastcgiClients)
            current.set(client.upstream, [...(current.get(client.upstream) ?? []), [client, read(client.stats)] as const]);
          for (const upstream of current.keys()) if (!carried.has(upstream)) carried.set(upstream, new CarriedTotal());
          this.reset();
          for (const [upstream, total] of carried) this.inc({ upstream }, total.total(current.get(upstream) ?? []));
        },
      });
    };
    level('gatehouse_fastcgi_upstream_connections', 'Connections open to a FastCGI application.', (stats) => stats.connections);
    level('gatehouse_fastcgi_upstream_connections_idle', 'Open connections with no request on them.', (stats) => stats.idle);
    level('gatehouse_fastcgi_upstream_queued_requests', 'Requests waiting for a connection.', (stats) => stats.queued);
    total('gatehouse_fastcgi_upstream_connections_opened_total', 'Connections opened to a FastCGI application.', (stats) => stats.opened);
    total(
      'gatehouse_fastcgi_upstream_pool_full_total',
      'Requests that found every connection the pool may open busy, and waited.',
      (stats) => stats.waited,
    );
    total(
      'gatehouse_fastcgi_upstream_starved_total',
      "Connections closed after a request instead of reused, because another request's connection waited unanswered in the application's listen queue.",
      (stats) => stats.starved,
    );
  }

  /** The status page's rows: the CGI scripts, then one per FastCGI upstream. */
  statusPools(): StatusPool[] {
    const source = this.#source;
    if (!source) return [];
    const pools: StatusPool[] = [];
    const limiter = source.limiter;
    if (limiter)
      pools.push({
        name: 'cgi scripts',
        active: limiter.running,
        idle: limiter.maxRunning - limiter.running,
        queue: limiter.queued,
        max: limiter.maxRunning,
        maxReached: limiter.refused,
      });
    const upstreams = new Map<string, StatusPool>();
    for (const client of source.fastcgiClients) {
      const stats = client.stats;
      const row = upstreams.get(client.upstream) ?? {
        name: `fastcgi ${client.upstream}`,
        active: 0,
        idle: 0,
        queue: 0,
        max: 0,
        maxReached: 0,
      };
      row.active! += stats.connections - stats.idle;
      // Two routes to one application each have their own pool: their caps add up, as their connections do.
      row.max! += stats.connectionCap;
      row.idle! += stats.idle;
      row.queue! += stats.queued;
      row.maxReached! += stats.waited;
      upstreams.set(client.upstream, row);
    }
    return [...pools, ...upstreams.values()];
  }

  /** Stops listening to the channels (at stop, or on a reload that makes a new front). */
  detach(): void {
    for (const unsubscribe of this.#unsubscribe.splice(0)) unsubscribe();
  }
}

/**
 * serve's `metrics`: one registry for this process, its ServeMetrics, and the
 * endpoint that answers /metrics and /status. Opened before the front is made
 * (the CGI handler takes its spawner, metered, then); serve() once the front
 * listens. A worker of serve --workers opens no endpoint: the supervisor
 * listens, asks each worker for report() over the IPC channel at each scrape,
 * and adds them up (src/metrics/workers.ts).
 */
export class ServeMetricsListener {
  readonly metrics: ServeMetrics;
  readonly #endpoint: MetricsEndpoint | null;

  private constructor(metrics: ServeMetrics, endpoint: MetricsEndpoint | null) {
    this.metrics = metrics;
    this.#endpoint = endpoint;
  }

  /** Loads prom-client and binds `address` (answering 503 until serve()); null: a worker's, with no listener of its own. */
  static async open(address: ListenAddress | null, log: (line: string) => void): Promise<ServeMetricsListener> {
    const registry = await MetricsRegistry.create('serve');
    const endpoint = address ? await MetricsEndpoint.open(address, { log }) : null;
    return new ServeMetricsListener(new ServeMetrics(registry), endpoint);
  }

  /** Where it listens, as the log names it. */
  describe(): string {
    return this.#endpoint?.describe() ?? "the supervisor's listener (this worker's numbers are added up there)";
  }

  /** `spawner`, counted and timed. */
  meter(spawner: ScriptSpawner): ScriptSpawner {
    return this.metrics.meter(spawner);
  }

  /** Subscribes to the front's events and starts answering scrapes. */
  serve(source: ServeMetricsSource): void {
    const metrics = this.metrics;
    metrics.attach(source);
    this.#endpoint?.serve({
      metrics: async () => {
        metrics.refresh();
        return { text: await metrics.registry.metrics(), contentType: metrics.registry.contentType };
      },
      status: () => statusDocument('serve', metrics.statusPools()),
    });
  }

  /** What a worker answers the supervisor's scrape with: its registry as JSON and its status rows. */
  async report(): Promise<WorkerReport> {
    this.metrics.refresh();
    return { metrics: await this.metrics.registry.json(), pools: this.metrics.statusPools() };
  }

  async close(): Promise<void> {
    this.metrics.detach();
    await this.#endpoint?.close();
  }
}

/**
 * The cgid daemon as the front sees it: up or not, how often it was started
 * again, and its own memory and CPU read from /proc/PID at each scrape (the
 * daemon is a process of its own, so prom-client's process_* metrics of the
 * front do not include it; its scripts are counted by gatehouse_cgi_*, not
 * here). While no daemon runs both read 0; the CPU counter starts again from
 * 0 with each new daemon, which Prometheus's rate() takes as a counter reset,
 * as it does process_cpu_seconds_total of a restarted process.
 */
export function registerDaemonMetrics(registry: MetricsRegistry, daemon: DaemonSource, proc: ProcView = new ProcView()): void {
  registry.gauge({
    name: 'gatehouse_cgid_daemon_up',
    help: '1 while the cgid daemon is connected and takes spawn orders; 0 while it is down or restarting (CGI requests get 503).',
    collect() {
      this.set(daemon.available ? 1 : 0);
    },
  });
  registry.counter({
    name: 'gatehouse_cgid_daemon_restarts_total',
    help: 'Times the front started the cgid daemon again after it died.',
    collect() {
      this.reset();
      this.inc(Math.max(0, daemon.starts - 1));
    },
  });
  const usage = () => (daemon.daemonPid === undefined ? null : proc.processUsage(daemon.daemonPid));
  registry.gauge({
    name: 'gatehouse_cgid_daemon_resident_memory_bytes',
    help: "The cgid daemon's resident memory, from /proc/PID/stat (0 while no daemon runs).",
    collect() {
      this.set(usage()?.rssBytes ?? 0);
    },
  });
  registry.counter({
    name: 'gatehouse_cgid_daemon_cpu_seconds_total',
    help: "The running cgid daemon's own CPU time, user and system, from /proc/PID/stat (not its scripts'; from 0 again with each new daemon).",
    collect() {
      this.reset();
      this.inc(usage()?.cpuSeconds ?? 0);
    },
  });
}

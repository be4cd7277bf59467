/**
 * The connections to one upstream (undici's pool layer): keep-alive reuse, a
 * cap on connections, a bounded queue of requests waiting for one, and the
 * capability probe whose answer decides whether requests may share a
 * connection. It hands out connections; what runs on them is the request
 * layer's business.
 */
import { CLIENT_IDLE_HANDOFF_MS, CLIENT_STARVATION_MS } from '../../limits.js';
import { ErrorCode, UpstreamError } from '../../errors.js';
import type { ResolvedAddress } from './address.js';
import { Connection } from './connection.js';
import { probeCapabilities, type UpstreamCapabilities } from './probe.js';

export interface PoolOptions {
  maxConnections: number;
  maxQueued: number;
  connectTimeoutMs: number;
  keepAliveTimeoutMs: number;
  probe: boolean;
  probeTimeoutMs: number;
  maxRequestsPerConnection: number;
}

export interface AcquireOptions {
  /** Only a connection opened for this request will do (a retry after a reused one died). */
  fresh?: boolean;
  /** Filled in by acquire() while the caller waits: calling it gives up the wait, rejecting with the error given. */
  cancel?: CancelHandle;
}

/** Cheaper than an AbortController per request; most requests never need it. */
export interface CancelHandle {
  cancel: ((error: UpstreamError) => void) | null;
}

/** Counters for tests and status pages. */
export interface PoolStats {
  /** Connections open now. */
  connections: number;
  /** Open connections with no request on them. */
  idle: number;
  /** Requests waiting for a connection. */
  queued: number;
  /** Connections opened since the pool started. */
  opened: number;
  /** Requests that found every connection the pool may open busy and waited in the queue (the pool was full). */
  waited: number;
  /**
   * Connections closed after a request instead of reused, because another
   * request had waited unanswered past CLIENT_STARVATION_MS (its connection
   * sits in the application's listen queue): the pool opened more
   * connections than the application serves at once.
   */
  starved: number;
  /**
   * Connections the pool may open at once now: maxConnections, lowered by
   * the application's FCGI_MAX_CONNS or by what starvation taught the pool
   * (the cap `waited` counts against; status pages show it as the pool's max).
   */
  connectionCap: number;
}

interface Waiter {
  fresh: boolean;
  settled: boolean;
  resolve(connection: Connection): void;
  reject(error: UpstreamError): void;
}

export class Pool {
  readonly #address: ResolvedAddress;
  readonly #options: PoolOptions;
  readonly #connections = new Set<Connection>();
  readonly #waiters: Waiter[] = [];
  /** Connections being opened, each with the waiters it will serve (several when the application multiplexes). */
  readonly #pending = new Set<Waiter[]>();
  #opened = 0;
  #waited = 0;
  #starved = 0;
  #capabilities: UpstreamCapabilities | null = null;
  #probe: Promise<UpstreamCapabilities | null> | null = null;
  #cancelProbe: (() => void) | null = null;
  #closed = false;
  #closeWaiters: Array<() => void> = [];
  /**
   * How many connections the application really serves at once, learned when
   * a request starves (see #someoneStarves): php-fpm states no
   * FCGI_MAX_CONNS, and every connection above its process count only parks
   * a request in its listen queue.
   */
  #learnedCap: number | null = null;

  constructor(address: ResolvedAddress, options: PoolOptions) {
    this.#address = address;
    this.#options = options;
  }

  get upstream(): string {
    return this.#address.label;
  }

  get stats(): PoolStats {
    let idle = 0;
    for (const connection of this.#connections) if (connection.load === 0) idle++;
    return {
      connections: this.#connections.size,
      idle,
      queued: this.#waiters.length,
      opened: this.#opened,
      waited: this.#waited,
      starved: this.#starved,
      connectionCap: this.#connectionCap(),
    };
  }

  /** What the application said about itself; starts the probe if it has not run. Null: no answer (treated as no multiplexing). */
  capabilities(): Promise<UpstreamCapabilities | null> {
    return this.#startProbe();
  }

  /** The application answered CANT_MPX_CONN: stop sharing connections, whatever GET_VALUES said. */
  disableMultiplexing(): void {
    this.#capabilities = { ...(this.#capabilities ?? {}), multiplexes: false };
  }

  /**
   * A connection with a slot reserved for the caller, who must either begin a
   * request on it or give the slot back with unreserve().
   */
  acquire(options: AcquireOptions = {}): Promise<Connection> {
    if (this.#closed)
      return Promise.reject(
        new UpstreamError(ErrorCode.CLIENT_CLOSED, this.upstream, 'the FastCGI client was closed', { retryable: true }),
      );
    if (this.#options.probe) void this.#startProbe();
    return new Promise((resolve, reject) => {
      const handle = options.cancel;
      const waiter: Waiter = {
        fresh: options.fresh ?? false,
        settled: false,
        resolve: (connection) => {
          waiter.settled = true;
          if (handle) handle.cancel = null;
          resolve(connection);
        },
        reject: (error) => {
          waiter.settled = true;
          if (handle) handle.cancel = null;
          reject(error);
        },
      };
      if (handle) {
        handle.cancel = (error) => {
          if (waiter.settled) return;
          const index = this.#waiters.indexOf(waiter);
          if (index >= 0) this.#waiters.splice(index, 1);
          // A waiter already riding on a connection being opened stays in that list; the connection skips it.
          waiter.reject(error);
        };
      }
      this.#waiters.push(waiter);
      this.#dispatch();
      // Still in the queue (not served, not riding on a connection being opened): every connection allowed is busy.
      if (!waiter.settled && this.#waiters.lastIndexOf(waiter) !== -1) this.#waited++;
      if (!waiter.settled && this.#waiters.length > this.#options.maxQueued) {
        this.#waiters.pop();
        waiter.reject(
          new UpstreamError(
            ErrorCode.UPSTREAM_QUEUE_FULL,
            this.upstream,
            `${this.#options.maxQueued} requests already wait for one of ${this.#connectionCap()} connections; the application is too slow for the load (raise maxConnections or add capacity)`,
            { retryable: true },
          ),
        );
      }
    });
  }

  /** Stops taking requests, fails the queued ones, closes idle connections and the others once their requests end. */
  close(): Promise<void> {
    this.#closed = true;
    this.#cancelProbe?.();
    for (const waiter of this.#waiters.splice(0)) {
      waiter.reject(
        new UpstreamError(ErrorCode.CLIENT_CLOSED, this.upstream, 'the FastCGI client was closed before a connection was free', {
          retryable: true,
        }),
      );
    }
    for (const connection of this.#connections) connection.retire();
    if (this.#connections.size === 0 && this.#pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#closeWaiters.push(resolve));
  }

  #startProbe(): Promise<UpstreamCapabilities | null> {
    if (this.#probe) return this.#probe;
    const probe = probeCapabilities(this.#address, this.#options.probeTimeoutMs);
    this.#cancelProbe = probe.cancel;
    this.#probe = probe.result.then((answer) => {
      this.#cancelProbe = null;
      // A CANT_MPX_CONN seen meanwhile wins over what GET_VALUES said.
      const multiplexes = (answer?.multiplexes ?? false) && this.#capabilities?.multiplexes !== false;
      this.#capabilities = answer ? { ...answer, multiplexes } : { multiplexes: false };
      this.#dispatch();
      return answer;
    });
    return this.#probe;
  }

  #connectionCap(): number {
    return Math.min(this.#options.maxConnections, this.#capabilities?.maxConns ?? Infinity, this.#learnedCap ?? Infinity);
  }

  #perConnectionCap(): number {
    if (!this.#capabilities?.multiplexes) return 1;
    return Math.max(1, Math.min(this.#options.maxRequestsPerConnection, this.#capabilities.maxReqs ?? Infinity));
  }

  #totalLoad(): number {
    let load = 0;
    for (const connection of this.#connections) load += connection.load;
    for (const waiters of this.#pending) load += waiters.length;
    return load;
  }

  #dispatch(): void {
    while (this.#waiters.length > 0 && !this.#closed) {
      const waiter = this.#waiters[0]!;
      if (this.#totalLoad() >= (this.#capabilities?.maxReqs ?? Infinity)) return;
      const existing = waiter.fresh ? null : this.#pickConnection();
      if (existing) {
        this.#waiters.shift();
        existing.reserve();
        waiter.resolve(existing);
        continue;
      }
      // Several requests can ride on a connection still being opened when the application multiplexes.
      const joinable = waiter.fresh ? undefined : [...this.#pending].find((waiters) => waiters.length < this.#perConnectionCap());
      if (joinable) {
        this.#waiters.shift();
        joinable.push(waiter);
        continue;
      }
      if (this.#connections.size + this.#pending.size >= this.#connectionCap()) {
        // A retry needs a new connection: make room by closing an idle one, if any.
        const idle = waiter.fresh ? [...this.#connections].find((connection) => connection.load === 0) : undefined;
        if (!idle) return;
        this.#connections.delete(idle);
        idle.destroy();
      }
      this.#waiters.shift();
      this.#open(waiter);
    }
  }

  #pickConnection(): Connection | null {
    const cap = this.#perConnectionCap();
    let best: Connection | null = null;
    for (const connection of this.#connections) {
      if (!connection.reusable || connection.load >= cap) continue;
      // Fill the busiest connection that has room, so idle ones can time out.
      if (!best || connection.load > best.load) best = connection;
    }
    return best;
  }

  #open(first: Waiter): void {
    const waiters = [first];
    this.#pending.add(waiters);
    this.#opened++;
    Connection.open(this.#address, this.#options.connectTimeoutMs).then(
      (connection) => {
        this.#pending.delete(waiters);
        connection.attach({ onSlotFree: (c) => this.#onSlotFree(c), onClose: (c) => this.#onClose(c) });
        this.#connections.add(connection);
        for (const waiter of waiters) {
          if (waiter.settled || this.#closed) continue; // its request went away while connecting
          connection.reserve();
          waiter.resolve(connection);
        }
        if (this.#closed) connection.retire();
        else if (connection.load === 0) connection.startIdleTimer(this.#options.keepAliveTimeoutMs);
        this.#dispatch();
      },
      (error: UpstreamError) => {
        this.#pending.delete(waiters);
        for (const waiter of waiters) if (!waiter.settled) waiter.reject(error);
        this.#dispatch();
        this.#checkClosed();
      },
    );
  }

  #onSlotFree(connection: Connection): void {
    if (connection.load === 0 && this.#someoneStarves()) {
      // Not offered to the queue: this connection's process is better spent on a connection that has waited longer.
      this.#starved++;
      connection.destroy();
      return;
    }
    this.#dispatch();
    if (connection.load > 0) return;
    if (!connection.reusable || this.#closed) connection.destroy();
    else connection.startIdleTimer(this.#someoneWaitsForAnAnswer() ? CLIENT_IDLE_HANDOFF_MS : this.#options.keepAliveTimeoutMs);
  }

  /**
   * php-fpm and libfcgi processes serve one connection at a time, and keep
   * serving a kept-alive one until it closes. When more connections are open
   * than the application has processes, the extra ones wait unaccepted in its
   * listen queue while ours sit idle: a request on one of them would wait for
   * ever (until its timeout). So while another request still waits for its
   * first answer, an idle connection is kept only briefly: long enough for the
   * caller's next request to take it, not long enough to starve the others.
   * And when a request has waited unanswered for CLIENT_STARVATION_MS (busy
   * callers keep taking the idle connections), connections that finish are
   * closed instead of reused until it is answered.
   */
  #someoneStarves(): boolean {
    if (this.#capabilities?.multiplexes) return false;
    const limit = performance.now() - CLIENT_STARVATION_MS;
    let starving = false;
    let served = 0;
    for (const connection of this.#connections) {
      const since = connection.oldestUnansweredSince();
      // Answered recently or not waiting at all: a process of the application is on it.
      if (since === null || since >= limit) served++;
      else starving = true;
    }
    // Learn the application's real concurrency, so the pool stops opening
    // connections it cannot serve; the extra ones close as they finish. Each
    // new starvation can only lower it: it converges on the process count.
    if (starving) this.#learnedCap = Math.min(this.#learnedCap ?? Infinity, Math.max(1, served));
    return starving;
  }

  #someoneWaitsForAnAnswer(): boolean {
    if (this.#capabilities?.multiplexes) return false;
    for (const connection of this.#connections) if (connection.hasUnansweredRequest) return true;
    return false;
  }

  #onClose(connection: Connection): void {
    this.#connections.delete(connection);
    this.#dispatch();
    this.#checkClosed();
  }

  #checkClosed(): void {
    if (this.#closed && this.#connections.size === 0 && this.#pending.size === 0) {
      for (const resolve of this.#closeWaiters.splice(0)) resolve();
    }
  }
}

/**
 * The FastCGI client's user API: one FastCGIClient per upstream application.
 *
 * ```ts
 * const client = new FastCGIClient({ address: 'unix:/run/php/php-fpm.sock' });
 * const response = client.request({ params: { SCRIPT_FILENAME: '/srv/hello.php', REQUEST_METHOD: 'GET' } });
 * response.on('stderr', (chunk) => log(chunk));
 * const [body, end] = await Promise.all([collect(response), response.completion]);
 * await client.close();
 * ```
 */
import {
  CLIENT_ABORT_GRACE_MS,
  CLIENT_CONNECT_TIMEOUT_MS,
  CLIENT_FETCH_ALL_MAX_BYTES,
  CLIENT_IDLE_TIMEOUT_MS,
  CLIENT_KEEPALIVE_IDLE_MS,
  CLIENT_MAX_CONNECTIONS,
  CLIENT_MAX_QUEUED_REQUESTS,
  CLIENT_MAX_REQUESTS_PER_CONNECTION,
  CLIENT_PROBE_TIMEOUT_MS,
} from '../../limits.js';
import { ErrorCode, UpstreamError, InvalidArgumentError } from '../../errors.js';
import { Role, RecordType } from '../protocol.js';
import { encodeParamsRecords } from '../records.js';
import type { NameValueInput } from '../name-value.js';
import { resolveAddress, type UpstreamAddress } from './address.js';
import { Pool, type PoolStats } from './pool.js';
import type { UpstreamCapabilities } from './probe.js';
import { UpstreamResponse, RequestRun, type BodySource, type FastCGICompletion } from './request.js';

export interface FastCGIClientOptions {
  /** `unix:/path`, `/path`, `host:port`, `{ path }` or `{ host, port }`. */
  address: UpstreamAddress;
  /** Connections open at once to this upstream (also capped by the application's FCGI_MAX_CONNS). Default 64. */
  maxConnections?: number;
  /** Requests that may wait for a connection; past it a request fails with UPSTREAM_QUEUE_FULL. Default 1024. */
  maxQueued?: number;
  /** Default 10 s; past it UPSTREAM_CONNECT_TIMEOUT. */
  connectTimeoutMs?: number;
  /**
   * Longest time a request may go without progress (waiting for a connection,
   * or no record from the application and no body accepted); past it
   * UPSTREAM_TIMEOUT. Time spent waiting on a slow reader of the response does
   * not count. Default 60 s.
   */
  idleTimeoutMs?: number;
  /** Send FCGI_KEEP_CONN and reuse connections. Default true. */
  keepAlive?: boolean;
  /** How long an unused connection stays open. Default 30 s. */
  keepAliveTimeoutMs?: number;
  /** Ask the application FCGI_GET_VALUES (on a connection of its own). Default true. */
  probe?: boolean;
  /** Give up on the probe's answer after this long and assume no multiplexing. Default 1 s. */
  probeTimeoutMs?: number;
  /** After ABORT_REQUEST, how long before the connection is destroyed if no END_REQUEST comes. Default 2 s. */
  abortGraceMs?: number;
  /** Requests on one connection when the application multiplexes. Default 64. */
  maxRequestsPerConnection?: number;
}

/** FastCGI params: an object, a Map, or pairs. Values may be bytes (kept exactly). */
export type FastCGIParams =
  | Record<string, NameValueInput | number>
  | Map<NameValueInput, NameValueInput>
  | Iterable<readonly [NameValueInput, NameValueInput]>;

export type RoleName = 'responder' | 'authorizer' | 'filter';

export interface FastCGIRequestOptions {
  params: FastCGIParams;
  /** Sent as FCGI_STDIN, streamed with backpressure. Set CONTENT_LENGTH in params yourself (php-fpm needs it). */
  body?: BodySource;
  /** Filter role only: the file to filter, sent as FCGI_DATA after STDIN (set FCGI_DATA_LENGTH in params). */
  data?: BodySource;
  /** Default 'responder'. */
  role?: RoleName | Role;
  signal?: AbortSignal;
  /** Overrides the client's idleTimeoutMs for this request. */
  idleTimeoutMs?: number;
}

export interface FetchAllOptions extends FastCGIRequestOptions {
  /** Largest STDOUT (and STDERR) kept; past it UPSTREAM_RESPONSE_TOO_LARGE. Default 16 MiB. */
  maxBytes?: number;
}

export interface FetchAllResult extends FastCGICompletion {
  stdout: Buffer;
  stderr: Buffer;
}

const ROLES: Record<RoleName, Role> = { responder: Role.RESPONDER, authorizer: Role.AUTHORIZER, filter: Role.FILTER };

export class FastCGIClient {
  /** How errors and logs name the application: `unix:/path` or `host:port`. */
  readonly upstream: string;
  readonly #pool: Pool;
  readonly #keepAlive: boolean;
  readonly #idleTimeoutMs: number;
  readonly #abortGraceMs: number;

  constructor(options: FastCGIClientOptions) {
    const address = resolveAddress(options.address);
    this.upstream = address.label;
    const maxConnections = positiveInteger(options, 'maxConnections', CLIENT_MAX_CONNECTIONS);
    const maxQueued = positiveInteger(options, 'maxQueued', CLIENT_MAX_QUEUED_REQUESTS, true);
    const connectTimeoutMs = positiveInteger(options, 'connectTimeoutMs', CLIENT_CONNECT_TIMEOUT_MS);
    this.#idleTimeoutMs = positiveInteger(options, 'idleTimeoutMs', CLIENT_IDLE_TIMEOUT_MS);
    const keepAliveTimeoutMs = positiveInteger(options, 'keepAliveTimeoutMs', CLIENT_KEEPALIVE_IDLE_MS);
    const probeTimeoutMs = positiveInteger(options, 'probeTimeoutMs', CLIENT_PROBE_TIMEOUT_MS);
    this.#abortGraceMs = positiveInteger(options, 'abortGraceMs', CLIENT_ABORT_GRACE_MS);
    const maxRequestsPerConnection = positiveInteger(options, 'maxRequestsPerConnection', CLIENT_MAX_REQUESTS_PER_CONNECTION);
    this.#keepAlive = options.keepAlive ?? true;
    this.#pool = new Pool(address, {
      maxConnections,
      maxQueued,
      connectTimeoutMs,
      keepAliveTimeoutMs,
      probe: options.probe ?? true,
      probeTimeoutMs,
      maxRequestsPerConnection,
    });
  }

  /**
   * Starts a request. Throws at once (FastCGIProtocolError FCGI_PAIR_TOO_LARGE)
   * when one param cannot fit in a record; every other failure arrives through
   * the response (see UpstreamResponse).
   */
  request(options: FastCGIRequestOptions): UpstreamResponse {
    const role = typeof options.role === 'string' ? ROLES[options.role] : (options.role ?? Role.RESPONDER);
    if (role === undefined)
      throw new InvalidArgumentError(`unknown FastCGI role ${String(options.role)}; use responder, authorizer or filter`);
    if (options.data !== undefined && role !== Role.FILTER)
      throw new InvalidArgumentError('`data` is the FCGI_DATA stream of the filter role; set role: "filter"');
    const params = encodeParamsRecords(RecordType.PARAMS, 0, paramPairs(options.params));
    const response = new UpstreamResponse(this.upstream);
    const run = new RequestRun(
      this.#pool,
      {
        role,
        keepConn: this.#keepAlive,
        params,
        body: options.body,
        data: options.data,
        signal: options.signal,
        idleTimeoutMs: options.idleTimeoutMs ?? this.#idleTimeoutMs,
        abortGraceMs: this.#abortGraceMs,
      },
      response,
    );
    run.start();
    return response;
  }

  /** A request whose whole STDOUT and STDERR are collected in memory (for small responses). */
  async fetchAll(options: FetchAllOptions): Promise<FetchAllResult> {
    const maxBytes = options.maxBytes ?? CLIENT_FETCH_ALL_MAX_BYTES;
    const response = this.request(options);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let stdoutBytes = 0;
    let stderrBytes = 0;
    let tooLarge: UpstreamError | null = null;
    const overflow = (which: string) => {
      tooLarge ??= new UpstreamError(
        ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE,
        this.upstream,
        `${which} exceeded ${maxBytes} bytes; read the response as a stream instead`,
      );
      response.destroy(); // aborts the request
    };
    response.on('stderr', (chunk: Buffer) => {
      stderrBytes += chunk.length;
      if (stderrBytes > maxBytes) return overflow('STDERR');
      stderr.push(chunk);
    });
    response.on('data', (chunk: Buffer) => {
      stdoutBytes += chunk.length;
      if (stdoutBytes > maxBytes) return overflow('STDOUT');
      stdout.push(chunk);
    });
    response.on('error', () => {}); // reported through completion
    try {
      const completion = await response.completion;
      // 'end' follows the last 'data' event; completion can resolve before the stream has handed over its buffer.
      if (!response.readableEnded) await new Promise<void>((resolve) => response.once('end', resolve).once('close', resolve));
      return { ...completion, stdout: Buffer.concat(stdout, stdoutBytes), stderr: Buffer.concat(stderr) };
    } catch (error) {
      throw tooLarge ?? error;
    }
  }

  /** What the application answered to FCGI_GET_VALUES (null: no answer within probeTimeoutMs). */
  capabilities(): Promise<UpstreamCapabilities | null> {
    return this.#pool.capabilities();
  }

  get stats(): PoolStats {
    return this.#pool.stats;
  }

  /** Refuses new requests (CLIENT_CLOSED), fails queued ones, and resolves once every connection is closed. */
  close(): Promise<void> {
    return this.#pool.close();
  }
}

function paramPairs(params: FastCGIParams): Iterable<readonly [NameValueInput, NameValueInput]> {
  if (params instanceof Map) return params.entries();
  if (Symbol.iterator in Object(params) && typeof (params as Iterable<unknown>)[Symbol.iterator] === 'function') {
    return params as Iterable<readonly [NameValueInput, NameValueInput]>;
  }
  return Object.entries(params as Record<string, NameValueInput | number>).map(
    ([name, value]) => [name, typeof value === 'number' ? String(value) : value] as const,
  );
}

function positiveInteger<K extends keyof FastCGIClientOptions>(
  options: FastCGIClientOptions,
  key: K,
  fallback: number,
  allowZero = false,
): number {
  const value = options[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new InvalidArgumentError(
      `FastCGIClient option ${key} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${String(value)}`,
    );
  }
  return value;
}

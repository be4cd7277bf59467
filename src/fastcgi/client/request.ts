/**
 * One request from start to END_REQUEST (undici's api layer): waits for a
 * connection from the pool, sends BEGIN_REQUEST and PARAMS, streams the body
 * as STDIN (and DATA for filters) no faster than the socket drains, and
 * delivers STDOUT into a Readable that pauses the socket when its consumer
 * is slow. It owns the per-request timer, the caller's AbortSignal and the
 * single retry on a fresh connection when a reused one turned out dead.
 */
import { Readable } from 'node:stream';
import { CLIENT_RESPONSE_HIGH_WATER_MARK, CLIENT_STDERR_LINE_MAX } from '../../limits.js';
import { ErrorCode, UpstreamError } from '../../errors.js';
import { ProtocolStatus, RecordType, Role } from '../protocol.js';
import type { Connection, Exchange, ExchangeHandlers } from './connection.js';
import { clientChannels, type ClientRequestInfo } from '../../diagnostics.js';
import type { CancelHandle, Pool } from './pool.js';

/** A request body: bytes, text, or a stream (a Readable or any async iterable of chunks). */
export type BodySource = Buffer | Uint8Array | string | AsyncIterable<Uint8Array | string> | Iterable<Uint8Array | string>;

/** END_REQUEST, as the application sent it. */
export interface FastCGICompletion {
  /** The application's exit status (a CGI script's exit code under fcgiwrap; 0 from php-fpm). */
  appStatus: number;
  /** Always REQUEST_COMPLETE (0) here: other statuses reject `completion` with an UpstreamError. */
  protocolStatus: number;
}

export interface RequestSettings {
  role: Role;
  keepConn: boolean;
  params: Buffer;
  body: BodySource | undefined;
  data: BodySource | undefined;
  signal: AbortSignal | undefined;
  idleTimeoutMs: number;
  abortGraceMs: number;
}

/**
 * The application's answer: a Readable of its STDOUT bytes (the CGI-style
 * head and body, unparsed), 'stderr' events carrying its FCGI_STDERR chunks,
 * and `completion`, which resolves with END_REQUEST's statuses.
 *
 * Read the stream and await `completion` together: END_REQUEST comes after
 * the last STDOUT byte, and a stream nobody reads stops the socket (that is
 * the backpressure), so awaiting `completion` alone can wait forever on a
 * large response. Failures reject `completion` with an UpstreamError; the
 * stream is destroyed with the same error when it has an 'error' listener
 * (as pipeline() and `for await` add), and just destroyed otherwise.
 * Destroying the stream before it ends aborts the request.
 */
export class UpstreamResponse extends Readable {
  /** `unix:/path` or `host:port`. */
  readonly upstream: string;
  readonly completion: Promise<FastCGICompletion>;
  /** @internal */
  onRead: (() => void) | null = null;
  /** @internal */
  onDestroy: (() => void) | null = null;
  /** @internal */
  settle!: { resolve(value: FastCGICompletion): void; reject(error: UpstreamError): void };

  constructor(upstream: string) {
    super({ highWaterMark: CLIENT_RESPONSE_HIGH_WATER_MARK });
    this.upstream = upstream;
    this.completion = new Promise<FastCGICompletion>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // Marked handled here so a caller who only reads the stream gets no unhandled rejection; awaiting it still throws.
    this.completion.catch(() => {});
  }

  override _read(): void {
    this.onRead?.();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.onDestroy?.();
    callback(error);
  }
}

type AttemptOutcome = 'done' | 'retry';

/** Runs one request; created and started by FastCGIClient.request(). */
export class RequestRun {
  readonly #pool: Pool;
  readonly #settings: RequestSettings;
  readonly #response: UpstreamResponse;
  /** Gives up a wait in the pool's queue (caller's abort or the idle timer). */
  readonly #wait: CancelHandle = { cancel: null };
  #onCallerAbort: (() => void) | null = null;
  #timer: NodeJS.Timeout | null = null;
  #timerStopped = false;
  #exchange: Exchange | null = null;
  #finished = false;
  #bodyStarted = false;
  #receivedThisAttempt = false;
  #attempts = 0;
  /** What diagnostics_channel messages carry; made on the first event someone listens to (src/diagnostics.ts). */
  #info: ClientRequestInfo | null = null;
  #sentHeadersEvent = false;

  constructor(pool: Pool, settings: RequestSettings, response: UpstreamResponse) {
    this.#pool = pool;
    this.#settings = settings;
    this.#response = response;
    response.onRead = () => this.#onRead();
    response.onDestroy = () => {
      if (!this.#finished) {
        this.#fail(
          new UpstreamError(ErrorCode.REQUEST_ABORTED, pool.upstream, 'response stream destroyed by its reader before the request ended'),
        );
      }
    };
  }

  #requestInfo(): ClientRequestInfo {
    this.#info ??= { upstream: this.#pool.upstream, role: ROLE_NAMES[this.#settings.role] ?? 'responder' };
    return this.#info;
  }

  start(): void {
    if (clientChannels.create.hasSubscribers) clientChannels.create.publish({ request: this.#requestInfo() });
    const signal = this.#settings.signal;
    if (signal) {
      if (signal.aborted) return this.#abortedByCaller();
      this.#onCallerAbort = () => this.#abortedByCaller();
      signal.addEventListener('abort', this.#onCallerAbort, { once: true });
    }
    this.#timer = setTimeout(() => this.#onIdle(), this.#settings.idleTimeoutMs);
    this.#run().catch((error: unknown) => {
      // A bug here must still settle the request rather than leave the caller waiting.
      this.#fail(new UpstreamError(ErrorCode.UPSTREAM_PROTOCOL, this.#pool.upstream, `client error: ${String(error)}`, { cause: error }));
    });
  }

  async #run(): Promise<void> {
    for (;;) {
      let connection: Connection;
      try {
        connection = await this.#pool.acquire({ fresh: this.#attempts > 0, cancel: this.#wait });
      } catch (error) {
        this.#fail(error as UpstreamError);
        return;
      }
      if (this.#finished) {
        connection.unreserve();
        return;
      }
      this.#attempts++;
      if ((await this.#runOn(connection)) === 'done') return;
    }
  }

  #runOn(connection: Connection): Promise<AttemptOutcome> {
    this.#receivedThisAttempt = false;
    const reused = connection.reused;
    const settings = this.#settings;
    return new Promise((resolveAttempt) => {
      const handlers: ExchangeHandlers = {
        onStdout: (chunk) => {
          if (!this.#sentHeadersEvent) {
            this.#sentHeadersEvent = true;
            if (clientChannels.headers.hasSubscribers) clientChannels.headers.publish({ request: this.#requestInfo() });
          }
          this.#receivedThisAttempt = true;
          this.#touch();
          if (this.#response.push(chunk)) return true;
          this.#stopTimer();
          return false;
        },
        onStderr: (chunk) => {
          this.#receivedThisAttempt = true;
          this.#touch();
          for (let offset = 0; offset < chunk.length; offset += CLIENT_STDERR_LINE_MAX) {
            this.#response.emit('stderr', chunk.subarray(offset, offset + CLIENT_STDERR_LINE_MAX));
          }
        },
        onEnd: (appStatus, protocolStatus) => {
          if (protocolStatus === ProtocolStatus.REQUEST_COMPLETE) {
            this.#finish({ appStatus, protocolStatus });
            return resolveAttempt('done');
          }
          if (protocolStatus === ProtocolStatus.CANT_MPX_CONN) {
            this.#pool.disableMultiplexing();
            if (this.#canRetry()) return resolveAttempt('retry');
          }
          this.#fail(protocolStatusError(this.#pool.upstream, protocolStatus));
          resolveAttempt('done');
        },
        onError: (error) => {
          // A pooled connection the application had already closed: it never saw this request, so send it again once.
          if (reused && !this.#receivedThisAttempt && this.#canRetry()) return resolveAttempt('retry');
          this.#fail(error);
          resolveAttempt('done');
        },
      };
      this.#exchange = connection.begin({ role: settings.role, keepConn: settings.keepConn, params: settings.params }, handlers);
      this.#touch();
      this.#sendBody(this.#exchange).catch((error: unknown) => {
        this.#fail(
          new UpstreamError(
            ErrorCode.REQUEST_ABORTED,
            this.#pool.upstream,
            `the request body failed: ${String((error as Error)?.message ?? error)}`,
            { cause: error },
          ),
        );
        resolveAttempt('done');
      });
    });
  }

  #canRetry(): boolean {
    return !this.#finished && !this.#bodyStarted && this.#attempts === 1;
  }

  async #sendBody(exchange: Exchange): Promise<void> {
    await this.#pump(exchange, RecordType.STDIN, this.#settings.body);
    if (this.#settings.role === Role.FILTER) await this.#pump(exchange, RecordType.DATA, this.#settings.data);
  }

  async #pump(exchange: Exchange, type: number, source: BodySource | undefined): Promise<void> {
    if (source !== undefined) {
      if (typeof source === 'string' || source instanceof Uint8Array) {
        const bytes = toBuffer(source);
        if (bytes.length > 0) {
          this.#bodyStarted = true;
          exchange.write(type, bytes);
        }
      } else {
        for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
          if (exchange.done || this.#finished) return; // leaving the loop destroys a Readable source: nobody will read it
          const bytes = toBuffer(chunk);
          if (bytes.length === 0) continue;
          this.#bodyStarted = true;
          this.#touch();
          if (!exchange.write(type, bytes)) await exchange.connection.drained();
        }
      }
    }
    if (!exchange.done && !this.#finished) exchange.endStream(type);
  }

  #onRead(): void {
    if (this.#finished && this.#response.readableEnded) return;
    if (this.#timerStopped) {
      this.#timerStopped = false;
      this.#touch();
    }
    this.#exchange?.resume();
  }

  #touch(): void {
    if (this.#timer && !this.#timerStopped) this.#timer.refresh();
  }

  /** The consumer is slow: waiting on it is not the application's fault, so the no-data timer stops. */
  #stopTimer(): void {
    this.#timerStopped = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  #onIdle(): void {
    if (this.#finished || this.#timerStopped) return;
    if (this.#wait.cancel) {
      this.#wait.cancel(
        new UpstreamError(
          ErrorCode.UPSTREAM_TIMEOUT,
          this.#pool.upstream,
          `no connection became free within ${this.#settings.idleTimeoutMs} ms`,
          { retryable: true },
        ),
      );
      return;
    }
    this.#fail(
      new UpstreamError(
        ErrorCode.UPSTREAM_TIMEOUT,
        this.#pool.upstream,
        `no data from the application for ${this.#settings.idleTimeoutMs} ms`,
      ),
    );
  }

  #abortedByCaller(): void {
    if (this.#finished) return;
    const error = new UpstreamError(ErrorCode.REQUEST_ABORTED, this.#pool.upstream, 'request aborted by the caller', {
      cause: this.#settings.signal?.reason,
    });
    this.#fail(error);
    this.#wait.cancel?.(error);
  }

  #finish(completion: FastCGICompletion): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimer();
    this.#response.push(null);
    this.#response.settle.resolve(completion);
    if (clientChannels.trailers.hasSubscribers)
      clientChannels.trailers.publish({ request: this.#requestInfo(), trailers: [], appStatus: completion.appStatus });
  }

  #fail(error: UpstreamError): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimer();
    // Stops the application's work on it; the connection goes back to the pool once END_REQUEST comes (or is destroyed).
    if (this.#exchange && !this.#exchange.done) this.#exchange.abort(this.#settings.abortGraceMs);
    this.#response.settle.reject(error);
    if (clientChannels.error.hasSubscribers) clientChannels.error.publish({ request: this.#requestInfo(), error });
    if (!this.#response.destroyed) this.#response.destroy(this.#response.listenerCount('error') > 0 ? error : undefined);
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    // One signal may serve many requests: do not leave a listener per finished request on it.
    if (this.#onCallerAbort) this.#settings.signal?.removeEventListener('abort', this.#onCallerAbort);
    this.#onCallerAbort = null;
  }
}

const ROLE_NAMES: Record<number, ClientRequestInfo['role']> = {
  [Role.RESPONDER]: 'responder',
  [Role.AUTHORIZER]: 'authorizer',
  [Role.FILTER]: 'filter',
};

function toBuffer(chunk: Uint8Array | string): Buffer {
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

export function protocolStatusError(upstream: string, protocolStatus: number): UpstreamError {
  switch (protocolStatus) {
    case ProtocolStatus.CANT_MPX_CONN:
      return new UpstreamError(
        ErrorCode.UPSTREAM_CANT_MPX,
        upstream,
        'refused the request with CANT_MPX_CONN (it takes one request per connection)',
        { retryable: true },
      );
    case ProtocolStatus.OVERLOADED:
      return new UpstreamError(ErrorCode.UPSTREAM_OVERLOADED, upstream, 'refused the request with OVERLOADED (out of workers or memory)', {
        retryable: true,
      });
    case ProtocolStatus.UNKNOWN_ROLE:
      return new UpstreamError(ErrorCode.UPSTREAM_UNKNOWN_ROLE, upstream, 'does not support the requested FastCGI role (UNKNOWN_ROLE)');
    default:
      return new UpstreamError(
        ErrorCode.UPSTREAM_PROTOCOL,
        upstream,
        `ended the request with protocol status ${protocolStatus}, which FastCGI 1.0 does not define`,
      );
  }
}

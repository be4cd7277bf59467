/**
 * One socket to a FastCGI application: the glue between the record decoder
 * and the socket (undici's client-h1 layer). It hands out request ids, frames
 * what requests write, routes records back to the request that owns their id,
 * pauses reading while any request's consumer is slow, and turns a dead
 * socket or a protocol violation into an UpstreamError for every request on
 * it. It knows nothing about pools, queues, bodies or retries.
 */
import net from 'node:net';
import { ErrorCode, UpstreamError } from '../../errors.js';
import { RecordDecoder, type FastCGIRecord } from '../decoder.js';
import { RecordType, RECORD_TYPE_NAMES, type Role } from '../protocol.js';
import {
  decodeEndRequestBody,
  encodeAbortRequest,
  encodeBeginRequest,
  encodeRecord,
  frameStream,
  setRecordsRequestId,
} from '../records.js';
import type { ResolvedAddress } from './address.js';

/** What a request gets told about its records. Called from the socket's data handler: none may throw. */
export interface ExchangeHandlers {
  /** A STDOUT chunk; return false to ask the connection to stop reading until resume(). */
  onStdout(chunk: Buffer): boolean;
  onStderr(chunk: Buffer): void;
  onEnd(appStatus: number, protocolStatus: number): void;
  /** The connection failed (closed, reset, protocol violation) before this request's END_REQUEST. */
  onError(error: UpstreamError): void;
}

export interface BeginOptions {
  role: Role;
  keepConn: boolean;
  /** Encoded PARAMS records (without the terminating empty record). */
  params: Buffer;
}

/** A request's handle on its connection, valid until its END_REQUEST or the connection's end. */
export interface Exchange {
  readonly id: number;
  readonly connection: Connection;
  /** Frames `data` as records of `type` (STDIN or DATA). Returns false when the socket wants a drain first. */
  write(type: number, data: Buffer): boolean;
  /** Writes the empty record that ends the STDIN or DATA stream. */
  endStream(type: number): void;
  /** Stop reading the socket for this request's sake (backpressure from its consumer). */
  pause(): void;
  resume(): void;
  /**
   * Sends ABORT_REQUEST and stops delivering records to the handlers. The id
   * stays taken until the application's END_REQUEST; if that does not come
   * within `graceMs`, the connection is destroyed.
   */
  abort(graceMs: number): void;
  /** True once the request ended (END_REQUEST) or its connection is gone: nothing more may be written for it. */
  readonly done: boolean;
}

interface ExchangeState {
  id: number;
  handlers: ExchangeHandlers | null;
  ended: boolean;
  /** Some record for this request has arrived (so the application has accepted the connection and is working on it). */
  answered: boolean;
  /** performance.now() when BEGIN_REQUEST went out. */
  startedAt: number;
  abortTimer: NodeJS.Timeout | null;
}

export interface ConnectionEvents {
  /** A request id was freed (END_REQUEST, or the request was detached). */
  onSlotFree(connection: Connection): void;
  /** The socket is gone (after every request on it was told). */
  onClose(connection: Connection): void;
}

let nextConnectionSerial = 1;

export class Connection {
  readonly upstream: string;
  /** For logs and tests: which connection of this process this is. */
  readonly serial = nextConnectionSerial++;
  readonly #socket: net.Socket;
  readonly #decoder = new RecordDecoder();
  readonly #exchanges = new Map<number, ExchangeState>();
  readonly #paused = new Set<number>();
  readonly #drainWaiters: Array<() => void> = [];
  #events: ConnectionEvents | null = null;
  #closed = false;
  #reserved = 0;
  #requestsStarted = 0;
  /** False once the application (or we) decided this connection carries no more requests. */
  #reusable = true;
  #idleTimer: NodeJS.Timeout | null = null;

  private constructor(socket: net.Socket, upstream: string) {
    this.#socket = socket;
    this.upstream = upstream;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('drain', () => this.#flushDrainWaiters());
    socket.on('error', (error: NodeJS.ErrnoException) =>
      this.#fail(ErrorCode.UPSTREAM_RESET, `connection failed (${error.code ?? error.message})`, error),
    );
    socket.on('close', () => this.#fail(ErrorCode.UPSTREAM_RESET, 'connection closed by the application before it ended the request'));
  }

  /**
   * Opens a connection. Rejects with UPSTREAM_REFUSED (nothing listens, or
   * the socket file is missing or not ours) or UPSTREAM_CONNECT_TIMEOUT.
   */
  static open(address: ResolvedAddress, connectTimeoutMs: number): Promise<Connection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address.connectOptions);
      const cleanup = () => {
        clearTimeout(timer);
        socket.removeListener('error', onError);
      };
      const onError = (error: NodeJS.ErrnoException) => {
        cleanup();
        socket.destroy();
        const hint =
          error.code === 'EAGAIN'
            ? 'its listen queue is full: the application accepts too slowly (more processes, or a larger backlog: spawn-fcgi -b, php-fpm listen.backlog)'
            : error.code === 'EACCES'
              ? 'no permission on the socket file (its mode or owner)'
              : 'is the application running and listening there?';
        reject(
          new UpstreamError(ErrorCode.UPSTREAM_REFUSED, address.label, `cannot connect (${error.code ?? error.message}): ${hint}`, {
            cause: error,
            retryable: true,
          }),
        );
      };
      const timer = setTimeout(() => {
        cleanup();
        socket.destroy();
        reject(
          new UpstreamError(
            ErrorCode.UPSTREAM_CONNECT_TIMEOUT,
            address.label,
            `no connection within ${connectTimeoutMs} ms (application overloaded or its listen queue full?)`,
            {
              retryable: true,
            },
          ),
        );
      }, connectTimeoutMs);
      socket.once('error', onError);
      socket.once('connect', () => {
        cleanup();
        if (!address.isUnix) socket.setNoDelay(true);
        resolve(new Connection(socket, address.label));
      });
    });
  }

  /** Tells the pool about freed ids and the socket's end. Set once, by the owner. */
  attach(events: ConnectionEvents): void {
    this.#events = events;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Requests on this connection now, plus ones promised to waiters that have not started yet. */
  get load(): number {
    return this.#exchanges.size + this.#reserved;
  }

  /** True when a request has already run on this connection (so a failure may just mean it went stale). */
  get reused(): boolean {
    return this.#requestsStarted > 0;
  }

  /**
   * A request here has had no record back yet. With applications that serve
   * one connection per process (php-fpm, libfcgi), this often means the
   * connection still waits in the listen queue behind connections that
   * processes are keeping alive for us.
   */
  get hasUnansweredRequest(): boolean {
    return this.oldestUnansweredSince() !== null;
  }

  /** performance.now() at the start of the oldest request here with no record back yet; null when there is none. */
  oldestUnansweredSince(): number | null {
    let oldest: number | null = null;
    for (const state of this.#exchanges.values()) {
      if (!state.answered && state.handlers && (oldest === null || state.startedAt < oldest)) oldest = state.startedAt;
    }
    return oldest;
  }

  get reusable(): boolean {
    return this.#reusable && !this.#closed;
  }

  /** Marks the connection as carrying no more requests; it closes once its last request ends. */
  retire(): void {
    this.#reusable = false;
    if (this.load === 0) this.destroy();
  }

  reserve(): void {
    this.#reserved++;
    this.#clearIdleTimer();
  }

  unreserve(): void {
    this.#reserved--;
    this.#events?.onSlotFree(this);
  }

  /** Closes the connection after `ms` unless a request reserves it first. */
  startIdleTimer(ms: number): void {
    this.#clearIdleTimer();
    this.#idleTimer = setTimeout(() => this.destroy(), ms);
    this.#idleTimer.unref();
  }

  #clearIdleTimer(): void {
    if (this.#idleTimer) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }

  /**
   * Starts a request on a reserved slot: BEGIN_REQUEST, the PARAMS and the
   * empty PARAMS record go out in one write.
   */
  begin(options: BeginOptions, handlers: ExchangeHandlers): Exchange {
    this.#reserved--;
    const id = this.#freeId();
    const state: ExchangeState = { id, handlers, ended: false, answered: false, startedAt: performance.now(), abortTimer: null };
    this.#exchanges.set(id, state);
    this.#requestsStarted++;
    if (!options.keepConn) this.#reusable = false;
    // Held until the end of this tick, so a body given as bytes and the empty STDIN leave in the same writev.
    this.#socket.cork();
    process.nextTick(() => this.#socket.uncork());
    // The params were encoded before this id was known: stamp it on each record.
    this.#writeAll([
      encodeBeginRequest(id, options.role, options.keepConn),
      setRecordsRequestId(options.params, id),
      encodeRecord(RecordType.PARAMS, id),
    ]);
    const connection = this;
    return {
      id,
      connection,
      write: (type, data) => (state.ended || this.#closed ? true : this.#writeAll(frameStream(type, id, data))),
      endStream: (type) => {
        if (!state.ended && !this.#closed) this.#writeAll([encodeRecord(type, id)]);
      },
      pause: () => {
        if (state.ended || this.#closed) return;
        this.#paused.add(id);
        this.#socket.pause();
      },
      resume: () => this.#resumeFor(id),
      abort: (graceMs) => this.#abort(state, graceMs),
      get done() {
        return state.ended || connection.closed;
      },
    };
  }

  /** Resolves when the socket has drained its write buffer, or is gone. */
  drained(): Promise<void> {
    if (this.#closed || !this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  destroy(): void {
    this.#reusable = false;
    this.#socket.destroy();
  }

  #freeId(): number {
    // Ids are reused as soon as they are free, so they stay small (the spec wants that; apps index tables with them).
    let id = 1;
    while (this.#exchanges.has(id)) id++;
    return id;
  }

  #writeAll(parts: Buffer[]): boolean {
    if (parts.length === 1) return this.#socket.write(parts[0]!);
    this.#socket.cork();
    for (const part of parts) this.#socket.write(part);
    this.#socket.uncork();
    return !this.#socket.writableNeedDrain;
  }

  #resumeFor(id: number): void {
    if (!this.#paused.delete(id)) return;
    if (this.#paused.size === 0 && !this.#closed) this.#socket.resume();
  }

  #abort(state: ExchangeState, graceMs: number): void {
    if (state.ended || this.#closed || state.handlers === null) return;
    state.handlers = null;
    this.#resumeFor(state.id);
    this.#writeAll([encodeAbortRequest(state.id)]);
    state.abortTimer = setTimeout(() => {
      // The application ignored ABORT_REQUEST: the only way left to stop it is to close its connection.
      this.destroy();
    }, graceMs);
    state.abortTimer.unref();
  }

  #onData(chunk: Buffer): void {
    const error = this.#decoder.push(chunk, (record) => this.#onRecord(record));
    if (error) this.#fail(ErrorCode.UPSTREAM_PROTOCOL, `sent bytes that are not FastCGI: ${error.message}`, error);
  }

  #onRecord(record: FastCGIRecord): void {
    if (record.requestId === 0) return; // management records (GET_VALUES_RESULT, UNKNOWN_TYPE): this connection asked nothing
    const state = this.#exchanges.get(record.requestId);
    if (!state) return; // the spec says to ignore records for request ids that are not active
    state.answered = true;
    switch (record.type) {
      case RecordType.STDOUT:
        if (record.content.length > 0 && state.handlers && !state.handlers.onStdout(record.content)) {
          this.#paused.add(state.id);
          this.#socket.pause();
        }
        return;
      case RecordType.STDERR:
        if (record.content.length > 0) state.handlers?.onStderr(record.content);
        return;
      case RecordType.END_REQUEST: {
        const body = decodeEndRequestBody(record.content);
        if (body instanceof Error) {
          this.#fail(ErrorCode.UPSTREAM_PROTOCOL, body.message, body);
          return;
        }
        const handlers = state.handlers;
        this.#release(state);
        handlers?.onEnd(body.appStatus, body.protocolStatus);
        this.#events?.onSlotFree(this);
        return;
      }
      default:
        this.#fail(
          ErrorCode.UPSTREAM_PROTOCOL,
          `sent a ${RECORD_TYPE_NAMES[record.type] ?? `type ${record.type}`} record for request ${record.requestId}, which an application never sends`,
        );
    }
  }

  #release(state: ExchangeState): void {
    state.ended = true;
    state.handlers = null;
    if (state.abortTimer) clearTimeout(state.abortTimer);
    this.#exchanges.delete(state.id);
    this.#resumeFor(state.id);
  }

  #onEnd(): void {
    // The application closed its side; anything still open on it cannot finish.
    const truncated = this.#decoder.end();
    if (truncated) this.#fail(ErrorCode.UPSTREAM_RESET, `closed the connection in the middle of a record: ${truncated.message}`, truncated);
    else if (this.#exchanges.size > 0) this.#fail(ErrorCode.UPSTREAM_RESET, 'closed the connection before it ended the request');
    else this.#fail(ErrorCode.UPSTREAM_RESET, 'closed the connection');
  }

  #fail(code: ErrorCode, message: string, cause?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reusable = false;
    this.#clearIdleTimer();
    this.#socket.destroy();
    const states = [...this.#exchanges.values()];
    for (const state of states) {
      const handlers = state.handlers;
      this.#release(state);
      handlers?.onError(new UpstreamError(code, this.upstream, message, { cause }));
    }
    this.#flushDrainWaiters();
    this.#events?.onClose(this);
  }

  #flushDrainWaiters(): void {
    const waiters = this.#drainWaiters.splice(0);
    for (const resolve of waiters) resolve();
  }
}

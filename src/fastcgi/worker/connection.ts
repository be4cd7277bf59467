/**
 * One web-server connection to the worker: the request state machine on top
 * of the record decoder. Owns the socket, demultiplexes records to requests,
 * frames responses, and turns every kind of bad input into a defined outcome
 * (an END_REQUEST with a protocol status, an UNKNOWN_TYPE reply, or closing
 * this one connection) without throwing out of an event handler.
 */
import type { Duplex } from 'node:stream';
import { RecordDecoder, type FastCGIRecord } from '../decoder.js';
import { decodeNameValuePairs, type NameValuePair } from '../name-value.js';
import { decodeBeginRequestBody, encodeEndRequest, encodeParamsRecords, encodeRecord, encodeUnknownType, frameStream } from '../records.js';
import { FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MAXTYPE, FCGI_MPXS_CONNS, ProtocolStatus, RecordType, Role } from '../protocol.js';
import { ErrorCode, FastCGIProtocolError, GatehouseError } from '../../errors.js';
import { WORKER_DRAIN_TIMEOUT_MS, WORKER_SMALL_WRITE_BYTES } from '../../limits.js';
import { FastCGIRequest } from './request.js';
import { FastCGIResponse, type ResponseSink } from './response.js';

export interface ConnectionLimits {
  maxParamsBytes: number;
  maxRequestsPerConnection: number;
  maxRequestId: number;
  /** What GET_VALUES reports as FCGI_MAX_CONNS. */
  maxConns: number;
}

export interface ConnectionHost {
  limits: ConnectionLimits;
  dispatch(req: FastCGIRequest, res: FastCGIResponse): void;
  /** A connection-level failure worth a log line (bad records, a peer that vanished mid-request). */
  reportError(error: GatehouseError): void;
}

/** A request between BEGIN_REQUEST and the end of its PARAMS. */
interface PendingRequest {
  phase: 'params';
  role: Role;
  keepConn: boolean;
  params: Buffer[];
  paramsBytes: number;
}

/** A request whose handler is running. */
interface ActiveRequest {
  phase: 'active';
  keepConn: boolean;
  req: FastCGIRequest;
  res: FastCGIResponse;
  /** STDIN ended (empty record seen). */
  stdinDone: boolean;
  dataDone: boolean;
  /** A push() into req or req.data returned false: the socket is paused for it. */
  paused: boolean;
}

type RequestState = PendingRequest | ActiveRequest;

const EMPTY = Buffer.alloc(0);

export class WorkerConnection implements ResponseSink {
  readonly #socket: Duplex;
  readonly #host: ConnectionHost;
  readonly #decoder = new RecordDecoder();
  readonly #requests = new Map<number, RequestState>();
  /** Responses waiting for the socket to drain, in order. */
  #drainWaiters: Array<(error?: Error | null) => void> = [];
  #pausedCount = 0;
  /** Set when a request without FCGI_KEEP_CONN finished: close once nothing is in flight. */
  #closeWhenIdle = false;
  #closing = false;
  #failed = false;
  /** PARAMS bytes held for requests whose PARAMS stream has not ended yet (bounded by maxParamsBytes). */
  #pendingParamsBytes = 0;
  #corked = false;
  readonly closed: Promise<void>;

  constructor(socket: Duplex, host: ConnectionHost) {
    this.#socket = socket;
    this.#host = host;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('drain', () => this.#onDrain());
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // A reset from the web server is routine (nginx closes on client abort); requests in flight are aborted in 'close'.
      if (error.code !== 'ECONNRESET' && error.code !== 'EPIPE')
        this.#host.reportError(new GatehouseError(ErrorCode.CLIENT_CLOSED, `FastCGI connection error: ${error.message}`, { cause: error }));
    });
    socket.on('close', () => this.#onClose());
  }

  /** Requests in flight (for graceful stop). */
  get activeRequests(): number {
    return this.#requests.size;
  }

  /** Graceful stop: close as soon as the requests in flight are done. */
  closeWhenIdle(): void {
    this.#closeWhenIdle = true;
    if (this.#requests.size === 0) this.#finish();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #onData(chunk: Buffer): void {
    const error = this.#decoder.push(chunk, (record) => this.#onRecord(record));
    if (error) this.#protocolFailure(error);
  }

  #onEnd(): void {
    const error = this.#decoder.end();
    if (error && this.#requests.size > 0) this.#host.reportError(error);
    // The web server closed its side: nothing more will arrive for requests still reading their body.
    for (const [id, state] of this.#requests) {
      if (state.phase === 'params') {
        this.#requests.delete(id);
        this.#pendingParamsBytes -= state.paramsBytes;
      } else if (!state.stdinDone) this.#abort(id, state, 'the web server closed the connection before the request body ended');
    }
    if (this.#requests.size === 0) this.#finish();
  }

  #onClose(): void {
    for (const [id, state] of this.#requests) {
      if (state.phase === 'active') this.#abort(id, state, 'the connection to the web server closed', false);
    }
    this.#requests.clear();
    this.#pendingParamsBytes = 0;
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const waiter of waiters) waiter();
  }

  #protocolFailure(error: FastCGIProtocolError): void {
    // A failure found inside a record callback comes back once more as push()'s result: one log line, not two.
    if (this.#failed) return;
    this.#failed = true;
    this.#host.reportError(error);
    this.#decoder.fail(error);
    for (const [id, state] of this.#requests) {
      if (state.phase === 'active') this.#abort(id, state, error.message, false);
    }
    this.#requests.clear();
    this.#pendingParamsBytes = 0;
    this.#socket.destroy();
  }

  #onRecord(record: FastCGIRecord): void {
    const { type, requestId, content } = record;
    if (requestId === 0 || type > FCGI_MAXTYPE) {
      this.#onManagementRecord(type, content);
      return;
    }
    switch (type) {
      case RecordType.BEGIN_REQUEST:
        return this.#onBeginRequest(requestId, content);
      case RecordType.ABORT_REQUEST: {
        const state = this.#requests.get(requestId);
        if (!state) return;
        if (state.phase === 'params') {
          this.#requests.delete(requestId);
          this.#pendingParamsBytes -= state.paramsBytes;
          this.#write([encodeEndRequest(requestId, 0, ProtocolStatus.REQUEST_COMPLETE)]);
          this.#afterRequest(state.keepConn);
        } else this.#abort(requestId, state, 'the web server aborted the request (FCGI_ABORT_REQUEST)');
        return;
      }
      case RecordType.PARAMS:
        return this.#onParams(requestId, content);
      case RecordType.STDIN:
      case RecordType.DATA:
        return this.#onInput(type, requestId, content);
      default:
        // Records only an application sends (STDOUT, END_REQUEST, ...) or a
        // management type on a request id: not ours to act on. The spec says
        // to ignore records for requests we do not know; these are the same.
        return;
    }
  }

  #onManagementRecord(type: number, content: Buffer): void {
    if (type !== RecordType.GET_VALUES) {
      // UNKNOWN_TYPE for anything we do not understand, as the spec says; a
      // peer that sends us GET_VALUES_RESULT or UNKNOWN_TYPE gets nothing back
      // (answering would let two confused peers loop forever).
      if (type !== RecordType.GET_VALUES_RESULT && type !== RecordType.UNKNOWN_TYPE) this.#write([encodeUnknownType(type)]);
      return;
    }
    const asked = decodeNameValuePairs(content);
    if (asked instanceof FastCGIProtocolError) return this.#protocolFailure(asked);
    const { maxConns, maxRequestsPerConnection } = this.#host.limits;
    const known: Record<string, string> = {
      [FCGI_MAX_CONNS]: String(maxConns),
      [FCGI_MAX_REQS]: String(maxConns * maxRequestsPerConnection),
      [FCGI_MPXS_CONNS]: '1',
    };
    const answer: Array<[string, string]> = [];
    for (const [name] of asked) {
      const key = name.toString('latin1');
      const value = known[key];
      if (value !== undefined) answer.push([key, value]);
    }
    this.#write([
      answer.length ? encodeParamsRecords(RecordType.GET_VALUES_RESULT, 0, answer) : encodeRecord(RecordType.GET_VALUES_RESULT, 0),
    ]);
  }

  #onBeginRequest(requestId: number, content: Buffer): void {
    const body = decodeBeginRequestBody(content);
    if (body instanceof FastCGIProtocolError) return this.#protocolFailure(body);
    const { limits } = this.#host;
    if (requestId > limits.maxRequestId) {
      return this.#protocolFailure(
        new FastCGIProtocolError(ErrorCode.FCGI_TOO_MANY_REQUESTS, `request id ${requestId} is above the limit of ${limits.maxRequestId}`),
      );
    }
    if (this.#requests.has(requestId)) {
      return this.#protocolFailure(
        new FastCGIProtocolError(
          ErrorCode.FCGI_UNEXPECTED_RECORD,
          `BEGIN_REQUEST for request id ${requestId}, which is still in progress on this connection`,
        ),
      );
    }
    if (this.#closing) {
      // Stopping: refuse new work cleanly so the web server can retry elsewhere.
      this.#write([encodeEndRequest(requestId, 0, ProtocolStatus.OVERLOADED)]);
      return;
    }
    if (body.role !== Role.RESPONDER && body.role !== Role.AUTHORIZER && body.role !== Role.FILTER) {
      this.#write([encodeEndRequest(requestId, 0, ProtocolStatus.UNKNOWN_ROLE)]);
      if (!body.keepConn) this.#afterRequest(false);
      return;
    }
    if (this.#requests.size >= limits.maxRequestsPerConnection) {
      this.#write([encodeEndRequest(requestId, 0, ProtocolStatus.OVERLOADED)]);
      return;
    }
    this.#requests.set(requestId, { phase: 'params', role: body.role as Role, keepConn: body.keepConn, params: [], paramsBytes: 0 });
  }

  #onParams(requestId: number, content: Buffer): void {
    const state = this.#requests.get(requestId);
    if (state?.phase !== 'params') return;
    if (content.length > 0) {
      state.paramsBytes += content.length;
      this.#pendingParamsBytes += content.length;
      const { maxParamsBytes } = this.#host.limits;
      // Two bounds: one request's PARAMS, and all PARAMS this connection holds for requests whose PARAMS have not
      // ended (many ids opened and never finished must not hold maxRequestsPerConnection times the limit).
      if (state.paramsBytes > maxParamsBytes || this.#pendingParamsBytes > maxParamsBytes) {
        // Answer this request alone (431, as an HTTP server would) and keep the connection for the others.
        this.#requests.delete(requestId);
        this.#pendingParamsBytes -= state.paramsBytes;
        const which =
          state.paramsBytes > maxParamsBytes
            ? `params exceed ${maxParamsBytes} bytes`
            : `params of the requests still receiving them on this connection exceed ${maxParamsBytes} bytes`;
        this.#host.reportError(new FastCGIProtocolError(ErrorCode.FCGI_PARAMS_TOO_LARGE, `request ${requestId}: ${which}; answered 431`));
        const body = Buffer.from(
          'Status: 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n\r\nrequest header fields too large\n',
        );
        this.#write([
          encodeRecord(RecordType.STDOUT, requestId, body),
          encodeRecord(RecordType.STDOUT, requestId),
          encodeEndRequest(requestId, 0, ProtocolStatus.REQUEST_COMPLETE),
        ]);
        this.#afterRequest(state.keepConn);
        return;
      }
      // The content may be a slice of the socket's chunk: copy only what must outlive this callback.
      state.params.push(Buffer.from(content));
      return;
    }
    this.#pendingParamsBytes -= state.paramsBytes;
    const pairs = decodeNameValuePairs(state.params.length === 1 ? state.params[0]! : Buffer.concat(state.params, state.paramsBytes));
    if (pairs instanceof FastCGIProtocolError) return this.#protocolFailure(pairs);
    this.#startRequest(requestId, state, pairs);
  }

  #startRequest(requestId: number, pending: PendingRequest, pairs: NameValuePair[]): void {
    const req = new FastCGIRequest({ requestId, role: pending.role, rawParams: pairs, onRead: () => this.#resumeFor(requestId) });
    const res = new FastCGIResponse(requestId, this, req.method === 'HEAD');
    const active: ActiveRequest = {
      phase: 'active',
      keepConn: pending.keepConn,
      req,
      res,
      // The spec sends no STDIN to authorizers; do not wait for one.
      stdinDone: pending.role === Role.AUTHORIZER,
      dataDone: pending.role !== Role.FILTER,
      paused: false,
    };
    if (active.stdinDone) {
      req.complete = true;
      req.push(null);
    }
    this.#requests.set(requestId, active);
    this.#host.dispatch(req, res);
  }

  #onInput(type: number, requestId: number, content: Buffer): void {
    const state = this.#requests.get(requestId);
    if (state?.phase !== 'active') return;
    const isData = type === RecordType.DATA;
    if (isData ? state.dataDone : state.stdinDone) return;
    const stream = isData ? state.req.data : state.req;
    if (!stream) return;
    if (content.length === 0) {
      if (isData) state.dataDone = true;
      else {
        state.stdinDone = true;
        state.req.complete = true;
      }
      stream.push(null);
      return;
    }
    if (stream.destroyed) return;
    if (!stream.push(content) && !state.paused) {
      // FastCGI has no per-request flow control: the only way to slow the web
      // server is to stop reading the connection.
      state.paused = true;
      if (this.#pausedCount++ === 0) this.#socket.pause();
    }
  }

  #resumeFor(requestId: number): void {
    const state = this.#requests.get(requestId);
    if (state?.phase !== 'active' || !state.paused) return;
    state.paused = false;
    if (--this.#pausedCount === 0) this.#socket.resume();
  }

  #abort(requestId: number, state: ActiveRequest, reason: string, sendEnd = true): void {
    this.#requests.delete(requestId);
    if (state.paused) {
      state.paused = false;
      if (--this.#pausedCount === 0 && !this.#socket.destroyed) this.#socket.resume();
    }
    const { req, res } = state;
    if (!req.complete || !res.writableFinished) {
      req.aborted = true;
      req.emit('aborted');
      // Like node:http: readers see an error only if they listen for one.
      if (!req.complete && req.listenerCount('error') > 0)
        req.destroy(new GatehouseError(ErrorCode.REQUEST_ABORTED, `request ${requestId} aborted: ${reason}`));
      else req.destroy();
      state.req.data?.destroy();
    }
    if (!res.writableFinished) res.markAborted();
    if (sendEnd && !this.#socket.destroyed) {
      this.#write([encodeEndRequest(requestId, 0, ProtocolStatus.REQUEST_COMPLETE)]);
      this.#afterRequest(state.keepConn);
    }
  }

  // ---- ResponseSink: called by FastCGIResponse ----

  writeStdout(requestId: number, chunks: Buffer[], done: (error?: Error | null) => void): void {
    if (!this.#isActive(requestId)) return done();
    let total = 0;
    for (const chunk of chunks) total += chunk.length;
    let parts: Buffer[];
    if (total <= WORKER_SMALL_WRITE_BYTES)
      parts = [encodeRecord(RecordType.STDOUT, requestId, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total))];
    else {
      parts = [];
      for (const chunk of chunks) parts.push(...frameStream(RecordType.STDOUT, requestId, chunk));
    }
    if (this.#write(parts)) done();
    else this.#drainWaiters.push(done);
  }

  writeStderr(requestId: number, data: Buffer): void {
    if (!this.#isActive(requestId) || data.length === 0) return;
    this.#write(frameStream(RecordType.STDERR, requestId, data));
  }

  endRequest(requestId: number, appStatus: number, done: (error?: Error | null) => void): void {
    const state = this.#requests.get(requestId);
    if (state?.phase !== 'active') return done();
    this.#requests.delete(requestId);
    if (state.paused) {
      state.paused = false;
      if (--this.#pausedCount === 0) this.#socket.resume();
    }
    this.#write([
      encodeRecord(RecordType.STDOUT, requestId, EMPTY),
      encodeEndRequest(requestId, appStatus, ProtocolStatus.REQUEST_COMPLETE),
    ]);
    // The handler may stop reading the body early; discard the rest as it arrives.
    if (!state.stdinDone) state.req.resume();
    done();
    this.#afterRequest(state.keepConn);
  }

  #isActive(requestId: number): boolean {
    return this.#requests.get(requestId)?.phase === 'active' && !this.#socket.destroyed;
  }

  #afterRequest(keepConn: boolean): void {
    if (!keepConn) this.#closeWhenIdle = true;
    if (this.#closeWhenIdle && this.#requests.size === 0) this.#finish();
  }

  /**
   * Closes our side. If the web server may still be sending a body nobody
   * read, keep reading (and discarding) until it closes or a timeout: closing
   * a socket with unread input makes the kernel send a reset, and the reset
   * can destroy the response still in flight to the web server.
   */
  #finish(): void {
    if (this.#closing) return;
    this.#closing = true;
    if (this.#socket.destroyed) return;
    this.#socket.end();
    const timer = setTimeout(() => this.#socket.destroy(), WORKER_DRAIN_TIMEOUT_MS);
    timer.unref();
    this.#socket.once('close', () => clearTimeout(timer));
  }

  /** Writes records, batching everything written in one tick into one writev. Returns false when the socket is saturated. */
  #write(parts: Buffer[]): boolean {
    const socket = this.#socket;
    if (socket.destroyed || socket.writableEnded) return true;
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        socket.uncork();
      });
    }
    let ok = true;
    for (const part of parts) ok = socket.write(part);
    return ok;
  }

  #onDrain(): void {
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const waiter of waiters) waiter();
  }
}

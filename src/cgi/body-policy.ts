/**
 * The one request-body policy of `cgi()`, `fastcgi()` and `gatehouse serve`:
 *
 * - no Content-Length (or 0) and not chunked: there is no body; nothing is
 *   read and no 100 Continue is sent;
 * - a Content-Length above the limit: 413 before a byte is read (the client
 *   waiting on Expect: 100-continue never sends it), the connection closed;
 * - a Content-Length within it: streamed to the script or application as it
 *   arrives, with backpressure; CONTENT_LENGTH is the header's;
 * - chunked: spooled (memory, then an unlinked temp file) so CONTENT_LENGTH
 *   is exact, as RFC 3875 and php-fpm want; 413 past the limit, also at once
 *   when a chunk is announced above it (the front's chunk-size guard calls
 *   refuseChunkedBody), 400 when the body stops short;
 * - Expect: 100-continue is answered only when the body will be read.
 *
 * Whatever happens, RequestBody.dispose() gives back what the body holds:
 * the temp file, a stream a reader stopped early, and the unread rest of a
 * streamed body is drained so a kept-alive connection can go on.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { GatehouseError } from '../errors.js';
import { tapBody } from './body-tap.js';
import { spoolBody } from './body-spool.js';

export interface BodyPolicy {
  /** Largest body (LimitRequestBody, max-body); 413 above. */
  maxBytes: number;
  /** A chunked body is kept in memory up to this size, then spooled to a temp file. */
  memorySpoolBytes: number;
  spoolDirectory?: string | undefined;
  /** Bytes of the start of the body kept for a script log entry (0: none). */
  keepHeadBytes: number;
}

export type BodyReading =
  | { kind: 'body'; body: RequestBody }
  /** Over the limit: `declared` when the Content-Length said so, else found while reading (or announced by a chunk: `detail`). */
  | { kind: 'too-large'; limit: number; declared?: number; detail?: string }
  /** The body stopped short: the client went away, or its chunked framing broke. */
  | { kind: 'unreadable'; error: Error };

/** A request body as a script's stdin or FastCGI STDIN will read it. */
export class RequestBody {
  /** No body: the script reads nothing (and gets /dev/null). */
  static readonly NONE = new RequestBody(
    null,
    undefined,
    () => EMPTY,
    async () => {},
  );

  /** What the script or application reads; null when there is no body. */
  readonly stream: Readable | null;
  /** CONTENT_LENGTH when it is not the header's (a spooled chunked body); undefined otherwise. */
  readonly contentLength: number | undefined;
  readonly #head: () => Buffer;
  readonly #release: () => Promise<void>;
  #disposed: Promise<void> | undefined;

  constructor(stream: Readable | null, contentLength: number | undefined, head: () => Buffer, release: () => Promise<void>) {
    this.stream = stream;
    this.contentLength = contentLength;
    this.#head = head;
    this.#release = release;
  }

  /** The start of the body, for the script log. */
  get head(): Buffer {
    return this.#head();
  }

  /** Gives back what the body holds (once; later calls return the same promise). */
  dispose(): Promise<void> {
    this.#disposed ??= this.#release();
    return this.#disposed;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Reads the request body as the policy says. The caller answers a refusal
 * through the outcome table (src/cgi/outcome.ts) and always disposes the
 * body it got, once nothing reads it any more.
 */
export async function readRequestBody(req: IncomingMessage, res: ServerResponse, policy: BodyPolicy): Promise<BodyReading> {
  const declared = req.headers['content-length'];
  const chunked = req.headers['transfer-encoding'] !== undefined;
  if (!chunked) {
    const length = declared === undefined ? 0 : Number(declared);
    if (length > policy.maxBytes) return { kind: 'too-large', limit: policy.maxBytes, declared: length };
    if (length === 0) return { kind: 'body', body: RequestBody.NONE };
    answerContinue(req, res);
    return { kind: 'body', body: streamedBody(req, policy) };
  }
  answerContinue(req, res);
  const spooled = await spoolBody(req, {
    memoryBytes: policy.memorySpoolBytes,
    maxBytes: policy.maxBytes,
    keepHeadBytes: policy.keepHeadBytes,
    signal: refusalSignal(req),
    ...(policy.spoolDirectory ? { directory: policy.spoolDirectory } : {}),
  });
  if (spooled.kind === 'too-large')
    return { kind: 'too-large', limit: spooled.limit, ...(spooled.detail ? { detail: spooled.detail } : {}) };
  if (spooled.kind === 'failed') return { kind: 'unreadable', error: spooled.error };
  const body = spooled.body;
  return {
    kind: 'body',
    body: new RequestBody(
      body.stream(),
      body.length,
      () => body.head,
      () => body.dispose(),
    ),
  };
}

/** A body of known length, read as it arrives (through a tap when the script log wants its start). */
function streamedBody(req: IncomingMessage, policy: BodyPolicy): RequestBody {
  // node:http leaves a request whose response already finished alone when the connection closes: its
  // body then never ends. Destroyed here, it tells its reader (a script's stdin) that no more is coming.
  const socket = req.socket;
  const onConnectionClose = () => {
    if (!req.complete) req.destroy();
  };
  socket.once('close', onConnectionClose);
  req.once('end', () => socket.off('close', onConnectionClose));
  const tap = policy.keepHeadBytes > 0 ? tapBody(req, policy.keepHeadBytes) : null;
  const stream: Readable = tap ?? req;
  return new RequestBody(
    stream,
    undefined,
    () => tap?.head ?? EMPTY,
    async () => {
      // Whatever the reader left is read and dropped, as node:http does for a body nobody read,
      // so the next request on a kept-alive connection can be parsed.
      if (!stream.destroyed && !stream.readableEnded) stream.resume();
    },
  );
}

/** Answers Expect: 100-continue before the body is read, unless node:http already did. */
function answerContinue(req: IncomingMessage, res: ServerResponse): void {
  const expect = req.headers.expect;
  if (typeof expect !== 'string' || !/100-continue/i.test(expect)) return;
  if ((res as unknown as { _sent100?: boolean })._sent100) return;
  res.writeContinue();
}

const refusals = new WeakMap<IncomingMessage, AbortController>();

function refusalSignal(req: IncomingMessage): AbortSignal {
  let controller = refusals.get(req);
  if (!controller) {
    controller = new AbortController();
    refusals.set(req, controller);
  }
  return controller.signal;
}

/**
 * The body of `req` is known to be over the limit before its bytes arrive (a
 * chunk announced above it): whoever reads it stops at once and answers 413.
 * `reason` names what was announced (CGI_BODY_TOO_LARGE).
 */
export function refuseChunkedBody(req: IncomingMessage, reason: GatehouseError): void {
  let controller = refusals.get(req);
  if (!controller) {
    controller = new AbortController();
    refusals.set(req, controller);
  }
  controller.abort(reason);
}

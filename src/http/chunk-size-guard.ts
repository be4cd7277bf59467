/**
 * Refusing a chunked request body at once when a chunk is announced above
 * max-body (`ffffffffffffffff` = 2^64-1 bytes), as Apache answers 413 at the
 * chunk-size line instead of waiting for the data.
 *
 * Why this reads the chunk-size lines itself: node:http hands the socket to
 * llhttp in C++ and shows JavaScript only the decoded body. llhttp accepts
 * any chunk size that fits in 64 bits (2^64-1 does) and then waits for the
 * data; nothing of the size reaches JavaScript (no event, no property; the
 * request handler runs before llhttp has even read the line). The only
 * public way to see it is the raw bytes: a 'data' listener on the socket
 * makes node:http stop consuming it in C++ and feed llhttp from JavaScript
 * instead, one call per read (measured on a trivial server: no difference
 * in requests per second, within the machine's noise), and the listener
 * then sees every byte after llhttp has parsed it.
 *
 * The follower below tracks the request framing of those bytes (heads,
 * Content-Length bodies, chunked bodies, trailers), only as far as it needs
 * to find chunk-size lines, and never judges a request: llhttp stays the one
 * parser that accepts or refuses bytes (insecureHTTPParser stays off). It
 * acts in one case only, a chunk-size line whose size takes the body past
 * the limit, which llhttp reads as the same hexadecimal number; the request
 * is then refused through the body policy (refuseChunkedBody: its reader
 * answers 413 and the connection closes). On anything it does not follow
 * (a head without CRLF endings, an upgrade, CONNECT, a framing llhttp would
 * refuse, a head or line over its bound) it stops following that connection
 * and leaves it to llhttp: the guard can miss a refusal, never invent one.
 * Its memory is bounded by the largest head.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { ErrorCode, GatehouseError } from '../errors.js';
import { refuseChunkedBody } from '../cgi/body-policy.js';
import { HTTP_CHUNK_LINE_MAX_BYTES } from '../limits.js';

export class ChunkSizeGuard {
  #maxBodyBytes: number;
  #maxHeadBytes: number;
  readonly #connections = new WeakMap<Socket, FramingFollower>();

  constructor(maxBodyBytes: number, maxHeadBytes: number) {
    this.#maxBodyBytes = maxBodyBytes;
    this.#maxHeadBytes = maxHeadBytes;
  }

  /** New limits (a configuration reload) for connections watched from now on; those already followed keep theirs. */
  setLimits(maxBodyBytes: number, maxHeadBytes: number): void {
    this.#maxBodyBytes = maxBodyBytes;
    this.#maxHeadBytes = maxHeadBytes;
  }

  /** Follows a connection from its first byte (call it from the server's 'connection' event). */
  watch(socket: Socket): void {
    const follower = new FramingFollower(this.#maxBodyBytes, this.#maxHeadBytes, (detail) => this.#refuse(socket, follower, detail));
    this.#connections.set(socket, follower);
    const onData = (chunk: Buffer) => {
      follower.push(chunk);
      if (follower.detached) socket.off('data', onData);
    };
    socket.on('data', onData);
  }

  /** node:http emitted a request on a watched connection (every request, in order: 'request' and 'checkContinue'). */
  noteRequest(req: IncomingMessage, res: ServerResponse): void {
    this.#connections.get(req.socket)?.noteRequest(req, res);
  }

  #refuse(socket: Socket, follower: FramingFollower, detail: string): void {
    const current = follower.current;
    // The request node:http emitted for the head the follower read; if they do not pair up, nothing is judged.
    if (!current) return;
    const { req, res } = current;
    refuseChunkedBody(req, new GatehouseError(ErrorCode.CGI_BODY_TOO_LARGE, detail));
    // The rest of the body is never read: this connection carries no other request.
    if (res.headersSent || res.writableEnded) socket.destroy();
    else res.shouldKeepAlive = false;
  }
}

type FramingState =
  /** Reading a request head up to its empty line. */
  | { kind: 'head' }
  /** Skipping a Content-Length body. */
  | { kind: 'fixed'; left: number }
  /** Reading a chunk-size line. */
  | { kind: 'chunk-size' }
  /** Skipping a chunk's data and the CRLF after it. */
  | { kind: 'chunk-data'; left: number }
  /** Reading trailer lines up to the empty line that ends the message. */
  | { kind: 'trailers' }
  /** Not following this connection any more. */
  | { kind: 'detached' };

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

/** One connection's request framing, as far as chunk-size lines go (see the module comment). */
class FramingFollower {
  readonly #maxBodyBytes: number;
  readonly #maxHeadBytes: number;
  readonly #onOversized: (detail: string) => void;
  #state: FramingState = { kind: 'head' };
  /** Bytes of a head or a line not complete yet. */
  #pending: Buffer = Buffer.alloc(0);
  /** Chunk bytes announced so far in the current body. */
  #announced = 0;
  /** Request heads read, and requests node:http emitted: equal when both read the same stream. */
  #heads = 0;
  #requests = 0;
  #current: { req: IncomingMessage; res: ServerResponse } | undefined;

  constructor(maxBodyBytes: number, maxHeadBytes: number, onOversized: (detail: string) => void) {
    this.#maxBodyBytes = maxBodyBytes;
    this.#maxHeadBytes = maxHeadBytes;
    this.#onOversized = onOversized;
  }

  get detached(): boolean {
    return this.#state.kind === 'detached';
  }

  /** The request whose body is being read now, when node:http and the follower agree on which it is. */
  get current(): { req: IncomingMessage; res: ServerResponse } | undefined {
    return this.#heads === this.#requests ? this.#current : undefined;
  }

  noteRequest(req: IncomingMessage, res: ServerResponse): void {
    this.#requests++;
    this.#current = { req, res };
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.#state.kind) {
        case 'head':
          offset = this.#readHead(chunk, offset);
          break;
        case 'fixed':
        case 'chunk-data': {
          const taken = Math.min(this.#state.left, chunk.length - offset);
          offset += taken;
          this.#state.left -= taken;
          if (this.#state.left === 0) this.#state = this.#state.kind === 'fixed' ? { kind: 'head' } : { kind: 'chunk-size' };
          break;
        }
        case 'chunk-size':
        case 'trailers': {
          const line = this.#readLine(chunk, offset);
          if (line === null) return;
          offset = line.next;
          if (this.#state.kind === 'chunk-size') this.#onChunkSize(line.text);
          else if (line.text === '') this.#state = { kind: 'head' };
          break;
        }
        case 'detached':
          return;
      }
    }
  }

  #detach(): void {
    this.#state = { kind: 'detached' };
    this.#pending = Buffer.alloc(0);
  }

  /** Collects a head; at its empty line decides how its body is framed. Returns where the head's bytes end in `chunk`. */
  #readHead(chunk: Buffer, offset: number): number {
    // llhttp skips empty lines before a request line (RFC 9112 2.2).
    if (this.#pending.length === 0) {
      while (offset < chunk.length && (chunk[offset] === 0x0d || chunk[offset] === 0x0a)) offset++;
      if (offset === chunk.length) return offset;
    }
    const before = this.#pending.length;
    const data = before === 0 ? chunk.subarray(offset) : Buffer.concat([this.#pending, chunk.subarray(offset)]);
    const end = data.indexOf(HEAD_END, Math.max(0, before - 3));
    if (end === -1) {
      if (data.length > this.#maxHeadBytes) this.#detach();
      else this.#pending = Buffer.from(data);
      return chunk.length;
    }
    this.#pending = Buffer.alloc(0);
    this.#onHead(data.subarray(0, end).toString('latin1'));
    return offset + (end + HEAD_END.length - before);
  }

  #onHead(head: string): void {
    this.#heads++;
    const [requestLine, ...lines] = head.split('\r\n');
    if (/^CONNECT /i.test(requestLine!)) return this.#detach();
    const lengths: string[] = [];
    const encodings: string[] = [];
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) return this.#detach();
      const name = line.slice(0, colon).toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') lengths.push(value);
      else if (name === 'transfer-encoding') encodings.push(value);
      // node:http hands an upgraded connection over, or treats it in ways not followed here.
      else if (name === 'upgrade') return this.#detach();
    }
    this.#announced = 0;
    if (encodings.length > 0) {
      const last = encodings.join(',').split(',').pop()!.trim().toLowerCase();
      if (last !== 'chunked' || lengths.length > 0) return this.#detach();
      this.#state = { kind: 'chunk-size' };
      return;
    }
    if (lengths.length > 1 || (lengths.length === 1 && !/^\d{1,15}$/.test(lengths[0]!))) return this.#detach();
    const length = lengths.length === 1 ? Number(lengths[0]) : 0;
    this.#state = length > 0 ? { kind: 'fixed', left: length } : { kind: 'head' };
  }

  /** One CRLF-terminated line (without its CRLF), or null when it is not complete yet. */
  #readLine(chunk: Buffer, offset: number): { text: string; next: number } | null {
    const before = this.#pending.length;
    const data = before === 0 ? chunk.subarray(offset) : Buffer.concat([this.#pending, chunk.subarray(offset)]);
    const end = data.indexOf(CRLF, Math.max(0, before - 1));
    if (end === -1) {
      if (data.length > HTTP_CHUNK_LINE_MAX_BYTES) this.#detach();
      else this.#pending = Buffer.from(data);
      return null;
    }
    this.#pending = Buffer.alloc(0);
    return { text: data.subarray(0, end).toString('latin1'), next: offset + (end + CRLF.length - before) };
  }

  #onChunkSize(line: string): void {
    const digits = /^[0-9A-Fa-f]+/.exec(line)?.[0];
    const rest = digits === undefined ? '' : line.slice(digits.length);
    if (digits === undefined || !(rest === '' || rest.startsWith(';'))) return this.#detach();
    // More than 13 hex digits is past 2^52, far past any limit: no need for the exact value.
    const size = digits.replace(/^0+/, '').length > 13 ? Number.POSITIVE_INFINITY : Number.parseInt(digits, 16);
    if (size === 0) {
      this.#state = { kind: 'trailers' };
      return;
    }
    this.#announced += size;
    if (this.#announced > this.#maxBodyBytes) {
      const shown = size === Number.POSITIVE_INFINITY ? `0x${digits}` : String(size);
      this.#onOversized(
        this.#announced === size ? `a chunk of ${shown} bytes was announced` : `chunks of ${this.#announced} bytes in all were announced`,
      );
      return this.#detach();
    }
    this.#state = { kind: 'chunk-data', left: size + CRLF.length };
  }
}

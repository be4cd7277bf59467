/**
 * The response side of the worker library: a Writable whose bytes go out as
 * FCGI_STDOUT records, with the head written CGI-style (`Status:` then the
 * headers) before the first body byte. Shaped like node:http's
 * ServerResponse. write() returns false once the connection's socket is
 * saturated, so a handler that honours it never buffers without bound.
 */
import { Writable } from 'node:stream';
import { STATUS_CODES } from 'node:http';
import { WORKER_RESPONSE_HIGH_WATER_MARK } from '../../limits.js';
import { ErrorCode, GatehouseError, InvalidArgumentError } from '../../errors.js';

/** What the response needs from its connection; the connection owns the socket and the framing. */
export interface ResponseSink {
  /** Writes body bytes (already encoded as the caller wants) as STDOUT records; `done` runs once the socket accepted them. */
  writeStdout(requestId: number, chunks: Buffer[], done: (error?: Error | null) => void): void;
  writeStderr(requestId: number, data: Buffer): void;
  /** Ends the request: empty STDOUT, END_REQUEST. */
  endRequest(requestId: number, appStatus: number, done: (error?: Error | null) => void): void;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const INVALID_VALUE = /[\r\n\0]/;

function validateHeader(name: string, value: unknown): void {
  if (!TOKEN.test(name)) throw new InvalidArgumentError(`invalid header name ${JSON.stringify(name)}: header names are HTTP tokens`);
  const values = Array.isArray(value) ? value : [value];
  for (const item of values) {
    if (item === undefined) throw new InvalidArgumentError(`header ${name} has no value`);
    if (INVALID_VALUE.test(String(item)))
      throw new InvalidArgumentError(`header ${name} contains CR, LF or NUL: refused (response splitting)`);
  }
}

export type HeaderValue = string | number | readonly string[];

export class FastCGIResponse extends Writable {
  statusCode = 200;
  statusMessage: string | undefined;
  headersSent = false;
  /** True for HEAD requests: the body is dropped, as node:http does. */
  readonly #omitBody: boolean;
  readonly #requestId: number;
  readonly #sink: ResponseSink;
  readonly #headers = new Map<string, [name: string, value: HeaderValue]>();
  #appStatus = 0;
  #ended = false;

  constructor(requestId: number, sink: ResponseSink, omitBody: boolean) {
    super({ highWaterMark: WORKER_RESPONSE_HIGH_WATER_MARK, decodeStrings: true });
    this.#requestId = requestId;
    this.#sink = sink;
    this.#omitBody = omitBody;
  }

  setHeader(name: string, value: HeaderValue): this {
    if (this.headersSent)
      throw new GatehouseError(ErrorCode.INVALID_STATE, `cannot set header ${name}: the response head was already sent`);
    validateHeader(name, value);
    this.#headers.set(name.toLowerCase(), [name, value]);
    return this;
  }

  getHeader(name: string): HeaderValue | undefined {
    return this.#headers.get(name.toLowerCase())?.[1];
  }

  hasHeader(name: string): boolean {
    return this.#headers.has(name.toLowerCase());
  }

  removeHeader(name: string): void {
    if (this.headersSent)
      throw new GatehouseError(ErrorCode.INVALID_STATE, `cannot remove header ${name}: the response head was already sent`);
    this.#headers.delete(name.toLowerCase());
  }

  getHeaders(): Record<string, HeaderValue> {
    const out: Record<string, HeaderValue> = Object.create(null);
    for (const [key, [, value]] of this.#headers) out[key] = value;
    return out;
  }

  getHeaderNames(): string[] {
    return [...this.#headers.keys()];
  }

  writeHead(
    statusCode: number,
    statusMessageOrHeaders?: string | Record<string, HeaderValue>,
    headers?: Record<string, HeaderValue>,
  ): this {
    if (this.headersSent) throw new GatehouseError(ErrorCode.INVALID_STATE, 'writeHead called after the response head was sent');
    if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999)
      throw new InvalidArgumentError(`invalid status code ${statusCode}`);
    this.statusCode = statusCode;
    if (typeof statusMessageOrHeaders === 'string') {
      if (INVALID_VALUE.test(statusMessageOrHeaders)) throw new InvalidArgumentError('status message contains CR, LF or NUL');
      this.statusMessage = statusMessageOrHeaders;
    } else headers = statusMessageOrHeaders;
    if (headers) for (const [name, value] of Object.entries(headers)) this.setHeader(name, value);
    return this;
  }

  /** Sends text to the web server's error log (FCGI_STDERR). */
  writeStderr(data: string | Buffer): void {
    if (this.#ended || this.destroyed) return;
    this.#sink.writeStderr(this.#requestId, typeof data === 'string' ? Buffer.from(data) : data);
  }

  /** The appStatus sent in END_REQUEST (like a CGI script's exit status). */
  set appStatus(status: number) {
    this.#appStatus = status | 0;
  }

  get appStatus(): number {
    return this.#appStatus;
  }

  /** Sends the head now, without body bytes. */
  flushHeaders(): void {
    if (this.headersSent) return;
    this.#sink.writeStdout(this.#requestId, [this.#takeHead()], () => {});
  }

  #takeHead(): Buffer {
    this.headersSent = true;
    const reason = this.statusMessage ?? STATUS_CODES[this.statusCode] ?? 'Unknown';
    let head = `Status: ${this.statusCode} ${reason}\r\n`;
    for (const [name, value] of this.#headers.values()) {
      if (Array.isArray(value)) for (const item of value) head += `${name}: ${item}\r\n`;
      else head += `${name}: ${value}\r\n`;
    }
    head += '\r\n';
    return Buffer.from(head, 'latin1');
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const parts: Buffer[] = [];
    if (!this.headersSent) parts.push(this.#takeHead());
    if (!this.#omitBody && chunk.length > 0) parts.push(chunk);
    if (parts.length === 0) return callback();
    this.#sink.writeStdout(this.#requestId, parts, callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    const parts: Buffer[] = [];
    if (!this.headersSent) parts.push(this.#takeHead());
    if (!this.#omitBody) for (const { chunk } of chunks) if (chunk.length > 0) parts.push(chunk);
    if (parts.length === 0) return callback();
    this.#sink.writeStdout(this.#requestId, parts, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (!this.headersSent) this.#sink.writeStdout(this.#requestId, [this.#takeHead()], () => {});
    this.#ended = true;
    this.#sink.endRequest(this.#requestId, this.#appStatus, callback);
  }

  /** Called by the connection when the request was aborted: further writes are dropped, not errors. */
  markAborted(): void {
    this.#ended = true;
    this.destroy();
  }
}

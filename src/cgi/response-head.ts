/**
 * The CGI response-head parser (RFC 3875 section 6): the header block a script
 * prints before its body. Incremental (push chunks as they come from the pipe),
 * bounded (bytes, line length and line count from limits.ts), strict (names are
 * tokens; CR, NUL and other control characters in values are refused so they
 * can never reach the client) and total: garbage produces a typed error naming
 * the bad line, never an exception. Pure: no streams, no timers.
 */
import { ErrorCode } from '../errors.js';
import { CGI_HEAD_MAX_BYTES, CGI_HEAD_MAX_LINE_BYTES, CGI_HEAD_MAX_LINES } from '../limits.js';

export type CgiResponseKind =
  /** A document: status (200 unless Status: says otherwise), headers, body. */
  | 'document'
  /** RFC 3875 6.2.2: `Location: /path` without Status: the server fetches /path itself; the script's body is discarded. */
  | 'local-redirect'
  /** RFC 3875 6.2.3: a Location that is not a local path, without Status (or with Status 200): 302 to the client. */
  | 'client-redirect';

export interface CgiResponseHead {
  kind: CgiResponseKind;
  status: number;
  /** The reason phrase from `Status: 404 Gone`, if the script gave one. */
  reason?: string;
  /** The Location value (also present in `headers` unless kind is local-redirect). */
  location?: string;
  /** Content-Length announced by the script, if any (also in `headers`). */
  contentLength?: number;
  /** Header fields in the script's order, names as printed, without Status (and without Location for a local redirect). */
  headers: Array<[name: string, value: string]>;
}

export interface CgiHeadError {
  code: ErrorCode;
  message: string;
  /** 1-based number of the offending line (0 when the error is not about one line). */
  lineNumber: number;
  /** The offending line, printable (control bytes escaped) and cut to 200 characters, for the error log. */
  line?: string;
}

export type HeadStep =
  | { state: 'incomplete' }
  | { state: 'complete'; head: CgiResponseHead /** Body bytes that came in the same chunk as the end of the head. */; rest: Buffer }
  | { state: 'error'; error: CgiHeadError };

export interface HeadLimits {
  maxBytes?: number;
  maxLineBytes?: number;
  maxLines?: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What node:http would refuse in a header value (and what could split a response). */
const BAD_VALUE_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
const STATUS = /^([1-5][0-9][0-9])(?:[ \t]+([\t\x20-\x7e\x80-\xff]*))?$/;
const LINE_FEED = 0x0a;
const CARRIAGE_RETURN = 0x0d;

export class ResponseHeadParser {
  readonly #maxBytes: number;
  readonly #maxLineBytes: number;
  readonly #maxLines: number;
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** Bytes of the head consumed by complete lines. */
  #consumed = 0;
  #lines: string[] = [];
  #result: HeadStep = { state: 'incomplete' };

  constructor(limits: HeadLimits = {}) {
    this.#maxBytes = limits.maxBytes ?? CGI_HEAD_MAX_BYTES;
    this.#maxLineBytes = limits.maxLineBytes ?? CGI_HEAD_MAX_LINE_BYTES;
    this.#maxLines = limits.maxLines ?? CGI_HEAD_MAX_LINES;
  }

  /** Bytes of script output the parser has taken in (for a script log's %stdout). */
  get bytesSeen(): number {
    return this.#consumed + this.#pendingBytes;
  }

  /** The raw lines read so far (without terminators). */
  get lines(): readonly string[] {
    return this.#lines;
  }

  /** Feeds output; once the result is complete or an error, later pushes return it unchanged. */
  push(chunk: Buffer): HeadStep {
    if (this.#result.state !== 'incomplete') return this.#result;
    let start = 0;
    while (start <= chunk.length) {
      const newline = chunk.indexOf(LINE_FEED, start);
      if (newline === -1) {
        const tail = chunk.subarray(start);
        if (tail.length > 0) {
          this.#pending.push(tail);
          this.#pendingBytes += tail.length;
        }
        const sizeError = this.#sizeError(this.#pendingBytes, () => Buffer.concat(this.#pending));
        if (sizeError) this.#result = { state: 'error', error: sizeError };
        return this.#result;
      }
      const piece = chunk.subarray(start, newline);
      const lineBytes = this.#pendingBytes + piece.length + 1;
      const sizeError = this.#sizeError(lineBytes, () => Buffer.concat([...this.#pending, piece]));
      if (sizeError) return (this.#result = { state: 'error', error: sizeError });
      const line = this.#pending.length === 0 ? piece : Buffer.concat([...this.#pending, piece]);
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#consumed += lineBytes;
      const outcome = this.#line(line);
      if (outcome !== 'more') {
        this.#result = outcome === 'end' ? this.#finish(chunk.subarray(newline + 1)) : { state: 'error', error: outcome };
        return this.#result;
      }
      start = newline + 1;
    }
    return this.#result;
  }

  /** The script's stdout ended: a head without its blank line is an error (Apache's "premature end of script headers"). */
  end(): HeadStep {
    if (this.#result.state !== 'incomplete') return this.#result;
    const error: CgiHeadError =
      this.#lines.length === 0 && this.#pendingBytes === 0
        ? { code: ErrorCode.CGI_HEAD_INCOMPLETE, message: 'end of script output before headers: the script printed nothing', lineNumber: 0 }
        : {
            code: ErrorCode.CGI_HEAD_INCOMPLETE,
            message: 'end of script output before the blank line that ends the headers',
            lineNumber: this.#lines.length + (this.#pendingBytes > 0 ? 1 : 0),
            ...(this.#pendingBytes > 0 ? { line: printable(Buffer.concat(this.#pending)) } : {}),
          };
    return (this.#result = { state: 'error', error });
  }

  /**
   * The size error, if any, at the earliest byte where a bound is crossed, so
   * that every chunking of the same output fails the same way: the line bound
   * is crossed at line start + max line, the head bound at max bytes.
   */
  #sizeError(lineBytesSoFar: number, lineSoFar: () => Buffer): CgiHeadError | null {
    const lineOver = lineBytesSoFar > this.#maxLineBytes;
    const headOver = this.#consumed + lineBytesSoFar > this.#maxBytes;
    if (!lineOver && !headOver) return null;
    const lineCrossing = this.#consumed + this.#maxLineBytes;
    const lineNumber = this.#lines.length + 1;
    if (lineOver && (!headOver || lineCrossing <= this.#maxBytes)) {
      // The first bytes of an over-long line are enough to find it in the script; which chunk they came in does not matter.
      const preview = printable(lineSoFar().subarray(0, Math.min(40, this.#maxLineBytes)));
      return {
        code: ErrorCode.CGI_HEAD_TOO_LARGE,
        message: `header line ${lineNumber} is longer than ${this.#maxLineBytes} bytes`,
        lineNumber,
        line: preview,
      };
    }
    return {
      code: ErrorCode.CGI_HEAD_TOO_LARGE,
      message: `the header block is larger than ${this.#maxBytes} bytes (at line ${lineNumber})`,
      lineNumber,
    };
  }

  /** One complete line (LF removed). */
  #line(raw: Buffer): 'more' | 'end' | CgiHeadError {
    const line = raw.length > 0 && raw[raw.length - 1] === CARRIAGE_RETURN ? raw.subarray(0, raw.length - 1) : raw;
    if (line.length === 0) return 'end';
    const text = line.toString('latin1');
    this.#lines.push(text);
    const lineNumber = this.#lines.length;
    if (lineNumber > this.#maxLines) {
      return { code: ErrorCode.CGI_HEAD_TOO_LARGE, message: `more than ${this.#maxLines} header lines`, lineNumber, line: printable(line) };
    }
    const colon = text.indexOf(':');
    const name = colon === -1 ? '' : text.slice(0, colon);
    if (!TOKEN.test(name)) {
      return {
        code: ErrorCode.CGI_HEAD_MALFORMED,
        message: `bad header line ${lineNumber}: expected "Name: value" with a token name`,
        lineNumber,
        line: printable(line),
      };
    }
    const value = text.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (BAD_VALUE_CHAR.test(value)) {
      return {
        code: ErrorCode.CGI_HEAD_BAD_VALUE,
        message: `header ${name} on line ${lineNumber} has a control character (CR, NUL, ...) in its value`,
        lineNumber,
        line: printable(line),
      };
    }
    return 'more';
  }

  /** All lines are in: interpret Status, Location, Content-Length, Transfer-Encoding. */
  #finish(rest: Buffer): HeadStep {
    let status: number | undefined;
    let reason: string | undefined;
    let location: string | undefined;
    let contentLength: number | undefined;
    const headers: Array<[string, string]> = [];
    for (let index = 0; index < this.#lines.length; index++) {
      const text = this.#lines[index]!;
      const lineNumber = index + 1;
      const colon = text.indexOf(':');
      const name = text.slice(0, colon);
      const value = text.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
      const lower = name.toLowerCase();
      const fail = (code: ErrorCode, message: string): HeadStep => ({
        state: 'error',
        error: { code, message, lineNumber, line: printable(Buffer.from(text, 'latin1')) },
      });
      if (lower === 'status') {
        const match = STATUS.exec(value);
        if (!match || status !== undefined)
          return fail(
            ErrorCode.CGI_HEAD_BAD_STATUS,
            `invalid Status on line ${lineNumber}: expected "Status: NNN [reason]" once, with NNN from 100 to 599`,
          );
        status = Number(match[1]);
        if (match[2]) reason = match[2];
        continue;
      }
      if (lower === 'transfer-encoding') {
        return fail(
          ErrorCode.CGI_HEAD_TRANSFER_ENCODING,
          `the script sent Transfer-Encoding on line ${lineNumber}: the server frames the response itself, a script must not`,
        );
      }
      if (lower === 'content-length') {
        if (!/^[0-9]{1,15}$/.test(value) || (contentLength !== undefined && contentLength !== Number(value))) {
          return fail(ErrorCode.CGI_HEAD_BAD_CONTENT_LENGTH, `invalid or conflicting Content-Length on line ${lineNumber}`);
        }
        if (contentLength !== undefined) continue;
        contentLength = Number(value);
      }
      if (lower === 'location') {
        if (location !== undefined) return fail(ErrorCode.CGI_HEAD_MALFORMED, `a second Location on line ${lineNumber}`);
        if (value === '') return fail(ErrorCode.CGI_HEAD_MALFORMED, `an empty Location on line ${lineNumber}`);
        location = value;
      }
      headers.push([name, value]);
    }
    let kind: CgiResponseKind = 'document';
    if (location !== undefined) {
      if (status === undefined && location.startsWith('/') && !location.startsWith('//')) kind = 'local-redirect';
      else if (status === undefined || status === 200) kind = 'client-redirect';
    }
    const head: CgiResponseHead = {
      kind,
      status: kind === 'client-redirect' ? 302 : (status ?? 200),
      headers: kind === 'local-redirect' ? headers.filter(([name]) => name.toLowerCase() !== 'location') : headers,
    };
    if (reason !== undefined && kind === 'document') head.reason = reason;
    if (location !== undefined) head.location = location;
    if (contentLength !== undefined) head.contentLength = contentLength;
    return { state: 'complete', head, rest };
  }
}

/** Parses a whole output at once (tests, and scripts whose output is already buffered). */
export function parseResponseHead(output: Buffer, limits?: HeadLimits): HeadStep {
  const parser = new ResponseHeadParser(limits);
  const step = parser.push(output);
  return step.state === 'incomplete' ? parser.end() : step;
}

/** A line as it may appear in a log: control bytes escaped, at most 200 characters. */
function printable(bytes: Buffer): string {
  const text = bytes.subarray(0, 200).toString('latin1');
  return (
    text.replace(/[\x00-\x1f\x7f]/g, (char) => `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`) + (bytes.length > 200 ? '...' : '')
  );
}

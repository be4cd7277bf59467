/**
 * The incremental FastCGI record decoder. Feed it bytes as they arrive, in any
 * split; it calls back with each record. A record that lies wholly in one
 * chunk is handed on as a slice of that chunk (no copy). A stream record
 * (PARAMS, STDIN, STDOUT, STDERR, DATA) cut across chunks is handed on in
 * pieces as they arrive, each a slice of its chunk with `partial` set on all
 * but the last: stream content is only ever appended, so nothing is gained by
 * assembling it, and a 64 KiB STDOUT record then costs no copy at all. Other
 * records (BEGIN_REQUEST, END_REQUEST, GET_VALUES, ...) are assembled whole.
 * An empty content is never a piece: it always means a stream's end.
 * Padding of any length is accepted and skipped.
 *
 * It never throws on bad input: push() returns a FastCGIProtocolError and the
 * decoder stays failed, so the caller closes the connection with a log line.
 */
import { ErrorCode, FastCGIProtocolError } from '../errors.js';
import { FCGI_HEADER_LEN, FCGI_VERSION_1, RecordType } from './protocol.js';

export interface FastCGIRecord {
  type: number;
  requestId: number;
  /** A slice of the chunk pushed (or an assembled copy): keep it only as long as that chunk is yours to keep. */
  content: Buffer;
  /** True when more content of this same record follows in a later callback (stream records only). */
  partial: boolean;
}

/** Stream records, whose content is delivered in pieces when cut across chunks. */
function isStreamType(type: number): boolean {
  return (
    type === RecordType.PARAMS ||
    type === RecordType.STDIN ||
    type === RecordType.STDOUT ||
    type === RecordType.STDERR ||
    type === RecordType.DATA
  );
}

export type RecordHandler = (record: FastCGIRecord) => void;

enum State {
  Header,
  Content,
  Padding,
}

const EMPTY = Buffer.alloc(0);

export class RecordDecoder {
  #state = State.Header;
  readonly #header = Buffer.alloc(FCGI_HEADER_LEN);
  #headerFilled = 0;
  #type = 0;
  #requestId = 0;
  #contentLength = 0;
  #paddingLength = 0;
  #content: Buffer = EMPTY;
  #contentFilled = 0;
  /** The record in progress is a stream record delivered in pieces. */
  #streaming = false;
  #paddingLeft = 0;
  #error: FastCGIProtocolError | null = null;

  /** Bytes held for a record not yet complete (what end() would report as truncated). */
  get pendingBytes(): number {
    if (this.#state === State.Header) return this.#headerFilled;
    return FCGI_HEADER_LEN + this.#contentFilled;
  }

  get failed(): FastCGIProtocolError | null {
    return this.#error;
  }

  push(chunk: Buffer, onRecord: RecordHandler): FastCGIProtocolError | null {
    if (this.#error) return this.#error;
    let offset = 0;
    const length = chunk.length;
    while (offset < length) {
      if (this.#state === State.Header) {
        // Fast path: a whole record inside this chunk is handed on as a slice.
        if (this.#headerFilled === 0 && length - offset >= FCGI_HEADER_LEN) {
          if (chunk[offset] !== FCGI_VERSION_1) return this.#fail(chunk[offset]!);
          const contentLength = (chunk[offset + 4]! << 8) | chunk[offset + 5]!;
          const paddingLength = chunk[offset + 6]!;
          const contentStart = offset + FCGI_HEADER_LEN;
          if (length - contentStart >= contentLength + paddingLength) {
            const type = chunk[offset + 1]!;
            const requestId = (chunk[offset + 2]! << 8) | chunk[offset + 3]!;
            offset = contentStart + contentLength + paddingLength;
            onRecord({ type, requestId, content: chunk.subarray(contentStart, contentStart + contentLength), partial: false });
            if (this.#error) return this.#error;
            continue;
          }
        }
        const take = Math.min(FCGI_HEADER_LEN - this.#headerFilled, length - offset);
        chunk.copy(this.#header, this.#headerFilled, offset, offset + take);
        this.#headerFilled += take;
        offset += take;
        if (this.#headerFilled < FCGI_HEADER_LEN) break;
        this.#headerFilled = 0;
        const header = this.#header;
        if (header[0] !== FCGI_VERSION_1) return this.#fail(header[0]!);
        this.#type = header[1]!;
        this.#requestId = (header[2]! << 8) | header[3]!;
        this.#contentLength = (header[4]! << 8) | header[5]!;
        this.#paddingLength = header[6]!;
        this.#contentFilled = 0;
        if (this.#contentLength === 0) {
          this.#content = EMPTY;
          this.#afterContent(onRecord);
        } else if (length - offset >= this.#contentLength) {
          // The content is whole in this chunk even though the header was not.
          this.#content = chunk.subarray(offset, offset + this.#contentLength);
          offset += this.#contentLength;
          this.#afterContent(onRecord);
        } else {
          this.#streaming = isStreamType(this.#type);
          this.#content = this.#streaming ? EMPTY : Buffer.allocUnsafe(this.#contentLength);
          this.#state = State.Content;
        }
      } else if (this.#state === State.Content) {
        const take = Math.min(this.#contentLength - this.#contentFilled, length - offset);
        this.#contentFilled += take;
        if (this.#streaming) {
          const piece = chunk.subarray(offset, offset + take);
          offset += take;
          if (this.#contentFilled === this.#contentLength) {
            this.#content = piece;
            this.#afterContent(onRecord);
          } else onRecord({ type: this.#type, requestId: this.#requestId, content: piece, partial: true });
        } else {
          chunk.copy(this.#content, this.#contentFilled - take, offset, offset + take);
          offset += take;
          if (this.#contentFilled === this.#contentLength) this.#afterContent(onRecord);
        }
      } else {
        const take = Math.min(this.#paddingLeft, length - offset);
        this.#paddingLeft -= take;
        offset += take;
        if (this.#paddingLeft === 0) this.#state = State.Header;
      }
      if (this.#error) return this.#error;
    }
    return this.#error;
  }

  /** Call at end of stream: a record cut short is an error worth a log line. */
  end(): FastCGIProtocolError | null {
    if (this.#error) return this.#error;
    if (this.#state !== State.Header || this.#headerFilled !== 0) {
      return new FastCGIProtocolError(ErrorCode.FCGI_TRUNCATED, `stream ended inside a record (${this.pendingBytes} bytes of it received)`);
    }
    return null;
  }

  #afterContent(onRecord: RecordHandler): void {
    const content = this.#content;
    this.#content = EMPTY;
    this.#paddingLeft = this.#paddingLength;
    this.#state = this.#paddingLeft > 0 ? State.Padding : State.Header;
    onRecord({ type: this.#type, requestId: this.#requestId, content, partial: false });
  }

  #fail(version: number): FastCGIProtocolError {
    this.#error = new FastCGIProtocolError(
      ErrorCode.FCGI_BAD_VERSION,
      `record with version ${version}, expected ${FCGI_VERSION_1}: the peer does not speak FastCGI 1.0 (is it an HTTP client on the FastCGI port?)`,
    );
    return this.#error;
  }

  /** Lets a caller (a state machine) mark the stream failed from inside a callback. */
  fail(error: FastCGIProtocolError): void {
    this.#error ??= error;
  }
}

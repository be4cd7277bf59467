/**
 * Encoding FastCGI 1.0 records. Pure: turns values into bytes, nothing else.
 *
 * Output records are padded to a multiple of 8 bytes (the spec recommends it
 * and nginx does it); content above 65535 bytes is cut into several records.
 */
import { FCGI_MAX_CONTENT_LENGTH } from '../limits.js';
import { ErrorCode, FastCGIProtocolError, InvalidArgumentError } from '../errors.js';
import { FCGI_HEADER_LEN, FCGI_KEEP_CONN, FCGI_VERSION_1, RecordType, type ProtocolStatus, type Role } from './protocol.js';
import { writeNameValueLength, type NameValueInput } from './name-value.js';

/** Shared zero bytes for padding: never written to, so one buffer serves every record. */
const ZERO_PADDING = Buffer.alloc(8);

/** Padding that brings `contentLength` to a multiple of 8. */
export function paddingFor(contentLength: number): number {
  return -contentLength & 7;
}

export function encodeHeader(type: number, requestId: number, contentLength: number, paddingLength: number): Buffer {
  const header = Buffer.allocUnsafe(FCGI_HEADER_LEN);
  writeHeader(header, 0, type, requestId, contentLength, paddingLength);
  return header;
}

function writeHeader(target: Buffer, offset: number, type: number, requestId: number, contentLength: number, paddingLength: number): void {
  target[offset] = FCGI_VERSION_1;
  target[offset + 1] = type;
  target[offset + 2] = (requestId >> 8) & 0xff;
  target[offset + 3] = requestId & 0xff;
  target[offset + 4] = (contentLength >> 8) & 0xff;
  target[offset + 5] = contentLength & 0xff;
  target[offset + 6] = paddingLength;
  target[offset + 7] = 0;
}

/** One record in one buffer. `content` must fit in a record (at most 65535 bytes). */
export function encodeRecord(type: number, requestId: number, content: Uint8Array = ZERO_PADDING.subarray(0, 0)): Buffer {
  if (content.length > FCGI_MAX_CONTENT_LENGTH) {
    throw new InvalidArgumentError(
      `record content of ${content.length} bytes exceeds ${FCGI_MAX_CONTENT_LENGTH}; use frameStream() to split it`,
    );
  }
  const padding = paddingFor(content.length);
  const out = Buffer.allocUnsafe(FCGI_HEADER_LEN + content.length + padding);
  writeHeader(out, 0, type, requestId, content.length, padding);
  out.set(content, FCGI_HEADER_LEN);
  out.fill(0, FCGI_HEADER_LEN + content.length);
  return out;
}

/**
 * Frames a chunk of a stream (STDIN, STDOUT, STDERR, DATA, PARAMS) as one or
 * more records without copying the data: the result is a list of buffers
 * (header, slice of data, padding, ...) meant for a corked socket or writev.
 * An empty `data` is NOT encoded here: the empty record ends a stream and is
 * written with encodeRecord(type, id) on purpose.
 */
export function frameStream(type: number, requestId: number, data: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  for (let offset = 0; offset < data.length; offset += FCGI_MAX_CONTENT_LENGTH) {
    const slice = data.subarray(offset, Math.min(offset + FCGI_MAX_CONTENT_LENGTH, data.length));
    const padding = paddingFor(slice.length);
    parts.push(encodeHeader(type, requestId, slice.length, padding), slice);
    if (padding > 0) parts.push(ZERO_PADDING.subarray(0, padding));
  }
  return parts;
}

/** Same as frameStream, copied into one buffer (for small chunks, where one write beats three). */
export function encodeStream(type: number, requestId: number, data: Buffer): Buffer {
  if (data.length <= FCGI_MAX_CONTENT_LENGTH) return encodeRecord(type, requestId, data);
  return Buffer.concat(frameStream(type, requestId, data));
}

export function encodeBeginRequest(requestId: number, role: Role, keepConn: boolean): Buffer {
  const body = Buffer.alloc(8);
  body.writeUInt16BE(role, 0);
  body[2] = keepConn ? FCGI_KEEP_CONN : 0;
  return encodeRecord(RecordType.BEGIN_REQUEST, requestId, body);
}

export function encodeEndRequest(requestId: number, appStatus: number, protocolStatus: ProtocolStatus): Buffer {
  const body = Buffer.alloc(8);
  // appStatus is a 32-bit quantity; a negative exit code is sent as its two's complement.
  body.writeUInt32BE(appStatus >>> 0, 0);
  body[4] = protocolStatus;
  return encodeRecord(RecordType.END_REQUEST, requestId, body);
}

export function encodeAbortRequest(requestId: number): Buffer {
  return encodeRecord(RecordType.ABORT_REQUEST, requestId);
}

export function encodeUnknownType(unknownType: number): Buffer {
  const body = Buffer.alloc(8);
  body[0] = unknownType;
  return encodeRecord(RecordType.UNKNOWN_TYPE, 0, body);
}

/**
 * Frames name-value pairs as PARAMS (or GET_VALUES / GET_VALUES_RESULT)
 * records, packing pairs into records of at most 65535 bytes but never
 * splitting one pair across two records: php-fpm closes the connection when a
 * pair straddles a record boundary. A pair that cannot fit in one record is an
 * error that names it. The terminating empty record is not included.
 *
 * This runs once per proxied request, so it measures first and then writes
 * every record into one buffer, with no buffer per pair.
 */
export function encodeParamsRecords(type: number, requestId: number, pairs: Iterable<readonly [NameValueInput, NameValueInput]>): Buffer {
  const fields: NameValueInput[] = [];
  const sizes: number[] = [];
  // Every name and value a string of ASCII (the usual case): then each record's content is written as
  // one latin1 string, one native call per record instead of one per name and per value.
  let allAscii = true;
  for (const [name, value] of pairs) {
    const nameLength = byteLengthOf(name);
    const valueLength = byteLengthOf(value);
    if (allAscii && (typeof name !== 'string' || typeof value !== 'string' || nameLength !== name.length || valueLength !== value.length))
      allAscii = false;
    const size = (nameLength < 128 ? 1 : 4) + (valueLength < 128 ? 1 : 4) + nameLength + valueLength;
    if (size > FCGI_MAX_CONTENT_LENGTH) {
      const shownName = (typeof name === 'string' ? name : Buffer.from(name).toString('latin1')).slice(0, 64);
      throw new FastCGIProtocolError(
        ErrorCode.FCGI_PAIR_TOO_LARGE,
        `FastCGI parameter ${shownName} is ${size} bytes encoded, more than one record holds (${FCGI_MAX_CONTENT_LENGTH}); shorten the value (a long cookie or header?)`,
      );
    }
    fields.push(name, value);
    sizes.push(size, nameLength, valueLength);
  }
  // Lay the pairs out into records: a new record whenever the next pair would not fit.
  const recordContent: number[] = [];
  let current = 0;
  for (let index = 0; index < sizes.length; index += 3) {
    const size = sizes[index]!;
    if (current + size > FCGI_MAX_CONTENT_LENGTH) {
      recordContent.push(current);
      current = 0;
    }
    current += size;
  }
  if (current > 0) recordContent.push(current);
  let total = 0;
  for (const length of recordContent) total += FCGI_HEADER_LEN + length + paddingFor(length);
  const out = Buffer.allocUnsafe(total);
  let offset = 0;
  let pair = 0;
  for (const contentLength of recordContent) {
    const padding = paddingFor(contentLength);
    writeHeader(out, offset, type, requestId, contentLength, padding);
    offset += FCGI_HEADER_LEN;
    const end = offset + contentLength;
    if (allAscii) {
      let text = '';
      while (pair * 3 < sizes.length && text.length < contentLength) {
        const nameLength = sizes[pair * 3 + 1]!;
        const valueLength = sizes[pair * 3 + 2]!;
        text += lengthChars(nameLength) + lengthChars(valueLength) + (fields[pair * 2] as string) + (fields[pair * 2 + 1] as string);
        pair++;
      }
      offset += out.write(text, offset, contentLength, 'latin1');
    }
    while (offset < end) {
      const nameLength = sizes[pair * 3 + 1]!;
      const valueLength = sizes[pair * 3 + 2]!;
      offset = writeNameValueLength(out, offset, nameLength);
      offset = writeNameValueLength(out, offset, valueLength);
      offset = writeBytes(out, offset, fields[pair * 2]!, nameLength);
      offset = writeBytes(out, offset, fields[pair * 2 + 1]!, valueLength);
      pair++;
    }
    out.fill(0, offset, offset + padding);
    offset += padding;
  }
  return out;
}

/** A name-value length (FastCGI 1.0 section 3.4) as latin1 characters, one per byte. */
function lengthChars(length: number): string {
  if (length < 128) return String.fromCharCode(length);
  return String.fromCharCode(((length >>> 24) & 0x7f) | 0x80, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
}

function byteLengthOf(input: NameValueInput): number {
  return typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.byteLength;
}

function writeBytes(target: Buffer, offset: number, input: NameValueInput, length: number): number {
  if (typeof input === 'string') target.write(input, offset, length, 'utf8');
  else target.set(input, offset);
  return offset + length;
}

export interface BeginRequestBody {
  role: number;
  keepConn: boolean;
}

export function decodeBeginRequestBody(content: Buffer): BeginRequestBody | FastCGIProtocolError {
  if (content.length < 8) {
    return new FastCGIProtocolError(ErrorCode.FCGI_BAD_RECORD, `BEGIN_REQUEST body is ${content.length} bytes, the spec requires 8`);
  }
  return { role: content.readUInt16BE(0), keepConn: (content[2]! & FCGI_KEEP_CONN) !== 0 };
}

export interface EndRequestBody {
  appStatus: number;
  protocolStatus: number;
}

/** Reserved bytes are ignored: php-fpm fills them with garbage. */
export function decodeEndRequestBody(content: Buffer): EndRequestBody | FastCGIProtocolError {
  if (content.length < 5) {
    return new FastCGIProtocolError(ErrorCode.FCGI_BAD_RECORD, `END_REQUEST body is ${content.length} bytes, the spec requires 8`);
  }
  return { appStatus: content.readInt32BE(0), protocolStatus: content[4]! };
}

/**
 * Rewrites the request id of every record in `records` (consecutive, whole
 * records as encodeParamsRecords makes them), in place. Lets a caller encode
 * a request's PARAMS once, before it knows which id the connection gives it.
 */
export function setRecordsRequestId(records: Buffer, requestId: number): Buffer {
  let offset = 0;
  while (offset + FCGI_HEADER_LEN <= records.length) {
    records[offset + 2] = (requestId >> 8) & 0xff;
    records[offset + 3] = requestId & 0xff;
    const contentLength = (records[offset + 4]! << 8) | records[offset + 5]!;
    offset += FCGI_HEADER_LEN + contentLength + records[offset + 6]!;
  }
  return records;
}

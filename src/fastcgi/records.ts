/**
 * Encoding FastCGI 1.0 records. Pure: turns values into bytes, nothing else.
 *
 * Output records are padded to a multiple of 8 bytes (the spec recommends it
 * and nginx does it); content above 65535 bytes is cut into several records.
 */
import { FCGI_MAX_CONTENT_LENGTH } from '../limits.js';
import { ErrorCode, FastCGIProtocolError } from '../errors.js';
import { FCGI_HEADER_LEN, FCGI_KEEP_CONN, FCGI_VERSION_1, RecordType, type ProtocolStatus, type Role } from './protocol.js';
import { encodeNameValuePair, type NameValueInput } from './name-value.js';

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
    throw new RangeError(`record content of ${content.length} bytes exceeds ${FCGI_MAX_CONTENT_LENGTH}; use frameStream() to split it`);
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
 */
export function encodeParamsRecords(type: number, requestId: number, pairs: Iterable<readonly [NameValueInput, NameValueInput]>): Buffer {
  const encoded: Buffer[] = [];
  let total = 0;
  for (const [name, value] of pairs) {
    const pair = encodeNameValuePair(name, value);
    if (pair.length > FCGI_MAX_CONTENT_LENGTH) {
      const shownName = Buffer.from(typeof name === 'string' ? name : Buffer.from(name)).toString('latin1').slice(0, 64);
      throw new FastCGIProtocolError(
        ErrorCode.FCGI_PAIR_TOO_LARGE,
        `FastCGI parameter ${shownName} is ${pair.length} bytes encoded, more than one record holds (${FCGI_MAX_CONTENT_LENGTH}); shorten the value (a long cookie or header?)`,
      );
    }
    encoded.push(pair);
    total += pair.length;
  }
  const records: Buffer[] = [];
  let batch: Buffer[] = [];
  let batchLength = 0;
  const flush = () => {
    if (batchLength === 0) return;
    records.push(encodeRecord(type, requestId, batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchLength)));
    batch = [];
    batchLength = 0;
  };
  if (total <= FCGI_MAX_CONTENT_LENGTH) {
    batch = encoded;
    batchLength = total;
  } else {
    for (const pair of encoded) {
      if (batchLength + pair.length > FCGI_MAX_CONTENT_LENGTH) flush();
      batch.push(pair);
      batchLength += pair.length;
    }
  }
  flush();
  return records.length === 1 ? records[0]! : Buffer.concat(records);
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

/**
 * FastCGI name-value pairs (spec section 3.4): each length is one byte when
 * below 128, otherwise four bytes with the top bit set (31-bit length).
 * Names and values are bytes, not text: decoding keeps them as Buffers so no
 * byte is lost; callers choose how to show them.
 */
import { ErrorCode, FastCGIProtocolError, InvalidArgumentError } from '../errors.js';

export type NameValueInput = string | Uint8Array;
export type NameValuePair = [name: Buffer, value: Buffer];

const MAX_LENGTH = 0x7fffffff;

function toBytes(input: NameValueInput): Buffer {
  return typeof input === 'string'
    ? Buffer.from(input, 'utf8')
    : Buffer.isBuffer(input)
      ? input
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

function lengthSize(length: number): number {
  return length < 128 ? 1 : 4;
}

/** Writes one name or value length (1 byte below 128, else 4 with the top bit set); returns the next offset. */
export function writeNameValueLength(target: Buffer, offset: number, length: number): number {
  if (length < 128) {
    target[offset] = length;
    return offset + 1;
  }
  target.writeUInt32BE((length | 0x80000000) >>> 0, offset);
  return offset + 4;
}

export function encodeNameValuePair(name: NameValueInput, value: NameValueInput): Buffer {
  const nameBytes = toBytes(name);
  const valueBytes = toBytes(value);
  if (nameBytes.length > MAX_LENGTH || valueBytes.length > MAX_LENGTH)
    throw new InvalidArgumentError('name or value longer than 2^31-1 bytes');
  const out = Buffer.allocUnsafe(lengthSize(nameBytes.length) + lengthSize(valueBytes.length) + nameBytes.length + valueBytes.length);
  let offset = writeNameValueLength(out, 0, nameBytes.length);
  offset = writeNameValueLength(out, offset, valueBytes.length);
  offset += nameBytes.copy(out, offset);
  valueBytes.copy(out, offset);
  return out;
}

export function encodeNameValuePairs(pairs: Iterable<readonly [NameValueInput, NameValueInput]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of pairs) parts.push(encodeNameValuePair(name, value));
  return Buffer.concat(parts);
}

function readLength(data: Buffer, offset: number): [length: number, next: number] | null {
  if (offset >= data.length) return null;
  const first = data[offset]!;
  if ((first & 0x80) === 0) return [first, offset + 1];
  if (offset + 4 > data.length) return null;
  return [data.readUInt32BE(offset) & 0x7fffffff, offset + 4];
}

/**
 * Decodes a complete PARAMS (or GET_VALUES) stream. The result's buffers are
 * slices of `data` (no copy). A length that runs past the end is an error, not
 * an exception: a 2^31-byte length claim never allocates anything.
 */
export function decodeNameValuePairs(data: Buffer): NameValuePair[] | FastCGIProtocolError {
  const pairs: NameValuePair[] = [];
  let offset = 0;
  while (offset < data.length) {
    const nameLength = readLength(data, offset);
    const valueLength = nameLength && readLength(data, nameLength[1]);
    if (!nameLength || !valueLength) {
      return new FastCGIProtocolError(ErrorCode.FCGI_BAD_NAME_VALUE, `name-value pair at byte ${offset} has a truncated length field`);
    }
    const nameStart = valueLength[1];
    const valueStart = nameStart + nameLength[0];
    const end = valueStart + valueLength[0];
    if (end > data.length) {
      return new FastCGIProtocolError(
        ErrorCode.FCGI_BAD_NAME_VALUE,
        `name-value pair at byte ${offset} claims ${nameLength[0]}+${valueLength[0]} bytes but only ${data.length - nameStart} remain`,
      );
    }
    pairs.push([data.subarray(nameStart, valueStart), data.subarray(valueStart, end)]);
    offset = end;
  }
  return pairs;
}

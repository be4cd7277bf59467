/**
 * FastCGI record encoding: exact wire bytes for every record kind the codec
 * writes (in the manner of Go's fcgi_test.go), and round trips through the
 * decoder for records and PARAMS streams.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors.js';
import fc from 'fast-check';
import {
  decodeBeginRequestBody,
  decodeEndRequestBody,
  decodeNameValuePairs,
  encodeAbortRequest,
  encodeBeginRequest,
  encodeEndRequest,
  encodeHeader,
  encodeParamsRecords,
  encodeRecord,
  encodeStream,
  encodeUnknownType,
  frameStream,
  paddingFor,
  ProtocolStatus,
  RecordDecoder,
  RecordType,
  Role,
  RECORD_TYPE_NAMES,
} from '../../src/fastcgi/codec.js';
import { ErrorCode, FastCGIProtocolError } from '../../src/errors.js';
import { FCGI_MAX_CONTENT_LENGTH } from '../../src/limits.js';

/**
 * Property runs are bounded; a failure prints fast-check's seed and path.
 * Re-run one with GATEHOUSE_FC_SEED=<seed> to reproduce it.
 */
const fcRuns = (numRuns: number): fc.Parameters<unknown> => {
  const seed = process.env.GATEHOUSE_FC_SEED;
  return seed === undefined ? { numRuns } : { numRuns, seed: Number(seed) };
};

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

interface DecodedRecord {
  type: number;
  requestId: number;
  content: Buffer;
}

/** Decodes a whole stream in one push, copying each record's content (it may be a slice). */
function decodeAll(stream: Buffer): DecodedRecord[] {
  const decoder = new RecordDecoder();
  const records: DecodedRecord[] = [];
  const error = decoder.push(stream, (record) =>
    records.push({ type: record.type, requestId: record.requestId, content: Buffer.from(record.content) }),
  );
  assert.equal(error, null, `decoder error: ${error?.message}`);
  assert.equal(decoder.end(), null);
  return records;
}

function header(type: number, requestId: number, contentLength: number, paddingLength: number): Buffer {
  return Buffer.from([1, type, requestId >> 8, requestId & 0xff, contentLength >> 8, contentLength & 0xff, paddingLength, 0]);
}

test('record type and role numbers are those of the spec (section 8)', () => {
  assert.deepEqual(RecordType, {
    BEGIN_REQUEST: 1,
    ABORT_REQUEST: 2,
    END_REQUEST: 3,
    PARAMS: 4,
    STDIN: 5,
    STDOUT: 6,
    STDERR: 7,
    DATA: 8,
    GET_VALUES: 9,
    GET_VALUES_RESULT: 10,
    UNKNOWN_TYPE: 11,
  });
  assert.deepEqual(Role, { RESPONDER: 1, AUTHORIZER: 2, FILTER: 3 });
  assert.deepEqual(ProtocolStatus, { REQUEST_COMPLETE: 0, CANT_MPX_CONN: 1, OVERLOADED: 2, UNKNOWN_ROLE: 3 });
  assert.equal(RECORD_TYPE_NAMES[6], 'STDOUT');
});

test('padding brings content to a multiple of 8', () => {
  const table: Array<[number, number]> = [
    [0, 0],
    [1, 7],
    [5, 3],
    [7, 1],
    [8, 0],
    [9, 7],
    [465, 7],
    [65535, 1],
  ];
  for (const [length, padding] of table) assert.equal(paddingFor(length), padding, `padding for ${length}`);
});

const exactRecords: Array<[what: string, encoded: Buffer, expected: Buffer]> = [
  ['an empty STDOUT record (end of stream)', encodeRecord(RecordType.STDOUT, 1), hex('01 06 0001 0000 00 00')],
  [
    'STDOUT "hello", padded with 3 zero bytes',
    encodeRecord(RecordType.STDOUT, 1, Buffer.from('hello')),
    Buffer.concat([hex('01 06 0001 0005 03 00'), Buffer.from('hello'), hex('000000')]),
  ],
  [
    'an 8-byte STDERR record, no padding',
    encodeRecord(RecordType.STDERR, 2, Buffer.from('12345678')),
    Buffer.concat([hex('01 07 0002 0008 00 00'), Buffer.from('12345678')]),
  ],
  ['a request id above 255 in big-endian order', encodeRecord(RecordType.STDIN, 0x1234), hex('01 05 1234 0000 00 00')],
  ['the highest request id', encodeRecord(RecordType.DATA, 0xffff), hex('01 08 ffff 0000 00 00')],
  ['a header alone', encodeHeader(RecordType.PARAMS, 300, 1000, 0), hex('01 04 012c 03e8 00 00')],
  [
    'BEGIN_REQUEST, responder, keep the connection',
    encodeBeginRequest(1, Role.RESPONDER, true),
    hex('01 01 0001 0008 00 00' + '0001 01 0000000000'),
  ],
  [
    'BEGIN_REQUEST, filter, close the connection',
    encodeBeginRequest(7, Role.FILTER, false),
    hex('01 01 0007 0008 00 00' + '0003 00 0000000000'),
  ],
  ['BEGIN_REQUEST, authorizer', encodeBeginRequest(2, Role.AUTHORIZER, false), hex('01 01 0002 0008 00 00' + '0002 00 0000000000')],
  [
    'END_REQUEST, complete, status 0',
    encodeEndRequest(1, 0, ProtocolStatus.REQUEST_COMPLETE),
    hex('01 03 0001 0008 00 00' + '00000000 00 000000'),
  ],
  [
    'END_REQUEST, status 256',
    encodeEndRequest(1, 256, ProtocolStatus.REQUEST_COMPLETE),
    hex('01 03 0001 0008 00 00' + '00000100 00 000000'),
  ],
  [
    "END_REQUEST, status -1 as two's complement",
    encodeEndRequest(3, -1, ProtocolStatus.REQUEST_COMPLETE),
    hex('01 03 0003 0008 00 00' + 'ffffffff 00 000000'),
  ],
  [
    'END_REQUEST, cannot multiplex',
    encodeEndRequest(9, 0, ProtocolStatus.CANT_MPX_CONN),
    hex('01 03 0009 0008 00 00' + '00000000 01 000000'),
  ],
  ['END_REQUEST, overloaded', encodeEndRequest(9, 0, ProtocolStatus.OVERLOADED), hex('01 03 0009 0008 00 00' + '00000000 02 000000')],
  ['END_REQUEST, unknown role', encodeEndRequest(4, 0, ProtocolStatus.UNKNOWN_ROLE), hex('01 03 0004 0008 00 00' + '00000000 03 000000')],
  ['ABORT_REQUEST', encodeAbortRequest(5), hex('01 02 0005 0000 00 00')],
  ['UNKNOWN_TYPE for type 42 on the management id', encodeUnknownType(42), hex('01 0b 0000 0008 00 00' + '2a 00000000000000')],
  [
    'GET_VALUES asking for the three variables, with empty values',
    encodeParamsRecords(RecordType.GET_VALUES, 0, [
      ['FCGI_MAX_CONNS', ''],
      ['FCGI_MAX_REQS', ''],
      ['FCGI_MPXS_CONNS', ''],
    ]),
    Buffer.concat([
      // 16 + 15 + 17 = 48 bytes of content: no padding
      hex('01 09 0000 0030 00 00'),
      hex('0e 00'),
      Buffer.from('FCGI_MAX_CONNS'),
      hex('0d 00'),
      Buffer.from('FCGI_MAX_REQS'),
      hex('0f 00'),
      Buffer.from('FCGI_MPXS_CONNS'),
    ]),
  ],
  [
    'GET_VALUES_RESULT with one answer, padded',
    encodeParamsRecords(RecordType.GET_VALUES_RESULT, 0, [['FCGI_MPXS_CONNS', '1']]),
    Buffer.concat([hex('01 0a 0000 0012 06 00'), hex('0f 01'), Buffer.from('FCGI_MPXS_CONNS1'), hex('000000000000')]),
  ],
  [
    'PARAMS with a pair needing a 4-byte length',
    encodeParamsRecords(RecordType.PARAMS, 1, [['QUERY_STRING', 'q'.repeat(128)]]),
    Buffer.concat([
      hex('01 04 0001 0091 07 00'),
      hex('0c 80000080'),
      Buffer.from('QUERY_STRING'),
      Buffer.from('q'.repeat(128)),
      Buffer.alloc(7),
    ]),
  ],
];

for (const [what, encoded, expected] of exactRecords) {
  test(`bytes of ${what}`, () => {
    assert.equal(encoded.toString('hex'), expected.toString('hex'));
  });
}

test('a 66000-byte STDOUT becomes a 65535-byte record with padding 1, then a 465-byte record with padding 7', () => {
  const data = Buffer.alloc(66000);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  const expected = Buffer.concat([
    header(RecordType.STDOUT, 300, 65535, 1),
    data.subarray(0, 65535),
    Buffer.alloc(1),
    header(RecordType.STDOUT, 300, 465, 7),
    data.subarray(65535),
    Buffer.alloc(7),
  ]);
  assert.ok(encodeStream(RecordType.STDOUT, 300, data).equals(expected), 'encodeStream');
  assert.ok(Buffer.concat(frameStream(RecordType.STDOUT, 300, data)).equals(expected), 'frameStream');
  // With the end-of-stream record the decoder sees three records, the last one empty.
  const records = decodeAll(Buffer.concat([expected, encodeRecord(RecordType.STDOUT, 300)]));
  assert.deepEqual(
    records.map((record) => record.content.length),
    [65535, 465, 0],
  );
  assert.ok(Buffer.concat(records.map((record) => record.content)).equals(data));
});

test("frameStream does not copy the data: its slices share the caller's memory", () => {
  const data = Buffer.alloc(70000, 0x41);
  const parts = frameStream(RecordType.STDOUT, 1, data);
  const slices = parts.filter((part) => part.buffer === data.buffer);
  assert.deepEqual(
    slices.map((slice) => [slice.byteOffset - data.byteOffset, slice.length]),
    [
      [0, 65535],
      [65535, 70000 - 65535],
    ],
  );
});

test('frameStream of empty data is no records (the empty end-of-stream record is written on purpose, apart)', () => {
  assert.deepEqual(frameStream(RecordType.STDOUT, 1, Buffer.alloc(0)), []);
});

test('a record exactly 65535 bytes long fits; one byte more is an InvalidArgumentError naming frameStream', () => {
  assert.equal(encodeRecord(RecordType.STDOUT, 1, Buffer.alloc(FCGI_MAX_CONTENT_LENGTH)).length, 8 + 65535 + 1);
  assert.throws(
    () => encodeRecord(RecordType.STDOUT, 1, Buffer.alloc(FCGI_MAX_CONTENT_LENGTH + 1)),
    (error: unknown) => {
      assert.ok(error instanceof InvalidArgumentError);
      assert.equal(error.code, 'GH_INVALID_ARGUMENT');
      assert.match(error.message, /65536 bytes.*frameStream/);
      return true;
    },
  );
});

test('padding bytes are zero even when the output buffer came from an unzeroed pool', () => {
  for (let i = 0; i < 50; i++) {
    const record = encodeRecord(RecordType.STDOUT, 1, Buffer.from('abc'));
    assert.deepEqual(record.subarray(11), Buffer.alloc(5));
    assert.equal(record[7], 0, 'the reserved header byte');
  }
});

test('BEGIN_REQUEST and END_REQUEST bodies decode back', () => {
  assert.deepEqual(decodeBeginRequestBody(encodeBeginRequest(1, Role.FILTER, true).subarray(8)), { role: 3, keepConn: true });
  assert.deepEqual(
    decodeBeginRequestBody(hex('0001 fe 0000000000')),
    { role: 1, keepConn: false },
    'only bit 0 of flags is FCGI_KEEP_CONN',
  );
  assert.deepEqual(decodeEndRequestBody(encodeEndRequest(1, -1, ProtocolStatus.OVERLOADED).subarray(8)), {
    appStatus: -1,
    protocolStatus: 2,
  });
  // php-fpm fills the reserved bytes: they are ignored.
  assert.deepEqual(decodeEndRequestBody(hex('0000002a 00 616263')), { appStatus: 42, protocolStatus: 0 });
});

test('short BEGIN_REQUEST and END_REQUEST bodies are FCGI_BAD_RECORD errors', () => {
  const begin = decodeBeginRequestBody(hex('0001 01'));
  assert.ok(begin instanceof FastCGIProtocolError);
  assert.equal(begin.code, ErrorCode.FCGI_BAD_RECORD);
  const end = decodeEndRequestBody(hex('00000000'));
  assert.ok(end instanceof FastCGIProtocolError);
  assert.equal(end.code, ErrorCode.FCGI_BAD_RECORD);
});

test('encodeParamsRecords of no pairs is no bytes (the caller writes the empty terminator)', () => {
  assert.equal(encodeParamsRecords(RecordType.PARAMS, 1, []).length, 0);
});

test('a pair of exactly 65535 encoded bytes fits in one record; 65536 is FCGI_PAIR_TOO_LARGE naming the parameter', () => {
  // 1 (name length) + 4 (value length) + 1 (name) + value = 65535
  const fits = encodeParamsRecords(RecordType.PARAMS, 1, [['N', Buffer.alloc(65529, 0x76)]]);
  const records = decodeAll(fits);
  assert.equal(records.length, 1);
  assert.equal(records[0]!.content.length, 65535);
  assert.throws(
    () => encodeParamsRecords(RecordType.PARAMS, 1, [['HTTP_COOKIE', Buffer.alloc(65535 - 5 - 10, 0x76)]]),
    (error: unknown) => {
      assert.ok(error instanceof FastCGIProtocolError);
      assert.equal(error.code, ErrorCode.FCGI_PAIR_TOO_LARGE);
      assert.match(error.message, /HTTP_COOKIE/);
      assert.match(error.message, /65536 bytes/);
      return true;
    },
  );
});

test('PARAMS spill into a second record between pairs, never inside one', () => {
  const pairs: Array<[string, Buffer]> = [
    ['A', Buffer.alloc(40000, 0x61)],
    ['B', Buffer.alloc(40000, 0x62)],
    ['C', Buffer.alloc(10, 0x63)],
  ];
  const records = decodeAll(encodeParamsRecords(RecordType.PARAMS, 9, pairs));
  assert.deepEqual(
    records.map((record) => [record.type, record.requestId, record.content.length]),
    [
      [RecordType.PARAMS, 9, 40006],
      [RecordType.PARAMS, 9, 40006 + 13],
    ],
  );
});

// --- properties ------------------------------------------------------------

const contentArb = fc.oneof(
  { weight: 6, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  { weight: 1, arbitrary: fc.integer({ min: 65530, max: 140000 }).map((length) => new Uint8Array(length).fill(length & 0xff)) },
);

test('property: decode(encodeStream(x)) gives x back, in records of at most 65535 bytes padded to 8', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 255 }), fc.integer({ min: 0, max: 0xffff }), contentArb, (type, requestId, raw) => {
      const content = Buffer.from(raw);
      const encoded = encodeStream(type, requestId, content);
      assert.equal(encoded.length % 8, 0);
      const records = decodeAll(encoded);
      assert.ok(records.length === Math.max(1, Math.ceil(content.length / FCGI_MAX_CONTENT_LENGTH)));
      for (const record of records) {
        assert.equal(record.type, type);
        assert.equal(record.requestId, requestId);
        assert.ok(record.content.length <= FCGI_MAX_CONTENT_LENGTH);
      }
      assert.ok(Buffer.concat(records.map((record) => record.content)).equals(content));
      assert.ok(Buffer.concat(frameStream(type, requestId, content)).equals(content.length === 0 ? Buffer.alloc(0) : encoded));
    }),
    fcRuns(150),
  );
});

test('property: a sequence of records decodes to the same sequence', () => {
  const recordArb = fc.record({
    type: fc.integer({ min: 0, max: 255 }),
    requestId: fc.integer({ min: 0, max: 0xffff }),
    content: fc.uint8Array({ maxLength: 200 }),
  });
  fc.assert(
    fc.property(fc.array(recordArb, { maxLength: 20 }), (records) => {
      const stream = Buffer.concat(records.map((record) => encodeRecord(record.type, record.requestId, record.content)));
      assert.deepEqual(
        decodeAll(stream),
        records.map((record) => ({ type: record.type, requestId: record.requestId, content: Buffer.from(record.content) })),
      );
    }),
    fcRuns(300),
  );
});

test('property: encodeParamsRecords never splits a pair and loses nothing', () => {
  const valueArb = fc.oneof(
    { weight: 5, arbitrary: fc.uint8Array({ maxLength: 200 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: 65529 - 64 }).map((length) => new Uint8Array(length).fill(0x78)) },
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.uint8Array({ maxLength: 64 }), valueArb), { maxLength: 10 }), (pairs) => {
      const records = decodeAll(encodeParamsRecords(RecordType.PARAMS, 1, pairs));
      const decodedPairs: Array<[Buffer, Buffer]> = [];
      for (const record of records) {
        assert.ok(record.content.length > 0 && record.content.length <= FCGI_MAX_CONTENT_LENGTH);
        // Each record on its own holds whole pairs: php-fpm parses records one by one.
        const inRecord = decodeNameValuePairs(record.content);
        if (inRecord instanceof Error) assert.fail(`a PARAMS record does not hold whole pairs: ${inRecord.message}`);
        decodedPairs.push(...inRecord.map(([name, value]): [Buffer, Buffer] => [Buffer.from(name), Buffer.from(value)]));
      }
      assert.deepEqual(
        decodedPairs,
        pairs.map(([name, value]) => [Buffer.from(name), Buffer.from(value)]),
      );
    }),
    fcRuns(100),
  );
});

test('property: pairs given as strings encode to the same bytes as the same pairs given as UTF-8 bytes (ASCII and not)', () => {
  // Strings that are all ASCII take a faster path (one latin1 write per record); bytes never do.
  // Long values stay under 30000 bytes, so a pair of two still fits in one record.
  const textArb = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.string({ unit: fc.integer({ min: 0, max: 127 }).map((code) => String.fromCharCode(code)), maxLength: 200 }),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.integer({ min: 120, max: 30000 }).map((length) => 'v'.repeat(length)) },
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(textArb, textArb), { maxLength: 12 }), fc.integer({ min: 1, max: 0xffff }), (pairs, requestId) => {
      const fromStrings = encodeParamsRecords(RecordType.PARAMS, requestId, pairs);
      const fromBytes = encodeParamsRecords(
        RecordType.PARAMS,
        requestId,
        pairs.map(([name, value]) => [Buffer.from(name, 'utf8'), Buffer.from(value, 'utf8')] as const),
      );
      assert.ok(fromStrings.equals(fromBytes), 'the string and byte encodings differ');
    }),
    fcRuns(200),
  );
});

test('property: any pair over 65535 encoded bytes is FCGI_PAIR_TOO_LARGE, wherever it sits among other pairs', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 50 })), { maxLength: 4 }),
      fc.integer({ min: 65536 - 5 - 4, max: 70000 }),
      fc.nat(),
      (others, valueLength, where) => {
        const pairs: Array<[string, Uint8Array]> = others.map(([name, value]) => [name, Buffer.from(value)]);
        pairs.splice(where % (pairs.length + 1), 0, ['BIG!', new Uint8Array(valueLength)]);
        const encodedLength = 1 + 4 + 4 + valueLength;
        let threw: unknown = null;
        try {
          encodeParamsRecords(RecordType.PARAMS, 1, pairs);
        } catch (error) {
          threw = error;
        }
        if (encodedLength <= FCGI_MAX_CONTENT_LENGTH) {
          assert.equal(threw, null);
        } else {
          assert.ok(threw instanceof FastCGIProtocolError, `no error for a ${encodedLength}-byte pair`);
          assert.equal(threw.code, ErrorCode.FCGI_PAIR_TOO_LARGE);
        }
      },
    ),
    fcRuns(60),
  );
});

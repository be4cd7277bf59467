/**
 * The incremental record decoder: the same records for any split of the byte
 * stream, any padding, zero-copy slices, and errors (never exceptions) for a
 * bad version, a truncated stream and garbage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeRecord, encodeStream, RecordDecoder, RecordType, type FastCGIRecord } from '../../src/fastcgi/codec.js';
import { ErrorCode, FastCGIProtocolError } from '../../src/errors.js';

/**
 * Property runs are bounded; a failure prints fast-check's seed and path.
 * Re-run one with GATEHOUSE_FC_SEED=<seed> to reproduce it.
 */
const fcRuns = (numRuns: number): fc.Parameters<unknown> => {
  const seed = process.env.GATEHOUSE_FC_SEED;
  return seed === undefined ? { numRuns } : { numRuns, seed: Number(seed) };
};

interface PlainRecord {
  type: number;
  requestId: number;
  content: Buffer;
}

interface WireRecord extends PlainRecord {
  paddingLength: number;
  paddingByte: number;
}

/** One record with any padding length (0..255) and non-zero padding bytes, as other encoders may send. */
function wire(record: WireRecord): Buffer {
  const head = Buffer.from([
    1,
    record.type,
    record.requestId >> 8,
    record.requestId & 0xff,
    record.content.length >> 8,
    record.content.length & 0xff,
    record.paddingLength,
    0,
  ]);
  return Buffer.concat([head, record.content, Buffer.alloc(record.paddingLength, record.paddingByte)]);
}

const plain = (record: PlainRecord): PlainRecord => ({
  type: record.type,
  requestId: record.requestId,
  content: Buffer.from(record.content),
});

const wireRecordArb: fc.Arbitrary<WireRecord> = fc.record({
  type: fc.integer({ min: 0, max: 255 }),
  requestId: fc.integer({ min: 0, max: 0xffff }),
  content: fc
    .oneof(
      { weight: 8, arbitrary: fc.uint8Array({ maxLength: 100 }) },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 1000, maxLength: 5000 }) },
    )
    .map((bytes) => Buffer.from(bytes)),
  paddingLength: fc.oneof(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 255 })),
  paddingByte: fc.integer({ min: 0, max: 255 }),
});

/** Cuts `data` at the given offsets (any values: they are folded into range and sorted). */
function split(data: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.map((cut) => cut % (data.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const point of points) {
    chunks.push(data.subarray(start, point));
    start = point;
  }
  chunks.push(data.subarray(start));
  return chunks;
}

interface FeedResult {
  records: PlainRecord[];
  error: FastCGIProtocolError | null;
  endError: FastCGIProtocolError | null;
}

/**
 * Pushes each chunk (copied into its own memory, like separate socket reads),
 * then ends. Pieces of a stream record (partial: true) are joined back into
 * the record they belong to, checking that a piece is never empty and never
 * interleaved with another record.
 */
function feed(chunks: readonly Buffer[]): FeedResult {
  const decoder = new RecordDecoder();
  const records: PlainRecord[] = [];
  let pieces: Buffer[] = [];
  let error: FastCGIProtocolError | null = null;
  for (const chunk of chunks) {
    error = decoder.push(Buffer.from(chunk), (record) => {
      if (record.partial) {
        assert.ok(record.content.length > 0, 'a partial piece is never empty');
        assert.ok(
          [RecordType.PARAMS, RecordType.STDIN, RecordType.STDOUT, RecordType.STDERR, RecordType.DATA].includes(record.type as never),
          `type ${record.type} came in pieces`,
        );
        pieces.push(Buffer.from(record.content));
        return;
      }
      if (pieces.length > 0) {
        records.push({ type: record.type, requestId: record.requestId, content: Buffer.concat([...pieces, record.content]) });
        pieces = [];
      } else records.push(plain(record));
    });
    if (error) break;
  }
  return { records, error, endError: decoder.end() };
}

const oneByteChunks = (data: Buffer): Buffer[] => Array.from({ length: data.length }, (_, i) => data.subarray(i, i + 1));

test('a stream of several records in one chunk', () => {
  const stream = Buffer.concat([
    encodeRecord(RecordType.STDOUT, 1, Buffer.from('Status: 200\r\n\r\n')),
    encodeRecord(RecordType.STDERR, 1, Buffer.from('warn')),
    encodeRecord(RecordType.STDOUT, 1),
    encodeRecord(RecordType.END_REQUEST, 1, Buffer.from('0000000000000000', 'hex')),
  ]);
  const result = feed([stream]);
  assert.equal(result.error, null);
  assert.equal(result.endError, null);
  assert.deepEqual(
    result.records.map((record) => [record.type, record.requestId, record.content.toString('latin1')]),
    [
      [6, 1, 'Status: 200\r\n\r\n'],
      [7, 1, 'warn'],
      [6, 1, ''],
      [3, 1, '\0'.repeat(8)],
    ],
  );
});

test('a record wholly inside one chunk is handed on as a slice of that chunk (no copy)', () => {
  const chunk = Buffer.concat([
    encodeRecord(RecordType.STDOUT, 1, Buffer.alloc(1000, 0x61)),
    encodeRecord(RecordType.STDOUT, 1, Buffer.from('xyz')),
  ]);
  const seen: FastCGIRecord[] = [];
  assert.equal(
    new RecordDecoder().push(chunk, (record) => seen.push(record)),
    null,
  );
  assert.equal(seen.length, 2);
  for (const record of seen) assert.equal(record.content.buffer, chunk.buffer);
  assert.equal(seen[0]!.content.byteOffset, chunk.byteOffset + 8);
  assert.equal(seen[1]!.content.byteOffset, chunk.byteOffset + 8 + 1000 + 8);
});

test('a header cut across chunks, with the content whole in the second chunk, still gives a slice', () => {
  const record = encodeRecord(RecordType.STDOUT, 1, Buffer.alloc(64, 0x62));
  const decoder = new RecordDecoder();
  const seen: FastCGIRecord[] = [];
  assert.equal(
    decoder.push(record.subarray(0, 5), (r) => seen.push(r)),
    null,
  );
  assert.equal(decoder.pendingBytes, 5);
  const second = Buffer.from(record.subarray(5));
  assert.equal(
    decoder.push(second, (r) => seen.push(r)),
    null,
  );
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.content.buffer, second.buffer);
  assert.equal(decoder.end(), null);
});

test('a 66000-byte STDOUT fed one byte at a time decodes to 65535 + 465 bytes', () => {
  const data = Buffer.alloc(66000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  const result = feed(oneByteChunks(encodeStream(RecordType.STDOUT, 2, data)));
  assert.equal(result.error, null);
  assert.equal(result.endError, null);
  assert.deepEqual(
    result.records.map((record) => record.content.length),
    [65535, 465],
  );
  assert.ok(Buffer.concat(result.records.map((record) => record.content)).equals(data));
});

test('padding of 255 bytes is skipped, also when cut across chunks', () => {
  const stream = Buffer.concat([
    wire({ type: 6, requestId: 1, content: Buffer.from('a'), paddingLength: 255, paddingByte: 0xee }),
    wire({ type: 6, requestId: 1, content: Buffer.from('b'), paddingLength: 0, paddingByte: 0 }),
  ]);
  for (const chunks of [[stream], oneByteChunks(stream), split(stream, [9, 100, 264])]) {
    const result = feed(chunks);
    assert.equal(result.error, null);
    assert.equal(result.endError, null);
    assert.deepEqual(
      result.records.map((record) => record.content.toString()),
      ['a', 'b'],
    );
  }
});

test('a record is handed on as soon as its content is in, before its padding arrives', () => {
  const record = wire({ type: 6, requestId: 3, content: Buffer.from('body'), paddingLength: 200, paddingByte: 0 });
  const decoder = new RecordDecoder();
  const seen: string[] = [];
  assert.equal(
    decoder.push(record.subarray(0, 6), (r) => seen.push(r.content.toString())),
    null,
  );
  assert.equal(decoder.pendingBytes, 6, 'a partial header is held');
  assert.equal(
    decoder.push(record.subarray(6, 12), (r) => seen.push(r.content.toString())),
    null,
  );
  assert.deepEqual(seen, ['body'], 'delivered with all of its padding still to come');
  const truncated = decoder.end();
  assert.ok(truncated instanceof FastCGIProtocolError);
  assert.equal(truncated.code, ErrorCode.FCGI_TRUNCATED, 'missing padding is still a truncated stream');

  const whole = feed([record.subarray(0, 12), record.subarray(12, 100), record.subarray(100)]);
  assert.deepEqual(
    whole.records.map((r) => r.content.toString()),
    ['body'],
  );
  assert.equal(whole.endError, null);
});

const badVersions: Array<[what: string, byte: number]> = [
  ['version 0', 0],
  ['version 2', 2],
  ['an HTTP request ("G" of GET)', 0x47],
];

for (const [what, byte] of badVersions) {
  test(`${what} is FCGI_BAD_VERSION, after the good records before it, in one chunk or cut`, () => {
    const good = encodeRecord(RecordType.STDOUT, 1, Buffer.from('ok'));
    const bad = Buffer.from(encodeRecord(RecordType.STDOUT, 1, Buffer.from('no')));
    bad[0] = byte;
    const stream = Buffer.concat([good, bad, good]);
    for (const chunks of [[stream], oneByteChunks(stream), split(stream, [3, 13, 20])]) {
      const result = feed(chunks);
      assert.ok(result.error instanceof FastCGIProtocolError, 'expected an error');
      assert.equal(result.error.code, ErrorCode.FCGI_BAD_VERSION);
      assert.match(result.error.message, new RegExp(`version ${byte}`));
      assert.deepEqual(
        result.records.map((record) => record.content.toString()),
        ['ok'],
        'no record after the bad one',
      );
    }
  });
}

test('once failed, the decoder stays failed and delivers nothing more', () => {
  const decoder = new RecordDecoder();
  const first = decoder.push(Buffer.from('GET / HTTP/1.1\r\n'), () => assert.fail('no record expected'));
  assert.ok(first instanceof FastCGIProtocolError);
  assert.equal(decoder.failed, first);
  assert.equal(
    decoder.push(encodeRecord(RecordType.STDOUT, 1), () => assert.fail('no record expected after a failure')),
    first,
  );
  assert.equal(decoder.end(), first);
});

test('fail() from inside a callback stops the decoder before the next record', () => {
  const decoder = new RecordDecoder();
  const stream = Buffer.concat([
    encodeRecord(RecordType.STDOUT, 1, Buffer.from('a')),
    encodeRecord(RecordType.STDOUT, 2, Buffer.from('b')),
  ]);
  const stateMachineError = new FastCGIProtocolError(ErrorCode.FCGI_UNEXPECTED_RECORD, 'STDOUT for request 1 was not expected');
  const seen: number[] = [];
  const result = decoder.push(stream, (record) => {
    seen.push(record.requestId);
    decoder.fail(stateMachineError);
  });
  assert.equal(result, stateMachineError);
  assert.deepEqual(seen, [1]);
  assert.equal(decoder.failed, stateMachineError);
});

test('fail() keeps the first error', () => {
  const decoder = new RecordDecoder();
  const first = new FastCGIProtocolError(ErrorCode.FCGI_TOO_MANY_REQUESTS, 'first');
  decoder.fail(first);
  decoder.fail(new FastCGIProtocolError(ErrorCode.FCGI_BAD_RECORD, 'second'));
  assert.equal(decoder.failed, first);
});

test('end() at a record boundary is fine; inside a header, content or padding it is FCGI_TRUNCATED', () => {
  const record = wire({ type: 6, requestId: 1, content: Buffer.from('hello'), paddingLength: 3, paddingByte: 0 });
  assert.equal(feed([]).endError, null, 'an empty stream');
  assert.equal(feed([record]).endError, null);
  for (const [where, cut] of [
    ['header', 3],
    ['content', 10],
    ['padding', 14],
  ] as const) {
    const result = feed([record.subarray(0, cut)]);
    assert.equal(result.error, null);
    assert.ok(result.endError instanceof FastCGIProtocolError, `no error for a stream cut in the ${where}`);
    assert.equal(result.endError.code, ErrorCode.FCGI_TRUNCATED);
    assert.match(result.endError.message, /stream ended inside a record/);
  }
});

// --- properties ------------------------------------------------------------

test('property: any split of the stream (any padding 0..255) gives the same records as one push', () => {
  fc.assert(
    fc.property(fc.array(wireRecordArb, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 30 }), (records, cuts) => {
      const stream = Buffer.concat(records.map(wire));
      const expected = records.map(plain);
      const whole = feed([stream]);
      const cut = feed(split(stream, cuts));
      for (const result of [whole, cut]) {
        assert.equal(result.error, null);
        assert.equal(result.endError, null);
        assert.deepEqual(result.records, expected);
      }
    }),
    fcRuns(300),
  );
});

test('property: 1-byte chunks give the same records', () => {
  fc.assert(
    fc.property(fc.array(wireRecordArb, { maxLength: 6 }), (records) => {
      const stream = Buffer.concat(records.map(wire));
      const result = feed(oneByteChunks(stream));
      assert.equal(result.error, null);
      assert.equal(result.endError, null);
      assert.deepEqual(result.records, records.map(plain));
    }),
    fcRuns(60),
  );
});

test('property: a stream cut anywhere but a record boundary ends with FCGI_TRUNCATED, after every record whose content came before the cut', () => {
  fc.assert(
    fc.property(
      fc.array(wireRecordArb, { minLength: 1, maxLength: 6 }),
      fc.nat(),
      fc.array(fc.nat(), { maxLength: 5 }),
      (records, cutSeed, chunkCuts) => {
        const encoded = records.map(wire);
        const stream = Buffer.concat(encoded);
        const cutAt = cutSeed % (stream.length + 1);
        let boundary = 0;
        let delivered = 0;
        const boundaries = new Set([0]);
        records.forEach((record, i) => {
          // A record is handed on once its content is in; its padding may still be on the way.
          if (boundary + 8 + record.content.length <= cutAt) delivered++;
          boundary += encoded[i]!.length;
          boundaries.add(boundary);
        });
        const result = feed(split(stream.subarray(0, cutAt), chunkCuts));
        assert.equal(result.error, null);
        assert.deepEqual(result.records, records.slice(0, delivered).map(plain));
        if (boundaries.has(cutAt)) {
          assert.equal(result.endError, null);
        } else {
          assert.ok(result.endError instanceof FastCGIProtocolError, `no error for a cut at ${cutAt} of ${stream.length}`);
          assert.equal(result.endError.code, ErrorCode.FCGI_TRUNCATED);
        }
      },
    ),
    fcRuns(300),
  );
});

/** Feeds garbage and fails the property if anything throws; returns what came out. */
function feedNeverThrows(chunks: readonly Buffer[]): FeedResult {
  let result: FeedResult | undefined;
  assert.doesNotThrow(() => {
    result = feed(chunks);
  });
  const { error, endError } = result!;
  if (error) assert.ok(error instanceof FastCGIProtocolError);
  if (endError) assert.ok(endError instanceof FastCGIProtocolError);
  // A failed push is reported again at end(): the caller never mistakes a failed stream for a clean one.
  if (error) assert.equal(endError, error);
  return result!;
}

test('property: random garbage never throws: it gives records, or a typed error', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(), { maxLength: 10 }), (raw, cuts) => {
      const data = Buffer.from(raw);
      const whole = feedNeverThrows([data]);
      const cut = feedNeverThrows(split(data, cuts));
      // Garbage too decodes the same in any split.
      assert.deepEqual(cut.records, whole.records);
      assert.equal(cut.error?.code, whole.error?.code);
      assert.equal(cut.endError?.code, whole.endError?.code);
    }),
    fcRuns(500),
  );
});

test('property: garbage starting with version 1 (so it gets past the first check) never throws either', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), fc.array(fc.nat(), { maxLength: 10 }), (raw, cuts) => {
      const data = Buffer.concat([Buffer.from([1]), raw]);
      const whole = feedNeverThrows([data]);
      const cut = feedNeverThrows(split(data, cuts));
      assert.deepEqual(cut.records, whole.records);
    }),
    fcRuns(500),
  );
});

test('property: a valid stream with mutated bytes never throws, and decodes the same in any split', () => {
  fc.assert(
    fc.property(
      fc.array(wireRecordArb, { minLength: 1, maxLength: 6 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 10 }),
      (records, mutations, cuts) => {
        const stream = Buffer.concat(records.map(wire));
        for (const [at, byte] of mutations) stream[at % stream.length] = byte;
        const whole = feedNeverThrows([stream]);
        const cut = feedNeverThrows(split(stream, cuts));
        assert.deepEqual(cut.records, whole.records);
        assert.equal(cut.error?.code, whole.error?.code);
      },
    ),
    fcRuns(500),
  );
});

test('a STDOUT record cut across chunks comes in pieces, each a slice of its own chunk (no copy)', () => {
  const record = encodeRecord(RecordType.STDOUT, 3, Buffer.alloc(60_000, 0x62));
  const first = Buffer.from(record.subarray(0, 20_000));
  const second = Buffer.from(record.subarray(20_000));
  const seen: FastCGIRecord[] = [];
  const decoder = new RecordDecoder();
  assert.equal(
    decoder.push(first, (r) => seen.push(r)),
    null,
  );
  assert.equal(
    decoder.push(second, (r) => seen.push(r)),
    null,
  );
  assert.equal(seen.length, 2);
  assert.deepEqual(
    seen.map((r) => [r.type, r.requestId, r.content.length, r.partial]),
    [
      [RecordType.STDOUT, 3, 20_000 - 8, true],
      [RecordType.STDOUT, 3, 60_000 - (20_000 - 8), false],
    ],
  );
  assert.equal(seen[0]!.content.buffer, first.buffer);
  assert.equal(seen[1]!.content.buffer, second.buffer);
});

test('a BEGIN_REQUEST cut across chunks is assembled whole, never in pieces', () => {
  const record = encodeRecord(RecordType.BEGIN_REQUEST, 1, Buffer.from([0, 1, 1, 0, 0, 0, 0, 0]));
  const seen: FastCGIRecord[] = [];
  const decoder = new RecordDecoder();
  for (let i = 0; i < record.length; i++)
    decoder.push(record.subarray(i, i + 1), (r) => seen.push({ ...r, content: Buffer.from(r.content) }));
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.partial, false);
  assert.deepEqual([...seen[0]!.content], [0, 1, 1, 0, 0, 0, 0, 0]);
});

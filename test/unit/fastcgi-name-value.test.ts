/**
 * FastCGI name-value pairs (spec section 3.4): exact bytes for the length
 * encodings, round trips of arbitrary bytes, and hostile length claims.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeNameValuePairs, encodeNameValuePair, encodeNameValuePairs, type NameValuePair } from '../../src/fastcgi/name-value.js';
import { ErrorCode, FastCGIProtocolError } from '../../src/errors.js';

/**
 * Property runs are bounded; a failure prints fast-check's seed and path.
 * Re-run one with GATEHOUSE_FC_SEED=<seed> to reproduce it.
 */
const fcRuns = (numRuns: number): fc.Parameters<unknown> => {
  const seed = process.env.GATEHOUSE_FC_SEED;
  return seed === undefined ? { numRuns } : { numRuns, seed: Number(seed) };
};

const hex = (text: string): Buffer => Buffer.from(text.replace(/\s+/g, ''), 'hex');

function decodeOk(data: Buffer): NameValuePair[] {
  const result = decodeNameValuePairs(data);
  if (result instanceof Error) assert.fail(`decodeNameValuePairs returned an error: ${result.message}`);
  return result;
}

// A length below 128 is one byte; from 128 on it is four bytes, big-endian, with the top bit set.
const lengthTable: Array<[length: number, encoded: string]> = [
  [0, '00'],
  [1, '01'],
  [127, '7f'],
  [128, '80000080'],
  [1000, '800003e8'],
  [65535, '8000ffff'],
  [33554431, '81ffffff'],
];

for (const [length, encoded] of lengthTable) {
  test(`a value of ${length} bytes has its length encoded as ${encoded}`, () => {
    const pair = encodeNameValuePair('N', Buffer.alloc(length, 0x61));
    const expectedHead = Buffer.concat([hex('01'), hex(encoded), Buffer.from('N')]);
    assert.deepEqual(pair.subarray(0, expectedHead.length), expectedHead);
    assert.equal(pair.length, expectedHead.length + length);
  });

  // The value test above covers the large encodings; names stay small to keep memory small.
  if (length > 65535) continue;
  test(`a name of ${length} bytes has its length encoded as ${encoded} in the first field`, () => {
    const pair = encodeNameValuePair(Buffer.alloc(length, 0x62), '');
    assert.deepEqual(pair.subarray(0, encoded.length / 2 + 1), Buffer.concat([hex(encoded), hex('00')]));
  });
}

test('a short pair is lengths, then name, then value, with no terminator', () => {
  assert.deepEqual(encodeNameValuePair('SCRIPT_NAME', '/x'), Buffer.concat([hex('0b 02'), Buffer.from('SCRIPT_NAME/x')]));
  assert.deepEqual(encodeNameValuePair('', ''), hex('00 00'));
});

test('a long name with a short value mixes a 4-byte and a 1-byte length', () => {
  const name = 'H'.repeat(200);
  assert.deepEqual(encodeNameValuePair(name, 'abc'), Buffer.concat([hex('800000c8 03'), Buffer.from(name), Buffer.from('abc')]));
});

test('strings are encoded as UTF-8; byte arrays (also non-Buffer Uint8Array views) are taken as they are', () => {
  assert.deepEqual(encodeNameValuePair('é', '€'), Buffer.concat([hex('02 03'), Buffer.from('c3a9e282ac', 'hex')]));
  const backing = new Uint8Array([9, 9, 0xff, 0xfe, 9]);
  const view = new Uint8Array(backing.buffer, 2, 2);
  assert.deepEqual(encodeNameValuePair(view, new Uint8Array([0x80])), hex('02 01 fffe 80'));
});

test('encodeNameValuePairs concatenates the pairs in order', () => {
  const encoded = encodeNameValuePairs([
    ['A', '1'],
    ['BB', ''],
  ]);
  assert.deepEqual(encoded, Buffer.concat([hex('01 01'), Buffer.from('A1'), hex('02 00'), Buffer.from('BB')]));
  assert.deepEqual(encodeNameValuePairs([]), Buffer.alloc(0));
});

test('decoding gives the bytes back as slices of the input, keeping bytes that are not UTF-8', () => {
  const data = Buffer.concat([hex('02 03'), hex('ff00'), hex('c328 80')]);
  const pairs = decodeOk(data);
  assert.equal(pairs.length, 1);
  const [name, value] = pairs[0]!;
  assert.deepEqual(name, hex('ff00'));
  assert.deepEqual(value, hex('c32880'));
  assert.equal(name.buffer, data.buffer, 'the name is a slice, not a copy');
  assert.equal(value.byteOffset, data.byteOffset + 4);
});

test('a 4-byte length for a short name is accepted on input (encoders are free to use it)', () => {
  const pairs = decodeOk(Buffer.concat([hex('80000001 80000002'), Buffer.from('Nvv')]));
  assert.deepEqual(pairs, [[Buffer.from('N'), Buffer.from('vv')]]);
});

test('the top bit of a 4-byte length is a marker, not part of the length', () => {
  // 0x80000080 is 128; were the top bit kept, the length would be over 2 GB.
  const pairs = decodeOk(Buffer.concat([hex('01 80000080'), Buffer.from('N'), Buffer.alloc(128, 0x7a)]));
  assert.equal(pairs[0]![1].length, 128);
});

test('an empty stream is no pairs', () => {
  assert.deepEqual(decodeOk(Buffer.alloc(0)), []);
});

const malformed: Array<[what: string, data: Buffer]> = [
  ['a lone 1-byte name length', hex('05')],
  ['a 4-byte name length cut after 2 bytes', hex('8000')],
  ['a 4-byte value length cut after 3 bytes', hex('01 800000')],
  ['a name longer than the data', Buffer.concat([hex('05 00'), Buffer.from('abc')])],
  ['a value longer than the data', Buffer.concat([hex('01 05'), Buffer.from('Nabc')])],
  ['a good pair followed by a cut one', Buffer.concat([hex('01 01'), Buffer.from('AB'), hex('03')])],
];

for (const [what, data] of malformed) {
  test(`${what} is a FCGI_BAD_NAME_VALUE error, not an exception`, () => {
    const result = decodeNameValuePairs(data);
    assert.ok(result instanceof FastCGIProtocolError, 'expected an error result');
    assert.equal(result.code, ErrorCode.FCGI_BAD_NAME_VALUE);
  });
}

/** Records every Buffer allocation size requested while `fn` runs. */
function allocationsDuring(fn: () => void): number[] {
  const sizes: number[] = [];
  const originals = { alloc: Buffer.alloc, allocUnsafe: Buffer.allocUnsafe, allocUnsafeSlow: Buffer.allocUnsafeSlow };
  const spy =
    <F extends (size: number, ...rest: never[]) => Buffer>(original: F) =>
    (size: number, ...rest: never[]) => {
      sizes.push(size);
      return original(size, ...rest);
    };
  Buffer.alloc = spy(originals.alloc) as typeof Buffer.alloc;
  Buffer.allocUnsafe = spy(originals.allocUnsafe) as typeof Buffer.allocUnsafe;
  Buffer.allocUnsafeSlow = spy(originals.allocUnsafeSlow) as typeof Buffer.allocUnsafeSlow;
  try {
    fn();
  } finally {
    Object.assign(Buffer, originals);
  }
  return sizes;
}

test('2^31-byte length claims are errors and allocate nothing of that size', () => {
  const claims = [
    hex('ffffffff 00'), // name of 2^31-1 bytes
    hex('01 ffffffff 4e'), // value of 2^31-1 bytes
    hex('ffffffff ffffffff'), // both
    hex('80000000 ffffffff'), // empty name, huge value (the sum must not wrap)
  ];
  for (const data of claims) {
    let result: ReturnType<typeof decodeNameValuePairs> | undefined;
    const before = process.memoryUsage().arrayBuffers;
    const sizes = allocationsDuring(() => {
      result = decodeNameValuePairs(data);
    });
    const grown = process.memoryUsage().arrayBuffers - before;
    assert.ok(result instanceof FastCGIProtocolError, `expected an error for ${data.toString('hex')}`);
    assert.equal(result.code, ErrorCode.FCGI_BAD_NAME_VALUE);
    assert.ok(
      sizes.every((size) => size <= 64),
      `decoding a length claim allocated ${sizes.join(', ')} bytes`,
    );
    assert.ok(grown < 1024 * 1024, `array buffer memory grew by ${grown} bytes`);
  }
});

// Names and values are arbitrary bytes, often long enough to need 4-byte lengths.
const bytes = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 120, maxLength: 400 }) },
);

test('property: decode(encode(pairs)) = pairs, for any bytes', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(bytes, bytes), { maxLength: 12 }), (pairs) => {
      const decoded = decodeOk(encodeNameValuePairs(pairs));
      assert.deepEqual(
        decoded.map(([name, value]) => [Buffer.from(name), Buffer.from(value)]),
        pairs.map(([name, value]) => [Buffer.from(name), Buffer.from(value)]),
      );
    }),
    fcRuns(300),
  );
});

test('property: decode(encode(pairs)) = pairs, for any strings (UTF-8)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.fullUnicodeString({ maxLength: 30 }), fc.fullUnicodeString({ maxLength: 200 })), { maxLength: 8 }),
      (pairs) => {
        const decoded = decodeOk(encodeNameValuePairs(pairs));
        assert.deepEqual(
          decoded.map(([name, value]) => [name.toString('utf8'), value.toString('utf8')]),
          pairs,
        );
      },
    ),
    fcRuns(200),
  );
});

test('property: garbage never throws; it decodes to pairs that fit inside it, or to an error', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (raw) => {
      const data = Buffer.from(raw);
      const result = decodeNameValuePairs(data);
      if (result instanceof Error) {
        assert.ok(result instanceof FastCGIProtocolError);
        assert.equal(result.code, ErrorCode.FCGI_BAD_NAME_VALUE);
        return;
      }
      // Pairs that decoded account for every byte: their contents plus at least 2 length bytes each.
      const contentBytes = result.reduce((sum, [name, value]) => sum + name.length + value.length, 0);
      assert.ok(contentBytes + 2 * result.length <= data.length);
    }),
    fcRuns(1000),
  );
});

test('property: a cut anywhere inside an encoded pair is an error', () => {
  fc.assert(
    fc.property(bytes, bytes, fc.nat(), (name, value, cutSeed) => {
      const encoded = encodeNameValuePair(name, value);
      const cut = cutSeed % encoded.length; // 0 .. length-1: always loses at least the last byte
      const result = decodeNameValuePairs(encoded.subarray(0, cut));
      if (cut === 0) assert.deepEqual(result, []);
      else assert.ok(result instanceof FastCGIProtocolError, `a pair cut at ${cut} of ${encoded.length} bytes decoded`);
    }),
    fcRuns(300),
  );
});

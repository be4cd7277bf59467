/**
 * The cgid wire format: exact bytes, round trips, any chunking, garbage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CGID_HEADER_BYTES,
  CGID_PROTOCOL_VERSION,
  daemonProof,
  decodeMessage,
  encodeMessage,
  FrameDecoder,
  type CgidMessage,
} from '../../src/cgid/protocol.js';
import { environmentList, NO_LIMITS } from '../../src/spawn/order.js';

test('a SIGNAL frame is laid out byte for byte', () => {
  const frame = encodeMessage({ type: 'signal', id: 0x01020304, signal: 'SIGTERM' });
  assert.deepEqual(
    [...frame],
    [0x47, 0x63, CGID_PROTOCOL_VERSION, 6, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 11, 0, 0, 0, 7, ...Buffer.from('SIGTERM')],
  );
});

test('EXITED encodes "no code" as -1 and "no signal" as an empty string', () => {
  const frame = encodeMessage({ type: 'exited', id: 9, code: null, signal: 'SIGKILL' });
  assert.deepEqual([...frame.subarray(CGID_HEADER_BYTES, CGID_HEADER_BYTES + 4)], [0xff, 0xff, 0xff, 0xff]);
  const decoded = new FrameDecoder().push(frame);
  assert.deepEqual(decodeMessage(decoded.frames[0]!), { type: 'exited', id: 9, code: null, signal: 'SIGKILL' });
  const normal = new FrameDecoder().push(encodeMessage({ type: 'exited', id: 9, code: 3, signal: null }));
  assert.deepEqual(decodeMessage(normal.frames[0]!), { type: 'exited', id: 9, code: 3, signal: null });
});

test('the daemon proof depends on the token and the nonce', () => {
  const token = Buffer.alloc(32, 7);
  const nonce = Buffer.alloc(16, 1);
  assert.equal(daemonProof(token, nonce).length, 32);
  assert.notDeepEqual(daemonProof(token, nonce), daemonProof(Buffer.alloc(32, 8), nonce));
  assert.notDeepEqual(daemonProof(token, nonce), daemonProof(token, Buffer.alloc(16, 2)));
});

test('environmentList writes NAME=VALUE, values with = kept whole', () => {
  assert.deepEqual(
    environmentList({ A: '1', QUERY_STRING: 'a=b&c=d' }).map((entry) => entry.toString('utf8')),
    ['A=1', 'QUERY_STRING=a=b&c=d'],
  );
});

test('environmentList: text as UTF-8, bytes exactly; a SPAWN order carries them byte for byte', () => {
  const env = environmentList({ TEXT: 'caf\u00e9', HTTP_X_RAW: Buffer.from('fffe80', 'hex') });
  assert.deepEqual(
    env.map((entry) => entry.toString('hex')),
    [Buffer.from('TEXT=caf\u00e9', 'utf8').toString('hex'), Buffer.from('HTTP_X_RAW=\xff\xfe\x80', 'latin1').toString('hex')],
  );
  const order = { file: '/x', argv: ['/x'], cwd: '/', env, limits: NO_LIMITS, runAs: null };
  const { frames } = new FrameDecoder().push(encodeMessage({ type: 'spawn', id: 1, token: Buffer.alloc(4), order }));
  const decoded = decodeMessage(frames[0]!);
  assert.ok('type' in decoded && decoded.type === 'spawn');
  assert.deepEqual(
    decoded.order.env.map((entry) => entry.toString('hex')),
    env.map((entry) => entry.toString('hex')),
  );
});

const text = fc.string({ maxLength: 40 });
const limits = fc.record({
  cpuSeconds: fc.nat(),
  memoryBytes: fc.nat(),
  processes: fc.nat(),
  openFiles: fc.nat(),
  outputBytes: fc.nat(),
});
const id = fc.integer({ min: 1, max: 0xffffffff });
const message: fc.Arbitrary<CgidMessage> = fc.oneof(
  fc.uint8Array({ minLength: 0, maxLength: 32 }).map((nonce) => ({ type: 'hello' as const, nonce: Buffer.from(nonce) })),
  fc
    .record({ pid: fc.integer({ min: 0, max: 0xffffffff }), proof: fc.uint8Array({ maxLength: 32 }) })
    .map((m) => ({ type: 'welcome' as const, pid: m.pid, proof: Buffer.from(m.proof) })),
  fc
    .record({
      id,
      token: fc.uint8Array({ maxLength: 40 }),
      file: text,
      argv: fc.array(text, { maxLength: 5 }),
      cwd: text,
      env: fc.array(fc.uint8Array({ maxLength: 24 }), { maxLength: 8 }),
      limits,
      runAs: fc.option(fc.record({ user: text, group: text, root: text }), { nil: null }),
    })
    .map((m) => ({
      type: 'spawn' as const,
      id: m.id,
      token: Buffer.from(m.token),
      order: { file: m.file, argv: m.argv, cwd: m.cwd, env: m.env.map((entry) => Buffer.from(entry)), limits: m.limits, runAs: m.runAs },
    })),
  fc.record({ id, pid: fc.integer({ min: 0, max: 0xffffffff }) }).map((m) => ({ type: 'spawned' as const, ...m })),
  fc.record({ id, errno: text, message: text }).map((m) => ({ type: 'failed' as const, ...m })),
  fc.record({ id, signal: text }).map((m) => ({ type: 'signal' as const, ...m })),
  fc
    .record({
      id,
      code: fc.option(fc.integer({ min: 0, max: 255 }), { nil: null }),
      signal: fc.option(fc.string({ minLength: 1, maxLength: 10 }), { nil: null }),
    })
    .map((m) => ({ type: 'exited' as const, ...m })),
  text.map((m) => ({ type: 'error' as const, message: m })),
);

/** Strings survive as UTF-8: lone surrogates become U+FFFD, as they would on any UTF-8 wire. */
function normalise(value: CgidMessage): unknown {
  return JSON.parse(
    JSON.stringify(value, (_key, item: unknown) => (typeof item === 'string' ? Buffer.from(item, 'utf8').toString('utf8') : item)),
  );
}

test('decode(encode(message)) is the message, for every kind', () => {
  fc.assert(
    fc.property(message, (original) => {
      const { frames, error } = new FrameDecoder().push(encodeMessage(original));
      assert.equal(error, null);
      assert.equal(frames.length, 1);
      assert.deepEqual(normalise(decodeMessage(frames[0]!) as CgidMessage), normalise(original));
    }),
    { numRuns: 300 },
  );
});

test('any chunking of a stream of frames decodes to the same messages', () => {
  fc.assert(
    fc.property(
      fc.array(message, { minLength: 1, maxLength: 6 }),
      fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 50 }),
      (messages, cuts) => {
        const wire = Buffer.concat(messages.map(encodeMessage));
        const decoder = new FrameDecoder();
        const decoded: unknown[] = [];
        let offset = 0;
        for (let index = 0; offset < wire.length; index++) {
          const size = cuts[index % cuts.length]!;
          const { frames, error } = decoder.push(wire.subarray(offset, offset + size));
          assert.equal(error, null);
          for (const frame of frames) decoded.push(normalise(decodeMessage(frame) as CgidMessage));
          offset += size;
        }
        assert.deepEqual(decoded, messages.map(normalise));
        assert.equal(decoder.buffered, 0);
      },
    ),
    { numRuns: 200 },
  );
});

test('garbage never throws: the decoder and decodeMessage return errors', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: 255 }), (bytes, type) => {
      const result = new FrameDecoder().push(Buffer.from(bytes));
      for (const frame of result.frames) decodeMessage(frame);
      const decoded = decodeMessage({ type, id: 1, payload: Buffer.from(bytes) });
      assert.ok(typeof decoded === 'object');
    }),
    { numRuns: 500 },
  );
});

test('a frame with another magic, another version, or an oversized length is refused', () => {
  const good = encodeMessage({ type: 'error', message: 'x' });
  const badMagic = Buffer.from(good);
  badMagic[0] = 0x00;
  assert.match(new FrameDecoder().push(badMagic).error!.error, /not a cgid frame/);
  const badVersion = Buffer.from(good);
  badVersion[2] = CGID_PROTOCOL_VERSION + 1;
  assert.match(
    new FrameDecoder().push(badVersion).error!.error,
    new RegExp(`protocol version ${CGID_PROTOCOL_VERSION + 1}, this end speaks ${CGID_PROTOCOL_VERSION}`),
  );
  const huge = Buffer.from(good);
  huge.writeUInt32BE(0xffffffff, 8);
  assert.match(new FrameDecoder(1024).push(huge).error!.error, /exceeds the limit of 1024/);
  // Once failed, the decoder stays failed.
  const decoder = new FrameDecoder();
  decoder.push(badMagic);
  assert.ok(decoder.push(good).error);
});

test('a truncated payload, trailing bytes, and absurd list counts are errors, not exceptions', () => {
  const frame = new FrameDecoder().push(
    encodeMessage({
      type: 'spawn',
      id: 1,
      token: Buffer.alloc(4),
      order: { file: '/x', argv: ['/x'], cwd: '/', env: [], limits: NO_LIMITS, runAs: null },
    }),
  ).frames[0]!;
  assert.match(
    (decodeMessage({ ...frame, payload: frame.payload.subarray(0, frame.payload.length - 3) }) as { error: string }).error,
    /ends inside a field/,
  );
  assert.match(
    (decodeMessage({ ...frame, payload: Buffer.concat([frame.payload, Buffer.alloc(2)]) }) as { error: string }).error,
    /more than its fields/,
  );
  const absurd = Buffer.alloc(16);
  absurd.writeUInt32BE(0, 0); // empty token
  absurd.writeUInt32BE(0, 4); // empty file
  absurd.writeUInt32BE(0x7fffffff, 8); // argv count
  assert.match((decodeMessage({ type: 3, id: 1, payload: absurd }) as { error: string }).error, /ends inside a field/);
  assert.match((decodeMessage({ type: 99, id: 1, payload: Buffer.alloc(0) }) as { error: string }).error, /unknown cgid message type 99/);
});

test('limits must be whole numbers >= 0', () => {
  const encoded = encodeMessage({
    type: 'spawn',
    id: 1,
    token: Buffer.alloc(0),
    order: { file: '', argv: [], cwd: '', env: [], limits: { ...NO_LIMITS, cpuSeconds: -1 }, runAs: null },
  });
  const frame = new FrameDecoder().push(encoded).frames[0]!;
  assert.match((decodeMessage(frame) as { error: string }).error, /limit cpuSeconds is -1/);
});

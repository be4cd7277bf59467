/**
 * Bounded, seeded fuzzing of the worker library over real sockets: random
 * bytes and mutations of valid record streams. For every input the worker
 * process must stay alive and close (or finish with) the connection once the
 * peer has sent everything; afterwards a normal request is still served.
 * Set FUZZ_SEED / FUZZ_RUNS to replay or widen a run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import net from 'node:net';
import { encodeBeginRequest, encodeParamsRecords, encodeRecord, encodeAbortRequest, frameStream } from '../../src/fastcgi/records.js';
import { RecordType, Role } from '../../src/fastcgi/protocol.js';
import { tempDir } from '../kit/process.js';
import { startTestApp } from '../kit/worker-app.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import type { Address } from '../kit/process.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261123);
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);

function validStream(id: number, uri: string, body: Buffer, keepConn: boolean): Buffer {
  return Buffer.concat([
    encodeBeginRequest(id, Role.RESPONDER, keepConn),
    encodeParamsRecords(RecordType.PARAMS, id, [
      ['REQUEST_METHOD', 'POST'],
      ['REQUEST_URI', uri],
      ['CONTENT_LENGTH', String(body.length)],
    ]),
    encodeRecord(RecordType.PARAMS, id),
    ...frameStream(RecordType.STDIN, id, body),
    encodeRecord(RecordType.STDIN, id),
  ]);
}

const recordArbitrary = fc.oneof(
  fc
    .record({ id: fc.integer({ min: 0, max: 70000 }), keep: fc.boolean(), role: fc.integer({ min: 0, max: 5 }) })
    .map(({ id, keep, role }) => encodeBeginRequest(id & 0xffff, role as Role, keep)),
  fc.integer({ min: 0, max: 5 }).map((id) => encodeAbortRequest(id)),
  fc
    .record({ type: fc.integer({ min: 0, max: 255 }), id: fc.integer({ min: 0, max: 5 }), content: fc.uint8Array({ maxLength: 300 }) })
    .map(({ type, id, content }) => encodeRecord(type, id, content)),
  fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
);

const inputArbitrary = fc.oneof(
  // Pure garbage.
  fc.uint8Array({ maxLength: 2048 }).map((bytes) => Buffer.from(bytes)),
  // A sequence of plausible and implausible records.
  fc.array(recordArbitrary, { maxLength: 12 }).map((parts) => Buffer.concat(parts)),
  // A valid request with bytes flipped, cut or repeated.
  fc
    .record({
      body: fc.uint8Array({ maxLength: 3000 }),
      keep: fc.boolean(),
      flips: fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
      cut: fc.option(fc.nat()),
    })
    .map(({ body, keep, flips, cut }) => {
      const stream = Buffer.from(validStream(1, '/echo', Buffer.from(body), keep));
      for (const { at, value } of flips) stream[at % stream.length] = value;
      return cut === null ? stream : stream.subarray(0, cut % (stream.length + 1));
    }),
);

/** Sends the input, half-closes, and waits until the worker closes its side. */
async function feed(address: Address, input: Buffer): Promise<'closed' | 'hung'> {
  return new Promise((resolve) => {
    const socket = net.connect(address as net.NetConnectOpts);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('hung');
    }, 5000);
    socket.on('error', () => {});
    socket.on('data', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve('closed');
    });
    socket.on('connect', () => socket.end(input));
  });
}

test(`fuzz: random and mutated record streams never crash or hang the worker (seed ${SEED}, ${RUNS} runs)`, async (t) => {
  const dir = tempDir(t);
  const app = await startTestApp(t, dir);
  await fc.assert(
    fc.asyncProperty(inputArbitrary, async (input) => {
      const outcome = await feed(app.address, input);
      assert.equal(outcome, 'closed', `the worker kept the connection open after input ${input.toString('hex').slice(0, 200)}`);
      assert.equal(app.child.exitCode, null, `the worker exited: ${app.output()}`);
      // An event loop stuck in a parser would show here: a fresh request must still be answered.
      const probe = await RawFastCGIPeer.connect(app.address);
      try {
        probe.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/hello' });
        await probe.waitForEnd(1, { timeoutMs: 5000 });
      } finally {
        probe.close();
      }
    }),
    { seed: SEED, numRuns: RUNS, endOnFailure: true },
  );
  const peer = await RawFastCGIPeer.connect(app.address);
  t.after(() => peer.close());
  peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/hello' });
  await peer.waitForEnd(1);
  assert.match(peer.stdout(1).toString(), /hello from gatehouse/);
  assert.equal(app.child.exitCode, null);
});

/**
 * Property: whatever records the application cuts its STDOUT and STDERR into,
 * however they interleave and however the bytes are split across socket
 * writes (padding included), the client hands on exactly the bytes sent.
 * Seeded and bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { RecordDecoder } from '../../src/fastcgi/decoder.js';
import { encodeEndRequest, encodeHeader } from '../../src/fastcgi/records.js';
import { ProtocolStatus, RecordType } from '../../src/fastcgi/protocol.js';
import { tempDir } from '../kit/process.js';

interface Script {
  records: Array<{ stderr: boolean; content: Uint8Array; padding: number }>;
  /** Where the wire bytes are cut into separate socket writes (fractions of the total). */
  cuts: number[];
}

const scriptArbitrary: fc.Arbitrary<Script> = fc.record({
  records: fc.array(
    fc.record({
      stderr: fc.boolean(),
      content: fc.uint8Array({ minLength: 1, maxLength: 3000 }),
      padding: fc.integer({ min: 0, max: 255 }),
    }),
    {
      maxLength: 12,
    },
  ),
  cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 8 }),
});

test('any record split, padding and socket chunking of STDOUT/STDERR reaches the caller intact', async (t) => {
  const path = join(tempDir(t), 'app.sock');
  let current: Script | null = null;
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    const decoder = new RecordDecoder();
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk, (record) => {
        if (record.type !== RecordType.STDIN || record.content.length !== 0 || !current) return;
        const id = record.requestId;
        const parts: Buffer[] = [];
        for (const { stderr, content, padding } of current.records) {
          parts.push(
            encodeHeader(stderr ? RecordType.STDERR : RecordType.STDOUT, id, content.length, padding),
            Buffer.from(content),
            Buffer.alloc(padding, 0xee),
          );
        }
        parts.push(encodeEndRequest(id, 0, ProtocolStatus.REQUEST_COMPLETE));
        const wire = Buffer.concat(parts);
        const offsets = [...new Set(current.cuts.map((cut) => Math.floor(cut * wire.length)))].sort((a, b) => a - b);
        let previous = 0;
        const writeNext = (index: number) => {
          const end = index < offsets.length ? offsets[index]! : wire.length;
          socket.write(wire.subarray(previous, end));
          previous = end;
          // Separate turns of the event loop, so the client really sees separate chunks.
          if (index < offsets.length) setImmediate(() => writeNext(index + 1));
        };
        writeNext(0);
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => server.close());
  const client = new FastCGIClient({ address: `unix:${path}`, probe: false });
  t.after(() => client.close());

  await fc.assert(
    fc.asyncProperty(scriptArbitrary, async (script) => {
      current = script;
      const result = await client.fetchAll({ params: { REQUEST_METHOD: 'GET' } });
      const expectStdout = Buffer.concat(script.records.filter((record) => !record.stderr).map((record) => Buffer.from(record.content)));
      const expectStderr = Buffer.concat(script.records.filter((record) => record.stderr).map((record) => Buffer.from(record.content)));
      assert.ok(result.stdout.equals(expectStdout), 'stdout differs');
      assert.ok(result.stderr.equals(expectStderr), 'stderr differs');
    }),
    { seed: 20261123, numRuns: 60 },
  );
  // Every request ran on the one kept-alive connection: the stream state was clean after each.
  assert.equal(client.stats.opened, 1);
});

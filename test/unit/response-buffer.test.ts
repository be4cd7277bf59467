/**
 * The FastCGI response buffer (src/http/response-buffer.ts): bytes in order
 * through memory, the temporary file and memory again; the source paused
 * once both bounds are reached and resumed when the reader caught up; the
 * temporary file never visible in its directory; destroying the buffer
 * destroys an unfinished source (which aborts the FastCGI request).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { ResponseBuffer } from '../../src/http/response-buffer.js';

function chunks(count: number, size: number): Buffer[] {
  return Array.from({ length: count }, () => randomBytes(size));
}

/** A source that gives its chunks as fast as they are asked for. */
function sourceOf(parts: Buffer[]): Readable {
  let next = 0;
  return new Readable({
    read() {
      this.push(next < parts.length ? parts[next++]! : null);
    },
  });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const received: Buffer[] = [];
  for await (const chunk of stream) received.push(chunk as Buffer);
  return Buffer.concat(received);
}

function tempDirectory(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-response-buffer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the whole response is read from the source before the reader takes any, and comes out in order', async (t) => {
  const parts = chunks(200, 1000);
  const source = sourceOf(parts);
  const directory = tempDirectory(t);
  const buffer = new ResponseBuffer(source, { memoryBytes: 4096, maxTempFileBytes: 1024 * 1024, directory }, Buffer.from('first'));
  await once(source, 'end');
  assert.ok(buffer.bufferedBytes > 4096, 'most of it waits in the file');
  const received: Buffer[] = [];
  let length = 0;
  let checked = false;
  for await (const chunk of buffer) {
    received.push(chunk as Buffer);
    length += (chunk as Buffer).length;
    // Bytes past memory came back from the file, which was unlinked as soon as it was opened.
    if (length > 8192 && !checked) {
      assert.deepEqual(readdirSync(directory), [], 'the temporary file has no name');
      checked = true;
    }
  }
  assert.ok(checked);
  assert.ok(Buffer.concat(received).equals(Buffer.concat([Buffer.from('first'), ...parts])));
});

test('past memory and the file bound the source is paused, and resumed once the reader caught up', async () => {
  const parts = chunks(64, 1024);
  const source = sourceOf(parts);
  const buffer = new ResponseBuffer(source, { memoryBytes: 1024, maxTempFileBytes: 8192 });
  await once(source, 'pause');
  assert.equal(source.readableEnded, false);
  assert.ok(buffer.bufferedBytes <= 1024 + 8192 + 1024, `bounded (${buffer.bufferedBytes} bytes kept)`);
  assert.ok((await readAll(buffer)).equals(Buffer.concat(parts)), 'everything, in order, across several rounds of the file');
});

test('without a temporary file, memory is the bound', async () => {
  const parts = chunks(32, 1024);
  const source = sourceOf(parts);
  const buffer = new ResponseBuffer(source, { memoryBytes: 4096, maxTempFileBytes: 0 });
  await once(source, 'pause');
  assert.ok(buffer.bufferedBytes <= 4096 + 1024);
  assert.ok((await readAll(buffer)).equals(Buffer.concat(parts)));
});

test('destroying the buffer before the source ended destroys the source (the FastCGI request is aborted)', async () => {
  const source = new Readable({ read() {} });
  source.push(Buffer.alloc(100));
  const buffer = new ResponseBuffer(source, { memoryBytes: 1024, maxTempFileBytes: 0 });
  buffer.destroy();
  await once(buffer, 'close');
  assert.equal(source.destroyed, true);
});

test("an error of the source is the reader's error", async () => {
  const source = new Readable({ read() {} });
  const buffer = new ResponseBuffer(source, { memoryBytes: 1024, maxTempFileBytes: 0 });
  source.destroy(new Error('upstream failed'));
  await assert.rejects(readAll(buffer), /upstream failed/);
});

/**
 * Regression (found by the soak test on Node 22): a script's body of more
 * than 64 KiB that arrived within one turn of the event loop, in several
 * chunks, hung for good. pipeCgiBody corked the ServerResponse to send small
 * responses in one writev; from Node 22 a corked response keeps chunked
 * writes in a buffer of its own and write() answers false once that buffer
 * holds a high-water mark (64 KiB), but uncork() hands the chunks to the
 * socket one by one, and when the kernel takes each at once the socket
 * emits no 'drain', so neither does the response: the body stayed paused with
 * nothing waiting to be sent (so the send timeout did not see it either).
 *
 * Deterministic: the body pushes its chunks in the same turn as the head, to
 * a client that reads everything; the kernel's loopback buffers take each.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeCgiBody } from '../../src/cgi/http-response.js';
import { waitFor } from '../kit/wait.js';

const CHUNK_BYTES = 16 * 1024;
const CHUNKS = 8;

test('a chunked body of 128 KiB pushed in one turn reaches a reading client whole (no drain lost on Node 22+)', async (t) => {
  const outcomes: Array<Error | null> = [];
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    const body = new Readable({ read() {} });
    // All in this turn, as several reads of a script's stdout can be: the pipe drains faster than the client.
    for (let i = 0; i < CHUNKS; i++) body.push(Buffer.alloc(CHUNK_BYTES, 0x61 + i));
    body.push(null);
    pipeCgiBody(body, res, { kind: 'document', status: 200, headers: [] }, (error) => outcomes.push(error));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  let received = 0;
  let ended = false;
  const request = http.get({ host: '127.0.0.1', port, path: '/' }, (response) => {
    assert.equal(response.headers['transfer-encoding'], 'chunked');
    response.on('data', (chunk: Buffer) => (received += chunk.length));
    response.on('end', () => (ended = true));
  });
  request.on('error', () => {});
  t.after(() => request.destroy());
  await waitFor(() => ended, 'the whole body', {
    timeoutMs: 10_000,
    context: () => `${received} of ${CHUNK_BYTES * CHUNKS} bytes received; pipeCgiBody finished: ${outcomes.length > 0}`,
  });
  assert.equal(received, CHUNK_BYTES * CHUNKS);
  await waitFor(() => outcomes.length > 0, 'pipeCgiBody to report the end', { timeoutMs: 10_000 });
  assert.deepEqual(outcomes, [null]);
});

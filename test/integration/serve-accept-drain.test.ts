/**
 * Issue 17, fair under load: libuv accepts one connection per turn of the
 * event loop, so a burst of connections that arrived while the loop was busy
 * used to be accepted one turn at a time (seconds under load).
 * drainAcceptQueue() takes the queued ones in the same turn, in order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { spawnSync } from 'node:child_process';
import { drainAcceptQueue } from '../../src/http/accept-drain.js';
import { waitFor } from '../kit/wait.js';

test('connections queued while the loop was busy are all accepted in one turn, and served', async (t) => {
  const server = http.createServer((req, res) => res.end(`hello ${req.url}`));
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1', backlog: 511 }, resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  assert.equal(await drainAcceptQueue(server), true);
  const { port } = server.address() as net.AddressInfo;
  const count = 40;
  const turns: number[] = [];
  let turn = 0;
  const nextTurn = () => {
    turn++;
    if (turns.length < count) setImmediate(nextTurn);
  };
  server.on('connection', () => {
    turns.push(turn);
    if (turns.length === 1) setImmediate(nextTurn);
  });
  // A child connects `count` times and sends a request on each while this process is blocked in spawnSync:
  // the kernel completes the handshakes, and the connections wait in the accept queue.
  const client = spawnSync(
    process.execPath,
    [
      '-e',
      `const net = require('node:net'); let open = 0;
       for (let i = 0; i < ${count}; i++) {
         const s = net.connect(${port}, '127.0.0.1', () => { s.write('GET /' + i + ' HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); if (++open === ${count}) setTimeout(() => process.exit(0), 50); });
       }`,
    ],
    { timeout: 10_000 },
  );
  assert.equal(client.status, 0, client.stderr?.toString());
  await waitFor(() => turns.length === count, `all ${count} connections to be accepted`, { context: () => `accepted ${turns.length}` });
  assert.ok(
    turns.every((seen) => seen === 0),
    `all accepted in the first turn, not one per turn (turns: ${turns.join(',')})`,
  );
  const answer = await fetch(`http://127.0.0.1:${port}/after`).then((response) => response.text());
  assert.equal(answer, 'hello /after', 'connections accepted by the drain are served like the others');
});

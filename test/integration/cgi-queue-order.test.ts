/**
 * Issue 17, fair under load: requests waiting for a script slot start in the
 * order they arrived, and the queue's depth and oldest wait are visible
 * (stats(), and a warning through onPressure when it is long).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, chmodSync, mkdirSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { cgi } from '../../src/cgi/handler.js';
import { ScriptLimiter } from '../../src/cgi/limiter.js';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { waitFor } from '../kit/wait.js';

test('with max-scripts 1, queued requests start their scripts in arrival order', async (t) => {
  const root = tempDir(t, 'gatehouse-queue-order-');
  const bin = join(root, 'cgi-bin');
  mkdirSync(bin);
  const order = join(root, 'order');
  const gate = join(root, 'gate');
  execFileSync('mkfifo', [gate]);
  writeFileSync(order, '');
  // Each run notes its request number; the first holds its slot until the test opens the gate.
  writeFileSync(
    join(bin, 'note.sh'),
    `#!/bin/sh\necho "$QUERY_STRING" >> ${order}\nif [ "$QUERY_STRING" = 0 ]; then read line < ${gate}; fi\nprintf 'Content-Type: text/plain\\n\\n%s\\n' "$QUERY_STRING"\n`,
  );
  chmodSync(join(bin, 'note.sh'), 0o755);
  const handler = cgi({
    documentRoot: root,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: bin }],
    maxConcurrentScripts: 1,
    maxQueuedScripts: 64,
    errorLog: () => {},
  });
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;

  const answers: Array<Promise<string>> = [];
  answers.push(httpRequest(`${base}/cgi-bin/note.sh?0`).then((result) => result.body.toString().trim()));
  await waitFor(() => readFileSync(order, 'utf8') === '0\n', 'the first script to run and hold the only slot');
  const queued = 12;
  for (let index = 1; index <= queued; index++) {
    answers.push(httpRequest(`${base}/cgi-bin/note.sh?${index}`).then((result) => result.body.toString().trim()));
    // Each request is in the queue before the next one is sent: arrival order is known.
    await waitFor(() => handler.limiter.queued === index, `request ${index} to wait in the queue`);
  }
  const stats = handler.limiter.stats();
  assert.equal(stats.queued, queued);
  assert.equal(stats.running, 1);
  assert.ok(stats.oldestWaitMs >= 0);
  // Opening the fifo for writing releases the first script; the others then run one at a time.
  closeSync(openSync(gate, 'w'));
  const bodies = await Promise.all(answers);
  assert.deepEqual(
    bodies,
    Array.from({ length: queued + 1 }, (_, index) => String(index)),
  );
  const started = readFileSync(order, 'utf8').trim().split('\n');
  assert.deepEqual(
    started,
    Array.from({ length: queued + 1 }, (_, index) => String(index)),
    'scripts started in the order the requests arrived',
  );
  const after = handler.limiter.stats();
  assert.equal(after.queued, 0);
  assert.equal(after.grantedAfterWait, queued);
});

test('ScriptLimiter: a slot freed goes to the oldest waiter; a waiter that gives up leaves no gap; pressure is reported', async () => {
  const limiter = new ScriptLimiter(1, 4);
  const pressure: number[] = [];
  limiter.onPressure = (stats) => pressure.push(stats.queued);
  const first = limiter.tryAcquire();
  assert.ok(first);
  assert.equal(limiter.tryAcquire(), null, 'no slot while one runs');
  const leaving = new AbortController();
  const granted: string[] = [];
  const note = (name: string) => (release: (() => void) | null) => {
    granted.push(release ? name : `${name} gave up`);
    return release;
  };
  const a = limiter.acquire().then(note('a'));
  const b = limiter.acquire(leaving.signal).then(note('b'));
  const c = limiter.acquire().then(note('c'));
  assert.deepEqual(pressure, [2], 'half of max-queued-scripts waiting: reported once');
  leaving.abort();
  assert.equal(await b, null);
  assert.equal(limiter.queued, 2);
  assert.equal(limiter.tryAcquire(), null, 'a newcomer does not overtake the waiters');
  first();
  const releaseA = await a;
  releaseA!();
  const releaseC = await c;
  releaseC!();
  assert.deepEqual(granted, ['b gave up', 'a', 'c']);
  const stats = limiter.stats();
  assert.equal(stats.queued, 0);
  assert.equal(stats.running, 0);
  assert.equal(stats.granted, 3);
  assert.equal(stats.grantedAfterWait, 2);
});

/**
 * Regression (issue 15, item 1, FastCGI half; issue 16, item 9): with a
 * FastCGI route to php-fpm (pm.max_children = 2, max-connections = 2), two
 * clients that never read a 10 MiB page stopped the whole pool, where nginx
 * frees php-fpm at once because it buffers the response.
 *
 *  - buffering on (the default): both pages are read whole from php-fpm
 *    (each run marks its end), other requests are served with the clients
 *    still not reading, and the clients get every byte when they read at last;
 *  - buffering off: php-fpm is held by the non-readers until the send timeout
 *    closes them, and only then is another request served;
 *  - X-Accel-Buffering: no from the application streams its response where
 *    buffering is on (held like buffering off), and an SSE-like page's first
 *    event arrives before the page ends; the header is not passed on.
 *
 * Real php-fpm and the real `gatehouse serve`, clients with a 4 KiB receive
 * buffer (test/kit/non-reader.ts); every wait is for an event, bounded.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { openNonReader } from '../kit/non-reader.js';
import { waitForText, waitForValue } from '../kit/wait.js';
import { startServe } from '../kit/serve-logged.js';

const BOUND_MS = 25_000;
const PAGE_BYTES = 10 * 1024 * 1024;

/** php-fpm with 2 children, and gatehouse serve in front with a [[fastcgi]] route for .php. */
async function startSite(t: TestContext, route: string, flags: string[]) {
  const dir = tempDir(t, 'gatehouse-fcgi-buffering-');
  const marks = join(dir, 'marks');
  mkdirSync(marks);
  // Each run marks its start and (for big pages) its end, so the test waits for php-fpm itself.
  const bigPage = (accel: boolean) => `<?php
file_put_contents('${marks}/started-' . getmypid() . '-' . uniqid(), '');
header('Content-Type: application/octet-stream');
${accel ? "header('X-Accel-Buffering: no');" : ''}
$chunk = str_repeat('x', 65536);
for ($i = 0; $i < ${PAGE_BYTES / 65536}; $i++) echo $chunk;
file_put_contents('${marks}/ended-' . getmypid() . '-' . uniqid(), '');
`;
  const fpm = await startPhpFpm(t, {
    children: 2,
    scripts: {
      'big.php': bigPage(false),
      'accel.php': bigPage(true),
      'small.php': `<?php header('Content-Type: text/plain'); echo "small\\n";`,
      'events.php': `<?php
header('Content-Type: text/event-stream');
header('X-Accel-Buffering: no');
echo "data: first\\n\\n";
flush();
for ($i = 0; $i < 400 && !file_exists('${marks}/go'); $i++) usleep(50000);
echo "data: last\\n\\n";
`,
    },
  });
  const config = join(dir, 'gatehouse.toml');
  writeFileSync(
    config,
    `[[fastcgi]]
extensions = [".php"]
upstreams = ["${fpm.addressString}"]
root = "${fpm.docRoot}"
max-connections = 2
${route}
`,
  );
  const site = await startServe(t, ['--config', config, ...flags]);
  const marked = (kind: 'started' | 'ended') => readdirSync(marks).filter((name) => name.startsWith(`${kind}-`)).length;
  return { site, marks, marked, base: `http://127.0.0.1:${site.port}` };
}

const pageRequest = (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`;

test('buffering on: two clients that never read a 10 MiB page leave php-fpm free, and get the whole page when they read', async (t) => {
  // A send timeout far beyond the test: only buffering can free php-fpm here.
  const { site, marked, base } = await startSite(t, '', ['--send-timeout', '1h']);
  const readers = [await openNonReader(t, site.port, pageRequest('/big.php')), await openNonReader(t, site.port, pageRequest('/big.php'))];
  // Both runs wrote their whole page while their clients read nothing.
  assert.equal(
    await waitForValue(
      () => marked('ended'),
      (count) => count === 2,
      'both PHP runs to end while their clients read nothing',
      { timeoutMs: BOUND_MS },
    ),
    2,
    `both pages were read whole\n${site.log()}`,
  );
  const other = await httpRequest(`${base}/small.php`, { timeoutMs: BOUND_MS });
  assert.equal(other.status, 200);
  assert.equal(other.body.toString(), 'small\n');
  for (const reader of readers) {
    const { bytes, status, tail } = await reader.drain();
    assert.equal(status, 200);
    // The page, its head and the chunked framing (php-fpm sends no Content-Length), ending with the last chunk.
    assert.ok(bytes > PAGE_BYTES && bytes < PAGE_BYTES + 64 * 1024, `the whole page came (${bytes} bytes)`);
    assert.ok(
      tail.toString('latin1').endsWith('x\r\n0\r\n\r\n'),
      `the page ended as a whole chunked body: ${JSON.stringify(tail.toString('latin1'))}`,
    );
  }
});

/** Two non-readers of `path` hold both php-fpm children; another request is then answered only after the send timeout freed one. */
async function heldUntilSendTimeout(t: TestContext, path: string, route: string): Promise<void> {
  const { site, marked, base } = await startSite(t, route, ['--send-timeout', '2s']);
  await openNonReader(t, site.port, pageRequest(path));
  await openNonReader(t, site.port, pageRequest(path));
  assert.equal(
    await waitForValue(
      () => marked('started'),
      (count) => count === 2,
      'both PHP runs to start',
      { timeoutMs: BOUND_MS },
    ),
    2,
    'both runs started',
  );
  const other = await httpRequest(`${base}/small.php`, { timeoutMs: BOUND_MS });
  assert.equal(other.status, 200);
  // Causal order: php-fpm had no free child before a send timeout closed a non-reader (and its request was aborted).
  // The line is written in a batch after the timeout, so it can land after the answer to `other`: waited for.
  await waitForText(site.errorLog, new RegExp(`send timeout: .*answering GET ${path.replace('.', '\\.')}`), 'the send timeout logged');
}

test('buffering = false: php-fpm is held by clients that never read until the send timeout closes them', async (t) => {
  await heldUntilSendTimeout(t, '/big.php', 'buffering = false');
});

test('X-Accel-Buffering: no streams the response where buffering is on: php-fpm waits for the client', async (t) => {
  await heldUntilSendTimeout(t, '/accel.php', '');
});

test('X-Accel-Buffering: no: an event stream delivers its first event before the page ends, without the header', async (t) => {
  const { base, marks } = await startSite(t, '', []);
  const { headers, body } = await new Promise<{ headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = http.get(`${base}/events.php`, { timeout: BOUND_MS }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        // The page waits for this file before it ends: the first event came while it was still running.
        if (text.includes('data: first')) writeFileSync(join(marks, 'go'), '');
      });
      res.on('end', () => resolve({ headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('events.php timed out')));
    req.on('error', reject);
  });
  assert.equal(body, 'data: first\n\ndata: last\n\n');
  assert.match(headers['content-type'] ?? '', /^text\/event-stream/);
  assert.equal(headers['x-accel-buffering'], undefined, 'the header is for the front, not the client');
});

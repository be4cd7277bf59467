/**
 * Regression: while a client held a large response from a FastCGI application
 * unread, the next request to the same application was multiplexed onto the
 * held connection (the worker library says FCGI_MPXS_CONNS=1) and waited
 * behind it, for as long as the slow reader took: FastCGI has no flow control
 * per request, so a connection paused for one reader pauses every request on it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { httpRequest } from '../kit/http.js';
import { tempDir } from '../kit/process.js';
import { startGatehouse } from '../kit/serve.js';
import { appHeldUp, startTestApp } from '../kit/worker-app.js';

test('a request to an application whose other response is held unread is answered at once, not queued behind it', async (t) => {
  const dir = tempDir(t, 'gatehouse-regress-held-');
  const app = await startTestApp(t, dir);
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `access-log = "off"
[[fastcgi]]
url = "/app/"
upstreams = ["unix:${(app.address as { path: string }).path}"]
script-filename = "${join(dir, 'app.js')}"
# Streamed, not buffered: the held response must hold the application's connection for this regression to mean anything.
buffering = false
`,
  );
  const server = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')]);
  const total = 50 * 1024 * 1024;
  const held = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get(`${server.base}/app/stream?mb=50`, { agent: false }, resolve).on('error', reject),
  );
  held.pause();
  // The held response has filled every buffer between the app and the client: its connection is stalled.
  const stalled = await appHeldUp(app.address, total);
  assert.ok(stalled.streamedBytes < total, 'nothing held the app up');
  const next = await httpRequest(`${server.base}/app/hello`, { timeoutMs: 10_000 });
  assert.equal(next.status, 200);
  assert.equal(next.body.toString(), 'hello from gatehouse\n');
  // Let go of the held response before the server is stopped: a stopping server gives a response in flight its grace period.
  held.destroy();
});

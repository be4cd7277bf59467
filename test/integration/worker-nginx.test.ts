/**
 * nginx fastcgi_pass -> the gatehouse worker library, with real nginx started
 * on loopback: GET with a query, a 10 MB POST, a 100 MB streamed response with
 * the worker's memory bounded, HEAD, and a request the client abandons.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { startNginx, NGINX_FASTCGI_PARAMS } from '../kit/nginx.js';
import { rssBytes, tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { appHeldUp, startTestApp } from '../kit/worker-app.js';
import { waitFor, waitForText } from '../kit/wait.js';

async function setup(t: Parameters<typeof tempDir>[0], extra = '') {
  const dir = tempDir(t);
  const app = await startTestApp(t, dir);
  const socket = 'path' in app.address ? app.address.path : '';
  const nginx = await startNginx(t, {
    serverBlock: `
      location / {
        ${NGINX_FASTCGI_PARAMS}
        fastcgi_param SCRIPT_FILENAME /srv$fastcgi_script_name;
        fastcgi_pass unix:${socket};
        ${extra}
      }`,
  });
  return { app, nginx };
}

async function stats(url: string): Promise<{ requests: number; aborted: number; completed: number; rss: number }> {
  const res = await httpRequest(`${url}/stats`);
  return JSON.parse(res.body.toString());
}

test('nginx -> worker: GET with a query string reaches the handler as method, url, headers and params', async (t) => {
  const { nginx } = await setup(t);
  const res = await httpRequest(`${nginx.url}/env?a=1&b=%C3%A9`, { headers: { 'X-Test-Header': 'yes' } });
  assert.equal(res.status, 200);
  const body = JSON.parse(res.body.toString());
  assert.equal(body.method, 'GET');
  assert.equal(body.url, '/env?a=1&b=%C3%A9');
  assert.equal(body.params.QUERY_STRING, 'a=1&b=%C3%A9');
  assert.equal(body.params.SCRIPT_FILENAME, '/srv/env');
  assert.equal(body.headers['x-test-header'], 'yes');
  assert.equal(body.role, 1);
});

test('nginx -> worker: a 10 MB POST body arrives whole and in order', async (t) => {
  const { nginx } = await setup(t);
  const payload = randomBytes(10 * 1024 * 1024);
  const res = await httpRequest(`${nginx.url}/count`, {
    method: 'POST',
    body: payload,
    headers: { 'Content-Type': 'application/octet-stream' },
  });
  assert.equal(res.status, 200);
  const body = JSON.parse(res.body.toString());
  assert.equal(body.bytes, payload.length);
  assert.equal(body.contentLength, String(payload.length));
  assert.equal(body.sha256, createHash('sha256').update(payload).digest('hex'));
});

// No echo (req.pipe(res)) of a large body here: nginx stops sending the
// request body once the response head arrives, so an app that answers before
// reading its whole body waits forever for the rest (measured: 60 kB echoes,
// 200 kB times out). Full-duplex echo is tested with the gatehouse client.

test('nginx -> worker: a 100 MB streamed response keeps the worker memory bounded', async (t) => {
  // Unbuffered, so a client that does not read pushes back through nginx to the worker.
  const { nginx, app } = await setup(t, 'fastcgi_buffering off;');
  const before = rssBytes(app.pid);
  let peak = before;
  const sampler = setInterval(() => {
    try {
      peak = Math.max(peak, rssBytes(app.pid));
    } catch {
      /* process gone: the assertions below will say so */
    }
  }, 20);
  t.after(() => clearInterval(sampler));
  const total = 100 * 1024 * 1024;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get(`${nginx.url}/stream?mb=100`, { agent: false }, resolve).on('error', reject),
  );
  res.pause();
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-length'], String(total));
  // Read nothing until the whole pipeline is full and the worker held up by it: that is when memory would pile up.
  const held = await appHeldUp(app.address, total);
  assert.ok(held.streamedBytes < total, 'the worker wrote all 100 MiB while the client read nothing');
  peak = Math.max(peak, rssBytes(app.pid));
  let received = 0;
  res.on('data', (chunk: Buffer) => (received += chunk.length));
  res.resume();
  await new Promise((resolve, reject) => res.on('end', resolve).on('error', reject));
  clearInterval(sampler);
  assert.equal(received, total);
  const growth = peak - before;
  assert.ok(
    growth < 48 * 1024 * 1024,
    `worker RSS grew by ${(growth / 1048576).toFixed(1)} MiB while streaming 100 MiB (from ${(before / 1048576).toFixed(1)} MiB)`,
  );
});

test('nginx -> worker: HEAD gets the head and no body', async (t) => {
  const { nginx } = await setup(t);
  const res = await httpRequest(`${nginx.url}/hello`, { method: 'HEAD' });
  assert.equal(res.status, 200);
  assert.equal(res.headers['content-type'], 'text/plain');
  assert.equal(res.body.length, 0);
});

test('nginx -> worker: a request the client abandons midway is aborted in the worker, which keeps serving', async (t) => {
  const { nginx } = await setup(t, 'fastcgi_buffering off;');
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${nginx.url}/forever`, { agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > 1024 * 1024) {
          req.destroy();
          resolve();
        }
      });
    });
    req.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve() : reject(error)));
  });
  // nginx closes the FastCGI connection once it notices; the worker must see the abort.
  const counters = await waitFor(async () => {
    const now = await stats(nginx.url);
    return now.aborted > 0 && now;
  }, 'the worker to see the request aborted');
  assert.equal(counters.aborted, 1, `worker counters: ${JSON.stringify(counters)}`);
  const res = await httpRequest(`${nginx.url}/hello`);
  assert.equal(res.status, 200);
  assert.equal(res.body.toString(), 'hello from gatehouse\n');
});

test('nginx -> worker: a throwing handler becomes a 500 and its message reaches nginx error log via FCGI_STDERR', async (t) => {
  const { nginx } = await setup(t);
  const res = await httpRequest(`${nginx.url}/throw`);
  assert.equal(res.status, 500);
  const again = await httpRequest(`${nginx.url}/hello`);
  assert.equal(again.status, 200);
  await waitForText(nginx.errorLog, 'the test handler threw on purpose', "the handler's error in nginx's error log");
});

test('nginx -> worker with fastcgi_keep_conn: many requests over kept connections', async (t) => {
  const dir = tempDir(t);
  const app = await startTestApp(t, dir);
  const socket = 'path' in app.address ? app.address.path : '';
  const nginx = await startNginx(t, {
    httpBlock: `upstream app { server unix:${socket}; keepalive 4; }`,
    serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_keep_conn on; fastcgi_pass app; }`,
  });
  for (let i = 0; i < 50; i++) {
    const res = await httpRequest(`${nginx.url}/hello?i=${i}`);
    assert.equal(res.status, 200);
  }
  const post = await httpRequest(`${nginx.url}/count`, { method: 'POST', body: Buffer.alloc(200_000, 1) });
  assert.equal(JSON.parse(post.body.toString()).bytes, 200_000);
  const counters = await stats(nginx.url);
  assert.equal(counters.requests, 52);
});

/**
 * gatehouse's FastCGI client against gatehouse's own worker library: the one
 * pairing where the application says FCGI_MPXS_CONNS=1, so several requests
 * share one connection, and where ABORT_REQUEST reaches the handler.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { once } from 'node:events';
import { FastCGIClient, ErrorCode, type UpstreamError } from '../../src/fastcgi/client/index.js';
import { createServer, type RequestHandler } from '../../src/fastcgi/index.js';
import { tempDir, type Cleanup } from '../kit/process.js';
import { countingProxy } from '../kit/counting-proxy.js';
import { waitFor } from '../kit/wait.js';

async function startWorker(t: Cleanup, handler: RequestHandler): Promise<string> {
  const path = join(tempDir(t), 'worker.sock');
  const server = createServer(handler, { handleSignals: false });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return path;
}

function newClient(t: Cleanup, address: string, options: Partial<ConstructorParameters<typeof FastCGIClient>[0]> = {}): FastCGIClient {
  const client = new FastCGIClient({ address, ...options });
  t.after(() => client.close());
  return client;
}

const get = (uri: string) => ({ REQUEST_METHOD: 'GET', REQUEST_URI: uri, SCRIPT_NAME: uri, QUERY_STRING: '', SERVER_PROTOCOL: 'HTTP/1.1' });

test('worker: five concurrent requests multiplexed on ONE connection', async (t) => {
  const concurrent = 5;
  const waiting: Array<() => void> = [];
  const requestIds: number[] = [];
  const path = await startWorker(t, async (req, res) => {
    requestIds.push(req.requestId);
    // Nobody is answered until all five are in the handler at once: only multiplexing gets there over one connection.
    await new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === concurrent) for (const release of waiting) release();
    });
    res.setHeader('Content-Type', 'text/plain');
    res.end(`answer for ${req.url}`);
  });
  const proxy = await countingProxy(t, path);
  const client = newClient(t, proxy.address);
  const capabilities = await client.capabilities();
  assert.equal(capabilities?.multiplexes, true);
  const acceptedByProbe = proxy.accepted();
  const results = await Promise.all(Array.from({ length: concurrent }, (_, i) => client.fetchAll({ params: get(`/r${i}`) })));
  for (const [i, result] of results.entries()) assert.match(result.stdout.toString(), new RegExp(`\r\n\r\nanswer for /r${i}$`));
  assert.equal(proxy.accepted() - acceptedByProbe, 1, 'all requests should have shared one connection');
  assert.deepEqual([...requestIds].sort(), [1, 2, 3, 4, 5]);
});

test('worker: an abort mid-response reaches the handler as req "aborted", and the connection is kept', async (t) => {
  let sawAbort!: () => void;
  const aborted = new Promise<void>((resolve) => (sawAbort = resolve));
  let resClosedEarly = false;
  const path = await startWorker(t, (req, res) => {
    if (req.url === '/slow') {
      req.on('aborted', () => sawAbort());
      res.on('close', () => (resClosedEarly = !res.writableFinished));
      res.write('first part\n');
      return; // never ends on its own
    }
    res.end('fine');
  });
  const client = newClient(t, `unix:${path}`, { abortGraceMs: 5000 });
  await client.capabilities();
  const controller = new AbortController();
  const response = client.request({ params: get('/slow'), signal: controller.signal });
  response.on('error', () => {});
  const first = (await once(response, 'data'))[0] as Buffer;
  assert.match(first.toString(), /first part/);
  controller.abort();
  await assert.rejects(response.completion, (error: UpstreamError) => error.code === ErrorCode.REQUEST_ABORTED);
  await aborted;
  assert.ok(resClosedEarly, 'the handler`s response closed without finishing');
  // The worker ended the aborted request with END_REQUEST, so its connection went back to the pool.
  await waitFor(() => client.stats.idle === 1, 'the connection back in the pool');
  const next = await client.fetchAll({ params: get('/next') });
  assert.match(next.stdout.toString(), /fine$/);
  assert.equal(client.stats.opened, 1);
});

test('worker: destroying the response stream aborts the request too', async (t) => {
  let sawAbort!: () => void;
  const aborted = new Promise<void>((resolve) => (sawAbort = resolve));
  const path = await startWorker(t, (req, res) => {
    req.on('aborted', () => sawAbort());
    res.write('x'.repeat(1000));
  });
  const client = newClient(t, `unix:${path}`);
  const response = client.request({ params: get('/stream') });
  await once(response, 'data');
  response.destroy();
  await aborted;
  await assert.rejects(response.completion, (error: UpstreamError) => error.code === ErrorCode.REQUEST_ABORTED);
});

test('worker: a client that does not read stops the worker`s res.write() (backpressure end to end)', async (t) => {
  const total = 16 * 1024 * 1024;
  let sent = 0;
  let waitingForDrain = false;
  const path = await startWorker(t, async (_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 'y');
    while (sent < total) {
      sent += chunk.length;
      if (!res.write(chunk)) {
        waitingForDrain = true;
        await once(res, 'drain');
        waitingForDrain = false;
      }
    }
    res.end();
  });
  const client = newClient(t, `unix:${path}`);
  const response = client.request({ params: get('/big') });
  // Read nothing until the worker is held up: waiting for 'drain' with nothing more written between two looks
  // (the event loop ran in between: a client that kept reading would have let it write on). Or until it wrote
  // everything, which only a client without backpressure allows.
  let previous = -1;
  await waitFor(() => {
    const stuck = waitingForDrain && sent === previous;
    previous = sent;
    return stuck || sent >= total;
  }, 'the worker to be held up by the unread response');
  assert.ok(sent < total, 'the worker wrote all 16 MiB while the client read nothing');
  assert.ok(response.readableLength <= 512 * 1024, `client buffered ${response.readableLength} bytes`);
  let received = 0;
  for await (const chunk of response) received += (chunk as Buffer).length;
  await response.completion;
  assert.ok(received > total, `received ${received}`);
});

test('worker: filter role sends FCGI_DATA after STDIN; authorizer role reaches the handler', async (t) => {
  const path = await startWorker(t, async (req, res) => {
    const body: Buffer[] = [];
    for await (const chunk of req) body.push(chunk as Buffer);
    const data: Buffer[] = [];
    if (req.data) for await (const chunk of req.data) data.push(chunk as Buffer);
    res.end(`role=${req.role} stdin=${Buffer.concat(body).toString()} data=${Buffer.concat(data).toString()}`);
  });
  const client = newClient(t, `unix:${path}`);
  const filtered = await client.fetchAll({
    params: { ...get('/filter'), CONTENT_LENGTH: '5', FCGI_DATA_LENGTH: '9' },
    role: 'filter',
    body: 'input',
    data: (async function* () {
      yield 'file ';
      yield 'body';
    })(),
  });
  assert.match(filtered.stdout.toString(), /role=3 stdin=input data=file body$/);
  const authorized = await client.fetchAll({ params: get('/auth'), role: 'authorizer' });
  assert.match(authorized.stdout.toString(), /role=2 stdin= data=$/);
});

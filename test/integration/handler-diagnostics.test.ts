/**
 * The cgi() and fastcgi() handlers' node:diagnostics_channel events, seen by
 * a subscriber as an APM tool would see them: create, headers (with the
 * status sent), then trailers (the response ended) or error (with its stable
 * code), on one request object per request; real scripts and a real FastCGI
 * application behind a node:http server; and a request cgi() passes on to
 * the next handler makes no events. The FastCGI client's own events
 * (gatehouse:fastcgi-client:request:*) the same way, against real
 * applications: the worker library's test app and gatehouse cgid --fastcgi
 * (whose END_REQUEST carries the script's exit status).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cgi } from '../../src/cgi/handler.js';
import { cgiChannels, type ClientRequestInfo, clientChannels, fastcgiChannels, type HandlerRequestInfo } from '../../src/diagnostics.js';
import { FastCGIClient, type UpstreamError } from '../../src/fastcgi/client/index.js';
import { fastcgi } from '../../src/http/fastcgi-handler.js';
import { httpRequest } from '../kit/http.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { startTestApp } from '../kit/worker-app.js';
import { waitFor } from '../kit/wait.js';

const fixtures = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));

interface Seen {
  event: 'create' | 'headers' | 'trailers' | 'error';
  request: HandlerRequestInfo;
  status?: number;
  code?: string;
}

/** Every event of both handlers, in order, until the test ends. */
function subscribe(t: TestContext): { seen: Seen[]; ended: (url: string) => Promise<Seen[]> } {
  const seen: Seen[] = [];
  const record = (entry: Seen) => void seen.push(entry);
  for (const channels of [cgiChannels, fastcgiChannels]) {
    const create = ({ request }: { request: HandlerRequestInfo }) => record({ event: 'create', request });
    const headers = ({ request, response }: { request: HandlerRequestInfo; response: { statusCode: number } }) =>
      record({ event: 'headers', request, status: response.statusCode });
    const trailers = ({ request }: { request: HandlerRequestInfo }) => record({ event: 'trailers', request });
    const error = ({ request, error }: { request: HandlerRequestInfo; error: { code?: string } }) =>
      record({ event: 'error', request, ...(error.code ? { code: error.code } : {}) });
    channels.create.subscribe(create);
    channels.headers.subscribe(headers);
    channels.trailers.subscribe(trailers);
    channels.error.subscribe(error);
    t.after(() => {
      channels.create.unsubscribe(create);
      channels.headers.unsubscribe(headers);
      channels.trailers.unsubscribe(trailers);
      channels.error.unsubscribe(error);
    });
  }
  /** The events of the request to `url`, once its last one (trailers or error) is in. */
  const ended = (url: string): Promise<Seen[]> =>
    waitFor(
      () => {
        const events = seen.filter((entry) => entry.request.url === url);
        return events.some((entry) => entry.event === 'trailers' || entry.event === 'error') ? events : null;
      },
      `the last event of ${url}`,
      { context: () => JSON.stringify(seen.filter((entry) => entry.request.url === url).map((entry) => entry.event)) },
    );
  return { seen, ended };
}

function brief(events: Seen[]): string[] {
  return events.map((entry) => [entry.event, entry.status ?? entry.code ?? ''].filter(Boolean).join(' '));
}

async function listen(t: TestContext, handle: http.RequestListener): Promise<string> {
  const server = http.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

test('cgi(): create, headers, trailers or error with its code, on one request object; passed-on requests make none', async (t) => {
  const { seen, ended } = subscribe(t);
  const docroot = tempDir(t, 'gatehouse-diag-cgi-');
  const handler = cgi({
    documentRoot: docroot,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: fixtures }],
    serverName: 'x',
    scriptTimeout: '300ms',
    killGraceMs: 200,
    maxConcurrentScripts: 1,
    maxQueuedScripts: 0,
    errorLog: () => {},
  });
  t.after(() => handler.shutdown(0));
  const base = await listen(t, (req, res) =>
    handler(req, res, () => {
      res.end('the next handler\n');
    }),
  );

  assert.equal((await httpRequest(`${base}/cgi-bin/status.sh`)).status, 404);
  const ok = await ended('/cgi-bin/status.sh');
  assert.deepEqual(brief(ok), ['create', 'headers 404', 'trailers']);
  assert.ok(
    ok.every((entry) => entry.request === ok[0]!.request),
    'one request object',
  );
  assert.equal(ok[0]!.request.handler, 'cgi');
  assert.equal(ok[0]!.request.method, 'GET');

  // The script writes nothing: killed at the timeout, 504. While it runs, the only slot is taken and there is no queue: 503.
  // A slot is given back when its script is reaped, which may come after the response: until status.sh's is, a
  // slot taken would be status.sh's, and hang.sh would find none (seen on Node 22: hang.sh 503, then ?second 404).
  await waitFor(() => handler.limiter.running === 0, 'status.sh reaped (its slot given back)');
  const hanging = httpRequest(`${base}/cgi-bin/hang.sh`);
  await waitFor(() => handler.limiter.running === 1, 'hang.sh holding the only slot');
  assert.equal((await httpRequest(`${base}/cgi-bin/status.sh?second`)).status, 503);
  assert.deepEqual(brief(await ended('/cgi-bin/status.sh?second')), ['create', 'headers 503', 'error GH_CGI_QUEUE_FULL']);
  assert.equal((await hanging).status, 504);
  assert.deepEqual(brief(await ended('/cgi-bin/hang.sh')), ['create', 'headers 504', 'error GH_CGI_SCRIPT_TIMEOUT']);

  // No such script under the alias: the handler's own 404.
  assert.equal((await httpRequest(`${base}/cgi-bin/no-such-script`)).status, 404);
  assert.deepEqual(brief(await ended('/cgi-bin/no-such-script')), ['create', 'headers 404', 'error GH_CGI_PATH_NOT_FOUND']);

  // Not a script: the next handler's, and no events (the request after it shows every earlier event is in).
  assert.equal((await httpRequest(`${base}/static.txt`)).body.toString(), 'the next handler\n');
  await httpRequest(`${base}/cgi-bin/status.sh?last`);
  await ended('/cgi-bin/status.sh?last');
  assert.deepEqual(
    seen.filter((entry) => entry.request.url === '/static.txt'),
    [],
  );
});

test('fastcgi(): create, headers, trailers; an upstream refusing is an error with its code; a client gone mid-body too', async (t) => {
  const { ended } = subscribe(t);
  const dir = tempDir(t, 'gatehouse-diag-fastcgi-');
  const app = await startTestApp(t, dir);
  // The test application answers every path: there is no script file to check first.
  const up = fastcgi({
    upstreams: [`unix:${(app.address as { path: string }).path}`],
    documentRoot: dir,
    checkScript: false,
    errorLog: () => {},
  });
  const down = fastcgi({ upstreams: [`unix:${join(dir, 'nobody.sock')}`], documentRoot: dir, checkScript: false, errorLog: () => {} });
  t.after(() => Promise.all([up.close(), down.close()]));
  const base = await listen(t, (req, res) => (req.url!.startsWith('/down/') ? down(req, res) : up(req, res)));

  assert.equal((await httpRequest(`${base}/hello`)).status, 200);
  const ok = await ended('/hello');
  assert.deepEqual(brief(ok), ['create', 'headers 200', 'trailers']);
  assert.equal(ok[0]!.request.handler, 'fastcgi');
  assert.ok(ok.every((entry) => entry.request === ok[0]!.request));

  assert.equal((await httpRequest(`${base}/down/hello`)).status, 503);
  assert.deepEqual(brief(await ended('/down/hello')), ['create', 'headers 503', 'error GH_UPSTREAM_REFUSED']);

  // An endless body; the client leaves after its first bytes.
  await new Promise<void>((resolve, reject) => {
    http
      .get(`${base}/forever`, { agent: false }, (response) => {
        response.once('data', () => {
          response.destroy();
          resolve();
        });
      })
      .on('error', reject);
  });
  assert.deepEqual(brief(await ended('/forever')), ['create', 'headers 200', 'error GH_CLIENT_CLOSED']);
});

interface ClientSeen {
  event: 'create' | 'headers' | 'trailers' | 'error';
  request: ClientRequestInfo;
  appStatus?: number;
  code?: string;
}

/** Every FastCGIClient event, in order, until the test ends. */
function subscribeClient(t: TestContext): ClientSeen[] {
  const seen: ClientSeen[] = [];
  const create = ({ request }: { request: ClientRequestInfo }) => void seen.push({ event: 'create', request });
  const headers = ({ request }: { request: ClientRequestInfo }) => void seen.push({ event: 'headers', request });
  const trailers = ({ request, trailers, appStatus }: { request: ClientRequestInfo; trailers: never[]; appStatus: number }) => {
    assert.deepEqual(trailers, [], 'FastCGI has no trailers');
    seen.push({ event: 'trailers', request, appStatus });
  };
  const error = ({ request, error }: { request: ClientRequestInfo; error: UpstreamError }) =>
    void seen.push({ event: 'error', request, code: error.code });
  clientChannels.create.subscribe(create);
  clientChannels.headers.subscribe(headers);
  clientChannels.trailers.subscribe(trailers);
  clientChannels.error.subscribe(error);
  t.after(() => {
    clientChannels.create.unsubscribe(create);
    clientChannels.headers.unsubscribe(headers);
    clientChannels.trailers.unsubscribe(trailers);
    clientChannels.error.unsubscribe(error);
  });
  return seen;
}

/**
 * The events published since `mark`, all of one request (the same request
 * object in each, as a tracer keys its span on it), as short strings.
 */
function oneRequest(seen: ClientSeen[], mark: number, upstream: string): string[] {
  const events = seen.slice(mark);
  assert.ok(events.length > 0, 'no event published');
  assert.ok(
    events.every((entry) => entry.request === events[0]!.request),
    'one request object in every event of one request',
  );
  assert.deepEqual(events[0]!.request, { upstream, role: 'responder' });
  return events.map((entry) => [entry.event, entry.appStatus ?? entry.code ?? ''].join(' ').trim());
}

test('FastCGIClient: create, headers at the first STDOUT, trailers with appStatus or error with its code, per request', async (t) => {
  const seen = subscribeClient(t);
  const dir = tempDir(t, 'gatehouse-diag-client-');
  const app = await startTestApp(t, dir);
  const client = new FastCGIClient({ address: app.address });
  t.after(() => client.close());
  const upstream = client.upstream;
  assert.equal(upstream, `unix:${(app.address as { path: string }).path}`);
  const params = (path: string) => ({ REQUEST_METHOD: 'GET', REQUEST_URI: path, SCRIPT_NAME: path });

  // Answered: the trailers event comes with END_REQUEST, before the caller's promise settles.
  let mark = seen.length;
  const hello = await client.fetchAll({ params: params('/hello') });
  assert.match(hello.stdout.toString(), /hello from gatehouse/);
  assert.deepEqual(oneRequest(seen, mark, upstream), ['create', 'headers', 'trailers 0']);

  // Two at once on the same client: each its own request object, each complete.
  mark = seen.length;
  await Promise.all([client.fetchAll({ params: params('/hello') }), client.fetchAll({ params: params('/env') })]);
  const both = seen.slice(mark);
  const requests = [...new Set(both.map((entry) => entry.request))];
  assert.equal(requests.length, 2, 'two requests, two request objects');
  for (const request of requests)
    assert.deepEqual(
      both.filter((entry) => entry.request === request).map((entry) => entry.event),
      ['create', 'headers', 'trailers'],
    );

  // The caller gives up after the first bytes of an endless body: headers were published, then the error.
  mark = seen.length;
  const controller = new AbortController();
  const endless = client.request({ params: params('/forever'), signal: controller.signal });
  endless.on('error', () => {});
  await new Promise<void>((resolve) => endless.once('data', () => resolve()));
  controller.abort();
  await waitFor(() => seen.slice(mark).some((entry) => entry.event === 'error'), 'the abort published');
  assert.deepEqual(oneRequest(seen, mark, upstream), ['create', 'headers', 'error GH_REQUEST_ABORTED']);

  // Nobody listens on the socket: no headers, the refusal's code.
  const nobody = new FastCGIClient({ address: join(dir, 'nobody.sock') });
  t.after(() => nobody.close());
  mark = seen.length;
  await assert.rejects(nobody.fetchAll({ params: params('/hello') }), { code: 'GH_UPSTREAM_REFUSED' });
  assert.deepEqual(oneRequest(seen, mark, nobody.upstream), ['create', 'error GH_UPSTREAM_REFUSED']);

  // gatehouse cgid --fastcgi ends a request with its script's exit status: trailers carry it as appStatus.
  const three = join(dir, 'three.sh');
  writeFileSync(three, '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nthree\\n"\nexit 3\n');
  chmodSync(three, 0o755);
  const socket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`])]);
  await waitForListener({ path: socket }, { what: 'cgid --fastcgi', process: face, timeoutMs: 20_000 });
  const cgid = new FastCGIClient({ address: socket });
  t.after(() => cgid.close());
  mark = seen.length;
  const result = await cgid.fetchAll({
    params: { SCRIPT_FILENAME: three, REQUEST_METHOD: 'GET', SERVER_PROTOCOL: 'HTTP/1.1', GATEWAY_INTERFACE: 'CGI/1.1' },
  });
  assert.equal(result.appStatus, 3);
  assert.deepEqual(oneRequest(seen, mark, cgid.upstream), ['create', 'headers', 'trailers 3']);
});

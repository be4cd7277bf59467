/**
 * The cgi() and fastcgi() handlers' node:diagnostics_channel events, seen by
 * a subscriber as an APM tool would see them: create, headers (with the
 * status sent), then trailers (the response ended) or error (with its stable
 * code), on one request object per request; real scripts and a real FastCGI
 * application behind a node:http server; and a request cgi() passes on to
 * the next handler makes no events.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cgi } from '../../src/cgi/handler.js';
import { cgiChannels, fastcgiChannels, type HandlerRequestInfo } from '../../src/diagnostics.js';
import { fastcgi } from '../../src/http/fastcgi-handler.js';
import { httpRequest } from '../kit/http.js';
import { tempDir } from '../kit/process.js';
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

/**
 * cgi(options) behind a real node:http server, running the shell and Perl
 * scripts in test/fixtures/cgi-bin: environment, bodies both ways, stderr,
 * timeouts, aborts, reaping, traversal, redirects, nph, ScriptLog.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cgi, type CgiOptions } from '../../src/cgi/handler.js';
import { blockedWriting, bytesWritten, childProcesses, commandLine, descendantsOf, groupMembers } from '../kit/proc.js';
import { tempDir } from '../kit/process.js';
import { waitFor, waitForText } from '../kit/wait.js';
import { httpRequest } from '../kit/http.js';

const fixtures = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));

interface Site {
  base: string;
  port: number;
  errors: string[];
  docroot: string;
  root: string;
  server: http.Server;
}

async function startSite(
  t: TestContext,
  extra: Partial<CgiOptions> = {},
  configure?: (server: http.Server, handler: ReturnType<typeof cgi>) => void,
): Promise<Site> {
  const root = tempDir(t, 'gatehouse-cgi-');
  const docroot = join(root, 'www');
  mkdirSync(join(docroot, 'app'), { recursive: true });
  writeFileSync(join(docroot, 'index.html'), '<p>static</p>');
  copyFileSync(join(fixtures, 'env.pl'), join(docroot, 'app', 'run.cgi'));
  chmodSync(join(docroot, 'app', 'run.cgi'), 0o755);
  const outside = join(root, 'outside');
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret.cgi'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nroot:x:0:0 secret\\n"\n');
  chmodSync(join(outside, 'secret.cgi'), 0o755);
  symlinkSync(outside, join(docroot, 'escape'));
  const errors: string[] = [];
  const handler = cgi({
    documentRoot: docroot,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: fixtures }],
    extensions: ['.cgi'],
    serverName: 'gatehouse.test',
    errorLog: (line) => errors.push(line),
    killGraceMs: 300,
    ...extra,
  });
  const server = http.createServer((req, res) =>
    handler(req, res, () => {
      res.setHeader('Content-Type', 'text/plain');
      res.end(`next: ${req.method} ${req.url}`);
    }),
  );
  configure?.(server, handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as net.AddressInfo;
  return { base: `http://127.0.0.1:${port}`, port, errors, docroot, root, server };
}

/** Sends raw bytes and returns everything the server answers until it closes (or `untilMs`). */
async function rawExchange(port: number, request: string | Buffer, untilMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), untilMs);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.on('error', reject);
    socket.write(request);
  });
}

/** Children of this process (the server is in-process) with their state letter, zombies included. */
const ourChildren = () => childProcesses(process.pid);

test('environment: RFC 3875 variables, PATH_INFO decoded, headers filtered and joined, argv from a search query', async (t) => {
  const site = await startSite(t, { setEnv: { SITE: 'test' }, queryArguments: true });
  const response = await httpRequest(`${site.base}/cgi-bin/env.pl/a%20b/c?one+two%21`, {
    headers: {
      'X-Forwarded-For': '1.2.3.4',
      X_Forwarded_For: '6.6.6.6',
      Proxy: 'http://evil.example:3128',
      Authorization: 'Basic dTpw',
      Cookie: ['a=1', 'b=2'],
      'X-Dup': ['x', 'y'],
    },
  });
  assert.equal(response.status, 200);
  const { env, argv, cwd } = JSON.parse(response.body.toString());
  assert.equal(env.GATEWAY_INTERFACE, 'CGI/1.1');
  assert.equal(env.SERVER_PROTOCOL, 'HTTP/1.1');
  assert.equal(env.REQUEST_METHOD, 'GET');
  assert.equal(env.SCRIPT_NAME, '/cgi-bin/env.pl');
  assert.equal(env.PATH_INFO, '/a b/c');
  assert.equal(env.PATH_TRANSLATED, `${site.docroot}/a b/c`);
  assert.equal(env.SCRIPT_FILENAME, `${fixtures}env.pl`);
  assert.equal(env.QUERY_STRING, 'one+two%21');
  assert.equal(env.REQUEST_URI, '/cgi-bin/env.pl/a%20b/c?one+two%21');
  assert.equal(env.SERVER_NAME, '127.0.0.1');
  assert.equal(env.SERVER_PORT, String(site.port));
  assert.equal(env.SERVER_ADDR, '127.0.0.1');
  assert.equal(env.REMOTE_ADDR, '127.0.0.1');
  assert.match(env.REMOTE_PORT, /^\d+$/);
  assert.equal(env.DOCUMENT_ROOT, site.docroot);
  assert.equal(env.CONTEXT_PREFIX, '/cgi-bin/');
  assert.equal(env.CONTEXT_DOCUMENT_ROOT, fixtures);
  assert.equal(env.REQUEST_SCHEME, 'http');
  assert.equal(env.SITE, 'test');
  assert.equal(env.HTTP_X_FORWARDED_FOR, '1.2.3.4');
  assert.equal(env.HTTP_PROXY, undefined);
  assert.equal(env.HTTP_AUTHORIZATION, undefined);
  assert.equal(env.HTTP_COOKIE, 'a=1; b=2');
  assert.equal(env.HTTP_X_DUP, 'x, y');
  assert.equal(env.HTTPS, undefined);
  assert.equal(env.CONTENT_LENGTH, undefined);
  assert.equal(env.HOME, undefined, 'the server environment is not passed wholesale');
  assert.deepEqual(argv, ['one', 'two!']);
  assert.equal(cwd, fixtures.replace(/\/$/, ''));
});

test('POST: a 10 MB body echoed while it streams in; a chunked body spooled with CONTENT_LENGTH set', async (t) => {
  const site = await startSite(t, { bodyMemorySpool: 64 * 1024 });
  const body = randomBytes(10 * 1024 * 1024);
  const echoed = await httpRequest(`${site.base}/cgi-bin/echo.sh`, {
    method: 'POST',
    body,
    headers: { 'Content-Length': String(body.length) },
  });
  assert.equal(echoed.status, 200);
  assert.equal(echoed.headers['x-content-length'], String(body.length));
  assert.equal(createHash('sha256').update(echoed.body).digest('hex'), createHash('sha256').update(body).digest('hex'));

  const parts = [randomBytes(100_000), randomBytes(50_000), randomBytes(3)];
  async function* chunked() {
    for (const part of parts) yield part;
  }
  const spooled = await httpRequest(`${site.base}/cgi-bin/echo.sh`, { method: 'POST', body: chunked() });
  assert.equal(spooled.status, 200);
  assert.equal(spooled.headers['x-content-length'], '150003');
  assert.ok(spooled.body.equals(Buffer.concat(parts)));
});

test('a chunked body over maxRequestBody is refused with 413 and the script never runs', async (t) => {
  const site = await startSite(t, { maxRequestBody: 1000 });
  async function* big() {
    for (let i = 0; i < 10; i++) yield Buffer.alloc(500, 0x61);
  }
  // The server answers 413 and closes while the client may still be sending: a reset is an acceptable client-side view.
  const refused = await httpRequest(`${site.base}/cgi-bin/expect.sh`, { method: 'POST', body: big() }).catch((error: Error) => error);
  if (refused instanceof Error) assert.match(refused.message, /ECONNRESET|EPIPE|socket hang up/);
  else assert.equal(refused.status, 413);
  assert.ok(site.errors.some((line) => /chunked request body for .*expect\.sh is over the limit of 1000 bytes/.test(line)));
  const declared = await httpRequest(`${site.base}/cgi-bin/expect.sh`, { method: 'POST', body: Buffer.alloc(2000) });
  assert.equal(declared.status, 413);
  assert.ok(site.errors.some((line) => /over the limit/.test(line)));
});

test('Expect: 100-continue is answered before the body is read (server with a checkContinue listener)', async (t) => {
  const site = await startSite(t, {}, (server, handler) => {
    server.on('checkContinue', (req, res) => handler(req, res));
  });
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(site.port, '127.0.0.1');
    let seen = '';
    let sentBody = false;
    socket.on('data', (chunk) => {
      seen += chunk.toString('latin1');
      if (!sentBody && seen.includes('100 Continue')) {
        sentBody = true;
        socket.write('hello');
      }
      if (/read=\s*5 length=5/.test(seen)) {
        socket.destroy();
        resolve(seen);
      }
    });
    socket.on('error', reject);
    socket.write('POST /cgi-bin/expect.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    setTimeout(() => {
      socket.destroy();
      resolve(seen);
    }, 5000);
  });
  assert.match(answer, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200 OK/);
  assert.match(answer, /read=\s*5 length=5/);
});

test('a stderr flood while stdout is written: no deadlock, every line in the error log with the script name', async (t) => {
  const site = await startSite(t);
  const response = await httpRequest(`${site.base}/cgi-bin/stderr-flood.pl`);
  assert.equal(response.status, 200);
  assert.equal(response.body.length, 1024 * 1024);
  await waitFor(() => site.errors.filter((line) => line.includes('stderr-flood.pl: eeee')).length === 2048, 'every stderr line logged');
  assert.equal(site.errors.filter((line) => line.includes(`${fixtures}stderr-flood.pl: eeee`)).length, 2048);
});

test('timeout before the head: 504, the process group (grandchild included) killed, nothing left', async (t) => {
  const site = await startSite(t, { scriptTimeout: '300ms' });
  const response = await httpRequest(`${site.base}/cgi-bin/hang.sh`);
  assert.equal(response.status, 504);
  const match = /script (\d+) grandchild (\d+)/.exec(site.errors.join('\n'));
  assert.ok(match, 'the script reported its pid and its grandchild');
  const [scriptPid, grandchild] = [Number(match[1]), Number(match[2])];
  await waitFor(() => groupMembers(scriptPid).length === 0, 'the whole process group to be gone');
  assert.ok(!groupMembers(scriptPid).includes(grandchild));
  await waitFor(() => !ourChildren().some((child) => child.pid === scriptPid), 'the script to be reaped');
  assert.ok(site.errors.some((line) => /hang\.sh: no output for 300 ms/.test(line)));
});

test('timeout after the body started: the response is cut short (connection closed), the script killed', async (t) => {
  const site = await startSite(t, { scriptTimeout: '300ms' });
  const outcome = await httpRequest(`${site.base}/cgi-bin/hang-after-head.sh`).then(
    () => 'complete',
    (error: Error) => error.message,
  );
  assert.notEqual(outcome, 'complete');
  const pid = Number(/pid (\d+)/.exec(site.errors.join('\n'))?.[1]);
  await waitFor(() => groupMembers(pid).length === 0, 'the script to be killed');
});

test('client disconnect: the script group gets SIGTERM then SIGKILL; no zombies after many requests', async (t) => {
  const site = await startSite(t);
  await new Promise<void>((resolve, reject) => {
    const req = http.get(`${site.base}/cgi-bin/hang-after-head.sh`, { agent: false }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (error) => (error.message.includes('socket hang up') ? resolve() : reject(error)));
  });
  const pid = Number(/pid (\d+)/.exec(site.errors.join('\n'))?.[1]);
  assert.ok(pid > 0);
  await waitFor(() => groupMembers(pid).length === 0, 'the script to be killed after the client left');

  const responses = await Promise.all(Array.from({ length: 20 }, () => httpRequest(`${site.base}/cgi-bin/env.sh`)));
  assert.ok(responses.every((response) => response.status === 200));
  // Under the cgid daemon (cgid-handler-suite) the daemon is a child that stays, and the suite accepts exactly that
  // failure: the wait is kept as short as it was.
  await waitFor(() => ourChildren().length === 0, 'no child process left', {
    timeoutMs: 5000,
    context: () => `children left: ${JSON.stringify(ourChildren())}`,
  });
  assert.deepEqual(
    ourChildren().filter((child) => child.state === 'Z'),
    [],
  );
});

test('traversal and escapes are refused and never run or leak anything', async (t) => {
  const site = await startSite(t);
  const cases: Array<[string, number]> = [
    ['/cgi-bin/../../../../etc/passwd', 400],
    ['/cgi-bin/%2e%2e/%2e%2e/%2e%2e/etc/passwd', 400],
    ['/cgi-bin/env.pl%2f..%2f..%2fetc%2fpasswd', 404],
    ['/cgi-bin/env.pl%00.txt', 404],
    ['/cgi-bin/..%5c..%5cetc', 400],
    ['/escape/secret.cgi', 404],
    ['/app/../escape/secret.cgi', 404],
    ['/cgi-bin/not-executable.sh', 403],
    ['/cgi-bin/', 403],
    ['/cgi-bin/missing', 404],
  ];
  for (const [path, status] of cases) {
    const answer = await rawExchange(site.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.match(answer, new RegExp(`^HTTP/1.1 ${status} `), path);
    assert.doesNotMatch(answer, /root:/, path);
  }
  assert.ok(site.errors.filter((line) => line.startsWith('cgi: refused')).length >= 8);
});

test('statuses and headers: Status with reason, Set-Cookie kept twice, HEAD without body, client redirect 302', async (t) => {
  const site = await startSite(t);
  const status = await rawExchange(site.port, 'GET /cgi-bin/status.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(status, /^HTTP\/1.1 404 Not Here\r\n/);
  assert.match(status, /Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n/i);
  assert.match(status, /Transfer-Encoding: chunked\r\n\r\n8\r\nmissing\n\r\n0\r\n\r\n$/);
  const head = await rawExchange(site.port, 'HEAD /cgi-bin/stream.sh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.match(head, /^HTTP\/1.1 200 OK\r\n/);
  assert.match(head, /\r\n\r\n$/);
  const redirect = await httpRequest(`${site.base}/cgi-bin/client-redirect.sh`);
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.location, 'https://example.com/elsewhere');
  const streamed = await httpRequest(`${site.base}/cgi-bin/stream.sh`);
  assert.equal(streamed.headers['transfer-encoding'], 'chunked');
  assert.equal(streamed.body.toString(), 'line 1\nline 2\nline 3\nline 4\nline 5\n');
});

test('local redirect: re-dispatched as GET with REDIRECT_* and the original REQUEST_URI; loops end in 500', async (t) => {
  const site = await startSite(t);
  const response = await httpRequest(`${site.base}/cgi-bin/redirect.sh?orig=1`, { method: 'POST', body: 'x=1' });
  assert.equal(response.status, 200);
  const { env } = JSON.parse(response.body.toString());
  assert.equal(env.REQUEST_METHOD, 'GET');
  assert.equal(env.SCRIPT_NAME, '/cgi-bin/env.pl');
  assert.equal(env.QUERY_STRING, 'from=redirect');
  assert.equal(env.REQUEST_URI, '/cgi-bin/redirect.sh?orig=1');
  assert.equal(env.REDIRECT_URL, '/cgi-bin/redirect.sh');
  assert.equal(env.REDIRECT_STATUS, '200');
  assert.equal(env.REDIRECT_QUERY_STRING, 'orig=1');
  assert.equal(env.REDIRECT_REQUEST_METHOD, 'POST');
  assert.equal(env.CONTENT_LENGTH, undefined);
  const loop = await httpRequest(`${site.base}/cgi-bin/redirect-loop.sh`);
  assert.equal(loop.status, 500);
  assert.ok(site.errors.some((line) => /more than 10 local redirects/.test(line)));
});

test('malformed output, Transfer-Encoding from the script, no output, no #! line: 500 with a log line naming script and line', async (t) => {
  const site = await startSite(t);
  for (const script of ['malformed.sh', 'transfer-encoding.sh', 'nothing.sh', 'no-shebang.sh']) {
    const response = await httpRequest(`${site.base}/cgi-bin/${script}`);
    assert.equal(response.status, 500, script);
    assert.ok(
      site.errors.some((line) => line.includes(`${fixtures}${script}`)),
      `no log line for ${script}`,
    );
    // The details are for the error log: the client's page names no file-system path and no line of the script's output.
    const page = `${JSON.stringify(response.headers)}\n${response.body.toString('latin1')}`;
    for (const secret of [fixtures, script, 'this is not a header', 'Bad header', 'hello'])
      assert.ok(!page.includes(secret), `${script}: the 500 shows ${JSON.stringify(secret)}:\n${page}`);
  }
  assert.ok(site.errors.some((line) => line.includes('Bad header: this is not a header')));
});

test("a script's Content-Length is held to: extra bytes dropped, a short body closes the connection", async (t) => {
  const site = await startSite(t);
  const exact = await httpRequest(`${site.base}/cgi-bin/short-length.sh`, { headers: { 'X-Length': '5' } });
  assert.equal(exact.body.toString(), '01234');
  const short = await httpRequest(`${site.base}/cgi-bin/short-length.sh`).then(
    () => 'complete',
    (error: Error) => error.message,
  );
  assert.notEqual(short, 'complete');
});

test('nph- scripts: the output is the response, raw', async (t) => {
  const site = await startSite(t);
  const answer = await rawExchange(site.port, 'GET /cgi-bin/nph-raw.sh HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.equal(answer, 'HTTP/1.1 299 Raw Status\r\nContent-Type: text/plain\r\nX-Nph: yes\r\nContent-Length: 4\r\n\r\nraw!');
});

test('extension handler in the document root; other files go to next()', async (t) => {
  const site = await startSite(t);
  const script = await httpRequest(`${site.base}/app/run.cgi/extra`);
  assert.equal(script.status, 200);
  const { env } = JSON.parse(script.body.toString());
  assert.equal(env.SCRIPT_NAME, '/app/run.cgi');
  assert.equal(env.PATH_INFO, '/extra');
  assert.equal(env.CONTEXT_PREFIX, '');
  const file = await httpRequest(`${site.base}/index.html`);
  assert.equal(file.body.toString(), 'next: GET /index.html');
});

test('the queue: past maxConcurrentScripts and maxQueuedScripts the answer is 503', async (t) => {
  const site = await startSite(t, { maxConcurrentScripts: 1, maxQueuedScripts: 1 });
  const results = await Promise.all(Array.from({ length: 4 }, () => httpRequest(`${site.base}/cgi-bin/stream.sh`)));
  const statuses = results.map((result) => result.status).sort();
  assert.deepEqual(statuses, [200, 200, 503, 503]);
  assert.ok(results.some((result) => result.headers['retry-after'] === '1'));
});

test('ScriptLog: sections for a failed script, credentials redacted, nothing for a good one', async (t) => {
  const logDir = tempDir(t);
  const logPath = join(logDir, 'script.log');
  const site = await startSite(t, { scriptLog: logPath, scriptLogBuffer: 8 });
  const good = await httpRequest(`${site.base}/cgi-bin/env.sh`);
  assert.equal(good.status, 200);
  const bad = await httpRequest(`${site.base}/cgi-bin/malformed.sh?q=1`, {
    method: 'POST',
    body: 'password=hunter2',
    headers: { Authorization: 'Basic c2VjcmV0', Cookie: 'session=abc' },
  });
  assert.equal(bad.status, 500);
  // The entry is written in one piece and ends with the stderr section.
  const text = await waitForText(logPath, /%stderr\n.*\n$/, 'the failed run in the script log');
  assert.match(text, /^%% \[\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} \d{4}\] POST \/cgi-bin\/malformed.sh\?q=1 HTTP\/1.1\n/);
  assert.ok(text.includes(`%% 500 ${fixtures}malformed.sh\n%request\n`));
  assert.match(text, /\nAuthorization: \[redacted\]\n/);
  assert.match(text, /\nCookie: \[redacted\]\n/);
  assert.match(text, /\n\npassword\n%response\n/);
  assert.doesNotMatch(text, /hunter2|c2VjcmV0|session=abc/);
  assert.match(text, /%stdout\nContent-Type: text\/plain\nthis is not a header\n\nbody\n%stderr\nmalformed.sh was here\n$/);
  assert.equal(text.match(/^%% \[/gm)?.length, 1, 'only the failed request is logged');
});

test('a 50 MB response streams with bounded memory, even through a reader that stops', async (t) => {
  let serverSide: http.ServerResponse | undefined;
  const site = await startSite(t, {}, (server) => server.prependListener('request', (_req, res) => (serverSide = res)));
  const before = process.memoryUsage().rss;
  const res = await new Promise<http.IncomingMessage>((resolve, reject) =>
    http.get(`${site.base}/cgi-bin/big.sh`, { agent: false }, resolve).on('error', reject),
  );
  assert.equal(res.statusCode, 200);
  let received = 0;
  let stopped = false;
  res.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (!stopped && received > 5 * 1024 * 1024) {
      stopped = true;
      res.pause();
    }
  });
  // Once the reader stopped: the script (big.sh execs head(1); here or under a cgid daemon) wrote nothing more
  // between two looks and waits in a write, held up by backpressure. Without it, the handler would go on copying the
  // script's output into memory, the script would go on writing, and it would end.
  const script = () => descendantsOf(process.pid).find((pid) => commandLine(pid).startsWith('head -c'));
  const queued = () => serverSide?.writableLength ?? 0;
  let previous = -1;
  await waitFor(
    () => {
      const pid = script();
      const written = pid === undefined ? -1 : bytesWritten(pid);
      const held = stopped && written > 0 && written === previous && blockedWriting(pid!);
      previous = written;
      return held || (stopped && pid === undefined);
    },
    'the script to be held up by the stopped reader',
    { context: () => `server queued ${queued()} bytes; script ${script()}` },
  );
  assert.ok(queued() <= 1024 * 1024, `the server queued ${queued()} bytes for a reader that stopped`);
  const peak = Math.max(before, process.memoryUsage().rss);
  res.resume();
  await new Promise((resolve, reject) => res.on('end', resolve).on('error', reject));
  assert.equal(received, 50 * 1024 * 1024);
  assert.ok(peak - before < 40 * 1024 * 1024, `memory grew by ${Math.round((peak - before) / 1048576)} MB while streaming 50 MB`);
});

test('mounted under a prefix (Express app.use): SCRIPT_NAME and REQUEST_URI keep the prefix, PATH_INFO does not', async (t) => {
  const docroot = tempDir(t);
  const handler = cgi({
    documentRoot: docroot,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: fixtures }],
    serverName: 'x',
    errorLog: () => {},
  });
  // What Express does for app.use('/mounted', handler): strip the prefix from req.url, keep it in req.originalUrl.
  const server = http.createServer((req, res) => {
    const original = req.url ?? '/';
    if (!original.startsWith('/mounted/')) return void res.writeHead(404).end();
    Object.assign(req, { originalUrl: original });
    req.url = original.slice('/mounted'.length);
    handler(req, res, () => res.writeHead(418).end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  const response = await httpRequest(`${base}/mounted/cgi-bin/env.pl/x%20y?q=1`);
  const { env } = JSON.parse(response.body.toString());
  assert.equal(env.SCRIPT_NAME, '/mounted/cgi-bin/env.pl');
  assert.equal(env.PATH_INFO, '/x y');
  assert.equal(env.REQUEST_URI, '/mounted/cgi-bin/env.pl/x%20y?q=1');
  assert.equal(env.CONTEXT_PREFIX, '/mounted/cgi-bin/');
  // A local redirect outside the mount point goes to the next handler.
  const outside = await httpRequest(`${base}/mounted/cgi-bin/redirect.sh`);
  assert.equal(outside.status, 418);
});

/** A raw request whose connection stays open: what came back so far, and a promise of the server closing it. */
function openExchange(port: number, request: string): { text: () => string; closed: Promise<void>; socket: net.Socket } {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  socket.on('error', () => {});
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.write(request);
  return { text: () => text, closed, socket };
}

/** Resolves when `promise` does; fails the test if it has not after `boundMs` (a bound on a hang, not a timing). */
async function within<T>(promise: Promise<T>, boundMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${boundMs} ms`)), boundMs)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

test('shutdown: running scripts get the grace period, then their groups are stopped; new requests get 503', async (t) => {
  let handler: ReturnType<typeof cgi> | undefined;
  const site = await startSite(t, { killGraceMs: 200 }, (_server, created) => (handler = created));
  // One response under way (head and some body sent), one script that has written nothing yet.
  const streaming = openExchange(site.port, 'GET /cgi-bin/hang-after-head.sh HTTP/1.1\r\nHost: x\r\n\r\n');
  const silent = openExchange(site.port, 'GET /cgi-bin/hang.sh HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => streaming.text().includes('started') && handler!.running() === 2, 'a response under way and a silent script', {
    timeoutMs: 5000,
  });
  const stopped = handler!.shutdown(200);
  const refused = await httpRequest(`${site.base}/cgi-bin/env.sh`);
  assert.equal(refused.status, 503);
  await stopped;
  assert.equal(handler!.running(), 0);
  // Regression: the response under way was left hanging (only the client's own timeout ended it); it is cut now.
  await within(streaming.closed, 5000, 'the client of the response under way');
  assert.ok(!streaming.text().endsWith('0\r\n\r\n'), 'a cut response must not look complete');
  // The script that had not answered: 503, and the connection closed.
  await within(silent.closed, 5000, 'the client of the silent script');
  assert.match(silent.text(), /^HTTP\/1\.1 503 /);
  // SIGKILL is sent to each group at the end of the grace; the kernel takes a moment to end every member.
  for (const pid of [...site.errors.join('\n').matchAll(/(?:pid|script) (\d+)/g)].map((match) => Number(match[1])))
    await waitFor(() => groupMembers(pid).length === 0, `script group ${pid} to be gone`, { timeoutMs: 5000 });
});

test('regression: a local-redirect loop adds no listener per hop (no MaxListenersExceededWarning), and ends in 500', async (t) => {
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const closeListeners: number[] = [];
  const site = await startSite(t, {}, (server) =>
    server.on('request', (_req: http.IncomingMessage, res: http.ServerResponse) =>
      res.once('finish', () => closeListeners.push(res.listenerCount('close'))),
    ),
  );
  const loop = await httpRequest(`${site.base}/cgi-bin/redirect-loop.sh`);
  assert.equal(loop.status, 500);
  assert.ok(site.errors.some((line) => /more than 10 local redirects/.test(line)));
  // Listeners are counted when the response finished, after all 11 hops; node:http's own are 1 or 2.
  assert.equal(closeListeners.length, 1);
  assert.ok(closeListeners[0]! <= 4, `${closeListeners[0]} 'close' listeners on the response after 11 hops`);
  // A warning is emitted on the tick after the listener that caused it was added, long before the response got here.
  assert.deepEqual(
    warnings.filter((warning) => warning.startsWith('MaxListenersExceededWarning')),
    [],
  );
});

test('an IPv4 client on a dual-stack listener is REMOTE_ADDR a.b.c.d, not ::ffff:a.b.c.d', async (t) => {
  const docroot = tempDir(t);
  const handler = cgi({
    documentRoot: docroot,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: fixtures }],
    serverName: 'x',
    errorLog: () => {},
  });
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '::', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const response = await httpRequest(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/cgi-bin/env.pl`);
  const { env } = JSON.parse(response.body.toString());
  assert.equal(env.REMOTE_ADDR, '127.0.0.1');
  assert.equal(env.SERVER_ADDR, '127.0.0.1');
});

/**
 * FastCGI routes of `gatehouse serve` against real applications: php-fpm
 * (split-path, index.php, bodies, stderr, failover, 503, 504) and gatehouse's
 * own worker test app (a 50 MB response with the front's memory bounded, and
 * a client that leaves mid-response making the app see an abort).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, rssBytes, tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { appHeldUp, appStats, startTestApp, type AppStats } from '../kit/worker-app.js';
import { countingProxy } from '../kit/counting-proxy.js';
import { fastcgi } from '../../src/http/fastcgi-handler.js';
import { startGatehouse } from '../kit/serve.js';
import { waitFor, waitForText } from '../kit/wait.js';

const SERVER_VARS = `<?php
header('Content-Type: application/json');
$keys = ['SCRIPT_NAME', 'PATH_INFO', 'SCRIPT_FILENAME', 'PHP_SELF', 'REQUEST_URI', 'QUERY_STRING', 'DOCUMENT_ROOT', 'PATH_TRANSLATED', 'REQUEST_METHOD', 'CONTENT_LENGTH', 'HTTP_PROXY', 'SERVER_SOFTWARE'];
$out = ['file' => basename(__FILE__)];
foreach ($keys as $key) $out[$key] = $_SERVER[$key] ?? null;
echo json_encode($out);
`;

const BODY_READER = `<?php
header('Content-Type: text/plain');
$body = file_get_contents('php://input');
echo 'CONTENT_LENGTH=', $_SERVER['CONTENT_LENGTH'] ?? '(unset)', ' read=', strlen($body), ' md5=', md5($body), "\\n";
`;

test('FastCGI routes to php-fpm', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-fcgi-');
  const site = join(dir, 'site');
  mkdirSync(join(site, 'php'), { recursive: true });
  writeFileSync(join(site, 'php', 'info.php'), SERVER_VARS);
  writeFileSync(join(site, 'php', 'index.php'), SERVER_VARS);
  writeFileSync(join(site, 'php', 'body.php'), BODY_READER);
  writeFileSync(join(site, 'php', 'notes.txt'), '<?php echo "notes.txt was run as PHP"; ?>');
  writeFileSync(
    join(site, 'php', 'stderr.php'),
    `<?php error_log('php says hello on stderr'); header('Content-Type: text/plain'); echo "ok\\n";`,
  );
  writeFileSync(join(site, 'php', 'sleep.php'), `<?php sleep(20); echo "late\\n";`);
  writeFileSync(
    join(site, 'php', 'nap.php'),
    `<?php touch(__DIR__ . '/nap.started'); while (!file_exists(__DIR__ . '/nap.release')) usleep(20000); echo "woke\\n";`,
  );
  const fpm = await startPhpFpm(t, { scripts: {}, children: 3, poolConfig: 'security.limit_extensions = .php' });
  // Nothing listens on these: connections are refused.
  const dead1 = await freePort();
  const dead2 = await freePort();
  const errorLog = join(dir, 'error.log');
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `error-log = "error.log"
access-log = "off"
# The PHP files are inside the static document root too: a request that missed the route would get their source.
docroot = "site"
max-body = 600000

[[fastcgi]]
url = "/php/"
upstreams = ["127.0.0.1:${dead1}", "${fpm.addressString}"]
root = "site"
split-path = ".php"
index = "index.php"

[[fastcgi]]
url = "/dead/"
upstreams = ["127.0.0.1:${dead1}", "127.0.0.1:${dead2}"]
root = "site"
# No x.php under site/: these routes are about upstreams refusing, not about check-script's 404.
check-script = false

[[fastcgi]]
url = "/onedead/"
upstreams = ["127.0.0.1:${dead1}"]
root = "site"
check-script = false

[[fastcgi]]
url = "/slow/"
upstreams = ["${fpm.addressString}"]
script-filename = "site/php/sleep.php"
read-timeout = "500ms"
`,
  );
  const server = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')]);
  const json = async (path: string) => {
    const response = await httpRequest(`${server.base}${path}`);
    assert.equal(response.status, 200, `${path}: ${response.body.toString()}`);
    return JSON.parse(response.body.toString()) as Record<string, string | null>;
  };

  await t.test('split at .php: SCRIPT_NAME, PATH_INFO and SCRIPT_FILENAME as PHP sees them', async () => {
    const vars = await json('/php/info.php/extra/path%20x?q=1&r=2');
    assert.equal(vars.file, 'info.php');
    assert.equal(vars.SCRIPT_NAME, '/php/info.php');
    assert.equal(vars.PATH_INFO, '/extra/path x');
    assert.equal(vars.SCRIPT_FILENAME, join(site, 'php', 'info.php'));
    assert.equal(vars.PHP_SELF, '/php/info.php/extra/path x');
    assert.equal(vars.REQUEST_URI, '/php/info.php/extra/path%20x?q=1&r=2');
    assert.equal(vars.QUERY_STRING, 'q=1&r=2');
    assert.equal(vars.DOCUMENT_ROOT, site);
    assert.equal(vars.PATH_TRANSLATED, join(site, 'extra/path x'));
    const plain = await json('/php/info.php');
    assert.equal(plain.SCRIPT_NAME, '/php/info.php');
    assert.equal(plain.PATH_INFO ?? '', '');
  });

  await t.test('index.php on a trailing slash', async () => {
    const vars = await json('/php/?x=1');
    assert.equal(vars.file, 'index.php');
    assert.equal(vars.SCRIPT_NAME, '/php/index.php');
    assert.equal(vars.SCRIPT_FILENAME, join(site, 'php', 'index.php'));
    assert.equal(vars.QUERY_STRING, 'x=1');
  });

  await t.test('a file that is not .php is never run through a /x.php suffix', async () => {
    const response = await httpRequest(`${server.base}/php/notes.txt/evil.php`);
    assert.notEqual(response.status, 200);
    assert.ok(!response.body.toString().includes('was run as PHP'));
  });

  await t.test('the Proxy header never becomes HTTP_PROXY (httpoxy)', async () => {
    const response = await httpRequest(`${server.base}/php/info.php`, { headers: { Proxy: 'http://evil.example:3128' } });
    assert.equal(JSON.parse(response.body.toString()).HTTP_PROXY, null);
  });

  await t.test('a POST body with Content-Length reaches PHP', async () => {
    const body = `a=1&b=${'x'.repeat(100_000)}`;
    const response = await httpRequest(`${server.base}/php/body.php`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    assert.equal(response.status, 200);
    assert.match(response.body.toString(), new RegExp(`^CONTENT_LENGTH=${body.length} read=${body.length} `));
  });

  await t.test('a chunked POST arrives with CONTENT_LENGTH set, and PHP reads all of it', async () => {
    const pieces = Array.from({ length: 50 }, (_, i) => Buffer.alloc(10_000, 97 + (i % 26)));
    const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
    async function* chunks() {
      for (const piece of pieces) {
        yield piece;
        await sleep(1);
      }
    }
    const response = await httpRequest(`${server.base}/php/body.php`, {
      method: 'POST',
      body: chunks(),
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    assert.equal(response.status, 200, response.body.toString());
    assert.match(response.body.toString(), new RegExp(`^CONTENT_LENGTH=${total} read=${total} `));
  });

  await t.test('a body over max-body: 413, with a length or chunked', async () => {
    const big = Buffer.alloc(700_000, 'z');
    const declared = await httpRequest(`${server.base}/php/body.php`, { method: 'POST', body: big });
    assert.equal(declared.status, 413);
    async function* chunks() {
      for (let i = 0; i < 7; i++) yield big.subarray(i * 100_000, (i + 1) * 100_000);
    }
    const chunked = await httpRequest(`${server.base}/php/body.php`, { method: 'POST', body: chunks() }).catch((error: Error) => error);
    // The front may close the connection before the client has sent everything: either way PHP never ran.
    if (!(chunked instanceof Error)) assert.equal(chunked.status, 413);
  });

  await t.test('what PHP writes to stderr reaches the error log, naming the script', async () => {
    const response = await httpRequest(`${server.base}/php/stderr.php`);
    assert.equal(response.status, 200);
    const log = await waitForText(errorLog, 'php says hello on stderr', "PHP's stderr line in the error log");
    assert.match(log, new RegExp(`fastcgi: .*: ${join(site, 'php', 'stderr.php').replace(/[.]/g, '\\.')}: .*php says hello on stderr`));
  });

  await t.test('failover: the first upstream refuses connections, every request is still served', async () => {
    for (let i = 0; i < 6; i++) {
      const vars = await json(`/php/info.php?i=${i}`);
      assert.equal(vars.QUERY_STRING, `i=${i}`);
      const post = await httpRequest(`${server.base}/php/body.php`, { method: 'POST', body: `request ${i}` });
      assert.equal(post.status, 200);
      assert.match(post.body.toString(), new RegExp(`^CONTENT_LENGTH=${`request ${i}`.length} read=${`request ${i}`.length} `));
    }
    const refusedLine = new RegExp(`127\\.0\\.0\\.1:${dead1} refused .*trying the next upstream`);
    await waitForText(errorLog, refusedLine, 'the refused upstream in the error log');
  });

  await t.test('every upstream refusing: 503', async () => {
    const response = await httpRequest(`${server.base}/dead/x.php`, { timeoutMs: 10_000 });
    assert.equal(response.status, 503);
    const single = await httpRequest(`${server.base}/onedead/x.php`, { timeoutMs: 10_000 });
    assert.equal(single.status, 503);
    const post = await httpRequest(`${server.base}/dead/x.php`, { method: 'POST', body: 'abc', timeoutMs: 10_000 });
    assert.equal(post.status, 503);
  });

  await t.test('an upstream that accepts and says nothing: 504 after read-timeout', async () => {
    const response = await httpRequest(`${server.base}/slow/anything`, { timeoutMs: 15_000 });
    assert.equal(response.status, 504);
    const log = await waitForText(errorLog, '/slow/anything', 'the timed-out request in the error log');
    assert.match(log, /fastcgi: GET \/slow\/anything: .*answered 504/);
  });

  await t.test('SIGTERM while PHP is answering: the request completes, then gatehouse exits 0', async () => {
    const napping = httpRequest(`${server.base}/php/nap.php`, { timeoutMs: 20_000 });
    await waitFor(() => existsSync(join(site, 'php', 'nap.started')), 'nap.php to start');
    server.child.kill('SIGTERM');
    await waitForText(errorLog, 'SIGTERM: finishing requests in flight', 'gatehouse to handle SIGTERM');
    writeFileSync(join(site, 'php', 'nap.release'), '');
    const response = await napping;
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), 'woke\n');
    assert.deepEqual(await server.exited, { code: 0, signal: null });
  });
});

/** Reads a response slowly: pauses first so a front without backpressure would pile the body up in memory. */
function slowDownload(url: string, onPause: () => Promise<void>): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let bytes = 0;
        res.pause();
        onPause().then(() => {
          res.on('data', (chunk: Buffer) => (bytes += chunk.length));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
          res.resume();
        }, reject);
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

test('FastCGI routes to the gatehouse worker test app', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-fcgi-app-');
  const app = await startTestApp(t, dir);
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `access-log = "off"
[[fastcgi]]
url = "/app/"
upstreams = ["unix:${(app.address as { path: string }).path}"]
script-filename = "${join(dir, 'app.js')}"
# Streamed: these cases are about backpressure and aborts reaching the app (buffered responses: fastcgi-buffering.test.ts).
buffering = false
`,
  );
  const server = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')]);
  const pid = server.child.pid!;

  const stats = () => appStats(app.address);

  await t.test("a 50 MB response streams through with the front's memory bounded and backpressure reaching the app", async () => {
    await httpRequest(`${server.base}/app/stream?mb=1`);
    const baseline = rssBytes(pid);
    let peakWhileHeld = baseline;
    const total = 50 * 1024 * 1024;
    let held: AppStats | undefined;
    const result = await slowDownload(`${server.base}/app/stream?mb=50`, async () => {
      held = await appHeldUp(app.address, total, () => {
        peakWhileHeld = Math.max(peakWhileHeld, rssBytes(pid));
      });
    });
    assert.equal(result.status, 200);
    assert.equal(result.bytes, total);
    assert.ok(held!.streamedBytes < total, 'the app wrote all 50 MB while the client read nothing: no backpressure');
    const grewMiB = (peakWhileHeld - baseline) / 1024 / 1024;
    assert.ok(grewMiB < 25, `the front grew by ${grewMiB.toFixed(1)} MiB while the client held a 50 MiB response`);
  });

  await t.test('a client that disconnects mid-response: the app sees the request aborted', async () => {
    const before = await stats();
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(server.port, '127.0.0.1', () => socket.write('GET /app/forever HTTP/1.1\r\nHost: x\r\n\r\n'));
      let received = 0;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > 256 * 1024) {
          socket.destroy();
          resolve();
        }
      });
      socket.on('error', reject);
    });
    const after = await waitFor(async () => {
      const now = await stats();
      return now.aborted > before.aborted && now;
    }, 'the app to see the request aborted');
    assert.equal(after.aborted, before.aborted + 1);
  });
});

test('keep-alive to the application: connections reused by default, one per request with keep-alive = false', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-fcgi-keep-');
  const app = await startTestApp(t, dir);
  const appPath = (app.address as { path: string }).path;
  // One counting proxy per route, so each route's connections are counted apart.
  const kept = await countingProxy(t, appPath);
  const closed = await countingProxy(t, appPath);
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `access-log = "off"
[[fastcgi]]
url = "/kept/"
upstreams = ["${kept.address}"]
script-filename = "${join(dir, 'app.js')}"

[[fastcgi]]
url = "/closed/"
upstreams = ["${closed.address}"]
script-filename = "${join(dir, 'app.js')}"
keep-alive = false
`,
  );
  const server = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')]);
  for (const [route, proxy, expected] of [
    ['/kept/', kept, 0],
    ['/closed/', closed, 3],
  ] as const) {
    // The first request also makes the capability probe's connection: count from after it.
    assert.equal((await httpRequest(`${server.base}${route}stats`)).status, 200);
    await waitFor(() => proxy.accepted() >= 2, `${route}: the request's and the probe's connections`);
    const before = proxy.accepted();
    for (let i = 0; i < 3; i++) {
      const response = await httpRequest(`${server.base}${route}stats`);
      assert.equal(response.status, 200, `${route}: ${response.body.toString()}`);
    }
    assert.equal(proxy.accepted() - before, expected, `${route}: new connections for 3 sequential requests`);
  }
});

test('regression: an IPv4 client on a dual-stack listener is REMOTE_ADDR a.b.c.d on FastCGI routes too, as on CGI routes', async (t) => {
  const dir = tempDir(t, 'gatehouse-fcgi-dualstack-');
  const app = await startTestApp(t, dir);
  const handler = fastcgi({
    urlPrefix: '/',
    upstreams: [`unix:${(app.address as { path: string }).path}`],
    documentRoot: dir,
    scriptFilename: join(dir, 'app.js'),
    errorLog: () => {},
  });
  const server = http.createServer((req, res) => handler(req, res));
  server.listen(0, '::');
  await once(server, 'listening');
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await handler.close();
  });
  // php-fpm used to get ::ffff:127.0.0.1 here while a CGI script on the same listener got 127.0.0.1.
  const response = await httpRequest(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}/env`);
  assert.equal(response.status, 200);
  const { params } = JSON.parse(response.body.toString()) as { params: Record<string, string> };
  assert.equal(params.REMOTE_ADDR, '127.0.0.1');
  assert.equal(params.SERVER_ADDR, '127.0.0.1');
});

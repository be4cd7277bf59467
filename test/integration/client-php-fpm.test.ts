/**
 * The FastCGI client against Debian's php-fpm 8.2: the application that sends
 * no empty STDOUT before END_REQUEST, fills END_REQUEST's reserved bytes, and
 * answers GET_VALUES with FCGI_MPXS_CONNS=0 only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { FastCGIClient, type UpstreamError, ErrorCode } from '../../src/fastcgi/client/index.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { tempDir, type Cleanup } from '../kit/process.js';
import { countingProxy } from '../kit/counting-proxy.js';
import { blockedWriting, childrenOf, wchan } from '../kit/proc.js';
import { waitFor, waitForText } from '../kit/wait.js';

const SCRIPTS = {
  'hello.php': '<?php header("Content-Type: text/plain"); echo "hello from php-fpm";',
  'echo.php': `<?php
header('Content-Type: application/octet-stream');
$in = fopen('php://input', 'rb');
$total = 0;
while (!feof($in)) { $chunk = fread($in, 65536); $total += strlen($chunk); echo $chunk; }
error_log("echoed $total bytes");`,
  'big.php': `<?php
header('Content-Type: application/octet-stream');
$chunk = str_repeat('0123456789abcdef', 4096);
$count = intval($_GET['chunks'] ?? 320);
for ($i = 0; $i < $count; $i++) { echo $chunk; flush(); }`,
  'stderr.php': `<?php
error_log('via error_log');
$raw = fopen('php://stderr', 'w'); fwrite($raw, "via php://stderr\\n"); fclose($raw);
echo 'done';`,
  'slow.php': `<?php
echo "first part\\n"; flush();
usleep(intval($_GET['ms'] ?? 5000) * 1000);
echo "second part\\n";`,
  'pid.php': '<?php echo getmypid();',
  'nap.php': '<?php usleep(intval($_GET["ms"] ?? 0) * 1000); echo "rested";',
};

function cgiParams(
  scriptFilename: string,
  options: { method?: string; query?: string; contentLength?: number } = {},
): Record<string, string> {
  const name = `/${scriptFilename.split('/').pop()}`;
  return {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_SOFTWARE: 'gatehouse-test',
    SERVER_NAME: 'localhost',
    SERVER_PORT: '80',
    REMOTE_ADDR: '127.0.0.1',
    REQUEST_METHOD: options.method ?? 'GET',
    SCRIPT_FILENAME: scriptFilename,
    SCRIPT_NAME: name,
    REQUEST_URI: name + (options.query ? `?${options.query}` : ''),
    QUERY_STRING: options.query ?? '',
    CONTENT_LENGTH: options.contentLength === undefined ? '' : String(options.contentLength),
    CONTENT_TYPE: options.contentLength === undefined ? '' : 'application/octet-stream',
  };
}

/** Splits a CGI response into its head lines and body. */
function splitCgi(stdout: Buffer): { head: string; body: Buffer } {
  const end = stdout.indexOf('\r\n\r\n');
  assert.ok(end >= 0, `no CGI head in ${JSON.stringify(stdout.subarray(0, 200).toString())}`);
  return { head: stdout.subarray(0, end).toString('latin1'), body: stdout.subarray(end + 4) };
}

function newClient(t: Cleanup, address: string, options: Partial<ConstructorParameters<typeof FastCGIClient>[0]> = {}): FastCGIClient {
  const client = new FastCGIClient({ address, ...options });
  t.after(() => client.close());
  return client;
}

test('php-fpm: hello, over a unix socket and over TCP', async (t) => {
  for (const port of [undefined, 0]) {
    const fpm = await startPhpFpm(t, {
      scripts: SCRIPTS,
      ...(port === 0 ? { port: await (await import('../kit/process.js')).freePort() } : {}),
    });
    const client = newClient(t, fpm.addressString);
    const result = await client.fetchAll({ params: cgiParams(fpm.script('hello.php')) });
    const { head, body } = splitCgi(result.stdout);
    assert.match(head, /Content-type: text\/plain/i);
    assert.equal(body.toString(), 'hello from php-fpm');
    assert.equal(result.appStatus, 0);
    assert.equal(result.protocolStatus, 0);
  }
});

test('php-fpm: a POST body is echoed byte for byte, small and 5 MB streamed', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS });
  const client = newClient(t, fpm.addressString);
  const small = Buffer.from('name=value&x=1');
  const smallResult = await client.fetchAll({
    params: cgiParams(fpm.script('echo.php'), { method: 'POST', contentLength: small.length }),
    body: small,
  });
  assert.deepEqual(splitCgi(smallResult.stdout).body, small);

  const size = 5 * 1024 * 1024;
  const big = Buffer.alloc(size);
  for (let i = 0; i < size; i++) big[i] = (i * 7919) & 0xff;
  async function* slices() {
    // Uneven chunk sizes, so records are cut at every kind of boundary.
    for (let offset = 0; offset < size; ) {
      const length = Math.min(1000 + ((offset / 1000) % 70_000), size - offset);
      yield big.subarray(offset, offset + length);
      offset += length;
    }
  }
  const stderr: string[] = [];
  const response = client.request({ params: cgiParams(fpm.script('echo.php'), { method: 'POST', contentLength: size }), body: slices() });
  response.on('stderr', (chunk: Buffer) => stderr.push(chunk.toString()));
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  await response.completion;
  assert.ok(splitCgi(Buffer.concat(chunks)).body.equals(big), 'the echoed body differs from the one sent');
  assert.match(stderr.join(''), new RegExp(`echoed ${size} bytes`));
});

test('php-fpm: a 20 MB response left unread keeps the client buffer bounded and php-fpm waiting', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS });
  const client = newClient(t, fpm.addressString);
  const chunkSize = 64 * 1024;
  const chunks = 320; // 20 MiB
  const response = client.request({ params: cgiParams(fpm.script('big.php'), { query: `chunks=${chunks}` }) });
  // Read nothing until php-fpm is held up: blocked writing to the connection, with nothing more arrived between two
  // looks (the event loop ran in between: a client that kept reading would have taken more). Or until all of it sits
  // in the stream, which only a client without backpressure would take.
  let previous = -1;
  await waitFor(
    () => {
      const stuck = childrenOf(fpm.child.pid!).some(blockedWriting) && response.readableLength === previous;
      previous = response.readableLength;
      return stuck || response.readableLength >= chunks * chunkSize;
    },
    'php-fpm to be held up by the unread response',
    { context: () => `buffered ${response.readableLength}; php-fpm workers in ${childrenOf(fpm.child.pid!).map(wchan).join(', ')}` },
  );
  // High-water mark (64 KiB) plus at most one socket read of records.
  const buffered = response.readableLength;
  assert.ok(buffered <= 512 * 1024, `response buffered ${buffered} bytes at once; backpressure did not hold`);
  let received = 0;
  for await (const chunk of response) received += (chunk as Buffer).length;
  const end = await response.completion;
  assert.equal(end.appStatus, 0);
  const headLength = received - chunks * chunkSize;
  assert.ok(headLength > 0 && headLength < 200, `expected 20 MiB plus a short head, got ${received} bytes`);
});

test('php-fpm: error_log() output arrives as FCGI_STDERR, php://stderr goes to the php-fpm log', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS });
  const client = newClient(t, fpm.addressString);
  const result = await client.fetchAll({ params: cgiParams(fpm.script('stderr.php')) });
  assert.equal(splitCgi(result.stdout).body.toString(), 'done');
  assert.match(result.stderr.toString(), /via error_log/);
  // The worker's own stderr is a pipe to the master (catch_workers_output), not the FastCGI connection.
  assert.doesNotMatch(result.stderr.toString(), /via php:\/\/stderr/);
  await waitForText(fpm.errorLog, 'via php://stderr', 'the php://stderr line in the php-fpm log');
});

test('php-fpm: keep-alive reuses one connection for sequential requests (accepts counted on a proxy)', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 2 });
  const { path: proxyPath, accepted } = await countingProxy(t, (fpm.address as { path: string }).path);
  const client = newClient(t, `unix:${proxyPath}`, { probe: false });
  for (let i = 0; i < 10; i++) {
    const result = await client.fetchAll({ params: cgiParams(fpm.script('hello.php')) });
    assert.equal(splitCgi(result.stdout).body.toString(), 'hello from php-fpm');
  }
  assert.equal(accepted(), 1, 'ten sequential requests should share one kept-alive connection');
  assert.equal(client.stats.opened, 1);

  const noKeepAlive = newClient(t, `unix:${proxyPath}`, { probe: false, keepAlive: false });
  for (let i = 0; i < 3; i++) await noKeepAlive.fetchAll({ params: cgiParams(fpm.script('hello.php')) });
  assert.equal(accepted(), 4, 'without keep-alive each request has its own connection');
});

test('php-fpm: the probe learns FCGI_MPXS_CONNS=0 and requests never share a connection', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 3 });
  const client = newClient(t, fpm.addressString, { maxConnections: 3 });
  const capabilities = await client.capabilities();
  assert.deepEqual(capabilities, { multiplexes: false });
  const results = await Promise.all(
    Array.from({ length: 6 }, () => client.fetchAll({ params: cgiParams(fpm.script('slow.php'), { query: 'ms=100' }) })),
  );
  for (const result of results) assert.match(result.stdout.toString(), /first part\nsecond part/);
  assert.equal(client.stats.opened, 3, 'six concurrent requests over a cap of three connections');
});

test('php-fpm: more requests in flight than workers, default pool: no request starves behind idle kept-alive connections', async (t) => {
  // php-fpm states no FCGI_MAX_CONNS, so the pool opens a connection per request in flight (6) for 2 workers; each worker
  // keeps serving its kept-alive connection, and the other connections wait unaccepted in the listen queue.
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 2 });
  const client = newClient(t, fpm.addressString, { idleTimeoutMs: 4000 });
  // Busy lanes for longer than the timeout: lanes whose connections were accepted would otherwise keep them for ever.
  const deadline = Date.now() + 5000;
  const results = await Promise.all(
    Array.from({ length: 6 }, async (_, lane) => {
      for (let i = 0; i < 5 || (Date.now() < deadline && i < 100_000); i++) {
        const result = await client.fetchAll({ params: cgiParams(fpm.script('hello.php'), { query: `lane=${lane}&i=${i}` }) });
        assert.equal(splitCgi(result.stdout).body.toString(), 'hello from php-fpm');
      }
      return lane;
    }),
  );
  assert.equal(results.length, 6);
});

test('php-fpm: as many lanes as connections and workers keep their connections (no needless reconnects)', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 2 });
  const client = newClient(t, fpm.addressString, { maxConnections: 2, probe: false });
  await Promise.all(
    Array.from({ length: 2 }, async () => {
      // nap.php answers nothing until it is done, so the other lane's request is always unanswered when one finishes.
      for (let i = 0; i < 20; i++) await client.fetchAll({ params: cgiParams(fpm.script('nap.php'), { query: `ms=${(i % 3) * 5}` }) });
    }),
  );
  assert.equal(client.stats.opened, 2);
});

test('php-fpm recycling workers (pm.max_requests = 2): every request succeeds over kept-alive connections', async (t) => {
  // A recycled worker closes its kept-alive connection after END_REQUEST; a request already sent on it is retried once
  // on a new connection (nothing of it reached a script), and the others see the close while the connection is idle.
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 2, poolConfig: 'pm.max_requests = 2' });
  const client = newClient(t, fpm.addressString, { probe: false });
  const pids = new Set<string>();
  for (let i = 0; i < 20; i++)
    pids.add((await client.fetchAll({ params: cgiParams(fpm.script('pid.php')) })).stdout.toString().split('\r\n\r\n')[1]!);
  const lanes = await Promise.all(
    Array.from({ length: 2 }, async () => {
      for (let i = 0; i < 10; i++)
        pids.add((await client.fetchAll({ params: cgiParams(fpm.script('pid.php')) })).stdout.toString().split('\r\n\r\n')[1]!);
      return true;
    }),
  );
  assert.deepEqual(lanes, [true, true]);
  assert.ok(pids.size >= 10, `workers were recycled (${pids.size} distinct pids for 40 requests)`);
});

test('php-fpm: the wait queue is bounded: past it UPSTREAM_QUEUE_FULL', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 1 });
  const client = newClient(t, fpm.addressString, { maxConnections: 1, maxQueued: 2, probe: false });
  const params = cgiParams(fpm.script('slow.php'), { query: 'ms=300' });
  const running = [client.fetchAll({ params }), client.fetchAll({ params }), client.fetchAll({ params })];
  await assert.rejects(client.fetchAll({ params }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_QUEUE_FULL);
    assert.match(error.message, /unix:.*php-fpm\.sock/);
    return true;
  });
  for (const result of await Promise.all(running)) assert.match(result.stdout.toString(), /second part/);
});

test('php-fpm: no data within idleTimeoutMs is UPSTREAM_TIMEOUT, and the next request still works', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 2 });
  const client = newClient(t, fpm.addressString, { idleTimeoutMs: 300, abortGraceMs: 200 });
  await assert.rejects(client.fetchAll({ params: cgiParams(fpm.script('slow.php'), { query: 'ms=3000' }) }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_TIMEOUT);
    assert.match(error.message, /no data from the application for 300 ms/);
    return true;
  });
  const result = await client.fetchAll({ params: cgiParams(fpm.script('hello.php')) });
  assert.equal(splitCgi(result.stdout).body.toString(), 'hello from php-fpm');
});

test('php-fpm: aborting mid-response rejects with REQUEST_ABORTED and frees the connection', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 1 });
  const client = newClient(t, fpm.addressString, { maxConnections: 1, abortGraceMs: 200, probe: false });
  const controller = new AbortController();
  const response = client.request({ params: cgiParams(fpm.script('slow.php'), { query: 'ms=2000' }), signal: controller.signal });
  response.on('error', () => {});
  const first = await new Promise<Buffer>((resolve) => response.once('data', resolve));
  assert.match(first.toString(), /first part/);
  controller.abort();
  await assert.rejects(response.completion, (error: UpstreamError) => error.code === ErrorCode.REQUEST_ABORTED);
  // php-fpm finishes the script before it reads ABORT_REQUEST, so the grace runs out and the connection is dropped; the
  // single php-fpm child then serves the next request.
  const result = await client.fetchAll({ params: cgiParams(fpm.script('hello.php')) });
  assert.equal(splitCgi(result.stdout).body.toString(), 'hello from php-fpm');
});

test('php-fpm killed mid-response: UPSTREAM_RESET naming the upstream', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: SCRIPTS, children: 1 });
  const client = newClient(t, fpm.addressString, { probe: false });
  const response = client.request({ params: cgiParams(fpm.script('slow.php'), { query: 'ms=5000' }) });
  response.on('error', () => {});
  await new Promise((resolve) => response.once('data', resolve));
  // Kill the worker serving the request (found before the master, whose children it is), then the master.
  await killPhpFpmWorkers(fpm.child.pid!);
  fpm.child.kill('SIGKILL');
  await assert.rejects(response.completion, (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_RESET);
    assert.ok(error.message.startsWith(fpm.addressString), error.message);
    return true;
  });
});

test('refused connection: UPSTREAM_REFUSED naming the socket', async (t) => {
  const dir = tempDir(t);
  const client = newClient(t, `unix:${join(dir, 'nobody-listens.sock')}`);
  await assert.rejects(client.fetchAll({ params: { REQUEST_METHOD: 'GET' } }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_REFUSED);
    assert.match(error.message, /nobody-listens\.sock: cannot connect \(ENOENT\)/);
    return true;
  });
  const port = await (await import('../kit/process.js')).freePort();
  const tcp = newClient(t, `127.0.0.1:${port}`);
  await assert.rejects(tcp.fetchAll({ params: { REQUEST_METHOD: 'GET' } }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_REFUSED);
    assert.match(error.message, /ECONNREFUSED/);
    return true;
  });
});

test('a pair too large for one record is FCGI_PAIR_TOO_LARGE, thrown before anything is sent', async (t) => {
  const client = newClient(t, 'unix:/nonexistent.sock');
  assert.throws(
    () => client.request({ params: { HTTP_COOKIE: 'x'.repeat(70_000) } }),
    (error: UpstreamError) => error.code === ErrorCode.FCGI_PAIR_TOO_LARGE && /HTTP_COOKIE/.test(error.message),
  );
  assert.equal(client.stats.opened, 0);
});

/** Kills the php-fpm master's children, found through /proc (no procps needed on a fresh machine). */
async function killPhpFpmWorkers(masterPid: number): Promise<void> {
  const { readdirSync, readFileSync: read } = await import('node:fs');
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = read(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // Fields after the command name (which may hold spaces, inside parentheses): state, ppid, ...
    const parentPid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (parentPid !== masterPid) continue;
    try {
      process.kill(Number(entry), 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

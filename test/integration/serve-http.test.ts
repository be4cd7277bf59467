/**
 * HTTP/1.1 done safely by `gatehouse serve`, checked with raw sockets: framing
 * that could smuggle a request is refused and the connection closed; limits on
 * the request line and head; pipelined requests answered in order; a slow
 * client cut off by headers-timeout while others are served.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { CGI_FIXTURES } from '../kit/paths.js';
import { rawExchange, statusCodes } from '../kit/raw-http.js';
import { startGatehouse, type RunningServe } from '../kit/serve.js';
import { waitFor, waitForText } from '../kit/wait.js';

async function startSite(t: { after(fn: () => unknown): void }): Promise<RunningServe & { errorLog: string; accessLog: string }> {
  const dir = tempDir(t, 'gatehouse-serve-http-');
  mkdirSync(join(dir, 'www'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  writeFileSync(join(dir, 'www', 'b.txt'), 'file b\n');
  mkdirSync(join(dir, 'cgi'));
  for (const name of ['echo.sh', 'env.sh', 'stream.sh']) copyFileSync(join(CGI_FIXTURES, name), join(dir, 'cgi', name));
  // Reads the whole body before it answers.
  writeFileSync(
    join(dir, 'cgi', 'read-all.sh'),
    '#!/bin/sh\nbytes=$(wc -c)\nprintf "Content-Type: text/plain\\n\\nread %s bytes\\n" "$bytes"\n',
    { mode: 0o755 },
  );
  const errorLog = join(dir, 'error.log');
  const accessLog = join(dir, 'access.log');
  const server = await startGatehouse(t, 'serve', [
    '--docroot',
    join(dir, 'www'),
    '--cgi-bin',
    join(dir, 'cgi'),
    '--headers-timeout',
    '1s',
    '--request-timeout',
    '3s',
    '--max-body',
    '100000',
    '--error-log',
    errorLog,
    '--access-log',
    accessLog,
  ]);
  return { ...server, errorLog, accessLog };
}

const SMUGGLED = 'GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n';

test('HTTP/1.1 framing and limits against gatehouse serve', async (t) => {
  const site = await startSite(t);

  await t.test('Content-Length with Transfer-Encoding: 400, connection closed, the smuggled request never answered', async () => {
    const body = `0\r\n\r\n${SMUGGLED}`;
    const result = await rawExchange(
      site.port,
      `POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n\r\n${body}`,
    );
    assert.deepEqual(statusCodes(result.text), [400], result.text);
    assert.equal(result.closedByServer, true);
    assert.ok(!result.text.includes('file b'));
  });

  await t.test('two different Content-Lengths: 400 and closed', async () => {
    const result = await rawExchange(
      site.port,
      `POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: ${3 + SMUGGLED.length}\r\n\r\nabc${SMUGGLED}`,
    );
    assert.deepEqual(statusCodes(result.text), [400], result.text);
    assert.equal(result.closedByServer, true);
  });

  await t.test('a Content-Length that is not a number: 400 and closed', async () => {
    const result = await rawExchange(site.port, 'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd');
    assert.deepEqual(statusCodes(result.text), [400], result.text);
    assert.equal(result.closedByServer, true);
  });

  await t.test('obsolete line folding: 400 and closed', async () => {
    const result = await rawExchange(site.port, 'GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n  two\r\n\r\n');
    assert.deepEqual(statusCodes(result.text), [400], result.text);
    assert.equal(result.closedByServer, true);
  });

  await t.test('a request target over max-url-bytes: 414, also when it is longer than the whole head limit', async () => {
    for (const length of [9000, 20_000, 70_000]) {
      const target = `/${'a'.repeat(length)}`;
      const result = await rawExchange(site.port, `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.deepEqual(statusCodes(result.text), [414], `target of ${length} bytes: ${result.text.slice(0, 200)}`);
      assert.equal(result.closedByServer, true);
    }
    // Just under the limit is an ordinary request (a 404 for a file that does not exist).
    const fits = await rawExchange(site.port, `GET /${'a'.repeat(8000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.deepEqual(statusCodes(fits.text), [404]);
  });

  await t.test('an oversized head: 431 and closed', async () => {
    const result = await rawExchange(site.port, `GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`);
    assert.deepEqual(statusCodes(result.text), [431], result.text.slice(0, 200));
    assert.equal(result.closedByServer, true);
    const many = Array.from({ length: 3000 }, (_, i) => `X-H${i}: v\r\n`).join('');
    const manyResult = await rawExchange(site.port, `GET /a.txt HTTP/1.1\r\nHost: x\r\n${many}\r\n`);
    assert.deepEqual(statusCodes(manyResult.text), [431]);
  });

  await t.test('keep-alive: pipelined requests are answered in order, a slow CGI script holding the ones behind it', async () => {
    const pipelined =
      'GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n' +
      'GET /cgi-bin/stream.sh HTTP/1.1\r\nHost: x\r\n\r\n' +
      'GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n' +
      'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
      'GET /a.txt?last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';
    const result = await rawExchange(site.port, pipelined, { waitMs: 15_000 });
    assert.equal(result.closedByServer, true, 'Connection: close on the last request closes the connection');
    assert.deepEqual(statusCodes(result.text), [200, 200, 200, 200, 200], result.text);
    const order = ['file a', 'line 1', 'line 5', 'file b', 'hello', 'file a'];
    let from = 0;
    for (const marker of order) {
      const at = result.text.indexOf(marker, from);
      assert.ok(at >= from, `"${marker}" should come after position ${from} in:\n${result.text}`);
      from = at + marker.length;
    }
  });

  await t.test('a slow client that never finishes its head is cut off by headers-timeout; others are served meanwhile', async () => {
    // A slowloris: the head trickles in a byte at a time and never ends.
    const trickle: Array<string | number> = ['GET /a.txt HTTP/1.1\r\nHost: x\r\n'];
    for (let i = 0; i < 40; i++) trickle.push(200, 'X');
    const slow = rawExchange(site.port, trickle, { waitMs: 12_000 });
    const stalled = rawExchange(site.port, 'GET /a.txt HTTP/1.1\r\nHost: x\r\n', { waitMs: 12_000 });
    for (let i = 0; i < 5; i++) {
      const other = await httpRequest(`${site.base}/b.txt`);
      assert.equal(other.status, 200);
      assert.equal(other.body.toString(), 'file b\n');
    }
    for (const [name, exchange] of [
      ['trickling', await slow],
      ['stalled', await stalled],
    ] as const) {
      // Closed well before the 8 s the trickle would take, or the 12 s this test waits.
      assert.equal(exchange.closedByServer, true, `the ${name} client was not cut off`);
      assert.deepEqual(statusCodes(exchange.text), [408], `${name}: ${exchange.text}`);
    }
    const after = await httpRequest(`${site.base}/a.txt`);
    assert.equal(after.status, 200);
  });

  await t.test('Expect: 100-continue: the 100 comes before the body is sent; a body over max-body gets 413 without it', async () => {
    const socket = net.connect(site.port, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    const closed = new Promise((resolve) => socket.on('close', resolve));
    socket.write('POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n');
    const continued = await waitFor(() => text.includes('\r\n\r\n') && text, 'the 100 Continue');
    assert.match(continued, /^HTTP\/1\.1 100 Continue\r\n\r\n$/);
    socket.write('hello');
    await closed;
    assert.deepEqual(statusCodes(text), [100, 200]);
    assert.match(text, /\r\n\r\n5\r\nhello\r\n0\r\n\r\n$/);

    const tooBig = await rawExchange(
      site.port,
      'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 200000\r\n\r\n',
    );
    assert.deepEqual(statusCodes(tooBig.text), [413], tooBig.text);
    assert.equal(tooBig.closedByServer, true);
  });

  await t.test('a body slower than request-timeout: 408 if the script has not answered yet', async () => {
    const result = await rawExchange(site.port, 'POST /cgi-bin/read-all.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b', {
      waitMs: 12_000,
    });
    assert.equal(result.closedByServer, true);
    assert.deepEqual(statusCodes(result.text), [408], result.text);
  });

  await t.test('absolute-form targets (RFC 9112 3.2.2: a server must accept them) are served as their path', async () => {
    const result = await rawExchange(
      site.port,
      `GET http://127.0.0.1:${site.port}/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual(statusCodes(result.text), [200], result.text);
    assert.match(result.text, /\r\n\r\nfile a\n$/);
    const script = await rawExchange(
      site.port,
      `GET http://127.0.0.1:${site.port}/cgi-bin/env.sh/p?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual(statusCodes(script.text), [200]);
    assert.match(script.text, /^REQUEST_URI=\/cgi-bin\/env\.sh\/p\?q=1$/m);
    assert.match(script.text, /^PATH_INFO=\/p$/m);
    const odd = await rawExchange(site.port, 'GET ftp://x/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.deepEqual(statusCodes(odd.text), [400]);
  });

  await t.test('RFC 9112 3.2: two Host headers, or a Host that is not a host, are answered 400 and the connection closed', async () => {
    for (const hosts of ['Host: a\r\nHost: a\r\n', 'Host: a\r\nHost: b\r\n', 'Host: a b\r\n']) {
      const result = await rawExchange(site.port, `GET /cgi-bin/env.sh HTTP/1.1\r\n${hosts}\r\n`);
      assert.deepEqual(statusCodes(result.text), [400], `${JSON.stringify(hosts)}: ${result.text}`);
      assert.equal(result.closedByServer, true);
      assert.ok(!result.text.includes('HTTP_HOST'), 'the script never ran');
    }
  });

  await t.test("RFC 9112 3.2.2: an absolute-form target's host wins over the Host header (SERVER_NAME, HTTP_HOST)", async () => {
    const result = await rawExchange(
      site.port,
      'GET http://target.example:8080/cgi-bin/env.sh HTTP/1.1\r\nHost: header.example\r\nConnection: close\r\n\r\n',
    );
    assert.deepEqual(statusCodes(result.text), [200], result.text);
    assert.match(result.text, /^SERVER_NAME=target\.example$/m);
    assert.match(result.text, /^SERVER_PORT=8080$/m);
    assert.match(result.text, /^HTTP_HOST=target\.example:8080$/m);
    assert.match(result.text, /^REQUEST_URI=\/cgi-bin\/env\.sh$/m);
  });

  await t.test('a chunk announced above max-body (2^64-1 bytes) is refused at once with 413, not waited for', async () => {
    // Nothing follows the chunk-size line: without the refusal the exchange would sit until request-timeout.
    const result = await rawExchange(
      site.port,
      'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n',
    );
    assert.deepEqual(statusCodes(result.text), [413], result.text);
    assert.equal(result.closedByServer, true);
    // Smaller chunks adding up past the limit (100000 bytes here) are refused the same way, before their data comes.
    const summed = await rawExchange(
      site.port,
      'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n186a0\r\n',
    );
    assert.deepEqual(statusCodes(summed.text), [413], summed.text);
  });

  await t.test('the chunk-size guard never refuses what is not a chunk-size line: look-alikes in bodies, pipelined requests', async () => {
    const lookAlike = 'ffffffffffffffff\r\n';
    const result = await rawExchange(site.port, [
      `POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: ${lookAlike.length}\r\n\r\n${lookAlike}`,
      `POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${lookAlike.length.toString(16)};ext=1\r\n${lookAlike}\r\n0\r\nX-Trailer: ffffffffffffffff\r\n\r\n`,
      'GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ]);
    assert.deepEqual(statusCodes(result.text), [200, 200, 200], result.text);
    assert.equal(result.text.split(lookAlike).length - 1, 2, 'both bodies were echoed whole');
  });

  await t.test('refused requests are named in the error log', async () => {
    const log = await waitForText(site.errorLog, 'HPE_HEADER_OVERFLOW', 'the refused oversized head in the error log');
    assert.match(log, /http: bad request from 127\.0\.0\.1: HPE_UNEXPECTED_CONTENT_LENGTH /);
    assert.match(log, /http: bad request from 127\.0\.0\.1: HPE_HEADER_OVERFLOW /);
    assert.match(log, /request target of 9001 bytes from 127\.0\.0\.1 exceeds max-url-bytes \(8190\): 414/);
  });

  await t.test('refused requests are in the access log too, as Apache logs them', async () => {
    const log = await waitForText(site.accessLog, '" 408 -', 'a 408 line in the access log');
    for (const status of [400, 408, 414, 431]) {
      assert.match(log, new RegExp(`^127\\.0\\.0\\.1 - - \\[[^\\]]+\\] "[^"]*" ${status} `, 'm'), `no ${status} line in:\n${log}`);
    }
    assert.match(log, /^127\.0\.0\.1 - - \[[^\]]+\] "-" 431 - "-" "-"$/m);
  });
});

/**
 * The request description read from node:http (src/cgi/http-request.ts):
 * Host as RFC 9112 3.2 wants it, the absolute-form's host winning over the
 * header (3.2.2), and addresses as scripts see them. The reading itself is
 * checked on real requests through a node:http server on loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { isValidHost, plainAddress, readHttpRequest, splitAbsoluteForm, type HttpRequestReading } from '../../src/cgi/http-request.js';

test('Host values: a host, an IPv4 or bracketed IPv6 address, a port, or empty; nothing else', () => {
  for (const valid of [
    'example.org',
    'EXAMPLE.org:8080',
    '127.0.0.1',
    '127.0.0.1:',
    '[::1]',
    '[::1]:80',
    '[v1.x]',
    'a_b-c.~d',
    'xn--nxasmq6b',
    '%41bc',
    '',
  ])
    assert.ok(isValidHost(valid), JSON.stringify(valid));
  for (const invalid of ['a b', 'a/b', 'user@host', '[::1', '::1', 'a:b', 'a:80:80', '%zz', 'a\tb', '[::1]x'])
    assert.ok(!isValidHost(invalid), JSON.stringify(invalid));
});

test('absolute-form targets: http and https only, userinfo dropped, an empty path is "/"', () => {
  assert.deepEqual(splitAbsoluteForm('http://example.org/a?b=1'), { authority: 'example.org', originForm: '/a?b=1' });
  assert.deepEqual(splitAbsoluteForm('HTTPS://Example.org:8443'), { authority: 'Example.org:8443', originForm: '/' });
  assert.deepEqual(splitAbsoluteForm('http://u:p@example.org?q'), { authority: 'example.org', originForm: '/?q' });
  assert.equal(splitAbsoluteForm('/a'), null);
  assert.equal(splitAbsoluteForm('ftp://x/a'), null);
});

test('an IPv4 client of a dual-stack socket is a.b.c.d; IPv6 addresses stay', () => {
  assert.equal(plainAddress('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(plainAddress('::1'), '::1');
  assert.equal(plainAddress('::ffff:abcd'), '::ffff:abcd');
  assert.equal(plainAddress(undefined), '');
});

/** Sends `head` to a node:http server and returns what readHttpRequest made of it. */
async function readingOf(head: string): Promise<HttpRequestReading> {
  let reading: HttpRequestReading | undefined;
  const server = http.createServer((req, res) => {
    reading = readHttpRequest(req);
    // Read twice: the same reading (the front and its handler share it).
    assert.equal(readHttpRequest(req), reading);
    res.end();
  });
  server.listen(0, '::');
  await once(server, 'listening');
  const socket = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(`${head}\r\n\r\n`);
  socket.resume();
  await once(socket, 'close');
  server.close();
  assert.ok(reading, 'the request reached the server');
  return reading;
}

test('two Host headers, or a Host that is not a host: refused with 400 (RFC 9112 3.2)', async () => {
  const twice = await readingOf('GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\nConnection: close');
  assert.equal(twice.kind, 'refused');
  assert.equal(twice.kind === 'refused' && twice.status, 400);
  const spaced = await readingOf('GET / HTTP/1.1\r\nHost: a b\r\nConnection: close');
  assert.equal(spaced.kind, 'refused');
  const fine = await readingOf('GET / HTTP/1.1\r\nHost: a.example:81\r\nConnection: close');
  assert.equal(fine.kind, 'request');
});

test("an absolute-form target's host replaces the Host header; the client's address is a.b.c.d on a :: listener", async () => {
  const reading = await readingOf('GET http://target.example:8080/x HTTP/1.1\r\nHost: header.example\r\nX-A: 1\r\nConnection: close');
  assert.equal(reading.kind, 'request');
  if (reading.kind !== 'request') return;
  assert.deepEqual(reading.facts.headers, [
    ['Host', 'target.example:8080'],
    ['X-A', '1'],
    ['Connection', 'close'],
  ]);
  assert.equal(reading.facts.remoteAddress, '127.0.0.1');
  assert.equal(reading.facts.localAddress, '127.0.0.1');
  assert.equal(reading.facts.tls, false);
  const withoutHost = await readingOf('GET http://only.example/ HTTP/1.0\r\nConnection: close');
  assert.equal(withoutHost.kind === 'request' && withoutHost.facts.headers.find(([name]) => name === 'Host')?.[1], 'only.example');
  const noHost = await readingOf('GET http:///x HTTP/1.1\r\nHost: a\r\nConnection: close');
  assert.equal(noHost.kind, 'refused');
});

/** The value syntaxes of `gatehouse serve`: durations (mod_cgid style) and listen addresses. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_DURATION_MS, parseDuration } from '../../src/options/duration.js';
import { formatListenAddress, parseListenAddress } from '../../src/options/listen-address.js';

test('parseDuration: bare numbers are seconds, as CGIDScriptTimeout takes them', () => {
  assert.equal(parseDuration('20'), 20_000);
  assert.equal(parseDuration(20), 20_000);
  assert.equal(parseDuration(1.5), 1500);
  assert.equal(parseDuration('0'), 0);
  assert.equal(parseDuration(' 7 '), 7000);
});

test('parseDuration: ms, s, m and h suffixes', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('20s'), 20_000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('20 s'), 20_000);
});

test('parseDuration: garbage is an error message that says what to write', () => {
  for (const bad of ['', 'abc', '-1', '20x', '1e3', '20 seconds', 's', '1.s']) {
    const result = parseDuration(bad);
    assert.equal(typeof result, 'string', `${JSON.stringify(bad)} should be refused`);
    assert.match(result as string, /write 20 \(seconds\), 20s, 500ms/);
    assert.ok((result as string).includes(JSON.stringify(bad)), `the message quotes what was written: ${result}`);
  }
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) assert.equal(typeof parseDuration(bad), 'string');
});

test('regression: a duration longer than a Node timer can wait is refused, not turned into 1 ms', () => {
  // setTimeout(fn, 2 ** 31) fires after 1 ms: "600h" as a script timeout would have killed every script at once.
  assert.equal(parseDuration(`${MAX_DURATION_MS}ms`), MAX_DURATION_MS);
  assert.match(parseDuration('600h') as string, /longer than a timer can wait/);
  assert.match(parseDuration(`${MAX_DURATION_MS + 1}ms`) as string, /write a shorter time/);
  assert.match(parseDuration(3_000_000) as string, /longer than a timer can wait/);
});

test('parseListenAddress: IPv4, IPv6 in brackets, localhost, a bare :port, unix sockets', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseListenAddress('0.0.0.0:80'), { host: '0.0.0.0', port: 80 });
  assert.deepEqual(parseListenAddress('[::1]:8080'), { host: '::1', port: 8080 });
  assert.deepEqual(parseListenAddress('localhost:8080'), { host: 'localhost', port: 8080 });
  // A bare port listens on loopback only: exposing a server takes an explicit 0.0.0.0.
  assert.deepEqual(parseListenAddress(':8080'), { host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseListenAddress('unix:/run/gatehouse.sock'), { path: '/run/gatehouse.sock' });
});

test('parseListenAddress: mistakes name the address and say what to write', () => {
  const cases: Array<[string, RegExp]> = [
    ['8080', /write HOST:PORT/],
    ['127.0.0.1', /write HOST:PORT/],
    ['127.0.0.1:', /write HOST:PORT/],
    ['127.0.0.1:http', /write HOST:PORT/],
    ['::1:8080', /\[::1\]:8080/],
    ['[::1]', /write HOST:PORT/],
    ['127.0.0.1:65536', /port 65536 is above 65535/],
    ['example.com:80', /example\.com is not an IP address; write 127\.0\.0\.1/],
    ['unix:run/gatehouse.sock', /needs an absolute path, like unix:\/run/],
    ['unix:', /needs an absolute path/],
  ];
  for (const [text, message] of cases) {
    const result = parseListenAddress(text);
    assert.equal(typeof result, 'string', `${text} should be refused, got ${JSON.stringify(result)}`);
    assert.match(result as string, message, text);
    assert.ok((result as string).includes(text), `the message quotes ${text}: ${result}`);
  }
});

test('formatListenAddress round-trips what parseListenAddress reads', () => {
  for (const text of ['127.0.0.1:8080', '[::1]:8080', 'unix:/run/gatehouse.sock']) {
    const parsed = parseListenAddress(text);
    assert.notEqual(typeof parsed, 'string');
    assert.equal(formatListenAddress(parsed as Exclude<typeof parsed, string>), text);
  }
});

/**
 * The value grammars every command shares (src/options): durations (mod_cgid
 * style), sizes (nginx style), whole numbers with ranges, and socket
 * addresses by the grammar of each place that takes one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { MAX_DURATION_MS, parseDuration } from '../../src/options/duration.js';
import { parseSize } from '../../src/options/size.js';
import { readValue } from '../../src/options/values.js';
import { availableParallelism } from 'node:os';
import {
  formatListenAddress,
  KFCGI_SOCKET_ADDRESS,
  LISTEN_ADDRESS,
  parseListenAddress,
  UPSTREAM_ADDRESS,
} from '../../src/options/listen-address.js';

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

test('sizes: bytes, or K, M, G as powers of 1024 in either case', () => {
  assert.equal(parseSize('1048576'), 1048576);
  assert.equal(parseSize('512K'), 512 * 1024);
  assert.equal(parseSize('64m'), 64 * 1024 ** 2);
  assert.equal(parseSize('10M'), 10 * 1024 ** 2);
  assert.equal(parseSize('2G'), 2 * 1024 ** 3);
  assert.equal(parseSize(' 1g '), 1024 ** 3);
  assert.equal(parseSize(4096), 4096, 'a TOML number is bytes');
  assert.equal(parseSize(0), 0);
  for (const bad of ['1.5G', '-1', '10X', '', 'M', '10 MB', '0x10', '1e3']) {
    const result = parseSize(bad);
    assert.equal(typeof result, 'string', `${JSON.stringify(bad)} should be refused`);
    assert.match(result as string, /write bytes \(1048576\) or a number with K, M or G/);
  }
  for (const bad of [-1, 1.5, Number.NaN]) assert.equal(typeof parseSize(bad), 'string');
  assert.match(parseSize('99999999999G') as string, /too large/);
});

test('sizes: any whole number of K, M or G reads back as that many bytes', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 2 ** 20 }),
      fc.constantFrom(['', 1], ['k', 1024], ['K', 1024], ['M', 1024 ** 2], ['g', 1024 ** 3]),
      (count, [unit, factor]) => {
        assert.equal(parseSize(`${count}${unit}`), count * (factor as number));
      },
    ),
  );
});

test('whole numbers: ranges are part of the grammar, and the problem says what to write', () => {
  assert.deepEqual(readValue({ kind: 'integer' }, '42'), { value: 42 });
  assert.deepEqual(readValue({ kind: 'integer' }, 7), { value: 7 });
  assert.deepEqual(readValue({ kind: 'integer', min: 1, max: 4 }, '0'), { problem: 'expected a whole number from 1 to 4, got "0"' });
  assert.deepEqual(readValue({ kind: 'integer' }, -1), { problem: 'expected a whole number >= 0, got -1' });
  assert.deepEqual(readValue({ kind: 'integer' }, '10M'), { problem: 'expected a whole number >= 0, got "10M"' });
  assert.deepEqual(readValue({ kind: 'size' }, '10M'), { value: 10 * 1024 ** 2 });
  assert.deepEqual(readValue({ kind: 'duration', min: 1 }, '0'), { problem: 'must be longer than 0; write a time such as 60s or 500ms' });
  assert.deepEqual(readValue({ kind: 'choice', choices: ['a', 'b'] }, 'c'), { problem: '"c" is not one of a, b; write one of them' });
});

test('process counts: a whole number in range, or auto for one per core (capped at the maximum)', () => {
  const rule = { kind: 'processes', min: 1, max: 8 } as const;
  assert.deepEqual(readValue(rule, '3'), { value: 3 });
  assert.deepEqual(readValue(rule, 'auto'), { value: Math.min(availableParallelism(), 8) });
  assert.deepEqual(readValue({ kind: 'processes', min: 1, max: 1 }, 'auto'), { value: 1 });
  assert.deepEqual(readValue(rule, '0'), { problem: 'expected a whole number from 1 to 8, got "0", or auto (one per core)' });
  assert.deepEqual(readValue(rule, 'all'), { problem: 'expected a whole number from 1 to 8, got "all", or auto (one per core)' });
});

test('listen addresses: IPv4, IPv6 in brackets, localhost, a bare :port, *:port, unix sockets, inherited descriptors', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseListenAddress('0.0.0.0:80'), { kind: 'tcp', host: '0.0.0.0', port: 80 });
  assert.deepEqual(parseListenAddress('[::1]:8080'), { kind: 'tcp', host: '::1', port: 8080 });
  assert.deepEqual(parseListenAddress('[::ffff:127.0.0.1]:8080'), { kind: 'tcp', host: '::ffff:127.0.0.1', port: 8080 });
  // A listener binds numeric addresses: localhost is 127.0.0.1, whatever the resolver would answer first.
  assert.deepEqual(parseListenAddress('localhost:8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080 });
  // A bare port listens on loopback only: exposing a server takes an explicit 0.0.0.0 or *.
  assert.deepEqual(parseListenAddress(':8080'), { kind: 'tcp', host: '127.0.0.1', port: 8080 });
  assert.deepEqual(parseListenAddress('*:8080'), { kind: 'tcp', host: '0.0.0.0', port: 8080 });
  assert.deepEqual(parseListenAddress('127.0.0.1:0'), { kind: 'tcp', host: '127.0.0.1', port: 0 });
  assert.deepEqual(parseListenAddress('unix:/run/gatehouse.sock'), { kind: 'unix', path: '/run/gatehouse.sock' });
  assert.deepEqual(parseListenAddress('fd:3'), { kind: 'fd', fd: 3 });
});

test('listen addresses: mistakes name the address and say what to write', () => {
  const cases: Array<[string, RegExp]> = [
    ['8080', /write HOST:PORT/],
    ['127.0.0.1', /write HOST:PORT/],
    ['127.0.0.1:', /write HOST:PORT/],
    ['127.0.0.1:http', /write HOST:PORT/],
    ['::1:8080', /\[::1\]:8080/],
    ['[::1]', /write HOST:PORT/],
    ['[::1g]:80', /::1g is not an IPv6 address/],
    ['[1::2::3]:80', /is not an IPv6 address/],
    ['127.0.0.1:65536', /port 65536 is above 65535/],
    ['example.com:80', /example\.com is not an IP address; write 127\.0\.0\.1/],
    ['300.1.1.1:80', /300\.1\.1\.1 is not an IP address/],
    ['01.2.3.4:80', /is not an IP address/],
    ['unix:run/gatehouse.sock', /needs an absolute path, like unix:\/run/],
    ['unix:', /needs an absolute path/],
    ['/run/gatehouse.sock', /write HOST:PORT/],
    ['fd:', /write fd:N/],
    ['fd:x', /write fd:N/],
  ];
  for (const [text, message] of cases) {
    const result = parseListenAddress(text);
    assert.equal(typeof result, 'string', `${text} should be refused, got ${JSON.stringify(result)}`);
    assert.match(result as string, message, text);
    assert.ok((result as string).includes(text), `the message quotes ${text}: ${result}`);
  }
});

test("kfcgi's -s: any path (relative to the working directory), or HOST:PORT with a numeric host", () => {
  assert.deepEqual(parseListenAddress('/run/app.sock', KFCGI_SOCKET_ADDRESS), { kind: 'unix', path: '/run/app.sock' });
  assert.deepEqual(parseListenAddress('run/app.sock', KFCGI_SOCKET_ADDRESS), { kind: 'unix', path: path.resolve('run/app.sock') });
  // A path is a path even when it has a colon in it: only an address-like host makes a TCP address.
  assert.deepEqual(parseListenAddress('app:1', KFCGI_SOCKET_ADDRESS), { kind: 'unix', path: path.resolve('app:1') });
  assert.deepEqual(parseListenAddress('127.0.0.1:9000', KFCGI_SOCKET_ADDRESS), { kind: 'tcp', host: '127.0.0.1', port: 9000 });
  assert.deepEqual(parseListenAddress('[::1]:9001', KFCGI_SOCKET_ADDRESS), { kind: 'tcp', host: '::1', port: 9001 });
  assert.deepEqual(parseListenAddress('*:9000', KFCGI_SOCKET_ADDRESS), { kind: 'tcp', host: '0.0.0.0', port: 9000 });
  assert.match(parseListenAddress('127.0.0.1:0', KFCGI_SOCKET_ADDRESS) as string, /port must be from 1 to 65535/);
  assert.match(parseListenAddress('300.1.1.1:80', KFCGI_SOCKET_ADDRESS) as string, /not an IP address/);
  assert.match(parseListenAddress('fd:3', KFCGI_SOCKET_ADDRESS) as string, /inherited descriptor cannot be used here/);
  // kfcgi binds with its own bind(2), which takes no zone index.
  assert.match(parseListenAddress('[fe80::1%eth0]:9000', KFCGI_SOCKET_ADDRESS) as string, /zone index/);
});

test('FastCGI upstreams: unix: or an explicit path, host names, numeric hosts, no port 0 and no wildcard', () => {
  assert.deepEqual(parseListenAddress('unix:/run/php.sock', UPSTREAM_ADDRESS), { kind: 'unix', path: '/run/php.sock' });
  assert.deepEqual(parseListenAddress('/run/php.sock', UPSTREAM_ADDRESS), { kind: 'unix', path: '/run/php.sock' });
  assert.deepEqual(parseListenAddress('./php.sock', UPSTREAM_ADDRESS), { kind: 'unix', path: path.resolve('php.sock') });
  assert.deepEqual(parseListenAddress('php-fpm.internal:9000', UPSTREAM_ADDRESS), { kind: 'tcp', host: 'php-fpm.internal', port: 9000 });
  assert.deepEqual(parseListenAddress('localhost:9000', UPSTREAM_ADDRESS), { kind: 'tcp', host: 'localhost', port: 9000 });
  assert.match(parseListenAddress('php-fpm.sock', UPSTREAM_ADDRESS) as string, /is not an address/);
  assert.match(parseListenAddress('10.0.2:9000', UPSTREAM_ADDRESS) as string, /10\.0\.2 is not an IP address/);
  assert.match(parseListenAddress('127.0.0.1:0', UPSTREAM_ADDRESS) as string, /port must be from 1 to 65535/);
  assert.match(parseListenAddress('*:9000', UPSTREAM_ADDRESS) as string, /every interface\) is for listening/);
  assert.match(parseListenAddress('fd:3', UPSTREAM_ADDRESS) as string, /inherited descriptor/);
});

test('formatListenAddress writes what parseListenAddress reads back, for every grammar', () => {
  for (const text of ['127.0.0.1:8080', '[::1]:8080', 'unix:/run/gatehouse.sock', 'fd:3', '0.0.0.0:0']) {
    const parsed = parseListenAddress(text);
    assert.notEqual(typeof parsed, 'string');
    assert.equal(formatListenAddress(parsed as Exclude<typeof parsed, string>), text);
  }
  fc.assert(
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 1, max: 65535 }), (host, port) => {
      for (const grammar of [LISTEN_ADDRESS, KFCGI_SOCKET_ADDRESS, UPSTREAM_ADDRESS]) {
        const address = { kind: 'tcp' as const, host, port };
        assert.deepEqual(parseListenAddress(formatListenAddress(address), grammar), address);
      }
    }),
  );
});

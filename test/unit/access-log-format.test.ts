/**
 * access-log-format: Apache's combined format by default, byte for byte as
 * Apache writes it; the subset of LogFormat directives; what Apache escapes;
 * anything else refused with the list of what is supported.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ACCESS_LOG_DIRECTIVES,
  type AccessEntry,
  type AccessLineFormatter,
  apacheTime,
  compileAccessLogFormat,
} from '../../src/log/access-log-format.js';
import { loadServeConfig } from '../../src/config/load.js';
import { tempDir } from '../kit/process.js';

const entry: AccessEntry = {
  remoteAddress: '192.0.2.7',
  time: new Date(2026, 11, 2, 9, 23, 58),
  requestLine: 'GET /cgi-bin/env.sh?x=1 HTTP/1.1',
  status: 200,
  bodyBytes: 2326,
  headers: { referer: 'http://example.com/start', 'user-agent': 'curl/8.5.0', host: 'example.com' },
  durationMicros: 2_512_345.6,
};

function compiled(format: string): AccessLineFormatter {
  const result = compileAccessLogFormat(format);
  assert.equal(typeof result, 'function', JSON.stringify(result));
  return result as AccessLineFormatter;
}

test('combined (the default) and common, as Apache writes them', () => {
  const time = apacheTime(entry.time);
  assert.match(time, /^\[02\/Dec\/2026:09:23:58 [+-]\d{4}\]$/);
  assert.equal(
    compiled('combined')(entry),
    `192.0.2.7 - - ${time} "GET /cgi-bin/env.sh?x=1 HTTP/1.1" 200 2326 "http://example.com/start" "curl/8.5.0"`,
  );
  assert.equal(compiled('common')(entry), `192.0.2.7 - - ${time} "GET /cgi-bin/env.sh?x=1 HTTP/1.1" 200 2326`);
  // The same format written out is the same line.
  assert.equal(compiled('%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"')(entry), compiled('combined')(entry));
});

test('%D and %T, a user, any request header, %%, and "-" for what is missing', () => {
  assert.equal(compiled('%D %T %u %{Host}i %{X-Missing}i 100%%')({ ...entry, remoteUser: 'alice' }), '2512346 2 alice example.com - 100%');
  assert.equal(
    compiled('%h %u %r %>s %b')({ ...entry, remoteAddress: undefined, requestLine: null, status: 0, bodyBytes: 0 }),
    '- - - - -',
  );
  assert.equal(compiled('%{Accept}i')({ ...entry, headers: { accept: ['text/html', 'text/plain'] } }), 'text/html, text/plain');
});

test('what the client sent is escaped as Apache escapes it: quotes, backslashes, control and high bytes', () => {
  const hostile = {
    ...entry,
    requestLine: 'GET /"x"\\y\n HTTP/1.1',
    headers: { 'user-agent': 'a"b\x1b[31m\xe9' },
    remoteUser: 'a b"',
  };
  assert.equal(compiled('"%r" "%{User-Agent}i" %u')(hostile), '"GET /\\"x\\"\\\\y\\x0a HTTP/1.1" "a\\"b\\x1b[31m\\xe9" a b\\"');
});

test('a directive outside the subset is refused with the list of those supported', () => {
  for (const [format, named] of [
    ['%h %s', '%s'],
    ['%{X-Thing}o', '%{X-Thing}o'],
    ['%<s', '%<s'],
    ['%400{Referer}i', '%4'],
    ['%a', '%a'],
    ['trailing %', 'a % at the end'],
  ] as const) {
    const result = compileAccessLogFormat(format);
    assert.equal(typeof result, 'object', format);
    const problem = (result as { problem: string }).problem;
    assert.ok(problem.startsWith(`${named} is not supported;`), `${format}: ${problem}`);
    for (const directive of ACCESS_LOG_DIRECTIVES) assert.ok(problem.includes(directive), `${format}: ${problem} lacks ${directive}`);
  }
});

test('the configuration refuses such a format (what --check reports), and takes a good one', (t) => {
  const docroot = tempDir(t);
  assert.throws(() => loadServeConfig({ flags: { docroot, 'access-log-format': '%h %s' } }), {
    code: 'GH_CONFIG_INVALID',
    message:
      /access-log-format: %s is not supported; write combined, common, or a format made of %h %l %u %t %r %>s %b %\{Name\}i %D %T %P %%/,
  });
  assert.equal(loadServeConfig({ flags: { docroot, 'access-log-format': '%h %D' } }).accessLogFormat, '%h %D');
  assert.equal(loadServeConfig({ flags: { docroot } }).accessLogFormat, 'combined');
});

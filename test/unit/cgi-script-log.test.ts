import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ScriptLog, apacheCtime, type ScriptLogEntry } from '../../src/cgi/script-log.js';
import { tempDir } from '../kit/process.js';

const entry: ScriptLogEntry = {
  date: new Date(1996, 5, 19, 10, 53, 21),
  method: 'POST',
  target: '/cgi-bin/form.cgi?x=1',
  protocol: 'HTTP/1.1',
  status: 500,
  scriptPath: '/srv/cgi-bin/form.cgi',
  requestHeaders: [
    ['Host', 'example.com'],
    ['Authorization', 'Basic c2VjcmV0'],
    ['Cookie', 'session=abc'],
    ['Content-Type', 'application/x-www-form-urlencoded'],
  ],
  requestBody: Buffer.from('name=value&password=hunter2'),
  responseHeaders: [['Set-Cookie', 'session=new']],
  error: 'malformed header from script: Bad header: this is not a header',
  stdout: 'Content-Type: text/plain\nthis is not a header\n',
  stderr: 'form.cgi: oops\n',
};

test("an entry in mod_cgi's sections, credentials redacted, the body cut at ScriptLogBuffer", () => {
  const log = new ScriptLog({ path: '/nonexistent', bodyBytes: 10 });
  assert.equal(
    log.format(entry),
    [
      '%% [Wed Jun 19 10:53:21 1996] POST /cgi-bin/form.cgi?x=1 HTTP/1.1',
      '%% 500 /srv/cgi-bin/form.cgi',
      '%request',
      'Host: example.com',
      'Authorization: [redacted]',
      'Cookie: [redacted]',
      'Content-Type: application/x-www-form-urlencoded',
      '',
      'name=value',
      '%response',
      'Set-Cookie: [redacted]',
      'malformed header from script: Bad header: this is not a header',
      '%stdout',
      'Content-Type: text/plain',
      'this is not a header',
      '%stderr',
      'form.cgi: oops',
      '',
    ].join('\n'),
  );
});

test('redaction can be turned off; GET bodies are not written', () => {
  const log = new ScriptLog({ path: '/nonexistent', redactHeaders: [] });
  const text = log.format({ ...entry, method: 'GET' });
  assert.match(text, /Authorization: Basic c2VjcmV0/);
  assert.match(text, /Cookie: session=abc/);
  assert.doesNotMatch(text, /password/);
});

test('record() returns before writing; entries are appended in order', async (t) => {
  const path = join(tempDir(t), 'script.log');
  const log = new ScriptLog({ path });
  log.record({ ...entry, status: 501 });
  log.record({ ...entry, status: 502 });
  assert.equal(existsSync(path), false, 'nothing was written synchronously');
  await log.flushed();
  const text = readFileSync(path, 'utf8');
  assert.ok(text.indexOf('%% 501') < text.indexOf('%% 502') && text.indexOf('%% 501') >= 0);
});

test('the file stops growing at ScriptLogLength', async (t) => {
  const path = join(tempDir(t), 'script.log');
  writeFileSync(path, 'x'.repeat(900));
  const log = new ScriptLog({ path, maxLength: 1000 });
  log.record(entry);
  log.record(entry);
  await log.flushed();
  assert.equal(statSync(path).size, 1000);
  const full = new ScriptLog({ path, maxLength: 1000 });
  full.record(entry);
  await full.flushed();
  assert.equal(statSync(path).size, 1000);
});

test('a log that cannot be written reports the error and never throws', async (t) => {
  const errors: Error[] = [];
  const log = new ScriptLog({ path: join(tempDir(t), 'missing-dir', 'script.log'), onError: (error) => errors.push(error) });
  log.record(entry);
  await log.flushed();
  assert.equal(errors.length, 1);
  assert.equal(apacheCtime(new Date(2026, 0, 5, 1, 2, 3)), 'Mon Jan 05 01:02:03 2026');
});

// Issue 15 item 4: the head a failing script printed shows under %stdout and in the error's quoted line too.
test('redacted headers are redacted in every section: %response, the script head under %stdout, the quoted bad line', () => {
  const log = new ScriptLog({ path: '/nonexistent' });
  const text = log.format({
    ...entry,
    responseHeaders: [['Set-Cookie', 'session=SECRET1']],
    error: 'malformed header from script: Bad header: set-cookie session=SECRET2 (bad header line 3: expected "Name: value")',
    stdout:
      'Status: 500\r\nSet-Cookie: session=SECRET3\r\n\tcontinued=SECRET4\r\nset-cookie : x=SECRET5\r\nAuthorization:SECRET6\r\nX-Fine: visible\r\n\r\nbody Set-Cookie: stays\n',
  });
  assert.doesNotMatch(text, /SECRET/, text);
  assert.match(text, /^Set-Cookie: \[redacted\]\r$/m);
  assert.match(text, /^\t\[redacted\]\r$/m);
  assert.match(text, /^set-cookie : \[redacted\]\r$/m);
  assert.match(text, /Bad header: set-cookie \[redacted\]/);
  assert.match(text, /^X-Fine: visible\r$/m, 'other headers are kept');
  assert.match(text, /^Status: 500\r$/m);
  assert.match(text, /^body Set-Cookie: stays$/m, 'the body after the head is not a header block');
});

test('an error quoting "Cookie: value" anywhere is cut after the name; redaction off keeps everything', () => {
  const log = new ScriptLog({ path: '/nonexistent' });
  assert.match(log.format({ ...entry, error: 'odd: Cookie: a=SECRET' }), /odd: Cookie: \[redacted\]/);
  const open = new ScriptLog({ path: '/nonexistent', redactHeaders: [] });
  const text = open.format({ ...entry, stdout: 'Set-Cookie: session=SECRET\n\n' });
  assert.match(text, /Set-Cookie: session=SECRET/);
});

/**
 * The one line format of every command (src/log/record.ts): exact text and
 * JSON lines, a message never spanning lines, JSON records read back (the
 * cgid daemon's channel to the front), levels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeControl, formatRecord, levelEnabled, parseJsonRecord, type LogRecord } from '../../src/log/index.js';

const record: LogRecord = {
  time: new Date(Date.UTC(2026, 11, 2, 9, 23, 58, 84)),
  level: 'error',
  role: 'cgid',
  pid: 4665,
  message: 'connection from the front (pid 4574) closed: EOF',
};

test('text: ISO time in UTC with milliseconds, level, role[pid], message', () => {
  assert.equal(formatRecord(record, 'text'), '2026-12-02T09:23:58.084Z error cgid[4665]: connection from the front (pid 4574) closed: EOF');
});

test('json: one object with the same fields, in the same order', () => {
  assert.equal(
    formatRecord(record, 'json'),
    '{"time":"2026-12-02T09:23:58.084Z","level":"error","role":"cgid","pid":4665,"message":"connection from the front (pid 4574) closed: EOF"}',
  );
});

test('a message with newlines and control bytes stays on one line (a script cannot forge a log line)', () => {
  const forged = { ...record, message: 'oops\n2026-12-02T09:23:58.084Z info serve[1]: fake\r\x1b[31m\ttab' };
  const text = formatRecord(forged, 'text');
  assert.equal(text.split('\n').length, 1);
  assert.ok(text.endsWith('oops\\n2026-12-02T09:23:58.084Z info serve[1]: fake\\r\\x1b[31m\\ttab'), text);
  const json = formatRecord(forged, 'json');
  assert.equal(json.split('\n').length, 1);
  assert.equal(parseJsonRecord(json)?.message, forged.message);
  assert.equal(escapeControl('a\x00b\x7fc'), 'a\\x00b\\x7fc');
});

test('a JSON record reads back as it was; anything else is not a record', () => {
  assert.deepEqual(parseJsonRecord(formatRecord(record, 'json')), record);
  for (const line of [
    '',
    'Error: boom',
    '    at main (file.js:1:1)',
    '{',
    '{"time":"x","level":"error","role":"cgid","pid":1,"message":"m"}',
    '{"time":"2026-12-02T09:23:58.084Z","level":"fatal","role":"cgid","pid":1,"message":"m"}',
    '{"time":"2026-12-02T09:23:58.084Z","level":"error","role":"cgid","pid":"1","message":"m"}',
    '{"time":"2026-12-02T09:23:58.084Z","level":"error","role":"cgid","pid":1}',
    '[1,2]',
  ]) {
    assert.equal(parseJsonRecord(line), null, line);
  }
});

test('levels: a logger writes its level and the more serious ones', () => {
  const levels = ['error', 'warn', 'info', 'debug'] as const;
  for (const [t, threshold] of levels.entries())
    for (const [l, level] of levels.entries()) assert.equal(levelEnabled(threshold, level), l <= t, `${threshold} ${level}`);
});

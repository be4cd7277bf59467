/**
 * The outcome table (src/cgi/outcome.ts): every way a script or an upstream
 * can fail to answer, and what the client gets for it. One row per outcome;
 * the CGI handler, the FastCGI proxy and the cgid FastCGI face all answer
 * through this table, so a row here is a promise for all three.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, UpstreamError } from '../../src/errors.js';
import { answerFor, statusForUpstreamError, type Failure } from '../../src/cgi/outcome.js';
import { SpawnError } from '../../src/spawn/spawner.js';

const SCRIPT = '/srv/cgi-bin/x.sh';
const badHead = { code: ErrorCode.CGI_HEAD_MALFORMED, message: 'not a header line', line: 'garbage', lineNumber: 1 };

interface Row {
  failure: Failure;
  status: number;
  headers?: Array<[string, string]>;
  close?: boolean;
  code: string;
  log: RegExp | null;
  scriptLog?: RegExp;
}

const rows: Row[] = [
  {
    failure: { kind: 'refused', status: 404, request: 'GET /cgi-bin/none from 127.0.0.1', reason: 'no such file' },
    status: 404,
    code: ErrorCode.CGI_PATH_NOT_FOUND,
    log: /^refused GET \/cgi-bin\/none from 127\.0\.0\.1: no such file$/,
  },
  {
    failure: { kind: 'refused', status: 403, request: 'GET /x', reason: 'not executable' },
    status: 403,
    code: ErrorCode.CGI_PATH_FORBIDDEN,
    log: /not executable/,
  },
  {
    failure: { kind: 'refused', status: 400, request: 'GET /x', reason: 'bad escape' },
    status: 400,
    code: ErrorCode.CGI_PATH_BAD_REQUEST,
    log: /bad escape/,
  },
  {
    failure: { kind: 'spawn-failed', error: new SpawnError(SCRIPT, 'EACCES', 'permission denied') },
    status: 403,
    code: ErrorCode.CGI_SPAWN_FAILED,
    log: /^cannot run \/srv\/cgi-bin\/x\.sh: permission denied \(EACCES\)$/,
    scriptLog: /permission denied/,
  },
  {
    failure: { kind: 'spawn-failed', error: new SpawnError(SCRIPT, 'EPERM', 'suexec refused') },
    status: 403,
    code: ErrorCode.CGI_SPAWN_FAILED,
    log: /EPERM/,
    scriptLog: /suexec/,
  },
  {
    failure: { kind: 'spawn-failed', error: new SpawnError(SCRIPT, 'ENOENT', 'gone') },
    status: 404,
    code: ErrorCode.CGI_SPAWN_FAILED,
    log: /ENOENT/,
    scriptLog: /gone/,
  },
  {
    failure: { kind: 'spawn-failed', error: new SpawnError(SCRIPT, 'ENOEXEC', 'not a program') },
    status: 500,
    code: ErrorCode.CGI_SPAWN_FAILED,
    log: /ENOEXEC/,
    scriptLog: /not a program/,
  },
  {
    // The daemon down: worth retrying in a moment, wherever the script was asked for.
    failure: { kind: 'spawn-failed', error: SpawnError.daemonUnavailable(SCRIPT, 'the cgid daemon is not running (restarting)') },
    status: 503,
    headers: [['Retry-After', '1']],
    code: ErrorCode.CGID_UNAVAILABLE,
    log: /the cgid daemon is not running/,
    scriptLog: /restarting/,
  },
  {
    failure: { kind: 'daemon-lost', script: SCRIPT },
    status: 503,
    headers: [['Retry-After', '1']],
    code: ErrorCode.CGID_UNAVAILABLE,
    log: /^\/srv\/cgi-bin\/x\.sh: the cgid daemon went away while the script ran/,
  },
  {
    failure: { kind: 'timeout', script: SCRIPT, timeoutMs: 300 },
    status: 504,
    code: ErrorCode.CGI_SCRIPT_TIMEOUT,
    log: /^\/srv\/cgi-bin\/x\.sh: no output for 300 ms before the headers: script killed, answering 504$/,
    scriptLog: /^timeout: no output for 300 ms$/,
  },
  {
    failure: { kind: 'malformed-head', script: SCRIPT, error: badHead },
    status: 500,
    code: ErrorCode.CGI_HEAD_MALFORMED,
    log: /^malformed header from script \/srv\/cgi-bin\/x\.sh: not a header line: Bad header: garbage$/,
    scriptLog: /^malformed header from script: Bad header: garbage \(not a header line\)$/,
  },
  {
    failure: { kind: 'body-too-large', script: SCRIPT, limit: 1000, declared: 2000 },
    status: 413,
    close: true,
    code: ErrorCode.CGI_BODY_TOO_LARGE,
    log: /^request body of 2000 bytes for \/srv\/cgi-bin\/x\.sh is over the limit of 1000$/,
  },
  {
    failure: { kind: 'body-too-large', script: SCRIPT, limit: 1000, detail: 'a chunk of 0xffffffffffffffff bytes was announced' },
    status: 413,
    close: true,
    code: ErrorCode.CGI_BODY_TOO_LARGE,
    log: /^chunked request body for \/srv\/cgi-bin\/x\.sh is over the limit of 1000 bytes \(a chunk of 0xffffffffffffffff bytes was announced\)$/,
  },
  {
    failure: { kind: 'body-unreadable', script: SCRIPT, error: new Error('aborted') },
    status: 400,
    close: true,
    code: ErrorCode.CLIENT_CLOSED,
    log: /^reading the request body for \/srv\/cgi-bin\/x\.sh failed: aborted$/,
  },
  {
    failure: { kind: 'queue-full', script: SCRIPT, running: 2, queued: 5 },
    status: 503,
    headers: [['Retry-After', '1']],
    code: ErrorCode.CGI_QUEUE_FULL,
    log: /^2 scripts running and 5 waiting: refused \/srv\/cgi-bin\/x\.sh with 503$/,
  },
  {
    failure: { kind: 'redirect-loop', script: SCRIPT, limit: 10, location: '/cgi-bin/x.sh' },
    status: 500,
    code: ErrorCode.CGI_REDIRECT_LOOP,
    log: /^\/srv\/cgi-bin\/x\.sh: more than 10 local redirects \(last to \/cgi-bin\/x\.sh\); answering 500$/,
  },
  { failure: { kind: 'stopping', script: SCRIPT }, status: 503, close: true, code: ErrorCode.SERVER_STOPPING, log: /^stopping: refused/ },
  {
    failure: {
      kind: 'upstream-failed',
      request: 'GET /app/',
      error: new UpstreamError(ErrorCode.UPSTREAM_REFUSED, 'unix:/run/a.sock', 'ECONNREFUSED'),
    },
    status: 503,
    code: ErrorCode.UPSTREAM_REFUSED,
    log: /^GET \/app\/: unix:\/run\/a\.sock: ECONNREFUSED: answered 503$/,
  },
  {
    failure: {
      kind: 'upstream-failed',
      request: 'GET /app/',
      error: new UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, 'a', 'no data for 1 s'),
    },
    status: 504,
    code: ErrorCode.UPSTREAM_TIMEOUT,
    log: /answered 504$/,
  },
  {
    // The client went away: nothing to log, nobody to answer (the page goes nowhere).
    failure: { kind: 'upstream-failed', request: 'GET /app/', error: new UpstreamError(ErrorCode.REQUEST_ABORTED, 'a', 'aborted') },
    status: 502,
    code: ErrorCode.REQUEST_ABORTED,
    log: null,
  },
  {
    failure: { kind: 'upstream-bad-head', upstream: 'unix:/run/a.sock', script: '/srv/app.php', error: badHead },
    status: 502,
    code: ErrorCode.CGI_HEAD_MALFORMED,
    log: /^unix:\/run\/a\.sock: \/srv\/app\.php: bad response head: not a header line: garbage$/,
  },
  {
    failure: { kind: 'upstream-no-head', upstream: 'unix:/run/a.sock', script: '/srv/app.php' },
    status: 502,
    code: ErrorCode.UPSTREAM_PROTOCOL,
    log: /the application ended the request without a response head$/,
  },
];

test('the outcome table: status, headers, connection, code, log line and script log entry of every outcome', () => {
  for (const row of rows) {
    const answer = answerFor(row.failure);
    const name = `${row.failure.kind} -> ${row.status}`;
    assert.equal(answer.status, row.status, name);
    assert.deepEqual(answer.headers, row.headers ?? [], name);
    assert.equal(answer.closeConnection, row.close ?? false, name);
    assert.equal(answer.code, row.code, name);
    if (row.log === null) assert.equal(answer.logLine, null, name);
    else assert.match(answer.logLine ?? '', row.log, name);
    if (row.scriptLog) assert.match(answer.scriptLogError ?? '', row.scriptLog, name);
    else assert.equal(answer.scriptLogError, null, name);
  }
});

test('every kind of outcome has a row', () => {
  const kinds = new Set(rows.map((row) => row.failure.kind));
  for (const kind of [
    'refused',
    'spawn-failed',
    'daemon-lost',
    'timeout',
    'malformed-head',
    'body-too-large',
    'body-unreadable',
    'queue-full',
    'redirect-loop',
    'stopping',
    'upstream-failed',
    'upstream-bad-head',
    'upstream-no-head',
  ] satisfies Array<Failure['kind']>)
    assert.ok(kinds.has(kind), kind);
});

test('upstream failures as nginx answers them: cannot take it 503, too slow 504, broken 502', () => {
  const cases: Array<[string, number]> = [
    [ErrorCode.UPSTREAM_REFUSED, 503],
    [ErrorCode.UPSTREAM_QUEUE_FULL, 503],
    [ErrorCode.UPSTREAM_OVERLOADED, 503],
    [ErrorCode.UPSTREAM_CANT_MPX, 503],
    [ErrorCode.UPSTREAM_CONNECT_TIMEOUT, 504],
    [ErrorCode.UPSTREAM_TIMEOUT, 504],
    [ErrorCode.UPSTREAM_RESET, 502],
    [ErrorCode.UPSTREAM_PROTOCOL, 502],
  ];
  for (const [code, status] of cases) assert.equal(statusForUpstreamError({ code }), status, code);
  assert.equal(statusForUpstreamError(new Error('anything else')), 502);
});

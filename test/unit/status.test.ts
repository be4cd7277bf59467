/**
 * `gatehouse status`: the table's layout, a kfcgi status socket's answer read
 * into the document, uptimes, and the option table against
 * man/gatehouse-status.8 (both ways).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { STATUS_OPTIONS, statusUsage } from '../../src/cli/status.js';
import { formatStatusTable, formatUptime, fromKfcgiStatus, type StatusDocument } from '../../src/metrics/status.js';
import type { PoolStatus } from '../../src/metrics/status.js';

const manual = readFileSync(new URL('../../../man/gatehouse-status.8', import.meta.url), 'utf8');

test('every option is in man/gatehouse-status.8 and --help, and every documented option exists', () => {
  for (const option of STATUS_OPTIONS) {
    assert.ok(manual.includes(`.It Fl -${option.name}\n`), `the manual lacks --${option.name}`);
    assert.ok(statusUsage().includes(`--${option.name}`), `--help lacks --${option.name}`);
  }
  const known = new Set(STATUS_OPTIONS.map((option) => option.name));
  for (const [, flag] of manual.matchAll(/^\.It Fl -([a-z-]+)/gm)) assert.ok(known.has(flag!), `the manual documents --${flag}`);
});

test('the table: one row per pool, - for what a pool does not count, the columns the manual names', () => {
  const document: StatusDocument = {
    command: 'serve',
    version: '1.2.3',
    pid: 42,
    startedAt: '2026-12-02T09:00:00.000Z',
    uptimeSeconds: 7380,
    pools: [
      { name: 'cgi scripts', active: 3, idle: 61, queue: 0, max: 64, maxReached: 0 },
      { name: 'fastcgi unix:/run/php.sock', active: 2, idle: null, queue: 12, max: 4, maxReached: 17 },
    ],
  };
  assert.equal(
    formatStatusTable(document),
    [
      'gatehouse serve 1.2.3, pid 42, started 2026-12-02T09:00:00.000Z',
      'POOL                        ACTIVE  IDLE  QUEUE  MAX REACHED  UPTIME',
      'cgi scripts                      3    61      0            0  2h 03m',
      'fastcgi unix:/run/php.sock       2     -     12           17  2h 03m',
    ].join('\n'),
  );
  for (const column of ['POOL', 'ACTIVE', 'IDLE', 'QUEUE', 'MAX REACHED', 'UPTIME']) assert.ok(manual.includes(`.It ${column}\n`), column);
  assert.equal(formatUptime(12), '12s');
  assert.equal(formatUptime(245), '4m 05s');
  assert.equal(formatUptime(3 * 86400 + 4 * 3600), '3d 04h');
});

test("a kfcgi status socket's answer: busy and idle workers, the listen queue plus the variable pool's queue", () => {
  const status = {
    pid: 7,
    mode: 'variable',
    listen: '/run/app.sock',
    startedAt: new Date(Date.now() - 65_000).toISOString(),
    workers: 3,
    minWorkers: 1,
    maxWorkers: 3,
    busy: 3,
    idle: 0,
    starting: 0,
    pids: [1, 2, 3],
    accepted: 10,
    handedOver: 8,
    poolFull: 2,
    maxReached: 2,
    queued: 2,
    respawns: 0,
    respawnCauses: {},
    restarts: 0,
    recycled: 0,
    released: 0,
    backlog: { configured: 128, queued: 1, limit: 128, maxQueued: null },
    processes: [],
  } satisfies PoolStatus;
  const document = fromKfcgiStatus(status);
  assert.equal(document.command, 'kfcgi');
  assert.equal(document.pid, 7);
  assert.ok(document.uptimeSeconds >= 65);
  assert.deepEqual(document.pools, [{ name: 'kfcgi /run/app.sock (variable)', active: 3, idle: 0, queue: 3, max: 3, maxReached: 2 }]);
  assert.equal(document.kfcgi, status);
});

/**
 * The dynamic pool's decisions as tables: growth for waiting connections
 * (starting workers counted as capacity, -N, the spawn budget), the token
 * bucket, and which idle workers are released; and the /proc parsers the
 * pools read workers with (stat, schedstat, /proc/net/tcp), plus ProcView on
 * a real process tree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { SpawnBudget, idleToRelease, plannedGrowth } from '../../src/kfcgi/dynamic-sizing.js';
import { ProcView, parseProcNetTcp, parseProcStat, parseSchedstat } from '../../src/sys/proc-view.js';
import { waitFor, waitForValue } from '../kit/wait.js';

test('plannedGrowth: one worker per waiting connection no starting worker will take, within -N and the budget', () => {
  const cases: [Parameters<typeof plannedGrowth>[0], ReturnType<typeof plannedGrowth>][] = [
    [
      { queued: 0, starting: 0, active: 1, max: 4, budget: 8 },
      { start: 0, atMax: false },
    ],
    [
      { queued: 1, starting: 0, active: 1, max: 4, budget: 8 },
      { start: 1, atMax: false },
    ],
    [
      { queued: 7, starting: 0, active: 1, max: 4, budget: 8 },
      { start: 3, atMax: false },
    ],
    [
      { queued: 7, starting: 0, active: 1, max: 16, budget: 8 },
      { start: 7, atMax: false },
    ],
    [
      { queued: 7, starting: 0, active: 1, max: 16, budget: 2 },
      { start: 2, atMax: false },
    ],
    // Starting workers will take connections soon: only the rest is uncovered.
    [
      { queued: 3, starting: 3, active: 4, max: 16, budget: 8 },
      { start: 0, atMax: false },
    ],
    [
      { queued: 5, starting: 3, active: 4, max: 16, budget: 8 },
      { start: 2, atMax: false },
    ],
    // At -N: nothing to start, and that is the event counted as maxReached.
    [
      { queued: 5, starting: 0, active: 4, max: 4, budget: 8 },
      { start: 0, atMax: true },
    ],
    // An empty budget is not "at max".
    [
      { queued: 5, starting: 0, active: 2, max: 4, budget: 0 },
      { start: 0, atMax: false },
    ],
  ];
  for (const [input, expected] of cases) assert.deepEqual(plannedGrowth(input), expected, JSON.stringify(input));
});

test('SpawnBudget: a burst at once, then the rate per second', () => {
  const budget = new SpawnBudget(32, 8, 0);
  assert.equal(budget.available(0), 8);
  budget.take(8, 0);
  assert.equal(budget.available(0), 0);
  assert.equal(budget.available(125), 4, '32 a second: 4 in 125 ms');
  budget.take(4, 125);
  assert.equal(budget.available(10_000), 8, 'never more than the burst');
});

test('idleToRelease: unchanged CPU for -w, longest first, never below -n', () => {
  const workers = [
    { worker: 'a', cpuChangedAt: 1000 },
    { worker: 'b', cpuChangedAt: 0 },
    { worker: 'c', cpuChangedAt: 9500 },
    { worker: 'd', cpuChangedAt: 500 },
  ];
  assert.deepEqual(idleToRelease(workers, 4, 1, 5000, 10_000), ['b', 'd', 'a']);
  assert.deepEqual(idleToRelease(workers, 4, 2, 5000, 10_000), ['b', 'd']);
  assert.deepEqual(idleToRelease(workers, 4, 4, 5000, 10_000), []);
  assert.deepEqual(idleToRelease(workers, 4, 1, 9800, 10_000), ['b']);
  assert.deepEqual(idleToRelease(workers, 4, 1, 0, 10_000), ['b', 'd', 'a']);
});

test('parseProcStat: fields counted from the last parenthesis (command names may hold spaces and parentheses)', () => {
  const line =
    '4242 (php (cgi) x) S 4200 4242 4242 0 -1 4194624 500 0 0 0 120 30 7 3 20 0 1 0 12345 12345678 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0';
  assert.deepEqual(parseProcStat(line), { state: 'S', ppid: 4200, pgrp: 4242, cpuTicks: 150, childCpuTicks: 10, rssPages: 321 });
  assert.equal(parseProcStat('garbage'), null);
  assert.equal(parseProcStat('1 (x) S 2 3'), null);
  assert.equal(parseSchedstat('6015738 4423802 3\n'), 6015738);
  assert.equal(parseSchedstat('x'), null);
});

test('parseProcNetTcp: the accepted connections on a port, not the listener, not those still queued (inode 0)', () => {
  const text = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 20 4 30 10 -1',
    '   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 20 4 30 10 -1',
    '   3: 0100007F:C352 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1',
    '   4: 0100007F:1F91 0100007F:C353 08 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 20 4 30 10 -1',
    '',
  ].join('\n');
  assert.deepEqual(parseProcNetTcp(text, 0x1f90), ['socket:[1002]']);
  assert.deepEqual(parseProcNetTcp(text, 0x1f91), ['socket:[1004]']);
  const six = [
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000000000000000000001000000:2328 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 20 4 30 10 -1',
  ].join('\n');
  assert.deepEqual(parseProcNetTcp(six, 0x2328), ['socket:[2001]']);
});

test('ProcView: a process tree (a worker and what it forked), its CPU and memory', async (t) => {
  const child = spawn('/bin/sh', ['-c', 'sleep 600 & sleep 600 & echo ready; wait'], {
    stdio: ['ignore', 'pipe', 'ignore'],
    detached: true,
  });
  t.after(() => process.kill(-child.pid!, 'SIGKILL'));
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => output.includes('ready'), 'the shell to start its two sleeps', {
    wakeOn: { emitter: child.stdout, events: ['data'] },
  });
  const proc = new ProcView();
  // The shell has forked both sleeps by then; each shows in /proc once its fork returned.
  const tree = await waitForValue(
    () => proc.tree(child.pid!),
    (pids) => pids.length >= 3,
    'the shell and its two sleeps in the process tree',
    { context: () => `tree: ${proc.tree(child.pid!)}` },
  );
  assert.equal(tree.length, 3, `the shell and its two sleeps: ${tree}`);
  assert.equal(tree[0], child.pid);
  for (const pid of tree.slice(1)) assert.equal(proc.stat(pid)?.ppid, child.pid);
  const usage = proc.usage(child.pid!);
  assert.equal(usage?.processes, 3);
  assert.ok(usage!.rssBytes > 0);
  assert.ok(usage!.cpuSeconds >= 0);
  assert.match(usage!.cpuSignature, /^\d+:\d+$/);
  assert.equal(proc.usage(99_999_999), null);
});

/**
 * Workers never outlive the manager (issue 15, item 5): after `kill -9` of
 * gatehouse kfcgi, every worker, and every process a worker forked, is gone,
 * and kfcgi starts again on the same socket (the stale socket is detected
 * and replaced) and serves. Real workers: php-cgi forking its own children
 * (PHP_FCGI_CHILDREN), a libfcgi C program as a daemon (no -d), in a dynamic
 * pool, and, as root, in a jail after dropping to nobody.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { requireProgram, tempDir, type Cleanup } from '../kit/process.js';
import { buildFixtures, buildJail, cgiFcgi, runKfcgiCommand, startKfcgi } from '../kit/kfcgi.js';
import { descendantsOf, processExists, procStatusField } from '../kit/proc.js';
import { waitFor } from '../kit/wait.js';

const isRoot = process.getuid?.() === 0;

/** Should the test fail, nothing it started may stay behind. */
function killLeftovers(t: Cleanup, pids: () => number[]): void {
  t.after(() => {
    for (const pid of pids()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone, as it should be
      }
    }
  });
}

/**
 * Waits for the manager's "started" line of `count` workers. A worker shows in /proc from its fork on, but its
 * lifeline is armed only after its exec succeeded (the one window src/sys/lifeline.ts names), and the manager logs
 * "started" after arming: a kill before that line would test the window, not the lifeline.
 */
async function waitUntilArmed(manager: { output: () => string }, count: number): Promise<void> {
  await waitFor(
    () => (manager.output().match(/worker \d+: started/g) ?? []).length >= count,
    `the manager to log ${count} workers as started`,
    { context: manager.output },
  );
}

/** Kills the manager with SIGKILL and waits (bounded) until none of `processes` is left. */
async function killManagerAndWait(manager: number, processes: number[], context: () => string): Promise<void> {
  process.kill(manager, 'SIGKILL');
  await waitFor(
    () => !processExists(manager) && processes.every((pid) => !processExists(pid)),
    `every worker process to die with the manager (of ${[manager, ...processes].join(' ')})`,
    {
      // Read when the wait fails: which of them are still there after the deadline.
      context: () => `still running: ${[manager, ...processes].filter(processExists).join(' ') || 'none'}\n${context()}`,
      timeoutMs: 10_000,
    },
  );
}

test('kill -9 of the manager: php-cgi workers and the children they forked (PHP_FCGI_CHILDREN=2) die with it; kfcgi starts again on the same socket', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const php = requireProgram('/usr/bin/php-cgi');
  const env = { PHP_FCGI_CHILDREN: '2', PHP_FCGI_MAX_REQUESTS: '0' };
  const first = await startKfcgi(t, ['-p', '/', '-n', '3', '-s', socket, php], { socket, env, expectWorkers: 3 });
  assert.match(await cgiFcgi(socket, { SCRIPT_FILENAME: fixtures.phpScript }), /hello from php-cgi/);
  const workers = first.workers();
  // Each php-cgi worker forks two children that accept on the socket; they are what would keep serving.
  await waitFor(() => descendantsOf(first.pid).length === 9, 'three workers with two children each', { context: first.output });
  const processes = descendantsOf(first.pid);
  killLeftovers(t, () => processes);
  for (const worker of workers) assert.ok(descendantsOf(worker).length === 2, `worker ${worker} has its two children`);

  await killManagerAndWait(first.pid, processes, first.output);

  const second = await startKfcgi(t, ['-p', '/', '-n', '3', '-s', socket, php], { socket, env, expectWorkers: 3 });
  // Log lines are written asynchronously: wait for the line rather than read the output once.
  await waitFor(() => /removed stale socket/.test(second.output()), 'the manager to log that it removed the stale socket', {
    context: second.output,
  });
  assert.match(await cgiFcgi(socket, { SCRIPT_FILENAME: fixtures.phpScript }), /hello from php-cgi/);
});

test('kill -9 of a daemonised manager (no -d): its libfcgi workers die with it; kfcgi starts again on the same socket', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const started = await runKfcgiCommand(['-p', '/', '-n', '3', '-s', socket, fixtures.hello]);
  assert.equal(started.status, 0, started.output);
  const manager = Number(/running in the background as pid (\d+)/.exec(started.output)?.[1]);
  let processes: number[] = [];
  killLeftovers(t, () => [manager, ...processes]);
  await waitFor(() => descendantsOf(manager).length === 3, 'three workers', { context: () => started.output });
  processes = descendantsOf(manager);
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);

  await killManagerAndWait(manager, processes, () => started.output);

  const again = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', socket, fixtures.hello], { socket, expectWorkers: 2 });
  await waitFor(() => /removed stale socket/.test(again.output()), 'the manager to log that it removed the stale socket', {
    context: again.output,
  });
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
});

test('kill -9 of the manager of a dynamic pool grown past -n: every worker dies with it', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const first = await startKfcgi(t, ['-D', '-p', '/', '-n', '1', '-N', '3', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  // Three held connections: the pool grows to -N to take them.
  const held = Array.from({ length: 3 }, () => cgiFcgi(socket, { QUERY_STRING: 'sleep=60000' }).catch((error: Error) => error.message));
  await waitFor(() => first.workers().length === 3, 'the pool to grow to 3 workers', { context: first.output });
  await waitUntilArmed(first, 3);
  const processes = descendantsOf(first.pid);
  killLeftovers(t, () => processes);

  await killManagerAndWait(first.pid, processes, first.output);
  // The held requests end with the workers (cut off, not served: the manager crashed under them).
  for (const outcome of await Promise.all(held)) assert.match(outcome, /cgi-fcgi .* failed/);

  await startKfcgi(t, ['-D', '-p', '/', '-n', '1', '-N', '3', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
});

test('kill -9 of a jailed manager running as nobody (-p, -U): its workers die with it', {
  skip: !isRoot && 'needs root (chroot, setuid)',
}, async (t) => {
  const fixtures = buildFixtures(t);
  const { jail, program } = buildJail(t, fixtures.helloStatic, 'hello');
  const socket = join(jail, 'run/httpd.sock');
  const args = ['-p', jail, '-n', '2', '-s', socket, '-u', 'nobody', '-U', 'nobody', program];
  const first = await startKfcgi(t, args, { socket, expectWorkers: 2 });
  await waitUntilArmed(first, 2);
  const processes = descendantsOf(first.pid);
  killLeftovers(t, () => processes);
  // The lifelines were armed by the manager after its drop to nobody: the kernel lets nobody signal nobody.
  for (const pid of [first.pid, ...processes]) assert.match(procStatusField(pid, 'Uid'), /^65534\s/);

  await killManagerAndWait(first.pid, processes, first.output);

  await startKfcgi(t, args, { socket, expectWorkers: 2 });
  assert.match(await cgiFcgi(socket), /hello from libfcgi pid \d+ uid 65534/);
});

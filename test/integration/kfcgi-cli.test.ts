/**
 * gatehouse kfcgi as a command: exit status and messages for bad flags,
 * chroot without root, and the daemon (no -d) reporting its start or its
 * failure to the terminal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import { tempDir } from '../kit/process.js';
import { readStatus } from '../../src/kfcgi/status.js';
import { buildFixtures, cgiFcgi, runKfcgiCommand } from '../kit/kfcgi.js';
import { processExists } from '../kit/proc.js';
import { waitFor } from '../kit/wait.js';

const isRoot = process.getuid?.() === 0;

test('bad flags and impossible combinations exit 1 with a message that says what to change', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const cases: [string[], RegExp][] = [
    [['-n', '0', fixtures.hello], /-n workers: expected a whole number from 1 to \d+, got "0"/],
    [['-r', '-n', '3', '-N', '2', '-p', '/', fixtures.kcgiExt], /-N 2 is below -n 3/],
    [['-p', '/nonexistent-jail', fixtures.hello], /the jail \/nonexistent-jail does not exist/],
    [['-p', '/', '-U', 'no-such-user-kfcgi', fixtures.hello], /-U no-such-user-kfcgi: no such user/],
    [['-p', '/', '-r', '/usr/bin/php-cgi'], /php-cgi does not implement/],
    [['-p', '/'], /no prog given/],
    [['-q', fixtures.hello], /unknown option -q/],
  ];
  for (const [args, message] of cases) {
    const result = await runKfcgiCommand(['-d', '-s', socket, ...args]);
    assert.equal(result.status, 1, `${args.join(' ')}: ${result.output}`);
    assert.match(result.output, message);
    assert.match(result.output, /usage: gatehouse kfcgi/);
    assert.equal(existsSync(socket), false);
  }
  const help = await runKfcgiCommand(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.output, /--max-workers/);
});

test('a jail without root is refused at start, with the way out (-p /)', {
  skip: !isRoot && 'needs root to run the check as another user',
}, async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  chmodSync(dir, 0o777);
  const jail = join(dir, 'jail');
  mkdirSync(jail, { mode: 0o755 });
  // The checkout must be readable by nobody for this (not so under a 0700 home directory).
  const probe = await runKfcgiCommand(['--help'], { uid: 65534, gid: 65534 });
  if (probe.status !== 0) {
    t.skip(`nobody cannot run gatehouse from this checkout: ${probe.output.split('\n')[0]}`);
    return;
  }
  const result = await runKfcgiCommand(['-d', '-p', jail, '-s', join(dir, 'app.sock'), '/hello'], { uid: 65534, gid: 65534 });
  assert.equal(result.status, 1, result.output);
  assert.match(result.output, /entering the jail .*jail needs root \(chroot\(2\)\): run as root, or pass -p \/ to run without a jail/);
  void fixtures;
});

test('without -d: kfcgi daemonises, reports that it runs, and stops on SIGTERM', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const statusPath = join(dir, 'status.sock');
  const result = await runKfcgiCommand(['-p', '/', '-n', '2', '-s', socket, '-S', statusPath, fixtures.hello]);
  assert.equal(result.status, 0, result.output);
  const pid = Number(/running in the background as pid (\d+)/.exec(result.output)?.[1]);
  assert.ok(pid > 0, result.output);
  t.after(() => {
    if (processExists(pid)) process.kill(pid, 'SIGKILL');
  });
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
  const status = await readStatus(statusPath);
  assert.equal(status.pid, pid);
  assert.equal(status.workers, 2);
  const workers = status.pids;
  process.kill(pid, 'SIGTERM');
  await waitFor(() => !processExists(pid), 'the daemon to exit');
  assert.equal(existsSync(socket), false);
  for (const worker of workers) assert.equal(processExists(worker), false);
});

test('without -d: a failure inside the daemon is reported on the terminal', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const live = net.createServer().listen(socket);
  t.after(() => live.close());
  await new Promise((resolve) => live.once('listening', resolve));
  const result = await runKfcgiCommand(['-p', '/', '-n', '1', '-s', socket, fixtures.hello]);
  assert.equal(result.status, 1);
  assert.match(result.output, /another server is accepting connections on .*app\.sock: stop it first/);
});

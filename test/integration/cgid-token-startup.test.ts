/**
 * Issue 15 item 6: `gatehouse cgid` checks everything before it writes
 * anything. A second daemon on a live daemon's socket is refused without
 * touching that daemon's token file (which its clients read); a daemon
 * refused for an unsafe directory leaves no token file there.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CgidConnection } from '../../src/cgid/client.js';
import { isRunning, startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { waitFor, waitForOutput } from '../kit/wait.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';

/** A daemon that makes its own token (no $GATEHOUSE_CGID_TOKEN, no --token-file): it writes SOCKET.token. */
function startDaemon(t: TestContext, socket: string): RunningProcess {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.GATEHOUSE_CGID_TOKEN;
  return startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'cgid', '--socket', socket], { env });
}

async function waitReady(daemon: RunningProcess, socket: string): Promise<void> {
  await waitForListener({ path: socket }, { process: daemon, timeoutMs: 20_000 });
  // The daemon listens before it logs that it is ready.
  await waitFor(() => /ready \d+/.test(daemon.output()), "the daemon's ready line", {
    timeoutMs: 20_000,
    context: daemon.output,
    giveUpIf: () => !isRunning(daemon.child) && 'the daemon exited',
  });
}

test("a second daemon on a live socket is refused and leaves the live daemon's token file as it was", async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-token-');
  const socket = join(dir, 'a');
  const first = startDaemon(t, socket);
  await waitReady(first, socket);
  const tokenFile = `${socket}.token`;
  const before = { text: readFileSync(tokenFile, 'utf8'), inode: statSync(tokenFile).ino, mode: statSync(tokenFile).mode & 0o777 };
  assert.equal(before.mode, 0o600);

  const second = startDaemon(t, socket);
  assert.equal((await second.exited).code, 1);
  // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
  await waitForOutput(second, /another process answers on/, "the second daemon's refusal");

  const after = statSync(tokenFile);
  assert.equal(after.ino, before.inode, 'the token file was not replaced');
  assert.equal(readFileSync(tokenFile, 'utf8'), before.text, "the token file holds the live daemon's token");
  assert.deepEqual(readdirSync(dir).sort(), ['a', 'a.token'], 'nothing else was written next to the socket');
  // A client that reads the token file still reaches the live daemon.
  const connection = await CgidConnection.connect(socket, Buffer.from(before.text.trim(), 'hex'));
  connection.close('test done');
});

test('a daemon refused for an unsafe directory leaves no token file behind', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-unsafe-');
  const shared = join(dir, 'shared');
  mkdirSync(shared);
  chmodSync(shared, 0o777);
  const socket = join(shared, 'a');
  const refused = startDaemon(t, socket);
  assert.equal((await refused.exited).code, 1);
  // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
  await waitForOutput(refused, /refusing to create the cgid socket in .*writable by every user/, 'the refusal');
  assert.equal(existsSync(`${socket}.token`), false);
  assert.deepEqual(readdirSync(shared), []);
});

test('a daemon that starts after one died replaces the stale socket and token file, and removes them on exit', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-restart-');
  const socket = join(dir, 'a');
  const first = startDaemon(t, socket);
  await waitReady(first, socket);
  const staleToken = readFileSync(`${socket}.token`, 'utf8');
  first.child.kill('SIGKILL');
  await first.exited;
  assert.ok(existsSync(socket) && existsSync(`${socket}.token`), 'a killed daemon leaves both behind');

  const second = startDaemon(t, socket);
  await waitReady(second, socket);
  const freshToken = readFileSync(`${socket}.token`, 'utf8');
  assert.notEqual(freshToken, staleToken);
  const connection = await CgidConnection.connect(socket, Buffer.from(freshToken.trim(), 'hex'));
  connection.close('test done');
  second.child.kill('SIGTERM');
  assert.equal((await second.exited).code, 0);
  assert.deepEqual(readdirSync(dir), []);
});

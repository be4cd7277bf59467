/**
 * `gatehouse cgid --fastcgi unix:PATH --user www-data` and `gatehouse serve
 * --listen unix:PATH --user www-data`, started as root with PATH in a
 * directory only root may write (/run/gatehouse, mode 0755 root), left their
 * socket file behind at SIGTERM: once www-data, the process may no longer
 * unlink in that directory. A socket keeper that stays root now removes it
 * (src/cgid/socket-keeper.ts), as php-fpm's and nginx's root masters do; it
 * also removes it when the process is killed, and is gone once its work is
 * done. A directory www-data may write needs no keeper.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, lstatSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lookupUser } from '../../src/sys/index.js';
import { credentialsOf, waitUntil } from '../kit/deploy.js';
import { httpRequest } from '../kit/http.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { childrenOf, commandLine, processExists } from '../kit/proc.js';
import { requireProgram, runToExit, startProcess, tempDir, type RunningProcess } from '../kit/process.js';
import { waitForOutput } from '../kit/wait.js';

const asRoot = { skip: process.getuid?.() !== 0 ? 'dropping to www-data needs root (CI runs as root)' : false };
const CGI_FCGI = '/usr/bin/cgi-fcgi';

/** A root-owned directory, mode 0755: www-data may search it, not write it (as /run/gatehouse). */
function rootDirectory(t: TestContext): { dir: string; script: string; www: string } {
  const dir = tempDir(t, 'gatehouse-keeper-');
  chmodSync(dir, 0o755);
  const www = join(dir, 'www');
  mkdirSync(www, { mode: 0o755 });
  writeFileSync(join(www, 'a.txt'), 'file a\n');
  const script = join(dir, 'hello.sh');
  writeFileSync(script, '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhello from $(id -un)\\n"\n', { mode: 0o755 });
  return { dir, script, www };
}

async function started(t: TestContext, args: string[], ready: RegExp): Promise<RunningProcess> {
  const running = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...args]);
  await waitUntil(() => ready.test(running.output()) || running.child.exitCode !== null, `${args[0]} to be ready`, 15_000, running.output);
  assert.equal(running.child.exitCode, null, running.output());
  return running;
}

/** One request through libfcgi's cgi-fcgi, the way a web server connects. */
async function throughCgiFcgi(socket: string, script: string): Promise<string> {
  const answer = await runToExit(requireProgram(CGI_FCGI), ['-bind', '-connect', socket], {
    env: { REQUEST_METHOD: 'GET', SCRIPT_FILENAME: script, SCRIPT_NAME: '/hello.sh', GATEWAY_INTERFACE: 'CGI/1.1' },
    timeoutMs: 15_000,
  });
  assert.equal(answer.code, 0, answer.stderr);
  return answer.stdout;
}

/** The keeper's pid and uids while it runs: the child named gatehouse-socket-keeper (none before the fix). */
function keeperOf(pid: number): { pid: number; uids: number[] } | undefined {
  const keeper = childrenOf(pid).find((child) => commandLine(child).startsWith('gatehouse-socket-keeper'));
  return keeper === undefined ? undefined : { pid: keeper, uids: credentialsOf(keeper).uids };
}

/** SIGTERM: the socket file is gone; the keeper, root while the process ran as www-data, did it and exited. */
async function stopAndCheckRemoved(running: RunningProcess, socket: string): Promise<void> {
  const keeper = keeperOf(running.child.pid!);
  assert.equal(credentialsOf(running.child.pid!).uids[0], lookupUser('www-data')!.uid, 'the process itself dropped root');
  running.child.kill('SIGTERM');
  const { code } = await running.exited;
  assert.equal(code, 0, running.output());
  assert.throws(() => lstatSync(socket), /ENOENT/, `the socket file is gone at the stop:\n${running.output()}`);
  // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
  await waitForOutput(running, new RegExp(`socket keeper: ${socket}: removed`), "the keeper's removal logged");
  assert.ok(keeper, 'a keeper ran');
  assert.deepEqual(keeper.uids, [0, 0, 0, 0], 'the keeper kept root');
  assert.equal(processExists(keeper.pid), false, 'the keeper exits once the socket is removed');
}

test(
  'cgid --fastcgi --user www-data in a root directory: SIGTERM removes the socket; the next start binds the same path',
  asRoot,
  async (t) => {
    const { dir, script } = rootDirectory(t);
    const socket = join(dir, 'face.sock');
    const args = ['cgid', '--fastcgi', `unix:${socket}`, '--user', 'www-data'];
    const first = await started(t, args, /^ready /m);
    assert.match(await throughCgiFcgi(socket, script), /\r\n\r\nhello from www-data\n$/);
    await stopAndCheckRemoved(first, socket);

    const second = await started(t, args, /^ready /m);
    // The ready line goes to stdout at once; a stale socket's line would be logged (in a batch, on stderr) just
    // before "running as", which is waited for first.
    await waitForOutput(second, /running as www-data/, "the face's running-as line");
    assert.doesNotMatch(second.output(), /stale socket/, 'nothing stale was left to replace');
    assert.match(await throughCgiFcgi(socket, script), /hello from www-data\n$/);
    const keeper = keeperOf(second.child.pid!)!.pid;
    // Killed, the face cannot ask: the keeper sees its pipe close and removes the socket all the same.
    second.child.kill('SIGKILL');
    await second.exited;
    await waitUntil(() => !processExists(keeper), 'the keeper to finish after its face was killed');
    assert.throws(() => lstatSync(socket), /ENOENT/);
  },
);

test(
  'serve --listen unix:PATH --user www-data in a root directory: SIGTERM removes the socket; the next start binds the same path',
  asRoot,
  async (t) => {
    const { dir, www } = rootDirectory(t);
    const socket = join(dir, 'serve.sock');
    const args = ['serve', '--listen', `unix:${socket}`, '--docroot', www, '--access-log', 'off', '--user', 'www-data'];
    const fetchA = async () => (await httpRequest('http://localhost/a.txt', { socketPath: socket })).body.toString();
    const first = await started(t, args, /listening on/);
    assert.equal(await fetchA(), 'file a\n');
    await stopAndCheckRemoved(first, socket);

    const second = await started(t, args, /listening on/);
    assert.doesNotMatch(second.output(), /stale socket/);
    assert.equal(await fetchA(), 'file a\n');
    await stopAndCheckRemoved(second, socket);
  },
);

test('a directory www-data may write needs no keeper: the face removes its own socket', asRoot, async (t) => {
  const { dir, script } = rootDirectory(t);
  const own = join(dir, 'own');
  mkdirSync(own, { mode: 0o755 });
  const www = lookupUser('www-data')!;
  chownSync(own, www.uid, www.gid);
  const socket = join(own, 'face.sock');
  const face = await started(t, ['cgid', '--fastcgi', `unix:${socket}`, '--user', 'www-data'], /^ready /m);
  assert.match(await throughCgiFcgi(socket, script), /hello from www-data\n$/);
  assert.deepEqual(childrenOf(face.child.pid!), [], 'no keeper, no other child');
  face.child.kill('SIGTERM');
  assert.equal((await face.exited).code, 0, face.output());
  assert.throws(() => lstatSync(socket), /ENOENT/);
});

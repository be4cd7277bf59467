/**
 * The cgid daemon on its own: ScriptSock safety (stale socket removed only
 * when dead, a live one never, a foreign daemon never trusted), suexec
 * (scripts as another user with that user's groups; every refusal), and the
 * per-script limits (CPU, address space, open files, processes, output).
 * suexec needs root, as CI runs; a test user is created and removed here.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CgidConnection } from '../../src/cgid/client.js';
import { CgidSupervisor } from '../../src/cgid/supervisor.js';
import type { SpawnPolicy } from '../../src/spawn/posix-spawner.js';
import { decodeMessage, encodeMessage, FrameDecoder } from '../../src/cgid/protocol.js';
import { NO_LIMITS, type ScriptLimits } from '../../src/spawn/order.js';
import { runScript } from '../../src/cgi/run-script.js';
import { closeDescriptor, createListener } from '../../src/sys/index.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { waitFor, waitForOutput } from '../kit/wait.js';

function startDaemon(t: TestContext, socket: string, token: Buffer) {
  return startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'cgid', '--socket', socket], {
    env: { GATEHOUSE_CGID_TOKEN: token.toString('hex'), PATH: process.env.PATH },
  });
}

test('ScriptSock: a stale socket is removed, a live one and a non-socket are refused', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-sock-');
  const token = randomBytes(32);

  const stale = join(dir, 'stale.sock');
  closeDescriptor(createListener({ kind: 'unix', path: stale }, { backlog: 1, mode: 0o600 }));
  const daemon = startDaemon(t, stale, token);
  await waitForListener({ path: stale }, { what: 'the cgid daemon', process: daemon, timeoutMs: 20_000 });
  // The socket accepts just before the daemon reports ready.
  await waitFor(() => /ready \d+/.test(daemon.output()), 'the daemon to report ready', { context: daemon.output });

  const live = join(dir, 'live.sock');
  const other = net.createServer();
  await new Promise<void>((resolve) => other.listen(live, resolve));
  t.after(() => other.close());
  const refused = startDaemon(t, live, token);
  assert.equal((await refused.exited).code, 1);
  // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
  await waitForOutput(
    refused,
    /another process answers on .*live\.sock.*stop it, or choose another ScriptSock/,
    'the refusal of a live socket',
  );

  const file = join(dir, 'file.sock');
  writeFileSync(file, 'not a socket');
  const notSocket = startDaemon(t, file, token);
  assert.equal((await notSocket.exited).code, 1);
  await waitForOutput(notSocket, /exists and is not a socket/, 'the refusal of a non-socket');
});

test('a daemon with another instance token is never trusted, and refuses orders with a wrong token', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-token-');
  const socket = join(dir, 'cgisock');
  const token = randomBytes(32);
  const daemon = startDaemon(t, socket, token);
  await waitForListener({ path: socket }, { what: 'the cgid daemon', process: daemon, timeoutMs: 20_000 });

  await assert.rejects(CgidConnection.connect(socket, randomBytes(32)), (error: Error & { code?: string }) => {
    assert.equal(error.code, 'GH_CGID_PROTOCOL');
    assert.match(error.message, /was not started by this front/);
    return true;
  });
  const trusted = await CgidConnection.connect(socket, token);
  assert.equal(trusted.daemonPid, daemon.child.pid);
  trusted.close();

  // A client that skips the proof check and sends a wrong token gets an ERROR and a closed connection.
  const raw = net.connect(socket);
  const decoder = new FrameDecoder();
  const messages: unknown[] = [];
  raw.on('data', (chunk: Buffer) => {
    for (const frame of decoder.push(chunk).frames) messages.push(decodeMessage(frame));
  });
  raw.write(encodeMessage({ type: 'hello', nonce: randomBytes(16) }));
  raw.write(
    encodeMessage({
      type: 'spawn',
      id: 1,
      token: randomBytes(32),
      order: { file: '/bin/true', argv: ['/bin/true'], cwd: '/', env: [], limits: NO_LIMITS, runAs: null },
    }),
  );
  await new Promise((resolve) => raw.once('close', resolve));
  assert.deepEqual(
    messages.map((message) => (message as { type: string }).type),
    ['welcome', 'error'],
  );
  assert.match((messages[1] as { message: string }).message, /instance token mismatch/);
});

async function run(
  supervisor: CgidSupervisor,
  file: string,
  argv: string[] = [file],
): Promise<{ output: string; stderr: string; code: number | null; signal: string | null; kind: string }> {
  const stderr: string[] = [];
  const script = runScript({
    file,
    argv,
    cwd: '/',
    env: { PATH: '/usr/bin:/bin' },
    spawner: supervisor,
    nph: true,
    timeoutMs: 20_000,
    onStderrLine: (line) => stderr.push(line),
  });
  const head = await script.head;
  const chunks: Buffer[] = [];
  if (head.kind === 'raw') for await (const chunk of script.body) chunks.push(chunk as Buffer);
  const result = await script.finished;
  return {
    output: Buffer.concat(chunks).toString(),
    stderr: stderr.join('\n'),
    code: result.code,
    signal: result.signal,
    kind: head.kind === 'spawn-failed' ? `spawn-failed:${head.error.errno ?? head.error.code}:${head.error.message}` : head.kind,
  };
}

async function supervise(t: TestContext, policy: SpawnPolicy, daemonArgs: string[] = []): Promise<CgidSupervisor> {
  const dir = tempDir(t, 'gatehouse-cgid-sup-');
  const supervisor = new CgidSupervisor({ socketPath: join(dir, 'cgisock'), log: () => {}, policy, daemonArgs });
  await supervisor.start();
  t.after(() => supervisor.stop());
  return supervisor;
}

function limits(values: Partial<ScriptLimits>): ScriptLimits {
  return { ...NO_LIMITS, ...values };
}

test('limits apply to every script: CPU, address space, open files, output', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-limits-');
  const script = (name: string, body: string) => {
    writeFileSync(join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
    return join(dir, name);
  };
  const supervisor = await supervise(t, {
    limits: limits({ cpuSeconds: 1, memoryBytes: 512 * 1024 * 1024, openFiles: 64, outputBytes: 100_000 }),
  });

  const shown = await run(supervisor, script('show.sh', 'echo "nofile $(ulimit -n) as $(ulimit -v) cpu $(ulimit -t)"'));
  assert.equal(shown.output.trim(), `nofile 64 as ${512 * 1024} cpu 1`);

  const spin = await run(supervisor, script('spin.sh', 'while :; do :; done'));
  assert.ok(spin.signal === 'SIGXCPU' || spin.signal === 'SIGKILL', `a CPU-bound script is stopped by RLIMIT_CPU (got ${spin.signal})`);

  const flood = await run(supervisor, script('flood.sh', 'exec head -c 10000000 /dev/zero'));
  assert.equal(flood.output.length, 100_000, 'output is cut at the cap');
  assert.equal(flood.signal, 'SIGKILL', 'and the script killed');
});

const TEST_USER = 'gh-cgid-test';
const EXTRA_GROUP = 'gh-cgid-extra';

function ensureTestUser(t: TestContext): { uid: number; gid: number; extraGid: number } {
  const exists = (database: string, name: string) => {
    try {
      execFileSync('getent', [database, name]);
      return true;
    } catch {
      return false;
    }
  };
  const createdGroup = !exists('group', EXTRA_GROUP);
  if (createdGroup) execFileSync('groupadd', [EXTRA_GROUP]);
  const createdUser = !exists('passwd', TEST_USER);
  if (createdUser)
    execFileSync('useradd', ['--no-create-home', '--user-group', '--shell', '/usr/sbin/nologin', '--groups', EXTRA_GROUP, TEST_USER]);
  t.after(() => {
    if (createdUser) execFileSync('userdel', [TEST_USER]);
    if (createdGroup) execFileSync('groupdel', [EXTRA_GROUP]);
  });
  const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString());
  const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString());
  const extraGid = Number(execFileSync('getent', ['group', EXTRA_GROUP]).toString().split(':')[2]);
  return { uid, gid, extraGid };
}

test('suexec: scripts run as the route user with its groups; every rule refuses', {
  skip: process.getuid?.() !== 0 ? 'suexec needs root (CI runs as root)' : false,
}, async (t) => {
  const { uid, gid, extraGid } = ensureTestUser(t);
  const base = tempDir(t, 'gatehouse-cgid-suexec-');
  chmodSync(base, 0o755);
  const root = join(base, 'site');
  mkdirSync(root, { mode: 0o755 });
  const outside = join(base, 'outside');
  mkdirSync(outside, { mode: 0o755 });
  const make = (directory: string, name: string, options: { owner?: [number, number]; mode?: number } = {}) => {
    const file = join(directory, name);
    writeFileSync(file, '#!/bin/sh\necho "uid $(id -u) gid $(id -g) groups $(id -G)"\n');
    chmodSync(file, options.mode ?? 0o755);
    chownSync(file, ...(options.owner ?? [uid, gid]));
    return file;
  };
  const good = make(root, 'good.sh');
  const rootOwned = make(root, 'root-owned.sh', { owner: [0, 0] });
  const groupWritable = make(root, 'group-writable.sh', { mode: 0o775 });
  make(outside, 'outside.sh');
  symlinkSync(join(outside, 'outside.sh'), join(root, 'escape.sh'));
  assert.equal(statSync(good).uid, uid);

  const supervisor = await supervise(t, { suexec: [{ directory: root, user: TEST_USER, group: TEST_USER }] });
  const ran = await run(supervisor, good);
  assert.equal(ran.kind, 'raw');
  const [, shownUid, shownGid, groups] = /^uid (\d+) gid (\d+) groups (.*)$/.exec(ran.output.trim())!;
  assert.equal(Number(shownUid), uid);
  assert.equal(Number(shownGid), gid);
  const groupIds = groups!.split(' ').map(Number);
  assert.ok(groupIds.includes(extraGid), `initgroups gave the user's supplementary groups (${groups})`);
  assert.ok(!groupIds.includes(0), `root's groups are not inherited (${groups})`);

  const refusal = async (file: string, pattern: RegExp) => {
    const result = await run(supervisor, file);
    assert.match(result.kind, /^spawn-failed:EPERM:/);
    assert.match(result.kind, pattern);
  };
  await refusal(rootOwned, /owned by 0:0, not by/);
  await refusal(groupWritable, /writable by group or others/);
  await refusal(join(root, 'escape.sh'), /outside the route root/);

  const strict = await supervise(t, { suexec: [{ directory: root, user: TEST_USER, group: TEST_USER }] }, [
    '--suexec-min-uid',
    String(uid + 1),
  ]);
  const belowMinimum = await run(strict, good);
  assert.match(belowMinimum.kind, /spawn-failed:EPERM:.*uid \d+ is below the minimum/);

  const unknown = await supervise(t, { suexec: [{ directory: root, user: 'gh-no-such-user', group: TEST_USER }] });
  assert.match((await run(unknown, good)).kind, /no user named gh-no-such-user/);

  // RLimitNPROC bites for a suexec user (Linux does not enforce it for root).
  const limited = await supervise(t, {
    suexec: [{ directory: root, user: TEST_USER, group: TEST_USER }],
    limits: limits({ processes: 1 }),
  });
  const forks = make(root, 'forks.sh');
  writeFileSync(forks, '#!/bin/sh\n/bin/true && echo forked || echo refused\n');
  chownSync(forks, uid, gid);
  const forked = await run(limited, forks);
  assert.doesNotMatch(forked.output, /forked/);
  assert.match(`${forked.output} ${forked.stderr}`, /refused|Resource temporarily unavailable|Cannot fork/);
});

test('a front that stalls mid-frame stalls nobody: another connection is served meanwhile', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-stall-');
  const socket = join(dir, 'cgisock');
  const token = randomBytes(32);
  const daemon = startDaemon(t, socket, token);
  await waitForListener({ path: socket }, { what: 'the cgid daemon', process: daemon, timeoutMs: 20_000 });
  const staller = net.connect(socket);
  t.after(() => staller.destroy());
  const hello = encodeMessage({ type: 'hello', nonce: randomBytes(16) });
  staller.write(hello.subarray(0, 7)); // half a header, then nothing
  const connection = await CgidConnection.connect(socket, token);
  t.after(() => connection.close());
  assert.equal(connection.daemonPid, daemon.child.pid);
  assert.equal(staller.destroyed, false, 'the stalled connection is still open');
});

test('a daemon that stops answering is replaced: the order fails (503 upstream), the next one is served', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-wedged-');
  const lines: string[] = [];
  const supervisor = new CgidSupervisor({ socketPath: join(dir, 'cgisock'), log: (line) => lines.push(line), spawnAnswerTimeoutMs: 1000 });
  await supervisor.start();
  t.after(() => supervisor.stop());
  const first = supervisor.daemonPid!;
  process.kill(first, 'SIGSTOP');
  const wedged = await run(supervisor, '/bin/true');
  assert.match(wedged.kind, /^spawn-failed:GH_CGID_UNAVAILABLE:/);
  // Orders fail until the replacement daemon answers.
  const result = await waitFor(async () => {
    const attempt = await run(supervisor, '/bin/echo', ['/bin/echo', 'again']);
    return attempt.kind === 'raw' && attempt;
  }, 'an order served by the replacement daemon');
  assert.equal(result.output, 'again\n');
  assert.notEqual(supervisor.daemonPid, first);
  assert.ok(
    lines.some((line) => /did not answer a spawn order/.test(line)),
    lines.join('\n'),
  );
});

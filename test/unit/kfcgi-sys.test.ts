/**
 * src/sys: the system calls Node lacks, exercised for real (no mocks):
 * sockets with a mode, liveness probes, descriptor passing with a payload,
 * users and groups, rlimits, files by directory descriptor.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  constants as fsConstants,
  fstatSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import {
  armLifeline,
  closeDescriptor,
  createLifeline,
  createListener,
  getResourceLimit,
  groupList,
  identityAt,
  isListeningSocket,
  listDirectoryAt,
  lookupUser,
  readLinkAt,
  receiveDescriptors,
  sendDescriptors,
  setResourceLimit,
  socketPair,
  type SysError,
  tcpListenQueue,
  unixSocketIsLive,
  unlinkAt,
} from '../../src/sys/index.js';
import { waitFor } from '../kit/wait.js';

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-sys-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('createListener: a unix socket gets its mode at bind, whatever the umask; the umask is restored', (t) => {
  const path = join(scratch(t), 'a.sock');
  const previous = process.umask(0o000);
  try {
    const fd = createListener({ kind: 'unix', path }, { backlog: 8, mode: 0o640 });
    t.after(() => closeDescriptor(fd));
    assert.equal(statSync(path).mode & 0o777, 0o640);
    assert.equal(process.umask(0o000), 0o000, 'umask restored');
    assert.ok(isListeningSocket(fd));
    assert.equal(unixSocketIsLive(path), true);
  } finally {
    process.umask(previous);
  }
});

test('unixSocketIsLive: false for a missing path and for a socket nobody listens on', (t) => {
  const dir = scratch(t);
  assert.equal(unixSocketIsLive(join(dir, 'none.sock')), false);
  const path = join(dir, 'dead.sock');
  const fd = createListener({ kind: 'unix', path }, { backlog: 1 });
  closeDescriptor(fd);
  assert.equal(unixSocketIsLive(path), false);
});

test('createListener: errors name the call and the object', (t) => {
  const path = join(scratch(t), 'missing-dir', 'x.sock');
  assert.throws(
    () => createListener({ kind: 'unix', path }, { backlog: 1 }),
    (error: SysError) => error.syscall === 'bind' && error.errnoName === 'ENOENT' && error.message.includes(path),
  );
});

test('tcpListenQueue reports the backlog of a TCP listener; null for a unix socket', (t) => {
  const fd = createListener({ kind: 'tcp', host: '127.0.0.1', port: 0 }, { backlog: 37 });
  t.after(() => closeDescriptor(fd));
  assert.deepEqual(tcpListenQueue(fd), { queued: 0, limit: 37 });
  const path = join(scratch(t), 'u.sock');
  const unix = createListener({ kind: 'unix', path }, { backlog: 4 });
  t.after(() => closeDescriptor(unix));
  assert.equal(tcpListenQueue(unix), null);
});

test('sendDescriptors / receiveDescriptors: a payload with a descriptor, received as a working copy', async (t) => {
  const path = join(scratch(t), 'srv.sock');
  const server = net
    .createServer((socket) => {
      socket.on('error', () => undefined);
      socket.end('from the server\n');
    })
    .listen(path);
  t.after(() => server.close());
  await new Promise((resolve) => server.once('listening', resolve));
  const client = net.connect(path);
  await new Promise((resolve) => client.once('connect', resolve));
  const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
  const [a, b] = socketPair();
  t.after(() => {
    closeDescriptor(a);
    closeDescriptor(b);
  });
  const cookie = Buffer.from('0123456789abcdef', 'hex');
  assert.equal(sendDescriptors(a, cookie, [fd]), true);
  client.destroy();
  const first = receiveDescriptors(b, 8, 1);
  assert.equal(first.kind, 'message');
  if (first.kind === 'message') for (const passed of first.fds) closeDescriptor(passed);
  // The first receive consumed the message; build another to check the content.
  const [c, d] = socketPair();
  const probe = net.connect(path);
  await new Promise((resolve) => probe.once('connect', resolve));
  sendDescriptors(c, cookie, [(probe as unknown as { _handle: { fd: number } })._handle.fd]);
  probe.destroy();
  const received = receiveDescriptors(d, 8, 1);
  assert.equal(received.kind, 'message');
  if (received.kind !== 'message') return;
  assert.deepEqual(received.payload, cookie);
  assert.equal(received.fds.length, 1);
  const copy = new net.Socket({ fd: received.fds[0]!, readable: true, writable: true });
  const text = await new Promise<string>((resolve) => {
    let data = '';
    copy.on('data', (chunk) => (data += chunk.toString()));
    copy.on('end', () => resolve(data));
  });
  assert.equal(text, 'from the server\n');
  copy.destroy();
  assert.deepEqual(receiveDescriptors(d, 8, 1), { kind: 'again' });
  closeDescriptor(c);
  assert.deepEqual(receiveDescriptors(d, 8, 1), { kind: 'eof' });
  closeDescriptor(d);
});

const openDescriptorCount = () => readdirSync('/proc/self/fd').length;

test('sendDescriptors / receiveDescriptors: several descriptors in one message arrive in order; more than the receiver allows are refused and closed', (t) => {
  const dir = scratch(t);
  const files = ['one', 'two', 'three'].map((name) => {
    const path = join(dir, name);
    writeFileSync(path, name);
    return openSync(path, 'r');
  });
  t.after(() => {
    for (const fd of files) closeSync(fd);
  });
  const [a, b] = socketPair();
  t.after(() => {
    closeDescriptor(a);
    closeDescriptor(b);
  });
  assert.equal(sendDescriptors(a, Buffer.from('x'), files), true);
  const received = receiveDescriptors(b, 16, 3);
  assert.equal(received.kind, 'message');
  if (received.kind !== 'message') return;
  assert.deepEqual(received.payload, Buffer.from('x'));
  assert.deepEqual(
    received.fds.map((fd) => readFileSync(fd, 'utf8')),
    ['one', 'two', 'three'],
  );
  for (const fd of received.fds) closeSync(fd);

  // More attached than allowed is an error, and every descriptor of that message is closed: with three
  // attached, the kernel drops those that do not fit the control area (MSG_CTRUNC) and we close the rest;
  // with two, both fit (the area is rounded up to the word size) and both are closed here.
  for (const attached of [files, files.slice(0, 2)]) {
    const before = openDescriptorCount();
    assert.equal(sendDescriptors(a, Buffer.from('y'), attached), true);
    assert.throws(() => receiveDescriptors(b, 16, 1), /more than 1 descriptor\(s\) were attached/);
    assert.equal(openDescriptorCount(), before, `no descriptor left open by a refused message of ${attached.length}`);
  }
});

test('lookupUser and groupList read the user database', () => {
  const root = lookupUser('root');
  assert.equal(root?.uid, 0);
  assert.equal(root?.gid, 0);
  assert.equal(lookupUser('no-such-user-gatehouse'), null);
  const nobody = lookupUser('nobody');
  assert.ok(nobody && groupList(nobody.name, nobody.gid).includes(nobody.gid));
});

test('resource limits: read, lower the soft limit, restore', () => {
  const original = getResourceLimit('NOFILE');
  assert.ok(original.soft > 0 && original.hard >= original.soft);
  setResourceLimit('NOFILE', { soft: Math.min(original.soft, 512), hard: original.hard });
  assert.equal(getResourceLimit('NOFILE').soft, Math.min(original.soft, 512));
  setResourceLimit('NOFILE', original);
  assert.deepEqual(getResourceLimit('NOFILE'), original);
});

test('files by directory descriptor: identity, unlink, listing and links (they keep working after chroot)', (t) => {
  const dir = scratch(t);
  const path = join(dir, 'x.sock');
  const fd = createListener({ kind: 'unix', path }, { backlog: 1 });
  closeDescriptor(fd);
  const dirFd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  t.after(() => closeSync(dirFd));
  const identity = identityAt(dirFd, 'x.sock');
  assert.equal(identity?.ino, BigInt(statSync(path).ino));
  assert.deepEqual(listDirectoryAt(dirFd, '.'), ['x.sock']);
  unlinkAt(dirFd, 'x.sock');
  assert.equal(identityAt(dirFd, 'x.sock'), null);
  const proc = openSync('/proc', fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  t.after(() => closeSync(proc));
  assert.ok(listDirectoryAt(proc, `${process.pid}/fd`).includes(String(dirFd)));
  assert.equal(readLinkAt(proc, `${process.pid}/fd/${dirFd}`), dir);
  assert.equal(readLinkAt(proc, `${process.pid}/fd/99999`), null);
  assert.ok(fstatSync(dirFd).isDirectory());
});

/** Alive and not a zombie. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

test('a lifeline: closing its kept end sends SIGKILL to the armed process group, what the leader forked included', async (t) => {
  const lifeline = createLifeline('SIGKILL');
  // A leader that forks a child of its own and then waits, as php-cgi does with PHP_FCGI_CHILDREN.
  const child = spawn('/bin/sh', ['-c', 'sleep 600 & echo $!; wait'], {
    detached: true,
    stdio: ['ignore', 'pipe', 'ignore', lifeline.give],
  });
  t.after(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone, as it should be
    }
  });
  armLifeline(lifeline.give, child.pid!);
  closeDescriptor(lifeline.give);
  const grandchild = Number(
    await new Promise<string>((resolve) => child.stdout!.once('data', (chunk: Buffer) => resolve(chunk.toString()))),
  );
  assert.ok(running(child.pid!) && running(grandchild), 'both run while the lifeline is held');
  closeDescriptor(lifeline.keep);
  const exit = await waitFor(
    () => (child.exitCode !== null || child.signalCode !== null) && { signal: child.signalCode },
    'the leader to exit once the kept end closed',
    { timeoutMs: 10_000, wakeOn: { emitter: child, events: ['exit'] } },
  );
  assert.equal(exit.signal, 'SIGKILL');
  // The grandchild went in the same signal (reparented to init, it shows as a zombie until init reaps it).
  await waitFor(() => !running(grandchild), `the leader's own child ${grandchild} to be killed with it`);
  assert.equal(running(grandchild), false, "the worker's own child was killed with it");
});

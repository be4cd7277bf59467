/**
 * NETLINK_SOCK_DIAG for unix sockets: the request and reply codec in exact
 * bytes (linux/netlink.h, linux/unix_diag.h), garbage that never throws, and
 * the live reader against listening sockets with a known number of
 * connections waiting (unix through sock_diag, TCP through TCP_INFO, both
 * through the SocketView the pools use).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { decodeNetlinkReplies, encodeUnixDiagRequest, UnixDiagShow } from '../../src/sys/netlink.js';
import { SockDiag, acceptConnection, closeDescriptor, createListener } from '../../src/sys/index.js';
import { ProcView } from '../../src/sys/proc-view.js';
import { SocketView } from '../../src/kfcgi/socket-view.js';
import { freePort } from '../kit/process.js';
import type { Listener } from '../../src/kfcgi/listener.js';
import type { ListenAddress } from '../../src/sys/index.js';

const hex = (text: string) => Buffer.from(text.replace(/\s+/g, ''), 'hex');

test('encodeUnixDiagRequest: an exact lookup by inode, no cookie checked', () => {
  const bytes = encodeUnixDiagRequest({ sequence: 7, inode: 0x12345, show: UnixDiagShow.RQLEN | UnixDiagShow.NAME });
  assert.deepEqual(
    bytes,
    hex(`
      28000000 1400 0100 07000000 00000000
      01 00 0000 ffffffff 45230100 11000000 ffffffff ffffffff`),
  );
});

test('encodeUnixDiagRequest: a dump of chosen states (NLM_F_REQUEST | NLM_F_DUMP)', () => {
  const bytes = encodeUnixDiagRequest({ sequence: 0x01020304, states: 1 << 1, show: UnixDiagShow.NAME | UnixDiagShow.PEER });
  assert.deepEqual(
    bytes,
    hex(`
      28000000 1400 0103 04030201 00000000
      01 00 0000 02000000 00000000 05000000 00000000 00000000`),
  );
});

/** A reply as the kernel writes it: nlmsghdr, unix_diag_msg, attributes (each padded to 4 bytes). */
const listenerReply = hex(`
  3c000000 1400 0000 07000000 39300000
  01 01 0a 00 45230100 00000000 00000000
  1000 0000 2f746d702f612e736f636b00
  0c00 0400 03000000 00100000`);

test('decodeNetlinkReplies: a listener with its name and its listen queue (UNIX_DIAG_RQLEN)', () => {
  assert.equal(listenerReply.length, 60);
  assert.deepEqual(decodeNetlinkReplies(listenerReply), [
    {
      kind: 'socket',
      sequence: 7,
      socket: {
        type: 1,
        state: 10,
        inode: 0x12345,
        name: Buffer.from('/tmp/a.sock\0'),
        receiveQueue: 3,
        sendQueue: 4096,
      },
    },
  ]);
});

test('decodeNetlinkReplies: several messages in one datagram, peer and pending inodes, NLMSG_DONE, NLMSG_ERROR', () => {
  const connected = hex(`
    28000000 1400 0200 09000000 00000000
    01 01 01 00 0a000000 00000000 00000000
    0800 0200 0b000000`);
  const listener = hex(`
    2c000000 1400 0200 09000000 00000000
    01 01 0a 00 0c000000 00000000 00000000
    0c00 0300 0d000000 0e000000`);
  const done = hex('14000000 0300 0200 09000000 00000000 00000000');
  const error = hex('24000000 0200 0000 0a000000 00000000 feffffff 28000000 1400 0100 0a000000 00000000');
  assert.deepEqual(decodeNetlinkReplies(Buffer.concat([connected, listener, done, error])), [
    { kind: 'socket', sequence: 9, socket: { type: 1, state: 1, inode: 10, peer: 11 } },
    { kind: 'socket', sequence: 9, socket: { type: 1, state: 10, inode: 12, pending: [13, 14] } },
    { kind: 'done', sequence: 9 },
    { kind: 'error', sequence: 10, errno: 2 },
  ]);
});

test('decodeNetlinkReplies: truncated or inconsistent bytes end in "malformed", never an exception', () => {
  const cases: [Buffer, RegExp][] = [
    [Buffer.from(listenerReply.subarray(0, 30)), /message of 60 bytes at offset 0 of 30/],
    [Buffer.concat([listenerReply, Buffer.alloc(5)]), /5 bytes left over/],
    [hex('14000000 1400 0000 07000000 00000000 01010a00'), /unix_diag_msg of 4 bytes/],
    [hex('20000000 1400 0000 07000000 00000000 02010a00 01000000 00000000 00000000'), /family 2/],
    [hex('24000000 1400 0000 07000000 00000000 01010a00 01000000 00000000 00000000 ff00 0000'), /attribute of 255 bytes/],
    [hex('0c000000 0300 0000 00000000 00000000'), /message of 12 bytes/],
    [hex('28000000 1400 0000 07000000 00000000 01010a00 01000000 00000000 00000000 0600 0400 0000 0000'), /UNIX_DIAG_RQLEN of 2 bytes/],
  ];
  for (const [bytes, reason] of cases) {
    const replies = decodeNetlinkReplies(bytes);
    const last = replies.at(-1);
    assert.equal(last?.kind, 'malformed', `${bytes.toString('hex')}: ${JSON.stringify(replies)}`);
    assert.match((last as { reason: string }).reason, reason);
  }
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
      decodeNetlinkReplies(bytes);
    }),
    { numRuns: 2000 },
  );
});

function scratch(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-sockdiag-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function listenerFor(address: ListenAddress, fd: number, backlog: number): Listener {
  return { fd, address, backlog, owned: null, describe: () => JSON.stringify(address), close: () => closeDescriptor(fd) };
}

async function connectMany(count: number, options: net.NetConnectOpts): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  for (let index = 0; index < count; index += 1) {
    const socket = net.connect(options);
    socket.on('error', () => undefined);
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    sockets.push(socket);
  }
  return sockets;
}

test('the listen queue of a unix socket: exactly the connections not yet accepted, and the backlog', async (t) => {
  const path = join(scratch(t), 'q.sock');
  const fd = createListener({ kind: 'unix', path }, { backlog: 16 });
  t.after(() => closeDescriptor(fd));
  const view = new SocketView(listenerFor({ kind: 'unix', path }, fd, 16), new ProcView());
  t.after(() => view.close());
  assert.deepEqual(view.queue(), { queued: 0, limit: 16 });
  const clients = await connectMany(5, { path });
  t.after(() => {
    for (const client of clients) client.destroy();
  });
  assert.deepEqual(view.queue(), { queued: 5, limit: 16 });
  // Two accepted: three wait; the two accepted ones are the pool's connections (they carry the listener's name).
  const accepted = [acceptConnection(fd)!, acceptConnection(fd)!];
  t.after(() => {
    for (const connection of accepted) closeDescriptor(connection.fd);
  });
  assert.deepEqual(view.queue(), { queued: 3, limit: 16 });
  const expected = new Set(accepted.map((connection) => `socket:[${fstatSync(connection.fd).ino}]`));
  assert.deepEqual(view.connections(), expected);
  // The raw reader: an exact lookup of the listener by inode; a missing inode is null, not an error.
  const diag = new SockDiag();
  t.after(() => diag.close());
  const listener = diag.unixSocket(fstatSync(fd).ino, UnixDiagShow.RQLEN | UnixDiagShow.NAME);
  assert.equal(listener?.receiveQueue, 3);
  assert.deepEqual(listener?.name?.subarray(0, Buffer.byteLength(path)), Buffer.from(path));
  assert.equal(diag.unixSocket(1, UnixDiagShow.RQLEN), null);
});

test('the listen queue of a TCP socket, and its accepted connections from /proc/net/tcp', async (t) => {
  const port = await freePort();
  const fd = createListener({ kind: 'tcp', host: '127.0.0.1', port }, { backlog: 16 });
  t.after(() => closeDescriptor(fd));
  const view = new SocketView(listenerFor({ kind: 'tcp', host: '127.0.0.1', port }, fd, 16), new ProcView());
  assert.deepEqual(view.queue(), { queued: 0, limit: 16 });
  const clients = await connectMany(4, { host: '127.0.0.1', port });
  t.after(() => {
    for (const client of clients) client.destroy();
  });
  assert.deepEqual(view.queue(), { queued: 4, limit: 16 });
  const accepted = acceptConnection(fd)!;
  t.after(() => closeDescriptor(accepted.fd));
  assert.deepEqual(view.queue(), { queued: 3, limit: 16 });
  assert.deepEqual(view.connections(), new Set([`socket:[${fstatSync(accepted.fd).ino}]`]));
});

/**
 * Sockets beyond what node:net offers, for kfcgi and the cgid daemon alike:
 * listening sockets bound with no window of a wider mode, accept4 outside
 * libuv, socket pairs, passing descriptors with SCM_RIGHTS, the peer's
 * credentials, and uv_poll watchers for descriptors libuv does not own.
 *
 * Every descriptor made here is close-on-exec, so none leaks into a spawned
 * child unless it is passed on purpose (dup2 onto the child's stdio clears
 * the flag on the child's copy). Struct layouts (msghdr, cmsghdr,
 * sockaddr_un/in/in6, ucred, tcp_info's first fields) are those of the
 * Linux UAPI and glibc, laid out with the sizes koffi reports.
 */
import { lchownSync, lstatSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import { ErrorCode, GatehouseError } from '../errors.js';
import { Block, POINTER_SIZE, SIZE_T_SIZE, SysError, closeQuietly, fail, koffi, libc, withBlock } from './libc.js';
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  F_GETFL,
  F_SETFL,
  IPPROTO_TCP,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  O_NONBLOCK,
  SCM_RIGHTS,
  FD_CLOEXEC,
  F_GETFD,
  F_SETFD,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
  SO_ACCEPTCONN,
  SO_PEERCRED,
  SO_REUSEADDR,
  TCP_INFO,
  UNIX_PATH_MAX,
} from './linux.js';

const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  accept4: libc.func('int accept4(int fd, void *addr, _Inout_ uint32_t *len, int flags)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, size_t len, int flags)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  umask: libc.func('uint32_t umask(uint32_t mask)'),
  inet_pton: libc.func('int inet_pton(int af, const char *src, _Out_ uint8_t *dst)'),
  getsockname: libc.func('int getsockname(int fd, void *addr, _Inout_ uint32_t *len)'),
  sendto: libc.func('intptr_t sendto(int fd, const uint8_t *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
};

/** umask(2): sets the mask and returns the previous one; only createListener uses it, around bind(). */
function setUmask(mask: number): number {
  return Number(c.umask(mask));
}

// ---------------------------------------------------------------------------
// Listening sockets

/**
 * Where a socket listens (or, for the FastCGI client, where it connects): a
 * unix socket path, a numeric TCP host and port, or a descriptor inherited
 * already listening (a process manager), or a socket systemd passed (socket
 * activation: every one, or the one with this name; src/sys/systemd.ts turns
 * it into a descriptor). The one address type of gatehouse;
 * src/options/listen-address.ts reads it from what operators write.
 */
export type ListenAddress =
  | { kind: 'unix'; path: string }
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'fd'; fd: number }
  | { kind: 'systemd'; name?: string };

export function describeListenAddress(address: ListenAddress): string {
  if (address.kind === 'unix') return address.path;
  if (address.kind === 'fd') return `fd:${address.fd}`;
  if (address.kind === 'systemd') return address.name === undefined ? 'systemd' : `systemd:${address.name}`;
  return `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

function invalidAddress(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.ADDRESS_INVALID, message);
}

/**
 * The bytes of a numeric IP address in network order (4 for IPv4, 16 for
 * IPv6), read by libc's inet_pton(3), or null when it is not one. A zone
 * index (fe80::1%eth0) is not part of the address: null.
 */
export function ipAddressBytes(host: string): { family: typeof AF_INET | typeof AF_INET6; bytes: Uint8Array } | null {
  const family = host.includes(':') ? AF_INET6 : AF_INET;
  const bytes = new Uint8Array(family === AF_INET6 ? 16 : 4);
  // inet_pton writes at most 16 bytes; the buffer always has room for them.
  const buffer = Buffer.alloc(16);
  if (c.inet_pton(family, host, buffer) !== 1) return null;
  bytes.set(buffer.subarray(0, bytes.length));
  return { family, bytes };
}

/**
 * An IPv6 address as eight lower-case hex groups without compression, or
 * ::ffff:a.b.c.d for an IPv4-mapped one: how acceptConnection() reports
 * peers and normalizeAddress() writes allow-lists, so that the two compare.
 */
function formatIPv6(bytes: Uint8Array): string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  const groups = Array.from({ length: 8 }, (_, index) => view.getUint16(index * 2, false));
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) return `::ffff:${[...bytes.subarray(12)].join('.')}`;
  return groups.map((group) => group.toString(16)).join(':');
}

/** Encodes a sockaddr for `address` into a block (the caller frees it) and returns its length. */
function encodeSockaddr(address: ListenAddress): { block: Block; length: number; family: number } {
  if (address.kind === 'fd' || address.kind === 'systemd')
    throw invalidAddress(`${describeListenAddress(address)} is a socket already listening: there is nothing to bind`);
  if (address.kind === 'unix') {
    const path = Buffer.from(address.path);
    if (path.length >= UNIX_PATH_MAX) {
      throw invalidAddress(
        `socket path ${address.path} is ${path.length} bytes; unix socket paths must be shorter than ${UNIX_PATH_MAX} bytes: choose a shorter path`,
      );
    }
    const block = new Block(2 + UNIX_PATH_MAX);
    block.view.setUint16(0, AF_UNIX, true);
    block.bytes.set(path, 2);
    return { block, length: 2 + path.length + 1, family: AF_UNIX };
  }
  const ip = ipAddressBytes(address.host);
  if (ip === null) {
    throw invalidAddress(`"${address.host}" is not a numeric IP address: write one such as 127.0.0.1 or [::1]`);
  }
  if (ip.family === AF_INET) {
    // struct sockaddr_in: family, port (network order), 4 address bytes, 8 bytes of zero.
    const block = new Block(16);
    block.view.setUint16(0, AF_INET, true);
    block.view.setUint16(2, address.port, false);
    block.bytes.set(ip.bytes, 4);
    return { block, length: 16, family: AF_INET };
  }
  // struct sockaddr_in6: family, port, flowinfo (4), 16 address bytes, scope id (4).
  const block = new Block(28);
  block.view.setUint16(0, AF_INET6, true);
  block.view.setUint16(2, address.port, false);
  block.bytes.set(ip.bytes, 8);
  return { block, length: 28, family: AF_INET6 };
}

export interface ListenOptions {
  /** listen(2) backlog; the kernel truncates it to net.core.somaxconn. */
  backlog: number;
  /**
   * Unix sockets: the permission bits the socket file gets at bind(2). The
   * process umask is set to the complement around bind(), so the file never
   * exists with a wider mode (no bind-then-chmod window).
   */
  mode?: number;
  /**
   * Unix sockets: the owner and group the socket file is given between
   * bind(2) and listen(2). Until listen() nobody can connect, so no one ever
   * connects under the wrong owner; and the mode is final from bind on, so
   * the change never widens who may connect.
   */
  owner?: { uid: number; gid: number };
}

/**
 * Creates a listening stream socket (close-on-exec, blocking) and returns its
 * descriptor. The manager keeps it out of libuv so that it never accepts on
 * it unless it wraps it on purpose (`new net.Server().listen({ fd })`).
 */
export function createListener(address: ListenAddress, options: ListenOptions): number {
  const { block, length, family } = encodeSockaddr(address);
  const where = describeListenAddress(address);
  try {
    const fd = c.socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) fail('socket', where);
    try {
      if (address.kind === 'tcp') setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, where);
      const mode = options.mode ?? 0o660;
      const previous = address.kind === 'unix' ? setUmask(~mode & 0o777) : null;
      let bound: number;
      try {
        bound = c.bind(fd, block.ptr, length) as number;
      } finally {
        if (previous !== null) setUmask(previous);
      }
      if (bound !== 0) fail('bind', where);
      if (address.kind === 'unix' && options.owner) {
        try {
          // lchown: the path was made by this bind; never follow a link someone put in its place.
          lchownSync(address.path, options.owner.uid, options.owner.gid);
        } catch (error) {
          unlinkQuietly(address.path);
          throw error;
        }
      }
      if (c.listen(fd, options.backlog) !== 0) {
        const errno = koffi.errno();
        if (address.kind === 'unix') unlinkQuietly(address.path);
        fail('listen', where, errno);
      }
      return fd;
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  } finally {
    block.free();
  }
}

/**
 * Whether something accepts connections on the unix socket at `path` right
 * now (a live server), probed with a non-blocking connect(2). ECONNREFUSED and
 * ENOENT mean no; EAGAIN (a full queue) means yes.
 */
export function unixSocketIsLive(path: string): boolean {
  const { block, length } = encodeSockaddr({ kind: 'unix', path });
  try {
    const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
    if (fd < 0) fail('socket', path);
    try {
      if (c.connect(fd, block.ptr, length) === 0) return true;
      const errno = koffi.errno();
      const { EAGAIN, EINPROGRESS, ECONNREFUSED, ENOENT, ENOTSOCK } = os.constants.errno;
      if (errno === EAGAIN || errno === EINPROGRESS) return true;
      if (errno === ECONNREFUSED || errno === ENOENT || errno === ENOTSOCK) return false;
      throw new SysError('connect', path, errno);
    } finally {
      closeQuietly(fd);
    }
  } finally {
    block.free();
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone already */
  }
}

/** What is at a unix socket path: nothing, a socket nobody accepts on (left by a crash), a live server's socket, or another file. */
export type SocketPathState = 'absent' | 'stale' | 'live' | 'not-a-socket';

/** Looks at `path` without changing anything: lstat, then a connect(2) probe when it is a socket. */
export function unixSocketPathState(path: string): SocketPathState {
  let stat;
  try {
    stat = lstatSync(path);
  } catch {
    return 'absent';
  }
  if (!stat.isSocket()) return 'not-a-socket';
  return unixSocketIsLive(path) ? 'live' : 'stale';
}

/**
 * Makes room to bind a unix socket at `path`, for every command that binds
 * one: nothing there is fine; a socket nobody accepts on (left by a process
 * that was killed) is removed; a live server's socket, or a file that is not
 * a socket, is refused with one line that says what to do (SOCKET_IN_USE),
 * and left alone. Returns whether a stale socket was removed, for the log.
 */
export function claimUnixSocketPath(path: string): boolean {
  const state = unixSocketPathState(path);
  if (state === 'live')
    throw new GatehouseError(
      ErrorCode.SOCKET_IN_USE,
      `another server is accepting connections on ${path}: stop it first, or choose another path`,
    );
  if (state === 'not-a-socket')
    throw new GatehouseError(
      ErrorCode.SOCKET_IN_USE,
      `${path} exists and is not a socket; it is left alone: move it away, or choose another path`,
    );
  if (state === 'absent') return false;
  try {
    unlinkSync(path);
  } catch (error) {
    // Another starting server removed it first; bind() decides which of us gets the path.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  return true;
}

/** Sets FD_CLOEXEC on a descriptor this process inherited (systemd's sockets), so it does not leak into children. */
export function setCloseOnExec(fd: number): void {
  const flags = c.fcntl(fd, F_GETFD, 'int', 0) as number;
  if (flags < 0) fail('fcntl', `F_GETFD fd ${fd}`);
  if ((flags & FD_CLOEXEC) === 0 && (c.fcntl(fd, F_SETFD, 'int', flags | FD_CLOEXEC) as number) < 0) fail('fcntl', `F_SETFD fd ${fd}`);
}

/**
 * Where the socket `fd` is bound (getsockname(2)), as a ListenAddress: a unix
 * path (an abstract name starts with "@"), or an IP address and port. null
 * for another kind of descriptor.
 */
export function socketAddress(fd: number): ListenAddress | null {
  return withBlock(128, (block) => {
    const length = [128];
    if ((c.getsockname(fd, block.ptr, length) as number) !== 0) return null;
    const family = block.view.getUint16(0, true);
    if (family === AF_INET) return { kind: 'tcp', host: [...block.bytes.subarray(4, 8)].join('.'), port: block.view.getUint16(2, false) };
    if (family === AF_INET6)
      return { kind: 'tcp', host: compressIPv6(formatIPv6(block.bytes.subarray(8, 24))), port: block.view.getUint16(2, false) };
    if (family === AF_UNIX) {
      const name = Buffer.from(block.bytes.subarray(2, Math.max(2, length[0]!)));
      if (name.length > 0 && name[0] === 0) return { kind: 'unix', path: `@${name.subarray(1).toString()}` };
      const end = name.indexOf(0);
      return { kind: 'unix', path: name.subarray(0, end === -1 ? name.length : end).toString() };
    }
    return null;
  });
}

/** An IPv6 address as eight hex groups, with the longest run of zero groups written "::". */
function compressIPv6(full: string): string {
  if (full.startsWith('::ffff:')) return full;
  const groups = full.split(':');
  let best = { start: -1, length: 0 };
  for (let start = 0; start < groups.length; ) {
    if (groups[start] !== '0') {
      start++;
      continue;
    }
    let end = start;
    while (end < groups.length && groups[end] === '0') end++;
    if (end - start > best.length && end - start > 1) best = { start, length: end - start };
    start = end;
  }
  if (best.start === -1) return full;
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.length).join(':')}`;
}

// ---------------------------------------------------------------------------
// Unix datagrams (systemd's NOTIFY_SOCKET)

/** A sockaddr_un for a datagram peer: a path, or "@name" for the abstract namespace (no trailing NUL counted). */
function datagramAddress(address: string): { block: Block; length: number } {
  const abstract = address.startsWith('@');
  const name = Buffer.from(abstract ? address.slice(1) : address);
  if (name.length + 1 > UNIX_PATH_MAX) throw invalidAddress(`unix datagram address ${address} is longer than ${UNIX_PATH_MAX - 1} bytes`);
  const block = new Block(2 + UNIX_PATH_MAX);
  block.view.setUint16(0, AF_UNIX, true);
  block.bytes.set(name, abstract ? 3 : 2);
  return { block, length: abstract ? 3 + name.length : 2 + name.length + 1 };
}

/** Sends one datagram to the unix datagram socket at `address` ("/path" or "@abstract") from a fresh socket, without blocking. */
export function sendDatagram(address: string, payload: Uint8Array): void {
  const { block, length } = datagramAddress(address);
  try {
    const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
    if (fd < 0) fail('socket', address);
    try {
      for (;;) {
        if (Number(c.sendto(fd, payload, payload.length, MSG_NOSIGNAL, block.ptr, length)) >= 0) return;
        const errno = koffi.errno();
        if (errno !== os.constants.errno.EINTR) fail('sendto', address, errno);
      }
    } finally {
      closeQuietly(fd);
    }
  } finally {
    block.free();
  }
}

/**
 * A bound, non-blocking unix datagram socket at `address` ("/path" or
 * "@abstract"): what a service manager listens on for notifications (the
 * tests stand in for systemd with it).
 */
export function openDatagramReceiver(address: string): number {
  const { block, length } = datagramAddress(address);
  try {
    const fd = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
    if (fd < 0) fail('socket', address);
    if ((c.bind(fd, block.ptr, length) as number) !== 0) {
      const errno = koffi.errno();
      closeQuietly(fd);
      fail('bind', address, errno);
    }
    return fd;
  } finally {
    block.free();
  }
}

/** One datagram from a non-blocking datagram socket, or null when none is waiting. */
export function receiveDatagram(fd: number, maxBytes = 4096): Buffer | null {
  const buffer = Buffer.alloc(maxBytes);
  for (;;) {
    const received = Number(c.recv(fd, buffer, maxBytes, MSG_DONTWAIT));
    if (received >= 0) return buffer.subarray(0, received);
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN) return null;
    fail('recv', `fd ${fd}`, errno);
  }
}

function setIntOption(fd: number, level: number, name: number, value: number, where: string): void {
  withBlock(4, (block) => {
    block.view.setInt32(0, value, true);
    if (c.setsockopt(fd, level, name, block.ptr, 4) !== 0) fail('setsockopt', where);
  });
}

/** Whether `fd` is a listening socket (SO_ACCEPTCONN). */
export function isListeningSocket(fd: number): boolean {
  return withBlock(4, (block) => {
    const length = [4];
    if (c.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, block.ptr, length) !== 0) return false;
    return block.view.getInt32(0, true) !== 0;
  });
}

/**
 * The accept queue of a listening TCP socket, from TCP_INFO: `queued`
 * connections waiting for accept() and the `limit` the kernel applies (the
 * effective backlog). Linux does not report these for unix sockets: null.
 */
export function tcpListenQueue(fd: number): { queued: number; limit: number } | null {
  return withBlock(104, (block) => {
    const length = [104];
    if (c.getsockopt(fd, IPPROTO_TCP, TCP_INFO, block.ptr, length) !== 0) return null;
    // struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked.
    // For a listening socket the kernel reports the accept queue in unacked and the backlog in sacked.
    return { queued: block.view.getUint32(24, true), limit: block.view.getUint32(28, true) };
  });
}

/**
 * A connected pair of unix stream sockets, close-on-exec. Non-blocking by
 * default (both ends stay with us or another event loop); `blocking` when
 * one end becomes a script's stdin or stdout (scripts expect blocking
 * descriptors; libuv makes its own end non-blocking when it wraps it).
 */
export function socketPair({ blocking = false }: { blocking?: boolean } = {}): [number, number] {
  const pair = [0, 0];
  if ((c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (blocking ? 0 : SOCK_NONBLOCK), 0, pair) as number) !== 0) fail('socketpair', '');
  return [pair[0]!, pair[1]!];
}

/** Sets or clears O_NONBLOCK on the open file description behind `fd` (shared by every copy of it). */
export function setNonBlocking(fd: number, nonBlocking: boolean): void {
  const flags = c.fcntl(fd, F_GETFL, 'int', 0) as number;
  if (flags < 0) fail('fcntl', `F_GETFL fd ${fd}`);
  const wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (wanted !== flags && (c.fcntl(fd, F_SETFL, 'int', wanted) as number) < 0) fail('fcntl', `F_SETFL fd ${fd}`);
}

/** Connects a non-blocking, close-on-exec unix stream socket to `path` (unix connects complete at once or fail). */
export function connectUnix(path: string): number {
  const { block, length } = encodeSockaddr({ kind: 'unix', path });
  try {
    const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
    if (fd < 0) fail('socket', path);
    if ((c.connect(fd, block.ptr, length) as number) !== 0) {
      const errno = koffi.errno();
      closeQuietly(fd);
      fail('connect', path, errno);
    }
    return fd;
  } finally {
    block.free();
  }
}

/** The uid, gid and pid of the process at the other end of a unix socket (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  return withBlock(12, (block) => {
    if ((c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, block.ptr, [12]) as number) !== 0) fail('getsockopt', `SO_PEERCRED fd ${fd}`);
    return { pid: block.view.getInt32(0, true), uid: block.view.getUint32(4, true), gid: block.view.getUint32(8, true) };
  });
}

/** send(2) without blocking: bytes sent (possibly fewer), 0 when the buffer is full; throws EPIPE etc. */
export function sendBytes(fd: number, data: Uint8Array): number {
  for (;;) {
    const sent = Number(c.send(fd, data, data.length, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (sent >= 0) return sent;
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN) return 0;
    fail('send', `fd ${fd}`, errno);
  }
}

// ---------------------------------------------------------------------------
// Passing descriptors (SCM_RIGHTS)

// msghdr: name(ptr) namelen(u32, padded to ptr) iov(ptr) iovlen(size_t) control(ptr) controllen(size_t) flags(int)
const MSG_IOV = POINTER_SIZE * 2;
const MSG_IOVLEN = MSG_IOV + POINTER_SIZE;
const MSG_CONTROL = MSG_IOVLEN + SIZE_T_SIZE;
const MSG_CONTROLLEN = MSG_CONTROL + POINTER_SIZE;
const MSG_FLAGS = MSG_CONTROLLEN + SIZE_T_SIZE;
const MSGHDR_SIZE = MSG_FLAGS + 8;
const IOVEC_SIZE = POINTER_SIZE + SIZE_T_SIZE;
// cmsghdr: len(size_t) level(int) type(int), data aligned to size_t.
const CMSG_HEADER = SIZE_T_SIZE + 8;
const alignToSize = (n: number) => Math.ceil(n / SIZE_T_SIZE) * SIZE_T_SIZE;

/**
 * A msghdr, one iovec, a data area and a control area in one block. Blocks
 * are kept and reused (the calls are synchronous and JavaScript has one
 * thread here): allocating native memory per message showed up as garbage
 * collector time at a few thousand messages per second.
 */
class MessageBlock extends Block {
  readonly dataOffset: number;
  readonly controlOffset: number;
  readonly controlSpace: number;
  constructor(
    readonly dataCapacity: number,
    fdCapacity: number,
  ) {
    const dataOffset = MSGHDR_SIZE + IOVEC_SIZE;
    const controlOffset = dataOffset + Math.ceil(dataCapacity / 8) * 8;
    const controlSpace = fdCapacity > 0 ? CMSG_HEADER + alignToSize(4 * fdCapacity) : 0;
    super(controlOffset + Math.max(controlSpace, 8));
    this.dataOffset = dataOffset;
    this.controlOffset = controlOffset;
    this.controlSpace = controlSpace;
    const base = this.address;
    this.writePointer(MSG_IOV, base + BigInt(MSGHDR_SIZE));
    this.writeSize(MSG_IOVLEN, 1);
    this.writePointer(MSGHDR_SIZE, base + BigInt(dataOffset));
    this.writePointer(MSG_CONTROL, base + BigInt(controlOffset));
  }
  /** Sets the data length and the control length for the next call (recvmsg rewrites both, and the flags). */
  prepare(dataLength: number, controlLength: number): void {
    this.writeSize(MSGHDR_SIZE + POINTER_SIZE, dataLength);
    this.writeSize(MSG_CONTROLLEN, controlLength);
    this.view.setInt32(MSG_FLAGS, 0, true);
  }
}

let sendBlock: MessageBlock | null = null;
const receiveBlocks = new Map<string, MessageBlock>();

/**
 * sendmsg(2) of `payload` with `fds` attached (SCM_RIGHTS) on the unix stream
 * socket `fd`, without blocking. The receiver gets its own copies; the sender
 * may close its descriptors as soon as this returns. All or nothing: false
 * when the socket buffer cannot take it now (EAGAIN); a partial send (which a
 * unix stream socket does not do below its buffer size) is an error, as is
 * EPIPE when the peer is gone.
 */
export function sendDescriptors(fd: number, payload: Uint8Array, fds: readonly number[]): boolean {
  const controlLength = fds.length > 0 ? CMSG_HEADER + alignToSize(4 * fds.length) : 0;
  if (!sendBlock || sendBlock.dataCapacity < payload.length || sendBlock.controlSpace < controlLength) {
    sendBlock?.free();
    let capacity = 4096;
    while (capacity < payload.length) capacity *= 2;
    sendBlock = new MessageBlock(capacity, Math.max(fds.length, 8));
  }
  const block = sendBlock;
  block.bytes.set(payload, block.dataOffset);
  if (fds.length > 0) {
    block.writeSize(block.controlOffset, CMSG_HEADER + 4 * fds.length);
    block.view.setInt32(block.controlOffset + SIZE_T_SIZE, SOL_SOCKET, true);
    block.view.setInt32(block.controlOffset + SIZE_T_SIZE + 4, SCM_RIGHTS, true);
    for (const [index, passed] of fds.entries()) block.view.setInt32(block.controlOffset + CMSG_HEADER + 4 * index, passed, true);
  }
  block.prepare(payload.length, controlLength);
  for (;;) {
    const sent = Number(c.sendmsg(fd, block.ptr, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (sent === payload.length) return true;
    if (sent >= 0)
      throw new GatehouseError(
        ErrorCode.SYSCALL_FAILED,
        `sendmsg fd ${fd}: sent ${sent} of ${payload.length} bytes with descriptors attached`,
      );
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN) return false;
    fail('sendmsg', `passing ${fds.length} descriptor(s) over fd ${fd}`, errno);
  }
}

export type ReceivedMessage = { kind: 'message'; payload: Buffer; fds: number[] } | { kind: 'again' } | { kind: 'eof' };

/**
 * recvmsg(2) of up to `maxBytes` and up to `maxFds` attached descriptors
 * (close-on-exec) from the unix stream socket `fd`, without blocking. A
 * message with more descriptors than `maxFds` is an error, after closing
 * every one of them (the kernel closes those that did not fit the control
 * area, MSG_CTRUNC; the area is rounded up to the word size, so a few more
 * may fit, and those are closed here). A reset connection counts as end of
 * file.
 */
export function receiveDescriptors(fd: number, maxBytes: number, maxFds: number): ReceivedMessage {
  const key = `${maxBytes}:${maxFds}`;
  let block = receiveBlocks.get(key);
  if (!block) {
    block = new MessageBlock(maxBytes, maxFds);
    receiveBlocks.set(key, block);
  }
  for (;;) {
    block.prepare(maxBytes, block.controlSpace);
    const received = Number(c.recvmsg(fd, block.ptr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (received < 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.EINTR) continue;
      if (errno === os.constants.errno.EAGAIN) return { kind: 'again' };
      if (errno === os.constants.errno.ECONNRESET) return { kind: 'eof' };
      fail('recvmsg', `fd ${fd}`, errno);
    }
    const fds: number[] = [];
    const controlLength = block.controlSpace > 0 ? block.readSize(MSG_CONTROLLEN) : 0;
    if (controlLength >= CMSG_HEADER) {
      const length = block.readSize(block.controlOffset);
      const level = block.view.getInt32(block.controlOffset + SIZE_T_SIZE, true);
      const type = block.view.getInt32(block.controlOffset + SIZE_T_SIZE + 4, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        const count = Math.floor((length - CMSG_HEADER) / 4);
        for (let index = 0; index < count; index++) fds.push(block.view.getInt32(block.controlOffset + CMSG_HEADER + 4 * index, true));
      }
    }
    if ((block.view.getInt32(MSG_FLAGS, true) & MSG_CTRUNC) !== 0 || fds.length > maxFds) {
      for (const passed of fds) closeQuietly(passed);
      throw new GatehouseError(
        ErrorCode.SYSCALL_FAILED,
        `recvmsg fd ${fd}: more than ${maxFds} descriptor(s) were attached; the message was refused`,
      );
    }
    if (received === 0) {
      // A stream socket attaches descriptors only to data, so 0 bytes is end of file; never leak any that came anyway.
      for (const passed of fds) closeQuietly(passed);
      return { kind: 'eof' };
    }
    return { kind: 'message', payload: Buffer.from(block.bytes.subarray(block.dataOffset, block.dataOffset + received)), fds };
  }
}

// ---------------------------------------------------------------------------
// Accepting outside libuv

let acceptBlock: Block | null = null;

/** An accepted connection: its descriptor (close-on-exec) and the peer's IP address (TCP) or null (unix). */
export interface AcceptedConnection {
  fd: number;
  peer: string | null;
}

/**
 * accept4(2) on a non-blocking listening socket: one connection, or null when
 * none is waiting (EAGAIN). The new descriptor is blocking, as accept(2)
 * gives it, so that it suits any program it is handed to; `nonBlocking` for
 * one this process serves itself.
 */
export function acceptConnection(listenFd: number, { nonBlocking = false }: { nonBlocking?: boolean } = {}): AcceptedConnection | null {
  acceptBlock ??= new Block(128);
  const flags = SOCK_CLOEXEC | (nonBlocking ? SOCK_NONBLOCK : 0);
  for (;;) {
    const length = [128];
    const fd = c.accept4(listenFd, acceptBlock.ptr, length, flags) as number;
    if (fd >= 0) return { fd, peer: decodePeer(acceptBlock) };
    const errno = koffi.errno();
    const { EINTR, EAGAIN, ECONNABORTED, EPROTO } = os.constants.errno;
    if (errno === EINTR || errno === ECONNABORTED || errno === EPROTO) continue;
    if (errno === EAGAIN) return null;
    fail('accept4', `fd ${listenFd}`, errno);
  }
}

function decodePeer(block: Block): string | null {
  const family = block.view.getUint16(0, true);
  if (family === AF_INET) return [...block.bytes.subarray(4, 8)].join('.');
  if (family === AF_INET6) return formatIPv6(block.bytes.subarray(8, 24));
  return null;
}

/**
 * An IP address in the form acceptConnection() reports peers: IPv4 dotted
 * quads as written, IPv6 as eight lower-case hex groups without compression
 * (::ffff:a.b.c.d for IPv4-mapped addresses). Use it on allow-lists.
 */
export function normalizeAddress(address: string): string {
  if (!address.includes(':')) return address;
  const ip = ipAddressBytes(address);
  if (ip === null) throw invalidAddress(`"${address}" is not an IPv6 address`);
  return formatIPv6(ip.bytes);
}

// ---------------------------------------------------------------------------
// Watching descriptors libuv does not own

export interface DescriptorEvent {
  readable: boolean;
  writable: boolean;
  disconnect: boolean;
}

/** Readiness notifications for a descriptor libuv does not own (a uv_poll handle). */
export interface DescriptorWatcher {
  /** Watches for writability too (only while output is queued: a writable socket would call back on every turn). */
  want(writable: boolean): void;
  /** Stops calling back until resume(). */
  pause(): void;
  resume(): void;
  /** Stops watching for good; the descriptor itself stays open. */
  close(): void;
  /** Lets the process exit while this watcher is active. */
  unref(): void;
}

/**
 * Calls `onEvent` whenever `fd` (non-blocking) is readable, its peer hung up,
 * or, after want(true), it is writable. A poll error is reported as a
 * disconnect, so the reader finds out what happened with its next call.
 */
export function watchDescriptor(fd: number, onEvent: (event: DescriptorEvent) => void): DescriptorWatcher {
  let options = { readable: true, disconnect: true, writable: false };
  // koffi calls back with (status, events); a negative status is a poll error.
  const callback = ((status: number, events: DescriptorEvent) =>
    onEvent(status < 0 ? { readable: true, writable: false, disconnect: true } : events)) as unknown as (events: DescriptorEvent) => void;
  const handle = koffi.node.poll(fd, options, callback);
  let paused = false;
  let closed = false;
  return {
    want: (writable) => {
      if (writable === options.writable || closed) return;
      options = { ...options, writable };
      if (!paused) handle.start(options, callback);
    },
    pause: () => {
      if (paused || closed) return;
      paused = true;
      handle.stop();
    },
    resume: () => {
      if (!paused || closed) return;
      paused = false;
      handle.start(options, callback);
    },
    close: () => {
      if (closed) return;
      closed = true;
      handle.close();
    },
    unref: () => {
      // koffi has released the handle once it is closed: unref() on it then would crash the process.
      if (!closed) handle.unref();
    },
  };
}

/** watchDescriptor for readers: `onReadable` when `fd` is readable or its peer hung up. */
export function watchReadable(fd: number, onReadable: () => void): DescriptorWatcher {
  return watchDescriptor(fd, () => onReadable());
}

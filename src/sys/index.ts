/**
 * The few system calls Node lacks, behind one small typed module. This is the
 * ONLY place in gatehouse that imports koffi (the binding): everything else
 * calls these functions and never sees a pointer.
 *
 * Linux only (glibc). Each call is checked; a failure throws SysError naming
 * the operation, the object and errno (`chroot /var/www: EPERM (...)`).
 * Every descriptor created here is close-on-exec, so none leaks into a
 * spawned child unless it is passed on purpose through spawn's stdio (which
 * dup2()s it into place and so clears the flag on the child's copy).
 *
 * Memory for struct arguments is laid out by hand in koffi-allocated blocks
 * (stable addresses), using the sizes koffi reports for `size_t` and
 * pointers; the layouts are those of the Linux UAPI and glibc on 64-bit and
 * 32-bit targets alike (msghdr, cmsghdr, sockaddr_un/in/in6, statx,
 * rlimit, tcp_info's first fields).
 */
import koffi from 'koffi';
import { AF_UNIX, AF_INET, AF_INET6, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET, SO_REUSEADDR, SO_ACCEPTCONN, SCM_RIGHTS, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_CMSG_CLOEXEC, IPPROTO_TCP, TCP_INFO, F_GETFL, F_SETFL, O_NONBLOCK, AT_SYMLINK_NOFOLLOW, STATX_INO, UNIX_PATH_MAX } from './linux.js';
import os from 'node:os';
import { ErrorCode, GatehouseError } from '../errors.js';

/** A failed system call: `syscall`, `errno` (number) and `errnoName` (`EPERM`). */
export class SysError extends GatehouseError {
  readonly syscall: string;
  readonly errno: number;
  readonly errnoName: string;
  constructor(syscall: string, object: string, errno: number) {
    const errnoName = errnoToName(errno);
    super(ErrorCode.SYSCALL_FAILED, `${syscall}${object ? ` ${object}` : ''}: ${errnoName} (${describeErrno(errno)})`);
    this.name = 'SysError';
    this.syscall = syscall;
    this.errno = errno;
    this.errnoName = errnoName;
  }
}

function errnoToName(errno: number): string {
  for (const [name, value] of Object.entries(os.constants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

const libc = koffi.load('libc.so.6');
const strerror = libc.func('const char *strerror(int errnum)');
function describeErrno(errno: number): string {
  return String(strerror(errno));
}

const POINTER_SIZE = koffi.sizeof('void *');
const SIZE_T_SIZE = koffi.sizeof('size_t');

const c = {
  chroot: libc.func('int chroot(const char *path)'),
  umask: libc.func('uint32_t umask(uint32_t mask)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  close: libc.func('int close(int fd)'),
  unlinkat: libc.func('int unlinkat(int dirfd, const char *path, int flags)'),
  statx: libc.func('int statx(int dirfd, const char *path, int flags, uint32_t mask, void *buf)'),
  fstat: libc.func('int fstat(int fd, void *buf)'),
  getrlimit: libc.func('int getrlimit(int resource, void *rlim)'),
  setrlimit: libc.func('int setrlimit(int resource, const void *rlim)'),
  getpwnam: libc.func('void *getpwnam(const char *name)'),
  getgrouplist: libc.func('int getgrouplist(const char *user, uint32_t group, _Out_ uint32_t *groups, _Inout_ int *ngroups)'),
  openlog: libc.func('void openlog(void *ident, int option, int facility)'),
  syslog: libc.func('void syslog(int priority, const char *format, ...)'),
  closelog: libc.func('void closelog(void)'),
};

function fail(syscall: string, object: string): never {
  throw new SysError(syscall, object, koffi.errno());
}

/** Raw memory with a stable address, freed by the caller. */
class Block {
  readonly ptr: unknown;
  readonly view: DataView;
  readonly bytes: Uint8Array;
  constructor(readonly size: number) {
    this.ptr = koffi.alloc('uint8_t', size);
    const buffer = koffi.view(this.ptr, size);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
    this.bytes.fill(0);
  }
  get address(): bigint {
    return koffi.address(this.ptr);
  }
  writePointer(offset: number, address: bigint): void {
    if (POINTER_SIZE === 8) this.view.setBigUint64(offset, address, true);
    else this.view.setUint32(offset, Number(address), true);
  }
  writeSize(offset: number, value: number): void {
    if (SIZE_T_SIZE === 8) this.view.setBigUint64(offset, BigInt(value), true);
    else this.view.setUint32(offset, value, true);
  }
  readSize(offset: number): number {
    return SIZE_T_SIZE === 8 ? Number(this.view.getBigUint64(offset, true)) : this.view.getUint32(offset, true);
  }
  free(): void {
    koffi.free(this.ptr);
  }
}

function withBlock<T>(size: number, use: (block: Block) => T): T {
  const block = new Block(size);
  try {
    return use(block);
  } finally {
    block.free();
  }
}

// ---------------------------------------------------------------------------
// File system jail and permissions

/** chroot(2). The caller must chdir('/') right after (process.chdir). Needs root (CAP_SYS_CHROOT). */
export function chroot(path: string): void {
  if (c.chroot(path) !== 0) fail('chroot', path);
}

/** umask(2): sets the mask and returns the previous one (unlike process.umask, also usable where that is deprecated). */
export function setUmask(mask: number): number {
  return Number(c.umask(mask));
}

// ---------------------------------------------------------------------------
// Sockets

/** A listening address: a unix socket path, or a TCP host and port. */
export type ListenAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export function describeListenAddress(address: ListenAddress): string {
  return address.kind === 'unix' ? address.path : `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Encodes a sockaddr for `address` into a block (the caller frees it) and returns its length. */
function encodeSockaddr(address: ListenAddress): { block: Block; length: number; family: number } {
  if (address.kind === 'unix') {
    const path = Buffer.from(address.path);
    if (path.length >= UNIX_PATH_MAX) {
      throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `socket path ${address.path} is ${path.length} bytes; unix socket paths must be shorter than ${UNIX_PATH_MAX} bytes: choose a shorter path`);
    }
    const block = new Block(2 + UNIX_PATH_MAX);
    block.view.setUint16(0, AF_UNIX, true);
    block.bytes.set(path, 2);
    return { block, length: 2 + path.length + 1, family: AF_UNIX };
  }
  const family = address.host.includes(':') ? AF_INET6 : AF_INET;
  if (family === AF_INET) {
    const parts = address.host.split('.').map((part) => Number(part));
    if (parts.length !== 4 || parts.some((part) => !Number.isInteger(part) || part < 0 || part > 255)) {
      throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `"${address.host}" is not an IPv4 address: write a numeric address such as 127.0.0.1 or [::1]`);
    }
    const block = new Block(16);
    block.view.setUint16(0, AF_INET, true);
    block.view.setUint16(2, address.port, false);
    parts.forEach((part, index) => block.view.setUint8(4 + index, part));
    return { block, length: 16, family };
  }
  const groups = expandIPv6(address.host);
  const block = new Block(28);
  block.view.setUint16(0, AF_INET6, true);
  block.view.setUint16(2, address.port, false);
  groups.forEach((group, index) => block.view.setUint16(8 + index * 2, group, false));
  return { block, length: 28, family };
}

function expandIPv6(host: string): number[] {
  const [head = '', tail] = host.split('::');
  const parse = (text: string) => (text === '' ? [] : text.split(':').map((group) => Number.parseInt(group, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const groups = tail === undefined ? left : [...left, ...new Array(8 - left.length - right.length).fill(0), ...right];
  if (groups.length !== 8 || groups.some((group) => !Number.isInteger(group) || group < 0 || group > 0xffff)) {
    throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `"${host}" is not an IPv6 address`);
  }
  return groups;
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
      if (c.listen(fd, options.backlog) !== 0) fail('listen', where);
      return fd;
    } catch (error) {
      c.close(fd);
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
      c.close(fd);
    }
  } finally {
    block.free();
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

/** A connected pair of unix stream sockets, both close-on-exec and non-blocking. */
export function socketPair(): [number, number] {
  const pair = [0, 0];
  if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, pair) !== 0) fail('socketpair', '');
  return [pair[0]!, pair[1]!];
}

/** Sets or clears O_NONBLOCK on the open file description behind `fd` (shared by every copy of it). */
export function setNonBlocking(fd: number, nonBlocking: boolean): void {
  const flags = c.fcntl(fd, F_GETFL, 'int', 0) as number;
  if (flags < 0) fail('fcntl', `F_GETFL fd ${fd}`);
  const wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (wanted !== flags && (c.fcntl(fd, F_SETFL, 'int', wanted) as number) < 0) fail('fcntl', `F_SETFL fd ${fd}`);
}

/** close(2) on a descriptor made here (for descriptors Node owns use their own close). */
export function closeDescriptor(fd: number): void {
  if (c.close(fd) !== 0) fail('close', `fd ${fd}`);
}

// msghdr: name(ptr) namelen(u32, padded to ptr) iov(ptr) iovlen(size_t) control(ptr) controllen(size_t) flags(int)
const MSGHDR_SIZE = POINTER_SIZE * 2 + POINTER_SIZE + SIZE_T_SIZE + POINTER_SIZE + SIZE_T_SIZE + 8;
const MSG_IOV = POINTER_SIZE * 2;
const MSG_IOVLEN = MSG_IOV + POINTER_SIZE;
const MSG_CONTROL = MSG_IOVLEN + SIZE_T_SIZE;
const MSG_CONTROLLEN = MSG_CONTROL + POINTER_SIZE;
const MSG_FLAGS = MSG_CONTROLLEN + SIZE_T_SIZE;
const IOVEC_SIZE = POINTER_SIZE + SIZE_T_SIZE;
// cmsghdr: len(size_t) level(int) type(int), data aligned to size_t.
const CMSG_HEADER = SIZE_T_SIZE + 8;
const CMSG_LEN_ONE_FD = CMSG_HEADER + 4;
const CMSG_SPACE_ONE_FD = CMSG_HEADER + Math.ceil(4 / SIZE_T_SIZE) * SIZE_T_SIZE;
const MSG_CTRUNC = 0x8;

interface MessageLayout {
  block: Block;
  iovOffset: number;
  dataOffset: number;
  controlOffset: number;
}

/**
 * One reusable block per payload size (JavaScript is single-threaded and the
 * calls are synchronous), so that passing a connection costs no allocation.
 */
const messageBlocks = new Map<number, MessageLayout>();
const MAX_CACHED_PAYLOAD = 64;

function borrowMessageBlock(dataSize: number): { layout: MessageLayout; release(): void } {
  if (dataSize > MAX_CACHED_PAYLOAD) {
    const layout = messageBlock(dataSize);
    return { layout, release: () => layout.block.free() };
  }
  let layout = messageBlocks.get(dataSize);
  if (!layout) {
    layout = messageBlock(dataSize);
    messageBlocks.set(dataSize, layout);
  }
  // recvmsg rewrites msg_controllen and msg_flags; restore what the next call expects.
  layout.block.writeSize(MSG_CONTROLLEN, CMSG_SPACE_ONE_FD);
  layout.block.view.setInt32(MSG_FLAGS, 0, true);
  return { layout, release: () => undefined };
}

/** Lays out msghdr, one iovec over `dataSize` bytes and a control area for one descriptor in one block. */
function messageBlock(dataSize: number): MessageLayout {
  const iovOffset = MSGHDR_SIZE;
  const dataOffset = iovOffset + IOVEC_SIZE;
  const controlOffset = dataOffset + Math.ceil(dataSize / 8) * 8;
  const block = new Block(controlOffset + CMSG_SPACE_ONE_FD);
  const base = block.address;
  block.writePointer(MSG_IOV, base + BigInt(iovOffset));
  block.writeSize(MSG_IOVLEN, 1);
  block.writePointer(MSG_CONTROL, base + BigInt(controlOffset));
  block.writeSize(MSG_CONTROLLEN, CMSG_SPACE_ONE_FD);
  block.writePointer(iovOffset, base + BigInt(dataOffset));
  block.writeSize(iovOffset + POINTER_SIZE, dataSize);
  return { block, iovOffset, dataOffset, controlOffset };
}

/**
 * Sends `payload` with descriptor `passFd` attached (SCM_RIGHTS) on the unix
 * stream socket `fd`, without blocking. The receiver gets its own copy of the
 * descriptor; the sender may close `passFd` as soon as this returns. Returns
 * false when the socket buffer is full (EAGAIN); throws on other errors
 * (EPIPE when the peer is gone).
 */
export function sendDescriptor(fd: number, passFd: number, payload: Uint8Array): boolean {
  const borrowed = borrowMessageBlock(payload.length);
  const { block, dataOffset, controlOffset } = borrowed.layout;
  try {
    block.bytes.set(payload, dataOffset);
    block.writeSize(controlOffset, CMSG_LEN_ONE_FD);
    block.view.setInt32(controlOffset + SIZE_T_SIZE, SOL_SOCKET, true);
    block.view.setInt32(controlOffset + SIZE_T_SIZE + 4, SCM_RIGHTS, true);
    block.view.setInt32(controlOffset + CMSG_HEADER, passFd, true);
    for (;;) {
      const sent = Number(c.sendmsg(fd, block.ptr, MSG_DONTWAIT | MSG_NOSIGNAL));
      if (sent === payload.length) return true;
      if (sent >= 0) throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `sendmsg fd ${fd}: sent ${sent} of ${payload.length} bytes`);
      const errno = koffi.errno();
      if (errno === os.constants.errno.EINTR) continue;
      if (errno === os.constants.errno.EAGAIN) return false;
      throw new SysError('sendmsg', `passing fd ${passFd} over fd ${fd}`, errno);
    }
  } finally {
    borrowed.release();
  }
}

export type ReceivedDescriptor =
  | { kind: 'message'; payload: Buffer; fd: number | null }
  | { kind: 'again' }
  | { kind: 'eof' };

/**
 * Receives up to `maxPayload` bytes and at most one attached descriptor from
 * the unix stream socket `fd`, without blocking. The received descriptor is
 * close-on-exec. Extra descriptors beyond one are closed by the kernel
 * (MSG_CTRUNC), and reported as an error.
 */
export function receiveDescriptor(fd: number, maxPayload: number): ReceivedDescriptor {
  const borrowed = borrowMessageBlock(maxPayload);
  const { block, dataOffset, controlOffset } = borrowed.layout;
  try {
    for (;;) {
      const received = Number(c.recvmsg(fd, block.ptr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
      if (received < 0) {
        const errno = koffi.errno();
        if (errno === os.constants.errno.EINTR) continue;
        if (errno === os.constants.errno.EAGAIN) return { kind: 'again' };
        throw new SysError('recvmsg', `fd ${fd}`, errno);
      }
      if (received === 0) return { kind: 'eof' };
      const payload = Buffer.from(block.bytes.subarray(dataOffset, dataOffset + received));
      let passed: number | null = null;
      const controlLength = block.readSize(MSG_CONTROLLEN);
      if (controlLength >= CMSG_LEN_ONE_FD) {
        const level = block.view.getInt32(controlOffset + SIZE_T_SIZE, true);
        const type = block.view.getInt32(controlOffset + SIZE_T_SIZE + 4, true);
        if (level === SOL_SOCKET && type === SCM_RIGHTS) passed = block.view.getInt32(controlOffset + CMSG_HEADER, true);
      }
      if ((block.view.getInt32(MSG_FLAGS, true) & MSG_CTRUNC) !== 0) {
        if (passed !== null) c.close(passed);
        throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `recvmsg fd ${fd}: more than one descriptor was attached; the extra ones were dropped`);
      }
      return { kind: 'message', payload, fd: passed };
    }
  } finally {
    borrowed.release();
  }
}

const acceptCall = libc.func('int accept4(int fd, void *addr, _Inout_ uint32_t *len, int flags)');
let acceptBlock: Block | null = null;

/** An accepted connection: its descriptor (blocking, close-on-exec) and the peer's IP address (TCP) or null. */
export interface AcceptedConnection {
  fd: number;
  peer: string | null;
}

/**
 * accept4(2) on a non-blocking listening socket: one connection, or null when
 * none is waiting (EAGAIN). The new descriptor is blocking, as accept(2)
 * gives it, so that it suits any program it is handed to.
 */
export function acceptConnection(listenFd: number): AcceptedConnection | null {
  acceptBlock ??= new Block(128);
  for (;;) {
    const length = [128];
    const fd = acceptCall(listenFd, acceptBlock.ptr, length, SOCK_CLOEXEC) as number;
    if (fd >= 0) return { fd, peer: decodePeer(acceptBlock) };
    const errno = koffi.errno();
    const { EINTR, EAGAIN, ECONNABORTED, EPROTO } = os.constants.errno;
    if (errno === EINTR || errno === ECONNABORTED || errno === EPROTO) continue;
    if (errno === EAGAIN) return null;
    throw new SysError('accept4', `fd ${listenFd}`, errno);
  }
}

function decodePeer(block: Block): string | null {
  const family = block.view.getUint16(0, true);
  if (family === AF_INET) return [4, 5, 6, 7].map((offset) => block.view.getUint8(offset)).join('.');
  if (family === AF_INET6) {
    const groups = Array.from({ length: 8 }, (_, index) => block.view.getUint16(8 + index * 2, false).toString(16));
    const mapped = groups.slice(0, 5).every((group) => group === '0') && groups[5] === 'ffff';
    if (mapped) return `::ffff:${[20, 21, 22, 23].map((offset) => block.view.getUint8(offset)).join('.')}`;
    return groups.join(':');
  }
  return null;
}

/**
 * An IP address in the form acceptConnection() reports peers: IPv4 dotted
 * quads as written, IPv6 as eight lower-case hex groups without compression
 * (::ffff:a.b.c.d for IPv4-mapped addresses). Use it on allow-lists.
 */
export function normalizeAddress(address: string): string {
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return `::ffff:${mapped[1]}`;
  return expandIPv6(address).map((group) => group.toString(16)).join(':');
}

/** Readiness notifications for a descriptor libuv does not own (a uv_poll handle). */
export interface DescriptorWatcher {
  /** Stops calling back until resume(). */
  pause(): void;
  resume(): void;
  /** Stops watching for good; the descriptor itself stays open. */
  close(): void;
  /** Lets the process exit while this watcher is active. */
  unref(): void;
}

/** Calls `onReadable` whenever `fd` is readable or its peer hung up. `fd` must be non-blocking. */
export function watchReadable(fd: number, onReadable: () => void): DescriptorWatcher {
  const options = { readable: true, disconnect: true };
  const callback = () => onReadable();
  const handle = koffi.node.poll(fd, options, callback);
  let paused = false;
  let closed = false;
  return {
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
    unref: () => handle.unref(),
  };
}

// ---------------------------------------------------------------------------
// Files by directory descriptor (these keep working after chroot)

/** Device and inode of a file, to tell whether a path still names the object we created. */
export interface FileIdentity {
  dev: string;
  ino: bigint;
}

/**
 * statx(2) of `name` relative to the directory open at `dirFd` (not following
 * a final symlink), or null when it does not exist. Works after chroot on a
 * directory opened before it.
 */
export function identityAt(dirFd: number, name: string): FileIdentity | null {
  return withBlock(256, (block) => {
    if (c.statx(dirFd, name, AT_SYMLINK_NOFOLLOW, STATX_INO, block.ptr) !== 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.ENOENT) return null;
      throw new SysError('statx', name, errno);
    }
    // struct statx: stx_ino at 32; stx_dev_major, stx_dev_minor at 136, 140.
    return {
      ino: block.view.getBigUint64(32, true),
      dev: `${block.view.getUint32(136, true)}:${block.view.getUint32(140, true)}`,
    };
  });
}

/** unlinkat(2): removes `name` in the directory open at `dirFd`. */
export function unlinkAt(dirFd: number, name: string): void {
  if (c.unlinkat(dirFd, name, 0) !== 0) fail('unlinkat', name);
}

// ---------------------------------------------------------------------------
// Users and groups (resolve them BEFORE chroot: the jail rarely has /etc/passwd)

export interface UserEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

// struct passwd: name, passwd (char *), uid, gid (u32), gecos, dir, shell (char *).
const PASSWD_UID = POINTER_SIZE * 2;
const PASSWD_GECOS = PASSWD_UID + 8;

/** getpwnam(3) through NSS, or null when there is no such user. */
export function lookupUser(name: string): UserEntry | null {
  koffi.errno(0);
  const entry = c.getpwnam(name);
  if (entry === null) return null;
  const view = new DataView(koffi.view(entry, PASSWD_GECOS + POINTER_SIZE * 3));
  const readString = (offset: number) => {
    const pointer = POINTER_SIZE === 8 ? view.getBigUint64(offset, true) : BigInt(view.getUint32(offset, true));
    return pointer === 0n ? '' : String(koffi.decode(entry, offset, 'char *'));
  };
  return {
    name: readString(0),
    uid: view.getUint32(PASSWD_UID, true),
    gid: view.getUint32(PASSWD_UID + 4, true),
    home: readString(PASSWD_GECOS + POINTER_SIZE),
    shell: readString(PASSWD_GECOS + POINTER_SIZE * 2),
  };
}

/** The user's groups per the group database (getgrouplist(3)), always including `gid`. */
export function groupList(user: string, gid: number): number[] {
  let capacity = 64;
  for (;;) {
    const groups = new Array<number>(capacity).fill(0);
    const count = [capacity];
    if ((c.getgrouplist(user, gid, groups, count) as number) >= 0) return groups.slice(0, count[0]);
    if (count[0]! <= capacity) return [gid];
    capacity = count[0]!;
  }
}

// ---------------------------------------------------------------------------
// Resource limits

export const RLIMIT = { CPU: 0, FSIZE: 1, DATA: 2, STACK: 3, CORE: 4, NOFILE: 7, AS: 9, NPROC: 6 } as const;
export type RlimitResource = keyof typeof RLIMIT;
/** rlim_t's "no limit"; reported as Infinity. */
const RLIM_INFINITY = 0xffffffffffffffffn;

export interface ResourceLimit {
  soft: number;
  hard: number;
}

export function getResourceLimit(resource: RlimitResource): ResourceLimit {
  return withBlock(16, (block) => {
    if (c.getrlimit(RLIMIT[resource], block.ptr) !== 0) fail('getrlimit', resource);
    const read = (offset: number) => {
      const value = block.view.getBigUint64(offset, true);
      return value === RLIM_INFINITY ? Infinity : Number(value);
    };
    return { soft: read(0), hard: read(8) };
  });
}

/** setrlimit(2); Infinity means no limit. Raising a hard limit needs root. */
export function setResourceLimit(resource: RlimitResource, limit: ResourceLimit): void {
  withBlock(16, (block) => {
    const write = (offset: number, value: number) => block.view.setBigUint64(offset, value === Infinity ? RLIM_INFINITY : BigInt(value), true);
    write(0, limit.soft);
    write(8, limit.hard);
    if (c.setrlimit(RLIMIT[resource], block.ptr) !== 0) fail('setrlimit', resource);
  });
}

// ---------------------------------------------------------------------------
// System log

export const SyslogPriority = { ERR: 3, WARNING: 4, NOTICE: 5, INFO: 6, DEBUG: 7 } as const;
export type SyslogPriority = (typeof SyslogPriority)[keyof typeof SyslogPriority];
export const SyslogFacility = { DAEMON: 3 << 3, USER: 1 << 3, LOCAL0: 16 << 3 } as const;
const LOG_PID = 0x01;
const LOG_NDELAY = 0x08;

let syslogIdent: unknown = null;

/**
 * openlog(3) with LOG_PID and LOG_NDELAY: the connection to /dev/log is made
 * now, so logging keeps working after chroot into a jail without /dev/log.
 */
export function openSystemLog(ident: string, facility: number = SyslogFacility.DAEMON): void {
  // openlog keeps the pointer, so the string lives in memory we never free while the log is open.
  const bytes = Buffer.from(`${ident}\0`);
  const previous = syslogIdent;
  syslogIdent = koffi.alloc('uint8_t', bytes.length);
  new Uint8Array(koffi.view(syslogIdent, bytes.length)).set(bytes);
  c.openlog(syslogIdent, LOG_PID | LOG_NDELAY, facility);
  if (previous !== null) koffi.free(previous);
}

/** syslog(3) of one message (never used as a format string). */
export function writeSystemLog(priority: SyslogPriority, message: string): void {
  c.syslog(priority, '%s', 'str', message);
}

export function closeSystemLog(): void {
  c.closelog();
}

/** Whether this process runs with effective uid 0. */
export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

// ---------------------------------------------------------------------------
// Reading /proc (or any tree) through a directory opened before chroot

const O_RDONLY = 0;
const O_DIRECTORY = 0o200000;
const O_CLOEXEC_FLAG = 0o2000000;
const libcDirectory = {
  openat: libc.func('int openat(int dirfd, const char *path, int flags, ...)'),
  fdopendir: libc.func('void *fdopendir(int fd)'),
  readdir: libc.func('void *readdir(void *dir)'),
  closedir: libc.func('int closedir(void *dir)'),
  readlinkat: libc.func('intptr_t readlinkat(int dirfd, const char *path, _Out_ uint8_t *buf, size_t size)'),
};
// struct dirent on Linux (glibc, 64-bit and LFS): d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[256].
const DIRENT_NAME = 19;

/** openat(2) read-only and close-on-exec; the descriptor can be read with node:fs (readFileSync(fd), readSync). */
export function openAt(dirFd: number, path: string, directory = false): number {
  const fd = libcDirectory.openat(dirFd, path, O_RDONLY | O_CLOEXEC_FLAG | (directory ? O_DIRECTORY : 0), 'int', 0) as number;
  if (fd < 0) fail('openat', path);
  return fd;
}

/** The entry names of the directory `path` under `dirFd` (without "." and ".."). */
export function listDirectoryAt(dirFd: number, path: string): string[] {
  const fd = openAt(dirFd, path, true);
  const dir = libcDirectory.fdopendir(fd);
  if (dir === null) {
    const errno = koffi.errno();
    c.close(fd);
    throw new SysError('fdopendir', path, errno);
  }
  const names: string[] = [];
  try {
    for (;;) {
      const entry = libcDirectory.readdir(dir);
      if (entry === null) break;
      const name = String(koffi.decode(entry, DIRENT_NAME, 'char', -1));
      if (name !== '.' && name !== '..') names.push(name);
    }
  } finally {
    libcDirectory.closedir(dir); // also closes fd
  }
  return names;
}

/** readlinkat(2): the target of the symbolic link `path` under `dirFd`, or null when it does not exist. */
export function readLinkAt(dirFd: number, path: string): string | null {
  const buffer = Buffer.alloc(4096);
  const length = Number(libcDirectory.readlinkat(dirFd, path, buffer, buffer.length));
  if (length < 0) {
    const errno = koffi.errno();
    if (errno === os.constants.errno.ENOENT || errno === os.constants.errno.ESRCH) return null;
    throw new SysError('readlinkat', path, errno);
  }
  return buffer.subarray(0, length).toString('utf8');
}

/**
 * Starting and supervising processes without libuv: glibc's posix_spawn
 * (clone3 with CLONE_VM|CLONE_VFORK: no page tables copied, so a start costs
 * the same from a 40 MB daemon as from a 1.5 GB front), reaping through a
 * pidfd (so libuv's own SIGCHLD reaping never sees or steals these children,
 * and ours never steal libuv's), and the descriptor plumbing the cgid
 * daemon needs: pipes, socket pairs, accept4, sendmsg/recvmsg with several
 * SCM_RIGHTS descriptors, and SO_PEERCRED.
 *
 * Linux and glibc only (posix_spawn_file_actions_addchdir_np needs 2.29,
 * POSIX_SPAWN_SETSID 2.26, pidfd_open Linux 5.3). Every descriptor made here
 * is close-on-exec; the only ones a script inherits are the three dup2()ed
 * onto its stdin, stdout and stderr.
 */
import koffi from 'koffi';
import os from 'node:os';
import { ErrorCode, GatehouseError } from '../errors.js';
import { SysError } from './index.js';
import { AF_UNIX, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET, SO_PEERCRED, SCM_RIGHTS, MSG_DONTWAIT, MSG_NOSIGNAL, MSG_CTRUNC, MSG_CMSG_CLOEXEC, UNIX_PATH_MAX } from './linux.js';

const libc = koffi.load('libc.so.6');
const POINTER_SIZE = koffi.sizeof('void *');
const SIZE_T_SIZE = koffi.sizeof('size_t');

const c = {
  posix_spawn: libc.func('int posix_spawn(_Out_ int *pid, const char *path, void *actions, void *attr, const char **argv, const char **envp)'),
  actionsInit: libc.func('int posix_spawn_file_actions_init(void *actions)'),
  actionsDestroy: libc.func('int posix_spawn_file_actions_destroy(void *actions)'),
  actionsDup2: libc.func('int posix_spawn_file_actions_adddup2(void *actions, int fd, int newfd)'),
  actionsChdir: libc.func('int posix_spawn_file_actions_addchdir_np(void *actions, const char *path)'),
  attrInit: libc.func('int posix_spawnattr_init(void *attr)'),
  attrSetFlags: libc.func('int posix_spawnattr_setflags(void *attr, short flags)'),
  attrSetSigmask: libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
  attrSetSigdefault: libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
  sigemptyset: libc.func('int sigemptyset(void *set)'),
  sigfillset: libc.func('int sigfillset(void *set)'),
  syscall3: libc.func('long syscall(long number, ...)'),
  waitpid: libc.func('int waitpid(int pid, _Out_ int *status, int options)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  connect: libc.func('int connect(int fd, const void *addr, uint32_t len)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, size_t len, int flags)'),
  sendmsg: libc.func('intptr_t sendmsg(int fd, void *msg, int flags)'),
  recvmsg: libc.func('intptr_t recvmsg(int fd, void *msg, int flags)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)'),
  close: libc.func('int close(int fd)'),
  prctl: libc.func('int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)'),
  getppid: libc.func('int getppid(void)'),
};

const WNOHANG = 1;
const SYS_PIDFD_OPEN = 434; // the same number on every Linux architecture (added after the syscall tables were unified)
const PR_SET_PDEATHSIG = 1;
// posix_spawn flags (glibc <spawn.h>)
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
// Generous upper bounds of glibc's opaque structs (80 and 336 bytes on x86_64; sigset_t is 128).
const FILE_ACTIONS_BYTES = 256;
const SPAWNATTR_BYTES = 512;
const SIGSET_BYTES = 256;


function errnoError(syscall: string, object: string, errno: number = koffi.errno()): SysError {
  return new SysError(syscall, object, errno);
}

function allocate(size: number): unknown {
  const pointer = koffi.alloc('uint8_t', size);
  new Uint8Array(koffi.view(pointer, size)).fill(0);
  return pointer;
}

/**
 * The spawn attributes are the same for every script, so they are built once:
 * a new session (setsid: the script leads its own process group, and one
 * kill(-pid) reaches everything it starts), an empty signal mask, and every
 * signal back to its default action (Node ignores SIGPIPE; an ignored signal
 * would survive exec and change how shell scripts behave).
 */
let sharedAttributes: unknown = null;
function spawnAttributes(): unknown {
  if (sharedAttributes !== null) return sharedAttributes;
  const attributes = allocate(SPAWNATTR_BYTES);
  const mask = allocate(SIGSET_BYTES);
  const defaults = allocate(SIGSET_BYTES);
  try {
    check('posix_spawnattr_init', c.attrInit(attributes) as number);
    c.sigemptyset(mask);
    c.sigfillset(defaults);
    check('posix_spawnattr_setsigmask', c.attrSetSigmask(attributes, mask) as number);
    check('posix_spawnattr_setsigdefault', c.attrSetSigdefault(attributes, defaults) as number);
    check('posix_spawnattr_setflags', c.attrSetFlags(attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) as number);
  } finally {
    koffi.free(mask);
    koffi.free(defaults);
  }
  sharedAttributes = attributes;
  return attributes;
}

/** posix_spawn's family returns the error number instead of setting errno. */
function check(call: string, result: number, object = ''): void {
  if (result !== 0) throw errnoError(call, object, result);
}

export interface PosixSpawnOptions {
  file: string;
  /** argv[0] included. */
  argv: readonly string[];
  /** Complete environment, NAME=VALUE. */
  env: readonly string[];
  cwd: string;
  /** Descriptors that become the child's 0, 1 and 2 (dup2: the copies lose close-on-exec). */
  stdio: readonly [number, number, number];
}

/**
 * posix_spawn(3) (not posix_spawnp: no PATH search, and no /bin/sh retry for
 * a file execve refuses). Returns the pid once the child has exec'd; a failed
 * exec (ENOENT, EACCES, ENOEXEC, a bad cwd) throws SysError with its errno.
 */
export function posixSpawn(options: PosixSpawnOptions): number {
  const attributes = spawnAttributes();
  fileActions ??= allocate(FILE_ACTIONS_BYTES);
  const actions = fileActions;
  check('posix_spawn_file_actions_init', c.actionsInit(actions) as number);
  try {
    options.stdio.forEach((fd, target) => check('posix_spawn_file_actions_adddup2', c.actionsDup2(actions, fd, target) as number, `fd ${fd} -> ${target}`));
    check('posix_spawn_file_actions_addchdir_np', c.actionsChdir(actions, options.cwd) as number, options.cwd);
    const pid = [0];
    const result = c.posix_spawn(pid, options.file, actions, attributes, [...options.argv, null], [...options.env, null]) as number;
    if (result !== 0) throw errnoError('posix_spawn', options.file, result);
    return pid[0]!;
  } finally {
    c.actionsDestroy(actions);
  }
}

/** One posix_spawn_file_actions_t, initialised and destroyed around each spawn (its own memory is reused). */
let fileActions: unknown = null;

/**
 * posix_spawn on a libuv worker thread (koffi's async call). With
 * CLONE_VFORK the calling thread waits until the child has exec'd, which on
 * a busy machine is as long as the child waits for a CPU (measured: about 2
 * ms per spawn at a load average of 5 on 2 cores). On a worker thread that
 * wait no longer blocks the event loop, and several spawns proceed at once.
 * Each call has its own file actions; the attributes are read-only and shared.
 */
export function posixSpawnAsync(options: PosixSpawnOptions): Promise<number> {
  const attributes = spawnAttributes();
  const actions = allocate(FILE_ACTIONS_BYTES);
  try {
    check('posix_spawn_file_actions_init', c.actionsInit(actions) as number);
  } catch (error) {
    koffi.free(actions);
    throw error;
  }
  const release = () => {
    c.actionsDestroy(actions);
    koffi.free(actions);
  };
  try {
    options.stdio.forEach((fd, target) => check('posix_spawn_file_actions_adddup2', c.actionsDup2(actions, fd, target) as number, `fd ${fd} -> ${target}`));
    check('posix_spawn_file_actions_addchdir_np', c.actionsChdir(actions, options.cwd) as number, options.cwd);
  } catch (error) {
    release();
    throw error;
  }
  const pid = [0];
  return new Promise((resolve, reject) => {
    c.posix_spawn.async(pid, options.file, actions, attributes, [...options.argv, null], [...options.env, null], (error: unknown, result: number) => {
      release();
      if (error) reject(error instanceof Error ? error : new Error(String(error)));
      else if (result !== 0) reject(errnoError('posix_spawn', options.file, result));
      else resolve(pid[0]!);
    });
  });
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

function signalName(number: number): NodeJS.Signals | null {
  for (const [name, value] of Object.entries(os.constants.signals)) if (value === number) return name as NodeJS.Signals;
  return null;
}

/** waitpid(pid, WNOHANG): the exit of our own child, or null while it runs. */
export function reapChild(pid: number): ProcessExit | null {
  const status = [0];
  for (;;) {
    const result = c.waitpid(pid, status, WNOHANG) as number;
    if (result === 0) return null;
    if (result < 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.EINTR) continue;
      // ECHILD: someone else reaped it (never libuv: it only waits for its own pids). Report it as gone.
      if (errno === os.constants.errno.ECHILD) return { code: null, signal: null };
      throw errnoError('waitpid', `pid ${pid}`, errno);
    }
    const raw = status[0]!;
    const termination = raw & 0x7f;
    if (termination === 0) return { code: (raw >> 8) & 0xff, signal: null };
    return { code: null, signal: signalName(termination) };
  }
}

/** glibc 2.36+ has a pidfd_open wrapper (a plain call, cheaper than variadic syscall()); older ones get syscall(). */
const pidfdOpenWrapper = (() => {
  try {
    return libc.func('int pidfd_open(int pid, unsigned int flags)');
  } catch {
    return null;
  }
})();

function pidfdOpen(pid: number): number {
  return pidfdOpenWrapper ? (pidfdOpenWrapper(pid, 0) as number) : Number(c.syscall3(SYS_PIDFD_OPEN, 'int', pid, 'unsigned int', 0));
}

export interface ExitWatcher {
  /** Stops watching (the child is then never reaped by us: only for shutdown after killing it). */
  close(): void;
}

/**
 * Calls `onExit` once the child `pid` (ours, not yet reaped) has exited and
 * been reaped. A pidfd becomes readable when the process exits; where
 * pidfd_open is missing, the child is polled every 20 ms instead.
 */
export function watchChildExit(pid: number, onExit: (exit: ProcessExit) => void): ExitWatcher {
  const pidfd = pidfdOpen(pid);
  let done = false;
  const finish = (exit: ProcessExit) => {
    if (done) return;
    done = true;
    onExit(exit);
  };
  if (pidfd < 0) {
    const timer = setInterval(() => {
      const exit = reapChild(pid);
      if (exit) {
        clearInterval(timer);
        finish(exit);
      }
    }, 20);
    return { close: () => clearInterval(timer) };
  }
  const handle = koffi.node.poll(pidfd, { readable: true }, () => {
    const exit = reapChild(pid);
    if (!exit) return;
    handle.close();
    c.close(pidfd);
    finish(exit);
  });
  return {
    close: () => {
      if (done) return;
      done = true;
      handle.close();
      c.close(pidfd);
    },
  };
}

/**
 * A connected pair of unix stream sockets, close-on-exec, BLOCKING: one end
 * becomes a script's stdin, stdout or stderr (scripts expect blocking
 * descriptors; libuv makes its own end non-blocking when it wraps it).
 * Socket pairs rather than pipes because shutdown(SHUT_WR) gives the script
 * EOF on stdin while the other direction stays open, as libuv's own stdio does.
 */
export function blockingSocketPair(): [number, number] {
  const pair = [0, 0];
  if ((c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) as number) !== 0) throw errnoError('socketpair', 'script stdio');
  return [pair[0]!, pair[1]!];
}

const pipe2 = libc.func('int pipe2(_Out_ int *fds, int flags)');
const O_CLOEXEC = 0o2000000;

/**
 * pipe2(O_CLOEXEC): [read end, write end], both blocking (libuv makes its
 * own end non-blocking when it wraps it). Cheaper than a socket pair, for the
 * channels that only flow one way and need no half-close: stdout, stderr.
 */
export function makePipe(): [number, number] {
  const fds = [0, 0];
  if ((pipe2(fds, O_CLOEXEC) as number) !== 0) throw errnoError('pipe2', 'script output');
  return [fds[0]!, fds[1]!];
}

/** close(2); EBADF and the like are reported, EINTR is not an error on Linux (the descriptor is gone). */
export function closeFd(fd: number): void {
  if ((c.close(fd) as number) !== 0 && koffi.errno() !== os.constants.errno.EINTR) throw errnoError('close', `fd ${fd}`);
}

/** accept4(2), non-blocking and close-on-exec; null when nothing is waiting. */
export function acceptConnection(listenFd: number): number | null {
  for (;;) {
    const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
    if (fd >= 0) return fd;
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN || errno === os.constants.errno.ECONNABORTED) return null;
    throw errnoError('accept4', `listening fd ${listenFd}`, errno);
  }
}

/** Connects a non-blocking, close-on-exec unix stream socket to `path` (unix connects complete at once or fail). */
export function connectUnix(path: string): number {
  const bytes = Buffer.from(path);
  if (bytes.length >= UNIX_PATH_MAX) {
    throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `socket path ${path} is ${bytes.length} bytes; unix socket paths must be shorter than ${UNIX_PATH_MAX}: choose a shorter runtime directory`);
  }
  const address = Buffer.alloc(2 + UNIX_PATH_MAX);
  address.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(address, 2);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0) as number;
  if (fd < 0) throw errnoError('socket', path);
  if ((c.connect(fd, address, 2 + bytes.length + 1) as number) !== 0) {
    const errno = koffi.errno();
    c.close(fd);
    throw errnoError('connect', path, errno);
  }
  return fd;
}

/** The uid, gid and pid of the process at the other end of a unix socket (SO_PEERCRED). */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const block = allocate(12);
  try {
    const length = [12];
    if ((c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, block, length) as number) !== 0) throw errnoError('getsockopt', `SO_PEERCRED fd ${fd}`);
    const view = new DataView(koffi.view(block, 12));
    return { pid: view.getInt32(0, true), uid: view.getUint32(4, true), gid: view.getUint32(8, true) };
  } finally {
    koffi.free(block);
  }
}

/** send(2) without blocking: bytes sent (possibly fewer), 0 when the buffer is full; throws EPIPE etc. */
export function sendBytes(fd: number, data: Uint8Array): number {
  for (;;) {
    const sent = Number(c.send(fd, data, data.length, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (sent >= 0) return sent;
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN) return 0;
    throw errnoError('send', `fd ${fd}`, errno);
  }
}

// struct msghdr and cmsghdr offsets for this ABI.
const MSG_IOV = POINTER_SIZE * 2;
const MSG_IOVLEN = MSG_IOV + POINTER_SIZE;
const MSG_CONTROL = MSG_IOVLEN + SIZE_T_SIZE;
const MSG_CONTROLLEN = MSG_CONTROL + POINTER_SIZE;
const MSG_FLAGS = MSG_CONTROLLEN + SIZE_T_SIZE;
const MSGHDR_SIZE = MSG_FLAGS + 8;
const IOVEC_SIZE = POINTER_SIZE + SIZE_T_SIZE;
const CMSG_HEADER = SIZE_T_SIZE + 8;
const align = (n: number) => Math.ceil(n / SIZE_T_SIZE) * SIZE_T_SIZE;

/**
 * A msghdr, one iovec, a data area and a control area in one koffi block.
 * Blocks are kept and reused (every call here is synchronous, and the
 * process has one JS thread): allocating and viewing native memory per
 * message showed up as garbage-collector time at a few thousand spawns/s.
 */
class MessageBlock {
  readonly pointer: unknown;
  readonly view: DataView;
  readonly bytes: Uint8Array;
  readonly dataOffset: number;
  readonly controlOffset: number;
  readonly controlSpace: number;
  readonly dataCapacity: number;
  constructor(dataCapacity: number, fdCapacity: number) {
    this.dataCapacity = dataCapacity;
    this.dataOffset = MSGHDR_SIZE + IOVEC_SIZE;
    this.controlOffset = this.dataOffset + Math.ceil(dataCapacity / 8) * 8;
    this.controlSpace = fdCapacity > 0 ? CMSG_HEADER + align(4 * fdCapacity) : 0;
    const size = this.controlOffset + Math.max(this.controlSpace, 8);
    this.pointer = allocate(size);
    const buffer = koffi.view(this.pointer, size);
    this.view = new DataView(buffer);
    this.bytes = new Uint8Array(buffer);
    const base = koffi.address(this.pointer);
    this.#pointer(MSG_IOV, base + BigInt(MSGHDR_SIZE));
    this.#size(MSG_IOVLEN, 1);
    this.#pointer(MSGHDR_SIZE, base + BigInt(this.dataOffset));
    this.#pointer(MSG_CONTROL, base + BigInt(this.controlOffset));
  }
  #pointer(offset: number, address: bigint): void {
    if (POINTER_SIZE === 8) this.view.setBigUint64(offset, address, true);
    else this.view.setUint32(offset, Number(address), true);
  }
  #size(offset: number, value: number): void {
    if (SIZE_T_SIZE === 8) this.view.setBigUint64(offset, BigInt(value), true);
    else this.view.setUint32(offset, value, true);
  }
  readSize(offset: number): number {
    return SIZE_T_SIZE === 8 ? Number(this.view.getBigUint64(offset, true)) : this.view.getUint32(offset, true);
  }
  /** Sets the data length and the control length (0 descriptors: no control message) for the next call. */
  prepare(dataLength: number, controlLength: number): void {
    this.#size(MSGHDR_SIZE + POINTER_SIZE, dataLength);
    this.#size(MSG_CONTROLLEN, controlLength);
    this.view.setInt32(MSG_FLAGS, 0, true);
  }
  writeRights(fds: readonly number[]): void {
    this.#size(this.controlOffset, CMSG_HEADER + 4 * fds.length);
    this.view.setInt32(this.controlOffset + SIZE_T_SIZE, SOL_SOCKET, true);
    this.view.setInt32(this.controlOffset + SIZE_T_SIZE + 4, SCM_RIGHTS, true);
    fds.forEach((passed, index) => this.view.setInt32(this.controlOffset + CMSG_HEADER + 4 * index, passed, true));
  }
}

let sendBlock: MessageBlock | null = null;
const receiveBlocks = new Map<string, MessageBlock>();

function blockForSending(dataLength: number, fdCount: number): MessageBlock {
  if (!sendBlock || sendBlock.dataCapacity < dataLength || sendBlock.controlSpace < CMSG_HEADER + align(4 * fdCount)) {
    if (sendBlock) koffi.free(sendBlock.pointer);
    let capacity = 4096;
    while (capacity < dataLength) capacity *= 2;
    sendBlock = new MessageBlock(capacity, Math.max(fdCount, 8));
  }
  return sendBlock;
}

/**
 * sendmsg(2) of `data` with `fds` attached (SCM_RIGHTS), without blocking.
 * All or nothing: returns false when the socket buffer cannot take it now
 * (EAGAIN); a partial send (which a unix stream socket does not do for
 * messages below its buffer size) is an error. The sender keeps its copies.
 */
export function sendWithDescriptors(fd: number, data: Uint8Array, fds: readonly number[]): boolean {
  const block = blockForSending(data.length, fds.length);
  block.bytes.set(data, block.dataOffset);
  if (fds.length > 0) block.writeRights(fds);
  block.prepare(data.length, fds.length > 0 ? CMSG_HEADER + align(4 * fds.length) : 0);
  for (;;) {
    const sent = Number(c.sendmsg(fd, block.pointer, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (sent === data.length) return true;
    if (sent >= 0) throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `sendmsg fd ${fd}: sent ${sent} of ${data.length} bytes with descriptors attached`);
    const errno = koffi.errno();
    if (errno === os.constants.errno.EINTR) continue;
    if (errno === os.constants.errno.EAGAIN) return false;
    throw errnoError('sendmsg', `passing ${fds.length} descriptor(s) over fd ${fd}`, errno);
  }
}

export type Received = { kind: 'data'; data: Buffer; fds: number[] } | { kind: 'again' } | { kind: 'eof' };

/**
 * recvmsg(2) of up to `maxBytes` and up to `maxFds` descriptors (close-on-exec),
 * without blocking. Descriptors beyond `maxFds` are closed by the kernel
 * (MSG_CTRUNC): that is reported as an error after closing the ones received.
 */
export function receiveWithDescriptors(fd: number, maxBytes: number, maxFds: number): Received {
  const key = `${maxBytes}:${maxFds}`;
  let block = receiveBlocks.get(key);
  if (!block) {
    block = new MessageBlock(maxBytes, maxFds);
    receiveBlocks.set(key, block);
  }
  for (;;) {
    block.prepare(maxBytes, block.controlSpace);
    const received = Number(c.recvmsg(fd, block.pointer, MSG_DONTWAIT | MSG_CMSG_CLOEXEC));
    if (received < 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.EINTR) continue;
      if (errno === os.constants.errno.EAGAIN) return { kind: 'again' };
      if (errno === os.constants.errno.ECONNRESET) return { kind: 'eof' };
      throw errnoError('recvmsg', `fd ${fd}`, errno);
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
    if ((block.view.getInt32(MSG_FLAGS, true) & MSG_CTRUNC) !== 0) {
      for (const passed of fds) c.close(passed);
      throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `recvmsg fd ${fd}: more than ${maxFds} descriptors were attached; the message was refused`);
    }
    if (received === 0 && fds.length === 0) return { kind: 'eof' };
    return { kind: 'data', data: Buffer.from(block.bytes.subarray(block.dataOffset, block.dataOffset + received)), fds };
  }
}

export interface DescriptorPoller {
  /** Changes what is watched (readable always; writable only while output is queued). */
  want(writable: boolean): void;
  close(): void;
  unref(): void;
}

/** A uv_poll handle on a descriptor libuv does not otherwise own. */
export function pollDescriptor(fd: number, onEvent: (event: { readable: boolean; writable: boolean; disconnect: boolean }) => void): DescriptorPoller {
  let writable = false;
  // koffi calls back with (status, events); a negative status is a poll error, reported as a disconnect.
  const callback = ((status: number, events: { readable: boolean; writable: boolean; disconnect: boolean }) =>
    onEvent(status < 0 ? { readable: true, writable: false, disconnect: true } : events)) as unknown as (events: { readable: boolean; writable: boolean; disconnect: boolean }) => void;
  const handle = koffi.node.poll(fd, { readable: true, disconnect: true }, callback);
  return {
    want(next: boolean) {
      if (next === writable) return;
      writable = next;
      handle.start({ readable: true, disconnect: true, writable: next }, callback);
    },
    close: () => handle.close(),
    unref: () => handle.unref(),
  };
}

/**
 * prctl(PR_SET_PDEATHSIG): this process gets `signal` when its parent dies.
 * Returns false when the parent is already gone (reparented before the call).
 */
export function dieWithParent(signal: NodeJS.Signals, expectedParent: number): boolean {
  const number = os.constants.signals[signal];
  if ((c.prctl(PR_SET_PDEATHSIG, number, 0, 0, 0) as number) !== 0) throw errnoError('prctl', 'PR_SET_PDEATHSIG');
  return (c.getppid() as number) === expectedParent;
}

const groupLookup = libc.func('void *getgrnam(const char *name)');

/** getgrnam(3): the gid of a group name, or null when there is no such group. */
export function lookupGroupId(name: string): number | null {
  const entry = groupLookup(name);
  if (entry === null) return null;
  // struct group: gr_name, gr_passwd (char *), gr_gid (gid_t), gr_mem (char **).
  const view = new DataView(koffi.view(entry, POINTER_SIZE * 2 + 4));
  return view.getUint32(POINTER_SIZE * 2, true);
}

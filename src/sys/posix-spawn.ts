/**
 * Starting and supervising processes without libuv: glibc's posix_spawn
 * (clone3 with CLONE_VM|CLONE_VFORK: no page tables copied, so a start costs
 * the same from a 40 MB daemon as from a 1.5 GB front), reaping through a
 * pidfd (so libuv's own SIGCHLD reaping never sees or steals these children,
 * and ours never steal libuv's), pipes for a script's output, and the
 * parent-death signal the cgid daemon asks for. Sockets (socket pairs,
 * accept4, passing descriptors, SO_PEERCRED) are in ./sockets.ts.
 *
 * Linux and glibc only (posix_spawn_file_actions_addchdir_np needs 2.29,
 * POSIX_SPAWN_SETSID 2.26, pidfd_open Linux 5.3). Every descriptor made here
 * is close-on-exec; the only ones a script inherits are the three dup2()ed
 * onto its stdin, stdout and stderr.
 */
import os from 'node:os';
import { Block, closeQuietly, koffi, libc, sysError } from './libc.js';
import { O_CLOEXEC } from './linux.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { SPAWN_REAP_POLL_MS } from '../limits.js';

const c = {
  posix_spawn: libc.func(
    'int posix_spawn(_Out_ int *pid, const char *path, void *actions, void *attr, const char **argv, const char **envp)',
  ),
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
  // Kept for the life of the process.
  const attributes = new Block(SPAWNATTR_BYTES).ptr;
  const maskBlock = new Block(SIGSET_BYTES);
  const defaultsBlock = new Block(SIGSET_BYTES);
  const mask = maskBlock.ptr;
  const defaults = defaultsBlock.ptr;
  try {
    check('posix_spawnattr_init', c.attrInit(attributes) as number);
    c.sigemptyset(mask);
    c.sigfillset(defaults);
    check('posix_spawnattr_setsigmask', c.attrSetSigmask(attributes, mask) as number);
    check('posix_spawnattr_setsigdefault', c.attrSetSigdefault(attributes, defaults) as number);
    check(
      'posix_spawnattr_setflags',
      c.attrSetFlags(attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF) as number,
    );
  } finally {
    maskBlock.free();
    defaultsBlock.free();
  }
  sharedAttributes = attributes;
  return attributes;
}

/** posix_spawn's family returns the error number instead of setting errno. */
function check(call: string, result: number, object = ''): void {
  if (result !== 0) throw sysError(call, object, result);
}

export interface PosixSpawnOptions {
  file: string;
  /** argv[0] included. */
  argv: readonly string[];
  /**
   * Complete environment, NAME=VALUE: a string is passed as its UTF-8 bytes,
   * a byte array exactly (environment values are bytes, and request bytes that
   * are not UTF-8 must reach the script unchanged). Neither may hold a NUL.
   */
  env: readonly (string | Uint8Array)[];
  cwd: string;
  /** Descriptors that become the child's 0, 1 and 2 (dup2: the copies lose close-on-exec). */
  stdio: readonly [number, number, number];
}

/**
 * posix_spawn(3) (not posix_spawnp: no PATH search, and no /bin/sh retry for
 * a file execve refuses), on a libuv worker thread (koffi's async call).
 * Resolves with the pid once the child has exec'd; a failed exec (ENOENT,
 * EACCES, ENOEXEC, a bad cwd) rejects with SysError and its errno. With
 * CLONE_VFORK the calling thread waits until the child has exec'd, which on
 * a busy machine is as long as the child waits for a CPU (measured: about 2
 * ms per spawn at a load average of 5 on 2 cores). On a worker thread that
 * wait no longer blocks the event loop, and several spawns proceed at once.
 * Each call has its own file actions; the attributes are read-only and shared.
 */
export function posixSpawnAsync(options: PosixSpawnOptions): Promise<number> {
  const attributes = spawnAttributes();
  const actionsBlock = new Block(FILE_ACTIONS_BYTES);
  const actions = actionsBlock.ptr;
  try {
    check('posix_spawn_file_actions_init', c.actionsInit(actions) as number);
  } catch (error) {
    actionsBlock.free();
    throw error;
  }
  const release = () => {
    c.actionsDestroy(actions);
    actionsBlock.free();
  };
  try {
    for (const [target, fd] of options.stdio.entries()) {
      check('posix_spawn_file_actions_adddup2', c.actionsDup2(actions, fd, target) as number, `fd ${fd} -> ${target}`);
    }
    check('posix_spawn_file_actions_addchdir_np', c.actionsChdir(actions, options.cwd) as number, options.cwd);
  } catch (error) {
    release();
    throw error;
  }
  const pid = [0];
  const envp = environmentPointers(options.env);
  return new Promise((resolve, reject) => {
    c.posix_spawn.async(pid, options.file, actions, attributes, [...options.argv, null], envp, (error: unknown, result: number) => {
      release();
      if (error)
        reject(
          error instanceof Error ? error : new GatehouseError(ErrorCode.SYSCALL_FAILED, `posix_spawn ${options.file}: ${String(error)}`),
        );
      else if (result !== 0) reject(sysError('posix_spawn', options.file, result));
      else resolve(pid[0]!);
    });
  });
}

/**
 * envp for posix_spawn: koffi turns a string into a NUL-terminated UTF-8 copy
 * and passes a byte array's own memory, so byte entries are copied once into
 * one block with a NUL after each, and each entry is a view of that block.
 * The array (and so the block) stays referenced until the call settles.
 */
function environmentPointers(env: readonly (string | Uint8Array)[]): Array<string | Uint8Array | null> {
  let bytes = 0;
  for (const entry of env) if (typeof entry !== 'string') bytes += entry.byteLength + 1;
  const block = bytes > 0 ? Buffer.alloc(bytes) : null;
  let offset = 0;
  const pointers: Array<string | Uint8Array | null> = [];
  for (const entry of env) {
    if (typeof entry === 'string') {
      pointers.push(entry);
      continue;
    }
    block!.set(entry, offset);
    pointers.push(block!.subarray(offset, offset + entry.byteLength + 1));
    offset += entry.byteLength + 1;
  }
  pointers.push(null);
  return pointers;
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
function reapChild(pid: number): ProcessExit | null {
  const status = [0];
  for (;;) {
    const result = c.waitpid(pid, status, WNOHANG) as number;
    if (result === 0) return null;
    if (result < 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.EINTR) continue;
      // ECHILD: someone else reaped it (never libuv: it only waits for its own pids). Report it as gone.
      if (errno === os.constants.errno.ECHILD) return { code: null, signal: null };
      throw sysError('waitpid', `pid ${pid}`, errno);
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
    }, SPAWN_REAP_POLL_MS);
    return { close: () => clearInterval(timer) };
  }
  const handle = koffi.node.poll(pidfd, { readable: true }, () => {
    const exit = reapChild(pid);
    if (!exit) return;
    handle.close();
    closeQuietly(pidfd);
    finish(exit);
  });
  return {
    close: () => {
      if (done) return;
      done = true;
      handle.close();
      closeQuietly(pidfd);
    },
  };
}

const pipe2 = libc.func('int pipe2(_Out_ int *fds, int flags)');

/**
 * pipe2(O_CLOEXEC): [read end, write end], both blocking (libuv makes its
 * own end non-blocking when it wraps it). Cheaper than a socket pair, for the
 * channels that only flow one way and need no half-close: stdout, stderr.
 */
export function makePipe(): [number, number] {
  const fds = [0, 0];
  if ((pipe2(fds, O_CLOEXEC) as number) !== 0) throw sysError('pipe2', 'script output');
  return [fds[0]!, fds[1]!];
}

/**
 * prctl(PR_SET_PDEATHSIG): this process gets `signal` when its parent dies.
 * Returns false when the parent is already gone (reparented before the call).
 */
export function dieWithParent(signal: NodeJS.Signals, expectedParent: number): boolean {
  const number = os.constants.signals[signal];
  if ((c.prctl(PR_SET_PDEATHSIG, number, 0, 0, 0) as number) !== 0) throw sysError('prctl', 'PR_SET_PDEATHSIG');
  return (c.getppid() as number) === expectedParent;
}

/**
 * Lifelines: the kernel kills a worker's whole process group when the
 * process that started it dies, however it dies (SIGKILL and crashes
 * included), with no helper process and no code run between fork and exec
 * (libuv's spawn allows none).
 *
 * One pipe per worker. The manager keeps the read end (close-on-exec, so no
 * other child inherits it); the worker inherits the write end, whose open
 * file description carries O_ASYNC, F_SETSIG `signal` and F_SETOWN -pgid.
 * When the last reader of a pipe goes away while writers remain, Linux sends
 * the writers' owners the "I/O possible" signal (fs/pipe.c, pipe_release:
 * kill_fasync on the writers' list); F_SETSIG makes that signal `signal`,
 * and a negative owner sends it to the whole process group, so what the
 * worker forked (php-cgi's PHP_FCGI_CHILDREN, fcgiwrap's scripts) goes too.
 * The only reader is the manager, so that happens exactly when the manager's
 * descriptors are closed: at its exit, whatever the cause, or when it closes
 * the read end itself after reaping the worker (then it takes any stray
 * process the worker left in its group).
 *
 * Unlike PR_SET_PDEATHSIG, nothing clears the owner: not the worker's
 * credential changes, not an execve of a set-user-ID program (the kernel
 * checks the permission to signal against the credentials of whoever set the
 * owner: the manager after its own privilege drop, so a root manager reaches
 * any worker and a manager running as a user reaches that user's
 * processes). It reaches the whole group, and it needs no wrapper program
 * inside a chroot. The group is held by its struct pid inside the kernel,
 * so a recycled pid number is never signalled.
 *
 * The one window: between the fork and armLifeline() (the length of the
 * worker's execve), a manager killed at that instant leaves that worker
 * unarmed. Every design built on a spawn that runs no code of ours between
 * fork and exec has such a window (an exec wrapper setting
 * PR_SET_PDEATHSIG has it between fork and its prctl).
 */
import os from 'node:os';
import { closeQuietly, fail, libc } from './libc.js';
import { F_GETFL, F_SETFL, O_CLOEXEC } from './linux.js';

const F_SETOWN = 8;
const F_SETSIG = 10;
/** FASYNC (asm-generic/fcntl.h: the same on x86_64 and aarch64). */
const O_ASYNC = 0o20000;

const c = {
  pipe2: libc.func('int pipe2(_Out_ int *fds, int flags)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
};

export interface Lifeline {
  /** The read end: the manager keeps it open for as long as the worker should live. */
  keep: number;
  /** The write end: handed to the worker (dup2 onto one of its descriptors), then closed by the manager. */
  give: number;
}

/**
 * A pipe whose write end, once armed and given to a process group, brings
 * `signal` to that group when the read end closes.
 */
export function createLifeline(signal: NodeJS.Signals = 'SIGKILL'): Lifeline {
  const fds = [0, 0];
  if ((c.pipe2(fds, O_CLOEXEC) as number) !== 0) fail('pipe2', 'lifeline');
  const [keep, give] = [fds[0]!, fds[1]!];
  try {
    if ((c.fcntl(give, F_SETSIG, 'int', os.constants.signals[signal]) as number) !== 0) fail('fcntl', 'F_SETSIG lifeline');
    const flags = c.fcntl(give, F_GETFL, 'int', 0) as number;
    if (flags < 0) fail('fcntl', 'F_GETFL lifeline');
    if ((c.fcntl(give, F_SETFL, 'int', flags | O_ASYNC) as number) !== 0) fail('fcntl', 'F_SETFL O_ASYNC lifeline');
  } catch (error) {
    closeQuietly(keep);
    closeQuietly(give);
    throw error;
  }
  return { keep, give };
}

/**
 * Names the process group the lifeline's signal goes to (F_SETOWN -pgid).
 * Call it on the manager's copy of the write end after the spawn, before
 * closing that copy: the worker's copy shares the open file description.
 */
export function armLifeline(give: number, processGroup: number): void {
  if ((c.fcntl(give, F_SETOWN, 'int', -processGroup) as number) !== 0) fail('fcntl', `F_SETOWN lifeline of process group ${processGroup}`);
}

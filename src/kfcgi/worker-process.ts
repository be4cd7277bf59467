/**
 * One worker process: started with a clean signal mask and default
 * dispositions (libuv resets both in the child, unlike kfcgi, which leaves
 * SIGTERM, SIGHUP and SIGCHLD blocked), in its own process group (so that a
 * stop reaches anything it started), with stdout and stderr logged line by
 * line with its pid.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, openSync, readFileSync, constants as fsConstants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { KFCGI_FREEZE_LOOKS, KFCGI_KILL_GRACE_MS, KFCGI_LOG_LINE_MAX } from '../limits.js';
import { listDirectoryAt, openAt, readLinkAt } from '../sys/index.js';
import type { Logger } from './log.js';

export interface WorkerSpawn {
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** stdio[0] and any extra descriptors (index 3 and up). */
  stdin: number | 'ignore';
  extra?: number[];
}

export interface WorkerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Milliseconds the worker ran. */
  ranMs: number;
  /** A spawn error (program missing inside the jail, ...). */
  error?: Error;
}

/** Every worker not yet reaped, so that a manager exiting abnormally still takes its workers down. */
const liveWorkers = new Set<WorkerProcess>();

/** Signals every live worker's process group (synchronous: usable from a process 'exit' handler). */
export function signalAllWorkers(signal: NodeJS.Signals): number {
  for (const worker of liveWorkers) worker.signal(signal);
  return liveWorkers.size;
}

export class WorkerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startedAt = Date.now();
  readonly exited: Promise<WorkerExit>;
  #exit: WorkerExit | null = null;
  /** Socket inodes it was started with (see ProcView.recordGivenSockets); null when unknown. */
  givenSockets: Set<string> | null = null;
  /** Why we are stopping it (logged with its exit), or null if it exits on its own. */
  stopReason: string | null = null;

  constructor(spec: WorkerSpawn, log: Logger) {
    const stdio: StdioOptions = [spec.stdin, 'pipe', 'pipe', ...(spec.extra ?? [])];
    this.child = spawn(spec.program, spec.args, { stdio, env: spec.env, detached: true, cwd: '/' });
    this.pid = this.child.pid ?? -1;
    if (this.pid > 0) liveWorkers.add(this);
    this.exited = new Promise<WorkerExit>((resolve) => {
      const finish = (exit: WorkerExit) => {
        if (this.#exit) return;
        this.#exit = exit;
        liveWorkers.delete(this);
        resolve(exit);
      };
      this.child.once('exit', (code, signal) => finish({ code, signal, ranMs: Date.now() - this.startedAt }));
      this.child.once('error', (error) => finish({ code: null, signal: null, ranMs: Date.now() - this.startedAt, error }));
    });
    const label = `worker ${this.pid}`;
    for (const [stream, level] of [
      [this.child.stdout, 'notice'],
      [this.child.stderr, 'warning'],
    ] as const) {
      if (!stream) continue;
      let pending = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        pending += chunk;
        let newline: number;
        while ((newline = pending.indexOf('\n')) !== -1 || pending.length >= KFCGI_LOG_LINE_MAX) {
          const end = newline === -1 ? KFCGI_LOG_LINE_MAX : Math.min(newline, KFCGI_LOG_LINE_MAX);
          const line = pending.slice(0, end);
          pending = pending.slice(newline !== -1 && newline <= KFCGI_LOG_LINE_MAX ? newline + 1 : end);
          log[level](`${label}: ${line}`);
        }
      });
      stream.on('end', () => {
        if (pending) log[level](`${label}: ${pending}`);
        pending = '';
      });
    }
  }

  get running(): boolean {
    return this.#exit === null && this.pid > 0;
  }

  /** Sends `signal` to the worker's process group (the worker and whatever it started). */
  signal(signal: NodeJS.Signals): void {
    if (!this.running) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      try {
        process.kill(this.pid, signal);
      } catch {
        // already gone
      }
    }
  }

  /** SIGTERM, then SIGKILL after the grace period; resolves once it exited. */
  async stop(reason: string, graceMs = KFCGI_KILL_GRACE_MS): Promise<WorkerExit> {
    this.stopReason ??= reason;
    if (!this.running) return this.exited;
    this.signal('SIGTERM');
    this.signal('SIGCONT');
    let timer: NodeJS.Timeout | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.stopReason = `${reason}; did not exit ${graceMs} ms after SIGTERM, sent SIGKILL`;
        this.signal('SIGKILL');
        resolve();
      }, graceMs);
    });
    const exit = await Promise.race([this.exited, killed.then(() => this.exited)]);
    clearTimeout(timer);
    return exit;
  }
}

export function describeExit(exit: WorkerExit): string {
  if (exit.error) return `could not start: ${exit.error.message}`;
  if (exit.signal) return `killed by ${exit.signal}`;
  return `exited with status ${exit.code}`;
}

/**
 * A view of /proc kept open from before the jail, to tell whether a worker
 * is between connections (a fixed-pool restart stops only idle workers, so
 * that no accepted connection is lost).
 */
export class ProcView {
  readonly #fd: number | null;

  constructor() {
    let fd: number | null = null;
    try {
      fd = openSync('/proc', fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    } catch {
      fd = null;
    }
    this.#fd = fd;
  }

  get available(): boolean {
    return this.#fd !== null;
  }

  /** The socket inodes a process holds, by descriptor number; null when it cannot be read. */
  sockets(pid: number): Map<number, string> | null {
    if (this.#fd === null) return null;
    try {
      const result = new Map<number, string>();
      for (const name of listDirectoryAt(this.#fd, `${pid}/fd`)) {
        const target = readLinkAt(this.#fd, `${pid}/fd/${name}`);
        if (target?.startsWith('socket:')) result.set(Number(name), target);
      }
      return result;
    } catch {
      return null;
    }
  }

  /** The process state letter from /proc/PID/stat (R, S, T, Z, ...), or null. */
  state(pid: number): string | null {
    if (this.#fd === null) return null;
    try {
      const fd = openAt(this.#fd, `${pid}/stat`);
      try {
        const text = readFileSync(fd, 'utf8');
        return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) || null;
      } finally {
        closeSync(fd);
      }
    } catch {
      return null;
    }
  }

  /**
   * Freezes `worker` with SIGSTOP when it holds no socket besides its
   * listening one (fd `listenFd`), that is, when it is between connections.
   * A stopped process cannot accept, so a worker frozen idle can be ended
   * without losing a connection: new ones wait in the listen queue for the
   * others. Returns false (and lets it run on) when it is busy.
   */
  async freezeIfIdle(worker: WorkerProcess): Promise<boolean> {
    worker.signal('SIGSTOP');
    for (let attempt = 0; attempt < KFCGI_FREEZE_LOOKS && this.state(worker.pid) !== 'T' && worker.running; attempt += 1) await sleep(1);
    const idle = this.isIdle(worker);
    if (!idle) worker.signal('SIGCONT');
    return idle;
  }

  /**
   * Records the sockets a worker was started with (its listening socket and
   * the log pipes, which libuv makes as socketpairs): any other socket it
   * holds later is a connection it is serving.
   */
  recordGivenSockets(worker: WorkerProcess): void {
    const sockets = this.sockets(worker.pid);
    worker.givenSockets = sockets ? new Set(sockets.values()) : null;
  }

  /** Whether the worker holds no socket besides those it was started with; false when unknown. */
  isIdle(worker: WorkerProcess): boolean {
    if (worker.givenSockets === null) return false;
    const sockets = this.sockets(worker.pid);
    return sockets !== null && [...sockets.values()].every((socket) => worker.givenSockets!.has(socket));
  }
}

/**
 * One worker process: started with a clean signal mask and default
 * dispositions (libuv resets both in the child, unlike kfcgi, which leaves
 * SIGTERM, SIGHUP and SIGCHLD blocked), in its own process group (so that a
 * stop reaches anything it started), with stdout and stderr logged line by
 * line with its pid, and tied to the manager by a lifeline (src/sys/lifeline.ts):
 * should the manager die, however it dies, the kernel sends SIGKILL to the
 * worker's process group, so no worker (nor anything it forked) outlives it
 * to keep a dead pool's socket busy. The lifeline's write end is the
 * worker's last descriptor (3 in fixed and dynamic pools, 4 in variable
 * pools); the worker need not know it is there.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { KFCGI_KILL_GRACE_MS, KFCGI_LOG_LINE_MAX } from '../limits.js';
import { armLifeline, closeDescriptor, createLifeline } from '../sys/index.js';
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
  /** Socket inodes it was started with (see SocketView.recordGivenSockets); null when unknown. */
  givenSockets: Set<string> | null = null;
  /** Why we are stopping it (logged with its exit), or null if it exits on its own. */
  stopReason: string | null = null;

  constructor(spec: WorkerSpawn, log: Logger) {
    const lifeline = createLifeline('SIGKILL');
    const stdio: StdioOptions = [spec.stdin, 'pipe', 'pipe', ...(spec.extra ?? []), lifeline.give];
    try {
      this.child = spawn(spec.program, spec.args, { stdio, env: spec.env, detached: true, cwd: '/' });
    } catch (error) {
      closeDescriptor(lifeline.keep);
      closeDescriptor(lifeline.give);
      throw error;
    }
    this.pid = this.child.pid ?? -1;
    if (this.pid > 0) {
      liveWorkers.add(this);
      try {
        armLifeline(lifeline.give, this.pid);
      } catch (error) {
        log.error(`worker ${this.pid}: ${(error as Error).message}; it would outlive a manager that crashes`);
      }
    }
    // The worker has its copy (the same open file description: the same owner and signal); ours is not needed.
    closeDescriptor(lifeline.give);
    let lifelineOpen = true;
    this.exited = new Promise<WorkerExit>((resolve) => {
      const finish = (exit: WorkerExit) => {
        if (this.#exit) return;
        this.#exit = exit;
        liveWorkers.delete(this);
        // Closing our end now fires the lifeline at whatever the worker left in its process group.
        if (lifelineOpen) closeDescriptor(lifeline.keep);
        lifelineOpen = false;
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

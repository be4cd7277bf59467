/**
 * The front's ScriptSpawner through the cgid daemon: starts the daemon as its
 * own child process (`gatehouse cgid --socket PATH`, a fresh small Node, so
 * starting a script costs the same however large the front grows), talks to
 * it over ScriptSock, and supervises it.
 *
 * When the daemon dies the front notices at once (the connection closes),
 * kills the process groups of the scripts it had started (nobody would reap
 * or time them out any more: no orphans), answers spawns with a CGID_UNAVAILABLE SpawnError
 * (the CGI handler turns that into 503) and starts a new daemon with
 * back-off.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ScriptSpawner, SpawnedScript, SpawnRequest } from '../spawn/spawner.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import {
  CGID_RESTART_HEALTHY_MS,
  CGID_RESTART_MAX_DELAY_MS,
  CGID_RESTART_MIN_DELAY_MS,
  CGID_START_ERROR_LINES,
  CGID_START_TIMEOUT_MS,
  CGID_TOKEN_BYTES,
  LOG_DRAIN_TIMEOUT_MS,
} from '../limits.js';
import { CgidConnection } from './client.js';
import { spawnThroughDaemon } from './remote-spawn.js';
import { newInstanceToken } from './daemon.js';
import type { SpawnPolicy } from '../spawn/posix-spawner.js';
import { NO_LIMITS, type ScriptLimits } from '../spawn/order.js';
import { type LogLevel, type LogRecord, parseJsonRecord } from '../log/index.js';

export interface SupervisorOptions {
  /** The full socket path (ScriptSock prefix + the front's pid). */
  socketPath: string;
  /** The supervisor's own lines (an error unless a level is given). */
  log: (line: string, level?: LogLevel) => void;
  /**
   * Where the daemon's records go, with their own time, role and pid (the
   * front's Logger.emit); and the least serious level the daemon should send.
   * Without it they are passed to `log` with their level.
   */
  daemonLog?: { emit(record: LogRecord): void; level: LogLevel };
  policy?: SpawnPolicy;
  /** Extra `gatehouse cgid` flags for the daemon (limit ceilings, suexec minimums). */
  daemonArgs?: readonly string[];
  /** A daemon that leaves a spawn order unanswered this long is replaced (default CGID_SPAWN_ANSWER_TIMEOUT_MS). */
  spawnAnswerTimeoutMs?: number;
  /** How the daemon is started; default this installation's `gatehouse cgid` under this Node with DAEMON_NODE_FLAGS. */
  command?: { file: string; args: readonly string[] };
}

const MAIN_SCRIPT = fileURLToPath(new URL('../cli/main.js', import.meta.url));

/**
 * Node flags for the daemon's process only, never the front's own (a front
 * tuned with --max-semi-space-size=64 must not pass that on to a process that
 * allocates little): --max-semi-space-size=1 (MiB) keeps its young generation
 * small.
 *
 * Measured and not kept (bench/CGID.md, node bench/daemon-memory.mjs): --no-opt
 * and --no-maglev (no optimizing compilers) took the idle daemon from 52 to
 * 48 MB RSS on Node 20 and cost nothing in a burst of 1000-2000 spawns from a
 * cold start, but under sustained load through serve (wrk, 16 connections,
 * after a warm-up) the daemon spent 517-638 µs per request against 314-347
 * with --max-semi-space-size=1 alone: 4 MB is not worth 50% more CPU on every
 * spawn. --lite-mode / --jitless cost more still.
 *
 * Every flag is known to the V8 of Node 20, 22 and 24 (an unknown one would
 * stop the daemon from starting).
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];

export class CgidSupervisor implements ScriptSpawner {
  readonly #options: SupervisorOptions;
  readonly #token = newInstanceToken(CGID_TOKEN_BYTES);
  readonly #limits: ScriptLimits;
  #child: ChildProcess | null = null;
  #connection: CgidConnection | null = null;
  #stopping = false;
  #restartDelay = CGID_RESTART_MIN_DELAY_MS;
  #restartTimer: NodeJS.Timeout | undefined;
  #startedAt = 0;
  /** Daemon starts so far (1 after start()). */
  starts = 0;

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#limits = options.policy?.limits ?? NO_LIMITS;
  }

  /** The running daemon's pid; undefined before the first start and between a daemon's exit and the next start. */
  get daemonPid(): number | undefined {
    const child = this.#child;
    return child && child.exitCode === null && child.signalCode === null ? child.pid : undefined;
  }

  /** Where the daemon listens and the token it takes: what `serve --workers` workers need to use it too. */
  get endpoint(): { socketPath: string; token: Buffer } {
    return { socketPath: this.#options.socketPath, token: this.#token };
  }

  /** True while a daemon is connected and taking orders. */
  get available(): boolean {
    return this.#connection !== null && !this.#connection.closed;
  }

  /** Starts the first daemon; rejects when it cannot start (bad socket directory, ...), with its reason. */
  async start(): Promise<void> {
    await this.#startDaemon();
  }

  async #startDaemon(): Promise<void> {
    if (this.starts > 0 && (this.#options.policy?.suexec?.length ?? 0) > 0 && process.geteuid?.() !== 0)
      this.#options.log(
        `cgid: the front no longer runs as root, so the new daemon cannot either: scripts of routes with a user (suexec) will fail until gatehouse serve is restarted`,
        'warn',
      );
    const child = this.#spawnDaemon();
    this.#child = child;
    this.starts++;
    this.#startedAt = Date.now();
    const errors = this.#relayDaemonLog(child);
    const ready = daemonReady(child);
    child.once('exit', (code, signal) => this.#onDaemonExit(child, code, signal));
    let timer: NodeJS.Timeout | undefined;
    const started = await Promise.race([
      ready,
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), CGID_START_TIMEOUT_MS))),
    ]);
    clearTimeout(timer);
    if (!started) {
      child.kill('SIGKILL');
      await new Promise((resolve) => setImmediate(resolve));
      throw new GatehouseError(
        ErrorCode.CGID_SETUP,
        `the cgid daemon did not start: ${errors.join(' / ') || 'no message (see the error log)'}`,
      );
    }
    await this.#connect(child);
  }

  /** `gatehouse cgid` on the front's socket path, with its token in the environment and its lifeline on fd 3. */
  #spawnDaemon(): ChildProcess {
    const { file, args } = this.#options.command ?? { file: process.execPath, args: [...DAEMON_NODE_FLAGS, MAIN_SCRIPT, 'cgid'] };
    // fd 3 is the daemon's lifeline: this process holds the other end, so the daemon sees end of file when the front
    // is gone, however it went. The parent-death signal alone is not enough: the kernel checks the dying parent's
    // credentials, so a front that dropped root cannot signal a daemon that kept it (suexec).
    const child = spawn(
      file,
      [
        ...args,
        '--socket',
        this.#options.socketPath,
        '--parent-pid',
        String(process.pid),
        '--lifeline-fd',
        '3',
        // Records, not lines: the front writes them in its own format, never a line inside a line.
        '--log-format',
        'json',
        '--log-level',
        this.#options.daemonLog?.level ?? 'info',
        ...(this.#options.daemonArgs ?? []),
      ],
      {
        env: { GATEHOUSE_CGID_TOKEN: this.#token.toString('hex'), ...(process.env.PATH ? { PATH: process.env.PATH } : {}) },
        stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      },
    );
    // Never read or written; only held open. It must not keep the front alive.
    (child.stdio[3] as unknown as { unref?(): void }).unref?.();
    return child;
  }

  /** Passes the daemon's records (its stderr) to the log; returns the first error messages, what a failed start says. */
  #relayDaemonLog(child: ChildProcess): string[] {
    const errors: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (line) => {
      // A record; anything else (a crash trace from Node itself) is logged as an error of the daemon.
      const record = parseJsonRecord(line) ?? { time: new Date(), level: 'error', role: 'cgid', pid: child.pid ?? 0, message: line };
      if (record.level === 'error' && errors.length < CGID_START_ERROR_LINES) errors.push(record.message);
      if (this.#options.daemonLog) this.#options.daemonLog.emit(record);
      else this.#options.log(record.message, record.level);
    });
    return errors;
  }

  /** Connects to the daemon that said ready, unless another replaced it meanwhile; a lost connection restarts it. */
  async #connect(child: ChildProcess): Promise<void> {
    const connection = await CgidConnection.connect(this.#options.socketPath, this.#token);
    if (this.#child !== child) {
      connection.close('daemon replaced');
      return;
    }
    this.#connection = connection;
    if (this.#options.spawnAnswerTimeoutMs !== undefined) connection.answerTimeoutMs = this.#options.spawnAnswerTimeoutMs;
    connection.once('close', (reason: string, pids: number[]) => {
      if (this.#connection === connection) this.#connection = null;
      // Scripts whose daemon is gone are killed: no one would reap them, time them out or stop them.
      for (const pid of pids) killGroup(pid);
      if (!this.#stopping) {
        this.#options.log(
          `cgid: lost the daemon connection (${reason}); ${pids.length} running script(s) killed; restarting the daemon`,
          'error',
        );
        if (this.#child === child && child.exitCode === null && child.signalCode === null) signalDaemon(child, 'SIGKILL');
      }
    });
  }

  #onDaemonExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.#child !== child) return;
    this.#connection?.close(`the daemon (pid ${child.pid}) exited`);
    this.#connection = null;
    if (this.#stopping) return;
    const ranFor = Date.now() - this.#startedAt;
    if (ranFor >= CGID_RESTART_HEALTHY_MS) this.#restartDelay = CGID_RESTART_MIN_DELAY_MS;
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(this.#restartDelay * 2, CGID_RESTART_MAX_DELAY_MS);
    this.#options.log(
      `cgid: daemon pid ${child.pid} exited (${signal ?? `status ${code}`}) after ${ranFor} ms; starting a new one in ${delay} ms (CGI requests meanwhile get 503)`,
    );
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#stopping) return;
      this.#startDaemon().then(
        () => this.#options.log(`cgid: daemon restarted (pid ${this.#child?.pid})`, 'info'),
        (error: unknown) => this.#options.log(`cgid: restarting the daemon failed: ${(error as Error).message}`, 'error'),
      );
    }, delay);
  }

  spawn(request: SpawnRequest): Promise<SpawnedScript> {
    return spawnThroughDaemon(this.#connection, request, { limits: this.#limits, policy: this.#options.policy, log: this.#options.log });
  }

  /** Stops the daemon (it terminates its scripts) and stops restarting it. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    this.#connection?.close('front stopping');
    this.#connection = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // 'close' comes once its stderr is read to the end: the daemon's last records reach the log before it closes.
    const drained = new Promise((resolve) => child.once('close', resolve));
    // A daemon that kept root (suexec routes) cannot be signalled by a front that dropped root: closing its lifeline
    // stops it the same way (it terminates its scripts and exits).
    const signalled = signalDaemon(child, 'SIGTERM');
    (child.stdio[3] as unknown as { destroy(): void } | null)?.destroy();
    const timer = setTimeout(() => signalDaemon(child, 'SIGKILL'), CGID_START_TIMEOUT_MS);
    if (signalled) await exited;
    else await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, CGID_START_TIMEOUT_MS).unref())]);
    clearTimeout(timer);
    let drainTimer: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise((resolve) => (drainTimer = setTimeout(resolve, LOG_DRAIN_TIMEOUT_MS)))]);
    clearTimeout(drainTimer);
  }
}

/** True once the daemon writes its ready line; false if it exits (or cannot be started) first. */
function daemonReady(child: ChildProcess): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('ready')) resolve(true);
    });
    child.once('exit', () => resolve(false));
    child.once('error', () => resolve(false));
  });
}

/** Signals the daemon; false when it is gone or this process may not (EPERM: it kept root, the front did not). */
function signalDaemon(child: ChildProcess, signal: NodeJS.Signals): boolean {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return false;
  try {
    process.kill(child.pid, signal);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group is gone */
  }
}

/**
 * What every pool shares: the workers' environment, the respawn back-off
 * and its tally, the start-up check, and the status record.
 */
import { KFCGI_RESPAWN_HEALTHY_MS, KFCGI_RESPAWN_MAX_DELAY_MS, KFCGI_RESPAWN_MIN_DELAY_MS } from '../limits.js';
import type { WorkerExit } from './worker-process.js';

/** Variables of the manager's own that workers must not inherit. */
const MANAGER_ONLY_VARIABLES = ['GATEHOUSE_KFCGI_DAEMON_FD', 'FCGI_LISTENSOCK_DESCRIPTORS', 'FCGI_WEB_SERVER_ADDRS'];

/** A start-up failure: the worker exited on its own with an error, a signal, or could not be started. */
export function failedExit(exit: WorkerExit): boolean {
  return exit.error !== undefined || exit.signal !== null || exit.code !== 0;
}

/** The workers' environment: the manager's, minus its own variables, plus FCGI_WEB_SERVER_ADDRS when set. */
export function workerEnvironment(base: NodeJS.ProcessEnv, webServerAddrs: string | null): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const name of MANAGER_ONLY_VARIABLES) delete env[name];
  if (webServerAddrs !== null) env.FCGI_WEB_SERVER_ADDRS = webServerAddrs;
  return env;
}

/**
 * Respawn back-off: a worker that ran for a while is restarted almost at
 * once; one that keeps dying quickly waits twice as long each time, up to a
 * ceiling, so that a broken program cannot spin the machine.
 */
export class Backoff {
  #delay = 0;
  next(exit: WorkerExit): number {
    // A clean exit after some work (php-cgi leaves after PHP_FCGI_MAX_REQUESTS) is no failure: replace it at once.
    const clean = exit.code === 0 && exit.ranMs >= KFCGI_RESPAWN_MIN_DELAY_MS;
    if (clean || exit.ranMs >= KFCGI_RESPAWN_HEALTHY_MS) this.#delay = KFCGI_RESPAWN_MIN_DELAY_MS;
    else this.#delay = this.#delay === 0 ? KFCGI_RESPAWN_MIN_DELAY_MS : Math.min(this.#delay * 2, KFCGI_RESPAWN_MAX_DELAY_MS);
    return this.#delay;
  }
}

/** How the manager sees a worker; the manual (STATUS) says how each is known. */
export type WorkerState = 'starting' | 'idle' | 'busy';

/** One worker in the status. */
export interface WorkerStatus {
  pid: number;
  /** null when it cannot be told (no /proc). */
  state: WorkerState | null;
  startedAt: string;
  /** CPU seconds of the worker's process tree, children it reaped included; null without /proc. */
  cpuSeconds: number | null;
  /** Resident memory of the worker's process tree; null without /proc. */
  rssBytes: number | null;
  /** Connections it holds: seen by the kernel (fixed, dynamic), or handed over and not yet returned (variable). */
  connections: number | null;
  /** Variable pool: connections handed to it so far. */
  handed?: number;
}

/** Pool status, as the status socket and `gatehouse kfcgi status` report it (fields documented in the manual). */
export interface PoolStatus {
  pid: number;
  mode: 'fixed' | 'variable' | 'dynamic';
  listen: string;
  startedAt: string;
  workers: number;
  minWorkers: number;
  maxWorkers: number;
  /** Workers serving a connection; null when unknown (no /proc). */
  busy: number | null;
  idle: number | null;
  /** Workers started and not yet seen waiting for a connection. */
  starting: number | null;
  pids: number[];
  /** Connections the manager accepted (variable pool); null in fixed and dynamic pools, where workers accept. */
  accepted: number | null;
  /** Connections handed to workers (variable pool). */
  handedOver: number | null;
  /** Connections that found every worker busy at -N (variable pool). */
  poolFull: number | null;
  /** Times the pool was at its largest size with connections waiting (episodes, counted once each). */
  maxReached: number;
  /** Accepted connections waiting for a free worker (variable pool). */
  queued: number | null;
  /** Workers started again after an unexpected exit. */
  respawns: number;
  /** The unexpected exits respawns answered, by cause: "exit N", "signal NAME", "spawn error". */
  respawnCauses: Record<string, number>;
  /** SIGHUP restarts done. */
  restarts: number;
  /** Workers replaced after -R connections. */
  recycled: number;
  /** Workers released after -w seconds idle (variable and dynamic pools). */
  released: number;
  /** The listen queue: the backlog asked for, connections waiting now, the kernel's limit, the most seen waiting. */
  backlog: { configured: number; queued: number | null; limit: number | null; maxQueued: number | null };
  processes: WorkerStatus[];
}

/** The cause of an unexpected exit, as respawnCauses counts it. */
export function exitCause(exit: WorkerExit): string {
  if (exit.error) return 'spawn error';
  if (exit.signal) return `signal ${exit.signal}`;
  return `exit ${exit.code}`;
}

/** Counts respawns by the cause of the exit each one answers. */
export class RespawnTally {
  readonly #causes = new Map<string, number>();
  #total = 0;
  record(exit: WorkerExit): void {
    const cause = exitCause(exit);
    this.#causes.set(cause, (this.#causes.get(cause) ?? 0) + 1);
    this.#total += 1;
  }
  get total(): number {
    return this.#total;
  }
  causes(): Record<string, number> {
    return Object.fromEntries(this.#causes);
  }
}

export interface Pool {
  /** Starts the first workers; rejects when all of them exit at once (the start-up check). */
  start(): Promise<void>;
  /** SIGHUP: replace every worker without refusing a connection. */
  restart(): Promise<void>;
  /** SIGTERM: stop every worker (SIGTERM, then SIGKILL after a grace period). */
  stop(): Promise<void>;
  status(): PoolStatus;
}

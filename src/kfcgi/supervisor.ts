/**
 * What every pool shares: the workers' environment, the respawn back-off
 * and its tally, the start-up check, and the status record's interface (the
 * record itself, PoolStatus, is part of the status document: src/metrics/status.ts).
 */
import { KFCGI_RESPAWN_HEALTHY_MS, KFCGI_RESPAWN_MAX_DELAY_MS, KFCGI_RESPAWN_MIN_DELAY_MS } from '../limits.js';
import type { PoolStatus } from '../metrics/status.js';
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

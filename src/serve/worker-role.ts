/**
 * The worker's side of `gatehouse serve --workers N`: a worker is
 * `gatehouse serve` with the same arguments, started by the supervisor
 * (src/serve/workers.ts) with GATEHOUSE_SERVE_WORKER in its environment. It
 * serves exactly as a single front does, with three differences:
 *
 * - it listens on the sockets the supervisor made (inherited descriptors,
 *   fd:4 and up, already listening): every worker accepts on them itself;
 * - it starts scripts through the supervisor's cgid daemon (one daemon, one
 *   ScriptSock), or itself with cgi-spawn = in-process or fork;
 * - it runs its share of max-scripts and max-queued-scripts, so that all
 *   workers together run and queue no more than one front would.
 *
 * It tells the supervisor when it listens, over the IPC channel; when that
 * channel closes (the supervisor died, even by SIGKILL) it stops gracefully.
 * With `metrics`, it opens no listener of its own: it answers the
 * supervisor's questions on the same channel with its registry and status
 * rows, which the supervisor adds up (src/metrics/workers.ts).
 */
import type { ServeConfig } from '../config/schema.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { NO_LIMITS } from '../spawn/order.js';
import { startFrontSpawner, type FrontSpawner } from './front-spawner.js';
import type { ListenAddress } from '../options/listen-address.js';
import { formatListenAddress } from '../options/listen-address.js';
import type { Logger } from '../log/index.js';
import type { Account } from '../sys/index.js';
import type { WorkerReport } from '../metrics/workers.js';
import { CgidAttachment } from './cgid-attachment.js';

/** The environment variable that makes `gatehouse serve` a worker; its value is a WorkerAssignment as JSON. */
export const SERVE_WORKER_VARIABLE = 'GATEHOUSE_SERVE_WORKER';

/** What the supervisor gives a worker. */
export interface WorkerAssignment {
  /** 0..count-1: which share of the script limits is this worker's (a restarted worker keeps its slot). */
  slot: number;
  count: number;
  /** The inherited listening sockets, in the order of the configured listen addresses (fd:4, fd:5, ...). */
  listen: string[];
  /** The supervisor's cgid daemon, when scripts start through it. */
  cgid?: { socketPath: string; token: string };
}

/** Messages a worker sends the supervisor: it listens; its numbers for scrape `id` (null: it has no metrics). */
export type WorkerMessage =
  | { type: 'listening'; addresses: string[] }
  | { type: 'metrics'; id: number; report: WorkerReport | null; error?: string };

/** Messages the supervisor sends a worker: a scrape wants its numbers. */
export type SupervisorMessage = { type: 'metrics'; id: number };

/** Share `slot` of `total` among `count`: the shares differ by at most one and add up to `total`. */
export function shareOf(total: number, slot: number, count: number): number {
  return Math.floor(total / count) + (slot < total % count ? 1 : 0);
}

export class ServeWorkerRole {
  readonly assignment: WorkerAssignment;
  #log: Logger | null = null;

  constructor(assignment: WorkerAssignment) {
    this.assignment = assignment;
  }

  /** This worker's configuration: the inherited sockets, its share of the script limits. Reloads go through here too. */
  configure(config: ServeConfig): ServeConfig {
    const { slot, count, listen } = this.assignment;
    return {
      ...config,
      listen,
      maxScripts: shareOf(config.maxScripts, slot, count),
      maxQueuedScripts: shareOf(config.maxQueuedScripts, slot, count),
    };
  }

  /** How this worker starts scripts: through the supervisor's daemon, or itself (in-process, fork). */
  async startScripts(config: ServeConfig, logger: Logger, account: Account | null): Promise<FrontSpawner> {
    this.#log = logger;
    const settings = frontSpawnSettings(config, account);
    const { cgid } = this.assignment;
    if (!cgid) return startFrontSpawner(settings, logger.line, logger);
    const policy = { limits: { ...NO_LIMITS, ...settings.limits }, ...(settings.suexec ? { suexec: settings.suexec } : {}) };
    const attachment = new CgidAttachment({ socketPath: cgid.socketPath, token: Buffer.from(cgid.token, 'hex') }, policy, logger.line);
    await attachment.start();
    return {
      spawner: attachment,
      description: `supervisor's cgid daemon (pid ${attachment.daemonPid}) on ${cgid.socketPath}`,
      stop: () => attachment.stop(),
      supervisor: null,
    };
  }

  /** Tells the supervisor this worker accepts connections now. */
  listening(addresses: ListenAddress[]): void {
    const message: WorkerMessage = { type: 'listening', addresses: addresses.map(formatListenAddress) };
    process.send?.(message);
  }

  /**
   * Answers the supervisor's scrapes with `report()` until the returned
   * function is called (at stop). The channel stays unreferenced: listening
   * on it keeps no stopped worker alive.
   */
  answerMetrics(report: () => Promise<WorkerReport>): () => void {
    const onMessage = (message: SupervisorMessage) => {
      if (message?.type !== 'metrics' || typeof message.id !== 'number') return;
      const { id } = message;
      const reply = (answer: WorkerMessage) => {
        // The channel closes when the supervisor is gone: this worker is stopping then, nothing to tell.
        if (process.connected) process.send?.(answer, undefined, undefined, () => {});
      };
      report().then(
        (found) => reply({ type: 'metrics', id, report: found }),
        (error: unknown) => {
          this.#log?.error(`metrics: reading this worker's numbers for the supervisor: ${(error as Error).message}`);
          reply({ type: 'metrics', id, report: null, error: (error as Error).message });
        },
      );
    };
    process.on('message', onMessage);
    process.channel?.unref();
    return () => process.off('message', onMessage);
  }

  /** The error log, once open (for the SIGHUP note). */
  get log(): Logger | null {
    return this.#log;
  }
}

/**
 * The role when this process was started as a worker, else null. Read once:
 * the variable is removed so that nothing this process starts inherits it.
 * Installs the worker's signal set-up at once, before anything can arrive:
 * the supervisor's IPC channel closing stops the worker as SIGTERM does, and
 * SIGHUP (passed on by the supervisor) never kills it.
 */
export function takeServeWorkerRole(): ServeWorkerRole | null {
  const text = process.env[SERVE_WORKER_VARIABLE];
  if (text === undefined) return null;
  delete process.env[SERVE_WORKER_VARIABLE];
  // Only a process the supervisor started has its IPC channel; anything else serves as a single front.
  let assignment: WorkerAssignment;
  try {
    assignment = JSON.parse(text) as WorkerAssignment;
  } catch {
    assignment = { slot: -1, count: 0, listen: [] };
  }
  if (!process.send || !Array.isArray(assignment.listen) || !(assignment.slot >= 0 && assignment.slot < assignment.count)) {
    process.stderr.write(`gatehouse serve: ignoring ${SERVE_WORKER_VARIABLE}: this process was not started by serve --workers\n`);
    return null;
  }
  const role = new ServeWorkerRole(assignment);
  // The channel must not keep a stopped worker alive, and its end means the supervisor is gone.
  process.channel?.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
  // SIGHUP's default action ends a process: until serve's own handler (the reload) is installed, or in a
  // serve without one, this listener alone answers it, and the worker keeps serving.
  const onHangup = () => {
    if (process.listenerCount('SIGHUP') > 1) return;
    const line = 'SIGHUP: this version of serve does not reload its configuration; restart gatehouse serve to apply changes';
    if (role.log) role.log.warn(line);
    else process.stderr.write(`${line}\n`);
  };
  process.on('SIGHUP', onHangup);
  return role;
}

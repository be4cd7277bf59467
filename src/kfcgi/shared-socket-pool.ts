/**
 * The fixed pool (the FastCGI specification's own model): every worker gets
 * the listening socket as fd 0 (FCGI_LISTENSOCK_FILENO) and accepts on it
 * itself, so the manager is out of the data path. The manager keeps its copy
 * of the socket (never accepting on it) to hand to replacements.
 *
 * Beyond kfcgi: a worker that exits is started again (with back-off) instead
 * of taking the pool down; SIGHUP replaces workers one at a time, each only
 * while it is between connections, so a restart under load loses nothing.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { KFCGI_RESTART_IDLE_WAIT_MS, KFCGI_RESTART_POLL_MS, KFCGI_STARTUP_CHECK_MS } from '../limits.js';
import { tcpListenQueue } from '../sys/index.js';
import type { Listener } from './listener.js';
import type { Logger } from './log.js';
import { Backoff, failedExit, type Pool, type PoolStatus } from './supervisor.js';
import { type ProcView, WorkerProcess, describeExit } from './worker-process.js';

export interface FixedPoolOptions {
  workers: number;
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

interface Slot {
  index: number;
  worker: WorkerProcess | null;
  backoff: Backoff;
  respawnTimer: NodeJS.Timeout | null;
}

export class FixedPool implements Pool {
  readonly #options: FixedPoolOptions;
  readonly #listener: Listener;
  readonly #log: Logger;
  readonly #proc: ProcView;
  readonly #slots: Slot[];
  readonly #startedAt = new Date();
  /** Old workers a restart is waiting to stop (stopped too if kfcgi stops meanwhile). */
  readonly #retiring = new Set<WorkerProcess>();
  #stopping = false;
  #respawns = 0;
  #restarts = 0;

  constructor(options: FixedPoolOptions, listener: Listener, log: Logger, proc: ProcView) {
    this.#options = options;
    this.#listener = listener;
    this.#log = log;
    this.#proc = proc;
    this.#slots = Array.from({ length: options.workers }, (_, index) => ({
      index,
      worker: null,
      backoff: new Backoff(),
      respawnTimer: null,
    }));
  }

  async start(): Promise<void> {
    this.#log.info(
      `fixed pool: starting ${this.#options.workers} worker(s) of ${this.#options.program} on ${this.#listener.describe()} (backlog ${this.#listener.backlog})`,
    );
    const first = this.#slots.map((slot) => this.#spawn(slot));
    const exits = first.map((worker) => worker.exited);
    // Only failures count: a worker may also leave cleanly after serving its share (php-cgi's PHP_FCGI_MAX_REQUESTS).
    const allFailed = Promise.all(exits).then((all) => all.every(failedExit));
    const settled = await Promise.race([allFailed, sleep(KFCGI_STARTUP_CHECK_MS).then(() => false)]);
    if (settled) {
      const how = describeExit(await exits[0]!);
      throw new Error(
        `every worker exited within ${KFCGI_STARTUP_CHECK_MS} ms of starting (first: ${how}); check that ${this.#options.program} is a FastCGI program that accepts on fd 0, and its output in the log`,
      );
    }
  }

  #spawn(slot: Slot): WorkerProcess {
    const worker = new WorkerProcess(
      { program: this.#options.program, args: this.#options.args, env: this.#options.env, stdin: this.#listener.fd },
      this.#log,
    );
    slot.worker = worker;
    this.#proc.recordGivenSockets(worker);
    this.#log.info(`worker ${worker.pid}: started (slot ${slot.index})`);
    void worker.exited.then((exit) => {
      const why = worker.stopReason ? ` (${worker.stopReason})` : '';
      const level = worker.stopReason ? 'info' : 'warning';
      this.#log[level](`worker ${worker.pid}: ${describeExit(exit)} after ${exit.ranMs} ms${why}`);
      if (slot.worker !== worker || this.#stopping) return;
      slot.worker = null;
      const delay = slot.backoff.next(exit);
      this.#log.notice(`worker ${worker.pid} exited unexpectedly; starting a replacement in ${delay} ms`);
      slot.respawnTimer = setTimeout(() => {
        slot.respawnTimer = null;
        if (this.#stopping || slot.worker) return;
        this.#respawns += 1;
        this.#spawn(slot);
      }, delay);
    });
    return worker;
  }

  async restart(): Promise<void> {
    this.#restarts += 1;
    this.#log.notice(`SIGHUP: restarting ${this.#slots.length} worker(s) one at a time`);
    for (const slot of this.#slots) {
      if (this.#stopping) return;
      if (!slot.worker && !slot.respawnTimer) continue;
      const old = slot.worker;
      if (slot.respawnTimer) {
        clearTimeout(slot.respawnTimer);
        slot.respawnTimer = null;
      }
      // The replacement starts first, so the pool never runs short while the old one finishes.
      const replacement = this.#spawn(slot);
      if (old?.running) await this.#retireWhenIdle(old, 'restart (SIGHUP)');
      this.#log.info(`slot ${slot.index}: worker ${old?.pid ?? '-'} replaced by ${replacement.pid}`);
    }
    this.#log.notice('SIGHUP: restart done');
  }

  /** Stops `worker` once it is frozen between connections (or after a bounded wait, when it never is). */
  async #retireWhenIdle(worker: WorkerProcess, reason: string): Promise<void> {
    this.#retiring.add(worker);
    try {
      await this.#waitIdleThenStop(worker, reason);
    } finally {
      this.#retiring.delete(worker);
    }
  }

  async #waitIdleThenStop(worker: WorkerProcess, reason: string): Promise<void> {
    const deadline = Date.now() + KFCGI_RESTART_IDLE_WAIT_MS;
    if (this.#proc.available) {
      while (worker.running && !this.#stopping && Date.now() < deadline) {
        if (await this.#proc.freezeIfIdle(worker)) break;
        await sleep(KFCGI_RESTART_POLL_MS);
      }
      if (worker.running && Date.now() >= deadline)
        this.#log.warning(`worker ${worker.pid}: still busy after ${KFCGI_RESTART_IDLE_WAIT_MS} ms; stopping it anyway`);
    }
    await worker.stop(reason);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    for (const slot of this.#slots) if (slot.respawnTimer) clearTimeout(slot.respawnTimer);
    const workers = [...this.#slots.map((slot) => slot.worker), ...this.#retiring].filter(
      (worker): worker is WorkerProcess => worker !== null,
    );
    await Promise.all(workers.map((worker) => worker.stop('kfcgi stopping')));
  }

  status(): PoolStatus {
    const workers = this.#slots.map((slot) => slot.worker).filter((worker): worker is WorkerProcess => worker?.running === true);
    let busy: number | null = null;
    if (this.#proc.available) {
      busy = 0;
      for (const worker of workers) if (!this.#proc.isIdle(worker)) busy += 1;
    }
    const queue = this.#listener.address.kind === 'tcp' ? tcpListenQueue(this.#listener.fd) : null;
    return {
      pid: process.pid,
      mode: 'fixed',
      listen: this.#listener.describe(),
      startedAt: this.#startedAt.toISOString(),
      workers: workers.length,
      minWorkers: this.#options.workers,
      maxWorkers: this.#options.workers,
      busy,
      idle: busy === null ? null : workers.length - busy,
      pids: workers.map((worker) => worker.pid),
      accepted: null,
      poolFull: null,
      queued: null,
      respawns: this.#respawns,
      restarts: this.#restarts,
      recycled: 0,
      backlog: { configured: this.#listener.backlog, queued: queue?.queued ?? null, limit: queue?.limit ?? null },
    };
  }
}

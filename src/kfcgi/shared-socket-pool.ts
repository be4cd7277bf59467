/**
 * Fixed and dynamic pools: every worker gets the listening socket as fd 0
 * (FCGI_LISTENSOCK_FILENO, the FastCGI specification's own model) and
 * accepts on it itself, so the manager is out of the data path and any
 * FastCGI program runs unchanged. The manager keeps its copy of the socket
 * (never accepting on it) to hand to new workers, and reads its listen
 * queue from the kernel (SocketView).
 *
 * A fixed pool keeps -n workers. A dynamic pool (-D) starts -n and grows up
 * to -N while connections wait in the listen queue (a waiting connection
 * means every worker is busy: an idle one would be blocked in accept() and
 * take it), within a spawn-rate budget; it releases workers whose process
 * tree used no CPU for -w seconds, down to -n, and only while they hold no
 * connection (frozen with SIGSTOP while that is checked, so none arrives
 * meanwhile), with SIGTERM and then SIGKILL after the grace period.
 *
 * Beyond kfcgi: a worker that exits is started again (with back-off) instead
 * of taking the pool down; SIGHUP replaces workers one at a time, each only
 * while it is between connections, so a restart under load loses nothing.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  KFCGI_DYNAMIC_SPAWN_BURST,
  KFCGI_DYNAMIC_SPAWN_RATE,
  KFCGI_IDLE_SWEEP_MS,
  KFCGI_QUEUE_POLL_MS,
  KFCGI_RESTART_IDLE_WAIT_MS,
  KFCGI_RESTART_POLL_MS,
  KFCGI_STARTUP_CHECK_MS,
} from '../limits.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { SpawnBudget, idleToRelease, plannedGrowth } from './dynamic-sizing.js';
import type { Listener } from './listener.js';
import type { Logger } from './log.js';
import type { ProcView } from '../sys/index.js';
import type { SocketView } from './socket-view.js';
import type { PoolStatus, WorkerState, WorkerStatus } from '../metrics/status.js';
import { Backoff, RespawnTally, failedExit, type Pool } from './supervisor.js';
import { WorkerProcess, describeExit, type WorkerExit } from './worker-process.js';

export interface SharedSocketPoolOptions {
  /** -n: workers started; the floor of a dynamic pool. */
  workers: number;
  /** -N in a dynamic pool; equal to `workers` in a fixed one. */
  maxWorkers: number;
  /** -D: grow and shrink between `workers` and `maxWorkers`. */
  dynamic: boolean;
  /** -w: seconds without CPU after which a dynamic pool releases a worker above the floor. */
  idleSeconds: number;
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

interface PoolWorker {
  process: WorkerProcess;
  /** Seen asleep (waiting for a connection) or serving one since it started: no longer "starting". */
  ready: boolean;
  /** Why it is on its way out (released, replaced by a restart); it no longer counts in the pool's size. */
  leaving: string | null;
  /** Frozen while the manager checks whether it holds a connection, before a release. */
  checking: boolean;
  /** The CPU use of its process tree when last read, and when that last changed. */
  cpuSignature: string | null;
  cpuChangedAt: number;
}

export class SharedSocketPool implements Pool {
  readonly #options: SharedSocketPoolOptions;
  readonly #listener: Listener;
  readonly #log: Logger;
  readonly #proc: ProcView;
  readonly #socket: SocketView;
  /** Oldest first (a Set iterates in insertion order). */
  readonly #workers = new Set<PoolWorker>();
  readonly #startedAt = new Date();
  readonly #backoff = new Backoff();
  readonly #respawns = new RespawnTally();
  /** Unexpected exits that left the pool below -n, waiting for the respawn timer. */
  readonly #toRespawn: WorkerExit[] = [];
  readonly #budget = new SpawnBudget(KFCGI_DYNAMIC_SPAWN_RATE, KFCGI_DYNAMIC_SPAWN_BURST, Date.now());
  #respawnTimer: NodeJS.Timeout | null = null;
  #pollTimer: NodeJS.Timeout | null = null;
  #sweepTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  #restarts = 0;
  #released = 0;
  #maxReached = 0;
  #atMax = false;
  #maxQueued: number | null = null;
  #growthPausedUntil = 0;

  constructor(options: SharedSocketPoolOptions, listener: Listener, log: Logger, proc: ProcView, socket: SocketView) {
    this.#options = options;
    this.#listener = listener;
    this.#log = log;
    this.#proc = proc;
    this.#socket = socket;
  }

  get #mode(): 'fixed' | 'dynamic' {
    return this.#options.dynamic ? 'dynamic' : 'fixed';
  }

  async start(): Promise<void> {
    const { workers, maxWorkers, idleSeconds, program } = this.#options;
    const size = this.#options.dynamic
      ? `${workers} to ${maxWorkers} worker(s), idle release after ${idleSeconds} s`
      : `${workers} worker(s)`;
    this.#log.info(
      `${this.#mode} pool: ${size} of ${program} on ${this.#listener.describe()} (backlog ${this.#listener.backlog}; ${this.#socket.describe()})`,
    );
    const first = Array.from({ length: workers }, () => this.#spawn());
    const exits = first.map((worker) => worker.process.exited);
    // Only failures count: a worker may also leave cleanly after serving its share (php-cgi's PHP_FCGI_MAX_REQUESTS).
    const allFailed = Promise.all(exits).then((all) => all.every(failedExit));
    const settled = await Promise.race([allFailed, sleep(KFCGI_STARTUP_CHECK_MS).then(() => false)]);
    if (settled) {
      const how = describeExit(await exits[0]!);
      throw new GatehouseError(
        ErrorCode.KFCGI_SETUP,
        `every worker exited within ${KFCGI_STARTUP_CHECK_MS} ms of starting (first: ${how}); check that ${program} is a FastCGI program that accepts on fd 0, and its output in the log`,
      );
    }
    if (this.#stopping) return;
    this.#pollTimer = setInterval(() => this.#poll(), KFCGI_QUEUE_POLL_MS);
    if (this.#options.dynamic) this.#sweepTimer = setInterval(() => this.#sweep(), KFCGI_IDLE_SWEEP_MS);
  }

  /** Workers that take connections (not on their way out). */
  #active(): PoolWorker[] {
    return [...this.#workers].filter((worker) => worker.leaving === null);
  }

  #spawn(): PoolWorker {
    const process = new WorkerProcess(
      { program: this.#options.program, args: this.#options.args, env: this.#options.env, stdin: this.#listener.fd },
      this.#log,
    );
    const worker: PoolWorker = { process, ready: false, leaving: null, checking: false, cpuSignature: null, cpuChangedAt: Date.now() };
    this.#workers.add(worker);
    this.#socket.recordGivenSockets(process);
    this.#log.info(`worker ${process.pid}: started (${this.#active().length} worker(s))`);
    void process.exited.then((exit) => this.#onExit(worker, exit));
    return worker;
  }

  /** #spawn from a timer: a failure (out of descriptors, of processes) is logged, and the next timer tries again. */
  #trySpawn(what: string): PoolWorker | null {
    try {
      return this.#spawn();
    } catch (error) {
      this.#log.error(`cannot start ${what}: ${(error as Error).message}`);
      return null;
    }
  }

  #onExit(worker: PoolWorker, exit: WorkerExit): void {
    this.#workers.delete(worker);
    const { process } = worker;
    const why = process.stopReason ? ` (${process.stopReason})` : '';
    this.#log[process.stopReason ? 'info' : 'warning'](`worker ${process.pid}: ${describeExit(exit)} after ${exit.ranMs} ms${why}`);
    if (this.#stopping || process.stopReason !== null) return;
    const delay = this.#backoff.next(exit);
    // A program that keeps dying must not be started again and again for the queue either: growth waits as a respawn does.
    this.#growthPausedUntil = Date.now() + delay;
    if (this.#active().length >= this.#options.workers) return;
    this.#toRespawn.push(exit);
    if (this.#respawnTimer) return;
    this.#log.notice(`worker ${process.pid} exited unexpectedly; starting a replacement in ${delay} ms`);
    this.#scheduleRespawn(delay);
  }

  /** Brings the pool back to -n after `delay`; tries again later (with back-off) if a start fails. */
  #scheduleRespawn(delay: number): void {
    this.#respawnTimer = setTimeout(() => {
      this.#respawnTimer = null;
      if (this.#stopping) return;
      while (this.#active().length < this.#options.workers) {
        const replacement = this.#trySpawn('a replacement');
        if (!replacement) {
          this.#scheduleRespawn(this.#backoff.next({ code: null, signal: null, ranMs: 0 }));
          return;
        }
        const cause = this.#toRespawn.shift();
        if (cause) this.#respawns.record(cause);
      }
      this.#toRespawn.length = 0;
    }, delay);
  }

  /**
   * Every KFCGI_QUEUE_POLL_MS: the listen queue, workers that finished
   * starting, and (dynamic pools) growth. A fixed pool is always at its
   * largest, so connections waiting there count as a max-reached event.
   */
  #poll(): void {
    if (this.#stopping) return;
    for (const worker of this.#workers) if (!worker.ready && this.#proc.state(worker.process.pid) === 'S') worker.ready = true;
    const queue = this.#socket.queue();
    if (queue === null) return;
    this.#maxQueued = Math.max(this.#maxQueued ?? 0, queue.queued);
    const active = this.#active();
    let atMax = queue.queued > 0;
    if (this.#options.dynamic) {
      const now = Date.now();
      const growth = plannedGrowth({
        queued: queue.queued,
        starting: active.filter((worker) => !worker.ready).length,
        active: active.length,
        max: this.#options.maxWorkers,
        budget: now < this.#growthPausedUntil ? 0 : this.#budget.available(now),
      });
      atMax = growth.atMax;
      if (growth.start > 0) {
        this.#budget.take(growth.start, now);
        this.#log.debug(`${queue.queued} connection(s) waiting: starting ${growth.start} more worker(s)`);
        for (let count = 0; count < growth.start; count += 1) if (!this.#trySpawn('a worker for waiting connections')) break;
      }
    }
    if (atMax && !this.#atMax) {
      this.#maxReached += 1;
      this.#log[this.#maxReached === 1 ? 'notice' : 'debug'](
        `pool at its largest (${this.#options.maxWorkers} worker(s)) with ${queue.queued} connection(s) waiting${this.#maxReached === 1 ? '; the status socket counts each time (maxReached)' : ''}`,
      );
    }
    this.#atMax = atMax;
  }

  /** Dynamic pools, every KFCGI_IDLE_SWEEP_MS: CPU of each worker's tree, and release of those idle for -w seconds. */
  #sweep(): void {
    if (this.#stopping) return;
    const now = Date.now();
    const candidates = [];
    for (const worker of this.#active()) {
      const usage = this.#proc.usage(worker.process.pid);
      if (usage && usage.cpuSignature !== worker.cpuSignature) {
        worker.cpuSignature = usage.cpuSignature;
        worker.cpuChangedAt = now;
      }
      if (worker.ready && !worker.checking) candidates.push({ worker, cpuChangedAt: worker.cpuChangedAt });
    }
    const idleMs = this.#options.idleSeconds * 1000;
    for (const worker of idleToRelease(candidates, this.#active().length, this.#options.workers, idleMs, now))
      void this.#release(worker, `no CPU used for ${this.#options.idleSeconds} s`);
  }

  /** Stops an idle worker: only once it is frozen holding no connection; one that is busy stays for another -w. */
  async #release(worker: PoolWorker, reason: string): Promise<void> {
    worker.checking = true;
    const idle = await this.#socket.freezeIfIdle(worker.process);
    worker.checking = false;
    // A restart or a stop may have taken it meanwhile; the pool may have fallen to -n (a worker died).
    if (worker.leaving !== null || this.#stopping || !worker.process.running) return;
    if (!idle || this.#active().length <= this.#options.workers) {
      if (idle) worker.process.signal('SIGCONT');
      worker.cpuChangedAt = Date.now();
      if (!idle)
        this.#log.debug(`worker ${worker.process.pid}: used no CPU for ${this.#options.idleSeconds} s but holds a connection; kept`);
      return;
    }
    worker.leaving = reason;
    this.#released += 1;
    this.#log.info(`worker ${worker.process.pid}: releasing (${reason})`);
    await worker.process.stop(reason);
  }

  async restart(): Promise<void> {
    this.#restarts += 1;
    const old = this.#active();
    this.#log.notice(`SIGHUP: restarting ${old.length} worker(s) one at a time`);
    for (const worker of old) {
      if (this.#stopping) return;
      if (worker.leaving !== null || !worker.process.running) continue;
      // The replacement starts first, so the pool never runs short while the old one finishes.
      const replacement = this.#trySpawn(`a replacement for worker ${worker.process.pid}`);
      if (!replacement) continue;
      worker.leaving = 'restart (SIGHUP)';
      await this.#retireWhenIdle(worker.process, 'restart (SIGHUP)');
      this.#log.info(`worker ${worker.process.pid} replaced by ${replacement.process.pid}`);
    }
    this.#log.notice('SIGHUP: restart done');
  }

  /** Stops `worker` once it is frozen between connections (or after a bounded wait, when it never is). */
  async #retireWhenIdle(worker: WorkerProcess, reason: string): Promise<void> {
    const deadline = Date.now() + KFCGI_RESTART_IDLE_WAIT_MS;
    if (this.#proc.available) {
      while (worker.running && !this.#stopping && Date.now() < deadline) {
        if (await this.#socket.freezeIfIdle(worker)) break;
        await sleep(KFCGI_RESTART_POLL_MS);
      }
      if (worker.running && Date.now() >= deadline)
        this.#log.warning(`worker ${worker.pid}: still busy after ${KFCGI_RESTART_IDLE_WAIT_MS} ms; stopping it anyway`);
    }
    await worker.stop(reason);
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    for (const timer of [this.#pollTimer, this.#sweepTimer]) if (timer) clearInterval(timer);
    if (this.#respawnTimer) clearTimeout(this.#respawnTimer);
    await Promise.all([...this.#workers].map((worker) => worker.process.stop('kfcgi stopping')));
  }

  status(): PoolStatus {
    const workers = this.#active().filter((worker) => worker.process.running);
    const connections = this.#proc.available ? this.#socket.connections() : null;
    const processes = workers.map((worker): WorkerStatus => {
      const { pid } = worker.process;
      const usage = this.#proc.usage(pid);
      const held = this.#proc.available ? this.#socket.connectionsHeld(worker.process, connections) : null;
      if (!worker.ready && (held ?? 0) > 0) worker.ready = true;
      if (!worker.ready && this.#proc.state(pid) === 'S') worker.ready = true;
      let state: WorkerState | null = null;
      if (held !== null) state = held > 0 ? 'busy' : worker.ready ? 'idle' : 'starting';
      return {
        pid,
        state,
        startedAt: new Date(worker.process.startedAt).toISOString(),
        cpuSeconds: usage?.cpuSeconds ?? null,
        rssBytes: usage?.rssBytes ?? null,
        connections: held,
      };
    });
    const count = (state: WorkerState) =>
      processes.some((worker) => worker.state === null) ? null : processes.filter((worker) => worker.state === state).length;
    const queue = this.#socket.queue();
    return {
      pid: process.pid,
      mode: this.#mode,
      listen: this.#listener.describe(),
      startedAt: this.#startedAt.toISOString(),
      workers: workers.length,
      minWorkers: this.#options.workers,
      maxWorkers: this.#options.maxWorkers,
      busy: count('busy'),
      idle: count('idle'),
      starting: count('starting'),
      pids: workers.map((worker) => worker.process.pid),
      accepted: null,
      handedOver: null,
      poolFull: null,
      maxReached: this.#maxReached,
      queued: null,
      respawns: this.#respawns.total,
      respawnCauses: this.#respawns.causes(),
      restarts: this.#restarts,
      recycled: 0,
      released: this.#released,
      backlog: {
        configured: this.#listener.backlog,
        queued: queue?.queued ?? null,
        limit: queue?.limit ?? null,
        maxQueued: this.#maxQueued === null ? null : Math.max(this.#maxQueued, queue?.queued ?? 0),
      },
      processes,
    };
  }
}

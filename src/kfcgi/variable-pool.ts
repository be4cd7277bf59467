/**
 * The variable pool: kcgi's FastCGI Extensions for Management Control.
 *
 * The manager accepts connections itself and hands each accepted descriptor
 * to a free worker over that worker's control socket (a socketpair; the
 * worker's end is named by FCGI_LISTENSOCK_DESCRIPTORS), as one message: a
 * 64-bit random cookie with the descriptor attached (SCM_RIGHTS). The worker
 * serves the connection, closes it, and writes the same 8 cookie bytes back;
 * then it is free again. The manager closes its own copy of a descriptor as
 * soon as it has been passed.
 *
 * The pool starts at -n workers, grows (one per connection that finds no
 * free worker) up to -N, and releases workers idle for -w seconds, never
 * below -n. A connection goes to a worker of the oldest -n first, and to an
 * extra one only when those are full, so the extra ones age out. With -R, a
 * worker is replaced after that many connections.
 *
 * kcgi's workers serve one connection at a time, and so does this pool by
 * default. With -C, a worker that multiplexes (the gatehouse worker library
 * keeps reading its control socket while it serves) is given up to that many
 * connections at once (spread: the least busy worker of the floor first);
 * "every worker busy" then means every worker at -C.
 *
 * Accepting is done with accept4(2) on the listening socket when it is
 * readable (no net.Socket per connection: the manager only passes
 * descriptors on). When all -N workers are busy the manager stops accepting,
 * as kfcgi does, so that connections wait in the kernel's listen queue.
 */
import { randomFillSync } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ErrorCode, GatehouseError } from '../errors.js';
import {
  KFCGI_ACCEPT_BATCH,
  KFCGI_COOKIES_PER_RANDOM_FILL,
  KFCGI_COOKIES_PER_READ,
  KFCGI_IDLE_SWEEP_MS,
  KFCGI_STARTUP_CHECK_MS,
} from '../limits.js';
import { KCGI_COOKIE_BYTES } from '../fastcgi/protocol.js';
import {
  acceptConnection,
  closeDescriptor,
  normalizeAddress,
  receiveDescriptors,
  setNonBlocking,
  sendDescriptors,
  socketPair,
  watchReadable,
  type AcceptedConnection,
  type DescriptorWatcher,
  type ProcView,
} from '../sys/index.js';
import type { Listener } from './listener.js';
import type { Logger } from './log.js';
import type { SocketView } from './socket-view.js';
import type { PoolStatus, WorkerStatus } from '../metrics/status.js';
import { Backoff, RespawnTally, type Pool } from './supervisor.js';
import { WorkerProcess, describeExit } from './worker-process.js';

/** The descriptor number a variable-pool worker finds its control socket at (FCGI_LISTENSOCK_DESCRIPTORS). */
export const CONTROL_FD_IN_WORKER = 3;
/** The cookies of one recvmsg on a worker's control socket. */
const CONTROL_READ_BYTES = KCGI_COOKIE_BYTES * KFCGI_COOKIES_PER_READ;

/** 64 random bits per connection, drawn from a pool refilled in bulk (one getrandom per KFCGI_COOKIES_PER_RANDOM_FILL cookies). */
class CookieSource {
  readonly #pool = Buffer.alloc(KCGI_COOKIE_BYTES * KFCGI_COOKIES_PER_RANDOM_FILL);
  #offset = this.#pool.length;
  next(): Buffer {
    if (this.#offset >= this.#pool.length) {
      randomFillSync(this.#pool);
      this.#offset = 0;
    }
    const cookie = Buffer.from(this.#pool.subarray(this.#offset, this.#offset + KCGI_COOKIE_BYTES));
    this.#offset += KCGI_COOKIE_BYTES;
    return cookie;
  }
}
export interface VariablePoolOptions {
  workers: number;
  maxWorkers: number;
  idleSeconds: number;
  maxRequests: number;
  /** Connections one worker is given at once (-C; kcgi's model is 1). */
  connectionsPerWorker: number;
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** TCP only: peers allowed to connect (FCGI_WEB_SERVER_ADDRS, normalised); null allows all. */
  allowedPeers: Set<string> | null;
}

interface PoolWorker {
  process: WorkerProcess;
  control: number;
  watcher: DescriptorWatcher;
  /** Released: its control socket is closed and it was told to stop. */
  retiring: boolean;
  /** Takes no new connection, and is released once its current ones are done (SIGHUP, -R). */
  draining: string | null;
  /** Cookies (hex) of the connections it is serving. */
  inFlight: Set<string>;
  /** Bytes of a cookie read so far (a stream may split the 8 bytes). */
  partial: Buffer;
  idleSince: number;
  /** Seen asleep (waiting for its control socket) or given a connection since it started: no longer "starting". */
  ready: boolean;
  /** Connections handed over, and finished. */
  handed: number;
  served: number;
}

export class VariablePool implements Pool {
  readonly #options: VariablePoolOptions;
  readonly #listener: Listener;
  readonly #log: Logger;
  readonly #proc: ProcView;
  readonly #socket: SocketView;
  readonly #workers = new Set<PoolWorker>();
  /** Accepted connections whose hand-over failed, waiting for another worker. */
  readonly #queue: AcceptedConnection[] = [];
  readonly #cookies = new CookieSource();
  readonly #backoff = new Backoff();
  readonly #startedAt = new Date();
  #acceptWatcher: DescriptorWatcher | null = null;
  #accepting = false;
  #sweepTimer: NodeJS.Timeout | null = null;
  #respawnTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  #accepted = 0;
  #poolFull = 0;
  readonly #respawns = new RespawnTally();
  #restarts = 0;
  #recycled = 0;
  #released = 0;
  #handedOver = 0;

  constructor(options: VariablePoolOptions, listener: Listener, log: Logger, proc: ProcView, socket: SocketView) {
    this.#options = options;
    this.#listener = listener;
    this.#log = log;
    this.#proc = proc;
    this.#socket = socket;
  }

  async start(): Promise<void> {
    const { workers, maxWorkers, idleSeconds, connectionsPerWorker } = this.#options;
    this.#log.info(
      `variable pool: ${workers} to ${maxWorkers} worker(s) of ${this.#options.program} on ${this.#listener.describe()} (backlog ${this.#listener.backlog}, idle release after ${idleSeconds} s, ${connectionsPerWorker} connection(s) per worker)`,
    );
    const first = Array.from({ length: workers }, () => this.#spawn());
    const exits = first.map((worker) => worker.process.exited);
    // A worker of the extension waits for connections; one that leaves on its own before any (and before the
    // manager accepts: nothing is handed over yet) does not implement it.
    const allLeft = Promise.all(exits).then(() => first.every((worker) => worker.process.stopReason === null));
    const failed = await Promise.race([allLeft, sleep(KFCGI_STARTUP_CHECK_MS).then(() => false)]);
    if (failed) {
      const how = describeExit(await exits[0]!);
      throw new GatehouseError(
        ErrorCode.KFCGI_SETUP,
        `every worker exited within ${KFCGI_STARTUP_CHECK_MS} ms of starting (first: ${how}): ${this.#options.program} does not seem to implement the FastCGI Extensions for Management Control (FCGI_LISTENSOCK_DESCRIPTORS); run it without -r`,
      );
    }
    setNonBlocking(this.#listener.fd, true);
    this.#acceptWatcher = watchReadable(this.#listener.fd, () => this.#acceptReady());
    this.#accepting = true;
    this.#sweepTimer = setInterval(() => this.#releaseIdle(), KFCGI_IDLE_SWEEP_MS);
  }

  /** Workers that take new connections (not released, not draining). */
  #activeCount(): number {
    let count = 0;
    for (const worker of this.#workers) if (!worker.retiring && worker.draining === null) count += 1;
    return count;
  }

  /**
   * The worker to hand a connection to. The oldest -n active workers (the
   * pool's floor, never released) come first: the least busy of them with
   * room, so that with -C above 1 connections spread over every core the
   * floor has (packing them onto one worker left the others idle and cost a
   * third of the throughput on two cores). Workers above the floor get a
   * connection only when the floor is full, so they go idle and age out
   * once the load falls. Among equals, the most recently freed. With -C 1
   * this is the most recently freed idle worker of the floor, then of the
   * extras.
   */
  #pick(): PoolWorker | null {
    let floorLeft = this.#options.workers;
    let best: PoolWorker | null = null;
    let bestIsFloor = false;
    // A Set iterates in insertion order: oldest workers first.
    for (const worker of this.#workers) {
      if (worker.retiring || worker.draining !== null) continue;
      const isFloor = floorLeft > 0;
      floorLeft -= 1;
      if (worker.inFlight.size >= this.#options.connectionsPerWorker) continue;
      if (best !== null && bestIsFloor && !isFloor) continue;
      if (
        best === null ||
        (isFloor && !bestIsFloor) ||
        worker.inFlight.size < best.inFlight.size ||
        (worker.inFlight.size === best.inFlight.size && worker.idleSince > best.idleSince)
      ) {
        best = worker;
        bestIsFloor = isFloor;
      }
    }
    return best;
  }

  #spawn(): PoolWorker {
    const [managerEnd, workerEnd] = socketPair();
    let process: WorkerProcess;
    try {
      process = new WorkerProcess(
        {
          program: this.#options.program,
          args: this.#options.args,
          env: { ...this.#options.env, FCGI_LISTENSOCK_DESCRIPTORS: String(CONTROL_FD_IN_WORKER) },
          stdin: 'ignore',
          extra: [workerEnd],
        },
        this.#log,
      );
    } finally {
      // The child has its own copy (dup2'ed into fd 3); ours would keep the channel open after the worker died.
      closeDescriptor(workerEnd);
    }
    const worker: PoolWorker = {
      process,
      control: managerEnd,
      watcher: watchReadable(managerEnd, () => this.#onControlReadable(worker)),
      retiring: false,
      draining: null,
      inFlight: new Set(),
      partial: Buffer.alloc(0),
      idleSince: Date.now(),
      ready: false,
      handed: 0,
      served: 0,
    };
    this.#workers.add(worker);
    this.#log.info(`worker ${process.pid}: started (${this.#workers.size} worker(s))`);
    void process.exited.then((exit) => this.#onExit(worker, exit));
    return worker;
  }

  /** The listening socket is readable: accept while a worker can take the connection. */
  #acceptReady(): void {
    for (let count = 0; count < KFCGI_ACCEPT_BATCH && this.#accepting && !this.#stopping; count += 1) {
      const worker = this.#pick() ?? (this.#activeCount() < this.#options.maxWorkers ? this.#grow() : null);
      if (!worker) {
        this.#pauseAccepting();
        return;
      }
      let connection: AcceptedConnection | null;
      try {
        connection = acceptConnection(this.#listener.fd);
      } catch (error) {
        this.#log.error(`accept on ${this.#listener.describe()}: ${(error as Error).message}`);
        return;
      }
      if (!connection) return;
      this.#accepted += 1;
      const allowed = this.#options.allowedPeers;
      if (allowed && connection.peer !== null && !allowed.has(normalizeAddress(connection.peer))) {
        this.#log.warning(`refused connection from ${connection.peer}: not in FCGI_WEB_SERVER_ADDRS`);
        closeDescriptor(connection.fd);
        continue;
      }
      this.#dispatch(worker, connection);
    }
  }

  #grow(): PoolWorker {
    this.#log.debug(`all ${this.#activeCount()} worker(s) busy: growing the pool`);
    return this.#spawn();
  }

  /** Every worker busy at -N: leave new connections in the kernel's listen queue until one is free. */
  #pauseAccepting(): void {
    if (!this.#accepting) return;
    this.#accepting = false;
    this.#poolFull += 1;
    this.#acceptWatcher?.pause();
    this.#log.debug(`pool full: ${this.#options.maxWorkers} worker(s) busy; connections wait in the listen queue`);
  }

  #resumeAccepting(): void {
    if (this.#accepting || this.#stopping || !this.#acceptWatcher) return;
    this.#accepting = true;
    this.#acceptWatcher.resume();
  }

  #dispatch(worker: PoolWorker, connection: AcceptedConnection): void {
    const cookie = this.#cookies.next();
    try {
      if (!sendDescriptors(worker.control, cookie, [connection.fd]))
        throw new GatehouseError(ErrorCode.SYSCALL_FAILED, 'control socket full');
    } catch (error) {
      this.#log.error(`sendmsg: passing connection to worker ${worker.process.pid}: ${(error as Error).message}; retiring it`);
      this.#retire(worker, 'control socket failed');
      // Another worker gets the connection.
      this.#queue.push(connection);
      this.#drainQueue();
      return;
    }
    worker.inFlight.add(cookie.toString('hex'));
    worker.handed += 1;
    worker.ready = true;
    this.#handedOver += 1;
    if (this.#log.verbose) this.#log.debug(`worker ${worker.process.pid}: connection handed over (${worker.inFlight.size} in flight)`);
    // The worker has its own copy now; ours must go, or the connection would outlive the worker's close().
    closeDescriptor(connection.fd);
    if (this.#options.maxRequests > 0 && worker.handed >= this.#options.maxRequests) {
      worker.draining = `served ${worker.handed} connections (-R ${this.#options.maxRequests})`;
      this.#recycled += 1;
      this.#ensureMinimum();
    }
  }

  #onControlReadable(worker: PoolWorker): void {
    for (;;) {
      if (worker.control < 0) return;
      let message;
      try {
        message = receiveDescriptors(worker.control, CONTROL_READ_BYTES, 1);
      } catch (error) {
        this.#log.error(`recvmsg: reading from worker ${worker.process.pid}: ${(error as Error).message}`);
        this.#retire(worker, 'control socket failed');
        return;
      }
      if (message.kind === 'again') return;
      if (message.kind === 'eof') {
        // The worker closed its end: it is exiting. Its exit is handled when it is reaped.
        this.#closeControl(worker);
        worker.retiring = true;
        this.#ensureMinimum();
        return;
      }
      for (const stray of message.fds) closeDescriptor(stray);
      const bytes = worker.partial.length > 0 ? Buffer.concat([worker.partial, message.payload]) : message.payload;
      let offset = 0;
      for (; offset + KCGI_COOKIE_BYTES <= bytes.length; offset += KCGI_COOKIE_BYTES) {
        if (!this.#connectionDone(worker, bytes.toString('hex', offset, offset + KCGI_COOKIE_BYTES))) return;
      }
      // A stream may split a cookie; the rest comes with the next read.
      worker.partial = bytes.subarray(offset);
      if (this.#log.verbose && worker.partial.length > 0)
        this.#log.debug(`worker ${worker.process.pid}: ${worker.partial.length} of ${KCGI_COOKIE_BYTES} bytes of a cookie so far`);
      this.#drainQueue();
      // A short read emptied the socket: asking again would only return EAGAIN (one system call per connection saved).
      if (message.payload.length < CONTROL_READ_BYTES) return;
    }
  }

  /** A worker wrote back a cookie: that connection is closed. False when the cookie was not one it holds (it is retired). */
  #connectionDone(worker: PoolWorker, cookie: string): boolean {
    if (!worker.inFlight.delete(cookie)) {
      this.#log.error(`worker ${worker.process.pid}: returned a cookie for no connection it was given; retiring it`);
      this.#retire(worker, 'protocol error');
      this.#ensureMinimum();
      return false;
    }
    worker.served += 1;
    if (this.#log.verbose) this.#log.debug(`worker ${worker.process.pid}: connection done (${worker.served} served)`);
    if (worker.inFlight.size === 0) {
      worker.idleSince = Date.now();
      if (worker.draining !== null) this.#retire(worker, worker.draining);
    }
    return true;
  }

  #drainQueue(): void {
    while (this.#queue.length > 0) {
      const worker = this.#pick() ?? (this.#activeCount() < this.#options.maxWorkers && !this.#stopping ? this.#grow() : null);
      if (!worker) return;
      this.#dispatch(worker, this.#queue.shift()!);
    }
    if (this.#pick() !== null || this.#activeCount() < this.#options.maxWorkers) this.#resumeAccepting();
  }

  #closeControl(worker: PoolWorker): void {
    if (worker.control < 0) return;
    worker.watcher.close();
    closeDescriptor(worker.control);
    worker.control = -1;
  }

  /** Ends a worker: its control socket closes (a kcgi worker exits on that), then SIGTERM, then SIGKILL. */
  #retire(worker: PoolWorker, reason: string): void {
    if (worker.retiring) return;
    worker.retiring = true;
    this.#log.info(`worker ${worker.process.pid}: releasing (${reason})`);
    this.#closeControl(worker);
    void worker.process.stop(reason);
  }

  #releaseIdle(): void {
    const limit = Date.now() - this.#options.idleSeconds * 1000;
    const idle = [...this.#workers]
      .filter((worker) => !worker.retiring && worker.draining === null && worker.inFlight.size === 0 && worker.idleSince <= limit)
      .sort((a, b) => a.idleSince - b.idleSince);
    for (const worker of idle) {
      if (this.#activeCount() <= this.#options.workers) return;
      this.#released += 1;
      this.#retire(worker, `idle for more than ${this.#options.idleSeconds} s`);
    }
  }

  #ensureMinimum(): void {
    if (this.#stopping) return;
    while (this.#activeCount() < this.#options.workers) this.#spawn();
  }

  #onExit(worker: PoolWorker, exit: Awaited<WorkerProcess['exited']>): void {
    this.#workers.delete(worker);
    this.#closeControl(worker);
    const expected = worker.process.stopReason !== null;
    const lost = worker.inFlight.size > 0 ? `; ${worker.inFlight.size} connection(s) it was serving are lost` : '';
    this.#log[expected ? 'info' : 'warning'](
      `worker ${worker.process.pid}: ${describeExit(exit)} after ${exit.ranMs} ms${expected ? ` (${worker.process.stopReason})` : ''}${lost}`,
    );
    if (this.#stopping || this.#respawnTimer) return;
    if (this.#activeCount() >= this.#options.workers) {
      this.#drainQueue();
      return;
    }
    const delay = expected ? 0 : this.#backoff.next(exit);
    this.#respawnTimer = setTimeout(() => {
      this.#respawnTimer = null;
      if (this.#stopping) return;
      if (!expected) this.#respawns.record(exit);
      this.#ensureMinimum();
      this.#drainQueue();
    }, delay);
  }

  async restart(): Promise<void> {
    this.#restarts += 1;
    const old = [...this.#workers].filter((worker) => !worker.retiring);
    this.#log.notice(`SIGHUP: replacing ${old.length} worker(s); busy ones finish their connections first`);
    for (const worker of old) worker.draining ??= 'restart (SIGHUP)';
    // New workers first, so connections never wait for the old ones to go.
    this.#ensureMinimum();
    for (const worker of old) if (worker.inFlight.size === 0) this.#retire(worker, 'restart (SIGHUP)');
    this.#drainQueue();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    if (this.#respawnTimer) clearTimeout(this.#respawnTimer);
    this.#accepting = false;
    this.#acceptWatcher?.close();
    for (const connection of this.#queue.splice(0)) closeDescriptor(connection.fd);
    const exits = [...this.#workers].map((worker) => {
      this.#closeControl(worker);
      worker.retiring = true;
      return worker.process.stop('kfcgi stopping');
    });
    await Promise.all(exits);
  }

  status(): PoolStatus {
    const workers = [...this.#workers].filter((worker) => worker.process.running && !worker.retiring);
    const processes = workers.map((worker): WorkerStatus => {
      const { pid } = worker.process;
      if (!worker.ready && this.#proc.state(pid) === 'S') worker.ready = true;
      const usage = this.#proc.usage(pid);
      return {
        pid,
        state: worker.inFlight.size > 0 ? 'busy' : worker.ready ? 'idle' : 'starting',
        startedAt: new Date(worker.process.startedAt).toISOString(),
        cpuSeconds: usage?.cpuSeconds ?? null,
        rssBytes: usage?.rssBytes ?? null,
        connections: worker.inFlight.size,
        handed: worker.handed,
      };
    });
    const count = (state: WorkerStatus['state']) => processes.filter((worker) => worker.state === state).length;
    const queue = this.#socket.queue();
    return {
      pid: process.pid,
      mode: 'variable',
      listen: this.#listener.describe(),
      startedAt: this.#startedAt.toISOString(),
      workers: workers.length,
      minWorkers: this.#options.workers,
      maxWorkers: this.#options.maxWorkers,
      busy: count('busy'),
      idle: count('idle'),
      starting: count('starting'),
      pids: workers.map((worker) => worker.process.pid),
      accepted: this.#accepted,
      handedOver: this.#handedOver,
      poolFull: this.#poolFull,
      maxReached: this.#poolFull,
      queued: this.#queue.length,
      respawns: this.#respawns.total,
      respawnCauses: this.#respawns.causes(),
      restarts: this.#restarts,
      recycled: this.#recycled,
      released: this.#released,
      backlog: { configured: this.#listener.backlog, queued: queue?.queued ?? null, limit: queue?.limit ?? null, maxQueued: null },
      processes,
    };
  }
}

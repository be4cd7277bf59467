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
 * below -n. Free workers are reused most-recently-freed first, so the extra
 * ones age out. With -R, a worker is replaced after that many connections.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { KFCGI_IDLE_SWEEP_MS, KFCGI_MAX_QUEUED_CONNECTIONS, KFCGI_STARTUP_CHECK_MS } from '../limits.js';
import {
  closeDescriptor,
  receiveDescriptor,
  sendDescriptor,
  socketPair,
  tcpListenQueue,
  watchReadable,
  type DescriptorWatcher,
} from '../sys/index.js';
import type { Listener } from './listener.js';
import type { Logger } from './log.js';
import { Backoff, type Pool, type PoolStatus } from './supervisor.js';
import { WorkerProcess, describeExit } from './worker-process.js';

/** The descriptor number a variable-pool worker finds its control socket at (FCGI_LISTENSOCK_DESCRIPTORS). */
export const CONTROL_FD_IN_WORKER = 3;
const COOKIE_BYTES = 8;

export interface VariablePoolOptions {
  workers: number;
  maxWorkers: number;
  idleSeconds: number;
  maxRequests: number;
  program: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** TCP only: peers allowed to connect (FCGI_WEB_SERVER_ADDRS); null allows all. */
  allowedPeers: Set<string> | null;
}

type WorkerState = 'idle' | 'busy' | 'retiring';

interface PoolWorker {
  process: WorkerProcess;
  control: number;
  watcher: DescriptorWatcher;
  state: WorkerState;
  /** The cookie of the connection it is serving. */
  cookie: Buffer | null;
  /** Bytes of a cookie read so far (a stream may split the 8 bytes). */
  partial: Buffer;
  idleSince: number;
  served: number;
  /** Started before the last SIGHUP: replaced as soon as it is free. */
  outdated: boolean;
}

export class VariablePool implements Pool {
  readonly #options: VariablePoolOptions;
  readonly #listener: Listener;
  readonly #log: Logger;
  readonly #workers = new Set<PoolWorker>();
  /** Free workers, most recently freed last (taken from the end). */
  readonly #free: PoolWorker[] = [];
  readonly #queue: net.Socket[] = [];
  readonly #backoff = new Backoff();
  readonly #startedAt = new Date();
  #server: net.Server | null = null;
  #sweepTimer: NodeJS.Timeout | null = null;
  #respawnTimer: NodeJS.Timeout | null = null;
  #stopping = false;
  #accepted = 0;
  #poolFull = 0;
  #respawns = 0;
  #restarts = 0;
  #recycled = 0;

  constructor(options: VariablePoolOptions, listener: Listener, log: Logger) {
    this.#options = options;
    this.#listener = listener;
    this.#log = log;
  }

  async start(): Promise<void> {
    const { workers, maxWorkers, idleSeconds } = this.#options;
    this.#log.info(
      `variable pool: ${workers} to ${maxWorkers} worker(s) of ${this.#options.program} on ${this.#listener.describe()} (backlog ${this.#listener.backlog}, idle release after ${idleSeconds} s)`,
    );
    const first = Array.from({ length: workers }, () => this.#spawn());
    const exits = first.map((worker) => worker.process.exited);
    // A worker of the extension waits for connections; one that leaves on its own before any (and before the
    // manager accepts: nothing is handed over yet) does not implement it.
    const allLeft = Promise.all(exits).then(() => first.every((worker) => worker.process.stopReason === null));
    const failed = await Promise.race([allLeft, sleep(KFCGI_STARTUP_CHECK_MS).then(() => false)]);
    if (failed) {
      const how = describeExit(await exits[0]!);
      throw new Error(
        `every worker exited within ${KFCGI_STARTUP_CHECK_MS} ms of starting (first: ${how}): ${this.#options.program} does not seem to implement the FastCGI Extensions for Management Control (FCGI_LISTENSOCK_DESCRIPTORS); run it without -r`,
      );
    }
    // The manager accepts (pauseOnConnect: it never reads); libuv re-applies the backlog given here.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.#onConnection(socket));
    server.on('error', (error) => this.#log.error(`accept on ${this.#listener.describe()}: ${error.message}`));
    server.listen({ fd: this.#listener.fd, backlog: this.#listener.backlog });
    this.#listener.adopt();
    this.#server = server;
    this.#sweepTimer = setInterval(() => this.#releaseIdle(), KFCGI_IDLE_SWEEP_MS);
  }

  #activeCount(): number {
    let count = 0;
    for (const worker of this.#workers) if (worker.state !== 'retiring' && !worker.outdated) count += 1;
    return count;
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
      state: 'idle',
      cookie: null,
      partial: Buffer.alloc(0),
      idleSince: Date.now(),
      served: 0,
      outdated: false,
    };
    this.#workers.add(worker);
    this.#free.push(worker);
    this.#log.info(`worker ${process.pid}: started (${this.#workers.size} worker(s))`);
    void process.exited.then((exit) => this.#onExit(worker, exit));
    return worker;
  }

  #onConnection(socket: net.Socket): void {
    this.#accepted += 1;
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    const allowed = this.#options.allowedPeers;
    if (allowed && socket.remoteAddress !== undefined && !allowed.has(socket.remoteAddress)) {
      this.#log.warning(`refused connection from ${socket.remoteAddress}: not in FCGI_WEB_SERVER_ADDRS`);
      socket.destroy();
      return;
    }
    const worker = this.#takeFree();
    if (worker) {
      this.#dispatch(worker, socket);
      return;
    }
    if (this.#activeCount() < this.#options.maxWorkers) {
      this.#log.debug(`all ${this.#workers.size} worker(s) busy: growing the pool`);
      this.#spawn();
      this.#dispatch(this.#takeFree()!, socket);
      return;
    }
    this.#poolFull += 1;
    if (this.#queue.length >= KFCGI_MAX_QUEUED_CONNECTIONS) {
      this.#log.error(`pool full (${this.#options.maxWorkers} workers busy) and ${this.#queue.length} connections waiting: closing a new one; raise -N`);
      socket.destroy();
      return;
    }
    this.#log.debug(`pool full: ${this.#options.maxWorkers} worker(s) busy; connection queued (${this.#queue.length + 1} waiting)`);
    socket.on('error', () => undefined);
    this.#queue.push(socket);
  }

  #takeFree(): PoolWorker | null {
    while (this.#free.length > 0) {
      const worker = this.#free.pop()!;
      if (worker.state === 'idle' && !worker.outdated && this.#workers.has(worker)) return worker;
    }
    return null;
  }

  #dispatch(worker: PoolWorker, socket: net.Socket): void {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0 || socket.destroyed) {
      socket.destroy();
      this.#makeFree(worker);
      return;
    }
    const cookie = randomBytes(COOKIE_BYTES);
    let sent = false;
    try {
      sent = sendDescriptor(worker.control, fd, cookie);
      if (!sent) throw new Error('control socket full');
    } catch (error) {
      this.#log.error(`sendmsg: passing connection to worker ${worker.process.pid}: ${(error as Error).message}; retiring it`);
      this.#retire(worker, 'control socket failed');
      // Someone else gets the connection.
      this.#onQueuedConnection(socket);
      return;
    }
    worker.state = 'busy';
    worker.cookie = cookie;
    this.#log.debug(`worker ${worker.process.pid}: connection handed over`);
    // The worker has its own copy now; ours must go, or the connection would outlive the worker's close().
    socket.destroy();
  }

  /** A connection whose hand-over failed: give it to another worker, or queue it. */
  #onQueuedConnection(socket: net.Socket): void {
    const worker = this.#takeFree();
    if (worker) this.#dispatch(worker, socket);
    else if (this.#activeCount() < this.#options.maxWorkers) {
      this.#spawn();
      this.#dispatch(this.#takeFree()!, socket);
    } else this.#queue.push(socket);
  }

  #onControlReadable(worker: PoolWorker): void {
    for (;;) {
      let message;
      try {
        message = receiveDescriptor(worker.control, COOKIE_BYTES - worker.partial.length);
      } catch (error) {
        this.#log.error(`recvmsg: reading from worker ${worker.process.pid}: ${(error as Error).message}`);
        this.#retire(worker, 'control socket failed');
        return;
      }
      if (message.kind === 'again') return;
      if (message.kind === 'eof') {
        // The worker closed its end: it is exiting. Its exit is handled when it is reaped.
        this.#closeControl(worker);
        if (worker.state !== 'retiring') worker.state = 'retiring';
        return;
      }
      if (message.fd !== null) closeDescriptor(message.fd);
      worker.partial = Buffer.concat([worker.partial, message.payload]);
      if (worker.partial.length < COOKIE_BYTES) continue;
      const cookie = worker.partial;
      worker.partial = Buffer.alloc(0);
      if (worker.state !== 'busy' || !worker.cookie || !worker.cookie.equals(cookie)) {
        this.#log.error(`worker ${worker.process.pid}: returned a cookie for no connection it was given; retiring it`);
        this.#retire(worker, 'protocol error');
        return;
      }
      worker.cookie = null;
      worker.served += 1;
      this.#log.debug(`worker ${worker.process.pid}: connection done (${worker.served} served)`);
      if (this.#options.maxRequests > 0 && worker.served >= this.#options.maxRequests) {
        this.#recycled += 1;
        this.#retire(worker, `served ${worker.served} connections (-R ${this.#options.maxRequests})`);
        this.#ensureMinimum();
        this.#drainQueue();
        return;
      }
      if (worker.outdated) {
        this.#retire(worker, 'restart (SIGHUP)');
        this.#drainQueue();
        return;
      }
      this.#makeFree(worker);
    }
  }

  #makeFree(worker: PoolWorker): void {
    worker.state = 'idle';
    worker.idleSince = Date.now();
    const next = this.#queue.shift();
    if (next) {
      this.#dispatch(worker, next);
      return;
    }
    this.#free.push(worker);
  }

  #drainQueue(): void {
    while (this.#queue.length > 0) {
      const worker = this.#takeFree() ?? (this.#activeCount() < this.#options.maxWorkers ? (this.#spawn(), this.#takeFree()) : null);
      if (!worker) return;
      this.#dispatch(worker, this.#queue.shift()!);
    }
  }

  #closeControl(worker: PoolWorker): void {
    if (worker.control < 0) return;
    worker.watcher.close();
    closeDescriptor(worker.control);
    worker.control = -1;
  }

  /** Ends a worker: its control socket closes (a kcgi worker exits on that), then SIGTERM, then SIGKILL. */
  #retire(worker: PoolWorker, reason: string): void {
    if (worker.state === 'retiring' && worker.control < 0) return;
    worker.state = 'retiring';
    this.#log.info(`worker ${worker.process.pid}: releasing (${reason})`);
    this.#closeControl(worker);
    void worker.process.stop(reason);
  }

  #releaseIdle(): void {
    const limit = Date.now() - this.#options.idleSeconds * 1000;
    for (const worker of [...this.#free]) {
      if (this.#activeCount() <= this.#options.workers) return;
      if (worker.state === 'idle' && worker.idleSince <= limit) {
        this.#free.splice(this.#free.indexOf(worker), 1);
        this.#retire(worker, `idle for more than ${this.#options.idleSeconds} s`);
      }
    }
  }

  #ensureMinimum(): void {
    if (this.#stopping) return;
    while (this.#activeCount() < this.#options.workers) this.#spawn();
  }

  #onExit(worker: PoolWorker, exit: Awaited<WorkerProcess['exited']>): void {
    this.#workers.delete(worker);
    const freeIndex = this.#free.indexOf(worker);
    if (freeIndex !== -1) this.#free.splice(freeIndex, 1);
    this.#closeControl(worker);
    const expected = worker.process.stopReason !== null;
    const lost = worker.cookie !== null ? '; the connection it was serving is lost' : '';
    this.#log[expected ? 'info' : 'warning'](
      `worker ${worker.process.pid}: ${describeExit(exit)} after ${exit.ranMs} ms${expected ? ` (${worker.process.stopReason})` : ''}${lost}`,
    );
    if (this.#stopping || this.#respawnTimer) return;
    if (this.#activeCount() >= this.#options.workers) return;
    const delay = expected ? 0 : this.#backoff.next(exit);
    this.#respawnTimer = setTimeout(() => {
      this.#respawnTimer = null;
      if (this.#stopping) return;
      if (!expected) this.#respawns += 1;
      this.#ensureMinimum();
      this.#drainQueue();
    }, delay);
  }

  async restart(): Promise<void> {
    this.#restarts += 1;
    const old = [...this.#workers].filter((worker) => worker.state !== 'retiring');
    this.#log.notice(`SIGHUP: replacing ${old.length} worker(s); busy ones finish their connection first`);
    for (const worker of old) worker.outdated = true;
    // New workers first, so connections never wait for the old ones to go.
    this.#ensureMinimum();
    for (const worker of old) if (worker.state === 'idle') this.#retire(worker, 'restart (SIGHUP)');
    this.#drainQueue();
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    if (this.#respawnTimer) clearTimeout(this.#respawnTimer);
    // An fd-opened server does not unlink the socket path on close (the caller removes it if it is still ours).
    this.#server?.close();
    for (const socket of this.#queue.splice(0)) socket.destroy();
    const exits = [...this.#workers].map((worker) => {
      this.#closeControl(worker);
      worker.state = 'retiring';
      return worker.process.stop('kfcgi stopping');
    });
    await Promise.all(exits);
  }

  status(): PoolStatus {
    const workers = [...this.#workers].filter((worker) => worker.process.running);
    const busy = workers.filter((worker) => worker.state === 'busy').length;
    const queue = this.#listener.address.kind === 'tcp' ? tcpListenQueue(this.#listener.fd) : null;
    return {
      pid: process.pid,
      mode: 'variable',
      listen: this.#listener.describe(),
      startedAt: this.#startedAt.toISOString(),
      workers: workers.length,
      minWorkers: this.#options.workers,
      maxWorkers: this.#options.maxWorkers,
      busy,
      idle: workers.filter((worker) => worker.state === 'idle').length,
      pids: workers.map((worker) => worker.process.pid),
      accepted: this.#accepted,
      poolFull: this.#poolFull,
      queued: this.#queue.length,
      respawns: this.#respawns,
      restarts: this.#restarts,
      recycled: this.#recycled,
      backlog: { configured: this.#listener.backlog, queued: queue?.queued ?? null, limit: queue?.limit ?? null },
    };
  }
}

/**
 * `gatehouse serve --workers N` (N > 1): the supervisor. It serves nothing
 * itself; it holds what the workers share and keeps N workers running.
 *
 * 1. Signals first, only queued until the workers run (a SIGTERM during
 *    start-up stops what started).
 * 2. The listening sockets: made here (bind + listen, never accepted on here)
 *    and inherited by every worker, which accepts on them itself as nginx's
 *    workers do: the kernel hands each connection to one waiting worker, no
 *    process passes connections on. A unix socket left by a dead server is
 *    replaced, a live server's never; fd:N sockets are passed on as they are.
 * 3. One cgid daemon and one ScriptSock (cgi-spawn = daemon): every worker
 *    connects to it with the same instance token.
 * 4. N workers: `gatehouse serve` with the same arguments and a
 *    GATEHOUSE_SERVE_WORKER assignment (src/serve/worker-role.ts), each in its
 *    own process group, so that a terminal's ^C reaches only the supervisor,
 *    which passes it on once. A worker that dies is logged with why (its
 *    signal or status) and started again in the same slot after a back-off
 *    that doubles while it keeps dying young.
 * 5. SIGTERM, SIGINT, SIGQUIT: passed to every worker (each finishes its
 *    requests in flight, up to shutdown-grace), then the daemon stops and
 *    the sockets are closed (and unix socket files removed). A second signal
 *    is passed on too: the workers exit at once, and so does the supervisor.
 *    SIGUSR1: the supervisor reopens its error log and every worker its logs.
 *    SIGHUP: passed to every worker, which reloads where serve reloads.
 * 6. With `metrics`, the supervisor opens the metrics listener (before the
 *    workers start, as root like the other sockets; no worker opens one) and
 *    at each scrape asks every running worker over its IPC channel for its
 *    numbers, waiting SERVE_WORKER_METRICS_TIMEOUT_MS at most, and adds them
 *    up with its own (src/metrics/workers.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, closeSync, existsSync, lstatSync, openSync, unlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ServeConfig } from '../config/schema.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import {
  SERVE_LISTEN_BACKLOG,
  SERVE_WORKER_METRICS_TIMEOUT_MS,
  SERVE_WORKER_RESTART_HEALTHY_MS,
  SERVE_WORKER_RESTART_MAX_DELAY_MS,
  SERVE_WORKER_RESTART_MIN_DELAY_MS,
  SERVE_WORKER_START_TIMEOUT_MS,
  UNIX_SOCKET_BACKLOG,
} from '../limits.js';
import { type Logger, onReopenSignal, openLogger } from '../log/index.js';
import { formatListenAddress, type ListenAddress, parseListenAddress } from '../options/listen-address.js';
import { startFrontSpawner, type FrontSpawner } from './front-spawner.js';
import {
  claimUnixSocketPath,
  closeDescriptor,
  createListener,
  notifySystemd,
  reloadingStates,
  resolveActivatedAddress,
} from '../sys/index.js';
import type { Account } from '../sys/index.js';
import type { SupervisorMetrics, WorkerFleet, WorkerReport } from '../metrics/workers.js';
import type { DaemonSource } from '../metrics/serve.js';
import { SERVE_WORKER_VARIABLE, type SupervisorMessage, type WorkerAssignment, type WorkerMessage } from './worker-role.js';

const MAIN_SCRIPT = fileURLToPath(new URL('../cli/main.js', import.meta.url));
/** Inherited descriptors: 0-2 stdio, 3 the IPC channel, then the listening sockets. */
const FIRST_LISTEN_FD = 4;
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGQUIT'] as const;

/** Who the workers and the cgid daemon run as, and who owns unix sockets (the command's run-as plan). */
export interface RunAsPlan {
  account: Account | null;
  socketOwner: { uid: number; gid: number } | undefined;
}

/** A listening socket the supervisor holds for its workers. */
interface SharedListener {
  /** As configured (and as logged for unix and fd sockets). */
  text: string;
  address: ListenAddress;
  fd: number;
  /** A unix socket file this supervisor made: removed at the stop while it is still the same file. */
  made?: { path: string; inode: number };
}

interface WorkerSlot {
  slot: number;
  child: ChildProcess | null;
  startedAt: number;
  restartDelay: number;
  restartTimer: NodeJS.Timeout | undefined;
  /** Requests served by earlier processes in this slot are not counted: one line per start and death is the record. */
  listening: boolean;
  /** Which start of any slot this process is (1, 2, ...; never reused, unlike pids): metrics tell processes apart by it. */
  started: number;
}

/** The listening sockets for one configured address (`systemd` may stand for several). */
function openSharedListeners(text: string, unix: { mode: number; owner?: { uid: number; gid: number } }): SharedListener[] {
  const parsed = parseListenAddress(text);
  if (typeof parsed === 'string') throw new GatehouseError(ErrorCode.SERVE_SETUP, parsed);
  return resolveActivatedAddress(parsed).map((address): SharedListener => {
    // Inherited (fd:N, or from systemd): passed on to the workers as it is.
    if (address.kind === 'fd') return { text: formatListenAddress(address), address, fd: address.fd };
    const where = formatListenAddress(address);
    if (address.kind === 'unix') claimUnixSocketPath(address.path);
    let fd: number;
    try {
      fd = createListener(address, {
        backlog: address.kind === 'unix' ? UNIX_SOCKET_BACKLOG : SERVE_LISTEN_BACKLOG,
        ...(address.kind === 'unix' ? { mode: unix.mode, ...(unix.owner ? { owner: unix.owner } : {}) } : {}),
      });
    } catch (error) {
      throw new GatehouseError(ErrorCode.SERVE_SETUP, `cannot listen on ${where}: ${(error as Error).message}`, { cause: error });
    }
    return {
      text: address.kind === 'tcp' ? text : where,
      address,
      fd,
      ...(address.kind === 'unix' ? { made: { path: address.path, inode: lstatSync(address.path).ino } } : {}),
    };
  });
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exited with status ${code}`;
}

export class ServeSupervisor implements WorkerFleet {
  readonly #config: ServeConfig;
  readonly #argv: readonly string[];
  readonly #log: Logger;
  readonly #plan: RunAsPlan;
  readonly #listeners: SharedListener[] = [];
  readonly #slots: WorkerSlot[] = [];
  #scripts: FrontSpawner | null = null;
  #stopping = false;
  #exitWaiters: Array<() => void> = [];
  #restarts = 0;
  #starts = 0;
  /** Scrapes waiting for a worker's numbers, by request id. */
  readonly #questions = new Map<number, (report: WorkerReport | null) => void>();
  #nextQuestion = 0;

  constructor(config: ServeConfig, argv: readonly string[], log: Logger, plan: RunAsPlan) {
    this.#config = config;
    this.#plan = plan;
    this.#argv = argv;
    this.#log = log;
  }

  /** Worker pids by slot (null while a slot waits to restart): for tests and status. */
  get workerPids(): Array<number | null> {
    return this.#slots.map((slot) => slot.child?.pid ?? null);
  }

  get configured(): number {
    return this.#config.workers;
  }

  /** Workers started again after one died (metrics). */
  get restarts(): number {
    return this.#restarts;
  }

  /** The shared cgid daemon's supervisor (metrics: its up and restarts, once, not once per worker). */
  get daemon(): DaemonSource | null {
    return this.#scripts?.supervisor ?? null;
  }

  /**
   * Step 6: every running worker's numbers for one scrape. A worker that does
   * not answer within `timeoutMs` (busy, or dying) is left out, with a line
   * in the error log naming it; a slot waiting to restart is not asked.
   */
  async gather(
    timeoutMs = SERVE_WORKER_METRICS_TIMEOUT_MS,
  ): Promise<{ running: number[]; reports: Array<{ worker: number; report: WorkerReport }> }> {
    const running = this.#slots.filter((slot) => slot.listening && slot.child?.connected);
    const answers = await Promise.all(
      running.map(async (slot) => {
        const child = slot.child!;
        const worker = slot.started;
        const report = await this.#ask(child, timeoutMs);
        if (report === undefined)
          this.#log.warn(
            `metrics: worker ${slot.slot} (pid ${child.pid}) did not answer within ${timeoutMs} ms; this scrape leaves it out`,
          );
        return report ? { worker, report } : null;
      }),
    );
    return {
      running: running.map((slot) => slot.started),
      reports: answers.filter((answer): answer is { worker: number; report: WorkerReport } => answer !== null),
    };
  }

  /** One question to one worker: its report, null when it answered without one, undefined for no answer in time. */
  #ask(child: ChildProcess, timeoutMs: number): Promise<WorkerReport | null | undefined> {
    const id = ++this.#nextQuestion;
    return new Promise((resolve) => {
      const settle = (report: WorkerReport | null | undefined) => {
        clearTimeout(timer);
        this.#questions.delete(id);
        resolve(report);
      };
      const timer = setTimeout(() => settle(undefined), timeoutMs);
      this.#questions.set(id, settle);
      const question: SupervisorMessage = { type: 'metrics', id };
      try {
        // A channel that closed meanwhile (the worker died) reports it here: no answer.
        child.send(question, (error) => {
          if (error) settle(undefined);
        });
      } catch {
        settle(undefined);
      }
    });
  }

  /** Steps 2-4; rejects (having closed what it opened) when a socket, the daemon or a first worker fails. */
  async start(): Promise<string> {
    try {
      const unix = { mode: this.#config.socketMode, ...(this.#plan.socketOwner ? { owner: this.#plan.socketOwner } : {}) };
      for (const text of this.#config.listen) this.#listeners.push(...openSharedListeners(text, unix));
      const config = this.#config;
      if (config.cgiSpawn === 'daemon' && (config.cgiBin || config.scriptAlias.length > 0 || config.cgiExt.length > 0)) {
        // The daemon runs as the user the workers become (or keeps root for suexec routes), as with one front.
        this.#scripts = await startFrontSpawner(frontSpawnSettings(config, this.#plan.account), this.#log.line, this.#log);
      }
      for (let slot = 0; slot < config.workers; slot++)
        this.#slots.push({
          slot,
          child: null,
          startedAt: 0,
          restartDelay: SERVE_WORKER_RESTART_MIN_DELAY_MS,
          restartTimer: undefined,
          listening: false,
          started: 0,
        });
      const reports = await Promise.all(this.#slots.map((slot) => this.#startWorker(slot)));
      // TCP port 0: the kernel chose; the workers report what they listen on.
      const addresses = this.#listeners.map((listener, index) =>
        listener.address.kind === 'tcp' ? (reports[0]![index] ?? listener.text) : listener.text,
      );
      return `listening on ${addresses.join(', ')} with ${this.#slots.length} workers (pids ${this.workerPids.join(', ')})${
        this.#scripts ? `; CGI scripts through the ${this.#scripts.description}` : ''
      }`;
    } catch (error) {
      await this.stop('SIGTERM');
      throw error;
    }
  }

  /** Starts the worker of `slot`; resolves with the addresses it listens on, rejects when it dies or hangs first. */
  #startWorker(slot: WorkerSlot): Promise<string[]> {
    const assignment: WorkerAssignment = {
      slot: slot.slot,
      count: this.#config.workers,
      listen: this.#listeners.map((_, index) => `fd:${FIRST_LISTEN_FD + index}`),
      ...(this.#scripts?.supervisor
        ? {
            cgid: {
              socketPath: this.#scripts.supervisor.endpoint.socketPath,
              token: this.#scripts.supervisor.endpoint.token.toString('hex'),
            },
          }
        : {}),
    };
    const child = spawn(process.execPath, [...process.execArgv, MAIN_SCRIPT, 'serve', ...this.#argv], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...this.#listeners.map((listener) => listener.fd)],
      env: { ...process.env, [SERVE_WORKER_VARIABLE]: JSON.stringify(assignment) },
      // Its own process group: a terminal's ^C reaches the supervisor alone, which passes it on once.
      detached: true,
    });
    slot.child = child;
    slot.startedAt = Date.now();
    slot.listening = false;
    slot.started = ++this.#starts;
    return new Promise<string[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(
          new GatehouseError(
            ErrorCode.SERVE_SETUP,
            `worker ${slot.slot} (pid ${child.pid}) did not listen within ${SERVE_WORKER_START_TIMEOUT_MS} ms`,
          ),
        );
        child.kill('SIGKILL');
      }, SERVE_WORKER_START_TIMEOUT_MS);
      child.on('message', (message: WorkerMessage) => {
        if (message?.type === 'metrics') {
          this.#questions.get(message.id)?.(message.report);
          return;
        }
        if (message?.type !== 'listening' || slot.listening) return;
        slot.listening = true;
        clearTimeout(timer);
        resolve(message.addresses);
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new GatehouseError(ErrorCode.SERVE_SETUP, `cannot start a worker: ${error.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (!slot.listening)
          reject(
            new GatehouseError(
              ErrorCode.SERVE_SETUP,
              `worker ${slot.slot} (pid ${child.pid}) ${describeExit(code, signal)} before it listened (see its lines above)`,
            ),
          );
        this.#onWorkerExit(slot, child, code, signal);
      });
    });
  }

  #onWorkerExit(slot: WorkerSlot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child) return;
    slot.child = null;
    if (this.#stopping) {
      if (this.#slots.every((each) => each.child === null)) {
        const waiters = this.#exitWaiters;
        this.#exitWaiters = [];
        for (const waiter of waiters) waiter();
      }
      return;
    }
    const ranFor = Date.now() - slot.startedAt;
    if (ranFor >= SERVE_WORKER_RESTART_HEALTHY_MS) slot.restartDelay = SERVE_WORKER_RESTART_MIN_DELAY_MS;
    const delay = slot.restartDelay;
    this.#restarts += 1;
    slot.restartDelay = Math.min(slot.restartDelay * 2, SERVE_WORKER_RESTART_MAX_DELAY_MS);
    this.#log.error(
      `worker ${slot.slot} (pid ${child.pid}) ${describeExit(code, signal)} after ${ranFor} ms; starting a new one in ${delay} ms`,
    );
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (this.#stopping) return;
      this.#startWorker(slot).then(
        () => this.#log.info(`worker ${slot.slot} restarted (pid ${slot.child?.pid})`),
        (error: unknown) => this.#log.error(`restarting worker ${slot.slot}: ${(error as Error).message}`),
      );
    }, delay);
  }

  /** Passes `signal` to every running worker. */
  signalWorkers(signal: NodeJS.Signals): number {
    let count = 0;
    for (const slot of this.#slots) {
      const child = slot.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) continue;
      try {
        child.kill(signal);
        count++;
      } catch {
        /* it exited meanwhile */
      }
    }
    return count;
  }

  /** Step 5: the workers stop (finishing requests in flight), then the daemon; the sockets are closed. */
  async stop(signal: NodeJS.Signals): Promise<void> {
    this.#stopping = true;
    for (const slot of this.#slots) clearTimeout(slot.restartTimer);
    if (this.#slots.some((slot) => slot.child !== null)) {
      const allExited = new Promise<void>((resolve) => this.#exitWaiters.push(resolve));
      this.signalWorkers(signal);
      await allExited;
    }
    await this.#scripts?.stop();
    for (const listener of this.#listeners) {
      if (listener.address.kind === 'fd') continue;
      try {
        closeDescriptor(listener.fd);
      } catch {
        /* already closed */
      }
      if (listener.made) {
        try {
          if (lstatSync(listener.made.path).ino === listener.made.inode) unlinkSync(listener.made.path);
        } catch {
          /* gone already */
        }
      }
    }
  }
}

/** The access and error log files of a configuration ("-", "off": none). */
function logFilesOf(config: ServeConfig): string[] {
  return [config.errorLog, config.accessLog].filter((target) => target !== '-' && target !== 'off');
}

/**
 * nginx's master on USR1: the log files a rotation moved away (and no
 * logrotate `create` made again) are made here, as root, and given to the
 * user the workers run as, before the workers reopen them by name. Without
 * it the supervisor's own error log, reopened as root, would be root's, and
 * workers that dropped to www-data could open neither it nor an access log
 * in a directory only root may write: they would go on writing to the moved
 * files. Files that exist are left as the operator made them.
 */
function handMovedLogsToWorkers(moved: readonly string[], account: Account | null, log: Logger): void {
  if (account === null || account.user.uid === 0 || process.geteuid?.() !== 0) return;
  for (const file of moved) {
    try {
      closeSync(openSync(file, 'a', 0o640));
      chownSync(file, account.user.uid, account.gid);
    } catch (error) {
      log.warn(
        `SIGUSR1: cannot make ${file} for the workers (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}); they keep writing to the file they had`,
      );
    }
  }
}

/** `gatehouse serve` with workers > 1: runs the supervisor until a stop signal; the exit status. */
export async function superviseServeWorkers(config: ServeConfig, argv: readonly string[], plan: RunAsPlan): Promise<number> {
  let log: Logger;
  try {
    log = openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog });
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    return 1;
  }
  // The metrics listener next, before any worker starts (the supervisor keeps the privileges it was started with;
  // the workers drop theirs): prom-client is loaded only now, and only here: the workers open no listener.
  let metrics: SupervisorMetrics | null = null;
  if (config.metrics) {
    try {
      const { SupervisorMetrics } = await import('../metrics/workers.js');
      metrics = await SupervisorMetrics.open(config.metrics, (line) => log.warn(line));
    } catch (error) {
      process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
      await log.close();
      return 1;
    }
  }
  // Signals are handled from here on (a stop during the start is kept), before any worker starts.
  const run = new SupervisorRun(new ServeSupervisor(config, argv, log, plan), config, plan.account, log, metrics);
  try {
    await run.start();
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    return run.cleanUp(1);
  }
  return run.untilStopped();
}

/**
 * The supervisor's signals and its one way out. Constructed, it handles
 * SIGUSR1 (reopen, then pass on), SIGHUP (pass on) and the stop signals; a
 * stop that comes before the workers run is kept and acted on once they do; a
 * second stop passes the signal on and exits at once.
 */
class SupervisorRun {
  readonly #supervisor: ServeSupervisor;
  readonly #config: ServeConfig;
  readonly #log: Logger;
  readonly #metrics: SupervisorMetrics | null;
  readonly #stopReopening: () => void;
  readonly #onHangup = () => this.#hangup();
  readonly #onStop = (signal: NodeJS.Signals) => this.#stop(signal);
  #started = false;
  #stopRequested: NodeJS.Signals | null = null;
  #stopping: Promise<number> | null = null;
  #onStopped: (status: number) => void = () => {};
  readonly #done = new Promise<number>((resolve) => (this.#onStopped = resolve));

  constructor(supervisor: ServeSupervisor, config: ServeConfig, account: Account | null, log: Logger, metrics: SupervisorMetrics | null) {
    this.#supervisor = supervisor;
    this.#config = config;
    this.#log = log;
    this.#metrics = metrics;
    this.#stopReopening = onReopenSignal(async () => {
      const moved = logFilesOf(config).filter((file) => !existsSync(file));
      await log.reopen();
      handMovedLogsToWorkers(moved, account, log);
      const count = supervisor.signalWorkers('SIGUSR1');
      log.info(`SIGUSR1: error log reopened; passed to ${count} worker(s)`);
    });
    process.on('SIGHUP', this.#onHangup);
    for (const signal of STOP_SIGNALS) process.on(signal, this.#onStop);
  }

  /** The sockets, the daemon and the workers (ServeSupervisor.start), then the metrics served and systemd told. */
  async start(): Promise<void> {
    const started = await this.#supervisor.start();
    this.#log.info(started);
    if (this.#metrics) {
      this.#metrics.serve(this.#supervisor);
      this.#log.info(
        `metrics on ${this.#metrics.describe()} (/metrics for Prometheus, /status for gatehouse status), the ${this.#config.workers} workers' numbers added up`,
      );
    }
    notifySystemd('READY=1', `STATUS=${started}`);
  }

  /** Runs until the workers stopped (a stop kept from the start acts now); the exit status. */
  async untilStopped(): Promise<number> {
    this.#started = true;
    if (this.#stopRequested) this.#stop(this.#stopRequested);
    const status = await this.#done;
    this.#log.info('stopped');
    return this.cleanUp(status);
  }

  async cleanUp(status: number): Promise<number> {
    process.off('SIGHUP', this.#onHangup);
    for (const signal of STOP_SIGNALS) process.off(signal, this.#onStop);
    this.#stopReopening();
    await this.#metrics?.close();
    await this.#log.close();
    return status;
  }

  #hangup(): void {
    notifySystemd(...reloadingStates());
    const count = this.#supervisor.signalWorkers('SIGHUP');
    this.#log.info(`SIGHUP: passed to ${count} worker(s), each of which reloads the configuration`);
    notifySystemd('READY=1');
  }

  #stop(signal: NodeJS.Signals): void {
    if (!this.#started) {
      this.#stopRequested = signal;
      return;
    }
    if (this.#stopping) {
      this.#log.warn(`${signal} again: the workers exit now, and so does the supervisor`);
      this.#supervisor.signalWorkers(signal);
      process.exit(1);
    }
    notifySystemd('STOPPING=1');
    this.#log.info(`${signal}: the workers finish their requests in flight (up to ${this.#config.shutdownGraceMs} ms), then exit`);
    this.#stopping = this.#supervisor.stop(signal).then(
      () => 0,
      (error: unknown) => {
        this.#log.error(`stop failed: ${(error as Error).message}`);
        return 1;
      },
    );
    this.#stopping.then(this.#onStopped);
  }
}

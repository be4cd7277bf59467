/**
 * gatehouse kfcgi: a FastCGI process manager compatible with kfcgi(8).
 *
 * runKfcgi() reads as a straight line, in kfcgi's order: open the log, create
 * the socket (mode 0660 from bind, owned by -u), resolve what the jail will
 * hide (groups, /proc), enter the jail, drop privileges, start the pool, then
 * wait for signals. Signal handlers only queue an action; one loop performs
 * them in order, so a SIGHUP never races a SIGTERM.
 */
import { KFCGI_SOCKET_MODE } from '../limits.js';
import { ProcView, activatedSockets, normalizeAddress } from '../sys/index.js';
import { adoptActivatedListener, openListener, systemMaxBacklog, type Listener } from './listener.js';
import { createLogger, type Logger } from './log.js';
import { onReopenSignal } from '../log/index.js';
import type { KfcgiConfig } from './options.js';
import { dropPrivileges, enterJail, resolveCredentials, type Credentials } from './privileges.js';
import { SharedSocketPool } from './shared-socket-pool.js';
import { SocketView } from './socket-view.js';
import { openStatusSocket, type StatusServer } from './status.js';
import { KfcgiMetricsListener } from './metrics-listener.js';
import { workerEnvironment, type Pool } from './supervisor.js';
import { VariablePool } from './variable-pool.js';
import { signalAllWorkers } from './worker-process.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export { OPTIONS, parseCommandLine, validateOptions, helpText, usageLine, UsageError, type KfcgiConfig } from './options.js';
export { readStatus } from './status.js';
export { logDestination } from './log.js';
export type { PoolStatus, WorkerStatus } from '../metrics/status.js';

export interface RunHooks {
  /** Called once the workers are running (the daemon tells its parent), or with the error that stopped the start. */
  onReady?(error: Error | null): void;
}

type Action = 'stop' | 'restart';

export async function runKfcgi(config: KfcgiConfig, hooks: RunHooks = {}): Promise<number> {
  // 0. The log: the system log (or -E's file, or stderr without a syslog socket), opened before the jail.
  let log: Logger;
  try {
    log = createLogger({ stderr: config.foreground, file: config.errorLog, level: config.logLevel, format: config.logFormat });
  } catch (error) {
    process.stderr.write(`gatehouse kfcgi: ${(error as Error).message}\n`);
    hooks.onReady?.(error as Error);
    return 1;
  }
  // SIGUSR1 reopens the log file (logrotate); listened for, it no longer opens Node's inspector. Workers are not told.
  const stopReopening = onReopenSignal(() => log.reopen());
  for (const warning of config.warnings) log.warning(warning);
  // Installed first: a SIGTERM during the start is acted on once the pool runs, instead of killing the manager.
  const signals = new SignalQueue();
  stopWorkersWithManager(log);

  const manager = new Manager(config, log);
  try {
    // 1. The socket: stale ones removed, live ones refused; mode 0660 from bind on; owned by -u.
    await manager.openSockets();
    // 2. What the jail will hide: the user's groups, /proc (to see whether a worker is idle, its CPU and memory).
    //    The kernel's view of the socket (sock_diag: its listen queue, its connections) needs no file system.
    const credentials = config.processUser ? resolveCredentials(config.processUser) : null;
    manager.viewProcAndSocket();
    // 3. The jail, then the privilege drop.
    enterJailAndDropPrivileges(config.jail, credentials, log);
    // 4. The pool.
    await manager.startPool();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log.error(`cannot start: ${message}`);
    await manager.abandonStart();
    hooks.onReady?.(error instanceof Error ? error : new GatehouseError(ErrorCode.KFCGI_SETUP, message));
    signals.close();
    stopReopening();
    await log.close();
    return 1;
  }
  hooks.onReady?.(null);
  const status = await manager.serve(signals);
  stopReopening();
  await log.close();
  return status;
}

/**
 * Should the manager itself fail, its workers must not outlive it (nothing would supervise or stop them): they get
 * SIGTERM here, and whatever is left of them SIGKILL from their lifelines once this process is gone (worker-process.ts).
 */
function stopWorkersWithManager(log: Logger): void {
  process.on('uncaughtException', (error) => {
    log.error(`internal error, stopping every worker and exiting: ${error.stack ?? error.message}`);
    process.exit(70);
  });
  process.on('exit', () => {
    const left = signalAllWorkers('SIGTERM');
    if (left > 0) signalAllWorkers('SIGCONT');
  });
}

/** chroot (unless the jail is /), then the user's groups, gid and uid (privileges.ts checks that root cannot come back). */
function enterJailAndDropPrivileges(jail: string, credentials: Credentials | null, log: Logger): void {
  enterJail(jail);
  if (jail !== '/') log.info(`entered the jail ${jail}`);
  if (credentials) {
    dropPrivileges(credentials);
    log.info(
      `running as ${credentials.user.name} (uid ${credentials.user.uid}, gid ${credentials.user.gid}, groups ${credentials.groups.join(',')})`,
    );
  }
}

/**
 * What the manager opens while it starts (the socket, the status socket, the
 * metrics listener, the views of /proc and of the socket, the pool), held in
 * one place so that one path closes them, whether the start fails half-way
 * (abandonStart) or a signal stops the running pool (serve).
 */
class Manager {
  #config: KfcgiConfig;
  readonly #log: Logger;
  #listener: Listener | null = null;
  #statusServer: StatusServer | null = null;
  #metrics: KfcgiMetricsListener | null = null;
  #proc: ProcView | null = null;
  #socketView: SocketView | null = null;
  #pool: Pool | null = null;

  constructor(config: KfcgiConfig, log: Logger) {
    this.#config = config;
    this.#log = log;
  }

  /** Step 1: the pool's socket (bound, or passed by systemd), the status socket and the metrics listener. */
  async openSockets(): Promise<void> {
    const config = this.#config;
    const backlog = config.backlog ?? systemMaxBacklog();
    const notes: string[] = [];
    // Started from a .socket unit (systemd's socket activation): the passed socket is the pool's, -s is not bound.
    const activated = activatedSockets();
    const listener =
      activated.length > 0 ? adoptActivatedListener(activated, backlog) : openListener(config.listen, backlog, config.socketUser, notes);
    this.#listener = listener;
    if (activated.length > 0) this.#config = { ...config, listen: listener.address };
    if (config.statusPath) this.#statusServer = openStatusSocket(config.statusPath, config.socketUser, notes);
    for (const note of notes) this.#log.notice(note);
    this.#metrics = await KfcgiMetricsListener.open(this.#config, this.#log);
    this.#log.info(
      activated.length > 0
        ? `listening on ${listener.describe()} (its mode, owner and backlog are the .socket unit's)`
        : `listening on ${listener.describe()}${config.listen.kind === 'unix' ? ` (mode ${KFCGI_SOCKET_MODE.toString(8)}${config.socketUser ? `, owner ${config.socketUser.name}` : ''})` : ''}, backlog ${backlog}`,
    );
  }

  /** Step 2 (before the jail hides /proc): the views the pool sizes itself and the metrics report by. */
  viewProcAndSocket(): void {
    this.#proc = new ProcView();
    this.#socketView = new SocketView(this.#listener!, this.#proc);
  }

  /** Step 4: the pool, its metrics from the first worker on, then the status socket's answers. */
  async startPool(): Promise<void> {
    const pool = createPool(this.#config, this.#listener!, this.#log, this.#proc!, this.#socketView!);
    this.#pool = pool;
    // Metrics from the first worker on: a start that takes its time (the start-up check) is visible too.
    this.#metrics?.serve(pool, this.#proc!);
    await pool.start();
    this.#statusServer?.serve(() => pool.status());
  }

  /** After a failed start: stops and closes whatever did open, in the reverse order. */
  async abandonStart(): Promise<void> {
    await this.#pool?.stop();
    this.#socketView?.close();
    await closeMetrics(this.#log, this.#metrics);
    cleanup(this.#log, this.#listener, this.#statusServer);
  }

  /** Runs the started pool until a stop signal, then closes the rest; the exit status. */
  async serve(signals: SignalQueue): Promise<number> {
    const status = await serveSignals(signals, this.#pool!, this.#log, this.#listener!, this.#statusServer);
    await closeMetrics(this.#log, this.#metrics);
    this.#socketView!.close();
    return status;
  }
}

/** A variable pool (-r: the manager hands connections to workers) or one whose workers share the socket (fixed, or -D). */
function createPool(config: KfcgiConfig, listener: Listener, log: Logger, proc: ProcView, socketView: SocketView): Pool {
  const env = workerEnvironment(process.env, config.listen.kind === 'tcp' ? config.webServerAddrs : null);
  if (config.variable)
    return new VariablePool(
      {
        workers: config.workers,
        maxWorkers: config.maxWorkers,
        idleSeconds: config.idleSeconds,
        maxRequests: config.maxRequests,
        connectionsPerWorker: config.connectionsPerWorker,
        program: config.program,
        args: config.args,
        env,
        allowedPeers: allowedPeers(config),
      },
      listener,
      log,
      proc,
      socketView,
    );
  return new SharedSocketPool(
    {
      workers: config.workers,
      maxWorkers: config.maxWorkers,
      dynamic: config.dynamic,
      idleSeconds: config.idleSeconds,
      program: config.program,
      args: config.args,
      env,
    },
    listener,
    log,
    proc,
    socketView,
  );
}

function allowedPeers(config: KfcgiConfig): Set<string> | null {
  if (config.listen.kind !== 'tcp' || config.webServerAddrs === null) return null;
  const addresses = config.webServerAddrs
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  // An IPv4 peer shows as ::ffff:a.b.c.d on a dual-stack socket.
  return new Set(addresses.flatMap((address) => (address.includes(':') ? [normalizeAddress(address)] : [address, `::ffff:${address}`])));
}

/** Signal handlers only queue an action; serveSignals() performs them in order. */
class SignalQueue {
  readonly #actions: Action[] = [];
  #wake: (() => void) | null = null;
  readonly #onStop = () => this.#push('stop');
  readonly #onRestart = () => this.#push('restart');

  constructor() {
    process.on('SIGTERM', this.#onStop);
    process.on('SIGINT', this.#onStop);
    process.on('SIGHUP', this.#onRestart);
  }

  #push(action: Action): void {
    this.#actions.push(action);
    this.#wake?.();
  }

  async next(): Promise<Action> {
    while (this.#actions.length === 0) await new Promise<void>((resolve) => (this.#wake = resolve));
    this.#wake = null;
    return this.#actions.shift()!;
  }

  get stopPending(): boolean {
    return this.#actions.includes('stop');
  }

  close(): void {
    process.off('SIGTERM', this.#onStop);
    process.off('SIGINT', this.#onStop);
    process.off('SIGHUP', this.#onRestart);
  }
}

/** Performs SIGTERM/SIGINT (stop) and SIGHUP (restart). */
async function serveSignals(
  signals: SignalQueue,
  pool: Pool,
  log: Logger,
  listener: Listener,
  statusServer: StatusServer | null,
): Promise<number> {
  // Restarts run one after another; a stop does not wait for them (the pool abandons a restart once stopping).
  let restarts: Promise<void> = Promise.resolve();
  for (;;) {
    const action = await signals.next();
    if (action === 'restart') {
      if (signals.stopPending) continue;
      restarts = restarts.then(
        () => pool.restart(),
        () => undefined,
      );
      continue;
    }
    log.notice('stopping: removing the socket, then stopping the workers');
    // First the path, so that new connections fail at once instead of queueing for workers about to go.
    const removed = listener.owned?.remove();
    if (removed) log.info(removed);
    await pool.stop();
    cleanup(log, listener, statusServer);
    signals.close();
    log.notice('stopped');
    return 0;
  }
}

async function closeMetrics(log: Logger, metrics: KfcgiMetricsListener | null): Promise<void> {
  const removed = await metrics?.close();
  if (removed) log.info(removed);
}

function cleanup(log: Logger, listener: Listener | null, statusServer: StatusServer | null): void {
  if (listener) {
    const removed = listener.owned?.remove();
    if (removed) log.info(removed);
    listener.close();
  }
  if (statusServer) {
    statusServer.close();
    const removed = statusServer.owned.remove();
    if (removed) log.info(removed);
  }
}

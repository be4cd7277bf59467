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
export type { PoolStatus, WorkerStatus } from './supervisor.js';

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
  // Should the manager itself fail, its workers must not outlive it (nothing would supervise or stop them): they get
  // SIGTERM here, and whatever is left of them SIGKILL from their lifelines once this process is gone (worker-process.ts).
  process.on('uncaughtException', (error) => {
    log.error(`internal error, stopping every worker and exiting: ${error.stack ?? error.message}`);
    process.exit(70);
  });
  process.on('exit', () => {
    const left = signalAllWorkers('SIGTERM');
    if (left > 0) signalAllWorkers('SIGCONT');
  });

  let listener: Listener | null = null;
  let statusServer: StatusServer | null = null;
  let pool: Pool | null = null;
  let socketView: SocketView | null = null;
  let metrics: KfcgiMetricsListener | null = null;
  try {
    // 1. The socket: stale ones removed, live ones refused; mode 0660 from bind on; owned by -u.
    const backlog = config.backlog ?? systemMaxBacklog();
    const notes: string[] = [];
    // Started from a .socket unit (systemd's socket activation): the passed socket is the pool's, -s is not bound.
    const activated = activatedSockets();
    listener =
      activated.length > 0 ? adoptActivatedListener(activated, backlog) : openListener(config.listen, backlog, config.socketUser, notes);
    if (activated.length > 0) config = { ...config, listen: listener.address };
    if (config.statusPath) statusServer = openStatusSocket(config.statusPath, config.socketUser, notes);
    for (const note of notes) log.notice(note);
    metrics = await KfcgiMetricsListener.open(config, log);
    log.info(
      activated.length > 0
        ? `listening on ${listener.describe()} (its mode, owner and backlog are the .socket unit's)`
        : `listening on ${listener.describe()}${config.listen.kind === 'unix' ? ` (mode ${KFCGI_SOCKET_MODE.toString(8)}${config.socketUser ? `, owner ${config.socketUser.name}` : ''})` : ''}, backlog ${backlog}`,
    );

    // 2. What the jail will hide: the user's groups, /proc (to see whether a worker is idle, its CPU and memory).
    //    The kernel's view of the socket (sock_diag: its listen queue, its connections) needs no file system.
    const credentials: Credentials | null = config.processUser ? resolveCredentials(config.processUser) : null;
    const proc = new ProcView();
    socketView = new SocketView(listener, proc);

    // 3. The jail, then the privilege drop.
    enterJail(config.jail);
    if (config.jail !== '/') log.info(`entered the jail ${config.jail}`);
    if (credentials) {
      dropPrivileges(credentials);
      log.info(
        `running as ${credentials.user.name} (uid ${credentials.user.uid}, gid ${credentials.user.gid}, groups ${credentials.groups.join(',')})`,
      );
    }

    // 4. The pool.
    const env = workerEnvironment(process.env, config.listen.kind === 'tcp' ? config.webServerAddrs : null);
    pool = config.variable
      ? new VariablePool(
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
        )
      : new SharedSocketPool(
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
    // Metrics from the first worker on: a start that takes its time (the start-up check) is visible too.
    metrics?.serve(pool, proc);
    await pool.start();
    const running = pool;
    statusServer?.serve(() => running.status());
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    log.error(`cannot start: ${message}`);
    await pool?.stop();
    socketView?.close();
    await closeMetrics(log, metrics);
    cleanup(log, listener, statusServer);
    hooks.onReady?.(error instanceof Error ? error : new GatehouseError(ErrorCode.KFCGI_SETUP, message));
    signals.close();
    stopReopening();
    await log.close();
    return 1;
  }
  hooks.onReady?.(null);
  const status = await serveSignals(signals, pool, log, listener, statusServer);
  await closeMetrics(log, metrics);
  socketView.close();
  stopReopening();
  await log.close();
  return status;
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

/**
 * `gatehouse serve`: the HTTP front. Flags and config keys come from one
 * table (src/config/schema.ts), their values read by the grammars of
 * src/options; flags win over the file.
 */
import { serveFlagOptions } from '../config/schema.js';
import { loadServeConfig } from '../config/load.js';
import { GatehouseFront } from '../http/server.js';
import { type LongOption, optionHelpRows, splitLongOptions } from '../options/command-line.js';
import { formatListenAddress, type ListenAddress } from '../options/listen-address.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { startFrontSpawner, type FrontSpawner } from '../serve/front-spawner.js';
import { ConfigError, ErrorCode, GatehouseError, UsageError } from '../errors.js';
import { SocketKeeper } from '../cgid/socket-keeper.js';
import { dropPrivileges, notifySystemd, reloadingStates, runsAs, takeSystemdEnvironment } from '../sys/index.js';
import { handleServeSignals } from './serve-signals.js';
import { describeAccount, planRunAs, type RunAsPlan } from './run-as.js';
import type { FastCGIRouteConfig, ServeConfig } from '../config/schema.js';
import { type Logger, onReopenSignal, openLogger } from '../log/index.js';
import { type ServeWorkerRole, takeServeWorkerRole } from '../serve/worker-role.js';
import { superviseServeWorkers } from '../serve/workers.js';
import type { ServeMetricsListener } from '../metrics/serve.js';
import type { ScriptSpawner } from '../spawn/spawner.js';

const COMMAND_OPTIONS: LongOption[] = [
  {
    name: 'config',
    kind: 'string',
    argument: 'FILE',
    summary: 'read the configuration from this TOML file (see gatehouse-serve(8)); flags override it',
  },
  { name: 'check', kind: 'flag', summary: 'validate the configuration, print what would be served, and exit (0 when valid)' },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export function serveUsage(): string {
  return [
    'usage: gatehouse serve [--config FILE] [options]',
    '',
    'Serves static files, CGI scripts and FastCGI applications over HTTP.',
    'Example: gatehouse serve --listen 127.0.0.1:8080 --docroot ./public --cgi-bin ./cgi-bin --cgi-ext .cgi --script-timeout 5s',
    '',
    'options:',
    ...optionHelpRows([...COMMAND_OPTIONS, ...serveFlagOptions()]),
    '',
    'Sizes are bytes or 512K, 64M, 2G; times 20 (seconds), 20s, 500ms, 2m.',
    'Config-file-only keys: [[fastcgi]] routes, [[script-alias]] routes, [set-env]. See man/gatehouse-serve.8.',
    'Signals: TERM and INT stop gracefully; HUP re-reads the configuration (listen, user and logs need a restart).',
    'Started as root, serve needs --user (or user = "..."): it binds and opens its logs as root, then runs as that user.',
  ].join('\n');
}

function describeFastCGIRoute(route: FastCGIRouteConfig): string {
  const condition =
    route.match !== undefined
      ? ` matching '${route.match}'`
      : route.extensions !== undefined
        ? ` ending in ${route.extensions.join(' ')}`
        : '';
  return `${route.url}${condition} -> FastCGI ${route.upstreams.join(', ')}`;
}

/** What --check prints: what would be served, routes in the order they are tried. */
function checkReport(config: ServeConfig, file: string | undefined, plan: RunAsPlan): string[] {
  const patterns = config.fastcgi.filter((route) => route.match !== undefined || route.extensions !== undefined);
  const prefixes = config.fastcgi.filter((route) => route.match === undefined && route.extensions === undefined);
  return [
    `configuration OK${file !== undefined ? ` (${file})` : ''}`,
    `listen: ${config.listen.join(', ')}`,
    ...(plan.account ? [`user: ${describeAccount(plan.account)}`] : []),
    ...plan.warnings.map((warning) => `warning: ${warning}`),
    ...patterns.map(describeFastCGIRoute),
    ...prefixes.map(describeFastCGIRoute),
    ...(config.cgiBin ? [`/cgi-bin/ -> ${config.cgiBin}`] : []),
    ...config.scriptAlias.map((alias) => `${alias.url} -> ${alias.dir} (CGI${alias.user ? ` as ${alias.user}` : ''})`),
    ...(config.docroot ? [`docroot: ${config.docroot}${config.cgiExt.length ? ` (CGI: ${config.cgiExt.join(' ')})` : ''}`] : []),
    `script-timeout: ${config.scriptTimeoutMs} ms`,
    ...(config.scriptLog ? [`script-log: ${config.scriptLog}`] : []),
    `access-log: ${config.accessLog}${config.accessLog !== 'off' ? ` (${config.accessLogFormat})` : ''}`,
    `error-log: ${config.errorLog} (level ${config.logLevel}, ${config.logFormat})`,
    ...(config.workers > 1 ? [`workers: ${config.workers}`] : []),
    ...(config.metrics ? [`metrics: ${formatListenAddress(config.metrics)}`] : []),
  ];
}

/** How serve's messages name the account keys. */
const SERVE_RUN_AS_NAMES = { user: 'user', group: 'group', socketUser: 'socket-user', socketGroup: 'socket-group' };

/**
 * Who serve runs as (src/cli/run-as.ts): started as root it needs `user`.
 * Throws GH_PRIVILEGES with one line when it cannot run as configured.
 */
export function serveRunAs(config: ServeConfig): RunAsPlan {
  const plan = planRunAs(
    { user: config.user, group: config.group, socketUser: config.socketUser, socketGroup: config.socketGroup },
    SERVE_RUN_AS_NAMES,
    { command: 'gatehouse serve', what: 'the front and every CGI script' },
  );
  const suexec = config.scriptAlias.filter((alias) => alias.user !== undefined);
  if (plan.account && plan.account.user.uid !== 0 && suexec.length > 0 && config.cgiSpawn !== 'daemon')
    throw new GatehouseError(
      ErrorCode.PRIVILEGES,
      `cgi-spawn = "${config.cgiSpawn}": script-alias ${suexec[0]!.url} runs its scripts as ${suexec[0]!.user}, which a front running as ${config.user} cannot do; use cgi-spawn = "daemon" (the default: the daemon keeps root for them)`,
    );
  return plan;
}

export interface RunningFront {
  front: GatehouseFront;
  scripts: FrontSpawner | null;
  addresses: ListenAddress[];
  /** Removes, as root, the unix sockets the front can no longer remove once it dropped root (src/cgid/socket-keeper.ts). */
  keeper: SocketKeeper | null;
}

/**
 * Starts what serves `config`, in the order privileges need: the cgid
 * daemon (it binds its socket as root, then drops to the user unless suexec
 * routes need root), the front's logs and listen sockets (as root), then the
 * front itself becomes the user (setgroups, setgid, setuid, checked). Every
 * failure closes what did open and throws.
 */
export async function startFront(
  config: ServeConfig,
  plan: RunAsPlan,
  logger: Logger,
  worker: ServeWorkerRole | null = null,
  meter?: (spawner: ScriptSpawner) => ScriptSpawner,
): Promise<RunningFront> {
  let scripts: FrontSpawner | null = null;
  if (config.cgiBin || config.scriptAlias.length > 0 || config.cgiExt.length > 0) {
    try {
      // The daemon's records go to the error log from its start on.
      // A --workers worker uses the supervisor's daemon (src/serve/worker-role.ts).
      scripts = worker
        ? await worker.startScripts(config, logger, plan.account)
        : await startFrontSpawner(frontSpawnSettings(config, plan.account), logger.line, logger);
    } catch (error) {
      throw new GatehouseError(ErrorCode.SERVE_SETUP, `cannot start CGI scripts: ${(error as Error).message}`, { cause: error });
    }
  }
  let opened: GatehouseFront;
  try {
    opened = new GatehouseFront({
      config,
      logger,
      // With metrics on, the spawner is counted and timed (src/metrics/scripts.ts).
      ...(scripts ? { spawner: meter ? meter(scripts.spawner) : scripts.spawner } : {}),
      unixSocket: { mode: config.socketMode, ...(plan.socketOwner ? { owner: plan.socketOwner } : {}) },
    });
  } catch (error) {
    await scripts?.stop();
    throw error;
  }
  try {
    const addresses = await opened.listen();
    // Unix sockets the user could not remove at the stop (a root directory) are left to a keeper that stays root.
    const unixPaths = addresses.flatMap((address) => (address.kind === 'unix' ? [address.path] : []));
    const keeper = plan.account && !runsAs(plan.account) ? SocketKeeper.start(unixPaths, plan.account) : null;
    if (plan.account) dropPrivileges(plan.account);
    return { front: opened, scripts, addresses, keeper };
  } catch (error) {
    // Close what did open (other addresses, the cgid daemon): left running, they would keep this process alive.
    await opened.stop(0);
    await scripts?.stop();
    throw error;
  }
}

export async function main(argv: string[]): Promise<number> {
  // Before anything starts a process: systemd's sockets and variables are taken, so no child inherits them.
  takeSystemdEnvironment();
  // --workers: a process started by the supervisor (src/serve/) serves with its assignment; null otherwise.
  const worker = takeServeWorkerRole();
  const commandLine = readCommandLine(argv, worker);
  if (typeof commandLine === 'number') return commandLine;
  const { config, file, flags } = commandLine;
  let plan: RunAsPlan;
  try {
    plan = serveRunAs(config);
  } catch (error) {
    if (!(error instanceof GatehouseError)) throw error;
    process.stderr.write(`gatehouse serve: ${error.message}\n`);
    return 1;
  }
  if (commandLine.check) {
    process.stdout.write(`${checkReport(config, file, plan).join('\n')}\n`);
    return 0;
  }
  if (config.workers > 1 && !worker) return superviseServeWorkers(config, argv, plan);
  // Handlers first: a HUP or TERM that arrives while serve starts is kept for when it runs (HUP's default would kill it).
  const signals = new EarlySignals();
  // The error log first, as root (like the sockets): the cgid daemon's records go to it from its start on.
  let logger: Logger;
  try {
    logger = openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog });
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    return 1;
  }
  const run = new ServeRun(logger);
  try {
    // Metrics first too (prom-client is loaded only now): the CGI handler takes its spawner metered.
    await run.openMetrics(config, worker);
    // Then the cgid daemon, the listen sockets and the privilege drop, in that order (startFront).
    await run.start(config, plan, worker);
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    return run.finish(1);
  }
  run.announce(plan, worker);
  // A worker reloads its own share of the configuration (its inherited sockets, its share of the script limits).
  const loadAgain = () => {
    const next = loadServeConfig({ ...(file !== undefined ? { file } : {}), flags });
    return worker ? worker.configure(next) : next;
  };
  return run.untilStopped(signals, loadAgain, file);
}

interface ServeCommandLine {
  config: ServeConfig;
  /** --config, when given. */
  file: string | undefined;
  /** The other flags, read again over the file at each reload. */
  flags: Record<string, unknown>;
  check: boolean;
}

/** The flags over the file, for a --workers worker its share; for --help or a mistake (reported), the exit status. */
function readCommandLine(argv: string[], worker: ServeWorkerRole | null): ServeCommandLine | number {
  try {
    const { config: configFile, check, help, ...flags } = splitLongOptions(argv, [...COMMAND_OPTIONS, ...serveFlagOptions()]);
    if (help) {
      process.stdout.write(`${serveUsage()}\n`);
      return 0;
    }
    const file = typeof configFile === 'string' ? configFile : undefined;
    let config = loadServeConfig({ ...(file !== undefined ? { file } : {}), flags });
    if (worker) config = worker.configure(config);
    return { config, file, flags, check: check === true };
  } catch (error) {
    if (error instanceof UsageError) {
      const lines = error.problems.map((problem) => `gatehouse serve: ${problem}`).join('\n');
      process.stderr.write(`${lines}\nRun 'gatehouse serve --help' for the options.\n`);
      return 2;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`gatehouse serve: invalid configuration: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/**
 * TERM, INT and HUP from before serve runs on: one that arrives during the
 * start is kept (a HUP's default would kill the process) and acted on once
 * the front runs, a stop before a reload.
 */
class EarlySignals {
  #act: { stop(signal: NodeJS.Signals): void; reload(): void } | null = null;
  #stopEarly: NodeJS.Signals | null = null;
  #reloadEarly = false;

  constructor() {
    handleServeSignals({
      stop: (signal) => (this.#act ? this.#act.stop(signal) : (this.#stopEarly = signal)),
      reload: () => (this.#act ? this.#act.reload() : (this.#reloadEarly = true)),
    });
  }

  /** From now on the signals go to `act`; one kept from the start is acted on now. */
  actOn(act: { stop(signal: NodeJS.Signals): void; reload(): void }): void {
    this.#act = act;
    if (this.#stopEarly) act.stop(this.#stopEarly);
    else if (this.#reloadEarly) act.reload();
  }
}

/**
 * One serving process from its log on: what it opens (metrics, the front)
 * and the one way it ends (finish: stop reopening and answering, close the
 * metrics and the log). A stop finishes the requests in flight, then the
 * scripts and the socket keeper; a second stop exits at once.
 */
class ServeRun {
  readonly #logger: Logger;
  readonly #stopReopening: () => void;
  #running: RunningFront | undefined;
  #metrics: ServeMetricsListener | null = null;
  #stopAnswering: (() => void) | null = null;
  #stopping = false;

  constructor(logger: Logger) {
    this.#logger = logger;
    // SIGUSR1 reopens the logs (and, listened for, no longer opens Node's inspector).
    this.#stopReopening = onReopenSignal(async () => {
      if (this.#running) await this.#running.front.reopenLogs();
      else await logger.reopen();
    });
  }

  async finish(status: number): Promise<number> {
    this.#stopReopening();
    this.#stopAnswering?.();
    await this.#metrics?.close();
    await this.#logger.close();
    return status;
  }

  /** A --workers worker counts the same way but opens no listener: the supervisor's asks it over the IPC channel. */
  async openMetrics(config: ServeConfig, worker: ServeWorkerRole | null): Promise<void> {
    if (!config.metrics) return;
    const { ServeMetricsListener } = await import('../metrics/serve.js');
    this.#metrics = await ServeMetricsListener.open(worker ? null : config.metrics, (line) => this.#logger.warn(line));
  }

  async start(config: ServeConfig, plan: RunAsPlan, worker: ServeWorkerRole | null): Promise<void> {
    const metrics = this.#metrics;
    const meter = metrics ? (spawner: ScriptSpawner) => metrics.meter(spawner) : undefined;
    this.#running = await startFront(config, plan, this.#logger, worker, meter);
  }

  /** Logs what serves where and as whom, serves the metrics, and tells systemd it is ready. */
  announce(plan: RunAsPlan, worker: ServeWorkerRole | null): void {
    const { scripts, addresses } = this.#running!;
    const logger = this.#logger;
    for (const warning of plan.warnings) logger.warn(warning);
    logger.info(
      `${worker ? `worker ${worker.assignment.slot}: ` : ''}listening on ${addresses.map(formatListenAddress).join(', ')}${scripts ? `; CGI scripts through the ${scripts.description}` : ''}${plan.account ? `; running as ${describeAccount(plan.account)}` : ''}`,
    );
    worker?.listening(addresses);
    if (this.#metrics) this.#serveMetrics(this.#metrics, worker);
    notifySystemd('READY=1', `STATUS=serving on ${addresses.map(formatListenAddress).join(', ')}`);
  }

  #serveMetrics(listener: ServeMetricsListener, worker: ServeWorkerRole | null): void {
    const { front, scripts } = this.#running!;
    // The limiter and the FastCGI clients are read through the front at each scrape: a reload (SIGHUP) replaces them.
    listener.serve({
      servers: front.parts.servers,
      get limiter() {
        return front.parts.limiter;
      },
      get fastcgiClients() {
        return front.parts.fastcgiClients;
      },
      daemon: scripts?.supervisor ?? null,
    });
    if (worker) this.#stopAnswering = worker.answerMetrics(() => listener.report());
    this.#logger.info(
      worker
        ? `worker ${worker.assignment.slot}: metrics counted for ${listener.describe()}`
        : `metrics on ${listener.describe()} (/metrics for Prometheus, /status for gatehouse status)`,
    );
  }

  /** Serves, reloading on HUP, until TERM or INT; the exit status. */
  untilStopped(signals: EarlySignals, loadAgain: () => ServeConfig, file: string | undefined): Promise<number> {
    const reloader = new Reloader(this.#running!.front, loadAgain, file);
    return new Promise<number>((resolve) => {
      signals.actOn({ stop: (signal) => this.#stop(signal, resolve), reload: () => reloader.request() });
    });
  }

  #stop(signal: NodeJS.Signals, resolve: (status: number) => void): void {
    const logger = this.#logger;
    if (this.#stopping) {
      logger.warn(`${signal} again: exiting now`);
      // The logs' exit hook writes what they still hold.
      process.exit(1);
    }
    this.#stopping = true;
    notifySystemd('STOPPING=1');
    const { front, scripts, keeper } = this.#running!;
    logger.info(`${signal}: finishing requests in flight (up to ${front.config.shutdownGraceMs} ms), then exiting`);
    front
      .stop()
      .then(() => scripts?.stop())
      .then(async () => {
        for (const line of (await keeper?.release()) ?? []) logger.info(`socket keeper: ${line}`);
      })
      .then(
        () => 0,
        (error: unknown) => {
          logger.error(`stop failed: ${(error as Error).message}`);
          return 1;
        },
      )
      .then((status) => {
        logger.info('stopped');
        return this.finish(status);
      })
      .then(resolve);
  }
}

/**
 * SIGHUP: re-read the configuration file (with the same flags over it),
 * validate it, and swap it in (GatehouseFront.reload). One reload at a time;
 * a HUP that arrives during one is performed after it, once. A configuration
 * that fails validation, or changes what only a restart can, is refused with
 * a log line and the running one stays. systemd hears RELOADING=1, then
 * READY=1 (Type=notify).
 */
class Reloader {
  #running = false;
  #again = false;

  constructor(
    readonly front: GatehouseFront,
    readonly load: () => ServeConfig,
    readonly file: string | undefined,
  ) {}

  request(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    notifySystemd(...reloadingStates());
    try {
      this.#reload();
    } finally {
      notifySystemd('READY=1');
      this.#running = false;
    }
    if (this.#again) {
      this.#again = false;
      this.request();
    }
  }

  #reload(): void {
    const source = this.file ?? 'the command line';
    let next: ServeConfig;
    try {
      next = this.load();
      this.front.reload(next);
    } catch (error) {
      const problems = error instanceof ConfigError || error instanceof UsageError ? error.problems.join('; ') : (error as Error).message;
      this.front.logError(`SIGHUP: reload refused, still serving the previous configuration: ${source}: ${problems}`, 'error');
      return;
    }
    this.front.logError(`SIGHUP: reloaded the configuration from ${source}`, 'info');
  }
}

/**
 * `gatehouse cgid`: the CGI daemon on ScriptSock (what `gatehouse serve`
 * starts as its child), or, with --fastcgi, a FastCGI responder that runs CGI
 * scripts for nginx (fcgiwrap's place). See man/gatehouse-cgid.8.
 *
 * main() reads as a straight line: parse and check every flag, then either
 * the FastCGI face or the daemon: runtime directory, every check of the
 * socket's place, token, socket, token file, ready (checks before writes).
 */
import { readFileSync, renameSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { CgidDaemon, newInstanceToken } from '../cgid/daemon.js';
import type { FaceMetrics } from '../metrics/cgid.js';
import { PosixSpawnSpawner } from '../spawn/posix-spawner.js';
import { SocketKeeper } from '../cgid/socket-keeper.js';
import type { ScriptLimits } from '../spawn/order.js';
import { checkSocketPlace, defaultRuntimeDirectory, ensureRuntimeDirectory, scriptSockPath } from '../cgid/socket-path.js';
import { type LongOption, optionHelpRows, readOptionValues, splitLongOptions } from '../options/command-line.js';
import { formatListenAddress, LISTEN_ADDRESS, METRICS_ADDRESS, type ListenAddress } from '../options/listen-address.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import { ErrorCode, GatehouseError, UsageError } from '../errors.js';
import {
  CGID_FASTCGI_STOP_GRACE_MS,
  CGID_SCRIPT_SOCK,
  CGID_SUEXEC_MIN_GID,
  CGID_SUEXEC_MIN_UID,
  CGID_TOKEN_BYTES,
  CGI_SCRIPT_LOG_BUFFER,
  CGI_SCRIPT_LOG_LENGTH,
  CGI_SCRIPT_TIMEOUT_MS,
  HTTP_SEND_TIMEOUT_MS,
} from '../limits.js';
import { dieWithParent, dropPrivileges, notifySystemd, resolveActivatedAddress, runsAs } from '../sys/index.js';
import { handleCgidSignals } from './cgid-signals.js';
import { describeAccount, planRunAs, type RunAsPlan } from './run-as.js';
import {
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
  type LogLine,
  type Logger,
  onReopenSignal,
  openLogger,
} from '../log/index.js';

/** Every flag, for parsing, --help and the manual page (a test keeps man/gatehouse-cgid.8 in step). */
export const CGID_OPTIONS: readonly LongOption[] = [
  {
    name: 'script-sock',
    kind: 'string',
    argument: 'PREFIX',
    summary: "ScriptSock: socket path prefix; the daemon's pid is appended; relative to --runtime-dir",
    defaultText: CGID_SCRIPT_SOCK,
  },
  {
    name: 'runtime-dir',
    kind: 'string',
    argument: 'DIR',
    summary: 'DefaultRuntimeDir: where a relative ScriptSock lives (created 0700; refused when others can write it)',
    defaultText: '/run/gatehouse as root (/run/gatehouse-USER with --user), else $XDG_RUNTIME_DIR/gatehouse or $TMPDIR/gatehouse-UID',
  },
  { name: 'socket', kind: 'string', argument: 'PATH', summary: 'the exact socket path (no pid appended); what gatehouse serve passes' },
  {
    name: 'token-file',
    kind: 'string',
    argument: 'FILE',
    summary: 'read the instance token from FILE (mode 0600); default $GATEHOUSE_CGID_TOKEN, else a new one written to SOCKET.token',
  },
  {
    name: 'parent-pid',
    kind: 'integer',
    min: 1,
    argument: 'PID',
    summary: 'exit (terminating scripts) when this process, the front that started the daemon, dies',
  },
  {
    name: 'lifeline-fd',
    kind: 'integer',
    min: 3,
    argument: 'FD',
    summary: 'exit, terminating the scripts, when this inherited pipe reaches end of file (the front that started the daemon is gone)',
  },
  {
    name: 'fastcgi',
    kind: 'address',
    address: LISTEN_ADDRESS,
    argument: 'ADDR',
    summary:
      'run the FastCGI face instead: listen as a FastCGI responder on unix:PATH, HOST:PORT, fd:N (an inherited socket) or systemd (socket activation), for nginx, like fcgiwrap',
  },
  {
    name: 'user',
    kind: 'string',
    argument: 'USER',
    summary:
      'run as this user once the socket is bound (spawn-fcgi -u); --fastcgi started as root needs it ("root" keeps root, with a warning)',
  },
  {
    name: 'keep-root',
    kind: 'flag',
    summary:
      'daemon: stay root for suexec routes (scripts an order names a user for), running every other script as --user; what gatehouse serve passes when a [[script-alias]] has a user',
  },
  {
    name: 'group',
    kind: 'string',
    argument: 'GROUP',
    summary: 'with --user: run as this group (spawn-fcgi -g)',
    defaultText: "the user's login group",
  },
  {
    name: 'socket-user',
    kind: 'string',
    argument: 'USER',
    summary: 'owner of the unix socket (spawn-fcgi -U, php-fpm listen.owner); the daemon also lets this user connect',
    defaultText: '--user, else the user cgid runs as',
  },
  {
    name: 'socket-group',
    kind: 'string',
    argument: 'GROUP',
    summary: "group of the unix socket, e.g. the web server's (spawn-fcgi -G, php-fpm listen.group)",
    defaultText: "--socket-user's login group",
  },
  {
    name: 'socket-mode',
    kind: 'mode',
    argument: 'MODE',
    summary: 'permissions of the unix socket, set at bind (spawn-fcgi -M, php-fpm listen.mode)',
    defaultText: '0660 for --fastcgi, 0600 for the daemon',
  },
  {
    name: 'script-timeout',
    kind: 'duration',
    min: 1,
    argument: 'TIME',
    summary: 'FastCGI face: kill a script that writes nothing for this long (CGIDScriptTimeout): 20, 20s, 500ms',
    defaultText: `${CGI_SCRIPT_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'query-arguments',
    kind: 'flag',
    summary:
      "FastCGI face: a QUERY_STRING without '=' becomes the script's arguments, as Apache does (RFC 3875 4.4); unsafe for interpreters such as php-cgi (CVE-2012-1823)",
    defaultText: 'off',
  },
  {
    name: 'metrics',
    kind: 'address',
    address: METRICS_ADDRESS,
    argument: 'ADDR',
    summary:
      'FastCGI face: serve Prometheus metrics (/metrics) and the status (/status, read with gatehouse status ADDR) on HOST:PORT or unix:PATH',
    defaultText: 'off',
  },
  {
    name: 'send-timeout',
    kind: 'duration',
    argument: 'TIME',
    summary: 'FastCGI face: a web server that takes none of the output for this long is disconnected and its scripts killed (0: none)',
    defaultText: `${HTTP_SEND_TIMEOUT_MS / 1000}s`,
  },
  { name: 'script-log', kind: 'string', argument: 'FILE', summary: "FastCGI face: ScriptLog, failed runs in mod_cgi's format" },
  { name: 'script-log-length', kind: 'size', argument: 'SIZE', summary: 'ScriptLogLength', defaultText: String(CGI_SCRIPT_LOG_LENGTH) },
  { name: 'script-log-buffer', kind: 'size', argument: 'SIZE', summary: 'ScriptLogBuffer', defaultText: String(CGI_SCRIPT_LOG_BUFFER) },
  { name: 'rlimit-cpu', kind: 'integer', argument: 'SECONDS', summary: 'RLimitCPU: CPU seconds per script (0: none)', defaultText: '0' },
  {
    name: 'rlimit-mem',
    kind: 'size',
    argument: 'SIZE',
    summary: 'RLimitMEM: address space per script, e.g. 512M (0: none)',
    defaultText: '0',
  },
  {
    name: 'rlimit-nproc',
    kind: 'integer',
    argument: 'N',
    summary: "RLimitNPROC: processes of the script's user (not enforced for root) (0: none)",
    defaultText: '0',
  },
  { name: 'rlimit-nofile', kind: 'integer', argument: 'N', summary: 'open files per script (0: none)', defaultText: '0' },
  {
    name: 'max-output',
    kind: 'size',
    argument: 'SIZE',
    summary: "FastCGI face: a script's output cap; past it the script is killed and its output cut (0: none)",
    defaultText: '0',
  },
  {
    name: 'suexec-min-uid',
    kind: 'integer',
    argument: 'UID',
    summary: 'suexec: lowest uid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_UID),
  },
  {
    name: 'suexec-min-gid',
    kind: 'integer',
    argument: 'GID',
    summary: 'suexec: lowest gid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_GID),
  },
  {
    name: 'error-log',
    kind: 'string',
    argument: 'FILE',
    summary: 'write the log to FILE (reopened on SIGUSR1); - for standard error',
    defaultText: '-',
  },
  {
    name: 'log-level',
    kind: 'choice',
    choices: LOG_LEVELS,
    argument: 'LEVEL',
    summary: `least serious lines logged: ${LOG_LEVELS.join(', ')}`,
    defaultText: DEFAULT_LOG_LEVEL,
  },
  {
    name: 'log-format',
    kind: 'choice',
    choices: LOG_FORMATS,
    argument: 'FORMAT',
    summary: 'text (TIME LEVEL cgid[PID]: MESSAGE) or json (one object per line, same fields; what gatehouse serve reads from its daemon)',
    defaultText: DEFAULT_LOG_FORMAT,
  },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export function cgidUsage(): string {
  return [
    'usage: gatehouse cgid [options]            the CGI daemon on ScriptSock',
    '       gatehouse cgid --fastcgi ADDR [options]   CGI scripts as a FastCGI responder (for nginx)',
    '',
    'options:',
    ...optionHelpRows(CGID_OPTIONS),
    '',
    'Sizes are bytes or 512K, 64M, 2G; times 20 (seconds), 20s, 500ms, 2m.',
  ].join('\n');
}

/** The flags' values, read by their grammars (src/options); UsageError for any mistake. */
export function parseCgidOptions(argv: readonly string[]): Record<string, unknown> {
  return readOptionValues(splitLongOptions(argv, CGID_OPTIONS), CGID_OPTIONS);
}

/** What TERM and INT do once the daemon or the face runs; before that, a stop ends the start-up as Node's default would. */
let stopAction: ((signal: NodeJS.Signals) => void) | null = null;

export async function main(argv: string[]): Promise<number> {
  // Handlers first: a HUP during start-up must not kill the process (its default), a TERM must still stop it.
  const uninstall = handleCgidSignals({
    stop: (signal) => {
      if (stopAction) return stopAction(signal);
      // Not running yet: die of the signal, as without a handler.
      uninstall();
      process.kill(process.pid, signal);
    },
  });
  let v: Record<string, unknown>;
  try {
    v = parseCgidOptions(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const lines = error.problems.map((problem) => `gatehouse cgid: ${problem}`).join('\n');
    process.stderr.write(`${lines}\nRun 'gatehouse cgid --help' for the options.\n`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(`${cgidUsage()}\n`);
    return 0;
  }
  const run = RunLog.open(v);
  if (!run) return 1;
  const limits = scriptLimits(v);
  const launch = {
    minUid: (v['suexec-min-uid'] as number) ?? CGID_SUEXEC_MIN_UID,
    minGid: (v['suexec-min-gid'] as number) ?? CGID_SUEXEC_MIN_GID,
    log: run.line,
  };
  let plan: RunAsPlan;
  try {
    plan = cgidRunAs(v);
  } catch (error) {
    if (!(error instanceof GatehouseError)) throw error;
    process.stderr.write(`gatehouse cgid: ${error.message}\n`);
    return run.finish(error instanceof UsageError ? 2 : 1);
  }

  if (v.fastcgi !== undefined) return run.finish(await runFastCGIFace(v.fastcgi as ListenAddress, v, limits, launch, run.logger, plan));
  if (v.metrics !== undefined) {
    // The daemon's numbers are the front's to publish (gatehouse serve's metrics): it has no listener of its own.
    process.stderr.write(
      "gatehouse cgid: --metrics applies to the FastCGI face (--fastcgi); under gatehouse serve, use serve's metrics key\n",
    );
    return run.finish(2);
  }
  return runDaemon(v, limits, launch, plan, run);
}

/**
 * The log of one run, and how every way out of the run ends: finish() stops
 * listening for SIGUSR1 and closes the log, whatever the exit status.
 */
class RunLog {
  readonly logger: Logger;
  readonly line: LogLine;
  readonly #errorLog: string | undefined;
  readonly #stopReopening: () => void;

  /** Opens the log --error-log names; null (the reason written to stderr) when it cannot. */
  static open(v: Record<string, unknown>): RunLog | null {
    try {
      const logger = openLogger({
        role: 'cgid',
        level: (v['log-level'] as LogLevel | undefined) ?? DEFAULT_LOG_LEVEL,
        format: (v['log-format'] as LogFormat | undefined) ?? DEFAULT_LOG_FORMAT,
        target: (v['error-log'] as string | undefined) ?? '-',
      });
      return new RunLog(logger, v['error-log'] as string | undefined);
    } catch (error) {
      process.stderr.write(`gatehouse cgid: ${(error as Error).message}\n`);
      return null;
    }
  }

  private constructor(logger: Logger, errorLog: string | undefined) {
    this.logger = logger;
    this.line = logger.line;
    this.#errorLog = errorLog;
    // Also what keeps Node from opening its inspector on SIGUSR1.
    this.#stopReopening = onReopenSignal(async () => {
      await logger.reopen();
      logger.info('SIGUSR1: log files reopened');
    });
  }

  async finish(status: number): Promise<number> {
    this.#stopReopening();
    await this.logger.close();
    return status;
  }

  /** Failures to start go to the log (under gatehouse serve: to the front, as records); with a log file, to stderr as well. */
  cannotStart(error: unknown): Promise<number> {
    const message = (error as Error).message;
    this.logger.error(message);
    if (this.#errorLog !== undefined && this.#errorLog !== '-') process.stderr.write(`gatehouse cgid: ${message}\n`);
    return this.finish(1);
  }
}

function scriptLimits(v: Record<string, unknown>): ScriptLimits {
  return {
    cpuSeconds: (v['rlimit-cpu'] as number) ?? 0,
    memoryBytes: (v['rlimit-mem'] as number) ?? 0,
    processes: (v['rlimit-nproc'] as number) ?? 0,
    openFiles: (v['rlimit-nofile'] as number) ?? 0,
    outputBytes: (v['max-output'] as number) ?? 0,
  };
}

/**
 * Who the process runs as once its socket is bound: the FastCGI face refuses root without --user; the daemon
 * (started by gatehouse serve, which decides) keeps root unless told --user. Throws a GatehouseError (a UsageError
 * for flags that do not go together).
 */
function cgidRunAs(v: Record<string, unknown>): RunAsPlan {
  const plan = planRunAs(
    {
      user: v.user as string | undefined,
      group: v.group as string | undefined,
      socketUser: v['socket-user'] as string | undefined,
      socketGroup: v['socket-group'] as string | undefined,
    },
    CGID_RUN_AS_NAMES,
    v.fastcgi !== undefined ? { command: 'gatehouse cgid --fastcgi', what: 'every CGI script' } : null,
  );
  if (v.group !== undefined && v.user === undefined) throw new UsageError('--group: give --user too (the user to run as)');
  if (v['keep-root'] === true && v.fastcgi !== undefined)
    throw new UsageError('--keep-root is for the daemon (suexec routes); the FastCGI face runs every script as --user');
  return plan;
}

/** The daemon on ScriptSock: its socket's place and token checked, then started, then run until a stop. */
async function runDaemon(
  v: Record<string, unknown>,
  limits: ScriptLimits,
  launch: { minUid: number; minGid: number; log: LogLine },
  plan: RunAsPlan,
  run: RunLog,
): Promise<number> {
  const parentPid = typeof v['parent-pid'] === 'number' ? v['parent-pid'] : undefined;
  if (parentPid !== undefined && !dieWithParent('SIGTERM', parentPid)) {
    run.line(`the front (pid ${parentPid}) is already gone: not starting`);
    return run.finish(1);
  }
  let place: { socketPath: string; token: { token: Buffer; generated: boolean } };
  try {
    place = checkSocketAndToken(v, plan);
  } catch (error) {
    return run.cannotStart(error);
  }
  // Keeping root (for suexec routes), the daemon still runs every other script as --user, never as root.
  const keepRoot = v['keep-root'] === true && plan.account !== null;
  const daemon = new DaemonRun(
    new CgidDaemon({
      socketPath: place.socketPath,
      token: place.token.token,
      log: run.line,
      launch: keepRoot ? { ...launch, defaultRunAs: { uid: plan.account!.user.uid, gid: plan.account!.gid } } : launch,
      limits,
      ...(plan.socketOwner ? { socketOwner: plan.socketOwner } : {}),
      ...(typeof v['socket-mode'] === 'number' ? { socketMode: v['socket-mode'] } : {}),
    }),
    place.socketPath,
    run,
  );
  try {
    if (!(await daemon.start(place.token, plan, keepRoot, parentPid))) return run.finish(1);
  } catch (error) {
    daemon.abandon();
    return run.cannotStart(error);
  }
  for (const warning of plan.warnings) run.line(warning, 'warn');
  process.stdout.write(`ready ${process.pid} ${place.socketPath}\n`);
  return daemon.untilStopped(typeof v['lifeline-fd'] === 'number' ? v['lifeline-fd'] : undefined);
}

/**
 * Every check comes before any write: a daemon refused because another one answers on the socket, or because the
 * directory is unsafe, must not have replaced that daemon's token file or left one of its own behind. Creates the
 * runtime directory (0700) when --socket does not name the path; throws when a check fails.
 */
function checkSocketAndToken(v: Record<string, unknown>, plan: RunAsPlan) {
  let socketPath: string;
  if (typeof v.socket === 'string') socketPath = v.socket;
  else {
    const runtimeDir = typeof v['runtime-dir'] === 'string' ? v['runtime-dir'] : defaultRuntimeDirectory(plan.account?.user.name);
    ensureRuntimeDirectory(runtimeDir, plan.socketOwner);
    socketPath = scriptSockPath(typeof v['script-sock'] === 'string' ? v['script-sock'] : CGID_SCRIPT_SOCK, runtimeDir);
  }
  checkSocketPlace(socketPath, plan.socketOwner?.uid);
  return { socketPath, token: readToken(v['token-file'] as string | undefined) };
}

/**
 * The daemon from its bind on: started in the order its files need (socket, token file, then the privilege drop),
 * and stopped once, by TERM, INT or the lifeline: scripts terminated, the token file it wrote removed, the socket
 * keeper released, the log closed.
 */
class DaemonRun {
  readonly #daemon: CgidDaemon;
  readonly #socketPath: string;
  readonly #run: RunLog;
  #keeper: SocketKeeper | null = null;
  /** The token file this daemon wrote (removed at the stop); null when the token came from elsewhere. */
  #tokenFile: string | null = null;
  #stopping = false;

  constructor(daemon: CgidDaemon, socketPath: string, run: RunLog) {
    this.#daemon = daemon;
    this.#socketPath = socketPath;
    this.#run = run;
  }

  /** Binds, writes a generated token, then keeps root or drops to --user; false when the front died meanwhile (stopped again). */
  async start(token: { token: Buffer; generated: boolean }, plan: RunAsPlan, keepRoot: boolean, parentPid: number | undefined) {
    const log = this.#run.line;
    this.#daemon.start();
    // Written once the socket is ours (bind succeeded): a daemon that lost a race for the path never touches it.
    if (token.generated) {
      writeTokenFile(`${this.#socketPath}.token`, token.token);
      this.#tokenFile = `${this.#socketPath}.token`;
    }
    if (keepRoot) log(`keeping root for suexec routes; other scripts run as ${describeAccount(plan.account!)}`, 'info');
    else if (plan.account && !runsAs(plan.account)) {
      // Files --user could not remove at the stop (an existing root directory) are left to a keeper that stays root.
      const files = token.generated ? [this.#socketPath, `${this.#socketPath}.token`] : [this.#socketPath];
      this.#keeper = SocketKeeper.start(files, plan.account);
      dropPrivileges(plan.account);
      // Changing credentials clears the parent-death signal (prctl(2)): set it again, or the daemon would outlive its front.
      if (parentPid !== undefined && !dieWithParent('SIGTERM', parentPid)) {
        log(`the front (pid ${parentPid}) is already gone: not starting`);
        await this.#daemon.stop();
        await this.#keeper?.release();
        return false;
      }
      log(`running as ${describeAccount(plan.account)}`, 'info');
    }
    return true;
  }

  /** After a failed start: stops what started, without waiting (the caller reports the failure meanwhile). */
  abandon(): void {
    void this.#daemon.stop().then(() => this.#keeper?.release());
  }

  /** Serves until TERM, INT or the end of the lifeline; the exit status. */
  untilStopped(lifelineFd: number | undefined): Promise<number> {
    return new Promise<number>((resolve) => {
      const stop = (signal: NodeJS.Signals) => this.#stop(signal, resolve);
      stopAction = stop;
      if (lifelineFd !== undefined) watchLifeline(lifelineFd, () => stop('SIGTERM'), this.#run.line);
    });
  }

  #stop(signal: NodeJS.Signals, resolve: (status: number) => void): void {
    if (this.#stopping) return;
    this.#stopping = true;
    const log = this.#run.line;
    log(`${signal}: terminating ${this.#daemon.running} script(s) and exiting`, 'info');
    void this.#daemon
      .stop()
      .then(async () => {
        if (this.#tokenFile) {
          try {
            unlinkSync(this.#tokenFile);
          } catch {
            /* already gone, or left to the keeper */
          }
        }
        for (const line of (await this.#keeper?.release()) ?? []) log(`socket keeper: ${line}`, 'info');
        return this.#run.finish(0);
      })
      .then((status) => {
        resolve(status);
        setTimeout(() => process.exit(status), 100).unref();
      });
  }
}

/**
 * Calls `onGone` when the pipe on `fd` reaches end of file or fails: the
 * front holding its other end exited, however it exited. Held unreferenced,
 * so it never keeps the daemon alive by itself.
 */
function watchLifeline(fd: number, onGone: () => void, log: LogLine): void {
  let lifeline: net.Socket;
  try {
    lifeline = new net.Socket({ fd, readable: true, writable: false });
  } catch (error) {
    log(`--lifeline-fd ${fd}: ${(error as Error).message}; the daemon relies on its parent-death signal alone`, 'warn');
    return;
  }
  let gone = false;
  const end = () => {
    if (gone) return;
    gone = true;
    log('the front that started this daemon is gone (its lifeline closed)', 'info');
    onGone();
  };
  lifeline.on('end', end);
  lifeline.on('close', end);
  lifeline.on('error', end);
  lifeline.resume();
  lifeline.unref();
}

/** How cgid's messages name the account options. */
const CGID_RUN_AS_NAMES = { user: '--user', group: '--group', socketUser: '--socket-user', socketGroup: '--socket-group' };

/**
 * The instance token: $GATEHOUSE_CGID_TOKEN (hex, removed from the
 * environment), a token file, or a new one (`generated`: the caller writes it
 * next to the socket once the socket is bound). Reads, never writes.
 */
function readToken(tokenFile: string | undefined): { token: Buffer; generated: boolean } {
  const fromEnvironment = process.env.GATEHOUSE_CGID_TOKEN;
  delete process.env.GATEHOUSE_CGID_TOKEN;
  if (fromEnvironment) {
    if (!/^([0-9a-f]{2}){16,}$/i.test(fromEnvironment))
      throw new GatehouseError(ErrorCode.CGID_SETUP, 'GATEHOUSE_CGID_TOKEN must be at least 32 hex digits');
    return { token: Buffer.from(fromEnvironment, 'hex'), generated: false };
  }
  if (tokenFile) {
    const stat = statSync(tokenFile);
    if ((stat.mode & 0o077) !== 0)
      throw new GatehouseError(
        ErrorCode.CGID_SETUP,
        `the token file ${tokenFile} is readable or writable by others (mode ${(stat.mode & 0o777).toString(8)}): run 'chmod 600 ${tokenFile}'`,
      );
    const text = readFileSync(tokenFile, 'utf8').trim();
    if (!/^([0-9a-f]{2}){16,}$/i.test(text))
      throw new GatehouseError(ErrorCode.CGID_SETUP, `the token file ${tokenFile} must hold at least 32 hex digits`);
    return { token: Buffer.from(text, 'hex'), generated: false };
  }
  return { token: newInstanceToken(CGID_TOKEN_BYTES), generated: true };
}

/**
 * Writes a generated token, mode 0600 from creation, to a private name first
 * and then renamed over `file` (a stale one left by a daemon that died): a
 * reader sees the old file or the whole new one, never a half-written one.
 */
function writeTokenFile(file: string, token: Buffer): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${token.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    renameSync(temporary, file);
  } catch (error) {
    unlinkSync(temporary);
    throw error;
  }
}

async function runFastCGIFace(
  requested: ListenAddress,
  v: Record<string, unknown>,
  limits: ScriptLimits,
  launch: { minUid: number; minGid: number; log: LogLine },
  logger: Logger,
  plan: RunAsPlan,
): Promise<number> {
  const log = logger.line;
  // Imported here, not at the top: the daemon serve starts never needs node:http, the FastCGI worker
  // library or the script log, and every module loaded stays in its memory (issue 17: idle RSS).
  const [{ createFastCGIFace }, { ScriptLog }] = await Promise.all([import('../cgid/fastcgi-face.js'), import('../cgi/script-log.js')]);
  // The face runs its scripts itself: once it runs as --user, so do they.
  const scriptLog =
    typeof v['script-log'] === 'string'
      ? new ScriptLog({
          path: v['script-log'],
          maxLength: (v['script-log-length'] as number) ?? CGI_SCRIPT_LOG_LENGTH,
          bodyBytes: (v['script-log-buffer'] as number) ?? CGI_SCRIPT_LOG_BUFFER,
          onError: (error) => log(`cannot write the script log ${String(v['script-log'])}: ${error.message}`),
        })
      : undefined;
  let spawner: ScriptSpawner = new PosixSpawnSpawner({ limits }, launch);
  let metrics: FaceMetrics | null = null;
  if (v.metrics !== undefined) {
    try {
      metrics = await (await import('../metrics/cgid.js')).openFaceMetrics(v.metrics as ListenAddress, (line) => log(line, 'warn'));
    } catch (error) {
      process.stderr.write(`gatehouse cgid: ${(error as Error).message}\n`);
      return 1;
    }
    spawner = metrics.meter(spawner);
    log(`metrics on ${metrics.describe()} (/metrics for Prometheus, /status for gatehouse status)`, 'info');
  }
  const server = createFastCGIFace({
    spawner,
    timeoutMs: (v['script-timeout'] as number) ?? CGI_SCRIPT_TIMEOUT_MS,
    ...(v['query-arguments'] === true ? { queryArguments: true } : {}),
    ...(scriptLog ? { scriptLog } : {}),
    log,
    server: { sendTimeoutMs: (v['send-timeout'] as number) ?? HTTP_SEND_TIMEOUT_MS },
  });
  server.on('connectionError', (error: Error) => log(error.message, 'warn'));
  const face = new FaceRun(server, log, scriptLog, metrics);
  const failed = await face.listen(requested, typeof v['socket-mode'] === 'number' ? v['socket-mode'] : undefined, plan);
  if (failed !== null) return failed;
  face.announce(requested, plan);
  return face.untilStopped();
}

// Types only, erased from the output: runFastCGIFace loads these modules when the face runs (issue 17).
type FastCGIServer = import('../fastcgi/worker/server.js').FastCGIServer;
type ScriptLog = import('../cgi/script-log.js').ScriptLog;

/**
 * The FastCGI face from its listen on: bound (as root, when started so), then
 * run as --user, and stopped once by TERM or INT: no new connections, the
 * requests in flight finished (or cut after CGID_FASTCGI_STOP_GRACE_MS), then
 * the socket removed, the keeper released, the script log and metrics flushed.
 */
class FaceRun {
  readonly #server: FastCGIServer;
  readonly #log: LogLine;
  readonly #scriptLog: ScriptLog | undefined;
  readonly #metrics: FaceMetrics | null;
  #listening: Awaited<ReturnType<FastCGIServer['listenOn']>> | null = null;
  #keeper: SocketKeeper | null = null;
  #switching = false;
  #stopping = false;
  #exiting = false;

  constructor(server: FastCGIServer, log: LogLine, scriptLog: ScriptLog | undefined, metrics: FaceMetrics | null) {
    this.#server = server;
    this.#log = log;
    this.#scriptLog = scriptLog;
    this.#metrics = metrics;
  }

  /** Binds (or takes systemd's socket), then drops to --user; an exit status when either fails, having closed what opened. */
  async listen(requested: ListenAddress, socketMode: number | undefined, plan: RunAsPlan): Promise<number | null> {
    this.#switching = plan.account !== null && !runsAs(plan.account);
    try {
      const addresses = resolveActivatedAddress(requested);
      if (addresses.length !== 1)
        throw new UsageError(
          `--fastcgi ${formatListenAddress(requested)}: systemd passed ${addresses.length} sockets; name one with systemd:NAME (FileDescriptorName=)`,
        );
      const listening = await this.#server.listenOn(addresses[0]!, {
        unix: { ...(socketMode !== undefined ? { mode: socketMode } : {}), ...(plan.socketOwner ? { owner: plan.socketOwner } : {}) },
      });
      this.#listening = listening;
      // A socket --user could not remove at the stop (root's directory) is left to a keeper that stays root.
      if (this.#switching && listening.address.kind === 'unix') this.#keeper = SocketKeeper.start([listening.address.path], plan.account);
      if (this.#switching) dropPrivileges(plan.account!);
      return null;
    } catch (error) {
      if (!(error instanceof GatehouseError)) throw error;
      process.stderr.write(`gatehouse cgid: ${error.message}\n`);
      this.#server.close();
      if (this.#keeper) for (const line of await this.#keeper.release()) this.#log(`socket keeper: ${line}`, 'info');
      await this.#metrics?.close();
      return error instanceof UsageError ? 2 : 1;
    }
  }

  /** Logs how it runs, serves the metrics, and tells the starter (stdout) and systemd that it is ready. */
  announce(requested: ListenAddress, plan: RunAsPlan): void {
    const listening = this.#listening!;
    if (listening.replacedStale)
      this.#log(`replaced a stale socket at ${formatListenAddress(listening.address)} (nothing was accepting on it)`, 'info');
    if (this.#switching) this.#log(`running as ${describeAccount(plan.account!)}`, 'info');
    for (const warning of plan.warnings) this.#log(warning, 'warn');
    this.#metrics?.serve(this.#server);
    process.stdout.write(
      `ready ${process.pid} ${formatListenAddress(requested.kind === 'unix' || requested.kind === 'tcp' ? listening.address : requested)}\n`,
    );
    notifySystemd('READY=1', `STATUS=serving CGI scripts over FastCGI on ${formatListenAddress(listening.address)}`);
  }

  /** Serves until TERM or INT; the exit status. */
  untilStopped(): Promise<number> {
    return new Promise<number>((resolve) => {
      stopAction = (signal) => this.#stop(signal, resolve);
    });
  }

  #stop(signal: NodeJS.Signals, resolve: (status: number) => void): void {
    if (this.#stopping) return;
    this.#stopping = true;
    const server = this.#server;
    notifySystemd('STOPPING=1');
    this.#log(`${signal}: finishing ${server.activeRequests} request(s), then exiting`, 'info');
    server.close();
    const exit = () => this.#exit(resolve);
    if (server.activeRequests === 0) exit();
    else {
      server.once('drained', exit);
      setTimeout(() => {
        server.closeAllConnections();
        exit();
      }, CGID_FASTCGI_STOP_GRACE_MS).unref();
    }
  }

  /** Once the requests are done (drained) or cut (the grace ran out), whichever comes first. */
  #exit(resolve: (status: number) => void): void {
    if (this.#exiting) return;
    this.#exiting = true;
    this.#listening!.removeSocket();
    // Script log entries of the last requests are written before the logs close.
    const removed = this.#keeper?.release().then((lines) => {
      for (const line of lines) this.#log(`socket keeper: ${line}`, 'info');
    });
    void Promise.all([this.#scriptLog?.flushed(), this.#metrics?.close(), removed]).then(() => {
      resolve(0);
      setTimeout(() => process.exit(0), 1000).unref();
    });
  }
}

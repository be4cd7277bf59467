/**
 * kfcgi's command line: ONE typed table of options. The same table parses
 * argv, prints --help, and is checked against man/gatehouse-kfcgi.8 by a unit
 * test, so the manual and the code cannot drift apart (as kfcgi's did: its
 * manual says 3 workers, its code started 5).
 *
 * Parsing is getopt-style: options end at the first non-option word (`prog`)
 * or at `--`, so `prog`'s own arguments are never taken for ours. Flags may be
 * bundled (`-dv`), values attached (`-n4`) or separate (`-n 4`); every short
 * option also has a long name (`--workers 4`, `--workers=4`).
 *
 * Values are read by the grammars every command shares (src/options): whole
 * numbers with their ranges here, and -s by the address grammar, which for
 * kfcgi takes any path as kfcgi(8) does, and HOST:PORT.
 *
 * parseCommandLine() is pure. validateOptions() looks at the system (users,
 * the jail, the program) and returns every problem with what to change.
 */
import { existsSync, statSync, accessSync, constants as fsConstants } from 'node:fs';
import { isAbsolute, join, resolve, dirname, basename } from 'node:path';
import net from 'node:net';
import { type AddressGrammar, KFCGI_SOCKET_ADDRESS, METRICS_ADDRESS, parseListenAddress } from '../options/listen-address.js';
import { readValue, type ValueKind } from '../options/values.js';
import {
  KFCGI_DEFAULT_IDLE_SECONDS,
  KFCGI_DEFAULT_JAIL,
  KFCGI_DEFAULT_SOCKET_PATH,
  KFCGI_DEFAULT_WORKERS,
  KFCGI_MAX_WORKERS,
  KFCGI_MAX_WORKER_CONNECTIONS,
} from '../limits.js';
import { UsageError } from '../errors.js';
import { DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log/index.js';
import { isRoot, lookupUser, type ListenAddress, type UserEntry } from '../sys/index.js';

export { UsageError };

export interface OptionSpec {
  short: string;
  long: string;
  /** A value grammar of src/options: 'flag' takes no value; 'integer' and 'string' are kfcgi(8)'s. */
  kind: ValueKind;
  /** The value's name in usage and in the manual (`Ar backlog`). */
  metavar?: string;
  /** One line for --help. */
  help: string;
  /** The default, as --help shows it. */
  defaultText?: string;
  /** The words a 'choice' takes. */
  choices?: readonly string[];
  /** Inclusive range for integers. */
  min?: number;
  max?: number;
  /** What an address option may be. */
  address?: AddressGrammar;
  /** Not in kfcgi(8): a gatehouse addition (the manual says so). */
  gatehouse?: boolean;
}

/** The options, in kfcgi(8)'s order, then gatehouse's additions. */
export const OPTIONS = [
  { short: 'd', long: 'foreground', kind: 'flag', help: 'stay in the foreground and also log to standard error' },
  {
    short: 'r',
    long: 'variable',
    kind: 'flag',
    help: 'variable-sized pool (workers must implement the FastCGI Extensions for Management Control)',
  },
  {
    short: 'D',
    long: 'dynamic',
    kind: 'flag',
    help: 'dynamic pool of any FastCGI program: workers accept on the socket as in a fixed pool; grows to -N while connections wait, releases workers that used no CPU for -w seconds',
    gatehouse: true,
  },
  { short: 'v', long: 'verbose', kind: 'flag', help: 'log more (every connection handed over, every worker state change)' },
  {
    short: 'l',
    long: 'backlog',
    kind: 'integer',
    metavar: 'backlog',
    min: 1,
    max: 2 ** 31 - 1,
    help: 'listen backlog',
    defaultText: 'net.core.somaxconn',
  },
  {
    short: 'n',
    long: 'workers',
    kind: 'integer',
    metavar: 'workers',
    min: 1,
    max: KFCGI_MAX_WORKERS,
    help: 'workers started (the minimum of a variable or dynamic pool)',
    defaultText: String(KFCGI_DEFAULT_WORKERS),
  },
  {
    short: 'N',
    long: 'max-workers',
    kind: 'integer',
    metavar: 'maxworkers',
    min: 1,
    max: KFCGI_MAX_WORKERS,
    help: 'largest size of a variable or dynamic pool',
    defaultText: '2 x workers',
  },
  {
    short: 'p',
    long: 'jail',
    kind: 'string',
    metavar: 'chroot',
    help: 'file-system jail (chroot); -p / for none',
    defaultText: KFCGI_DEFAULT_JAIL,
  },
  {
    short: 's',
    long: 'socket',
    kind: 'string',
    metavar: 'sockpath',
    help: 'unix socket path, or host:port for TCP',
    defaultText: KFCGI_DEFAULT_SOCKET_PATH,
  },
  {
    short: 'u',
    long: 'socket-user',
    kind: 'string',
    metavar: 'sockuser',
    help: 'owner (user and group) of the socket',
    defaultText: 'the current user',
  },
  {
    short: 'U',
    long: 'user',
    kind: 'string',
    metavar: 'procuser',
    help: 'user the manager and its workers run as',
    defaultText: 'the current user',
  },
  {
    short: 'w',
    long: 'wait',
    kind: 'integer',
    metavar: 'waittime',
    min: 0,
    max: 2 ** 31 - 1,
    help: 'seconds a worker above -n may stay idle before it is released',
    defaultText: String(KFCGI_DEFAULT_IDLE_SECONDS),
  },
  {
    short: 'R',
    long: 'max-requests',
    kind: 'integer',
    metavar: 'maxrequests',
    min: 0,
    max: 2 ** 31 - 1,
    help: 'variable pool: replace a worker after this many connections (0: never)',
    defaultText: '0',
    gatehouse: true,
  },
  {
    short: 'C',
    long: 'worker-connections',
    kind: 'integer',
    metavar: 'conns',
    min: 1,
    max: KFCGI_MAX_WORKER_CONNECTIONS,
    help: "variable pool: connections one worker is given at once (1 is kcgi's model; more for workers that multiplex, such as the gatehouse worker library)",
    defaultText: '1',
    gatehouse: true,
  },
  {
    short: 'S',
    long: 'status-socket',
    kind: 'string',
    metavar: 'statuspath',
    help: 'unix socket answering pool status (read with: gatehouse status statuspath)',
    defaultText: 'none',
    gatehouse: true,
  },
  {
    short: 'M',
    long: 'metrics',
    kind: 'address',
    address: METRICS_ADDRESS,
    metavar: 'addr',
    help: 'serve Prometheus metrics (/metrics) and the status (/status, read with: gatehouse status addr) on HOST:PORT or unix:PATH',
    defaultText: 'off',
    gatehouse: true,
  },
  {
    short: 'a',
    long: 'web-server-addrs',
    kind: 'string',
    metavar: 'addrs',
    help: 'comma-separated web server addresses allowed to connect over TCP (FCGI_WEB_SERVER_ADDRS)',
    defaultText: "the environment's FCGI_WEB_SERVER_ADDRS",
    gatehouse: true,
  },
  {
    short: 'E',
    long: 'error-log',
    kind: 'string',
    metavar: 'logfile',
    help: 'log to this file instead of the system log (reopened on SIGUSR1)',
    defaultText: 'the system log; standard error when there is no /dev/log',
    gatehouse: true,
  },
  {
    short: 'L',
    long: 'log-level',
    kind: 'choice',
    choices: LOG_LEVELS,
    metavar: 'level',
    help: `least serious messages logged: ${LOG_LEVELS.join(', ')} (-v is debug)`,
    defaultText: DEFAULT_LOG_LEVEL,
    gatehouse: true,
  },
  {
    short: 'F',
    long: 'log-format',
    kind: 'choice',
    choices: LOG_FORMATS,
    metavar: 'format',
    help: 'lines on standard error and in -E as text (TIME LEVEL kfcgi[PID]: MESSAGE) or json (one object per line, same fields)',
    defaultText: DEFAULT_LOG_FORMAT,
    gatehouse: true,
  },
  { short: 'h', long: 'help', kind: 'flag', help: 'print this help and exit', gatehouse: true },
] as const satisfies readonly OptionSpec[];

type Spec = (typeof OPTIONS)[number];
type ValueOf<S extends Spec> = S['kind'] extends 'flag'
  ? boolean
  : S['kind'] extends 'integer' | 'size' | 'duration'
    ? number
    : S['kind'] extends 'address'
      ? ListenAddress
      : string;
/** What the command line said, keyed by long name; absent means not given. */
export type RawOptions = { -readonly [S in Spec as S['long']]?: ValueOf<S> };

export interface CommandLine {
  options: RawOptions;
  /** prog and its arguments (everything from the first non-option word). */
  program: string[];
}

const byShort = new Map<string, OptionSpec>(OPTIONS.map((spec) => [spec.short, spec]));
const byLong = new Map<string, OptionSpec>(OPTIONS.map((spec) => [spec.long, spec]));

/** Reads an option's value by its grammar; a mistake names the option (-n workers: expected ...). */
function convert(spec: OptionSpec, value: string): unknown {
  const result = readValue(spec, value);
  if ('problem' in result) throw new UsageError(`-${spec.short} ${spec.metavar ?? ''}: ${result.problem}`.replace(' :', ':'));
  return result.value;
}

/** Splits argv into our options and `prog [arg ...]` (getopt-style: options stop at the first non-option). */
export function parseCommandLine(argv: readonly string[]): CommandLine {
  const options: Record<string, unknown> = {};
  const set = (spec: OptionSpec, value: unknown) => {
    options[spec.long] = value;
  };
  let index = 0;
  while (index < argv.length) {
    const word = argv[index]!;
    if (word === '--') {
      index += 1;
      break;
    }
    if (!word.startsWith('-') || word === '-') break;
    index += 1;
    if (word.startsWith('--')) {
      const equals = word.indexOf('=');
      const name = word.slice(2, equals === -1 ? undefined : equals);
      const spec = byLong.get(name);
      if (!spec) throw new UsageError(`unknown option --${name}; see gatehouse kfcgi --help`);
      if (spec.kind === 'flag') {
        if (equals !== -1) throw new UsageError(`--${name} takes no value`);
        set(spec, true);
        continue;
      }
      const value: string | undefined = equals === -1 ? argv[index++] : word.slice(equals + 1);
      if (value === undefined) throw new UsageError(`--${name} needs a value (${spec.metavar})`);
      set(spec, convert(spec, value));
      continue;
    }
    for (let position = 1; position < word.length; position += 1) {
      const letter = word[position]!;
      const spec = byShort.get(letter);
      if (!spec) throw new UsageError(`unknown option -${letter}; see gatehouse kfcgi --help`);
      if (spec.kind === 'flag') {
        set(spec, true);
        continue;
      }
      const attached = word.slice(position + 1);
      const value = attached !== '' ? attached : argv[index++];
      if (value === undefined) throw new UsageError(`-${letter} needs a value (${spec.metavar})`);
      set(spec, convert(spec, value));
      break;
    }
  }
  return { options: options as RawOptions, program: argv.slice(index) };
}

export function usageLine(): string {
  const flags = OPTIONS.filter((spec) => spec.kind === 'flag' && spec.short !== 'h')
    .map((spec) => spec.short)
    .join('');
  const valued = OPTIONS.filter((spec) => spec.kind !== 'flag').map((spec) => `[-${spec.short} ${spec.metavar}]`);
  return `usage: gatehouse kfcgi [-${flags}] ${valued.join(' ')} prog [arg ...]\n       gatehouse kfcgi status statuspath | addr`;
}

export function helpText(): string {
  const rows = OPTIONS.map((spec) => {
    const left = `  -${spec.short}${'metavar' in spec ? ` ${spec.metavar}` : ''}, --${spec.long}${'metavar' in spec ? ` ${spec.metavar}` : ''}`;
    const right = `${spec.help}${'defaultText' in spec ? ` (default: ${spec.defaultText})` : ''}`;
    return { left, right };
  });
  const width = Math.max(...rows.map((row) => row.left.length));
  return [
    usageLine(),
    '',
    'A FastCGI process manager (kfcgi(8)): binds the socket, enters the jail, drops',
    'privileges and keeps a pool of prog workers running. SIGTERM stops it (and',
    'removes the socket), SIGHUP restarts the workers one at a time, SIGUSR1',
    "reopens -E's log file.",
    '',
    ...rows.map((row) => `${row.left.padEnd(width)}  ${row.right}`),
    '',
    'See man/gatehouse-kfcgi.8.',
  ].join('\n');
}

/** Everything kfcgi needs to start, validated. */
export interface KfcgiConfig {
  foreground: boolean;
  verbose: boolean;
  /** -L, or debug with -v. */
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** -E: a log file instead of the system log. */
  errorLog: string | null;
  variable: boolean;
  /** -D: a dynamic pool of workers accepting on the shared socket. */
  dynamic: boolean;
  /** null: the system's maximum (net.core.somaxconn), read at start. */
  backlog: number | null;
  workers: number;
  maxWorkers: number;
  idleSeconds: number;
  maxRequests: number;
  connectionsPerWorker: number;
  /** Absolute path of the jail; '/' means no chroot. */
  jail: string;
  listen: ListenAddress;
  statusPath: string | null;
  /** -M: the metrics listener (Prometheus and gatehouse status), or null (off). */
  metrics: ListenAddress | null;
  socketUser: UserEntry | null;
  processUser: UserEntry | null;
  webServerAddrs: string | null;
  /** prog as the workers see it (inside the jail), and where it is now. */
  program: string;
  programOutsideJail: string;
  args: string[];
  /** Non-fatal remarks (options that do not apply), logged at start. */
  warnings: string[];
}

function findUser(name: string, flag: string): UserEntry {
  const user = /^\d+$/.test(name) ? null : lookupUser(name);
  if (!user) throw new UsageError(`${flag} ${name}: no such user; create it or name an existing user (see /etc/passwd)`);
  return user;
}

/**
 * What validation found so far. Every check adds to it instead of throwing,
 * so validateOptions() reports every problem at once (a user fixes them in one
 * go); the checks run in a fixed order, which is the order of the lines.
 */
class Findings {
  /** Fatal: the start is refused with all of them. */
  readonly problems: string[] = [];
  /** Options that do not apply: logged at start. */
  readonly warnings: string[] = [];

  /** Runs a check that throws UsageError, keeping its message as a problem; null when it failed. */
  attempt<T>(check: () => T): T | null {
    try {
      return check();
    } catch (error) {
      if (error instanceof UsageError) {
        this.problems.push(error.message);
        return null;
      }
      throw error;
    }
  }
}

/**
 * Turns parsed options into a config, checking everything that can be
 * checked before touching the system. Throws UsageError with every problem
 * found (one per line) so a user fixes them in one go.
 */
export function validateOptions(
  commandLine: CommandLine,
  environment: NodeJS.ProcessEnv = process.env,
  /** systemd passed the pool's socket (socket activation): -s is not bound, so its directory is not checked. */
  { socketActivated = false }: { socketActivated?: boolean } = {},
): KfcgiConfig {
  const { options, program } = commandLine;
  const found = new Findings();
  const pool = checkPoolKind(options, found);
  if (program.length === 0)
    found.problems.push('no prog given: name the FastCGI program to run, e.g. gatehouse kfcgi -d -p / -s /run/app.sock /usr/bin/php-cgi');
  const jail = checkJail(options, found);
  const sockets = checkSockets(options, socketActivated, found);
  const errorLog = checkErrorLog(options, found);
  const users = checkUsers(options, sockets.listen, found);
  const webServerAddrs = checkWebServerAddrs(options, environment, sockets.listen, found);
  const prog = checkProgram(program, jail, pool.variable, found);
  if (found.problems.length > 0) throw new UsageError(found.problems);
  return {
    foreground: options.foreground === true,
    verbose: options.verbose === true,
    logLevel: (options['log-level'] as LogLevel | undefined) ?? (options.verbose === true ? 'debug' : DEFAULT_LOG_LEVEL),
    logFormat: (options['log-format'] as LogFormat | undefined) ?? DEFAULT_LOG_FORMAT,
    errorLog,
    variable: pool.variable,
    dynamic: pool.dynamic,
    backlog: options.backlog ?? null,
    workers: pool.workers,
    maxWorkers: pool.variable || pool.dynamic ? pool.maxWorkers : pool.workers,
    idleSeconds: options.wait ?? KFCGI_DEFAULT_IDLE_SECONDS,
    maxRequests: options['max-requests'] ?? 0,
    connectionsPerWorker: options['worker-connections'] ?? 1,
    jail,
    // Not null: a listen address that did not parse is a problem, and problems were thrown above.
    listen: sockets.listen!,
    statusPath: sockets.statusPath,
    metrics: sockets.metrics,
    socketUser: users.socketUser,
    processUser: users.processUser,
    webServerAddrs,
    program: prog.inside,
    programOutsideJail: prog.outside,
    args: program.slice(1),
    warnings: found.warnings,
  };
}

/** -r, -D, -n, -N and the options that apply to one kind of pool only. */
function checkPoolKind(options: RawOptions, found: Findings) {
  const { problems, warnings } = found;
  const variable = options.variable === true;
  const dynamic = options.dynamic === true;
  if (variable && dynamic)
    problems.push(
      '-r and -D are two kinds of pool: -r for workers of the FastCGI Extensions for Management Control, -D for any FastCGI program; choose one',
    );
  const workers = options.workers ?? KFCGI_DEFAULT_WORKERS;
  const maxWorkers = options['max-workers'] ?? workers * 2;
  if (options['max-workers'] !== undefined && maxWorkers < workers) {
    problems.push(
      `-N ${maxWorkers} is below -n ${workers}: a variable or dynamic pool grows from -n up to -N; raise -N to at least ${workers} or lower -n`,
    );
  }
  if (!variable && !dynamic) {
    if (options['max-workers'] !== undefined)
      warnings.push(`-N ${maxWorkers} applies only to variable (-r) and dynamic (-D) pools; the fixed pool keeps ${workers} workers`);
    if (options.wait !== undefined) warnings.push('-w applies only to variable (-r) and dynamic (-D) pools; ignored');
  }
  if (!variable) {
    if (options['worker-connections'] !== undefined)
      problems.push('-C sets how many connections the manager hands one worker, which happens only in a variable pool: add -r or drop -C');
    if (options['max-requests'])
      problems.push(
        '-R counts connections the manager hands to workers, which happens only in a variable pool: add -r (with a worker that implements the extension) or drop -R',
      );
  }
  return { variable, dynamic, workers, maxWorkers };
}

/** -p: an existing directory, and root to enter it (chroot(2)) unless it is /. */
function checkJail(options: RawOptions, { problems }: Findings): string {
  const jail = resolve(options.jail ?? KFCGI_DEFAULT_JAIL);
  if (!existsSync(jail)) problems.push(`the jail ${jail} does not exist: create it, or pass -p DIR (-p / to run without a jail)`);
  else if (!statSync(jail).isDirectory()) problems.push(`the jail ${jail} is not a directory: pass -p DIR`);
  else if (jail !== '/' && !isRoot())
    problems.push(`entering the jail ${jail} needs root (chroot(2)): run as root, or pass -p / to run without a jail`);
  return jail;
}

/** -s, -S and -M: each parses, its directory exists, and no two of them are the same socket. */
function checkSockets(options: RawOptions, socketActivated: boolean, found: Findings) {
  const { problems } = found;
  const listen = found.attempt(() => {
    const address = parseListenAddress(options.socket ?? KFCGI_DEFAULT_SOCKET_PATH, KFCGI_SOCKET_ADDRESS);
    if (typeof address === 'string') throw new UsageError(`-s ${address}`);
    return address;
  });
  if (listen?.kind === 'unix' && !socketActivated) {
    const directory = dirname(listen.path);
    if (!existsSync(directory)) problems.push(`the socket's directory ${directory} does not exist: create it or choose another -s path`);
    if (Buffer.byteLength(listen.path) >= 108) problems.push(`-s ${listen.path}: unix socket paths must be shorter than 108 bytes`);
  }
  const statusPath = options['status-socket'] !== undefined ? resolve(options['status-socket']) : null;
  if (statusPath !== null && !existsSync(dirname(statusPath)))
    problems.push(`the status socket's directory ${dirname(statusPath)} does not exist: create it or choose another -S path`);
  if (statusPath !== null && listen?.kind === 'unix' && statusPath === listen.path) problems.push('-S must differ from -s');

  const metrics = options.metrics ?? null;
  if (metrics?.kind === 'unix') {
    if (!existsSync(dirname(metrics.path)))
      problems.push(`-M ${metrics.path}: the directory ${dirname(metrics.path)} does not exist: create it or choose another path`);
    if ((listen?.kind === 'unix' && metrics.path === listen.path) || metrics.path === statusPath)
      problems.push('-M must differ from -s and -S');
  }
  if (metrics?.kind === 'tcp' && listen?.kind === 'tcp' && metrics.port === listen.port && metrics.port !== 0)
    problems.push(`-M ${metrics.host}:${metrics.port}: the port is the pool's own (-s); choose another`);
  return { listen, statusPath, metrics };
}

/** -E: its directory exists (the file is opened at start). */
function checkErrorLog(options: RawOptions, { problems }: Findings): string | null {
  const errorLog = options['error-log'] !== undefined ? resolve(options['error-log']) : null;
  if (errorLog !== null && !existsSync(dirname(errorLog)))
    problems.push(`-E ${errorLog}: the directory ${dirname(errorLog)} does not exist: create it or choose another log file`);
  return errorLog;
}

/** -u and -U: existing users, and root to become or give a socket to another one. */
function checkUsers(options: RawOptions, listen: ListenAddress | null, found: Findings) {
  const { problems, warnings } = found;
  const currentUid = process.getuid?.() ?? 0;
  const socketUser = options['socket-user'] !== undefined ? found.attempt(() => findUser(options['socket-user']!, '-u')) : null;
  const processUser = options.user !== undefined ? found.attempt(() => findUser(options.user!, '-U')) : null;
  if (socketUser && socketUser.uid !== currentUid && !isRoot())
    problems.push(`-u ${socketUser.name}: giving the socket to another user needs root (chown(2)): run as root or drop -u`);
  if (processUser && processUser.uid !== currentUid && !isRoot())
    problems.push(`-U ${processUser.name}: switching to another user needs root (setuid(2)): run as root or drop -U`);
  if (socketUser && listen?.kind === 'tcp') warnings.push('-u sets the owner of a unix socket; with a TCP address it has no effect');
  return { socketUser, processUser };
}

/** -a (or FCGI_WEB_SERVER_ADDRS): numeric addresses, for a TCP listener only; null when none apply. */
function checkWebServerAddrs(
  options: RawOptions,
  environment: NodeJS.ProcessEnv,
  listen: ListenAddress | null,
  { problems, warnings }: Findings,
): string | null {
  const webServerAddrs = options['web-server-addrs'] ?? environment.FCGI_WEB_SERVER_ADDRS ?? null;
  if (webServerAddrs === null) return null;
  const bad = webServerAddrs
    .split(',')
    .map((item) => item.trim())
    // A zone index (fe80::1%eth0) is not part of a peer's address: refused here rather than at start.
    .filter((item) => item !== '' && (!net.isIP(item) || item.includes('%')));
  if (bad.length > 0)
    problems.push(
      `-a: ${bad.join(', ')} ${bad.length === 1 ? 'is not an IP address' : 'are not IP addresses'}; list numeric addresses separated by commas`,
    );
  if (listen?.kind === 'unix') {
    if (options['web-server-addrs'] !== undefined)
      warnings.push('-a (FCGI_WEB_SERVER_ADDRS) applies to TCP listeners only; ignored for a unix socket');
    return null;
  }
  return webServerAddrs;
}

/**
 * prog: an executable file inside the jail (`inside` is its path as the
 * workers see it, `outside` where it is now), and one that can serve the
 * pool it is given. Empty paths when no prog was given (a problem already).
 */
function checkProgram(program: readonly string[], jail: string, variable: boolean, { problems }: Findings) {
  if (program.length === 0) return { inside: '', outside: '' };
  const inside = isAbsolute(program[0]!) ? program[0]! : `/${program[0]!}`;
  const outside = jail === '/' ? inside : join(jail, inside);
  if (!existsSync(outside)) {
    problems.push(
      jail === '/'
        ? `prog ${inside} does not exist`
        : `prog ${inside} was not found inside the jail ${jail} (looked for ${outside}): prog is run relative to the jail's root; copy it (and its libraries) there, or pass -p`,
    );
    return { inside, outside };
  }
  let executable: boolean;
  try {
    accessSync(outside, fsConstants.X_OK);
    executable = statSync(outside).isFile();
  } catch {
    executable = false;
  }
  if (!executable) problems.push(`prog ${outside} is not an executable file: chmod +x it or name the program itself`);
  const name = basename(inside);
  if (variable && /^(php-cgi[\d.]*|fcgiwrap|spawn-fcgi)$/.test(name)) {
    problems.push(
      `-r: ${name} does not implement the FastCGI Extensions for Management Control (FCGI_LISTENSOCK_DESCRIPTORS), so it cannot serve a variable pool: drop -r to run it in a fixed pool, or use -D for a dynamic one`,
    );
  }
  return { inside, outside };
}

/**
 * `gatehouse example`: serves the built-in example on 127.0.0.1 — a static
 * page, CGI scripts in shell and Perl, and a Node FastCGI application (the
 * worker library) reached through gatehouse's FastCGI client — so a fresh
 * checkout shows every part working with one command.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadServeConfig } from '../config/load.js';
import type { FrontSpawner } from '../serve/front-spawner.js';
import { onReopenSignal, openLogger } from '../log/index.js';
import { formatListenAddress } from '../options/listen-address.js';
import { ErrorCode, GatehouseError, UsageError } from '../errors.js';
import { type LongOption, splitLongOptions } from '../options/command-line.js';
import { EXAMPLE_APP_POLL_MS, EXAMPLE_APP_START_TIMEOUT_MS, EXAMPLE_UNPRIVILEGED_USERS } from '../limits.js';
import { type Account, describeAccount, isRoot, lookupUser, resolveAccount, takeSystemdEnvironment } from '../sys/index.js';
import { type RunningFront, startFront } from './serve.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));
/** The installed package (the FastCGI app imports it; the front's modules live in it). */
const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

const USAGE = `usage: gatehouse example [--listen HOST:PORT]

Serves the built-in example (examples/site and examples/fastcgi-app.mjs).
Started as root, it runs the front, the scripts and the app as www-data (else
nobody) and says so.
  /                   a static page linking the rest
  /cgi-bin/env.sh     a shell CGI script printing its environment
  /cgi-bin/form.pl    a Perl CGI form that POSTs to itself
  /cgi-bin/stream.sh  a script whose output streams
  /app/               a Node FastCGI application on a private unix socket
options:
  --listen HOST:PORT  where to listen (default 127.0.0.1:8080)
  --help              print this help`;

async function waitForSocket(socketPath: string, isAlive: () => boolean): Promise<void> {
  for (let waited = 0; waited < EXAMPLE_APP_START_TIMEOUT_MS; waited += EXAMPLE_APP_POLL_MS) {
    if (!isAlive()) throw new GatehouseError(ErrorCode.SERVE_SETUP, 'the example FastCGI application exited before it listened');
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(socketPath, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(EXAMPLE_APP_POLL_MS);
  }
  throw new GatehouseError(ErrorCode.SERVE_SETUP, `the example FastCGI application did not listen on ${socketPath}`);
}

const EXAMPLE_OPTIONS: LongOption[] = [
  { name: 'listen', kind: 'address', argument: 'HOST:PORT', summary: 'where to listen', defaultText: '127.0.0.1:8080' },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

/**
 * Started as root, the example runs as the first of EXAMPLE_UNPRIVILEGED_USERS
 * that exists (never its scripts as root), and says which. That user must be
 * able to read the examples and the installed package: a checkout inside a
 * private directory (/root) cannot be served by anyone else.
 */
function exampleAccount(): Account | null {
  if (!isRoot()) return null;
  const name = EXAMPLE_UNPRIVILEGED_USERS.find((candidate) => lookupUser(candidate) !== null);
  if (name === undefined)
    throw new GatehouseError(
      ErrorCode.PRIVILEGES,
      `started as root, the example runs as an unprivileged user, but none of ${EXAMPLE_UNPRIVILEGED_USERS.join(', ')} exists; create one (useradd), or run the example as an ordinary user`,
    );
  const account = resolveAccount(name);
  for (const needed of [EXAMPLES, PACKAGE_ROOT]) {
    const blocked = firstUnreadable(needed, account);
    if (blocked)
      throw new GatehouseError(
        ErrorCode.PRIVILEGES,
        `started as root, the example runs as ${name}, who cannot read ${blocked} (on the way to ${needed}); run it as an ordinary user, or from a checkout others can read (such as under /srv or /opt)`,
      );
  }
  return account;
}

/** The first directory on the way to `target` (itself included) that `account` may not search or read, or null. */
function firstUnreadable(target: string, account: Account): string | null {
  const parts = path.resolve(target).split(path.sep).filter(Boolean);
  for (let depth = 0; depth <= parts.length; depth++) {
    const dir = `/${parts.slice(0, depth).join('/')}`;
    const stat = statSync(dir);
    const bits = stat.uid === account.user.uid ? stat.mode >> 6 : account.groups.includes(stat.gid) ? stat.mode >> 3 : stat.mode;
    // Search (x) on every directory on the way; read (r) on the target, which is listed and read.
    if ((bits & 0o1) === 0 || (depth === parts.length && (bits & 0o4) === 0)) return dir;
  }
  return null;
}

export async function main(argv: string[]): Promise<number> {
  takeSystemdEnvironment();
  let values: { listen?: string; help?: boolean };
  try {
    values = splitLongOptions(argv, EXAMPLE_OPTIONS) as typeof values;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`gatehouse example: ${error.message}\nRun 'gatehouse example --help' for the options.\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  let account: Account | null;
  try {
    account = exampleAccount();
  } catch (error) {
    process.stderr.write(`gatehouse example: ${(error as Error).message}\n`);
    return 1;
  }
  const example = new ExampleRun(account);
  try {
    await example.serve(values.listen ?? '127.0.0.1:8080');
    return await example.untilStopped();
  } catch (error) {
    await example.cleanup();
    await example.closeLogs();
    if (error instanceof UsageError) {
      process.stderr.write(`gatehouse example: ${error.message}\n`);
      return 2;
    }
    if (error instanceof GatehouseError) {
      process.stderr.write(`gatehouse example: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/**
 * One run of the example: a private runtime directory, the FastCGI app (started at once), then the front. It ends
 * on INT or TERM (status 0) or when the app exits (1): the front stopped, then cleanup() (the app, the scripts, the
 * directory), then closeLogs().
 */
class ExampleRun {
  readonly #account: Account | null;
  readonly #runtime: string;
  readonly #socketPath: string;
  readonly #app: ChildProcess;
  #scripts: FrontSpawner | null = null;
  #front: RunningFront['front'] | null = null;
  #closeLogs: () => Promise<void> = async () => {};

  constructor(account: Account | null) {
    this.#account = account;
    this.#runtime = mkdtempSync(path.join(tmpdir(), 'gatehouse-example-'));
    // The user runs the FastCGI app (which makes its socket here) and the cgid daemon's socket lives here too.
    if (account) chownSync(this.#runtime, account.user.uid, account.gid);
    this.#socketPath = path.join(this.#runtime, 'app.sock');
    this.#app = spawn(process.execPath, [path.join(EXAMPLES, 'fastcgi-app.mjs'), this.#socketPath], {
      stdio: ['ignore', 'inherit', 'inherit'],
      // libuv clears the supplementary groups, then sets the gid and the uid, in the child before exec.
      ...(account ? { uid: account.user.uid, gid: account.gid } : {}),
    });
  }

  /** Once the app listens: the front, started as gatehouse serve starts it; says where it serves. */
  async serve(listen: string): Promise<void> {
    const account = this.#account;
    await waitForSocket(this.#socketPath, () => this.#app.exitCode === null && this.#app.signalCode === null);
    const config = loadServeConfig({
      flags: {
        listen: [listen],
        docroot: path.join(EXAMPLES, 'site/public'),
        'cgi-bin': path.join(EXAMPLES, 'site/cgi-bin'),
        'server-name': 'localhost',
        'script-timeout': '10s',
        // The cgid daemon's socket lives in the example's private (0700) directory.
        'runtime-dir': this.#runtime,
        ...(account ? { user: account.user.name } : {}),
        fastcgi: [{ url: '/app/', upstreams: [`unix:${this.#socketPath}`], 'script-filename': path.join(EXAMPLES, 'fastcgi-app.mjs') }],
      },
    });
    // As gatehouse serve does: scripts start through the cgid daemon, and as root everything drops to the user.
    const logger = openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog });
    this.#closeLogs = () => logger.close();
    const running = await startFront(
      config,
      { account, socketOwner: account ? { uid: account.user.uid, gid: account.gid } : undefined, warnings: [] },
      logger,
    );
    this.#scripts = running.scripts;
    const front = running.front;
    this.#front = front;
    // The front closes the logger it is given only when it made it: this one is closed after the front stops.
    const stopReopening = onReopenSignal(() => front.reopenLogs());
    this.#closeLogs = () => {
      stopReopening();
      return logger.close();
    };
    const url = running.addresses
      .map((address) => (address.kind === 'unix' ? formatListenAddress(address) : `http://${formatListenAddress(address)}/`))
      .join(' ');
    process.stderr.write(
      `gatehouse example: serving ${url}  (Ctrl-C to stop)${account ? `\n  started as root: the front, the scripts and the FastCGI app run as ${describeAccount(account)}` : ''}\n  try: curl ${url}cgi-bin/env.sh/extra?x=1   curl ${url}app/hello\n`,
    );
  }

  /** Serves until INT or TERM (0) or until the app exits (1). */
  untilStopped(): Promise<number> {
    const front = this.#front!;
    return new Promise<number>((resolve) => {
      const stop = () => {
        front
          .stop(2000)
          .then(() => this.cleanup())
          .then(() => this.closeLogs())
          .finally(() => resolve(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      this.#app.once('exit', (code, signal) => {
        front.logError(`the example FastCGI application exited (${signal ?? code}); stopping`);
        front
          .stop(2000)
          .then(() => this.cleanup())
          .then(() => this.closeLogs())
          .finally(() => resolve(1));
      });
    });
  }

  async cleanup(): Promise<void> {
    this.#app.kill('SIGTERM');
    await this.#scripts?.stop();
    rmSync(this.#runtime, { recursive: true, force: true });
  }

  closeLogs(): Promise<void> {
    return this.#closeLogs();
  }
}

/**
 * The test kit: start real peers (nginx, Apache httpd, php-fpm, spawn-fcgi,
 * cgi-fcgi, ...) on loopback with private config files in a temp dir, wait
 * until they answer, and always stop them (registered with the test's
 * `after` hook so a failing test cannot leave a server behind).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { waitFor } from './wait.js';
import { descendantsOf } from './proc.js';

/** The subset of node:test's TestContext / SuiteContext the kit needs. */
export interface Cleanup {
  after(fn: () => unknown): void;
}

export function tempDir(t: Cleanup, prefix = 'gatehouse-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A free TCP port on 127.0.0.1 (bound and released; races are rare on loopback). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export type Address = { path: string } | { host: string; port: number };

export interface ListenerWait {
  /** Who should be listening, for the failure message ("nginx", "the test app"). */
  what?: string;
  /** The process that should listen: the wait gives up when it exits, and its output explains a failure. */
  process?: RunningProcess;
  timeoutMs?: number;
  /** More to explain a failure (when no `process` is given, or besides its output). */
  context?: () => string;
}

/** Resolves once something accepts connections at `address`; rejects (naming the address, with the process's output) when it cannot. */
export async function waitForListener(address: Address, options: ListenerWait = {}): Promise<void> {
  const { process: running } = options;
  let lastError = '';
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const socket = net.connect(address as net.NetConnectOpts);
        socket.once('connect', () => {
          socket.destroy();
          // Another test's server may hold the port (freePort released it, both were given it): a listener
          // that is not this process's is not the one waited for; this one then fails to bind and says so.
          if (running?.child.pid !== undefined && 'port' in address && !listensInTree(address.port, running.child.pid)) {
            lastError = `port ${address.port} answers, but not from pid ${running.child.pid} or below it`;
            return resolve(false);
          }
          resolve(true);
        });
        socket.once('error', (error) => {
          lastError = error.message;
          resolve(false);
        });
      }),
    `${options.what ?? 'a listener'} on ${describeAddress(address)}`,
    {
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      giveUpIf: () => running !== undefined && !isRunning(running.child) && `it exited (${exitDescription(running.child)})`,
      context: () =>
        [lastError && `last connect: ${lastError}`, running?.output() ?? '', options.context?.() ?? ''].filter(Boolean).join('\n'),
    },
  );
}

/**
 * Whether the TCP socket listening on `port` (from /proc/net/tcp and tcp6) is
 * held by `pid` or a process below it. True when no listener shows there (a
 * network namespace of its own): the connect is then all there is to go by.
 */
function listensInTree(port: number, pid: number): boolean {
  const inodes = new Set<string>();
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT, st 0A is LISTEN, the inode is the 10th field.
      if (fields.length > 9 && fields[1]!.endsWith(`:${portHex}`) && fields[3] === '0A') inodes.add(fields[9]!);
    }
  }
  if (inodes.size === 0) return true;
  for (const owner of [pid, ...descendantsOf(pid)]) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${owner}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const link = readlinkSync(`/proc/${owner}/fd/${fd}`);
        if (link.startsWith('socket:[') && inodes.has(link.slice(8, -1))) return true;
      } catch {
        // closed meanwhile
      }
    }
  }
  return false;
}

function exitDescription(child: ChildProcess): string {
  return child.signalCode ? `signal ${child.signalCode}` : `status ${child.exitCode}`;
}

export function describeAddress(address: Address): string {
  return 'path' in address ? `unix:${address.path}` : `${address.host}:${address.port}`;
}

export interface RunningProcess {
  child: ChildProcess;
  /** stdout+stderr collected so far (bounded), for failure messages. */
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const OUTPUT_LIMIT = 64 * 1024;

/** Starts a process whose lifetime is tied to the test: stopped (SIGTERM, then SIGKILL) in `after`. */
export function startProcess(t: Cleanup, command: string, args: readonly string[], options: SpawnOptions = {}): RunningProcess {
  // Its own process group, so stopping it also stops what it forked (php-fpm's
  // pool, fcgiwrap's -c children, spawn-fcgi's application): no orphans.
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options });
  let output = '';
  const collect = (chunk: Buffer) => {
    if (output.length < OUTPUT_LIMIT) output += chunk.toString('utf8');
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve({ code: child.exitCode, signal: child.signalCode });
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      output += `\nspawn error: ${error.message}`;
      resolve({ code: -1, signal: null });
    });
  });
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, signal);
    } catch {
      /* the group is gone */
    }
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill(signal);
      // An unref'd timer: a test file must not wait for it once the process is gone.
      let timer: NodeJS.Timeout | undefined;
      const stopped = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 5000).unref())),
      ]);
      clearTimeout(timer);
      if (!stopped) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    // Whatever the leader left behind in its group goes too.
    signalGroup('SIGKILL');
  };
  t.after(() => stop());
  return { child, output: () => output, stop, exited };
}

/**
 * Resolves with a stopped process's whole output, once its stdout and stderr
 * ended (it, and whatever it forked that held them, closed them): `exited` is
 * the exit event, which can come before the pipes are read to the end. A check
 * that a line was NOT written reads this. Bounded like every wait.
 */
export async function outputEnded(running: RunningProcess, timeoutMs = 15_000): Promise<string> {
  const ended = (stream: Readable | null) => stream === null || stream.readableEnded || stream.destroyed;
  await waitFor(() => ended(running.child.stdout) && ended(running.child.stderr), `the end of pid ${running.child.pid}'s output`, {
    timeoutMs,
    context: () => running.output().slice(-4000),
  });
  return running.output();
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Reads a pid file written by a daemonising peer (nginx, apache, php-fpm). */
export function readPidFile(path: string): number | null {
  if (!existsSync(path)) return null;
  const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
  return Number.isFinite(pid) && pid > 0 ? pid : null;
}

/** Resident set size of a process in bytes, from /proc (Linux only). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  return match ? Number(match[1]) * 1024 : 0;
}

/** Which of these programs exist; tests of a peer that is missing fail with this message rather than pass silently. */
export function requireProgram(path: string): string {
  if (!existsSync(path))
    throw new Error(`${path} is not installed; .ci/run installs it (apt-get), run that or install the Debian package by hand`);
  return path;
}

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command that is expected to end by itself (an option error, --check,
 * a daemon's parent) and resolves with its status and output once its pipes
 * closed. Bounded: killed with SIGKILL after `timeoutMs` (default 30 s).
 */
export function runToExit(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<Finished> {
  const { timeoutMs = 30_000, ...spawnOptions } = options;
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOptions });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, signal: null, stdout, stderr: `${stderr}spawn error: ${error.message}\n` });
    });
    // 'close', not 'exit': it waits until the pipes are read to the end.
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

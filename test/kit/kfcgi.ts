/**
 * `gatehouse kfcgi` for its integration tests: compiles the C test workers,
 * starts `gatehouse kfcgi -d` (stopped after the test) and waits for its
 * workers, runs it to completion for option errors, builds jails, and sends
 * FastCGI requests with libfcgi's cgi-fcgi.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { httpRequest } from './http.js';
import { FIXTURES_BUILT, FIXTURES_SOURCE, GATEHOUSE_MAIN } from './paths.js';
import { childrenOf, commandLine } from './proc.js';
import { startProcess, tempDir, waitForListener, type Cleanup, type RunningProcess } from './process.js';
import { waitFor } from './wait.js';
import { readStatus } from '../../src/kfcgi/status.js';
import type { PoolStatus } from '../../src/metrics/status.js';

export const sourceDir = join(FIXTURES_SOURCE, 'kfcgi');
export const gatehouseMain = GATEHOUSE_MAIN;
export const nodeWorker = join(FIXTURES_BUILT, 'kfcgi/node-worker.js');
/** A variable-pool worker that writes its cookies back two at once (`together`) or in pieces (`split`). */
export const cookiePatternWorker = join(FIXTURES_BUILT, 'kfcgi/cookie-pattern-worker.js');

export interface Fixtures {
  dir: string;
  /** libfcgi responder, dynamically linked. */
  hello: string;
  /** The same, linked statically (for jails without libraries). */
  helloStatic: string;
  /** The kcgi-extension worker (variable pools). */
  kcgiExt: string;
  /** A Perl FCGI script. */
  perl: string;
  /** A CGI script for fcgiwrap, and a PHP script for php-cgi. */
  cgiScript: string;
  phpScript: string;
}

/** The fixtures of this test process: compiled once (gcc, a static link among them, takes seconds on a busy machine). */
let built: Fixtures | null = null;

/**
 * Compiles the C workers with gcc into a temp dir, once per test process; tests only read and execute them.
 * The dir is removed when the process exits.
 */
export function buildFixtures(_t: Cleanup): Fixtures {
  if (built) return built;
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-kfcgi-fixtures-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const hello = join(dir, 'hello-libfcgi');
  const helloStatic = join(dir, 'hello-libfcgi-static');
  const kcgiExt = join(dir, 'kcgi-extension-worker');
  execFileSync('gcc', ['-O2', '-o', hello, join(sourceDir, 'hello-libfcgi.c'), '-lfcgi']);
  execFileSync('gcc', ['-O2', '-static', '-o', helloStatic, join(sourceDir, 'hello-libfcgi.c'), '-lfcgi'], { stdio: 'ignore' });
  execFileSync('gcc', ['-O2', '-o', kcgiExt, join(sourceDir, 'kcgi-extension-worker.c')]);
  const perl = join(dir, 'hello.pl');
  copyFileSync(join(sourceDir, 'hello.pl'), perl);
  chmodSync(perl, 0o755);
  const cgiScript = join(dir, 'hello.cgi');
  writeFileSync(cgiScript, '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello from fcgiwrap cgi pid $$\\n"\n');
  chmodSync(cgiScript, 0o755);
  const phpScript = join(dir, 'hello.php');
  // ?sleep=MS holds the request that long, as the C worker's does.
  writeFileSync(
    phpScript,
    '<?php if (isset($_GET["sleep"])) usleep(1000 * (int)$_GET["sleep"]); header("Content-Type: text/plain"); echo "hello from php-cgi pid ", getmypid(), "\\n";',
  );
  chmodSync(dir, 0o755);
  built = { dir, hello, helloStatic, kcgiExt, perl, cgiScript, phpScript };
  return built;
}

export interface RunningKfcgi extends RunningProcess {
  pid: number;
  socket: string;
  /**
   * The worker pids (children of the manager that run their program), from /proc. A child between its fork and
   * its exec still runs the manager's image (all signals blocked by libuv, the manager's uid before a -U drop,
   * no lifeline armed yet): it is not counted until its command line is no longer the manager's.
   */
  workers(): number[];
}

/** Starts `gatehouse kfcgi -d <args>` and waits until the socket accepts and `expectWorkers` workers run. */
export async function startKfcgi(
  t: Cleanup,
  args: string[],
  options: { socket: string | { host: string; port: number }; env?: NodeJS.ProcessEnv; expectWorkers?: number },
): Promise<RunningKfcgi> {
  const running = startProcess(t, process.execPath, [gatehouseMain, 'kfcgi', '-d', ...args], { env: { ...process.env, ...options.env } });
  const pid = running.child.pid!;
  const address = typeof options.socket === 'string' ? { path: options.socket } : options.socket;
  await waitForListener(address, { what: 'gatehouse kfcgi', process: running });
  const managerCommand = commandLine(pid);
  const workers = () =>
    childrenOf(pid).filter((child) => {
      const command = commandLine(child);
      return command !== '' && command !== managerCommand;
    });
  if (options.expectWorkers !== undefined)
    await waitFor(() => workers().length === options.expectWorkers, `${options.expectWorkers} workers`, { context: running.output });
  return {
    ...running,
    pid,
    socket: typeof options.socket === 'string' ? options.socket : `${options.socket.host}:${options.socket.port}`,
    workers,
  };
}

/**
 * The manager's output with every line it logged before this call in it. Lines
 * are written in batches and come through a pipe, so a check that a line was
 * NOT logged cannot read output() at once: SIGUSR1 has the manager log a line
 * now ("SIGUSR1: log files reopened", through the same writer, in order), and
 * that line is waited for. Its workers are not told of the signal.
 */
export async function kfcgiOutputSoFar(kfcgi: RunningKfcgi): Promise<string> {
  const marks = () => kfcgi.output().match(/SIGUSR1: log files reopened/g)?.length ?? 0;
  const before = marks();
  process.kill(kfcgi.pid, 'SIGUSR1');
  await waitFor(() => marks() > before, "the manager's SIGUSR1 line (every line logged before it is in the output then)", {
    context: () => kfcgi.output().slice(-4000),
  });
  return kfcgi.output();
}

/** Runs gatehouse kfcgi to completion (for option errors): status and output. */
export async function runKfcgiCommand(
  args: string[],
  options: { uid?: number; gid?: number; timeoutMs?: number } = {},
): Promise<{ status: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [GATEHOUSE_MAIN, 'kfcgi', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      uid: options.uid,
      gid: options.gid,
    });
    let output = '';
    let exitStatus: number | null | undefined;
    let settled = false;
    const settle = (status: number | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ status, output });
    };
    // Without -d and without a syslog socket, the daemon keeps this stderr (it logs there): the pipe stays open
    // while the daemon runs, so a launcher that exited after reporting the daemon's start is done.
    const reported = () => exitStatus !== undefined && /running in the background as pid \d+; logging to .*\n/.test(output);
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      if (reported()) settle(exitStatus!);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.on('exit', (status) => {
      exitStatus = status;
      if (reported()) settle(status);
    });
    child.on('close', (status) => settle(status));
  });
}

/** Reads kfcgi's status socket until `condition` holds (bounded, 15 s); returns the status that satisfied it. */
export async function statusWhen(
  path: string,
  condition: (status: PoolStatus) => boolean,
  what: string,
  context: () => string = () => '',
): Promise<PoolStatus> {
  let last: PoolStatus | null = null;
  await waitFor(
    async () => {
      last = await readStatus(path);
      return condition(last);
    },
    what,
    { context: () => `${JSON.stringify(last)}\n${context()}` },
  );
  return last!;
}

/** One FastCGI request with libfcgi's cgi-fcgi; resolves with the response (head and body). */
export function cgiFcgi(socket: string, params: Record<string, string> = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', REQUEST_METHOD: 'GET', SCRIPT_FILENAME: '/x', QUERY_STRING: '', ...params };
    const child = spawn('/usr/bin/cgi-fcgi', ['-bind', '-connect', socket], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let errors = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    child.on('close', (status) =>
      status === 0 && output ? resolve(output) : reject(new Error(`cgi-fcgi -connect ${socket} failed (${status}): ${errors}${output}`)),
    );
  });
}

/** Builds a jail holding `binary` at /fcgi-bin/NAME with the libraries ldd lists (none for a static binary). */
export function buildJail(t: Cleanup, binary: string, name: string): { jail: string; program: string } {
  const jail = tempDir(t, 'gatehouse-kfcgi-jail-');
  chmodSync(jail, 0o755);
  mkdirSync(join(jail, 'fcgi-bin'), { recursive: true });
  mkdirSync(join(jail, 'run'), { recursive: true });
  copyFileSync(binary, join(jail, 'fcgi-bin', name));
  chmodSync(join(jail, 'fcgi-bin', name), 0o755);
  let ldd = '';
  try {
    ldd = execFileSync('ldd', [binary], { encoding: 'utf8' });
  } catch {
    ldd = ''; // "not a dynamic executable"
  }
  for (const match of ldd.matchAll(/(\/\S+)/g)) {
    const library = match[1]!;
    if (!existsSync(library)) continue;
    mkdirSync(join(jail, dirname(library)), { recursive: true });
    copyFileSync(library, join(jail, library));
  }
  return { jail, program: `/fcgi-bin/${name}` };
}

/**
 * Steady load for restart tests: `clients` loops of GETs against `url`
 * (bounded at 5000 requests each) until stop() is called; served() counts
 * the successes so far (wait for it to grow instead of sleeping); stop()
 * resolves with how many succeeded and a line per failure.
 */
export function steadyLoad(url: string, clients: number): { served(): number; stop(): Promise<{ ok: number; failures: string[] }> } {
  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const loop = async () => {
    for (let i = 0; running && i < 5000; i += 1) {
      const response = await httpRequest(`${url}/?sleep=${i % 5}`).catch((error: Error) => ({
        status: 0,
        body: Buffer.from(error.message),
      }));
      if (response.status === 200) ok += 1;
      else failures.push(`${response.status} ${response.body.toString().slice(0, 100)}`);
    }
  };
  const loops = Array.from({ length: clients }, () => loop());
  return {
    served: () => ok,
    async stop() {
      running = false;
      await Promise.all(loops);
      return { ok, failures };
    },
  };
}

/**
 * A FastCGI program started by spawn-fcgi on a private unix socket (or a
 * loopback port). With one child, spawn-fcgi execs the program in place (-n),
 * so stopping the process stops the program; with several, spawn-fcgi forks
 * them and exits, and the kit stops them by the pids it wrote (-P).
 */
import { join } from 'node:path';
import { readFileSync, existsSync } from 'node:fs';
import { requireProgram, startProcess, tempDir, waitForListener, type Address, type Cleanup } from './process.js';
import { waitFor } from './wait.js';

export interface SpawnFcgiOptions {
  /** The FastCGI program and its arguments. */
  program: string;
  args?: string[];
  /** Children to fork (-F); default 1. */
  children?: number;
  port?: number;
}

export interface RunningSpawnFcgi {
  address: Address;
  addressString: string;
  /** Pids of the FastCGI program's processes. */
  pids(): number[];
  /** Kills the program's processes with `signal` (a crash, as the tests need it). */
  kill(signal?: NodeJS.Signals): void;
  stop(): Promise<void>;
  output(): string;
}

export async function startSpawnFcgi(t: Cleanup, options: SpawnFcgiOptions): Promise<RunningSpawnFcgi> {
  const binary = requireProgram('/usr/bin/spawn-fcgi');
  const dir = tempDir(t, 'gatehouse-spawn-fcgi-');
  const address: Address = options.port ? { host: '127.0.0.1', port: options.port } : { path: join(dir, 'app.sock') };
  const where = 'path' in address ? ['-s', address.path] : ['-a', '127.0.0.1', '-p', String(address.port)];
  const children = options.children ?? 1;
  const pidFile = join(dir, 'pids');
  const args = [
    ...where,
    ...(children === 1 ? ['-n'] : ['-F', String(children), '-P', pidFile]),
    '--',
    options.program,
    ...(options.args ?? []),
  ];
  const running = startProcess(t, binary, args);
  const pids = (): number[] => {
    if (children === 1) return running.child.pid && running.child.exitCode === null ? [running.child.pid] : [];
    if (!existsSync(pidFile)) return [];
    return readFileSync(pidFile, 'utf8')
      .split('\n')
      .map(Number)
      .filter((pid) => pid > 0);
  };
  const kill = (signal: NodeJS.Signals = 'SIGTERM') => {
    for (const pid of pids()) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  };
  const stop = async () => {
    if (children === 1) return running.stop();
    kill('SIGTERM');
    // Cleanup, not a check: whatever has not exited after 2 s is killed.
    await waitFor(() => !pids().some(isAlive), 'the spawn-fcgi children to exit', { timeoutMs: 2000 }).catch(() => {});
    kill('SIGKILL');
  };
  t.after(stop);
  // With several children spawn-fcgi forks them and exits at once: only a single (exec'd) child is a process to watch.
  await waitForListener(address, {
    what: `spawn-fcgi ${options.program}`,
    ...(children === 1 ? { process: running } : { context: running.output }),
  });
  return {
    address,
    addressString: 'path' in address ? `unix:${address.path}` : `127.0.0.1:${address.port}`,
    pids,
    kill,
    stop,
    output: running.output,
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The `fork` spawn mode: Node's child_process.spawn. libuv forks, so each
 * start copies the parent's page tables and blocks the event loop (about
 * 1.2 ms from a small Node, far more from a large heap); kept as the
 * fallback where the system-call binding does not load, and for comparison.
 *
 * child_process.spawn takes the environment as strings and encodes them as
 * UTF-8: it cannot carry bytes that are not UTF-8 (a Latin-1 header value).
 * Such a request is refused (SpawnError EILSEQ, answered 500 and logged),
 * never passed on re-encoded: the script would read bytes the client never
 * sent, which is how a value slips past a check written for the real bytes.
 * posix_spawn (the daemon and in-process modes) carries every byte.
 */
import { spawn } from 'node:child_process';
import type { EnvironmentValue } from './order.js';
import { refuseShellFallback, SpawnError, type ScriptExit, type ScriptSpawner, type SpawnedScript, type SpawnRequest } from './spawner.js';

// ignoreBOM: a leading EF BB BF is part of the value, not a marker to strip.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The environment as child_process.spawn takes it: byte values that are
 * valid UTF-8 become the strings that encode back to the same bytes; one that
 * is not refuses the spawn, naming the variable.
 */
export function textEnvironment(file: string, env: Readonly<Record<string, EnvironmentValue>>): Record<string, string> {
  const record: Record<string, string> = Object.create(null);
  for (const name in env) {
    const value = env[name]!;
    if (typeof value === 'string') {
      record[name] = value;
      continue;
    }
    try {
      record[name] = utf8.decode(value);
    } catch {
      throw new SpawnError(
        file,
        'EILSEQ',
        `the environment variable ${name} holds bytes that are not UTF-8, which child_process.spawn cannot pass unchanged ` +
          `(cgi-spawn "fork"): use the daemon or in-process mode, which pass every byte`,
      );
    }
  }
  return record;
}

/**
 * child_process.spawn with `detached` (setsid: the script leads its own
 * process group and session, so one kill(-pid) reaches everything it forked).
 * About 1.2 ms of blocked event loop per start on this machine (libuv forks).
 */
export class ChildProcessSpawner implements ScriptSpawner {
  async spawn(request: SpawnRequest): Promise<SpawnedScript> {
    refuseShellFallback(request.file);
    const env = textEnvironment(request.file, request.env);
    const child = spawn(request.file, request.argv.slice(1), {
      argv0: request.argv[0] ?? request.file,
      cwd: request.cwd,
      env,
      detached: true,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<ScriptExit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    if (child.pid === undefined) {
      const error = await new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve));
      throw new SpawnError(request.file, error.code ?? 'EUNKNOWN', error.message);
    }
    // Later 'error' events (a failed kill) must not crash the server; signalGroup handles its own errors.
    child.on('error', () => {});
    const pid = child.pid;
    let reaped = false;
    void exited.then(() => (reaped = true));
    return {
      pid,
      stdin: child.stdin!,
      stdout: child.stdout!,
      stderr: child.stderr!,
      exited,
      signalGroup(signal) {
        try {
          process.kill(-pid, signal);
        } catch {
          // ESRCH: the group is already gone. Before reaping, the leader's pid cannot be reused, so -pid is still ours.
          if (!reaped) {
            try {
              child.kill(signal);
            } catch {
              /* already gone */
            }
          }
        }
      },
    };
  }
}

/**
 * The `fork` spawn mode: Node's child_process.spawn. libuv forks, so each
 * start copies the parent's page tables and blocks the event loop (about
 * 1.2 ms from a small Node, far more from a large heap); kept as the
 * library's portable default and for comparison.
 */
import { spawn } from 'node:child_process';
import { refuseShellFallback, SpawnError, type ScriptExit, type ScriptSpawner, type SpawnedScript, type SpawnRequest } from './spawner.js';

/**
 * child_process.spawn with `detached` (setsid: the script leads its own
 * process group and session, so one kill(-pid) reaches everything it forked).
 * About 1.2 ms of blocked event loop per start on this machine (libuv forks).
 */
export class ChildProcessSpawner implements ScriptSpawner {
  async spawn(request: SpawnRequest): Promise<SpawnedScript> {
    refuseShellFallback(request.file);
    const child = spawn(request.file, request.argv.slice(1), {
      argv0: request.argv[0] ?? request.file,
      cwd: request.cwd,
      env: request.env,
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

/**
 * A script started through a cgid daemon connection: the order (with the
 * front's limits and suexec route), the script's pipes, the output cap, and
 * signals that go through the daemon while it is there and straight to the
 * script's process group once it is gone. Shared by the front that started
 * the daemon (CgidSupervisor) and the `serve --workers` workers that use the
 * supervisor's daemon (src/serve/cgid-attachment.ts).
 */
import { SpawnError, type ScriptExit, type SpawnedScript, type SpawnRequest } from '../spawn/spawner.js';
import { runAsFor, type SpawnPolicy } from '../spawn/posix-spawner.js';
import { capOutput, createScriptStdio } from '../spawn/stdio.js';
import type { LogLevel } from '../log/index.js';
import type { CgidConnection } from './client.js';
import type { ScriptLimits } from '../spawn/order.js';

export interface RemoteSpawnContext {
  limits: ScriptLimits;
  policy?: SpawnPolicy | undefined;
  log: (line: string, level?: LogLevel) => void;
}

/** Starts `request` through `connection` (null or closed: the daemon is away, a CGID_UNAVAILABLE SpawnError). */
export async function spawnThroughDaemon(
  connection: CgidConnection | null,
  request: SpawnRequest,
  context: RemoteSpawnContext,
): Promise<SpawnedScript> {
  if (!connection || connection.closed) throw SpawnError.daemonUnavailable(request.file, 'the cgid daemon is not running (restarting)');
  const { limits } = context;
  const stdio = createScriptStdio(request.stdinEmpty === true);
  let remote;
  try {
    remote = await connection.spawn(
      {
        file: request.file,
        argv: [...request.argv],
        cwd: request.cwd,
        // Encoded straight from the record: no Buffer per entry on the way to the wire.
        env: request.env,
        limits,
        runAs: runAsFor(request.file, context.policy?.suexec),
      },
      stdio.scriptEnds,
    );
  } catch (error) {
    stdio.destroy();
    throw error;
  }
  stdio.closeScriptEnds();
  const pid = remote.pid;
  let reaped = false;
  const exited = remote.exited.then((exit): ScriptExit => {
    reaped = true;
    // null: the daemon went away; whoever held the connection already killed the group.
    return exit ?? { code: null, signal: 'SIGKILL', lost: true };
  });
  const signalGroup = (signal: NodeJS.Signals) => {
    if (reaped) return;
    if (!connection.closed) remote.signal(signal);
    else killGroup(pid, signal);
  };
  return {
    pid,
    stdin: stdio.stdin,
    stdout: capOutput(stdio.stdout, limits.outputBytes, () => {
      context.log(`cgid: ${request.file} (pid ${pid}) wrote more than ${limits.outputBytes} bytes of output: killed`);
      signalGroup('SIGKILL');
    }),
    stderr: stdio.stderr,
    exited,
    signalGroup,
  };
}

/** Signals a script's process group (a script is its group's leader); a group already gone is no error. */
export function killGroup(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group is gone */
  }
}

/**
 * ScriptSpawner that starts scripts in this process with posix_spawn (no
 * fork, so no page-table copy: the cost does not grow with this process's
 * heap) and reaps them through a pidfd. The daemon uses the same launcher;
 * the FastCGI face and `gatehouse serve --cgi-spawn in-process` use this.
 */
import { SpawnError, type ScriptExit, type ScriptSpawner, type SpawnedScript, type SpawnRequest } from './spawner.js';
import { watchChildExit } from '../sys/index.js';
import { launchScript, type LaunchPolicy } from './launcher.js';
import { environmentList, NO_LIMITS, type RunAs, type ScriptLimits } from './order.js';
import { capOutput, createScriptStdio } from './stdio.js';

/** suexec for a route: scripts under `directory` run as `user`:`group`. */
export interface SuexecRoute {
  directory: string;
  user: string;
  group: string;
}

export interface SpawnPolicy {
  limits?: ScriptLimits;
  suexec?: readonly SuexecRoute[];
}

/** The user a script runs as: the longest suexec route containing it, or null. */
export function runAsFor(file: string, routes: readonly SuexecRoute[] | undefined): RunAs | null {
  let best: SuexecRoute | null = null;
  for (const route of routes ?? []) {
    const prefix = route.directory.endsWith('/') ? route.directory : `${route.directory}/`;
    if (file.startsWith(prefix) && (!best || route.directory.length > best.directory.length)) best = route;
  }
  return best ? { user: best.user, group: best.group, root: best.directory } : null;
}

export class PosixSpawnSpawner implements ScriptSpawner {
  readonly #limits: ScriptLimits;
  readonly #suexec: readonly SuexecRoute[] | undefined;
  readonly #launch: LaunchPolicy;

  constructor(policy: SpawnPolicy = {}, launch: LaunchPolicy = {}) {
    this.#limits = policy.limits ?? NO_LIMITS;
    this.#suexec = policy.suexec;
    this.#launch = launch;
  }

  async spawn(request: SpawnRequest): Promise<SpawnedScript> {
    const stdio = createScriptStdio(request.stdinEmpty === true);
    let pid: number;
    try {
      pid = await launchScript(
        {
          file: request.file,
          argv: [...request.argv],
          cwd: request.cwd,
          env: environmentList(request.env),
          limits: this.#limits,
          runAs: runAsFor(request.file, this.#suexec),
        },
        stdio.scriptEnds,
        this.#launch,
      );
    } catch (error) {
      stdio.destroy();
      throw error instanceof SpawnError ? error : new SpawnError(request.file, 'EUNKNOWN', String(error));
    }
    stdio.closeScriptEnds();
    let reaped = false;
    const exited = new Promise<ScriptExit>((resolve) => {
      watchChildExit(pid, (exit) => {
        reaped = true;
        resolve(exit);
      });
    });
    const signalGroup = (signal: NodeJS.Signals) => signalScript(pid, signal, () => reaped);
    return {
      pid,
      stdin: stdio.stdin,
      stdout: capOutput(stdio.stdout, this.#limits.outputBytes, () => {
        this.#launch.log?.(`cgid: ${request.file} (pid ${pid}) wrote more than ${this.#limits.outputBytes} bytes of output: killed`);
        signalGroup('SIGKILL');
      }),
      stderr: stdio.stderr,
      exited,
      signalGroup,
    };
  }
}

/**
 * kill(-pid): the script's whole group. Once the leader is reaped its pid may
 * be reused, but a group id stays reserved while any member lives, so the
 * group signal is still ours; the leader alone is signalled only before it
 * was reaped.
 */
export function signalScript(pid: number, signal: NodeJS.Signals, isReaped: () => boolean): void {
  try {
    process.kill(-pid, signal);
  } catch {
    if (isReaped()) return;
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * How `gatehouse serve` starts CGI scripts, chosen by `cgi-spawn`:
 *
 * - `daemon` (default): the cgid daemon, a separate small process started
 *   and supervised by the front; scripts' parent is the daemon, and the cost
 *   of a start does not depend on the front's size.
 * - `in-process`: posix_spawn from the front itself (no daemon round trip;
 *   also cheap from a large heap, since posix_spawn does not copy page tables).
 * - `fork`: Node's child_process.spawn (libuv forks: slows down as the heap
 *   grows); kept for comparison and for systems without the binding.
 */
import path from 'node:path';
import { ChildProcessSpawner } from './fork.js';
import type { ScriptSpawner } from './spawner.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { CGID_SCRIPT_SOCK, CGID_SUEXEC_MIN_GID, CGID_SUEXEC_MIN_UID } from '../limits.js';
import { PosixSpawnSpawner, type SuexecRoute } from './posix-spawner.js';
import { NO_LIMITS, type ScriptLimits } from '../cgid/protocol.js';
import { defaultRuntimeDirectory, ensureRuntimeDirectory, scriptSockPath } from '../cgid/socket-path.js';
import { CgidSupervisor } from '../cgid/supervisor.js';
import type { LogLevel, LogRecord } from '../log/index.js';

export const CGI_SPAWN_MODES = ['daemon', 'in-process', 'fork'] as const;
export type CgiSpawnMode = (typeof CGI_SPAWN_MODES)[number];

export interface FrontSpawnSettings {
  mode?: string;
  /** ScriptSock prefix; relative to runtimeDir. */
  scriptSock?: string;
  runtimeDir?: string;
  limits?: Partial<ScriptLimits>;
  suexec?: readonly SuexecRoute[];
  suexecMinUid?: number;
  suexecMinGid?: number;
  /**
   * The user the front runs as once it drops root. The daemon's socket and
   * the runtime directory are given to it (so the front can connect, and a
   * daemon restarted after the drop can bind), and the daemon and the scripts
   * run as it too; while suexec routes need it, the daemon keeps root and
   * runs the other scripts as this user.
   */
  runAs?: { user: string; group: string; uid: number; gid: number };
}

export interface FrontSpawner {
  spawner: ScriptSpawner;
  /** One line for the log and --check: how scripts are started. */
  description: string;
  stop(): Promise<void>;
  /** The supervisor in daemon mode (tests and status). */
  supervisor: CgidSupervisor | null;
}

/** Checks the mode (an error names the key and the values to write). */
export function parseSpawnMode(mode: string | undefined): CgiSpawnMode {
  const value = mode ?? 'daemon';
  if (!(CGI_SPAWN_MODES as readonly string[]).includes(value)) {
    throw new GatehouseError(ErrorCode.CGID_SETUP, `cgi-spawn: "${value}" is not a spawn mode; write one of ${CGI_SPAWN_MODES.join(', ')}`);
  }
  return value as CgiSpawnMode;
}

/**
 * `log` takes the front's own lines about scripts; `daemonLog` (the front's
 * Logger) takes the cgid daemon's records, so they keep the daemon's role and pid.
 */
export async function startFrontSpawner(
  settings: FrontSpawnSettings,
  log: (line: string, level?: LogLevel) => void,
  daemonLog?: { emit(record: LogRecord): void; level: LogLevel },
): Promise<FrontSpawner> {
  const mode = parseSpawnMode(settings.mode);
  const limits: ScriptLimits = { ...NO_LIMITS, ...settings.limits };
  const launch = { minUid: settings.suexecMinUid ?? CGID_SUEXEC_MIN_UID, minGid: settings.suexecMinGid ?? CGID_SUEXEC_MIN_GID, log };
  const policy = { limits, ...(settings.suexec ? { suexec: settings.suexec } : {}) };
  if (mode === 'fork') {
    if (settings.suexec?.length)
      throw new GatehouseError(ErrorCode.CGID_SETUP, 'cgi-spawn = "fork" cannot run scripts as other users: use the daemon (the default)');
    return {
      spawner: new ChildProcessSpawner(),
      description: 'in-process with child_process.spawn (fork)',
      stop: async () => {},
      supervisor: null,
    };
  }
  if (mode === 'in-process') {
    return {
      spawner: new PosixSpawnSpawner(policy, launch),
      description: 'in-process with posix_spawn',
      stop: async () => {},
      supervisor: null,
    };
  }
  const runAs = settings.runAs;
  const runtimeDir = path.resolve(settings.runtimeDir ?? defaultRuntimeDirectory(runAs?.user));
  const prefix = settings.scriptSock ?? CGID_SCRIPT_SOCK;
  if (!path.isAbsolute(prefix)) ensureRuntimeDirectory(runtimeDir, runAs);
  const socketPath = scriptSockPath(prefix, runtimeDir);
  // The daemon keeps root only while some route runs its scripts as another user (suexec).
  const keepRoot = (settings.suexec?.length ?? 0) > 0;
  const supervisor = new CgidSupervisor({
    socketPath,
    log,
    ...(daemonLog ? { daemonLog } : {}),
    policy,
    daemonArgs: [
      '--suexec-min-uid',
      String(launch.minUid),
      '--suexec-min-gid',
      String(launch.minGid),
      ...(runAs ? ['--user', runAs.user, '--group', runAs.group, '--socket-user', runAs.user, '--socket-group', runAs.group] : []),
      ...(runAs && keepRoot ? ['--keep-root'] : []),
    ],
  });
  await supervisor.start();
  return {
    spawner: supervisor,
    description: `cgid daemon (pid ${supervisor.daemonPid}) on ${socketPath}`,
    stop: () => supervisor.stop(),
    supervisor,
  };
}

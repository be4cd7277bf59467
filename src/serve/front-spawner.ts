/**
 * Starts the script spawner `cgi-spawn` names (src/spawn/modes.ts) for a
 * front: the cgid daemon under its supervisor, posix_spawn in-process, or
 * child_process (fork). It sits here, above src/spawn and src/cgid, because
 * the daemon's supervisor spawns through src/spawn itself: choosing it from
 * src/spawn made the two layers import each other.
 */
import path from 'node:path';
import { CgidSupervisor } from '../cgid/supervisor.js';
import { defaultRuntimeDirectory, ensureRuntimeDirectory, scriptSockPath } from '../cgid/socket-path.js';
import type { FrontSpawnSettings } from '../config/spawn-settings.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { CGID_SCRIPT_SOCK, CGID_SUEXEC_MIN_GID, CGID_SUEXEC_MIN_UID } from '../limits.js';
import type { LogLevel, LogRecord } from '../log/index.js';
import { ChildProcessSpawner } from '../spawn/fork.js';
import { parseSpawnMode } from '../spawn/modes.js';
import { NO_LIMITS, type ScriptLimits } from '../spawn/order.js';
import { PosixSpawnSpawner } from '../spawn/posix-spawner.js';
import type { ScriptSpawner } from '../spawn/spawner.js';

export interface FrontSpawner {
  spawner: ScriptSpawner;
  /** One line for the log and --check: how scripts are started. */
  description: string;
  stop(): Promise<void>;
  /** The supervisor in daemon mode (tests and status). */
  supervisor: CgidSupervisor | null;
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

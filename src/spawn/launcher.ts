/**
 * Starting one script from a spawn order, in the process that owns it (the
 * daemon, or a front spawning in-process): suexec checks when the order
 * names a user, posix_spawn (directly, or through setpriv for another user),
 * then the resource limits.
 *
 * Limits are set by util-linux's prlimit(1) as a wrapper (it sets them on
 * itself, then execs the script): posix_spawn has no hook to set them in
 * the child before exec, and setting them from outside after the spawn
 * (prlimit(2) on the pid) races the script, which was measured to win. The
 * wrapper costs one extra exec, only when a limit is configured.
 * RLIMIT_NPROC is not enforced by Linux for root: it bites for suexec users.
 */
import { accessSync, constants, lstatSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { refuseShellFallback, SpawnError } from './spawner.js';
import { CGID_PRLIMIT_PATH, CGID_SETPRIV_PATH, CGID_SUEXEC_MIN_GID, CGID_SUEXEC_MIN_UID } from '../limits.js';
import { lookupGroupId, lookupUser, SysError } from '../sys/index.js';
import { posixSpawnAsync } from '../sys/index.js';
import type { RunAs, ScriptLimits, SpawnOrder } from './order.js';
import type { LogLevel } from '../log/index.js';

export interface LaunchPolicy {
  /** suexec: lowest uid and gid a script may run as. */
  minUid?: number;
  minGid?: number;
  /** Notes about scripts it started (one line each, an error unless a level is given); refusals are thrown, not logged. */
  log?: (line: string, level?: LogLevel) => void;
  /**
   * Scripts whose order names no user run as this account, when the process
   * is root: a cgid daemon that kept root for suexec routes runs every other
   * script as the user gatehouse serve runs as, never as root.
   */
  defaultRunAs?: { uid: number; gid: number };
}

/**
 * Starts the script with `stdio` as its 0, 1, 2 (kept open by the caller until
 * this settles); resolves with its pid, rejects with SpawnError (errno + why).
 * posix_spawn runs on a worker thread, so the event loop never waits for a
 * child to exec.
 */
export async function launchScript(
  order: SpawnOrder,
  stdio: readonly [number, number, number],
  policy: LaunchPolicy = {},
): Promise<number> {
  const limits = limitFlags(order.limits);
  const asDefaultUser = !order.runAs && policy.defaultRunAs !== undefined && process.geteuid?.() === 0 ? policy.defaultRunAs : null;
  if (order.runAs || asDefaultUser || limits.length > 0) {
    // A wrapper (setpriv, prlimit) execs the script with execvp, which would run a text file without #! through
    // /bin/sh and turn a refused exec into an exit status: both are checked here. Without a wrapper posix_spawn's
    // execve refuses such files itself (ENOEXEC, EACCES), and these four system calls are saved.
    refuseShellFallback(order.file);
    try {
      accessSync(order.file, constants.X_OK);
    } catch (error) {
      throw new SpawnError(order.file, (error as NodeJS.ErrnoException).code ?? 'EACCES', (error as Error).message);
    }
  }
  let file = order.file;
  let argv = order.argv;
  if (order.runAs || asDefaultUser) {
    const identity = order.runAs ? checkSuexec(order.file, order.runAs, policy) : asDefaultUser!;
    // setpriv sets gid, initgroups(3) for the user, then uid (setresuid: root cannot come back), then execs the script.
    file = CGID_SETPRIV_PATH;
    argv = [
      CGID_SETPRIV_PATH,
      `--regid=${identity.gid}`,
      `--init-groups`,
      `--reuid=${identity.uid}`,
      '--',
      order.file,
      ...order.argv.slice(1),
    ];
  }
  if (limits.length > 0) {
    // Outermost, so RLIMIT_NPROC is in place when setpriv changes user (execve then refuses an over-limit user).
    argv = [CGID_PRLIMIT_PATH, ...limits, '--', file, ...argv.slice(1)];
    file = CGID_PRLIMIT_PATH;
  }
  try {
    return await posixSpawnAsync({ file, argv, env: order.env, cwd: order.cwd, stdio });
  } catch (error) {
    // "cannot run FILE: Exec format error (ENOEXEC)", as the other spawners word it.
    if (error instanceof SysError)
      throw new SpawnError(order.file, error.errnoName, /\(([^()]*)\)$/.exec(error.message)?.[1] ?? error.message);
    throw error;
  }
}

/** prlimit(1) flags for the limits that are set (soft and hard alike). */
function limitFlags(limits: ScriptLimits): string[] {
  const flags: string[] = [];
  if (limits.cpuSeconds > 0) flags.push(`--cpu=${limits.cpuSeconds}`);
  if (limits.memoryBytes > 0) flags.push(`--as=${limits.memoryBytes}`);
  if (limits.processes > 0) flags.push(`--nproc=${limits.processes}`);
  if (limits.openFiles > 0) flags.push(`--nofile=${limits.openFiles}`);
  return flags;
}

/**
 * Apache suexec's rules, for a daemon running as root: the user and group
 * exist and are at or above the minimum ids; the script (after symlinks) lies
 * inside the route's root; it is a regular file owned by that user and group,
 * not writable by group or others, without set-id bits; its directory is not
 * writable by group or others either.
 */
export function checkSuexec(file: string, runAs: RunAs, policy: LaunchPolicy): { uid: number; gid: number } {
  // Not logged here: whoever asked for the spawn logs the SpawnError ("cannot run FILE: suexec refused ..."), once.
  const refuse = (why: string): never => {
    throw new SpawnError(file, 'EPERM', `suexec refused to run it as ${runAs.user}:${runAs.group}: ${why}`);
  };
  if (process.geteuid?.() !== 0)
    refuse('the cgid daemon is not running as root, so it cannot change user; start it as root or remove user/group from the route');
  const user = lookupUser(runAs.user);
  if (!user) return refuse(`no user named ${runAs.user}`);
  const gid = lookupGroupId(runAs.group);
  if (gid === null) return refuse(`no group named ${runAs.group}`);
  const minUid = policy.minUid ?? CGID_SUEXEC_MIN_UID;
  const minGid = policy.minGid ?? CGID_SUEXEC_MIN_GID;
  if (user.uid < minUid) refuse(`uid ${user.uid} is below the minimum ${minUid} (suexec-min-uid)`);
  if (gid < minGid) refuse(`gid ${gid} is below the minimum ${minGid} (suexec-min-gid)`);
  let real: string;
  let root: string;
  try {
    real = realpathSync(file);
    root = realpathSync(runAs.root);
  } catch (error) {
    return refuse(`cannot resolve the script or the route root: ${(error as Error).message}`);
  }
  if (!real.startsWith(root.endsWith('/') ? root : `${root}/`)) refuse(`${real} is outside the route root ${root}`);
  const stat = lstatSync(real);
  if (!stat.isFile()) refuse('not a regular file');
  if (stat.uid !== user.uid || stat.gid !== gid) refuse(`the file is owned by ${stat.uid}:${stat.gid}, not by ${user.uid}:${gid}`);
  if ((stat.mode & 0o022) !== 0) refuse(`the file is writable by group or others (mode ${(stat.mode & 0o7777).toString(8)})`);
  if ((stat.mode & 0o6000) !== 0) refuse('the file is setuid or setgid');
  const directory = statSync(path.dirname(real));
  if ((directory.mode & 0o022) !== 0) refuse(`its directory ${path.dirname(real)} is writable by group or others`);
  return { uid: user.uid, gid };
}

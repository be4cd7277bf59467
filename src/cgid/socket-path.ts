/**
 * ScriptSock: where the daemon's socket lives and how it is made safe.
 * A path prefix with the server's pid appended (mod_cgid: `cgisock.1234`),
 * relative prefixes resolved against the runtime directory; the directory
 * must not be writable by other users (one of them could otherwise replace
 * the socket between our bind and the front's connect); a socket file left by
 * a dead server is removed only after nothing answered a connect to it.
 */
import { chownSync, mkdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ErrorCode, GatehouseError } from '../errors.js';
import { CGID_SCRIPT_SOCK } from '../limits.js';
import { claimUnixSocketPath, unixSocketPathState } from '../sys/index.js';

/**
 * DefaultRuntimeDir for gatehouse: /run/gatehouse as root, /run/gatehouse-USER
 * as root for a front that drops to USER (a directory of that user's own, so
 * root's is never handed over), else $XDG_RUNTIME_DIR/gatehouse, else
 * $TMPDIR/gatehouse-UID.
 */
export function defaultRuntimeDirectory(runAsUser?: string): string {
  const uid = process.geteuid?.() ?? 0;
  if (uid === 0) return runAsUser !== undefined && runAsUser !== 'root' ? `/run/gatehouse-${runAsUser}` : '/run/gatehouse';
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'gatehouse');
  return path.join(tmpdir(), `gatehouse-${uid}`);
}

/** The socket path: `prefix` (resolved against `runtimeDir` when relative) + "." + pid. */
export function scriptSockPath(
  prefix: string = CGID_SCRIPT_SOCK,
  runtimeDir: string = defaultRuntimeDirectory(),
  pid: number = process.pid,
): string {
  return `${path.resolve(runtimeDir, prefix)}.${pid}`;
}

function setupError(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.CGID_SETUP, message);
}

/**
 * Creates the runtime directory (mode 0700) when missing; refuses one that
 * other users can write. Only the last component is created: a missing
 * parent is a configuration mistake worth hearing about.
 *
 * `owner`: the user gatehouse serve's front runs as once it drops root. A
 * directory created here is given to it, so that the front reaches the
 * daemon's socket and a daemon restarted after the drop can bind there. An
 * existing directory is never chowned: it must belong to that user or to
 * root, and the user must be able to reach the socket through it.
 */
export function ensureRuntimeDirectory(directory: string, owner?: { uid: number; gid: number }): void {
  let created = false;
  try {
    mkdirSync(directory, { mode: 0o700 });
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw setupError(
        `cannot create the runtime directory ${directory}: ${(error as Error).message}; create it (mode 0700) or choose another with --runtime-dir`,
      );
    }
  }
  if (owner && created && (process.geteuid?.() ?? 0) === 0) chownSync(directory, owner.uid, owner.gid);
  checkSocketDirectory(directory, owner?.uid);
  if (owner && !created) {
    const stat = statSync(directory);
    const search = stat.uid === owner.uid ? 0o100 : stat.gid === owner.gid ? 0o010 : 0o001;
    if ((stat.mode & search) === 0)
      throw setupError(
        `the runtime directory ${directory} is closed to uid ${owner.uid}, the user the front runs as, who could not reach the cgid socket: run 'chown ${owner.uid}:${owner.gid} ${directory}', or choose another runtime-dir (leave it unset for one of its own)`,
      );
  }
}

/**
 * Refuses a directory that is writable by group or others, or owned by
 * another user: root, this process's user and `trustedUid` (the user the
 * front runs as) may own it.
 */
export function checkSocketDirectory(directory: string, trustedUid?: number): void {
  let stat;
  try {
    stat = statSync(directory);
  } catch (error) {
    throw setupError(`the socket directory ${directory} cannot be used: ${(error as Error).message}; create it with mode 0700`);
  }
  if (!stat.isDirectory()) throw setupError(`${directory} is not a directory: the ScriptSock prefix must name a file inside a directory`);
  const mode = (stat.mode & 0o7777).toString(8).padStart(4, '0');
  if ((stat.mode & 0o022) !== 0) {
    throw setupError(
      `refusing to create the cgid socket in ${directory}: the directory is writable by ${(stat.mode & 0o002) !== 0 ? 'every user' : 'its group'} (mode ${mode}), ` +
        `so another user could replace the socket; run 'chmod go-w ${directory}' or choose a private directory (--runtime-dir, or an absolute --script-sock)`,
    );
  }
  const uid = process.geteuid?.() ?? 0;
  if (stat.uid !== uid && stat.uid !== 0 && stat.uid !== trustedUid) {
    throw setupError(
      `refusing to create the cgid socket in ${directory}: it belongs to uid ${stat.uid}, who could replace the socket; use a directory owned by you (uid ${uid}) or root`,
    );
  }
}

/**
 * Checks, without changing anything, that a daemon may take `socketPath`: its
 * directory is safe (checkSocketDirectory), and nothing is there but, at
 * most, a stale socket that no longer answers. Returns whether such a stale
 * socket is there. A start-up runs every check before it writes anything
 * (the stale socket, the token file, the new socket), so a refused daemon
 * leaves a live daemon's files alone.
 */
export function checkSocketPlace(socketPath: string, trustedUid?: number): { stale: boolean } {
  checkSocketDirectory(path.dirname(socketPath), trustedUid);
  // The state is read as every command reads it (src/sys); the messages are the daemon's own.
  const state = unixSocketPathState(socketPath);
  if (state === 'not-a-socket')
    throw setupError(`${socketPath} exists and is not a socket: remove it yourself or choose another ScriptSock`);
  if (state === 'live')
    throw setupError(`another process answers on ${socketPath} (a cgid daemon still running?): stop it, or choose another ScriptSock`);
  return { stale: state === 'stale' };
}

/**
 * Makes `socketPath` free for bind: nothing there, or a stale socket that no
 * longer answers (removed). A live socket or a file that is not a socket is
 * never removed; an unsafe directory is refused. `trustedUid` as for
 * checkSocketDirectory.
 */
export function clearStaleSocket(socketPath: string, trustedUid?: number): void {
  if (checkSocketPlace(socketPath, trustedUid).stale) claimUnixSocketPath(socketPath);
}

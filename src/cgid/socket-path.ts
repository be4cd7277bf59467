/**
 * ScriptSock: where the daemon's socket lives and how it is made safe.
 * A path prefix with the server's pid appended (mod_cgid: `cgisock.1234`),
 * relative prefixes resolved against the runtime directory; the directory
 * must not be writable by other users (one of them could otherwise replace
 * the socket between our bind and the front's connect); a socket file left by
 * a dead server is removed only after nothing answered a connect to it.
 */
import { lstatSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ErrorCode, GatehouseError } from '../errors.js';
import { CGID_SCRIPT_SOCK } from '../limits.js';
import { unixSocketIsLive } from '../sys/index.js';

/** DefaultRuntimeDir for gatehouse: /run/gatehouse as root, else $XDG_RUNTIME_DIR/gatehouse, else $TMPDIR/gatehouse-UID. */
export function defaultRuntimeDirectory(): string {
  const uid = process.geteuid?.() ?? 0;
  if (uid === 0) return '/run/gatehouse';
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
 */
export function ensureRuntimeDirectory(directory: string): void {
  try {
    mkdirSync(directory, { mode: 0o700 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw setupError(
        `cannot create the runtime directory ${directory}: ${(error as Error).message}; create it (mode 0700) or choose another with --runtime-dir`,
      );
    }
  }
  checkSocketDirectory(directory);
}

/** Refuses a directory that is writable by group or others, or owned by another user (root excepted). */
export function checkSocketDirectory(directory: string): void {
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
  if (stat.uid !== uid && stat.uid !== 0) {
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
export function checkSocketPlace(socketPath: string): { stale: boolean } {
  checkSocketDirectory(path.dirname(socketPath));
  let stat;
  try {
    stat = lstatSync(socketPath);
  } catch {
    return { stale: false };
  }
  if (!stat.isSocket()) throw setupError(`${socketPath} exists and is not a socket: remove it yourself or choose another ScriptSock`);
  if (unixSocketIsLive(socketPath)) {
    throw setupError(`another process answers on ${socketPath} (a cgid daemon still running?): stop it, or choose another ScriptSock`);
  }
  return { stale: true };
}

/**
 * Makes `socketPath` free for bind: nothing there, or a stale socket that no
 * longer answers (removed). A live socket or a file that is not a socket is
 * never removed; an unsafe directory is refused.
 */
export function clearStaleSocket(socketPath: string): void {
  if (!checkSocketPlace(socketPath).stale) return;
  try {
    unlinkSync(socketPath);
  } catch (error) {
    // Another starting daemon removed it first; bind() decides which of us gets the path.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

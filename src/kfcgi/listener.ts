/**
 * The listening socket: created before the jail, with its mode set at bind
 * (no window with a wider mode), given to -u, and removed at exit only if the
 * path still names the socket we made. Its directory stays open so that the
 * socket can be removed from inside the jail (unlinkat on a descriptor opened
 * before chroot).
 */
import { chownSync, closeSync, openSync, constants as fsConstants, readFileSync, rmSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ErrorCode, GatehouseError } from '../errors.js';
import { KFCGI_FALLBACK_BACKLOG, KFCGI_SOCKET_MODE, KFCGI_SOMAXCONN_PATH, KFCGI_STALE_SOCKET_WAIT_MS } from '../limits.js';
import {
  claimUnixSocketPath,
  closeDescriptor,
  createListener,
  describeListenAddress,
  identityAt,
  unixSocketIsLive,
  unixSocketPathState,
  unlinkAt,
  type ActivatedSocket,
  type FileIdentity,
  type ListenAddress,
  type UserEntry,
} from '../sys/index.js';

/** A socket file we created, removable later (also from inside a chroot) only while it is still ours. */
export class OwnedSocketPath {
  readonly path: string;
  readonly #directoryFd: number;
  readonly #name: string;
  readonly #identity: FileIdentity | null;
  #removed = false;

  constructor(path: string) {
    this.path = path;
    this.#name = basename(path);
    this.#directoryFd = openSync(dirname(path), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    this.#identity = identityAt(this.#directoryFd, this.#name);
  }

  /**
   * Removes the socket file if it is still the one we created (another
   * instance may have replaced it since). Returns what happened, for the log.
   */
  remove(): string | null {
    if (this.#removed) return null;
    this.#removed = true;
    try {
      const now = identityAt(this.#directoryFd, this.#name);
      if (now === null) return `${this.path}: already gone`;
      if (this.#identity === null || now.ino !== this.#identity.ino || now.dev !== this.#identity.dev) {
        return `${this.path}: left in place, it is no longer our socket (another server replaced it)`;
      }
      unlinkAt(this.#directoryFd, this.#name);
      return `${this.path}: removed`;
    } catch (error) {
      return `${this.path}: could not remove it (${(error as Error).message}); the directory must be writable by the user kfcgi runs as (-U). The next start detects the stale socket and replaces it`;
    } finally {
      closeSync(this.#directoryFd);
    }
  }
}

export interface Listener {
  fd: number;
  address: ListenAddress;
  backlog: number;
  /** The socket file, for unix sockets. */
  owned: OwnedSocketPath | null;
  describe(): string;
  /** Closes the descriptor (once). */
  close(): void;
}

/** The system's largest listen backlog (gatehouse's default, see the manual). */
export function systemMaxBacklog(): number {
  try {
    const value = Number.parseInt(readFileSync(KFCGI_SOMAXCONN_PATH, 'utf8').trim(), 10);
    return Number.isInteger(value) && value > 0 ? value : KFCGI_FALLBACK_BACKLOG;
  } catch {
    return KFCGI_FALLBACK_BACKLOG;
  }
}

/**
 * Makes room for a unix socket at `path` (the check every command shares,
 * src/sys): nothing there is fine; a socket no one answers on (left by a
 * crash) is removed; a live server or a file that is not a socket is an
 * error that says what to do. `what` names the path in that error.
 */
export function clearStaleSocket(path: string, what: string): string | null {
  try {
    // A socket that answers is asked again for a moment first (stillLive): it may be a killed manager's dying workers'.
    if (unixSocketPathState(path) === 'live') stillLive(path);
    return claimUnixSocketPath(path) ? `removed stale socket ${path} (nothing was accepting on it)` : null;
  } catch (error) {
    throw new GatehouseError(ErrorCode.KFCGI_SETUP, `${what}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The pool's socket when systemd passed it (socket activation, kfcgi@.socket):
 * used as it is, never bound, chowned or removed here (the .socket unit owns
 * its path, mode and owner). Exactly one socket must have been passed.
 */
export function adoptActivatedListener(sockets: readonly ActivatedSocket[], backlog: number): Listener {
  if (sockets.length !== 1)
    throw new GatehouseError(
      ErrorCode.KFCGI_SETUP,
      `systemd passed ${sockets.length} sockets (${sockets.map((socket) => socket.name).join(', ')}); a pool serves one: give the .socket unit one ListenStream=`,
    );
  const { fd, name, address } = sockets[0]!;
  let open = true;
  return {
    fd,
    address: address ?? { kind: 'fd', fd },
    backlog,
    owned: null,
    describe: () => `${address ? describeListenAddress(address) : `fd ${fd}`} (passed by systemd as fd ${fd}, ${name})`,
    close: () => {
      if (open) closeDescriptor(fd);
      open = false;
    },
  };
}

/**
 * Whether a server accepts on `path`, asked again for a moment when it does:
 * a manager killed an instant ago takes its workers with it (their
 * lifelines), but they may need a few milliseconds to go, and a supervisor
 * restarting kfcgi at once must find the socket stale, not live. A blocking
 * wait is fine here: this runs once, at start, before anything else.
 */
function stillLive(path: string): boolean {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; waited < KFCGI_STALE_SOCKET_WAIT_MS; waited += 20) {
    if (!unixSocketIsLive(path)) return false;
    Atomics.wait(pause, 0, 0, 20);
  }
  return unixSocketIsLive(path);
}

/** Creates a unix socket (mode 0660 from bind on, owned by `owner`) or a TCP listener. */
export function openListener(address: ListenAddress, backlog: number, owner: UserEntry | null, notes: string[]): Listener {
  let owned: OwnedSocketPath | null = null;
  if (address.kind === 'unix') {
    const note = clearStaleSocket(address.path, 'the socket path');
    if (note) notes.push(note);
  }
  const fd = createListener(address, { backlog, mode: KFCGI_SOCKET_MODE });
  try {
    if (address.kind === 'unix') {
      if (owner) chownSync(address.path, owner.uid, owner.gid);
      owned = new OwnedSocketPath(address.path);
    }
  } catch (error) {
    closeDescriptor(fd);
    if (address.kind === 'unix') rmSync(address.path, { force: true });
    throw error;
  }
  let open = true;
  return {
    fd,
    address,
    backlog,
    owned,
    describe: () => describeListenAddress(address),
    close: () => {
      if (open) closeDescriptor(fd);
      open = false;
    },
  };
}

/**
 * One way for every node:net server gatehouse runs to listen (serve's HTTP
 * listeners, cgid --fastcgi, the worker library's listen()), so each gets the
 * same unix-socket care as kfcgi and the cgid daemon:
 *
 * - a stale socket left by a process that was killed is found with a
 *   connect() probe and replaced; a live server's socket, or a file that is
 *   not a socket, is refused with one line and left alone
 *   (claimUnixSocketPath);
 * - the socket is bound by createListener with its final mode (the umask is
 *   set around bind(2)) and given its owner before listen(2): there is no
 *   moment when it exists with a wider mode, and no one can connect before it
 *   has its owner;
 * - at stop, the path is removed only while it still names the socket this
 *   process bound (another instance may have replaced it since).
 *
 * TCP addresses and inherited descriptors go to net.Server.listen as they are.
 */
import { lstatSync, unlinkSync } from 'node:fs';
import type net from 'node:net';
import { ErrorCode, GatehouseError } from '../errors.js';
import { UNIX_SOCKET_BACKLOG, UNIX_SOCKET_MODE } from '../limits.js';
import { closeQuietly } from './libc.js';
import { claimUnixSocketPath, createListener, describeListenAddress, type ListenAddress } from './sockets.js';

/** How a unix socket is made: its mode from bind on, and the owner and group it is given before listen. */
export interface UnixSocketOptions {
  /** Permission bits (default UNIX_SOCKET_MODE, 0660). */
  mode?: number;
  /** Owner and group of the socket file (default: this process's). */
  owner?: { uid: number; gid: number };
}

export interface ListenServerOptions {
  /** listen(2) backlog (default UNIX_SOCKET_BACKLOG for unix sockets, Node's 511 for TCP). */
  backlog?: number;
  unix?: UnixSocketOptions;
}

/** A server listening: where, whether a stale socket was replaced, and how to remove the socket file later. */
export interface ServerListening {
  /** The address bound (TCP with the port the kernel chose for port 0). */
  address: ListenAddress;
  /** A stale socket file was removed to bind this one. */
  replacedStale: boolean;
  /**
   * Removes the unix socket file if it is still the one bound here; returns
   * what happened for the log (null for TCP and descriptors). Call it after
   * the server closed.
   */
  removeSocket(): string | null;
}

const ADVICE: Record<string, string> = {
  EADDRINUSE: 'another process is listening on this port: stop it, or choose another address',
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; a socket path needs a writable directory)',
  EADDRNOTAVAIL: 'no network interface has this address',
  ENOENT: 'the directory does not exist',
  ENOTSOCK: 'the descriptor is not a socket',
  EBADF: 'no such descriptor was inherited',
  EINVAL: 'the descriptor is not a listening socket',
};

function listenError(address: ListenAddress, error: unknown): GatehouseError {
  if (error instanceof GatehouseError && error.code === ErrorCode.SOCKET_IN_USE) return error;
  const code = (error as NodeJS.ErrnoException).code ?? (error as { errnoName?: string }).errnoName;
  const detail = code && ADVICE[code] ? `${code}: ${ADVICE[code]}` : (error as Error).message;
  return new GatehouseError(ErrorCode.SYSCALL_FAILED, `cannot listen on ${formatAddress(address)}: ${detail}`, { cause: error });
}

function formatAddress(address: ListenAddress): string {
  return address.kind === 'unix' ? `unix:${address.path}` : describeListenAddress(address);
}

function serverListen(server: net.Server, options: net.ListenOptions | { fd: number; backlog?: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Makes `server` listen on `address` (unix, tcp or fd; resolve `systemd`
 * addresses first). Rejects with a GatehouseError whose message is one line
 * that names the address and what to do.
 */
export async function listenServer(
  server: net.Server,
  address: ListenAddress,
  options: ListenServerOptions = {},
): Promise<ServerListening> {
  if (address.kind === 'systemd')
    throw new GatehouseError(ErrorCode.ADDRESS_INVALID, `${describeListenAddress(address)}: resolve the passed sockets first`);
  if (address.kind !== 'unix') {
    try {
      await serverListen(
        server,
        address.kind === 'fd'
          ? { fd: address.fd }
          : { host: address.host, port: address.port, ...(options.backlog !== undefined ? { backlog: options.backlog } : {}) },
      );
    } catch (error) {
      throw listenError(address, error);
    }
    const bound = server.address();
    return {
      address: bound !== null && typeof bound === 'object' ? { kind: 'tcp', host: bound.address, port: bound.port } : address,
      replacedStale: false,
      removeSocket: () => null,
    };
  }
  const path = address.path;
  let replacedStale: boolean;
  let fd: number;
  try {
    replacedStale = claimUnixSocketPath(path);
    fd = createListener(address, {
      backlog: options.backlog ?? UNIX_SOCKET_BACKLOG,
      mode: options.unix?.mode ?? UNIX_SOCKET_MODE,
      ...(options.unix?.owner ? { owner: options.unix.owner } : {}),
    });
  } catch (error) {
    throw listenError(address, error);
  }
  const identity = lstatSync(path);
  try {
    await serverListen(server, { fd });
  } catch (error) {
    closeQuietly(fd);
    unlinkIfSame(path, identity);
    throw listenError(address, error);
  }
  let removed = false;
  return {
    address,
    replacedStale,
    removeSocket: () => {
      if (removed) return null;
      removed = true;
      return unlinkIfSame(path, identity);
    },
  };
}

function unlinkIfSame(path: string, identity: { ino: number; dev: number }): string {
  try {
    const now = lstatSync(path);
    if (now.ino !== identity.ino || now.dev !== identity.dev) return `${path}: left in place, another server replaced it`;
    unlinkSync(path);
    return `${path}: removed`;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `${path}: already gone`;
    return `${path}: could not remove it (${code ?? (error as Error).message}); the next start finds it stale and replaces it`;
  }
}

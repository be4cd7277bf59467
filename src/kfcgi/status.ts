/**
 * Pool status on request: a unix socket (-S) that answers every connection
 * with one JSON object and closes; `gatehouse status statuspath` reads it
 * (src/metrics/status.ts) and prints it.
 */
import net from 'node:net';
import { chownSync } from 'node:fs';
import { KFCGI_SOCKET_MODE, KFCGI_STATUS_BACKLOG, KFCGI_STATUS_READ_TIMEOUT_MS } from '../limits.js';
import { createListener, closeDescriptor, type UserEntry } from '../sys/index.js';
import { clearStaleSocket, OwnedSocketPath } from './listener.js';
import type { PoolStatus } from '../metrics/status.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export interface StatusServer {
  owned: OwnedSocketPath;
  /** Starts answering (after the jail: the socket was bound before). */
  serve(status: () => PoolStatus): void;
  close(): void;
}

/** Binds the status socket now (before the jail), mode 0660, owned by `owner`. */
export function openStatusSocket(path: string, owner: UserEntry | null, notes: string[]): StatusServer {
  const note = clearStaleSocket(path, 'the status socket path');
  if (note) notes.push(note);
  const fd = createListener({ kind: 'unix', path }, { backlog: KFCGI_STATUS_BACKLOG, mode: KFCGI_SOCKET_MODE });
  if (owner) chownSync(path, owner.uid, owner.gid);
  const owned = new OwnedSocketPath(path);
  let server: net.Server | null = null;
  return {
    owned,
    serve(status) {
      server = net.createServer((socket) => {
        socket.on('error', () => undefined);
        socket.end(`${JSON.stringify(status())}\n`);
      });
      server.listen({ fd });
    },
    close() {
      if (server) server.close();
      else closeDescriptor(fd);
    },
  };
}

/** Reads the status from a running kfcgi's status socket. */
export function readStatus(path: string, timeoutMs = KFCGI_STATUS_READ_TIMEOUT_MS): Promise<PoolStatus> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () =>
      socket.destroy(new GatehouseError(ErrorCode.STATUS_UNAVAILABLE, `no answer from ${path} within ${timeoutMs} ms`)),
    );
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (error) =>
      reject(
        new GatehouseError(
          ErrorCode.STATUS_UNAVAILABLE,
          `cannot read kfcgi status from ${path}: ${error.message}; is kfcgi running with -S ${path}?`,
        ),
      ),
    );
    socket.on('end', () => {
      try {
        resolve(JSON.parse(text) as PoolStatus);
      } catch {
        reject(
          new GatehouseError(ErrorCode.STATUS_UNAVAILABLE, `${path} answered something that is not kfcgi status: ${text.slice(0, 80)}`),
        );
      }
    });
  });
}

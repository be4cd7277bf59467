/**
 * Accepting connections as they come, also when the event loop is busy.
 *
 * Since libuv 1.45 (every Node from 20 on) a listening socket accepts one
 * connection per turn of the event loop (libuv pull request 3696). Under load
 * a turn of gatehouse's loop handles hundreds of events (client sockets,
 * script pipes, the cgid daemon) and takes 50-150 ms on a busy 2-core machine,
 * so a burst of 256 new connections waited up to 256 turns in the kernel's
 * accept queue: at 256 connections wrk saw the median at 0.5 s and 1-2% of the
 * requests past 2 s (bench/README.md, issue 17), while no request waited for a
 * script slot. Requests on connections accepted late are served late, whatever
 * the order they were sent in.
 *
 * When libuv hands over a connection, this takes the ones queued behind it in
 * the same turn (accept4 until EAGAIN, at most HTTP_ACCEPT_BATCH), in the
 * kernel's order, and gives each to the server exactly as net.Server's own
 * accept does: a net.Socket on the descriptor, counted in the server's
 * connections, then the 'connection' event. A bounded batch leaves the rest
 * for the next turn (and for other processes sharing the socket).
 *
 * Where the system-call binding does not load, libuv's accept alone is used.
 */
import net from 'node:net';
import { HTTP_ACCEPT_BATCH } from '../limits.js';

type Accept = (fd: number, options: { nonBlocking: boolean }) => { fd: number } | null;

/** net.Server fields net's own accept sets, and which net.Socket's destroy reads back (_connections, _emitCloseIfDrained). */
interface ServerInternals {
  _handle?: { fd?: number } | null;
  _connections: number;
  maxConnections?: number;
  allowHalfOpen?: boolean;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
}

interface SocketInternals {
  server: net.Server;
  _server: net.Server;
}

/**
 * Makes `server` take every queued connection (up to batch) when libuv gives
 * it one. Call after it listens. Resolves false when the binding is missing.
 */
export async function drainAcceptQueue(server: net.Server, batch = HTTP_ACCEPT_BATCH): Promise<boolean> {
  let accept: Accept;
  try {
    ({ acceptConnection: accept } = await import('../sys/index.js'));
  } catch {
    return false;
  }
  const internals = server as unknown as ServerInternals;
  const listenFd = internals._handle?.fd;
  if (typeof listenFd !== 'number' || listenFd < 0) return false;
  let draining = false;
  server.on('connection', () => {
    // The connections given below come back through this listener: they start no drain of their own.
    if (draining) return;
    draining = true;
    try {
      for (let taken = 0; taken < batch; taken++) {
        if (internals.maxConnections !== undefined && internals._connections >= internals.maxConnections) return;
        if (internals._handle?.fd !== listenFd) return; // closed meanwhile
        let accepted: { fd: number } | null;
        try {
          accepted = accept(listenFd, { nonBlocking: true });
        } catch {
          return; // EMFILE and the like: libuv's own accept reports them on its next turn
        }
        if (accepted === null) return;
        hand(server, internals, accepted.fd);
      }
    } finally {
      draining = false;
    }
  });
  return true;
}

/** What net.Server's onconnection does with a descriptor libuv accepted. */
function hand(server: net.Server, internals: ServerInternals, fd: number): void {
  const socket = new net.Socket({ fd, allowHalfOpen: internals.allowHalfOpen ?? false, readable: true, writable: true });
  if (internals.noDelay) socket.setNoDelay(true);
  if (internals.keepAlive) socket.setKeepAlive(true, internals.keepAliveInitialDelay ?? 0);
  internals._connections++;
  (socket as unknown as SocketInternals).server = server;
  (socket as unknown as SocketInternals)._server = server;
  server.emit('connection', socket);
}

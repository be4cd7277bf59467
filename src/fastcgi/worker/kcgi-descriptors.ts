/**
 * The worker side of kcgi's FastCGI Extensions for Management Control, used
 * by a variable pool (`gatehouse kfcgi -r`, or kcgi's own kfcgi -r).
 *
 * When FCGI_LISTENSOCK_DESCRIPTORS names a descriptor, the worker does not
 * accept on fd 0. Instead it reads, from that descriptor (a unix stream
 * socket to the manager), a 64-bit cookie with one accepted connection
 * attached (SCM_RIGHTS); serves FastCGI on that connection until it is
 * closed; then writes the same 8 cookie bytes back, which tells the manager
 * it is free again. End of file on the descriptor means the manager released
 * the worker: it takes no more connections, finishes the ones it has, and
 * the process ends when nothing is left.
 *
 * FastCGIServer.listen() (no arguments) calls listenOnKcgiDescriptors() when
 * the variable is set, loading this module (and the system-call binding)
 * only in that mode.
 */
import net from 'node:net';
import { writeSync } from 'node:fs';
import { ErrorCode, GatehouseError } from '../../errors.js';
import { KCGI_COOKIE_BYTES } from '../protocol.js';
import { closeDescriptor, receiveDescriptors, setNonBlocking, watchReadable } from '../../sys/index.js';

/** What this module needs of the worker server (FastCGIServer has it). */
export interface ConnectionServer {
  /** Serves one already-accepted connection; resolves once it is closed. */
  handleConnection(socket: net.Socket): Promise<void>;
  emit(event: string | symbol, ...args: unknown[]): boolean;
}

/** Parses FCGI_LISTENSOCK_DESCRIPTORS: a natural number, else null (then the worker accepts on fd 0 as usual). */
export function parseDescriptorVariable(value: string | undefined): number | null {
  if (value === undefined || !/^\d+$/.test(value)) return null;
  const fd = Number(value);
  return Number.isSafeInteger(fd) && fd <= 2 ** 31 - 1 ? fd : null;
}

/**
 * Receives connections from the manager on `controlFd` and serves each with
 * `server.handleConnection`, writing its cookie back once it closed. Emits
 * 'listening' on the server once it waits for connections. Resolves when the
 * manager released the worker (end of file) and every connection it handed
 * over is done.
 */
export function listenOnKcgiDescriptors(server: ConnectionServer, controlFd: number): Promise<void> {
  if (!Number.isInteger(controlFd) || controlFd < 0) {
    return Promise.reject(
      new GatehouseError(
        ErrorCode.KFCGI_SETUP,
        `FCGI_LISTENSOCK_DESCRIPTORS=${controlFd} is not a descriptor number; a kfcgi variable pool sets it to the worker's control socket`,
      ),
    );
  }
  return new Promise<void>((resolve, reject) => {
    let inFlight = 0;
    let released = false;
    let partial: Buffer = Buffer.alloc(0);
    let pendingFd: number | null = null;
    const finishIfDone = () => {
      if (released && inFlight === 0) resolve();
    };
    // Cookies of connections that closed during this turn of the event loop go back in one write at its
    // end: a busy worker often finishes several at once, and each write wakes the manager.
    let unsentCookies: Buffer[] = [];
    let flushScheduled = false;
    const flushCookies = () => {
      flushScheduled = false;
      if (released || unsentCookies.length === 0) return;
      const bytes = unsentCookies.length === 1 ? unsentCookies[0]! : Buffer.concat(unsentCookies);
      unsentCookies = [];
      let written: number;
      try {
        written = writeSync(controlFd, bytes);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') {
          fail(new GatehouseError(ErrorCode.KFCGI_SETUP, `writing a cookie back to the kfcgi manager failed: ${(error as Error).message}`));
          return;
        }
        written = 0;
      }
      // The manager reads cookies as they come; a full socket buffer clears at once, so try again next turn.
      if (written < bytes.length) writeCookie(bytes.subarray(written));
    };
    const writeCookie = (cookie: Buffer) => {
      if (released) return;
      unsentCookies.push(cookie);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushCookies);
      }
    };
    const serve = (fd: number, cookie: Buffer) => {
      let socket: net.Socket;
      try {
        socket = new net.Socket({ fd, readable: true, writable: true });
      } catch (error) {
        closeDescriptor(fd);
        writeCookie(cookie);
        server.emit('error', error);
        return;
      }
      inFlight += 1;
      server
        .handleConnection(socket)
        .then(
          () => undefined,
          (error: unknown) => server.emit('error', error),
        )
        .finally(() => {
          // Our copy must be closed before the cookie goes back: the manager then treats the connection as done.
          socket.destroy();
          inFlight -= 1;
          writeCookie(cookie);
          finishIfDone();
        });
    };
    const release = () => {
      if (released) return;
      released = true;
      watcher.close();
      try {
        closeDescriptor(controlFd);
      } catch {
        // already closed
      }
      finishIfDone();
    };
    const fail = (error: Error) => {
      release();
      reject(error);
    };
    const onReadable = () => {
      while (!released) {
        let message;
        try {
          message = receiveDescriptors(controlFd, KCGI_COOKIE_BYTES - partial.length, 1);
        } catch (error) {
          fail(error as Error);
          return;
        }
        if (message.kind === 'again') return;
        if (message.kind === 'eof') {
          release();
          return;
        }
        partial = partial.length > 0 ? Buffer.concat([partial, message.payload]) : message.payload;
        // The descriptor rides on the cookie's first byte; the 8 bytes may (in theory) arrive in pieces.
        if (message.fds.length > 0) pendingFd = message.fds[0]!;
        if (partial.length < KCGI_COOKIE_BYTES) continue;
        const cookie = partial;
        const fd = pendingFd;
        partial = Buffer.alloc(0);
        pendingFd = null;
        if (fd === null) {
          fail(new GatehouseError(ErrorCode.KFCGI_SETUP, 'the kfcgi manager sent a cookie without a connection descriptor'));
          return;
        }
        serve(fd, cookie);
      }
    };
    let watcher: { close(): void };
    try {
      setNonBlocking(controlFd, true);
      watcher = watchReadable(controlFd, onReadable);
    } catch (error) {
      reject(new GatehouseError(ErrorCode.KFCGI_SETUP, `FCGI_LISTENSOCK_DESCRIPTORS=${controlFd}: ${(error as Error).message}`));
      return;
    }
    server.emit('listening');
    onReadable();
  });
}

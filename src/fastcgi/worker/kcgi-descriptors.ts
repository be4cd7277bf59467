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
  return new KcgiDescriptorListener(server, controlFd).run();
}

/**
 * One worker's side of the control socket: cookies with connections in,
 * the same cookies back out once those connections are done.
 */
class KcgiDescriptorListener {
  readonly #server: ConnectionServer;
  readonly #controlFd: number;
  #watcher: { close(): void } | undefined;
  /** Connections handed over and not closed yet. */
  #inFlight = 0;
  /** The manager released this worker (end of file on the control socket): no more connections come. */
  #released = false;
  /** A cookie read in pieces so far, and the descriptor that came with its first byte. */
  #partial: Buffer = Buffer.alloc(0);
  #pendingFd: number | null = null;
  /**
   * Cookies of connections that closed during this turn of the event loop go back in one write at its
   * end: a busy worker often finishes several at once, and each write wakes the manager.
   */
  #unsentCookies: Buffer[] = [];
  #flushScheduled = false;
  #resolve!: () => void;
  #reject!: (error: Error) => void;

  constructor(server: ConnectionServer, controlFd: number) {
    this.#server = server;
    this.#controlFd = controlFd;
  }

  run(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
      try {
        setNonBlocking(this.#controlFd, true);
        this.#watcher = watchReadable(this.#controlFd, () => this.#onReadable());
      } catch (error) {
        reject(new GatehouseError(ErrorCode.KFCGI_SETUP, `FCGI_LISTENSOCK_DESCRIPTORS=${this.#controlFd}: ${(error as Error).message}`));
        return;
      }
      this.#server.emit('listening');
      this.#onReadable();
    });
  }

  /** Reads every cookie (and connection) the control socket has for us now. */
  #onReadable(): void {
    while (!this.#released) {
      let message: ReturnType<typeof receiveDescriptors>;
      try {
        message = receiveDescriptors(this.#controlFd, KCGI_COOKIE_BYTES - this.#partial.length, 1);
      } catch (error) {
        this.#fail(error as Error);
        return;
      }
      if (message.kind === 'again') return;
      if (message.kind === 'eof') {
        this.#release();
        return;
      }
      this.#partial = this.#partial.length > 0 ? Buffer.concat([this.#partial, message.payload]) : message.payload;
      // The descriptor rides on the cookie's first byte; the 8 bytes may (in theory) arrive in pieces.
      if (message.fds.length > 0) this.#pendingFd = message.fds[0]!;
      if (this.#partial.length < KCGI_COOKIE_BYTES) continue;
      const cookie = this.#partial;
      const fd = this.#pendingFd;
      this.#partial = Buffer.alloc(0);
      this.#pendingFd = null;
      if (fd === null) {
        this.#fail(new GatehouseError(ErrorCode.KFCGI_SETUP, 'the kfcgi manager sent a cookie without a connection descriptor'));
        return;
      }
      this.#serve(fd, cookie);
    }
  }

  /** Serves one handed-over connection; its cookie goes back once it is closed. */
  #serve(fd: number, cookie: Buffer): void {
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, readable: true, writable: true });
    } catch (error) {
      closeDescriptor(fd);
      this.#writeCookie(cookie);
      this.#server.emit('error', error);
      return;
    }
    this.#inFlight += 1;
    this.#server
      .handleConnection(socket)
      .then(
        () => undefined,
        (error: unknown) => this.#server.emit('error', error),
      )
      .finally(() => {
        // Our copy must be closed before the cookie goes back: the manager then treats the connection as done.
        socket.destroy();
        this.#inFlight -= 1;
        this.#writeCookie(cookie);
        this.#finishIfDone();
      });
  }

  #writeCookie(cookie: Buffer): void {
    if (this.#released) return;
    this.#unsentCookies.push(cookie);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flushCookies());
    }
  }

  #flushCookies(): void {
    this.#flushScheduled = false;
    if (this.#released || this.#unsentCookies.length === 0) return;
    const bytes = this.#unsentCookies.length === 1 ? this.#unsentCookies[0]! : Buffer.concat(this.#unsentCookies);
    this.#unsentCookies = [];
    let written: number;
    try {
      written = writeSync(this.#controlFd, bytes);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') {
        this.#fail(
          new GatehouseError(ErrorCode.KFCGI_SETUP, `writing a cookie back to the kfcgi manager failed: ${(error as Error).message}`),
        );
        return;
      }
      written = 0;
    }
    // The manager reads cookies as they come; a full socket buffer clears at once, so try again next turn.
    if (written < bytes.length) this.#writeCookie(bytes.subarray(written));
  }

  /** No more connections: the control socket is closed, and the promise settles once the last connection is done. */
  #release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#watcher?.close();
    try {
      closeDescriptor(this.#controlFd);
    } catch {
      // already closed
    }
    this.#finishIfDone();
  }

  #fail(error: Error): void {
    this.#release();
    this.#reject(error);
  }

  #finishIfDone(): void {
    if (this.#released && this.#inFlight === 0) this.#resolve();
  }
}

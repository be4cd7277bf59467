/**
 * The send timeout (Apache's Timeout for writes, nginx's send_timeout): a
 * connection with output waiting that takes none of it for the timeout is
 * closed. Closing it is what stops the work behind the response: the CGI
 * handler kills the script (whatever started it), the FastCGI relay aborts
 * the upstream request, a static file's stream is closed. Without it a
 * client that stops reading holds a script slot or an application process
 * for as long as it keeps the connection open.
 *
 * Progress is bytes the kernel accepted, not bytes handed to the socket:
 * `bytesWritten` counts what was written to the stream, `writableLength`
 * what is still buffered or in flight, and the handle's `writeQueueSize`
 * what is left of the write libuv is doing (a large write taken by the
 * kernel piece by piece is progress too). A connection with nothing waiting
 * is not timed (the keep-alive and request timeouts cover idle ones).
 *
 * One coarse sweep per watcher instead of a timer per write (undici's timer
 * habit): a connection is closed between one and 1.25 timeouts after its
 * last progress.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { plainAddress } from './http-request.js';
import { HTTP_TIMEOUT_CHECK_MAX_MS, HTTP_TIMEOUT_CHECK_MIN_MS } from '../limits.js';

/** What the sweep saw of one connection: the bytes the kernel took, the rest of libuv's current write, and since when nothing moved. */
interface Progress {
  taken: number;
  inFlight: number;
  since: number;
}

/** A connection the send timeout closed: what was left to send, and for how long nothing moved. */
export interface SendTimeoutEvent {
  socket: Socket;
  /** Bytes written by the server and not yet taken by the client's side. */
  waitingBytes: number;
  stalledMs: number;
}

export class SendTimeout {
  #timeoutMs: number;
  readonly #onTimeout: (event: SendTimeoutEvent) => void;
  /** Watched connections; null while nothing waits to be sent. */
  readonly #sockets = new Map<Socket, Progress | null>();
  #timer: NodeJS.Timeout | null = null;

  /** `timeoutMs` 0 watches nothing. `onTimeout` runs just before the connection is destroyed (for the log line). */
  constructor(timeoutMs: number, onTimeout: (event: SendTimeoutEvent) => void = () => {}) {
    this.#timeoutMs = timeoutMs;
    this.#onTimeout = onTimeout;
  }

  get timeoutMs(): number {
    return this.#timeoutMs;
  }

  /** A new timeout (a configuration reload), for the connections watched already too; 0 stops timing them. */
  setTimeoutMs(timeoutMs: number): void {
    if (timeoutMs === this.#timeoutMs) return;
    this.#timeoutMs = timeoutMs;
    this.#stop();
    if (timeoutMs <= 0) this.#sockets.clear();
    else if (this.#sockets.size > 0) this.#start();
  }

  /** Times this connection's writes until it closes (watching it again is a no-op). */
  watch(socket: Socket): void {
    if (this.#timeoutMs <= 0 || socket.destroyed || this.#sockets.has(socket)) return;
    this.#sockets.set(socket, null);
    socket.once('close', () => {
      this.#sockets.delete(socket);
      if (this.#sockets.size === 0) this.#stop();
    });
    if (this.#timer === null) this.#start();
  }

  #start(): void {
    const every = Math.max(HTTP_TIMEOUT_CHECK_MIN_MS, Math.min(HTTP_TIMEOUT_CHECK_MAX_MS, Math.floor(this.#timeoutMs / 4)));
    this.#timer = setInterval(() => this.#sweep(), every);
    // The server's listeners keep the process alive, not this sweep.
    this.#timer.unref();
  }

  /** Stops the sweep (the connections are left as they are). */
  close(): void {
    this.#sockets.clear();
    this.#stop();
  }

  #stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  #sweep(): void {
    const now = performance.now();
    for (const [socket, last] of this.#sockets) {
      const waiting = socket.writableLength;
      if (waiting === 0 || socket.destroyed) {
        if (last !== null) this.#sockets.set(socket, null);
        continue;
      }
      const taken = socket.bytesWritten - waiting;
      // Undocumented but stable since Node 0.x (net.js reads it itself); without it only whole writes count as progress.
      const inFlight = (socket as unknown as { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0;
      if (last === null || taken > last.taken || inFlight < last.inFlight) {
        this.#sockets.set(socket, { taken, inFlight, since: now });
        continue;
      }
      // A new write started while nothing moved: remember its size, so that its first piece taken counts as progress.
      if (inFlight > last.inFlight) last.inFlight = inFlight;
      const stalledMs = now - last.since;
      if (stalledMs < this.#timeoutMs) continue;
      this.#sockets.delete(socket);
      try {
        this.#onTimeout({ socket, waitingBytes: waiting, stalledMs: Math.round(stalledMs) });
      } finally {
        socket.destroy();
      }
    }
  }
}

/** The error-log line of a connection the send timeout closed, naming the request it was answering (node:http's current response). */
export function describeSendTimeout({ socket, waitingBytes, stalledMs }: SendTimeoutEvent, timeoutMs: number): string {
  const res = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  const request = res?.req ? ` answering ${res.req.method} ${res.req.url}` : '';
  return `send timeout: ${socket.remoteAddress ? plainAddress(socket.remoteAddress) : 'the client'} took none of ${waitingBytes} bytes for ${stalledMs} ms${request} (send-timeout ${timeoutMs} ms): connection closed, its script or FastCGI request stopped`;
}

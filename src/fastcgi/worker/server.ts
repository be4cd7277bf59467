/**
 * The worker library's server: accepts web-server connections (a unix path, a
 * TCP port, the inherited FCGI_LISTENSOCK_FILENO, or connections handed over
 * by a kfcgi variable pool) and runs a node:http-style handler per request.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { fstatSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { FCGI_LISTENSOCK_FILENO } from '../protocol.js';
import { ErrorCode, GatehouseError } from '../../errors.js';
import {
  DEFAULT_MAX_PARAMS_BYTES,
  DEFAULT_MAX_REQUEST_ID,
  DEFAULT_MAX_REQUESTS_PER_CONNECTION,
  DEFAULT_WORKER_MAX_CONNS,
  WORKER_SHUTDOWN_TIMEOUT_MS,
} from '../../limits.js';
import { WorkerConnection, type ConnectionHost, type ConnectionLimits } from './connection.js';
import { SendTimeout } from '../../cgi/send-timeout.js';
import type { ListenAddress, UnixSocketOptions } from '../../sys/index.js';
import type { FastCGIRequest } from './request.js';
import type { FastCGIResponse } from './response.js';

export type RequestHandler = (req: FastCGIRequest, res: FastCGIResponse) => void | Promise<void>;

export interface WorkerServerOptions {
  /** Largest PARAMS block per request, in bytes, and the most one connection holds for requests still receiving PARAMS; past either, a 431. */
  maxParamsBytes?: number;
  /** Requests one connection may multiplex; more get FCGI_OVERLOADED. */
  maxRequestsPerConnection?: number;
  /** Connections at once (also what FCGI_GET_VALUES reports as FCGI_MAX_CONNS). */
  maxConnections?: number;
  /**
   * Stop gracefully on SIGTERM and SIGUSR1 (as libfcgi does): stop accepting,
   * finish requests in flight, exit 0; a second signal or shutdownTimeoutMs
   * ends the process at once. Default true. Set false when the application
   * handles signals itself and calls server.close(). Listening for SIGUSR1
   * also keeps Node from opening its inspector on it.
   */
  handleSignals?: boolean;
  shutdownTimeoutMs?: number;
  /**
   * On TCP: addresses allowed to connect (FCGI_WEB_SERVER_ADDRS' meaning).
   * Defaults to the FCGI_WEB_SERVER_ADDRS environment variable, comma-separated; unset means anyone.
   */
  webServerAddrs?: string[];
  /**
   * Send timeout: a web server that takes none of the output waiting for it for this long is
   * disconnected, which aborts every request of the connection (a connection error is reported).
   * 0 or absent: none. Applies to the connections the server accepts itself.
   */
  sendTimeoutMs?: number;
}

/**
 * listen()'s object form: what net.Server.listen takes, plus the unix
 * socket's owner, group and mode (spawn-fcgi's -U -G -M, php-fpm's
 * listen.owner, listen.group, listen.mode), applied from bind on.
 */
export interface WorkerListenOptions {
  path?: string;
  port?: number;
  host?: string;
  fd?: number;
  backlog?: number;
  /** Owner of the unix socket (a user name); default: the user the process runs as. Needs root for another user. */
  socketUser?: string;
  /** Group of the unix socket (a group name), e.g. the web server's; default: socketUser's login group. */
  socketGroup?: string;
  /** Permission bits of the unix socket from bind on (default 0o660: owner and group may connect). */
  socketMode?: number;
}

/** A unix socket path, as listen() takes it: a string that is not a port number, or { path }. */
function unixPathOf(args: readonly unknown[]): string | undefined {
  const first = args[0];
  if (typeof first === 'string' && !/^\d+$/.test(first)) return first;
  if (typeof first === 'object' && first !== null && typeof (first as WorkerListenOptions).path === 'string')
    return (first as WorkerListenOptions).path;
  return undefined;
}

/** Whether systemd passed this process its listening sockets (socket activation, sd_listen_fds(3)). */
function socketActivated(): boolean {
  return process.env.LISTEN_FDS !== undefined && Number(process.env.LISTEN_PID) === process.pid;
}

export class FastCGIServer extends EventEmitter implements ConnectionHost {
  readonly limits: ConnectionLimits;
  readonly #server: net.Server;
  readonly #connections = new Set<WorkerConnection>();
  readonly #options: WorkerServerOptions;
  readonly #allowedAddrs: Set<string> | null;
  readonly #sendTimeout: SendTimeout | null;
  #stopping = false;
  #signalHandler: ((signal: NodeJS.Signals) => void) | null = null;
  /** How the unix socket bound by listen() is removed at close (only while it is still ours). */
  #removeSocket: (() => string | null) | null = null;
  /** NOTIFY_SOCKET was set: READY=1 once listening, STOPPING=1 at close (Type=notify services). */
  #notify: ((state: string) => void) | null = null;

  constructor(handler?: RequestHandler, options: WorkerServerOptions = {}) {
    super();
    this.#options = options;
    this.limits = {
      maxParamsBytes: options.maxParamsBytes ?? DEFAULT_MAX_PARAMS_BYTES,
      maxRequestsPerConnection: options.maxRequestsPerConnection ?? DEFAULT_MAX_REQUESTS_PER_CONNECTION,
      maxRequestId: DEFAULT_MAX_REQUEST_ID,
      maxConns: options.maxConnections ?? DEFAULT_WORKER_MAX_CONNS,
    };
    const addrs = options.webServerAddrs ?? parseWebServerAddrs(process.env.FCGI_WEB_SERVER_ADDRS);
    this.#allowedAddrs = addrs && addrs.length > 0 ? new Set(addrs.flatMap(expandAddress)) : null;
    if (handler) this.on('request', handler);
    this.#server = net.createServer({ noDelay: true }, (socket) => this.#accept(socket));
    const sendTimeoutMs = options.sendTimeoutMs ?? 0;
    this.#sendTimeout =
      sendTimeoutMs > 0
        ? new SendTimeout(sendTimeoutMs, ({ socket, waitingBytes, stalledMs }) =>
            this.reportError(
              new GatehouseError(
                ErrorCode.CLIENT_CLOSED,
                `send timeout: the web server${socket.remoteAddress ? ` at ${socket.remoteAddress}` : ''} took none of ${waitingBytes} bytes for ${stalledMs} ms (send-timeout ${sendTimeoutMs} ms): connection closed, its requests aborted`,
              ),
            ),
          )
        : null;
    this.#server.maxConnections = this.limits.maxConns;
    this.#server.on('error', (error) => this.emit('error', error));
    this.#server.on('listening', () => this.emit('listening'));
  }

  /**
   * Listens like net.Server.listen (a unix path, a port and host, options).
   * A unix socket gets its mode from bind on (socketMode, default 0660) and
   * its owner before listen (socketUser, socketGroup); a stale socket left by
   * a killed process is replaced, a live server's socket refused. With no
   * address: on the socket systemd passed (socket activation, LISTEN_FDS);
   * else, when FCGI_LISTENSOCK_DESCRIPTORS is set, on connections a kfcgi
   * variable pool hands over; else on FCGI_LISTENSOCK_FILENO (fd 0), as
   * spawn-fcgi, nginx's helpers and `gatehouse kfcgi` start applications.
   *
   * A failure is emitted as 'error'; with no 'error' listener it is printed
   * as one line and the process exits with status 1.
   */
  listen(...args: unknown[]): this {
    const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as () => void) : undefined;
    if (callback) this.once('listening', callback);
    if (this.#options.handleSignals !== false) this.#installSignalHandlers();
    if (process.env.NOTIFY_SOCKET) void this.#notifySystemd();
    const unixPath = unixPathOf(args);
    if (unixPath !== undefined) {
      const options = (typeof args[0] === 'object' ? args[0] : {}) as WorkerListenOptions;
      const backlog = typeof args[1] === 'number' ? args[1] : options.backlog;
      void this.#listenUnix(unixPath, { ...options, ...(backlog !== undefined ? { backlog } : {}) });
      return this;
    }
    if (args.length === 0) {
      if (socketActivated()) {
        void this.#listenActivated();
        return this;
      }
      if (process.env.FCGI_LISTENSOCK_DESCRIPTORS !== undefined) {
        void this.#listenOnDescriptors(process.env.FCGI_LISTENSOCK_DESCRIPTORS);
        return this;
      }
      this.#listenOnListenSocket();
      return this;
    }
    (this.#server.listen as (...a: unknown[]) => void)(...args);
    return this;
  }

  /**
   * Listens on `address` (a unix path, TCP, an inherited descriptor) the way
   * gatehouse's commands do, and resolves once listening: a unix socket gets
   * `unix.mode` from bind on and `unix.owner` before listen; a stale socket
   * is replaced, a live one refused (a GatehouseError with one line).
   */
  async listenOn(
    address: ListenAddress,
    options: { backlog?: number; unix?: UnixSocketOptions } = {},
  ): Promise<{ address: ListenAddress; replacedStale: boolean; removeSocket(): string | null }> {
    const { listenServer } = await import('../../sys/index.js');
    const listening = await listenServer(this.#server, address, options);
    this.#removeSocket = listening.removeSocket;
    return listening;
  }

  async #listenUnix(path: string, options: WorkerListenOptions): Promise<void> {
    try {
      const { resolveAccount } = await import('../../sys/index.js');
      let owner: { uid: number; gid: number } | undefined;
      if (options.socketUser !== undefined || options.socketGroup !== undefined) {
        const userName = options.socketUser ?? (await import('node:os')).userInfo().username;
        const account = resolveAccount(userName, options.socketGroup, { user: 'socketUser', group: 'socketGroup' });
        owner = { uid: account.user.uid, gid: account.gid };
      }
      const listening = await this.listenOn(
        { kind: 'unix', path },
        {
          ...(options.backlog !== undefined ? { backlog: options.backlog } : {}),
          unix: { ...(options.socketMode !== undefined ? { mode: options.socketMode } : {}), ...(owner ? { owner } : {}) },
        },
      );
      if (listening.replacedStale)
        process.stderr.write(`gatehouse worker ${process.pid}: replaced a stale socket at ${path} (nothing was accepting on it)\n`);
    } catch (error) {
      this.#listenFailed(error);
    }
  }

  /** systemd's socket activation: the one socket passed (several must be chosen with listen({ fd })). */
  async #listenActivated(): Promise<void> {
    try {
      const { activatedSockets } = await import('../../sys/index.js');
      const sockets = activatedSockets();
      if (sockets.length !== 1)
        throw new GatehouseError(
          ErrorCode.SYSTEMD,
          `systemd passed ${sockets.length} sockets (${sockets.map((socket) => `fd ${socket.fd} ${socket.name}`).join(', ')}); choose one with listen({ fd })`,
        );
      await this.listenOn({ kind: 'fd', fd: sockets[0]!.fd });
    } catch (error) {
      this.#listenFailed(error);
    }
  }

  /** A listen that failed: the 'error' event, or (no listener) one line and exit status 1 instead of a stack trace. */
  #listenFailed(error: unknown): void {
    if (this.listenerCount('error') > 0) {
      this.emit('error', error);
      return;
    }
    process.stderr.write(`gatehouse worker ${process.pid}: ${(error as Error).message}\n`);
    process.exit(1);
  }

  /** READY=1 to systemd once listening, STOPPING=1 when closing (Type=notify). */
  async #notifySystemd(): Promise<void> {
    const { notifySystemd } = await import('../../sys/index.js');
    this.#notify = (state) => notifySystemd(state);
    if (this.listening) this.#notify('READY=1');
    else this.once('listening', () => this.#notify?.('READY=1'));
  }

  /** FCGI_LISTENSOCK_FILENO: the listening socket a web server or process manager left on fd 0. */
  #listenOnListenSocket(): void {
    if (!isSocket(FCGI_LISTENSOCK_FILENO)) {
      throw new GatehouseError(
        ErrorCode.FCGI_BAD_RECORD,
        'listen() with no address needs a listening socket on fd 0 (FCGI_LISTENSOCK_FILENO), as spawn-fcgi or gatehouse kfcgi provide; pass a path or port to listen on one yourself',
      );
    }
    this.#server.listen({ fd: FCGI_LISTENSOCK_FILENO });
  }

  async #listenOnDescriptors(value: string): Promise<void> {
    try {
      // Loaded only in that mode, so plain workers never load the system-call binding it needs.
      const { listenOnKcgiDescriptors, parseDescriptorVariable } = await import('./kcgi-descriptors.js');
      const controlFd = parseDescriptorVariable(value);
      // As kcgi does: a value that is not a descriptor number means "accept on fd 0 as usual".
      if (controlFd === null) this.#listenOnListenSocket();
      else await listenOnKcgiDescriptors(this, controlFd);
    } catch (error) {
      this.emit('error', error);
    }
  }

  address(): ReturnType<net.Server['address']> {
    return this.#server.address();
  }

  get listening(): boolean {
    return this.#server.listening;
  }

  /** Serves one already-accepted connection (used by kfcgi's descriptor passing); resolves once it closed. */
  handleConnection(socket: Duplex): Promise<void> {
    const connection = new WorkerConnection(socket, this);
    this.#connections.add(connection);
    if (this.#stopping) connection.closeWhenIdle();
    return connection.closed.then(() => {
      this.#connections.delete(connection);
      if (this.#stopping && this.#connections.size === 0) this.emit('drained');
    });
  }

  /** Stops accepting; connections close once their requests are done. */
  close(callback?: (error?: Error) => void): this {
    if (!this.#stopping) this.#notify?.('STOPPING=1');
    this.#stopping = true;
    const removeSocket = this.#removeSocket;
    this.#removeSocket = null;
    if (this.#server.listening)
      this.#server.close((error) => {
        removeSocket?.();
        callback?.(error);
      });
    else if (callback) process.nextTick(callback);
    for (const connection of this.#connections) connection.closeWhenIdle();
    this.#removeSignalHandlers();
    return this;
  }

  /** Destroys every connection now, requests in flight included (like node:http's closeAllConnections). */
  closeAllConnections(): void {
    for (const connection of this.#connections) connection.destroy();
  }

  /** Requests in flight over all connections. */
  get activeRequests(): number {
    let total = 0;
    for (const connection of this.#connections) total += connection.activeRequests;
    return total;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  #accept(socket: net.Socket): void {
    if (this.#allowedAddrs && socket.remoteAddress !== undefined && !this.#allowedAddrs.has(socket.remoteAddress)) {
      this.reportError(
        new GatehouseError(
          ErrorCode.CLIENT_CLOSED,
          `refused FastCGI connection from ${socket.remoteAddress}: not in FCGI_WEB_SERVER_ADDRS`,
        ),
      );
      socket.destroy();
      return;
    }
    this.#sendTimeout?.watch(socket);
    void this.handleConnection(socket);
  }

  dispatch(req: FastCGIRequest, res: FastCGIResponse): void {
    let result: void | Promise<void> = undefined;
    try {
      const listeners = this.listeners('request') as RequestHandler[];
      if (listeners.length === 1) result = listeners[0]!(req, res);
      else this.emit('request', req, res);
    } catch (error) {
      this.#handlerFailed(res, error);
      return;
    }
    if (result && typeof (result as Promise<void>).then === 'function') {
      (result as Promise<void>).then(undefined, (error: unknown) => this.#handlerFailed(res, error));
    }
  }

  /** Fail closed, as node:http does: a 500 if nothing was sent, else the response ends where it is. */
  #handlerFailed(res: FastCGIResponse, error: unknown): void {
    const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
    this.emit('handlerError', error, res);
    if (res.destroyed || res.writableEnded) return;
    res.writeStderr(`gatehouse worker: request handler failed: ${message}\n`);
    res.appStatus = 1;
    if (!res.headersSent) {
      for (const name of res.getHeaderNames()) res.removeHeader(name);
      res.statusCode = 500;
      res.setHeader('Content-Type', 'text/plain');
      res.end('internal server error\n');
    } else res.end();
  }

  reportError(error: GatehouseError): void {
    if (this.listenerCount('connectionError') > 0) this.emit('connectionError', error);
    else process.stderr.write(`gatehouse worker: ${error.message}\n`);
  }

  #installSignalHandlers(): void {
    if (this.#signalHandler) return;
    let signals = 0;
    this.#signalHandler = (signal) => {
      if (++signals > 1) process.exit(0);
      process.stderr.write(
        `gatehouse worker ${process.pid}: ${signal}: finishing ${this.activeRequests} request(s) in flight, then exiting\n`,
      );
      const timer = setTimeout(() => process.exit(0), this.#options.shutdownTimeoutMs ?? WORKER_SHUTDOWN_TIMEOUT_MS);
      timer.unref();
      this.close();
      const exitWhenDrained = () => process.exit(0);
      if (this.#connections.size === 0) setImmediate(exitWhenDrained);
      else this.once('drained', exitWhenDrained);
    };
    process.on('SIGTERM', this.#signalHandler);
    process.on('SIGUSR1', this.#signalHandler);
  }

  #removeSignalHandlers(): void {
    // Kept installed while stopping so that a second signal still ends the process at once.
    if (!this.#signalHandler || this.#stopping) return;
    process.off('SIGTERM', this.#signalHandler);
    process.off('SIGUSR1', this.#signalHandler);
    this.#signalHandler = null;
  }
}

function isSocket(fd: number): boolean {
  try {
    return fstatSync(fd).isSocket();
  } catch {
    return false;
  }
}

export function parseWebServerAddrs(value: string | undefined): string[] | null {
  if (!value) return null;
  return value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

/** An IPv4 address also arrives as ::ffff:a.b.c.d on a dual-stack socket. */
function expandAddress(address: string): string[] {
  return net.isIPv4(address) ? [address, `::ffff:${address}`] : [address];
}

export function createServer(handler?: RequestHandler, options?: WorkerServerOptions): FastCGIServer {
  return new FastCGIServer(handler, options);
}

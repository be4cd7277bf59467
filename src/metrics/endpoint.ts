/**
 * The metrics listener: a small HTTP server of its own (never the public
 * listener) that answers
 *
 *   GET /metrics   the Prometheus exposition (text format 0.0.4)
 *   GET /status    the status document as JSON (what `gatehouse status` reads)
 *   GET /          a line saying what is here
 *
 * and nothing else (404; other methods 405). It is bounded like every
 * listener: a few connections, short timeouts, small heads.
 *
 * It is bound when the command starts (kfcgi: before the jail and the
 * privilege drop, like its other sockets) and answers 503 until the command
 * hands it what to serve. A unix socket gets its mode at bind(2); a stale
 * socket left by a killed process is replaced, a live one refused.
 */
import { chownSync, lstatSync, unlinkSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import { ErrorCode, GatehouseError } from '../errors.js';
import {
  METRICS_KEEPALIVE_TIMEOUT_MS,
  METRICS_LISTEN_BACKLOG,
  METRICS_MAX_CONNECTIONS,
  METRICS_REQUEST_TIMEOUT_MS,
  METRICS_SOCKET_MODE,
} from '../limits.js';
import { formatListenAddress } from '../options/listen-address.js';
import { closeDescriptor, createListener, unixSocketIsLive, type ListenAddress } from '../sys/index.js';

/** What the listener serves once the command runs. */
export interface MetricsSource {
  /** The exposition and its content type. */
  metrics(): Promise<{ text: string; contentType: string }>;
  /** The status document (src/metrics/status.ts). */
  status(): unknown;
}

export interface MetricsEndpointOptions {
  /** Owner of a unix socket file (kfcgi's -u). */
  owner?: { uid: number; gid: number } | null;
  /** Remove the unix socket file at close (false when the command removes it itself, as kfcgi does from inside its jail). */
  removeSocketOnClose?: boolean;
  /** Scrape failures and refused requests, for the command's log. */
  log?: (line: string) => void;
}

export class MetricsEndpoint {
  /** The address bound (a TCP port 0 replaced by the port the kernel chose). */
  readonly address: ListenAddress;
  readonly #server: http.Server;
  readonly #options: MetricsEndpointOptions;
  readonly #socketIdentity: { dev: number; ino: number } | null;
  #source: MetricsSource | null = null;
  #closed = false;

  /** Binds `address` and starts answering (503 until serve()). */
  static async open(address: ListenAddress, options: MetricsEndpointOptions = {}): Promise<MetricsEndpoint> {
    const server = http.createServer({
      requestTimeout: METRICS_REQUEST_TIMEOUT_MS,
      headersTimeout: METRICS_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: METRICS_KEEPALIVE_TIMEOUT_MS,
      maxHeaderSize: 8192,
    });
    server.maxConnections = METRICS_MAX_CONNECTIONS;
    const where = formatListenAddress(address);
    let identity: { dev: number; ino: number } | null = null;
    try {
      if (address.kind === 'unix') {
        replaceStaleSocket(address.path);
        const fd = createListener(address, { backlog: METRICS_LISTEN_BACKLOG, mode: METRICS_SOCKET_MODE });
        try {
          if (options.owner) chownSync(address.path, options.owner.uid, options.owner.gid);
          const stat = lstatSync(address.path);
          identity = { dev: stat.dev, ino: stat.ino };
          await listen(server, { fd });
        } catch (error) {
          closeDescriptor(fd);
          throw error;
        }
      } else if (address.kind === 'tcp') {
        await listen(server, { host: address.host, port: address.port, backlog: METRICS_LISTEN_BACKLOG });
      } else {
        throw new GatehouseError(ErrorCode.METRICS_SETUP, `${where}: a metrics address is HOST:PORT or unix:PATH`);
      }
    } catch (error) {
      if (error instanceof GatehouseError) throw error;
      throw new GatehouseError(ErrorCode.METRICS_SETUP, `cannot listen for metrics on ${where}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const bound = server.address();
    const actual: ListenAddress =
      address.kind === 'tcp' && bound !== null && typeof bound === 'object'
        ? { kind: 'tcp', host: address.host, port: bound.port }
        : address;
    return new MetricsEndpoint(server, actual, identity, options);
  }

  private constructor(
    server: http.Server,
    address: ListenAddress,
    identity: { dev: number; ino: number } | null,
    options: MetricsEndpointOptions,
  ) {
    this.#server = server;
    this.address = address;
    this.#socketIdentity = identity;
    this.#options = options;
    server.on('request', (req, res) => void this.#answer(req, res));
    server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  describe(): string {
    return formatListenAddress(this.address);
  }

  /** From now on /metrics and /status answer from `source`. */
  serve(source: MetricsSource): void {
    this.#source = source;
  }

  async #answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'only GET and HEAD\n', { Allow: 'GET, HEAD' });
    if (path !== '/metrics' && path !== '/status' && path !== '/')
      return send(404, 'text/plain', 'not found: /metrics (Prometheus) and /status (JSON) are here\n');
    const source = this.#source;
    if (path === '/') return send(200, 'text/plain', 'gatehouse metrics: /metrics (Prometheus text format), /status (JSON)\n');
    if (!source) return send(503, 'text/plain', 'starting\n', { 'Retry-After': '1' });
    try {
      if (path === '/metrics') {
        const { text, contentType } = await source.metrics();
        return send(200, contentType, text);
      }
      return send(200, 'application/json', `${JSON.stringify(await source.status())}\n`);
    } catch (error) {
      this.#options.log?.(`metrics: ${path} failed: ${(error as Error).message}`);
      if (!res.headersSent) send(500, 'text/plain', `${path} failed\n`);
      else res.destroy();
    }
  }

  /** Stops listening and closes every connection (a scrape in progress is cut). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
    if (this.address.kind === 'unix' && this.#options.removeSocketOnClose !== false && this.#socketIdentity) {
      try {
        const now = lstatSync(this.address.path);
        if (now.dev === this.#socketIdentity.dev && now.ino === this.#socketIdentity.ino) unlinkSync(this.address.path);
      } catch {
        // already gone, or no longer ours to remove
      }
    }
  }
}

function listen(server: http.Server, options: net.ListenOptions | { fd: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** A socket file no one accepts on (its server was killed) is removed; a live one, or a file that is not a socket, is refused. */
function replaceStaleSocket(path: string): void {
  let stat;
  try {
    stat = lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket())
    throw new GatehouseError(ErrorCode.METRICS_SETUP, `${path} exists and is not a socket; it is left alone: choose another metrics path`);
  if (unixSocketIsLive(path))
    throw new GatehouseError(
      ErrorCode.METRICS_SETUP,
      `another server is accepting connections on ${path}: stop it first, or choose another metrics path`,
    );
  try {
    unlinkSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

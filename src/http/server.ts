/**
 * The HTTP front (`gatehouse serve`): node:http with safe limits, and the
 * routes from the configuration in the order src/http/routes.ts documents:
 * FastCGI routes by pattern or ending, then the longest URL prefix (FastCGI
 * routes and CGI directories), then CGI by ending and static files.
 * node:http's parser already refuses request smuggling (Content-Length with
 * Transfer-Encoding, several Content-Lengths, obsolete line folding) with 400
 * and oversized heads with 431; the front adds 414 for long targets, 400
 * for a request that names its host twice or badly (the request description,
 * src/cgi/http-request.ts), 413 at once for a chunk announced above max-body
 * (chunk-size-guard.ts), an access and error log, and a graceful stop.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { cgi, type CgiHandler } from '../cgi/handler.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import type { ServeConfig } from '../config/schema.js';
import { formatListenAddress, netListenOptions, parseListenAddress, type ListenAddress } from '../options/listen-address.js';
import { fastcgi, type FastCGIHandler } from './fastcgi-handler.js';
import { RouteTable } from './routes.js';
import { AccessLog, countResponseBytes } from './logs.js';
import { openLogger, type Logger, type LogLevel } from '../log/index.js';
import { serveStatic } from './static.js';
import { sendErrorPage } from '../cgi/http-response.js';
import { normaliseUrlPath } from '../cgi/resolve.js';
import { plainAddress, readHttpRequest, splitAbsoluteForm } from '../cgi/http-request.js';
import { ChunkSizeGuard } from './chunk-size-guard.js';
import { describeSendTimeout, SendTimeout, type SendTimeoutEvent } from '../cgi/send-timeout.js';
import { HTTP_MAX_REQUESTS_PER_SOCKET, HTTP_TIMEOUT_CHECK_MAX_MS, HTTP_TIMEOUT_CHECK_MIN_MS } from '../limits.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export interface FrontOptions {
  config: ServeConfig;
  /** How CGI scripts are started (the cgid daemon's client, or in-process spawning). */
  spawner?: ScriptSpawner;
  /**
   * The error log, when the caller made it (gatehouse serve opens it first, for
   * the cgid daemon's lines); the caller then closes it. Default: opened from
   * the configuration (error-log, log-level, log-format) and closed by stop().
   */
  logger?: Logger;
}

/** How often Node sweeps connections for headers-timeout and request-timeout: a fraction of the shorter one, at most 1 s. */
function timeoutSweepInterval(config: ServeConfig): number {
  const shortest = Math.min(config.headersTimeoutMs || Infinity, config.requestTimeoutMs || Infinity);
  return Math.max(HTTP_TIMEOUT_CHECK_MIN_MS, Math.min(HTTP_TIMEOUT_CHECK_MAX_MS, Math.floor(shortest / 4)));
}

/**
 * Node counts the request line in its header limit, so a target longer than
 * the whole head limit fails as a header overflow. The packet that overflowed
 * tells which it was: a request line that has not ended yet, or is longer than
 * max-url-bytes, is answered 414 as Apache answers it (LimitRequestLine).
 */
function requestLineTooLong(rawPacket: unknown, maxUrlBytes: number): boolean {
  if (!Buffer.isBuffer(rawPacket)) return false;
  const lineEnd = rawPacket.indexOf(0x0a);
  const line = rawPacket.subarray(0, lineEnd === -1 ? rawPacket.length : lineEnd).toString('latin1');
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+ /.test(line)) return false;
  return lineEnd === -1 || line.length > maxUrlBytes;
}

/**
 * Listens, with errors that say what to do. A unix socket path left behind by
 * a server that died is replaced, but only when it is a socket and nothing
 * answers on it: a live server's socket is never taken over.
 */
async function listenOn(server: http.Server, address: ListenAddress): Promise<void> {
  const attempt = () =>
    new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      server.once('error', onError);
      const listening = () => {
        server.off('error', onError);
        resolve();
      };
      server.listen(netListenOptions(address), listening);
    });
  try {
    await attempt();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if ('path' in address && code === 'EADDRINUSE' && isSocketFile(address.path) && !(await answers(address.path))) {
      unlinkSync(address.path);
      return attempt().catch((again: NodeJS.ErrnoException) => {
        throw new GatehouseError(ErrorCode.SERVE_SETUP, `cannot listen on ${formatListenAddress(address)}: ${again.code ?? again.message}`);
      });
    }
    const advice: Record<string, string> = {
      EADDRINUSE:
        'path' in address
          ? isSocketFile(address.path)
            ? 'another server is listening on this socket'
            : 'a file that is not a socket is in the way'
          : 'another process is listening on this port (stop it, or choose another --listen)',
      EACCES:
        'path' in address
          ? 'permission denied (check the directory)'
          : 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
      EADDRNOTAVAIL: 'no network interface has this address',
      ENOENT: 'the directory does not exist',
    };
    throw new GatehouseError(
      ErrorCode.SERVE_SETUP,
      `cannot listen on ${formatListenAddress(address)}: ${code ?? ''}${code && advice[code] ? `: ${advice[code]}` : `: ${(error as Error).message}`}`,
    );
  }
}

/** The client's address as logs and REMOTE_ADDR show it (undefined once the socket is gone). */
function clientAddress(socket: net.Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : plainAddress(socket.remoteAddress);
}

function isSocketFile(socketPath: string): boolean {
  try {
    return lstatSync(socketPath).isSocket();
  } catch {
    return false;
  }
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath, () => {
      probe.destroy();
      resolve(true);
    });
    probe.on('error', () => resolve(false));
  });
}

export class GatehouseFront {
  readonly config: ServeConfig;
  readonly #servers: http.Server[] = [];
  readonly #accessLog: AccessLog;
  /** The error log. */
  readonly log: Logger;
  readonly #ownsLogger: boolean;
  readonly #routes: RouteTable;
  readonly #cgi: CgiHandler | null;
  readonly #fastcgi: FastCGIHandler[] = [];
  readonly #static: ((req: IncomingMessage, res: ServerResponse) => void) | null;
  readonly #boundSockets: Array<{ path: string; inode: number }> = [];
  readonly #chunkSizeGuard: ChunkSizeGuard;
  /** Every connection, whatever answers on it (scripts, FastCGI, static files, nph output written to the socket itself). */
  readonly #sendTimeout: SendTimeout;
  #inFlight = 0;
  #idleWaiters: Array<() => void> = [];
  #stopping = false;

  constructor(options: FrontOptions) {
    const { config } = options;
    this.config = config;
    this.#ownsLogger = options.logger === undefined;
    this.log =
      options.logger ??
      openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog, console: 'stderr' });
    this.#accessLog = new AccessLog(config.accessLog, config.accessLogFormat, this.log);
    const errorLog = this.log.line;
    const scriptAliases = [
      ...(config.cgiBin ? [{ urlPrefix: '/cgi-bin/', directory: config.cgiBin }] : []),
      ...config.scriptAlias.map((a) => ({ urlPrefix: a.url, directory: a.dir })),
    ];
    const environment = {
      ...(config.serverName !== undefined ? { serverName: config.serverName } : {}),
      ...(config.serverAdmin !== undefined ? { serverAdmin: config.serverAdmin } : {}),
      passAuthorization: config.passAuthorization,
      setEnv: config.setEnv,
      passEnv: config.passEnv,
    };
    this.#routes = new RouteTable(config);
    // In the configuration's order: the route table names a FastCGI route by its position.
    for (const route of config.fastcgi) {
      const handler = fastcgi({
        ...environment,
        urlPrefix: route.url,
        upstreams: route.upstreams,
        documentRoot: route.root ?? config.docroot ?? '/',
        ...(route.splitPath !== undefined ? { splitPath: route.splitPath } : {}),
        ...(route.index !== undefined ? { index: route.index } : {}),
        ...(route.scriptFilename !== undefined ? { scriptFilename: route.scriptFilename } : {}),
        ...(route.params !== undefined ? { params: route.params } : {}),
        ...(route.connectTimeoutMs !== undefined ? { connectTimeoutMs: route.connectTimeoutMs } : {}),
        ...(route.readTimeoutMs !== undefined ? { readTimeoutMs: route.readTimeoutMs } : {}),
        ...(route.maxConnections !== undefined ? { maxConnections: route.maxConnections } : {}),
        ...(route.keepAlive !== undefined ? { keepAlive: route.keepAlive } : {}),
        ...(route.multiplex ? { multiplex: true } : {}),
        buffering: route.buffering ?? config.fastcgiBuffering,
        bufferMemoryBytes: config.fastcgiBufferMemory,
        maxTempFileBytes: config.fastcgiMaxTempFile,
        maxRequestBody: config.maxBody,
        errorLog,
      });
      this.#fastcgi.push(handler);
    }
    this.#cgi =
      scriptAliases.length > 0 || config.cgiExt.length > 0
        ? cgi({
            ...environment,
            documentRoot: config.docroot ?? scriptAliases[0]!.directory,
            scriptAliases,
            extensions: config.cgiExt,
            scriptTimeout: `${config.scriptTimeoutMs}ms`,
            ...(config.scriptLog !== undefined ? { scriptLog: config.scriptLog } : {}),
            scriptLogLength: config.scriptLogLength,
            scriptLogBuffer: config.scriptLogBuffer,
            ...(config.scriptLogSecrets ? { scriptLogSecrets: true } : {}),
            maxConcurrentScripts: config.maxScripts,
            maxQueuedScripts: config.maxQueuedScripts,
            maxRequestBody: config.maxBody,
            errorLog,
            ...(options.spawner ? { spawner: options.spawner } : {}),
          })
        : null;
    this.#static = config.docroot ? serveStatic({ documentRoot: config.docroot, errorLog }) : null;
    this.#chunkSizeGuard = new ChunkSizeGuard(config.maxBody, config.maxHeaderBytes);
    this.#sendTimeout = new SendTimeout(config.sendTimeoutMs, (event) => this.#logSendTimeout(event));
  }

  #logSendTimeout(event: SendTimeoutEvent): void {
    this.logError(describeSendTimeout(event, this.config.sendTimeoutMs), 'warn');
  }

  /** One line in the error log (an error unless `level` says otherwise). */
  logError(line: string, level: LogLevel = 'error'): void {
    this.log.log(level, line);
  }

  /**
   * SIGUSR1: the access log and the error log are flushed to the files they
   * had and opened again by name (after logrotate's mv). The script log needs
   * nothing: it is opened for each entry.
   */
  async reopenLogs(): Promise<void> {
    try {
      await this.#accessLog.reopen();
    } catch (error) {
      this.log.error(`${(error as Error).message}; still writing to the file it had`);
    }
    await this.log.reopen();
    this.log.info('SIGUSR1: log files reopened');
  }

  /** The request pipeline: limits, access log, the request description's checks, then the routes. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.#chunkSizeGuard.noteRequest(req, res);
    const started = new Date();
    const startedNs = process.hrtime.bigint();
    // As REMOTE_ADDR: an IPv4 client on a dual-stack (::) listener is a.b.c.d, not ::ffff:a.b.c.d.
    const remoteAddress = clientAddress(req.socket);
    const bodyBytes = countResponseBytes(res);
    this.#inFlight++;
    let logged = false;
    const done = () => {
      if (logged) return;
      logged = true;
      try {
        if (this.#accessLog.enabled)
          this.#accessLog.write({
            remoteAddress,
            time: started,
            requestLine: `${req.method} ${req.url} HTTP/${req.httpVersion}`,
            status: res.headersSent ? res.statusCode : 0,
            bodyBytes: bodyBytes(),
            headers: req.headers,
            durationMicros: Number(process.hrtime.bigint() - startedNs) / 1000,
          });
      } catch (error) {
        // A log line is never worth the server: this runs in an event handler, where a throw ends the process.
        this.logError(`access log: cannot log ${req.method} ${req.url}: ${(error as Error).message}`);
      }
      if (--this.#inFlight === 0) {
        const waiters = this.#idleWaiters;
        this.#idleWaiters = [];
        for (const waiter of waiters) waiter();
      }
    };
    res.once('finish', done);
    res.once('close', done);
    if (this.#stopping) res.setHeader('Connection', 'close');
    // Read before req.url is rewritten below: an absolute-form target's host is the request's host (RFC 9112 3.2.2).
    const reading = readHttpRequest(req);
    if (reading.kind === 'refused') {
      this.logError(`refused ${req.method} ${req.url} from ${clientAddress(req.socket)}: ${reading.reason}`);
      return sendErrorPage(res, reading.status, true);
    }
    let target = req.url ?? '/';
    // RFC 9112 3.2.2: an origin server must accept the absolute-form (http://host/path); it is served as its path.
    const absolute = splitAbsoluteForm(target);
    if (absolute) {
      target = absolute.originForm;
      req.url = target;
    }
    if (Buffer.byteLength(target, 'latin1') > this.config.maxUrlBytes) {
      this.logError(
        `request target of ${target.length} bytes from ${clientAddress(req.socket)} exceeds max-url-bytes (${this.config.maxUrlBytes}): 414`,
      );
      return sendErrorPage(res, 414, true);
    }
    if (!target.startsWith('/')) {
      // Authority-form (CONNECT), asterisk-form (OPTIONS *) and other schemes are for proxies; gatehouse is an origin server.
      return sendErrorPage(res, 400, true);
    }
    // Routes match the decoded, normalised path, as Apache matches <Location> and ProxyPass: matching the raw
    // target let /%70hp/x.php, //php/x.php or /a/../php/x.php miss a FastCGI route and the static files serve
    // the PHP source.
    const normalised = normaliseUrlPath(target.split('?', 1)[0]!);
    if ('kind' in normalised) {
      this.logError(`refused ${req.method} ${target} from ${clientAddress(req.socket)}: ${normalised.reason}`);
      return sendErrorPage(res, normalised.status);
    }
    const path = `/${normalised.segments.join('/')}${normalised.trailingSlash && normalised.segments.length > 0 ? '/' : ''}`;
    const route = this.#routes.select(path);
    if (route.kind === 'fastcgi') {
      this.#fastcgi[route.index]!(req, res, () => this.#afterCgi(req, res));
      return;
    }
    // A CGI directory, or the document root: the CGI handler resolves the script (or finds none), then static files.
    this.#afterCgi(req, res, true);
  };

  #afterCgi(req: IncomingMessage, res: ServerResponse, tryCgi = false): void {
    if (tryCgi && this.#cgi) {
      this.#cgi(req, res, () => this.#serveStatic(req, res));
      return;
    }
    this.#serveStatic(req, res);
  }

  #serveStatic(req: IncomingMessage, res: ServerResponse): void {
    if (this.#static) this.#static(req, res);
    else sendErrorPage(res, 404);
  }

  /** Starts listening on every configured address; resolves with the addresses actually bound. */
  async listen(): Promise<ListenAddress[]> {
    const bound: ListenAddress[] = [];
    for (const text of this.config.listen) {
      const address = parseListenAddress(text);
      if (typeof address === 'string') throw new GatehouseError(ErrorCode.SERVE_SETUP, address);
      const answeredWithError = new WeakSet<object>();
      const server = http.createServer(
        {
          headersTimeout: this.config.headersTimeoutMs,
          requestTimeout: this.config.requestTimeoutMs,
          keepAliveTimeout: this.config.keepaliveTimeoutMs,
          maxHeaderSize: this.config.maxHeaderBytes,
          // Reject ambiguous framing; never accept what a proxy in front might read differently.
          insecureHTTPParser: false,
          noDelay: true,
          // Node enforces headersTimeout and requestTimeout only when this sweep runs (every 30 s by default):
          // a 1 s headers-timeout would let a slow client hold its connection for up to 31 s.
          connectionsCheckingInterval: timeoutSweepInterval(this.config),
        },
        this.handle,
      );
      server.maxRequestsPerSocket = HTTP_MAX_REQUESTS_PER_SOCKET;
      // A chunk announced above max-body is refused at once (413) instead of waited for: see chunk-size-guard.ts.
      server.on('connection', (socket: net.Socket) => {
        this.#chunkSizeGuard.watch(socket);
        this.#sendTimeout.watch(socket);
      });
      // Expect: 100-continue goes to the handlers, which send the 100 only when they will read the body:
      // a body over max-body gets its 413 before the client sends it (Node would otherwise answer 100 at once).
      server.on('checkContinue', this.handle);
      server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
        // A connection already answered with an error ends with the client's EOF: a second parse error, not news.
        if (answeredWithError.has(socket)) return socket.destroy();
        if (error.code !== 'ECONNRESET' && error.code !== 'EPIPE')
          this.logError(`http: bad request from ${clientAddress(socket as net.Socket) ?? '-'}: ${error.code ?? ''} ${error.message}`);
        // A response already under way (request-timeout while a script answers a slow body) cannot be followed by
        // an error response: written now, it would land inside the first one's body. The connection is cut instead.
        const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
        if (!socket.writable || inFlight?.headersSent) return socket.destroy();
        answeredWithError.add(socket);
        const status =
          error.code === 'HPE_HEADER_OVERFLOW'
            ? requestLineTooLong((error as { rawPacket?: unknown }).rawPacket, this.config.maxUrlBytes)
              ? 414
              : 431
            : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
              ? 408
              : 400;
        socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
        // Apache logs refused requests too ("-" for a request line it could not read): probes and attacks show up.
        this.#accessLog.write({
          remoteAddress: clientAddress(socket as net.Socket),
          time: new Date(),
          requestLine: null,
          status,
          bodyBytes: 0,
          headers: {},
          durationMicros: 0,
        });
      });
      await listenOn(server, address);
      if ('path' in address) this.#boundSockets.push({ path: address.path, inode: lstatSync(address.path).ino });
      const actual = server.address();
      bound.push(typeof actual === 'string' || actual === null ? address : { kind: 'tcp', host: actual.address, port: actual.port });
      this.#servers.push(server);
    }
    return bound;
  }

  /**
   * Graceful stop: stop accepting, let requests in flight finish for up to
   * `graceMs`, then close every connection (which kills their scripts: a
   * client that goes away takes its script with it) and wait for them.
   */
  async stop(graceMs = this.config.shutdownGraceMs): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const closed = this.#servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    for (const server of this.#servers) server.closeIdleConnections();
    if (this.#inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#idleWaiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      if (this.#inFlight > 0)
        this.logError(`stop: ${this.#inFlight} request(s) still running after ${graceMs} ms: closing their connections`, 'warn');
    }
    for (const server of this.#servers) server.closeAllConnections();
    await Promise.all(closed);
    // Closing the connections aborted their scripts; wait (bounded) until every one was reaped.
    for (let waited = 0; this.#cgi && this.#cgi.limiter.running > 0 && waited < graceMs + 5000; waited += 50) await sleep(50);
    await Promise.all(this.#fastcgi.map((handler) => handler.close()));
    this.#sendTimeout.close();
    // Only sockets this front bound, and only while the path is still the same socket: never another server's.
    for (const socket of this.#boundSockets) {
      try {
        if (lstatSync(socket.path).ino === socket.inode) unlinkSync(socket.path);
      } catch {
        /* node:http removed it already */
      }
    }
    await this.#accessLog.close();
    if (this.#ownsLogger) await this.log.close();
  }

  describe(addresses: ListenAddress[]): string {
    return addresses.map(formatListenAddress).join(', ');
  }
}

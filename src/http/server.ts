/**
 * The HTTP front (`gatehouse serve`): node:http with safe limits, and the
 * routes from the configuration in the order src/config/routes.ts documents:
 * FastCGI routes by pattern or ending, then the longest URL prefix (FastCGI
 * routes and CGI directories), then CGI by ending and static files.
 * node:http's parser already refuses request smuggling (Content-Length with
 * Transfer-Encoding, several Content-Lengths, obsolete line folding) with 400
 * and oversized heads with 431; the front adds 414 for long targets, 400
 * for a request that names its host twice or badly (the request description,
 * src/cgi/http-request.ts), 413 at once for a chunk announced above max-body
 * (chunk-size-guard.ts), an access and error log, and a graceful stop.
 */
import { drainAcceptQueue } from './accept-drain.js';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { cgi, type CgiHandler } from '../cgi/handler.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import type { ServeConfig } from '../config/schema.js';
import { formatListenAddress, parseListenAddress, type ListenAddress } from '../options/listen-address.js';
import { listenServer, resolveActivatedAddress, type ServerListening, type UnixSocketOptions } from '../sys/index.js';
import { restartOnlyChanges } from '../config/reload.js';
import { fastcgi, type FastCGIHandler } from './fastcgi-handler.js';
import { RouteTable } from '../config/routes.js';
import { AccessLog, CountingServerResponse, responseBodyBytes } from './logs.js';
import { openLogger, type Logger, type LogLevel } from '../log/index.js';
import { serveStatic } from './static.js';
import { sendErrorPage } from '../cgi/http-response.js';
import { normaliseUrlPath } from '../cgi/resolve.js';
import { plainAddress, readHttpRequest, splitAbsoluteForm } from '../cgi/http-request.js';
import { ChunkSizeGuard } from './chunk-size-guard.js';
import { describeSendTimeout, SendTimeout, type SendTimeoutEvent } from '../cgi/send-timeout.js';
import {
  HTTP_ACCEPT_BATCH,
  HTTP_ACCEPT_BATCH_SHARED,
  HTTP_MAX_REQUESTS_PER_SOCKET,
  HTTP_STOP_POLL_MS,
  HTTP_STOP_REAP_SLACK_MS,
  HTTP_TIMEOUT_CHECK_MAX_MS,
  HTTP_TIMEOUT_CHECK_MIN_MS,
} from '../limits.js';
import { ConfigError, ErrorCode, GatehouseError } from '../errors.js';

export interface FrontOptions {
  config: ServeConfig;
  /** How CGI scripts are started (the cgid daemon's client, or in-process spawning). */
  spawner?: ScriptSpawner;
  /** Mode and owner of unix listeners (serve's socket-mode, socket-user, socket-group, resolved to ids). */
  unixSocket?: UnixSocketOptions;
  /**
   * The error log, when the caller made it (gatehouse serve opens it first, for
   * the cgid daemon's lines); the caller then closes it. Default: opened from
   * the configuration (error-log, log-level, log-format) and closed by stop().
   */
  logger?: Logger;
}

/**
 * What one configuration serves: its routes and the handlers behind them.
 * A reload builds a new site and swaps it in; requests already running keep
 * the site they started with, and a replaced site's FastCGI connections are
 * closed once its last request is done.
 */
interface Site {
  readonly config: ServeConfig;
  readonly routes: RouteTable;
  readonly cgi: CgiHandler | null;
  readonly fastcgi: FastCGIHandler[];
  readonly static: ((req: IncomingMessage, res: ServerResponse) => void) | null;
  inFlight: number;
  retired: boolean;
}

/**
 * The limits node:http applies per server, set at creation and again by a
 * reload (Node reads them for each new connection and on each sweep).
 */
function applyServerLimits(server: http.Server, config: ServeConfig): void {
  server.headersTimeout = config.headersTimeoutMs;
  server.requestTimeout = config.requestTimeoutMs;
  server.keepAliveTimeout = config.keepaliveTimeoutMs;
  // Read by node:http when a connection's parser starts (not in @types/node's Server type).
  (server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = config.maxHeaderBytes;
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

/** The client's address as logs and REMOTE_ADDR show it (undefined once the socket is gone). */
function clientAddress(socket: net.Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : plainAddress(socket.remoteAddress);
}

export class GatehouseFront {
  readonly #servers: http.Server[] = [];
  readonly #listening: ServerListening[] = [];
  readonly #accessLog: AccessLog;
  /** The error log. */
  readonly log: Logger;
  readonly #ownsLogger: boolean;
  readonly #spawner: ScriptSpawner | undefined;
  readonly #unixSocket: UnixSocketOptions | undefined;
  /** Refuses a chunk announced above max-body at once; its limits follow a reload for new connections. */
  readonly #chunkSizeGuard: ChunkSizeGuard;
  /** Every connection, whatever answers on it (scripts, FastCGI, static files, nph output written to the socket itself). */
  readonly #sendTimeout: SendTimeout;
  /** What the current configuration serves; replaced by reload(). */
  #site: Site;
  /** Sites replaced by a reload whose requests are still running. */
  readonly #retired = new Set<Site>();
  #inFlight = 0;
  #idleWaiters: Array<() => void> = [];
  #stopping = false;

  constructor(options: FrontOptions) {
    const { config } = options;
    this.#spawner = options.spawner;
    this.#unixSocket = options.unixSocket;
    this.#ownsLogger = options.logger === undefined;
    this.log =
      options.logger ??
      openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog, console: 'stderr' });
    this.#accessLog = new AccessLog(config.accessLog, config.accessLogFormat, this.log);
    this.#chunkSizeGuard = new ChunkSizeGuard(config.maxBody, config.maxHeaderBytes);
    this.#sendTimeout = new SendTimeout(config.sendTimeoutMs, (event) => this.#logSendTimeout(event));
    this.#site = this.#buildSite(config);
  }

  /** The configuration being served (the latest one a reload accepted). */
  get config(): ServeConfig {
    return this.#site.config;
  }

  /** Routes and handlers for `config`. */
  #buildSite(config: ServeConfig): Site {
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
    const routes = new RouteTable(config);
    const fastcgiHandlers: FastCGIHandler[] = [];
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
        ...(route.checkScript !== undefined ? { checkScript: route.checkScript } : {}),
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
      fastcgiHandlers.push(handler);
    }
    const cgiHandler =
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
            queryArguments: config.queryArguments,
            errorLog,
            ...(this.log.enabled('debug') ? { traceLog: (line: string) => this.log.debug(line) } : {}),
            ...(this.#spawner ? { spawner: this.#spawner } : {}),
          })
        : null;
    if (cgiHandler) {
      cgiHandler.limiter.onPressure = (stats) =>
        this.log.warn(
          `cgi: ${stats.queued} requests wait for a script slot (max-queued-scripts ${stats.maxQueued}), the oldest for ${Math.round(stats.oldestWaitMs)} ms; ${stats.running} of max-scripts ${stats.maxRunning} running`,
        );
    }
    const staticFiles = config.docroot ? serveStatic({ documentRoot: config.docroot, errorLog }) : null;
    return { config, routes, cgi: cgiHandler, fastcgi: fastcgiHandlers, static: staticFiles, inFlight: 0, retired: false };
  }

  #logSendTimeout(event: SendTimeoutEvent): void {
    this.logError(describeSendTimeout(event, this.#sendTimeout.timeoutMs), 'warn');
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
    const startedMs = performance.now();
    // As REMOTE_ADDR: an IPv4 client on a dual-stack (::) listener is a.b.c.d, not ::ffff:a.b.c.d.
    const remoteAddress = clientAddress(req.socket);
    // The site this request started on serves it to the end, whatever a reload swaps in meanwhile.
    const site = this.#site;
    site.inFlight++;
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
            bodyBytes: responseBodyBytes(res),
            headers: req.headers,
            durationMicros: (performance.now() - startedMs) * 1000,
          });
      } catch (error) {
        // A log line is never worth the server: this runs in an event handler, where a throw ends the process.
        this.logError(`access log: cannot log ${req.method} ${req.url}: ${(error as Error).message}`);
      }
      if (--site.inFlight === 0 && site.retired) this.#closeSite(site);
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
    if (Buffer.byteLength(target, 'latin1') > site.config.maxUrlBytes) {
      this.logError(
        `request target of ${target.length} bytes from ${clientAddress(req.socket)} exceeds max-url-bytes (${site.config.maxUrlBytes}): 414`,
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
    const route = site.routes.select(path);
    if (route.kind === 'fastcgi') {
      site.fastcgi[route.index]!(req, res, () => this.#afterCgi(site, req, res));
      return;
    }
    // A CGI directory, or the document root: the CGI handler resolves the script (or finds none), then static files.
    this.#afterCgi(site, req, res, true);
  };

  #afterCgi(site: Site, req: IncomingMessage, res: ServerResponse, tryCgi = false): void {
    if (tryCgi && site.cgi) {
      site.cgi(req, res, () => this.#serveStatic(site, req, res));
      return;
    }
    this.#serveStatic(site, req, res);
  }

  #serveStatic(site: Site, req: IncomingMessage, res: ServerResponse): void {
    if (site.static) site.static(req, res);
    else sendErrorPage(res, 404);
  }

  /**
   * Starts listening on every configured address (`systemd` stands for every
   * socket systemd passed); resolves with the addresses actually bound. Unix
   * sockets get the configured mode from bind on and their owner before
   * listen (src/sys/listen-server.ts); a stale one is replaced, a live one
   * refused.
   */
  async listen(): Promise<ListenAddress[]> {
    const bound: ListenAddress[] = [];
    for (const text of this.config.listen) {
      const parsed = parseListenAddress(text);
      if (typeof parsed === 'string') throw new GatehouseError(ErrorCode.SERVE_SETUP, parsed);
      for (const address of resolveActivatedAddress(parsed)) {
        const server = this.#createServer();
        const listening = await listenServer(server, address, this.#unixSocket ? { unix: this.#unixSocket } : {});
        if (listening.replacedStale)
          this.logError(`replaced a stale socket at ${formatListenAddress(address)} (nothing was accepting on it)`, 'info');
        // Workers sharing the socket take a few at a time, so that a burst is spread over them.
        await drainAcceptQueue(server, this.config.workers > 1 ? HTTP_ACCEPT_BATCH_SHARED : HTTP_ACCEPT_BATCH);
        this.#listening.push(listening);
        this.#servers.push(server);
        bound.push(listening.address);
      }
    }
    return bound;
  }

  /** One node:http server with the configuration's limits, answering through handle(). */
  #createServer(): http.Server {
    const answeredWithError = new WeakSet<object>();
    const server = http.createServer(
      {
        // Reject ambiguous framing; never accept what a proxy in front might read differently.
        insecureHTTPParser: false,
        noDelay: true,
        // Node enforces headersTimeout and requestTimeout only when this sweep runs (every 30 s by default):
        // a 1 s headers-timeout would let a slow client hold its connection for up to 31 s.
        connectionsCheckingInterval: timeoutSweepInterval(this.config),
        // Counts the body bytes for the access log's %b (see logs.ts).
        ServerResponse: CountingServerResponse,
      },
      this.handle,
    );
    applyServerLimits(server, this.config);
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
    return server;
  }

  /**
   * Serves `config` from now on (SIGHUP): new connections and the next
   * request of a kept-alive one use it; requests running finish on the
   * configuration they started with, and the replaced routes' FastCGI
   * connections close once the last of them is done. Keys that only a restart
   * can change (listen addresses, users, logs, how scripts start) must be
   * unchanged: otherwise a ConfigError names them and nothing changes.
   */
  reload(config: ServeConfig): void {
    const changed = restartOnlyChanges(this.config, config);
    if (changed.length > 0)
      throw new ConfigError('reload', [
        `${changed.join(', ')} changed: ${changed.length === 1 ? 'it takes' : 'they take'} effect only when gatehouse serve is restarted (systemctl restart); the running configuration stays`,
      ]);
    const previous = this.#site;
    this.#site = this.#buildSite(config);
    for (const server of this.#servers) applyServerLimits(server, config);
    this.#chunkSizeGuard.setLimits(config.maxBody, config.maxHeaderBytes);
    this.#sendTimeout.setTimeoutMs(config.sendTimeoutMs);
    previous.retired = true;
    if (previous.inFlight === 0) this.#closeSite(previous);
    else this.#retired.add(previous);
  }

  /** A replaced site's last request is done: its FastCGI connections are closed. */
  #closeSite(site: Site): void {
    this.#retired.delete(site);
    Promise.all(site.fastcgi.map((handler) => handler.close())).catch((error: unknown) =>
      this.logError(`reload: closing the previous configuration's FastCGI connections: ${(error as Error).message}`),
    );
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
    const sites = [this.#site, ...this.#retired];
    const running = () => sites.reduce((total, site) => total + (site.cgi?.limiter.running ?? 0), 0);
    for (let waited = 0; running() > 0 && waited < graceMs + HTTP_STOP_REAP_SLACK_MS; waited += HTTP_STOP_POLL_MS)
      await sleep(HTTP_STOP_POLL_MS);
    await Promise.all(sites.flatMap((site) => site.fastcgi.map((handler) => handler.close())));
    this.#sendTimeout.close();
    // Only sockets this front bound, and only while the path is still the same socket: never another server's.
    for (const listening of this.#listening) listening.removeSocket();
    await this.#accessLog.close();
    if (this.#ownsLogger) await this.log.close();
  }

  /** What serve's metrics read (src/metrics/serve.ts): the listening servers, the script limiter, the FastCGI clients. */
  get parts(): {
    servers: readonly http.Server[];
    limiter: CgiHandler['limiter'] | null;
    fastcgiClients: ReadonlyArray<{ readonly upstream: string; readonly stats: import('../fastcgi/client/pool.js').PoolStats }>;
  } {
    return {
      servers: this.#servers,
      limiter: this.#site.cgi?.limiter ?? null,
      fastcgiClients: this.#site.fastcgi.flatMap((handler) => handler.clients),
    };
  }

  describe(addresses: ListenAddress[]): string {
    return addresses.map(formatListenAddress).join(', ');
  }
}

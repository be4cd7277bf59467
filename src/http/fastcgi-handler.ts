/**
 * `fastcgi(options)`: a `(req, res, next?)` handler that proxies to FastCGI
 * applications (php-fpm, kfcgi pools, gatehouse workers), as Apache's
 * mod_proxy_fcgi and Caddy's php_fastcgi do: SCRIPT_FILENAME built from the
 * application's root, the path split at the script (`.php`), the same
 * request description, body policy and CGI environment builder as CGI
 * scripts for PARAMS, and the application's STDOUT read as a CGI response.
 * Several upstreams per route: requests are spread over them in turn, and
 * one that refuses a connection is skipped for the next.
 *
 * FastCGIProxy holds what a route shares (its clients, its policies, where
 * scripts are); each request is a ProxiedRequest, and each attempt at one
 * upstream an UpstreamRelay that streams the response to the client.
 */
import { type Stats, statSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import { FastCGIClient } from '../fastcgi/client/index.js';
import type { UpstreamResponse } from '../fastcgi/client/request.js';
import { ErrorCode, UpstreamError, InvalidArgumentError } from '../errors.js';
import { buildEnvironment, type EnvironmentPolicy } from '../cgi/environment.js';
import { ResponseHeadParser, type CgiResponseHead } from '../cgi/response-head.js';
import { normaliseUrlPath } from '../cgi/resolve.js';
import { readRequestBody, type BodyPolicy, type RequestBody } from '../cgi/body-policy.js';
import { describeRequest, plainAddress, readHttpRequest, splitAbsoluteForm, type HttpRequestFacts } from '../cgi/http-request.js';
import { answerFor, statusForUpstreamError, type Failure } from '../cgi/outcome.js';
import { endWithRedirectPage, pipeCgiBody, sendErrorPage, splitTarget, writeCgiHead } from '../cgi/http-response.js';
import { fastcgiChannels, reportHandlerRequest, type HandlerReport } from '../diagnostics.js';
import { describeSendTimeout, SendTimeout } from '../cgi/send-timeout.js';
import { ResponseBuffer, type ResponseBufferOptions } from './response-buffer.js';
import {
  CGI_BODY_MEMORY_SPOOL_BYTES,
  CGI_MAX_REQUEST_BODY_BYTES,
  CGI_STDERR_LINE_MAX,
  FASTCGI_BUFFER_MEMORY_BYTES,
  FASTCGI_MAX_TEMP_FILE_BYTES,
} from '../limits.js';

export { statusForUpstreamError };

export interface FastCGIHandlerOptions {
  /** The URL prefix the route is mounted at ("/" or "/app/"); used with scriptFilename for SCRIPT_NAME. */
  urlPrefix?: string;
  /** One or more upstreams: unix:/path or host:port. */
  upstreams: readonly string[];
  /** The application's document root: DOCUMENT_ROOT, and the base of SCRIPT_FILENAME. */
  documentRoot: string;
  /** Split the path after the first segment ending in this (".php"): SCRIPT_NAME up to it, PATH_INFO after. */
  splitPath?: string;
  /** Appended to a path ending in "/" ("index.php"). */
  index?: string;
  /** One SCRIPT_FILENAME for every request (a front controller); SCRIPT_NAME is then the mount prefix, PATH_INFO the rest. */
  scriptFilename?: string;
  /**
   * Answer 404 unless SCRIPT_FILENAME is a regular file here, before anything
   * goes to the application (nginx's `try_files $uri =404`): php-fpm, given a
   * SCRIPT_FILENAME that is no file, walks back along the path itself
   * (cgi.fix_pathinfo) and may run /upload.jpg for /upload.jpg/x.php
   * (CVE-2019-11043 came from that arithmetic). Default: on when the document
   * root (or scriptFilename) exists on this machine, off when it is the
   * application's alone (another host).
   */
  checkScript?: boolean;
  /** Extra params sent with every request (after the environment: these win). */
  params?: Readonly<Record<string, string>>;
  serverName?: string;
  serverAdmin?: string;
  passAuthorization?: boolean;
  setEnv?: Readonly<Record<string, string>>;
  passEnv?: readonly string[];
  connectTimeoutMs?: number;
  /** No data from the application for this long: 504. */
  readTimeoutMs?: number;
  /**
   * Send timeout (nginx's send_timeout): a client that takes none of the response for this long is
   * disconnected and the upstream request aborted. 0 or absent: none (gatehouse serve applies its own to
   * every connection). Once a request of a connection came here, it holds for the rest of that connection.
   */
  sendTimeoutMs?: number;
  /**
   * Read the application's response as fast as it comes, into memory then a temporary file, so a slow
   * client does not hold an application process (nginx's fastcgi_buffering). Default true; false streams
   * with backpressure (the application waits for the client). An application answering
   * `X-Accel-Buffering: no` (or `yes`) chooses for its own response; the header is not passed on.
   */
  buffering?: boolean;
  /** Buffering: bytes kept in memory per response before the temporary file is used. */
  bufferMemoryBytes?: number;
  /** Buffering: largest temporary file per response (0: none); past it the application waits. */
  maxTempFileBytes?: number;
  /** Buffering: where temporary files are made (they are unlinked at once); default the system's temp directory. */
  tempDirectory?: string;
  maxConnections?: number;
  /** Keep connections to the application open between requests (FCGI_KEEP_CONN). */
  keepAlive?: boolean;
  /**
   * Let several requests share one connection when the application multiplexes (FCGI_MPXS_CONNS).
   * Off by default: a connection pauses for its slowest reader, so one slow HTTP client would
   * stall every request sharing its connection (nginx never multiplexes, for the same reason).
   */
  multiplex?: boolean;
  /** Largest request body; 413 above. */
  maxRequestBody?: number;
  /** A chunked request body is spooled (memory, then a temp file) so CONTENT_LENGTH can be sent: php-fpm needs it. */
  bodyMemorySpool?: number;
  errorLog?: (line: string) => void;
}

export type NextFunction = (error?: unknown) => void;
export type FastCGIHandler = ((req: IncomingMessage, res: ServerResponse, next?: NextFunction) => void) & {
  readonly clients: readonly FastCGIClient[];
  close(): Promise<void>;
};

interface ScriptLocation {
  scriptName: string;
  pathInfo: string;
  scriptFilename: string;
}

export function fastcgi(options: FastCGIHandlerOptions): FastCGIHandler {
  const proxy = new FastCGIProxy(options);
  const handler = ((req: IncomingMessage, res: ServerResponse) => proxy.handle(req, res)) as FastCGIHandler;
  Object.defineProperty(handler, 'clients', { value: proxy.clients });
  Object.defineProperty(handler, 'close', { value: () => proxy.close() });
  return handler;
}

/**
 * The request target as the client sent it, in origin form. Express strips
 * its mount point from req.url (app.use('/app', ...): "/hello" for
 * "/app/hello") and keeps the whole one in req.originalUrl; urlPrefix,
 * SCRIPT_NAME and REQUEST_URI are about the whole site's paths.
 */
function siteTarget(req: IncomingMessage): string {
  const original = (req as { originalUrl?: unknown }).originalUrl;
  const target = typeof original === 'string' && (original.startsWith('/') || splitAbsoluteForm(original)) ? original : (req.url ?? '/');
  return splitAbsoluteForm(target)?.originForm ?? target;
}

/** What one route shares across its requests: the upstreams' clients, the policies, where scripts are. */
class FastCGIProxy {
  readonly clients: FastCGIClient[];
  readonly policy: EnvironmentPolicy;
  readonly body: BodyPolicy;
  readonly errorLog: (line: string) => void;
  /** The application's document root: DOCUMENT_ROOT, and the base of SCRIPT_FILENAME. */
  readonly documentRoot: string;
  readonly #options: FastCGIHandlerOptions;
  /** The mount prefix without its trailing slash: CONTEXT_PREFIX, and SCRIPT_NAME of a front controller. */
  readonly mountName: string;
  readonly #extraParams: Array<readonly [string, string]>;
  /** SCRIPT_FILENAME must be a file here before a request goes out (FastCGIHandlerOptions.checkScript). */
  readonly checkScript: boolean;
  readonly #sendTimeout: SendTimeout | null;
  /** How responses are buffered; `buffered` is the route's choice, which X-Accel-Buffering overrides per response. */
  readonly buffer: ResponseBufferOptions & { buffered: boolean };
  #turn = 0;

  constructor(options: FastCGIHandlerOptions) {
    if (options.upstreams.length === 0)
      throw new InvalidArgumentError('fastcgi(): give at least one upstream, e.g. upstreams: ["unix:/run/php/php-fpm.sock"]');
    if (!path.isAbsolute(options.documentRoot))
      throw new InvalidArgumentError(`fastcgi(): documentRoot must be an absolute path, got ${JSON.stringify(options.documentRoot)}`);
    this.#options = options;
    this.documentRoot = options.documentRoot;
    this.mountName = (options.urlPrefix ?? '/').replace(/\/+$/, '');
    this.errorLog = options.errorLog ?? ((line: string) => process.stderr.write(`[${new Date().toISOString()}] [fastcgi:error] ${line}\n`));
    this.clients = options.upstreams.map(
      (address) =>
        new FastCGIClient({
          address,
          ...(options.connectTimeoutMs !== undefined ? { connectTimeoutMs: options.connectTimeoutMs } : {}),
          ...(options.readTimeoutMs !== undefined ? { idleTimeoutMs: options.readTimeoutMs } : {}),
          ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
          ...(options.keepAlive !== undefined ? { keepAlive: options.keepAlive } : {}),
          ...(options.multiplex ? {} : { maxRequestsPerConnection: 1 }),
        }),
    );
    this.policy = {
      serverName: options.serverName ?? hostname(),
      ...(options.serverAdmin !== undefined ? { serverAdmin: options.serverAdmin } : {}),
      passAuthorization: options.passAuthorization ?? false,
      setEnv: options.setEnv ?? {},
      passEnv: options.passEnv ?? [],
      inheritedEnvironment: process.env,
    };
    this.body = {
      maxBytes: options.maxRequestBody ?? CGI_MAX_REQUEST_BODY_BYTES,
      memorySpoolBytes: options.bodyMemorySpool ?? CGI_BODY_MEMORY_SPOOL_BYTES,
      keepHeadBytes: 0,
    };
    this.#extraParams = Object.entries(options.params ?? {});
    this.checkScript = options.checkScript ?? existsHere(options.scriptFilename ?? options.documentRoot);
    this.buffer = {
      buffered: options.buffering ?? true,
      memoryBytes: options.bufferMemoryBytes ?? FASTCGI_BUFFER_MEMORY_BYTES,
      maxTempFileBytes: options.maxTempFileBytes ?? FASTCGI_MAX_TEMP_FILE_BYTES,
      directory: options.tempDirectory,
    };
    const sendTimeoutMs = options.sendTimeoutMs ?? 0;
    this.#sendTimeout =
      sendTimeoutMs > 0
        ? new SendTimeout(sendTimeoutMs, (event) => this.errorLog(`fastcgi: ${describeSendTimeout(event, sendTimeoutMs)}`))
        : null;
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#sendTimeout?.watch(req.socket);
    // diagnostics_channel events (null: nobody listens); every request reaching fastcgi() is its to answer.
    const report = reportHandlerRequest(fastcgiChannels, 'fastcgi', req, res, req.url ?? '/');
    const reading = readHttpRequest(req);
    const target = siteTarget(req);
    const client = plainAddress(req.socket.remoteAddress);
    if (reading.kind === 'refused') {
      this.errorLog(`fastcgi: refused ${req.method} ${target} from ${client}: ${reading.reason}`);
      sendErrorPage(res, reading.status, true);
      report?.headers();
      report?.error(ErrorCode.CGI_PATH_BAD_REQUEST, reading.reason);
      return;
    }
    const normalised = normaliseUrlPath(splitTarget(target).pathname);
    if ('kind' in normalised) {
      const request = `${req.method} ${target} from ${client}`;
      return answer(res, this.errorLog, { kind: 'refused', status: normalised.status, request, reason: normalised.reason }, report);
    }
    // CVE-2019-11043: nginx's split regex stopped at a %0a, and php-fpm misread the PATH_INFO it was left with.
    // A control character has no place in a script's path or PATH_INFO: nothing goes to the application.
    if (normalised.segments.some((segment) => CONTROL_CHARACTER.test(segment))) {
      const request = `${req.method} ${target} from ${client}`;
      return answer(
        res,
        this.errorLog,
        { kind: 'refused', status: 400, request, reason: 'a control character (CR, LF, ...) in the path' },
        report,
      );
    }
    const location = this.#locate(normalised.segments, normalised.trailingSlash);
    const proxied = new ProxiedRequest(this, req, res, reading.facts, target, location, report);
    proxied.run().catch((error: unknown) => {
      this.errorLog(`fastcgi: internal error handling ${req.method} ${target}: ${(error as Error)?.stack ?? String(error)}`);
      sendErrorPage(res, 500);
      report?.headers();
      report?.error(ErrorCode.INVALID_STATE, `internal error: ${(error as Error)?.message ?? String(error)}`);
    });
  }

  /** The params of one request: the CGI environment of its description, then the route's extra params (these win). */
  params(description: Parameters<typeof buildEnvironment>[0]): Array<readonly [string, string | Buffer]> {
    const environment = buildEnvironment(description, this.policy);
    return this.#extraParams.length ? [...environment, ...this.#extraParams] : environment;
  }

  /** The upstreams to try for one request, starting with the next one in the rotation. */
  upstreamOrder(): FastCGIClient[] {
    const first = this.#turn++ % this.clients.length;
    return this.clients.map((_, attempt) => this.clients[(first + attempt) % this.clients.length]!);
  }

  close(): Promise<void> {
    this.#sendTimeout?.close();
    return Promise.all(this.clients.map((client) => client.close())).then(() => undefined);
  }

  /** SCRIPT_NAME, PATH_INFO and SCRIPT_FILENAME of a normalised path: a front controller, or split at splitPath, or the path itself. */
  #locate(segments: string[], trailingSlash: boolean): ScriptLocation {
    const options = this.#options;
    const mountName = this.mountName;
    if (options.scriptFilename) {
      const mountSegments = mountName.split('/').filter(Boolean).length;
      const rest = segments.slice(mountSegments);
      return {
        scriptName: mountName,
        pathInfo: rest.length ? `/${rest.join('/')}${trailingSlash ? '/' : ''}` : trailingSlash && mountName ? '/' : '',
        scriptFilename: options.scriptFilename,
      };
    }
    let scriptSegments = segments;
    let pathInfo = '';
    if (options.splitPath) {
      const at = segments.findIndex((segment) => segment.endsWith(options.splitPath!));
      if (at !== -1) {
        scriptSegments = segments.slice(0, at + 1);
        const rest = segments.slice(at + 1);
        pathInfo = rest.length ? `/${rest.join('/')}${trailingSlash ? '/' : ''}` : '';
        trailingSlash = false;
      }
    }
    let scriptName = `/${scriptSegments.join('/')}`;
    if (trailingSlash || scriptSegments.length === 0) {
      scriptName = `${scriptName === '/' ? '' : scriptName}/`;
      if (options.index) scriptName += options.index;
    }
    return { scriptName, pathInfo, scriptFilename: path.join(options.documentRoot, ...scriptName.split('/').filter(Boolean)) };
  }
}

/** C0 controls and DEL, decoded from the path (%0a, %0d, %00, ...). */
const CONTROL_CHARACTER = /[\x00-\x1f\x7f]/;

/** The path exists on this machine (a document root or front controller the front can check). */
function existsHere(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}

/** An error page from the outcome table, with its log line and its diagnostics events. */
function answer(res: ServerResponse, errorLog: (line: string) => void, failure: Failure, report: HandlerReport | null): void {
  const answered = answerFor(failure);
  if (answered.logLine !== null) errorLog(`fastcgi: ${answered.logLine}`);
  if (!res.headersSent) for (const [name, value] of answered.headers) res.setHeader(name, value);
  sendErrorPage(res, answered.status, answered.closeConnection);
  report?.headers();
  report?.error(answered.code, answered.logLine ?? `answered ${answered.status}`);
}

/** One client request: its body, its params, and the upstreams tried in turn until one answers. */
class ProxiedRequest {
  readonly #proxy: FastCGIProxy;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #facts: HttpRequestFacts;
  readonly #target: string;
  readonly #location: ScriptLocation;
  readonly #report: HandlerReport | null;

  constructor(
    proxy: FastCGIProxy,
    req: IncomingMessage,
    res: ServerResponse,
    facts: HttpRequestFacts,
    target: string,
    location: ScriptLocation,
    report: HandlerReport | null,
  ) {
    this.#report = report;
    this.#proxy = proxy;
    this.#req = req;
    this.#res = res;
    this.#facts = facts;
    this.#target = target;
    this.#location = location;
  }

  async run(): Promise<void> {
    if (this.#proxy.checkScript && !this.#scriptExists()) return;
    const body = await this.#readBody();
    if (!body) return;
    this.#res.once('close', () => void body.dispose());
    const params = this.#proxy.params(
      describeRequest(this.#facts, {
        method: this.#req.method ?? 'GET',
        target: this.#target,
        scriptName: this.#location.scriptName,
        scriptFilename: this.#location.scriptFilename,
        pathInfo: this.#location.pathInfo,
        documentRoot: this.#proxy.documentRoot,
        contextPrefix: this.#proxy.mountName,
        contextDocumentRoot: this.#proxy.documentRoot,
        contentLength: body.contentLength,
      }),
    );
    const upstreams = this.#proxy.upstreamOrder();
    for (const [attempt, client] of upstreams.entries()) {
      if (this.#res.destroyed) return;
      const last = attempt === upstreams.length - 1;
      const response = client.request(body.stream ? { params, body: body.stream } : { params });
      const relay = new UpstreamRelay(
        this.#proxy,
        this.#req,
        this.#res,
        response,
        this.#location.scriptFilename,
        this.#target,
        this.#report,
      );
      const outcome = await relay.relay(!last && !this.#res.destroyed);
      if (outcome !== 'retry' || last) return;
      this.#proxy.errorLog(`fastcgi: ${response.upstream} refused ${this.#req.method} ${this.#target}; trying the next upstream`);
    }
  }

  /** check-script: SCRIPT_FILENAME is a regular file here; else 404 (answered here) and the application never hears of it. */
  #scriptExists(): boolean {
    const file = this.#location.scriptFilename;
    // One stat(2) on the event loop, as nginx's try_files does: check-script is on by default only where the
    // root is on this machine, and a stat there takes about 4 µs of CPU, against about 18 µs for fs.promises'
    // round trip through libuv's thread pool (futex wake-ups on both sides), on every request of the route.
    let info: Stats | undefined;
    try {
      info = statSync(file, { throwIfNoEntry: false });
    } catch {
      // EACCES, ELOOP, ...: not a script the front can vouch for, answered as one that is not there.
    }
    if (info?.isFile()) return true;
    answer(
      this.#res,
      this.#proxy.errorLog,
      {
        kind: 'refused',
        status: 404,
        request: `${this.#req.method} ${this.#target} from ${plainAddress(this.#req.socket.remoteAddress)}`,
        reason: `check-script: ${file} is ${info ? 'not a regular file' : 'not there'}`,
      },
      this.#report,
    );
    return false;
  }

  /** The body as the body policy reads it; null when it was refused (answered here). */
  async #readBody(): Promise<RequestBody | null> {
    const reading = await readRequestBody(this.#req, this.#res, this.#proxy.body);
    const script = this.#location.scriptFilename;
    switch (reading.kind) {
      case 'body':
        return reading.body;
      case 'too-large':
        answer(
          this.#res,
          this.#proxy.errorLog,
          {
            kind: 'body-too-large',
            script,
            limit: reading.limit,
            declared: reading.declared,
            detail: reading.detail,
          },
          this.#report,
        );
        return null;
      case 'unreadable':
        answer(this.#res, this.#proxy.errorLog, { kind: 'body-unreadable', script, error: reading.error }, this.#report);
        return null;
    }
  }
}

/**
 * One upstream's response streamed to the client: the head parsed from
 * STDOUT, then the body with backpressure; STDERR to the error log line by
 * line. The client going away destroys the response, which sends
 * FCGI_ABORT_REQUEST so the application stops working on it.
 */
class UpstreamRelay {
  readonly #proxy: FastCGIProxy;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #response: UpstreamResponse;
  readonly #script: string;
  readonly #target: string;
  readonly #parser = new ResponseHeadParser();
  readonly #report: HandlerReport | null;
  #stderrTail = '';
  #settled = false;
  #canRetry = false;
  #resolve!: (outcome: 'done' | 'retry') => void;

  constructor(
    proxy: FastCGIProxy,
    req: IncomingMessage,
    res: ServerResponse,
    response: UpstreamResponse,
    script: string,
    target: string,
    report: HandlerReport | null,
  ) {
    this.#report = report;
    this.#proxy = proxy;
    this.#req = req;
    this.#res = res;
    this.#response = response;
    this.#script = script;
    this.#target = target;
  }

  /** 'retry' when it failed before anything reached the application and another upstream is left (`canRetry`). */
  relay(canRetry: boolean): Promise<'done' | 'retry'> {
    this.#canRetry = canRetry;
    const response = this.#response;
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#res.once('close', this.#onClientClose);
      response.on('stderr', (chunk: Buffer) => this.#onStderr(chunk));
      response.on('data', this.#onData);
      response.once('end', this.#onEndBeforeHead);
      response.once('error', (error: unknown) => this.#onError(error));
      response.completion.then(
        // php-fpm's error_log() lines carry no newline: what is left is a whole message, whatever the exit status.
        () => this.#flushStderr(),
        () => {},
      );
    });
  }

  readonly #onClientClose = (): void => {
    if (!this.#res.writableFinished) this.#response.destroy();
  };

  #settle(outcome: 'done' | 'retry'): void {
    if (this.#settled) return;
    this.#settled = true;
    if (outcome === 'retry') this.#res.off('close', this.#onClientClose);
    this.#resolve(outcome);
  }

  /** One error-log line naming the upstream and the script once (an UpstreamError's message starts with the upstream already). */
  #log(line: string): void {
    const upstream = this.#response.upstream;
    const detail = line.startsWith(`${upstream}: `) ? line.slice(upstream.length + 2) : line;
    this.#proxy.errorLog(`fastcgi: ${upstream}: ${this.#script}: ${detail}`);
  }

  #onStderr(chunk: Buffer): void {
    this.#stderrTail += chunk.toString('utf8');
    const lines = this.#stderrTail.split('\n');
    this.#stderrTail = lines.pop()!.slice(0, CGI_STDERR_LINE_MAX);
    for (const line of lines) if (line.trim()) this.#log(line.slice(0, CGI_STDERR_LINE_MAX));
  }

  #flushStderr(): void {
    if (this.#stderrTail.trim()) this.#log(this.#stderrTail);
    this.#stderrTail = '';
  }

  #onError(error: unknown): void {
    this.#flushStderr();
    const res = this.#res;
    // Only when another upstream is left: the last one's failure must be answered (503), or the client waits forever.
    if (this.#canRetry && error instanceof UpstreamError && error.retryable && error.code !== ErrorCode.REQUEST_ABORTED && !res.headersSent)
      return this.#settle('retry');
    const request = `${this.#req.method} ${this.#target}`;
    if (res.headersSent) {
      const code = (error as { code?: ErrorCode }).code;
      if (code !== ErrorCode.REQUEST_ABORTED) {
        this.#proxy.errorLog(`fastcgi: ${request}: ${(error as Error).message} (after the response started: connection closed)`);
        this.#report?.error(code ?? ErrorCode.UPSTREAM_PROTOCOL, `${(error as Error).message} (after the response started)`);
      }
      res.destroy();
    } else answer(res, this.#proxy.errorLog, { kind: 'upstream-failed', request, error: error as Error }, this.#report);
    this.#settle('done');
  }

  readonly #onData = (chunk: Buffer): void => {
    const step = this.#parser.push(chunk);
    if (step.state === 'incomplete') return;
    this.#response.off('data', this.#onData);
    this.#response.off('end', this.#onEndBeforeHead);
    if (step.state === 'error') {
      this.#response.destroy();
      answer(
        this.#res,
        this.#proxy.errorLog,
        { kind: 'upstream-bad-head', upstream: this.#response.upstream, script: this.#script, error: step.error },
        this.#report,
      );
      return this.#settle('done');
    }
    // Still inside the stream's 'data' event: the body's listeners take over from here, and the
    // bytes after the head go straight to them (no pause and unshift).
    this.#respond(step.head, step.rest);
  };

  readonly #onEndBeforeHead = (): void => {
    this.#response.off('data', this.#onData);
    answer(
      this.#res,
      this.#proxy.errorLog,
      { kind: 'upstream-no-head', upstream: this.#response.upstream, script: this.#script },
      this.#report,
    );
    this.#settle('done');
  };

  #respond(parsed: CgiResponseHead, rest: Buffer): void {
    const res = this.#res;
    const { head, buffered } = this.#bufferingChoice(parsed);
    if (head.kind === 'local-redirect') {
      // FastCGI has no internal redirects (nginx and mod_proxy_fcgi pass them on): the client is redirected.
      res.statusCode = 302;
      res.setHeader('Location', head.location!);
      for (const [name, value] of head.headers) if (name.toLowerCase() !== 'content-length') res.appendHeader(name, value);
      // The stream keeps flowing with no 'data' listener left: the application's body is read and dropped, and the
      // page sent instead is the server's, typed as the CGI path types it (the application's type was for its body).
      endWithRedirectPage(res, head.location!, this.#req.method ?? 'GET');
      this.#report?.headers();
      return this.#settle('done');
    }
    writeCgiHead(res, head);
    this.#report?.headers();
    // Buffered, the application's bytes are read as fast as they come (into memory, then a temporary file) and
    // the client takes them at its pace; streamed, the application waits for the client.
    const body = buffered ? new ResponseBuffer(this.#response, this.#proxy.buffer, rest) : this.#response;
    pipeCgiBody(
      body,
      res,
      head,
      (error) => {
        if (error && error.code !== ErrorCode.REQUEST_ABORTED && error.code !== ErrorCode.CLIENT_CLOSED) {
          this.#log(error.message);
          this.#report?.error(error.code as ErrorCode, `${error.message} (after the response started)`);
          res.destroy();
        }
        this.#settle('done');
      },
      // The log line names the upstream and the script already (#log).
      'the application',
      buffered ? undefined : rest,
    );
  }

  /**
   * nginx's convention: `X-Accel-Buffering: no` from the application streams its response even where the
   * route buffers (server-sent events, progress pages), `yes` buffers it where the route does not. The
   * header is for the front, not the client: it is not passed on.
   */
  #bufferingChoice(head: CgiResponseHead): { head: CgiResponseHead; buffered: boolean } {
    let buffered = this.#proxy.buffer.buffered;
    let found = false;
    for (const [name, value] of head.headers) {
      if (name.toLowerCase() !== 'x-accel-buffering') continue;
      found = true;
      const choice = value.trim().toLowerCase();
      if (choice === 'no') buffered = false;
      else if (choice === 'yes') buffered = true;
    }
    if (!found) return { head, buffered };
    return { head: { ...head, headers: head.headers.filter(([name]) => name.toLowerCase() !== 'x-accel-buffering') }, buffered };
  }
}

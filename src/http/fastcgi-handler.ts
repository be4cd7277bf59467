/**
 * `fastcgi(options)`: a `(req, res, next?)` handler that proxies to FastCGI
 * applications (php-fpm, kfcgi pools, gatehouse workers), as Apache's
 * mod_proxy_fcgi and Caddy's php_fastcgi do: SCRIPT_FILENAME built from the
 * application's root, the path split at the script (`.php`), the same CGI
 * environment builder as CGI scripts for PARAMS, and the application's STDOUT
 * read as a CGI response. Several upstreams per route: requests are spread
 * over them in turn, and one that refuses a connection is skipped for the next.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import type { Readable } from 'node:stream';
import { FastCGIClient } from '../fastcgi/client/index.js';
import type { UpstreamResponse } from '../fastcgi/client/request.js';
import { ErrorCode, UpstreamError } from '../errors.js';
import { buildEnvironment, type EnvironmentPolicy } from '../cgi/environment.js';
import { ResponseHeadParser, type CgiResponseHead } from '../cgi/response-head.js';
import { normaliseUrlPath } from '../cgi/resolve.js';
import { spoolBody } from '../cgi/body-spool.js';
import {
  answerContinue,
  pairRawHeaders,
  pipeCgiBody,
  redirectPage,
  sendErrorPage,
  splitTarget,
  writeCgiHead,
} from '../cgi/http-response.js';
import { CGI_BODY_MEMORY_SPOOL_BYTES, CGI_MAX_REQUEST_BODY_BYTES, CGI_STDERR_LINE_MAX } from '../limits.js';

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

/** Which HTTP status an upstream failure becomes (nginx's choices). */
export function statusForUpstreamError(error: unknown): number {
  const code = (error as { code?: string }).code;
  switch (code) {
    case ErrorCode.UPSTREAM_REFUSED:
    case ErrorCode.UPSTREAM_QUEUE_FULL:
    case ErrorCode.UPSTREAM_OVERLOADED:
    case ErrorCode.UPSTREAM_CANT_MPX:
      return 503;
    case ErrorCode.UPSTREAM_CONNECT_TIMEOUT:
    case ErrorCode.UPSTREAM_TIMEOUT:
      return 504;
    default:
      return 502;
  }
}

/**
 * The request target as the client sent it. Express strips its mount point
 * from req.url (app.use('/app', ...): "/hello" for "/app/hello") and keeps
 * the whole one in req.originalUrl; urlPrefix, SCRIPT_NAME and REQUEST_URI
 * are about the whole site's paths.
 */
function siteTarget(req: IncomingMessage): string {
  const original = (req as { originalUrl?: unknown }).originalUrl;
  return typeof original === 'string' && original.startsWith('/') ? original : (req.url ?? '/');
}

interface ScriptLocation {
  scriptName: string;
  pathInfo: string;
  scriptFilename: string;
}

export function fastcgi(options: FastCGIHandlerOptions): FastCGIHandler {
  if (options.upstreams.length === 0)
    throw new TypeError('fastcgi(): give at least one upstream, e.g. upstreams: ["unix:/run/php/php-fpm.sock"]');
  if (!path.isAbsolute(options.documentRoot))
    throw new TypeError(`fastcgi(): documentRoot must be an absolute path, got ${JSON.stringify(options.documentRoot)}`);
  const prefix = options.urlPrefix ?? '/';
  const mountName = prefix.replace(/\/+$/, '');
  const errorLog = options.errorLog ?? ((line: string) => process.stderr.write(`[${new Date().toISOString()}] [fastcgi:error] ${line}\n`));
  const clients = options.upstreams.map(
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
  const policy: EnvironmentPolicy = {
    serverName: options.serverName ?? hostname(),
    ...(options.serverAdmin !== undefined ? { serverAdmin: options.serverAdmin } : {}),
    passAuthorization: options.passAuthorization ?? false,
    setEnv: options.setEnv ?? {},
    passEnv: options.passEnv ?? [],
    inheritedEnvironment: process.env,
  };
  const maxBody = options.maxRequestBody ?? CGI_MAX_REQUEST_BODY_BYTES;
  const extraParams = Object.entries(options.params ?? {});
  let turn = 0;

  const locate = (segments: string[], trailingSlash: boolean): ScriptLocation => {
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
  };

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    const target = siteTarget(req);
    const { pathname } = splitTarget(target);
    const normalised = normaliseUrlPath(pathname);
    if ('kind' in normalised) {
      errorLog(`fastcgi: refused ${req.method} ${target} from ${req.socket.remoteAddress}: ${normalised.reason}`);
      return sendErrorPage(res, normalised.status);
    }
    const location = locate(normalised.segments, normalised.trailingSlash);
    void proxy(req, res, location).catch((error: unknown) => {
      errorLog(`fastcgi: internal error handling ${req.method} ${target}: ${(error as Error)?.stack ?? String(error)}`);
      sendErrorPage(res, 500);
    });
  }) as FastCGIHandler;

  async function proxy(req: IncomingMessage, res: ServerResponse, location: ScriptLocation): Promise<void> {
    // The body: streamed when its length is known; a chunked body is spooled so CONTENT_LENGTH is exact.
    let body: Readable | undefined;
    let contentLength: number | undefined;
    const declared = req.headers['content-length'];
    if (declared !== undefined) {
      contentLength = Number(declared);
      if (contentLength > maxBody) return sendErrorPage(res, 413, true);
      answerContinue(req, res);
      if (contentLength > 0) body = req;
    } else if (req.headers['transfer-encoding'] !== undefined) {
      answerContinue(req, res);
      const spooled = await spoolBody(req, { maxBytes: maxBody, memoryBytes: options.bodyMemorySpool ?? CGI_BODY_MEMORY_SPOOL_BYTES });
      if (spooled.kind === 'too-large') return sendErrorPage(res, 413, true);
      if (spooled.kind === 'failed') return sendErrorPage(res, 400, true);
      contentLength = spooled.body.length;
      body = spooled.body.stream();
      res.once('close', () => void spooled.body.dispose());
    }
    const socket = req.socket;
    const environment = buildEnvironment(
      {
        method: req.method ?? 'GET',
        target: siteTarget(req),
        httpVersion: req.httpVersion,
        headers: pairRawHeaders(req.rawHeaders),
        remoteAddress: socket.remoteAddress ?? '',
        remotePort: socket.remotePort ?? 0,
        localAddress: socket.localAddress ?? '',
        localPort: socket.localPort ?? 0,
        tls: (socket as TLSSocket).encrypted === true,
        scriptName: location.scriptName,
        scriptFilename: location.scriptFilename,
        pathInfo: location.pathInfo,
        documentRoot: options.documentRoot,
        contextPrefix: mountName,
        contextDocumentRoot: options.documentRoot,
        ...(contentLength !== undefined ? { contentLength } : {}),
      },
      policy,
    );
    const params: Array<readonly [string, string | Buffer]> = extraParams.length ? [...environment, ...extraParams] : environment;

    // Try the upstreams in turn, starting with the next one in the rotation.
    const first = turn++ % clients.length;
    for (let attempt = 0; attempt < clients.length; attempt++) {
      const client = clients[(first + attempt) % clients.length]!;
      if (res.destroyed) return;
      const response = client.request(body ? { params, body } : { params });
      const outcome = await relay(req, res, response, location.scriptFilename, attempt < clients.length - 1 && !res.destroyed);
      if (outcome !== 'retry' || attempt === clients.length - 1) return;
      errorLog(`fastcgi: ${response.upstream} refused ${req.method} ${siteTarget(req)}; trying the next upstream`);
    }
  }

  /** Streams one upstream response to the client. 'retry' when it failed before anything reached the application. */
  function relay(
    req: IncomingMessage,
    res: ServerResponse,
    response: UpstreamResponse,
    script: string,
    canRetry: boolean,
  ): Promise<'done' | 'retry'> {
    return new Promise((resolve) => {
      const parser = new ResponseHeadParser();
      let stderrTail = '';
      let settled = false;
      // The client went away before the response was complete: destroying the
      // response sends FCGI_ABORT_REQUEST, so the application stops working on it.
      const onClientClose = () => {
        if (!res.writableFinished) response.destroy();
      };
      res.once('close', onClientClose);
      const settle = (outcome: 'done' | 'retry') => {
        if (settled) return;
        settled = true;
        if (outcome === 'retry') res.off('close', onClientClose);
        resolve(outcome);
      };
      response.on('stderr', (chunk: Buffer) => {
        stderrTail += chunk.toString('utf8');
        const lines = stderrTail.split('\n');
        stderrTail = lines.pop()!.slice(0, CGI_STDERR_LINE_MAX);
        for (const line of lines)
          if (line.trim()) errorLog(`fastcgi: ${response.upstream}: ${script}: ${line.slice(0, CGI_STDERR_LINE_MAX)}`);
      });
      const fail = (error: unknown) => {
        if (stderrTail.trim()) errorLog(`fastcgi: ${response.upstream}: ${script}: ${stderrTail}`);
        stderrTail = '';
        // Only when another upstream is left: the last one's failure must be answered (503), or the client waits forever.
        if (canRetry && error instanceof UpstreamError && error.retryable && error.code !== ErrorCode.REQUEST_ABORTED && !res.headersSent)
          return settle('retry');
        const status = statusForUpstreamError(error);
        if ((error as { code?: string }).code !== ErrorCode.REQUEST_ABORTED) {
          errorLog(
            `fastcgi: ${req.method} ${siteTarget(req)}: ${(error as Error).message}${res.headersSent ? ' (after the response started: connection closed)' : `: answered ${status}`}`,
          );
        }
        sendErrorPage(res, status);
        settle('done');
      };
      const onData = (chunk: Buffer) => {
        const step = parser.push(chunk);
        if (step.state === 'incomplete') return;
        response.off('data', onData);
        response.off('end', onEndBeforeHead);
        if (step.state === 'error') {
          errorLog(
            `fastcgi: ${response.upstream}: ${script}: bad response head: ${step.error.message}${step.error.line ? `: ${step.error.line}` : ''}`,
          );
          response.destroy();
          sendErrorPage(res, 502);
          return settle('done');
        }
        // Still inside the stream's 'data' event: the body's listeners take over from here, and the
        // bytes after the head go straight to them (no pause and unshift).
        respond(step.head, step.rest);
      };
      const onEndBeforeHead = () => {
        response.off('data', onData);
        errorLog(`fastcgi: ${response.upstream}: ${script}: the application ended the request without a response head`);
        sendErrorPage(res, 502);
        settle('done');
      };
      const respond = (head: CgiResponseHead, rest: Buffer) => {
        if (head.kind === 'local-redirect') {
          // FastCGI has no internal redirects (nginx and mod_proxy_fcgi pass them on): the client is redirected.
          res.statusCode = 302;
          res.setHeader('Location', head.location!);
          for (const [name, value] of head.headers) if (name.toLowerCase() !== 'content-length') res.appendHeader(name, value);
          // The stream keeps flowing with no 'data' listener left: the application's body is read and dropped.
          res.end(redirectPage(head.location!));
          return settle('done');
        }
        writeCgiHead(res, head);
        pipeCgiBody(
          response,
          res,
          head,
          (error) => {
            if (error && (error as { code?: string }).code !== ErrorCode.REQUEST_ABORTED && error.code !== ErrorCode.CLIENT_CLOSED) {
              errorLog(`fastcgi: ${response.upstream}: ${script}: ${error.message}`);
              res.destroy();
            }
            settle('done');
          },
          `${response.upstream} (${script})`,
          rest,
        );
      };
      response.on('data', onData);
      response.once('end', onEndBeforeHead);
      response.once('error', fail);
      response.completion.then(
        (_completion) => {
          // php-fpm's error_log() lines carry no newline: what is left is a whole message, whatever the exit status.
          if (stderrTail.trim()) errorLog(`fastcgi: ${response.upstream}: ${script}: ${stderrTail}`);
          stderrTail = '';
        },
        () => {},
      );
    });
  }

  Object.defineProperty(handler, 'clients', { value: clients });
  Object.defineProperty(handler, 'close', { value: () => Promise.all(clients.map((client) => client.close())).then(() => undefined) });
  return handler;
}

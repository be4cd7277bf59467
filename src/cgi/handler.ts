/**
 * `cgi(options)`: a `(req, res, next?)` handler for node:http, Express and
 * Fastify (raw req/res) that runs CGI scripts as Apache httpd's mod_cgi does.
 * It ties together the pure pieces (resolve -> environment -> run -> head)
 * and owns only the HTTP side: statuses, redirects, nph passthrough, request
 * bodies (streamed, or spooled when chunked), Expect: 100-continue, HEAD, the
 * error log and the script log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { BodyTap } from './body-tap.js';
import type { TLSSocket } from 'node:tls';
import { ErrorCode } from '../errors.js';
import {
  CGI_MAX_ARGV_WORDS,
  CGI_MAX_LOCAL_REDIRECTS,
  CGI_MAX_REQUEST_BODY_BYTES,
  CGI_BODY_MEMORY_SPOOL_BYTES,
  CGI_SCRIPT_TIMEOUT_MS,
} from '../limits.js';
import { spoolBody } from './body-spool.js';
import { answerContinue, pairRawHeaders, pipeCgiBody, redirectPage, sendErrorPage, splitTarget, writeCgiHead } from './http-response.js';
import {
  buildEnvironment,
  environmentRecord,
  searchWords,
  type CgiEnvironment,
  type CgiRequestDescription,
  type EnvironmentPolicy,
} from './environment.js';
import { ScriptLimiter } from './limiter.js';
import { resolveInRoutes, type ResolvedScript, type ScriptRoute } from './resolve.js';
import type { CgiResponseHead } from './response-head.js';
import { parseScriptTimeout, runScript, type ScriptRun } from './run-script.js';
import { ScriptLog } from './script-log.js';
import type { ScriptSpawner } from './spawner.js';

export interface CgiOptions {
  /** DOCUMENT_ROOT, the base of PATH_TRANSLATED, and where `extensions` run scripts. */
  documentRoot: string;
  /** ScriptAlias mappings: every file under `directory` is a script, at `urlPrefix` ("/cgi-bin/"). */
  scriptAliases?: ReadonlyArray<{ urlPrefix: string; directory: string }>;
  /** File endings executed inside the document root (AddHandler cgi-script .cgi); none by default. */
  extensions?: readonly string[];
  serverName?: string;
  useCanonicalName?: boolean;
  serverAdmin?: string;
  serverSignature?: string;
  serverSoftware?: string;
  /** CGIPassAuth: give scripts the Authorization header. */
  passAuthorization?: boolean;
  setEnv?: Readonly<Record<string, string>>;
  passEnv?: readonly string[];
  /** CGIDScriptTimeout: "60", "60s", "500ms" or seconds as a number. */
  scriptTimeout?: string | number;
  killGraceMs?: number;
  exitWaitMs?: number;
  maxConcurrentScripts?: number;
  maxQueuedScripts?: number;
  /** Largest request body (LimitRequestBody); 413 above. */
  maxRequestBody?: number;
  /** A chunked body is kept in memory up to this size, then spooled to a temp file. */
  bodyMemorySpool?: number;
  spoolDirectory?: string;
  /** ScriptLog file (or a shared ScriptLog); ScriptLogLength and ScriptLogBuffer. */
  scriptLog?: string | ScriptLog;
  scriptLogLength?: number;
  scriptLogBuffer?: number;
  /** Write Authorization, Cookie and Set-Cookie values to the script log (redacted by default). */
  scriptLogSecrets?: boolean;
  /** Where error-log lines go (one line per call, no newline); default stderr. */
  errorLog?: (line: string) => void;
  /** How scripts are started (default child_process.spawn; cgid and posix_spawn plug in here). */
  spawner?: ScriptSpawner;
  /** LimitInternalRecursion for local redirects. */
  maxLocalRedirects?: number;
}

export type NextFunction = (error?: unknown) => void;
export type CgiHandler = ((req: IncomingMessage, res: ServerResponse, next?: NextFunction) => void) & {
  readonly limiter: ScriptLimiter;
  /** Scripts running now. */
  readonly running: () => number;
  /**
   * Graceful stop: new requests get 503; running scripts get until `graceMs`
   * to finish, then their groups get SIGTERM (SIGKILL after the kill grace).
   * Resolves when every script has been reaped.
   */
  readonly shutdown: (graceMs?: number) => Promise<void>;
};

interface Dispatch {
  req: IncomingMessage;
  res: ServerResponse;
  next: NextFunction | undefined;
  /** The target this dispatch resolves, relative to the mount point (changes on a local redirect). */
  target: string;
  /**
   * Where a framework mounted the handler, as it stripped it from req.url
   * (Express's app.use('/cgi', ...): req.url "/x.cgi", req.originalUrl
   * "/cgi/x.cgi"). Raw (still percent-encoded); "" when not mounted.
   */
  mount: string;
  method: string;
  depth: number;
  redirectedFrom?: { environment: CgiEnvironment; url: string; status: number };
}

export function cgi(options: CgiOptions): CgiHandler {
  const settings = validate(options);
  const handler = ((req: IncomingMessage, res: ServerResponse, next?: NextFunction) => {
    const target = req.url ?? '/';
    dispatch(settings, { req, res, next, target, mount: mountPoint(req, target), method: req.method ?? 'GET', depth: 0 }).catch(
      (error: unknown) => {
        settings.errorLog(`cgi: internal error handling ${req.method} ${req.url}: ${(error as Error)?.stack ?? String(error)}`);
        sendErrorPage(res, 500);
      },
    );
  }) as CgiHandler;
  Object.defineProperty(handler, 'limiter', { value: settings.limiter });
  Object.defineProperty(handler, 'running', { value: () => settings.runs.size });
  Object.defineProperty(handler, 'shutdown', {
    value: async (graceMs = 0) => {
      settings.stopping = true;
      const all = () => Promise.all([...settings.runs].map((run) => run.finished));
      if (graceMs > 0 && settings.runs.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([all(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
        clearTimeout(timer);
      }
      for (const run of settings.runs) run.abort();
      await all();
    },
  });
  return handler;
}

interface Settings {
  routes: ScriptRoute[];
  documentRoot: string;
  policy: EnvironmentPolicy;
  timeoutMs: number;
  killGraceMs: number | undefined;
  exitWaitMs: number | undefined;
  limiter: ScriptLimiter;
  /** Every script running, for shutdown. */
  runs: Set<ScriptRun>;
  stopping: boolean;
  maxRequestBody: number;
  bodyMemorySpool: number;
  spoolDirectory: string | undefined;
  scriptLog: ScriptLog | undefined;
  errorLog: (line: string) => void;
  spawner: ScriptSpawner | undefined;
  maxLocalRedirects: number;
}

/** Every option checked once, with a message that says what to write instead. */
function validate(options: CgiOptions): Settings {
  if (!options.documentRoot || !path.isAbsolute(options.documentRoot)) {
    throw new TypeError(`cgi(): documentRoot must be an absolute directory path, got ${JSON.stringify(options.documentRoot)}`);
  }
  const routes: ScriptRoute[] = [];
  for (const alias of options.scriptAliases ?? []) {
    if (!alias.urlPrefix.startsWith('/'))
      throw new TypeError(`cgi(): scriptAliases urlPrefix must start with '/', got ${JSON.stringify(alias.urlPrefix)}`);
    if (!path.isAbsolute(alias.directory))
      throw new TypeError(`cgi(): scriptAliases directory must be absolute, got ${JSON.stringify(alias.directory)}`);
    routes.push({ kind: 'script-alias', urlPrefix: alias.urlPrefix, directory: alias.directory });
  }
  const extensions = options.extensions ?? [];
  for (const extension of extensions) {
    if (!/^\.[A-Za-z0-9_-]+$/.test(extension))
      throw new TypeError(`cgi(): extensions are written with their dot, like ".cgi"; got ${JSON.stringify(extension)}`);
  }
  if (extensions.length > 0) routes.push({ kind: 'extensions', urlPrefix: '/', documentRoot: options.documentRoot, extensions });
  if (routes.length === 0)
    throw new TypeError(
      'cgi(): nothing to run: give scriptAliases (e.g. [{ urlPrefix: "/cgi-bin/", directory: "/srv/cgi-bin" }]) or extensions (e.g. [".cgi"])',
    );
  const timeoutMs = parseScriptTimeout(options.scriptTimeout ?? `${CGI_SCRIPT_TIMEOUT_MS}ms`);
  if (timeoutMs === null)
    throw new TypeError(`cgi(): scriptTimeout must look like "20", "20s" or "500ms", got ${JSON.stringify(options.scriptTimeout)}`);
  const errorLog = options.errorLog ?? ((line: string) => process.stderr.write(`[${new Date().toISOString()}] [cgi:error] ${line}\n`));
  let scriptLog: ScriptLog | undefined;
  if (typeof options.scriptLog === 'string') {
    scriptLog = new ScriptLog({
      path: options.scriptLog,
      ...(options.scriptLogLength !== undefined ? { maxLength: options.scriptLogLength } : {}),
      ...(options.scriptLogBuffer !== undefined ? { bodyBytes: options.scriptLogBuffer } : {}),
      ...(options.scriptLogSecrets ? { redactHeaders: [] } : {}),
      onError: (error) => errorLog(`cgi: cannot write the script log ${options.scriptLog}: ${error.message}`),
    });
  } else scriptLog = options.scriptLog;
  return {
    routes,
    documentRoot: options.documentRoot,
    policy: {
      serverName: options.serverName ?? hostname(),
      ...(options.useCanonicalName !== undefined ? { useCanonicalName: options.useCanonicalName } : {}),
      ...(options.serverAdmin !== undefined ? { serverAdmin: options.serverAdmin } : {}),
      ...(options.serverSignature !== undefined ? { serverSignature: options.serverSignature } : {}),
      ...(options.serverSoftware !== undefined ? { serverSoftware: options.serverSoftware } : {}),
      passAuthorization: options.passAuthorization ?? false,
      setEnv: options.setEnv ?? {},
      passEnv: options.passEnv ?? [],
      inheritedEnvironment: process.env,
    },
    timeoutMs,
    killGraceMs: options.killGraceMs,
    exitWaitMs: options.exitWaitMs,
    limiter: new ScriptLimiter(options.maxConcurrentScripts, options.maxQueuedScripts),
    runs: new Set(),
    stopping: false,
    maxRequestBody: options.maxRequestBody ?? CGI_MAX_REQUEST_BODY_BYTES,
    bodyMemorySpool: options.bodyMemorySpool ?? CGI_BODY_MEMORY_SPOOL_BYTES,
    spoolDirectory: options.spoolDirectory,
    scriptLog,
    errorLog,
    spawner: options.spawner,
    maxLocalRedirects: options.maxLocalRedirects ?? CGI_MAX_LOCAL_REDIRECTS,
  };
}

async function dispatch(settings: Settings, dispatch: Dispatch): Promise<void> {
  const { req, res } = dispatch;
  const { pathname, query } = splitTarget(dispatch.target);
  const resolution = await resolveInRoutes(pathname, settings.routes);
  if (resolution.kind === 'refused') {
    settings.errorLog(
      `cgi: refused ${dispatch.method} ${dispatch.mount}${dispatch.target} from ${req.socket.remoteAddress}: ${resolution.reason}`,
    );
    sendErrorPage(res, resolution.status);
    return;
  }
  if (resolution.kind !== 'script') {
    // Not ours (a static file, or no route): the next handler serves it, as a GET if this is a local redirect.
    if (dispatch.next) {
      if (dispatch.depth > 0) {
        req.url = dispatch.target;
        req.method = 'GET';
      }
      dispatch.next();
    } else sendErrorPage(res, 404);
    return;
  }
  await runResolved(settings, dispatch, resolution, query);
}

async function runResolved(settings: Settings, dispatch: Dispatch, script: ResolvedScript, query: string): Promise<void> {
  const { req, res } = dispatch;
  if (settings.stopping) {
    settings.errorLog(`cgi: stopping: refused ${script.scriptFilename} with 503`);
    sendErrorPage(res, 503, true);
    return;
  }
  const withBody = dispatch.depth === 0;
  const headers = pairRawHeaders(req.rawHeaders).filter(([name]) => withBody || !/^(content-length|transfer-encoding)$/i.test(name));

  // The body: a known length is streamed to stdin; a chunked one is spooled so CONTENT_LENGTH can be exact.
  let stdin: Readable | Buffer | null = null;
  let contentLength: number | undefined;
  let bodyHead: () => Buffer = () => Buffer.alloc(0);
  let disposeBody: () => Promise<void> = async () => {};
  if (withBody) {
    const declared = req.headers['content-length'];
    const chunked = req.headers['transfer-encoding'] !== undefined;
    if (!chunked && declared !== undefined && Number(declared) > settings.maxRequestBody) {
      settings.errorLog(
        `cgi: request body of ${declared} bytes for ${script.scriptFilename} is over the limit of ${settings.maxRequestBody}`,
      );
      sendErrorPage(res, 413, true);
      return;
    }
    if (chunked || (declared !== undefined && Number(declared) > 0)) {
      answerContinue(req, res);
      if (chunked) {
        const outcome = await spoolBody(req, {
          memoryBytes: settings.bodyMemorySpool,
          maxBytes: settings.maxRequestBody,
          ...(settings.spoolDirectory ? { directory: settings.spoolDirectory } : {}),
          keepHeadBytes: settings.scriptLog?.bodyBytes ?? 0,
        });
        if (outcome.kind === 'too-large') {
          settings.errorLog(`cgi: chunked request body for ${script.scriptFilename} is over the limit of ${outcome.limit} bytes`);
          sendErrorPage(res, 413, true);
          return;
        }
        if (outcome.kind === 'failed') {
          settings.errorLog(`cgi: reading the request body for ${script.scriptFilename} failed: ${outcome.error.message}`);
          sendErrorPage(res, 400, true);
          return;
        }
        contentLength = outcome.body.length;
        stdin = outcome.body.stream();
        bodyHead = () => outcome.body.head;
        disposeBody = () => outcome.body.dispose();
      } else if (settings.scriptLog) {
        const tap = new BodyTap(settings.scriptLog.bodyBytes);
        req.pipe(tap);
        stdin = tap;
        bodyHead = () => tap.head;
      } else stdin = req;
    }
  }

  // A slot among the concurrent scripts, or 503 when the queue is full too.
  let release = settings.limiter.tryAcquire();
  if (!release) {
    // Waiting: a client that leaves gives its place in the queue back.
    const gone = new AbortController();
    const onEarlyClose = () => gone.abort();
    res.once('close', onEarlyClose);
    release = await settings.limiter.acquire(gone.signal);
    res.off('close', onEarlyClose);
    if (!release) {
      await disposeBody();
      if (gone.signal.aborted) return;
      settings.errorLog(
        `cgi: ${settings.limiter.maxRunning} scripts running and ${settings.limiter.maxQueued} waiting: refused ${script.scriptFilename} with 503`,
      );
      res.setHeader('Retry-After', '1');
      sendErrorPage(res, 503);
      return;
    }
  }
  const releaseSlot = release;
  if (res.destroyed || req.socket.destroyed) {
    // The client left while the body was spooled or the request queued: nothing to run for.
    releaseSlot();
    await disposeBody();
    return;
  }

  const description: CgiRequestDescription = {
    method: dispatch.method,
    target: dispatch.mount + dispatch.target,
    httpVersion: req.httpVersion,
    headers,
    remoteAddress: plainAddress(req.socket.remoteAddress),
    remotePort: req.socket.remotePort ?? 0,
    localAddress: plainAddress(req.socket.localAddress),
    localPort: req.socket.localPort ?? 0,
    tls: (req.socket as TLSSocket).encrypted === true,
    scriptName: decodeMount(dispatch.mount) + script.scriptName,
    scriptFilename: script.scriptFilename,
    pathInfo: script.pathInfo,
    documentRoot: settings.documentRoot,
    contextPrefix: script.contextPrefix === '' ? '' : decodeMount(dispatch.mount) + script.contextPrefix,
    contextDocumentRoot: script.contextDocumentRoot,
    ...(contentLength !== undefined ? { contentLength } : {}),
    ...(dispatch.redirectedFrom ? { redirectedFrom: dispatch.redirectedFrom } : {}),
  };
  const environment = buildEnvironment(description, settings.policy);
  const file = script.scriptFilename;
  const run = runScript({
    file,
    argv: [file, ...searchWords(query, CGI_MAX_ARGV_WORDS)],
    cwd: path.dirname(file),
    env: environmentRecord(environment),
    stdin,
    timeoutMs: settings.timeoutMs,
    ...(settings.killGraceMs !== undefined ? { killGraceMs: settings.killGraceMs } : {}),
    ...(settings.exitWaitMs !== undefined ? { exitWaitMs: settings.exitWaitMs } : {}),
    nph: script.nph,
    onStderrLine: (line) => settings.errorLog(`cgi: ${file}: ${line}`),
    ...(settings.spawner ? { spawner: settings.spawner } : {}),
  });
  settings.runs.add(run);
  void run.finished.then(() => {
    settings.runs.delete(run);
    releaseSlot();
    void disposeBody();
  });

  let completed = false;
  res.once('close', () => {
    if (!completed) run.abort();
  });
  const logFailure = (status: number, error: string, responseHeaders: ReadonlyArray<readonly [string, string]> = []) => {
    const log = settings.scriptLog;
    if (!log) return;
    // Waiting for the script to end puts its whole stderr in the entry; the request is not held up by it.
    void run.finished.then(() =>
      log.record({
        method: req.method ?? dispatch.method,
        target: dispatch.mount + (req.url ?? dispatch.target),
        protocol: `HTTP/${req.httpVersion}`,
        status,
        scriptPath: file,
        requestHeaders: pairRawHeaders(req.rawHeaders),
        requestBody: bodyHead(),
        responseHeaders,
        error,
        stdout: run.capturedStdout,
        stderr: run.capturedStderr,
      }),
    );
  };

  const outcome = await run.head;
  switch (outcome.kind) {
    case 'aborted':
      return;
    case 'spawn-failed': {
      const status = spawnFailureStatus(outcome.error.errno);
      settings.errorLog(`cgi: ${outcome.error.message}`);
      logFailure(status, outcome.error.message);
      completed = true;
      // The cgid daemon is being restarted: worth retrying in a moment.
      if (status === 503) res.setHeader('Retry-After', '1');
      sendErrorPage(res, status);
      return;
    }
    case 'timeout':
      settings.errorLog(`cgi: ${file}: no output for ${settings.timeoutMs} ms before the headers: script killed, answering 504`);
      logFailure(504, `timeout: no output for ${settings.timeoutMs} ms`);
      completed = true;
      sendErrorPage(res, 504);
      return;
    case 'malformed': {
      if (run.lost) {
        // Not the script's fault: the cgid daemon died under it and killed it. Retry shortly.
        settings.errorLog(`cgi: ${file}: the cgid daemon went away while the script ran (script killed): answering 503`);
        completed = true;
        res.setHeader('Retry-After', '1');
        sendErrorPage(res, 503);
        return;
      }
      const where = outcome.error.line !== undefined ? `: Bad header: ${outcome.error.line}` : '';
      settings.errorLog(`cgi: malformed header from script ${file}: ${outcome.error.message}${where}`);
      logFailure(500, `malformed header from script${where} (${outcome.error.message})`);
      completed = true;
      sendErrorPage(res, 500);
      return;
    }
    case 'raw':
      sendRaw(run, req, res, () => (completed = true));
      return;
    case 'head':
      break;
  }

  const head = outcome.head;
  if (head.kind === 'local-redirect') {
    completed = true;
    if (dispatch.depth + 1 > settings.maxLocalRedirects) {
      settings.errorLog(`cgi: ${file}: more than ${settings.maxLocalRedirects} local redirects (last to ${head.location}); answering 500`);
      sendErrorPage(res, 500);
      return;
    }
    run.body.resume();
    const location = head.location!;
    await dispatchRedirect(settings, dispatch, location, environment);
    return;
  }
  if (head.status >= 500) logFailure(head.status, `the script answered ${head.status}`, head.headers);
  writeCgiHead(res, head);
  if (head.kind === 'client-redirect') {
    // As Apache does: the script's body is replaced by a short page pointing at the new location.
    run.body.resume();
    completed = true;
    res.removeHeader('content-length');
    res.setHeader('Content-Type', 'text/html; charset=iso-8859-1');
    res.end(dispatch.method === 'HEAD' ? undefined : redirectPage(head.location!));
    return;
  }
  if (dispatch.method === 'HEAD') {
    // HEAD runs the script (its side effects are the script's business) and sends no body.
    run.body.resume();
    completed = true;
    res.end();
    return;
  }
  sendBody(run, res, head, file, settings.errorLog, () => (completed = true));
}

/**
 * EACCES (not executable) and EPERM (a suexec refusal) -> 403, ENOENT -> 404,
 * ECGIDDOWN (the cgid daemon is gone and being restarted) -> 503, others 500.
 */
function spawnFailureStatus(errno: string): number {
  if (errno === 'EACCES' || errno === 'EPERM') return 403;
  if (errno === 'ENOENT') return 404;
  if (errno === 'ECGIDDOWN') return 503;
  return 500;
}

async function dispatchRedirect(settings: Settings, previous: Dispatch, location: string, environment: CgiEnvironment): Promise<void> {
  const { pathname } = splitTarget(previous.mount + previous.target);
  let url = pathname;
  try {
    url = decodeURIComponent(pathname);
  } catch {
    /* REDIRECT_URL keeps the raw path when it cannot be decoded */
  }
  // The Location is a path of the whole site; under a mount point only paths below it are this handler's.
  const mounted = previous.mount === '' || location.startsWith(`${previous.mount}/`);
  if (!mounted) {
    settings.errorLog(`cgi: local redirect to ${location} is outside the mount point ${previous.mount}: passed to the next handler`);
    if (previous.next) {
      previous.req.url = location;
      previous.req.method = 'GET';
      previous.next();
    } else sendErrorPage(previous.res, 404);
    return;
  }
  await dispatch(settings, {
    req: previous.req,
    res: previous.res,
    next: previous.next,
    mount: previous.mount,
    target: location.slice(previous.mount.length),
    method: 'GET',
    depth: previous.depth + 1,
    redirectedFrom: { environment, url, status: 200 },
  });
}

/** Streams the script's body to the client (Content-Length held to, see pipeCgiBody); a timeout after the head cuts the response short. */
function sendBody(
  run: ScriptRun,
  res: ServerResponse,
  head: CgiResponseHead,
  file: string,
  errorLog: (line: string) => void,
  done: () => void,
): void {
  pipeCgiBody(
    run.body,
    res,
    head,
    (error) => {
      if (!error) return done();
      const code = (error as { code?: string }).code;
      if (code === ErrorCode.REQUEST_ABORTED || code === 'ERR_STREAM_PREMATURE_CLOSE') return;
      if (code === ErrorCode.CGI_SCRIPT_TIMEOUT)
        errorLog(`cgi: ${file}: no output for the script timeout after the body started: script killed, response cut short`);
      else errorLog(`cgi: ${error.message}`);
      res.destroy();
    },
    `script ${file}`,
  );
}

/** nph-: the script's output is the response, status line and all; the connection closes after it. */
function sendRaw(run: ScriptRun, req: IncomingMessage, res: ServerResponse, done: () => void): void {
  const socket = req.socket;
  res.shouldKeepAlive = false;
  pipeline(run.body, socket, (error) => {
    if (!error) done();
    socket.destroySoon();
  });
}

/** The prefix a framework stripped from req.url (Express's req.originalUrl keeps it), or "". */
/** An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d; scripts (and Apache) see a.b.c.d. */
function plainAddress(address: string | undefined): string {
  if (!address) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function mountPoint(req: IncomingMessage, target: string): string {
  const original = (req as { originalUrl?: unknown }).originalUrl;
  if (typeof original !== 'string' || original === target) return '';
  const originalPath = splitTarget(original).pathname;
  const path = splitTarget(target).pathname;
  if (path === '/' && !originalPath.endsWith('/')) return originalPath;
  return originalPath.endsWith(path) ? originalPath.slice(0, originalPath.length - path.length) : '';
}

function decodeMount(mount: string): string {
  if (mount === '') return '';
  try {
    return decodeURIComponent(mount);
  } catch {
    return mount;
  }
}

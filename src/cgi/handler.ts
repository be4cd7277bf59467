/**
 * `cgi(options)`: a `(req, res, next?)` handler for node:http, Express and
 * Fastify (raw req/res) that runs CGI scripts as Apache httpd's mod_cgi does.
 * It ties together the pure pieces (resolve -> environment -> run -> head)
 * and owns only the HTTP side: one CgiExchange per client request follows it
 * from the request description and the body policy, through a script slot
 * and the script's run, to the answer (the script's response, a redirect
 * followed or passed on, nph passthrough, HEAD, or an error page from the
 * outcome table), with the error log and the script log on the way.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { ErrorCode, InvalidArgumentError } from '../errors.js';
import {
  CGI_MAX_ARGV_WORDS,
  CGI_MAX_LOCAL_REDIRECTS,
  CGI_MAX_REQUEST_BODY_BYTES,
  CGI_BODY_MEMORY_SPOOL_BYTES,
  CGI_QUERY_ARGUMENTS,
  CGI_SCRIPT_TIMEOUT_MS,
} from '../limits.js';
import { readRequestBody, RequestBody, type BodyPolicy } from './body-policy.js';
import { endWithRedirectPage, pairRawHeaders, pipeCgiBody, sendErrorPage, splitTarget, writeCgiHead } from './http-response.js';
import { describeRequest, readHttpRequest, splitAbsoluteForm, withoutBodyHeaders, type HttpRequestFacts } from './http-request.js';
import {
  buildEnvironment,
  environmentRecord,
  searchWords,
  type CgiEnvironment,
  type CgiRequestDescription,
  type EnvironmentPolicy,
} from './environment.js';
import { ScriptLimiter, type Release } from './limiter.js';
import { answerFor, type Failure, type FailureAnswer } from './outcome.js';
import { resolveInRoutes, type ResolvedScript, type ScriptRoute } from './resolve.js';
import type { CgiResponseHead } from './response-head.js';
import { parseScriptTimeout, runScript, type HeadOutcome, type ScriptRun } from './run-script.js';
import { ScriptLog } from './script-log.js';
import { describeSendTimeout, SendTimeout } from './send-timeout.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import { cgiChannels, reportHandlerRequest, type HandlerReport } from '../diagnostics.js';

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
  /**
   * Send timeout (Apache's Timeout for writes): a client that takes none of the response for this long
   * is disconnected and its script killed. "60s", "500ms" or seconds; 0 or absent: none (gatehouse
   * serve applies its own to every connection). Once a request of a connection came here, it holds for
   * the rest of that connection.
   */
  sendTimeout?: string | number;
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
  /**
   * A timing line per script run (arrival, wait for a slot, spawn, head, exit,
   * in ms) goes here when set; serve sets it at --log-level debug.
   */
  traceLog?: (line: string) => void;
  /** How scripts are started (default: posix_spawn where the system-call binding loads, else child_process.spawn; the cgid daemon plugs in here). */
  spawner?: ScriptSpawner;
  /** LimitInternalRecursion for local redirects. */
  maxLocalRedirects?: number;
  /**
   * Give a query without '=' to the script as command-line arguments (RFC 3875
   * 4.4, Apache's behaviour). Off by default: an interpreter run as the script
   * takes them as its own options (CVE-2012-1823: php-cgi `?-s` printed the
   * source, `?-d+allow_url_include%3d1` changed its settings).
   */
  queryArguments?: boolean;
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

export function cgi(options: CgiOptions): CgiHandler {
  const settings = validate(options);
  const handler = ((req: IncomingMessage, res: ServerResponse, next?: NextFunction) => {
    new CgiExchange(settings, req, res, next).start();
  }) as CgiHandler;
  Object.defineProperty(handler, 'limiter', { value: settings.limiter });
  Object.defineProperty(handler, 'running', { value: () => settings.runs.size });
  Object.defineProperty(handler, 'shutdown', { value: (graceMs = 0) => shutdown(settings, graceMs) });
  return handler;
}

/**
 * New requests get 503 from now on; running scripts get until `graceMs`, then
 * they are aborted: their process groups are stopped, and the responses they
 * were giving are cut (the connection closed) or, before any of it went
 * out, answered 503. Resolves when every script has been reaped.
 */
async function shutdown(settings: Settings, graceMs: number): Promise<void> {
  settings.stopping = true;
  const all = () => Promise.all([...settings.runs].map((run) => run.finished));
  if (graceMs > 0 && settings.runs.size > 0) {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all(), new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
  }
  for (const run of settings.runs) run.abort();
  await all();
}

interface Settings {
  routes: ScriptRoute[];
  documentRoot: string;
  policy: EnvironmentPolicy;
  body: BodyPolicy;
  timeoutMs: number;
  killGraceMs: number | undefined;
  exitWaitMs: number | undefined;
  limiter: ScriptLimiter;
  /** Every script running, for shutdown. */
  runs: Set<ScriptRun>;
  stopping: boolean;
  scriptLog: ScriptLog | undefined;
  errorLog: (line: string) => void;
  traceLog: ((line: string) => void) | undefined;
  spawner: ScriptSpawner | undefined;
  maxLocalRedirects: number;
  queryArguments: boolean;
  sendTimeout: SendTimeout | null;
}

/** Every option checked once, with a message that says what to write instead. */
function validate(options: CgiOptions): Settings {
  if (!options.documentRoot || !path.isAbsolute(options.documentRoot)) {
    throw new InvalidArgumentError(`cgi(): documentRoot must be an absolute directory path, got ${JSON.stringify(options.documentRoot)}`);
  }
  const routes: ScriptRoute[] = [];
  for (const alias of options.scriptAliases ?? []) {
    if (!alias.urlPrefix.startsWith('/'))
      throw new InvalidArgumentError(`cgi(): scriptAliases urlPrefix must start with '/', got ${JSON.stringify(alias.urlPrefix)}`);
    if (!path.isAbsolute(alias.directory))
      throw new InvalidArgumentError(`cgi(): scriptAliases directory must be absolute, got ${JSON.stringify(alias.directory)}`);
    routes.push({ kind: 'script-alias', urlPrefix: alias.urlPrefix, directory: alias.directory });
  }
  const extensions = options.extensions ?? [];
  for (const extension of extensions) {
    if (!/^\.[A-Za-z0-9_-]+$/.test(extension))
      throw new InvalidArgumentError(`cgi(): extensions are written with their dot, like ".cgi"; got ${JSON.stringify(extension)}`);
  }
  if (extensions.length > 0) routes.push({ kind: 'extensions', urlPrefix: '/', documentRoot: options.documentRoot, extensions });
  if (routes.length === 0)
    throw new InvalidArgumentError(
      'cgi(): nothing to run: give scriptAliases (e.g. [{ urlPrefix: "/cgi-bin/", directory: "/srv/cgi-bin" }]) or extensions (e.g. [".cgi"])',
    );
  const timeoutMs = parseScriptTimeout(options.scriptTimeout ?? `${CGI_SCRIPT_TIMEOUT_MS}ms`);
  if (timeoutMs === null)
    throw new InvalidArgumentError(
      `cgi(): scriptTimeout must look like "20", "20s" or "500ms", got ${JSON.stringify(options.scriptTimeout)}`,
    );
  const errorLog = options.errorLog ?? ((line: string) => process.stderr.write(`[${new Date().toISOString()}] [cgi:error] ${line}\n`));
  const sendTimeoutMs = options.sendTimeout === undefined || options.sendTimeout === 0 ? 0 : parseScriptTimeout(options.sendTimeout);
  if (sendTimeoutMs === null)
    throw new InvalidArgumentError(
      `cgi(): sendTimeout must look like "60", "60s" or "500ms" (0: none), got ${JSON.stringify(options.sendTimeout)}`,
    );
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
    body: {
      maxBytes: options.maxRequestBody ?? CGI_MAX_REQUEST_BODY_BYTES,
      memorySpoolBytes: options.bodyMemorySpool ?? CGI_BODY_MEMORY_SPOOL_BYTES,
      spoolDirectory: options.spoolDirectory,
      keepHeadBytes: scriptLog?.bodyBytes ?? 0,
    },
    timeoutMs,
    killGraceMs: options.killGraceMs,
    exitWaitMs: options.exitWaitMs,
    limiter: new ScriptLimiter(options.maxConcurrentScripts, options.maxQueuedScripts),
    runs: new Set(),
    stopping: false,
    scriptLog,
    errorLog,
    traceLog: options.traceLog,
    spawner: options.spawner,
    maxLocalRedirects: options.maxLocalRedirects ?? CGI_MAX_LOCAL_REDIRECTS,
    queryArguments: options.queryArguments ?? CGI_QUERY_ARGUMENTS,
    sendTimeout:
      sendTimeoutMs > 0 ? new SendTimeout(sendTimeoutMs, (event) => errorLog(`cgi: ${describeSendTimeout(event, sendTimeoutMs)}`)) : null,
  };
}

/** One step of an exchange: the client's request, or a local redirect followed for it. */
interface Hop {
  /** The target this hop resolves, relative to the mount point. */
  target: string;
  method: string;
  /** 0 for the client's request; local redirects followed so far. */
  depth: number;
  redirectedFrom?: { environment: CgiEnvironment; url: string; status: number };
}

/**
 * One client request, from its arrival to its answer, across any local
 * redirects. It listens once for the client going away (whatever the number
 * of hops) and aborts the script running for it then.
 */
class CgiExchange {
  readonly #settings: Settings;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #next: NextFunction | undefined;
  /**
   * Where a framework mounted the handler, as it stripped it from req.url
   * (Express's app.use('/cgi', ...): req.url "/x.cgi", req.originalUrl
   * "/cgi/x.cgi"). Raw (still percent-encoded); "" when not mounted.
   */
  #mount = '';
  #facts: HttpRequestFacts | undefined;
  /**
   * Aborted when the client goes away: a request waiting for a script slot gives its place back. Made only
   * for a request that waits: an AbortController per request, and the DOMException its abort() makes when
   * every response closes, cost more than the rest of the handler's bookkeeping.
   */
  #gone: AbortController | null = null;
  #clientGone = false;
  /** The script running for this request now, and whether its answer is complete (then the client leaving is no news). */
  #run: ScriptRun | undefined;
  #answered = false;
  /** The body the client sent (the script log keeps its start). */
  #clientBody: RequestBody = RequestBody.NONE;
  /** diagnostics_channel events, from when the handler takes the request (not when it passes it on); null: nobody listens. */
  #report: HandlerReport | null = null;
  #taken = false;
  /** performance.now() when the exchange began (only with a trace log). */
  #arrivedAt = 0;

  constructor(settings: Settings, req: IncomingMessage, res: ServerResponse, next: NextFunction | undefined) {
    this.#settings = settings;
    this.#req = req;
    this.#res = res;
    this.#next = next;
  }

  start(): void {
    if (this.#settings.traceLog) this.#arrivedAt = performance.now();
    const reading = readHttpRequest(this.#req);
    if (reading.kind === 'refused') {
      this.#settings.errorLog(
        `cgi: refused ${this.#req.method} ${this.#req.url} from ${this.#req.socket.remoteAddress}: ${reading.reason}`,
      );
      this.#take();
      sendErrorPage(this.#res, reading.status, true);
      this.#report?.headers();
      this.#report?.error(ErrorCode.CGI_PATH_BAD_REQUEST, reading.reason);
      return;
    }
    this.#facts = reading.facts;
    const url = this.#req.url ?? '/';
    const target = splitAbsoluteForm(url)?.originForm ?? url;
    this.#mount = mountPoint(this.#req, target);
    this.#settings.sendTimeout?.watch(this.#req.socket);
    this.#res.once('close', () => this.#onClientClose());
    this.#dispatch({ target, method: this.#req.method ?? 'GET', depth: 0 }).catch((error: unknown) => {
      this.#settings.errorLog(
        `cgi: internal error handling ${this.#req.method} ${this.#req.url}: ${(error as Error)?.stack ?? String(error)}`,
      );
      sendErrorPage(this.#res, 500);
      this.#report?.headers();
      this.#report?.error(ErrorCode.INVALID_STATE, `internal error: ${(error as Error)?.message ?? String(error)}`);
    });
  }

  /** This request is the handler's to answer (a script, or a refusal): its events start. */
  #take(): void {
    if (this.#taken) return;
    this.#taken = true;
    this.#report = reportHandlerRequest(cgiChannels, 'cgi', this.#req, this.#res, this.#req.url ?? '/');
  }

  #onClientClose(): void {
    this.#clientGone = true;
    this.#gone?.abort();
    if (this.#run && !this.#answered) this.#run.abort();
  }

  async #dispatch(hop: Hop): Promise<void> {
    const { pathname, query } = splitTarget(hop.target);
    const resolution = await resolveInRoutes(pathname, this.#settings.routes);
    if (resolution.kind === 'script' || resolution.kind === 'refused') this.#take();
    if (resolution.kind === 'refused') {
      const request = `${hop.method} ${this.#mount}${hop.target} from ${this.#req.socket.remoteAddress}`;
      return this.#fail({ kind: 'refused', status: resolution.status, request, reason: resolution.reason });
    }
    if (resolution.kind === 'script') return this.#runScript(hop, resolution, query);
    // Not ours (a static file, or no route): the next handler serves it, as a GET if this is a local redirect.
    if (!this.#next) return sendErrorPage(this.#res, 404);
    if (hop.depth > 0) this.#passOn(hop.target);
    else this.#next();
  }

  /** Hands a local redirect to the next handler, as a GET of the new target. */
  #passOn(target: string): void {
    this.#req.url = target;
    this.#req.method = 'GET';
    this.#next!();
  }

  async #runScript(hop: Hop, script: ResolvedScript, query: string): Promise<void> {
    const file = script.scriptFilename;
    if (this.#settings.stopping) return this.#fail({ kind: 'stopping', script: file });
    const body = await this.#readBody(hop, file);
    if (!body) return;
    const queuedAt = this.#settings.traceLog ? performance.now() : 0;
    const depth = this.#settings.limiter.queued;
    const release = await this.#acquireSlot(file);
    const grantedAt = this.#settings.traceLog ? performance.now() : 0;
    if (!release) return void body.dispose();
    if (this.#res.destroyed || this.#req.socket.destroyed) {
      // The client left while the body was spooled or the request queued: nothing to run for.
      release();
      return void body.dispose();
    }
    if (this.#settings.stopping) {
      release();
      void body.dispose();
      return this.#fail({ kind: 'stopping', script: file });
    }
    const environment = buildEnvironment(this.#describe(hop, script, body), this.#settings.policy);
    const run = this.#start(script, query, environment, body);
    let headAt = 0;
    void run.finished.then(() => {
      this.#settings.runs.delete(run);
      release();
      void body.dispose();
      if (this.#settings.traceLog) this.#trace(run, queuedAt, depth, grantedAt, headAt);
    });
    const head = await run.head;
    headAt = performance.now();
    await this.#answer(hop, run, environment, head);
  }

  /** One timing line: where this request's time went, from arrival to the script's exit (ms, relative to arrival). */
  #trace(run: ScriptRun, queuedAt: number, depth: number, grantedAt: number, headAt: number): void {
    const at = (time: number) => (time > 0 ? (time - this.#arrivedAt).toFixed(2) : '-');
    this.#settings.traceLog!(
      `cgi timing: ${run.file} pid ${run.pid ?? '-'}: queued ${at(queuedAt)} behind ${depth}, slot ${at(grantedAt)}, spawned ${at(run.spawnedAt)}, head ${at(headAt)}, exited ${at(run.exitedAt)}, finished ${at(performance.now())} ms after arrival`,
    );
  }

  /** The client's body, as the body policy reads it; none on a local redirect (it was the first script's). */
  async #readBody(hop: Hop, file: string): Promise<RequestBody | null> {
    if (hop.depth > 0) return RequestBody.NONE;
    const reading = await readRequestBody(this.#req, this.#res, this.#settings.body);
    switch (reading.kind) {
      case 'body':
        this.#clientBody = reading.body;
        return reading.body;
      case 'too-large':
        this.#fail({ kind: 'body-too-large', script: file, limit: reading.limit, declared: reading.declared, detail: reading.detail });
        return null;
      case 'unreadable':
        this.#fail({ kind: 'body-unreadable', script: file, error: reading.error });
        return null;
    }
  }

  /** A slot among the concurrent scripts (waiting in the queue if need be), or null: 503 when the queue is full too. */
  async #acquireSlot(file: string): Promise<Release | null> {
    const limiter = this.#settings.limiter;
    let release = limiter.tryAcquire();
    if (!release && !this.#clientGone) {
      this.#gone ??= new AbortController();
      release = await limiter.acquire(this.#gone.signal);
    }
    if (release || this.#clientGone) return release;
    this.#fail({ kind: 'queue-full', script: file, running: limiter.maxRunning, queued: limiter.maxQueued });
    return null;
  }

  /** The request as the environment builder sees it: the client's, or the GET a local redirect makes of it. */
  #describe(hop: Hop, script: ResolvedScript, body: RequestBody): CgiRequestDescription {
    const facts = hop.depth === 0 ? this.#facts! : withoutBodyHeaders(this.#facts!);
    const mount = decodeMount(this.#mount);
    return describeRequest(facts, {
      method: hop.method,
      target: this.#mount + hop.target,
      scriptName: mount + script.scriptName,
      scriptFilename: script.scriptFilename,
      pathInfo: script.pathInfo,
      documentRoot: this.#settings.documentRoot,
      contextPrefix: script.contextPrefix === '' ? '' : mount + script.contextPrefix,
      contextDocumentRoot: script.contextDocumentRoot,
      // Absent stays undefined (the builder reads it so): no conditional spreads on the per-request path (describeRequest).
      contentLength: body.contentLength,
      redirectedFrom: hop.redirectedFrom,
    });
  }

  #start(script: ResolvedScript, query: string, environment: CgiEnvironment, body: RequestBody): ScriptRun {
    const settings = this.#settings;
    const file = script.scriptFilename;
    const run = runScript({
      file,
      // RFC 3875 4.4 search words only when asked for: they are an interpreter's options too (CVE-2012-1823).
      argv: settings.queryArguments ? [file, ...searchWords(query, CGI_MAX_ARGV_WORDS)] : [file],
      cwd: path.dirname(file),
      env: environmentRecord(environment),
      stdin: body.stream,
      timeoutMs: settings.timeoutMs,
      // Unset ones stay undefined and runScript takes its defaults (??): no spreads per request.
      killGraceMs: settings.killGraceMs,
      exitWaitMs: settings.exitWaitMs,
      nph: script.nph,
      onStderrLine: (line) => settings.errorLog(`cgi: ${file}: ${line}`),
      spawner: settings.spawner,
    });
    settings.runs.add(run);
    this.#run = run;
    this.#answered = false;
    return run;
  }

  /** What the script's head (or its absence) becomes for the client. */
  async #answer(hop: Hop, run: ScriptRun, environment: CgiEnvironment, outcome: HeadOutcome): Promise<void> {
    const file = run.file;
    switch (outcome.kind) {
      case 'aborted':
        // The client left (nothing to say), or the server is stopping and the script had not answered yet.
        if (this.#settings.stopping && !this.#res.destroyed) this.#fail({ kind: 'stopping', script: file });
        return;
      case 'spawn-failed':
        return this.#fail({ kind: 'spawn-failed', error: outcome.error }, run);
      case 'timeout':
        return this.#fail({ kind: 'timeout', script: file, timeoutMs: this.#settings.timeoutMs }, run);
      case 'malformed':
        // A script killed because the cgid daemon died under it did not write a bad head: the daemon is to blame.
        if (run.lost) return this.#fail({ kind: 'daemon-lost', script: file }, run);
        return this.#fail({ kind: 'malformed-head', script: file, error: outcome.error }, run);
      case 'raw':
        return this.#sendRaw(run);
      case 'head':
        break;
    }
    const head = outcome.head;
    if (head.kind === 'local-redirect') return this.#followRedirect(hop, run, head.location!, environment);
    if (head.status >= 500) this.#recordInScriptLog(run, head.status, `the script answered ${head.status}`, head.headers);
    writeCgiHead(this.#res, head);
    this.#report?.headers();
    if (head.kind === 'client-redirect') {
      // As Apache does: the script's body is replaced by a short page pointing at the new location.
      this.#discardOutput(run);
      endWithRedirectPage(this.#res, head.location!, hop.method);
      return;
    }
    if (hop.method === 'HEAD') {
      // HEAD runs the script (its side effects are the script's business) and sends no body.
      this.#discardOutput(run);
      this.#res.end();
      return;
    }
    this.#sendBody(run, head);
  }

  /** The error page of a failure, its log line, and its script log entry. */
  #fail(failure: Failure, run?: ScriptRun): void {
    const answer = answerFor(failure);
    if (answer.logLine !== null) this.#settings.errorLog(`cgi: ${answer.logLine}`);
    if (run && answer.scriptLogError !== null) this.#recordInScriptLog(run, answer.status, answer.scriptLogError);
    this.#answered = true;
    sendAnswer(this.#res, answer);
    this.#report?.headers();
    this.#report?.error(answer.code, answer.logLine ?? `answered ${answer.status}`);
  }

  /** RFC 3875 6.2.2: the server discards the script's body and fetches the new location itself, as a GET. */
  async #followRedirect(previous: Hop, run: ScriptRun, location: string, environment: CgiEnvironment): Promise<void> {
    this.#discardOutput(run);
    if (previous.depth + 1 > this.#settings.maxLocalRedirects)
      return this.#fail({ kind: 'redirect-loop', script: run.file, limit: this.#settings.maxLocalRedirects, location });
    const { pathname } = splitTarget(this.#mount + previous.target);
    let url = pathname;
    try {
      url = decodeURIComponent(pathname);
    } catch {
      /* REDIRECT_URL keeps the raw path when it cannot be decoded */
    }
    // The Location is a path of the whole site; under a mount point only paths below it are this handler's.
    if (this.#mount !== '' && !location.startsWith(`${this.#mount}/`)) {
      this.#settings.errorLog(`cgi: local redirect to ${location} is outside the mount point ${this.#mount}: passed to the next handler`);
      if (this.#next) this.#passOn(location);
      else sendErrorPage(this.#res, 404);
      return;
    }
    await this.#dispatch({
      target: location.slice(this.#mount.length),
      method: 'GET',
      depth: previous.depth + 1,
      redirectedFrom: { environment, url, status: 200 },
    });
  }

  /** The script's output is not sent (a redirect, HEAD): read and dropped, and this answer is complete. */
  #discardOutput(run: ScriptRun): void {
    run.body.resume();
    this.#answered = true;
  }

  /**
   * Streams the script's body to the client (Content-Length held to, see
   * pipeCgiBody). When it fails (a timeout after the head, the script
   * aborted at shutdown, a short body) the connection is closed: a response
   * cut short must not look complete, nor leave the client waiting.
   */
  #sendBody(run: ScriptRun, head: CgiResponseHead): void {
    const file = run.file;
    pipeCgiBody(
      run.body,
      this.#res,
      head,
      (error) => {
        if (!error) {
          this.#answered = true;
          return;
        }
        const code = (error as { code?: string }).code;
        if (code === ErrorCode.CGI_SCRIPT_TIMEOUT) {
          this.#settings.errorLog(
            `cgi: ${file}: no output for the script timeout after the body started: script killed, response cut short`,
          );
          this.#report?.error(ErrorCode.CGI_SCRIPT_TIMEOUT, `${file}: no output for the script timeout after the body started`);
        } else if (code !== ErrorCode.REQUEST_ABORTED && code !== ErrorCode.CLIENT_CLOSED) this.#settings.errorLog(`cgi: ${error.message}`);
        this.#res.destroy();
      },
      `script ${file}`,
    );
  }

  /** nph-: the script's output is the response, status line and all; the connection closes after it. */
  #sendRaw(run: ScriptRun): void {
    const socket = this.#req.socket;
    this.#res.shouldKeepAlive = false;
    // The status line is the script's own: the head event's statusCode is res's default.
    this.#report?.headers();
    pipeline(run.body, socket, (error) => {
      if (!error) {
        this.#answered = true;
        this.#report?.ended();
      }
      socket.destroySoon();
    });
  }

  /** A script log entry, written once the script ended so its whole stderr is in it; the request is not held up by it. */
  #recordInScriptLog(run: ScriptRun, status: number, error: string, responseHeaders: ReadonlyArray<readonly [string, string]> = []): void {
    const log = this.#settings.scriptLog;
    if (!log) return;
    const req = this.#req;
    const body = this.#clientBody;
    void run.finished.then(() =>
      log.record({
        method: req.method ?? 'GET',
        target: this.#mount + (req.url ?? '/'),
        protocol: `HTTP/${req.httpVersion}`,
        status,
        scriptPath: run.file,
        requestHeaders: pairRawHeaders(req.rawHeaders),
        requestBody: body.head,
        responseHeaders,
        error,
        stdout: run.capturedStdout,
        stderr: run.capturedStderr,
      }),
    );
  }
}

/** An error page from the outcome table: its extra headers, then the page. */
function sendAnswer(res: ServerResponse, answer: FailureAnswer): void {
  if (!res.headersSent) for (const [name, value] of answer.headers) res.setHeader(name, value);
  sendErrorPage(res, answer.status, answer.closeConnection);
}

/** The prefix a framework stripped from req.url (Express's req.originalUrl keeps it), or "". */
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

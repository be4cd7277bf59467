/**
 * cgid's FastCGI face: a FastCGI responder that runs CGI scripts, so nginx
 * runs them through gatehouse the way it does through fcgiwrap, with the
 * same nginx configuration (SCRIPT_FILENAME from the params, else
 * DOCUMENT_ROOT + SCRIPT_NAME). Unlike fcgiwrap the request body (FCGI_STDIN)
 * is streamed to the script while its output is read, a script that stops
 * writing is killed after the script timeout, an aborted request kills the
 * script's process group, and stderr goes out as FCGI_STDERR.
 *
 * The protocol side (records, GET_VALUES, UNKNOWN_TYPE, keep-conn,
 * multiplexing, aborts, malformed records) is the worker library's; the
 * script side is the CGI core's runScript with the posix_spawn spawner; what
 * a failure is answered with comes from the CGI core's outcome table, as a
 * bare page like fcgiwrap's (the details go to the log, never to the client).
 */
import { statSync } from 'node:fs';
import { STATUS_CODES } from 'node:http';
import path from 'node:path';
import { Transform } from 'node:stream';
import { ErrorCode } from '../errors.js';
import { runScript, type ScriptRun } from '../cgi/run-script.js';
import { tapBody, type BodyTap } from '../cgi/body-tap.js';
import { NOSNIFF, writeCgiHead } from '../cgi/http-response.js';
import { answerFor, type Failure } from '../cgi/outcome.js';
import type { CgiResponseHead } from '../cgi/response-head.js';
import type { ScriptLog } from '../cgi/script-log.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import { CGID_FASTCGI_HOLD_BYTES, CGI_KILL_GRACE_MS, CGI_MAX_ARGV_WORDS, CGI_QUERY_ARGUMENTS, CGI_SCRIPT_TIMEOUT_MS } from '../limits.js';
import { searchWords } from '../cgi/environment.js';
import { createServer, type FastCGIServer, type WorkerServerOptions } from '../fastcgi/worker/server.js';
import type { FastCGIRequest } from '../fastcgi/worker/request.js';
import type { FastCGIResponse } from '../fastcgi/worker/response.js';
import type { NameValuePair } from '../fastcgi/name-value.js';
import type { EnvironmentValue } from '../spawn/order.js';

export interface FastCGIFaceOptions {
  spawner: ScriptSpawner;
  timeoutMs?: number;
  killGraceMs?: number;
  scriptLog?: ScriptLog;
  /** One line per call: refusals, timeouts, script stderr. */
  log: (line: string) => void;
  server?: WorkerServerOptions;
  /** A QUERY_STRING without '=' becomes the script's arguments (RFC 3875 4.4, Apache's way); off by default (CVE-2012-1823). */
  queryArguments?: boolean;
}

/** PATH for scripts when the web server sends none (nginx's fastcgi_params does not). */
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';

export function createFastCGIFace(options: FastCGIFaceOptions): FastCGIServer {
  const timeoutMs = options.timeoutMs ?? CGI_SCRIPT_TIMEOUT_MS;
  return createServer((req, res) => new FaceRequest(options, timeoutMs, req, res).run(), { handleSignals: false, ...options.server });
}

/** fcgiwrap's rule: SCRIPT_FILENAME, else DOCUMENT_ROOT + SCRIPT_NAME. */
export function scriptFilenameFromParams(params: Readonly<Record<string, string>>): string | null {
  if (params.SCRIPT_FILENAME) return params.SCRIPT_FILENAME;
  if (params.DOCUMENT_ROOT !== undefined && params.SCRIPT_NAME) return path.join(params.DOCUMENT_ROOT, params.SCRIPT_NAME);
  return null;
}

/** One FastCGI request: the script it names, its run, and the answer streamed back as STDOUT. */
class FaceRequest {
  readonly #options: FastCGIFaceOptions;
  readonly #timeoutMs: number;
  readonly #req: FastCGIRequest;
  readonly #res: FastCGIResponse;
  /** RFC 3875 4.2: a script reads CONTENT_LENGTH bytes; with none (nginx sends it empty without a body) it gets /dev/null. */
  readonly #hasBody: boolean;
  #tap: BodyTap | null = null;
  /** The answer is complete: the client (web server) closing is no reason to abort the script any more. */
  #finished = false;

  constructor(options: FastCGIFaceOptions, timeoutMs: number, req: FastCGIRequest, res: FastCGIResponse) {
    this.#options = options;
    this.#timeoutMs = timeoutMs;
    this.#req = req;
    this.#res = res;
    const length = req.params.CONTENT_LENGTH;
    this.#hasBody = length !== undefined && length !== '' && length !== '0';
  }

  async run(): Promise<void> {
    const file = this.#findScript();
    if (file === null) return;
    const run = this.#start(file);
    const outcome = await run.head;
    switch (outcome.kind) {
      case 'aborted':
        return;
      case 'spawn-failed':
        return this.#fail({ kind: 'spawn-failed', error: outcome.error }, run);
      case 'timeout':
        return this.#fail({ kind: 'timeout', script: file, timeoutMs: this.#timeoutMs }, run);
      case 'malformed':
        if (run.lost) return this.#fail({ kind: 'daemon-lost', script: file }, run);
        return this.#fail({ kind: 'malformed-head', script: file, error: outcome.error }, run);
      case 'raw':
        // nph- has no meaning behind a web server that writes the status line itself: nothing is sent.
        return;
      case 'head':
        return this.#respond(run, outcome.head);
    }
  }

  /** The script the params name, checked to be an executable file; null when refused (answered here). */
  #findScript(): string | null {
    const file = scriptFilenameFromParams(this.#req.params);
    const refuse = (status: 403 | 404, reason: string) => {
      this.#fail({ kind: 'refused', status, request: this.#describe(), reason });
      return null;
    };
    if (!file || !path.isAbsolute(file))
      return refuse(
        403,
        'no script: the request has neither SCRIPT_FILENAME nor DOCUMENT_ROOT and SCRIPT_NAME (see fastcgi_param in nginx)',
      );
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(file);
    } catch {
      return refuse(404, `script ${file} not found`);
    }
    if (!stat.isFile()) return refuse(403, `${file} is not a file`);
    if ((stat.mode & 0o111) === 0) return refuse(403, `${file} is not executable`);
    return file;
  }

  #start(file: string): ScriptRun {
    const options = this.#options;
    const req = this.#req;
    if (this.#hasBody && options.scriptLog) this.#tap = tapBody(req, options.scriptLog.bodyBytes);
    const run = runScript({
      file,
      argv:
        (options.queryArguments ?? CGI_QUERY_ARGUMENTS)
          ? [file, ...searchWords(req.params.QUERY_STRING ?? '', CGI_MAX_ARGV_WORDS)]
          : [file],
      cwd: path.dirname(file),
      env: scriptEnvironment(req.rawParams),
      stdin: this.#hasBody ? (this.#tap ?? req) : null,
      timeoutMs: this.#timeoutMs,
      killGraceMs: options.killGraceMs ?? CGI_KILL_GRACE_MS,
      spawner: options.spawner,
      onStderrLine: (line) => this.#res.writeStderr(`${line}\n`),
    });
    this.#res.once('close', () => {
      if (!this.#finished) run.abort();
    });
    void run.finished.then((result) => {
      if (result.code !== null) this.#res.appStatus = result.code;
      // Whatever of the body the script did not read is drained, so the connection can carry the next request.
      req.resume();
    });
    return run;
  }

  /** "GET /cgi-bin/x.sh", for log lines. */
  #describe(): string {
    return `${this.#req.method} ${this.#req.params.REQUEST_URI ?? this.#req.url}`;
  }

  /** A bare status page (as fcgiwrap answers), its log line, and its script log entry. */
  #fail(failure: Failure, run?: ScriptRun): void {
    const answer = answerFor(failure);
    if (answer.logLine !== null)
      this.#options.log(failure.kind === 'refused' ? `cgid: ${answer.logLine}` : `cgid: ${this.#describe()}: ${answer.logLine}`);
    if (run && answer.scriptLogError !== null) this.#recordInScriptLog(run, answer.status, answer.scriptLogError);
    this.#finished = true;
    const res = this.#res;
    if (res.headersSent || res.destroyed) return;
    res.statusCode = answer.status;
    for (const [name, value] of answer.headers) res.setHeader(name, value);
    res.setHeader('Content-Type', 'text/plain');
    res.setHeader(...NOSNIFF);
    res.end(`${answer.status} ${STATUS_CODES[answer.status] ?? 'Error'}\n`);
  }

  #respond(run: ScriptRun, head: CgiResponseHead): void {
    const res = this.#res;
    if (head.status >= 500) this.#recordInScriptLog(run, head.status, `the script answered ${head.status}`, head.headers);
    writeCgiHead(res, head);
    // A local redirect (Location: /path) has no place to be followed here: nginx gets it as a 302, as it would from fcgiwrap.
    if (head.kind === 'local-redirect' && head.location) {
      res.statusCode = 302;
      res.setHeader('Location', head.location);
    }
    // nginx stops sending the request body once it has passed a response header on to its client, so output is
    // held back (read, not paused: the script never blocks on it) until the whole body arrived or the hold is full.
    const hold = new HoldOutput(CGID_FASTCGI_HOLD_BYTES);
    if (!this.#hasBody || this.#req.complete) hold.release();
    else this.#req.once('end', () => hold.release());
    run.body.pipe(hold).pipe(res, { end: false });
    // END_REQUEST goes out once the script is reaped: its last stderr lines are sent, and appStatus is its exit status.
    hold.once('end', () => void run.finished.then(() => this.#end()));
    run.body.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === ErrorCode.CGI_SCRIPT_TIMEOUT)
        this.#options.log(`cgid: ${run.file}: no output for ${this.#timeoutMs} ms after the body started: killed, response cut short`);
      // The response ends where it is; appStatus 1 tells the web server it is incomplete.
      hold.release();
      void run.finished.then(() => {
        res.appStatus = 1;
        this.#end();
      });
    });
  }

  #end(): void {
    this.#finished = true;
    if (!this.#res.writableEnded && !this.#res.destroyed) this.#res.end();
  }

  #recordInScriptLog(run: ScriptRun, status: number, error: string, responseHeaders: ReadonlyArray<readonly [string, string]> = []): void {
    const log = this.#options.scriptLog;
    if (!log) return;
    const req = this.#req;
    const tap = this.#tap;
    void run.finished.then(() =>
      log.record({
        method: req.method,
        target: req.params.REQUEST_URI ?? req.url,
        protocol: req.params.SERVER_PROTOCOL ?? `HTTP/${req.httpVersion}`,
        status,
        scriptPath: run.file,
        requestHeaders: Object.entries(req.headers),
        requestBody: tap?.head ?? Buffer.alloc(0),
        responseHeaders,
        error,
        stdout: run.capturedStdout,
        stderr: run.capturedStderr,
      }),
    );
  }
}

const utf8Name = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The script's environment: the PARAMS as the web server sent them, values
 * byte for byte (as fcgiwrap passes them; req.params is a text view). A pair
 * execve cannot carry is left out: an empty name, a name with '=' or a NUL,
 * a value with a NUL (C would cut it there), a name that is not UTF-8 (names
 * are strings here; nginx sends only ASCII names).
 */
export function scriptEnvironment(pairs: readonly NameValuePair[]): Record<string, EnvironmentValue> {
  const env: Record<string, EnvironmentValue> = Object.create(null);
  for (const [nameBytes, value] of pairs) {
    if (nameBytes.length === 0 || nameBytes.includes(0x3d) || nameBytes.includes(0) || value.includes(0)) continue;
    let name: string;
    try {
      name = utf8Name.decode(nameBytes);
    } catch {
      continue;
    }
    env[name] = value;
  }
  // PATH for scripts when the web server sends none (nginx's fastcgi_params does not).
  if (env.PATH === undefined) env.PATH = DEFAULT_PATH;
  return env;
}

/**
 * Keeps output until release() (or until `limit` bytes are held), then passes
 * everything through. While holding it accepts every chunk at once, so the
 * script's stdout keeps flowing.
 */
class HoldOutput extends Transform {
  readonly #limit: number;
  #held: Buffer[] = [];
  #heldBytes = 0;
  #released = false;
  constructor(limit: number) {
    super();
    this.#limit = limit;
  }
  release(): void {
    if (this.#released) return;
    this.#released = true;
    for (const chunk of this.#held) this.push(chunk);
    this.#held = [];
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null, data?: Buffer) => void): void {
    if (this.#released) return callback(null, chunk);
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#heldBytes >= this.#limit) this.release();
    callback();
  }
  override _flush(callback: () => void): void {
    this.release();
    callback();
  }
}

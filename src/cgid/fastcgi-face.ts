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
 * script side is the CGI core's runScript with the posix_spawn spawner.
 */
import { statSync } from 'node:fs';
import path from 'node:path';
import { Transform } from 'node:stream';
import { ErrorCode } from '../errors.js';
import { runScript } from '../cgi/run-script.js';
import { BodyTap } from '../cgi/body-tap.js';
import { writeCgiHead } from '../cgi/http-response.js';
import type { ScriptLog } from '../cgi/script-log.js';
import type { ScriptSpawner } from '../spawn/spawner.js';
import { CGID_FASTCGI_HOLD_BYTES, CGI_KILL_GRACE_MS, CGI_SCRIPT_TIMEOUT_MS } from '../limits.js';
import { createServer, type FastCGIServer, type WorkerServerOptions } from '../fastcgi/worker/server.js';
import type { FastCGIRequest } from '../fastcgi/worker/request.js';
import type { FastCGIResponse } from '../fastcgi/worker/response.js';
import type { NameValuePair } from '../fastcgi/name-value.js';
import type { EnvironmentValue } from '../cgi/environment.js';

export interface FastCGIFaceOptions {
  spawner: ScriptSpawner;
  timeoutMs?: number;
  killGraceMs?: number;
  scriptLog?: ScriptLog;
  /** One line per call: refusals, timeouts, script stderr. */
  log: (line: string) => void;
  server?: WorkerServerOptions;
}

/** PATH for scripts when the web server sends none (nginx's fastcgi_params does not). */
const DEFAULT_PATH = '/usr/local/bin:/usr/bin:/bin';

export function createFastCGIFace(options: FastCGIFaceOptions): FastCGIServer {
  const timeoutMs = options.timeoutMs ?? CGI_SCRIPT_TIMEOUT_MS;
  return createServer((req, res) => runRequest(req, res, options, timeoutMs), { handleSignals: false, ...options.server });
}

/** fcgiwrap's rule: SCRIPT_FILENAME, else DOCUMENT_ROOT + SCRIPT_NAME. */
export function scriptFilenameFromParams(params: Readonly<Record<string, string>>): string | null {
  if (params.SCRIPT_FILENAME) return params.SCRIPT_FILENAME;
  if (params.DOCUMENT_ROOT !== undefined && params.SCRIPT_NAME) return path.join(params.DOCUMENT_ROOT, params.SCRIPT_NAME);
  return null;
}

async function runRequest(req: FastCGIRequest, res: FastCGIResponse, options: FastCGIFaceOptions, timeoutMs: number): Promise<void> {
  const params = req.params;
  const file = scriptFilenameFromParams(params);
  const fail = (status: number, why: string) => {
    options.log(`cgid: ${req.method} ${params.REQUEST_URI ?? req.url}: ${why}`);
    if (res.headersSent || res.destroyed) return;
    res.statusCode = status;
    res.setHeader('Content-Type', 'text/plain');
    res.end(`${status} ${why}\n`);
  };
  if (!file || !path.isAbsolute(file))
    return fail(403, 'no script: the request has neither SCRIPT_FILENAME nor DOCUMENT_ROOT and SCRIPT_NAME (see fastcgi_param in nginx)');
  let stat;
  try {
    stat = statSync(file);
  } catch {
    return fail(404, `script ${file} not found`);
  }
  if (!stat.isFile()) return fail(403, `${file} is not a file`);
  if ((stat.mode & 0o111) === 0) return fail(403, `${file} is not executable`);

  const env = scriptEnvironment(req.rawParams);
  if (env.PATH === undefined) env.PATH = DEFAULT_PATH;
  // RFC 3875 4.2: a script reads CONTENT_LENGTH bytes; with none (nginx sends it empty for a request without a
  // body) the script gets /dev/null, and whatever FCGI_STDIN brings is drained once the script is done.
  const hasBody = params.CONTENT_LENGTH !== undefined && params.CONTENT_LENGTH !== '' && params.CONTENT_LENGTH !== '0';
  const tap = hasBody && options.scriptLog ? new BodyTap(options.scriptLog.bodyBytes) : null;
  if (tap) req.pipe(tap);
  const run = runScript({
    file,
    argv: [file],
    cwd: path.dirname(file),
    env,
    stdin: hasBody ? (tap ?? req) : null,
    timeoutMs,
    killGraceMs: options.killGraceMs ?? CGI_KILL_GRACE_MS,
    spawner: options.spawner,
    onStderrLine: (line) => res.writeStderr(`${line}\n`),
  });
  let finished = false;
  res.once('close', () => {
    if (!finished) run.abort();
  });
  const logFailure = (status: number, error: string, responseHeaders: ReadonlyArray<readonly [string, string]> = []) => {
    const log = options.scriptLog;
    if (!log) return;
    void run.finished.then(() =>
      log.record({
        method: req.method,
        target: params.REQUEST_URI ?? req.url,
        protocol: params.SERVER_PROTOCOL ?? `HTTP/${req.httpVersion}`,
        status,
        scriptPath: file,
        requestHeaders: Object.entries(req.headers),
        requestBody: tap?.head ?? Buffer.alloc(0),
        responseHeaders,
        error,
        stdout: run.capturedStdout,
        stderr: run.capturedStderr,
      }),
    );
  };
  void run.finished.then((result) => {
    if (result.code !== null) res.appStatus = result.code;
  });

  const outcome = await run.head;
  switch (outcome.kind) {
    case 'aborted':
      return;
    case 'spawn-failed': {
      const status =
        outcome.error.errno === 'EACCES' || outcome.error.errno === 'EPERM' ? 403 : outcome.error.errno === 'ENOENT' ? 404 : 500;
      logFailure(status, outcome.error.message);
      finished = true;
      return fail(status, outcome.error.message);
    }
    case 'timeout':
      logFailure(504, `timeout: no output for ${timeoutMs} ms`);
      finished = true;
      return fail(504, `script ${file} wrote no output for ${timeoutMs} ms: killed`);
    case 'malformed': {
      const where = outcome.error.line !== undefined ? `: Bad header: ${outcome.error.line}` : '';
      logFailure(500, `malformed header from script${where} (${outcome.error.message})`);
      finished = true;
      return fail(500, `malformed header from script ${file}: ${outcome.error.message}${where}`);
    }
    case 'raw':
    case 'head':
      break;
  }
  if (outcome.kind !== 'head') return;
  const head = outcome.head;
  if (head.status >= 500) logFailure(head.status, `the script answered ${head.status}`, head.headers);
  writeCgiHead(res, head);
  // A local redirect (Location: /path) has no place to be followed here: nginx gets it as a 302, as it would from fcgiwrap.
  if (head.kind === 'local-redirect' && head.location) {
    res.statusCode = 302;
    res.setHeader('Location', head.location);
  }
  // nginx stops sending the request body once it has passed a response header on to its client, so output is
  // held back (read, not paused: the script never blocks on it) until the whole body arrived or the hold is full.
  const hold = new HoldOutput(CGID_FASTCGI_HOLD_BYTES);
  if (!hasBody || req.complete) hold.release();
  else req.once('end', () => hold.release());
  run.body.pipe(hold).pipe(res, { end: false });
  const endAfterExit = () => {
    // END_REQUEST goes out once the script is reaped: its last stderr lines are sent, and appStatus is its exit status.
    void run.finished.then(() => {
      finished = true;
      if (!res.writableEnded && !res.destroyed) res.end();
    });
  };
  hold.once('end', endAfterExit);
  run.body.once('error', (error: NodeJS.ErrnoException) => {
    if (error.code === ErrorCode.CGI_SCRIPT_TIMEOUT)
      options.log(`cgid: ${file}: no output for ${timeoutMs} ms after the body started: killed, response cut short`);
    // The response ends where it is; appStatus 1 tells the web server it is incomplete.
    hold.release();
    void run.finished.then(() => {
      res.appStatus = 1;
      finished = true;
      if (!res.writableEnded && !res.destroyed) res.end();
    });
  });
  void run.finished.then(() => req.resume());
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

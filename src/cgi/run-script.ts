/**
 * Running one CGI script: start it (through a ScriptSpawner: its own process
 * group, no shell), feed the request body to its stdin WHILE reading its
 * stdout and stderr (no deadlock whatever the sizes), parse its header block,
 * hand the body on as a Readable with backpressure (a slow consumer pauses the
 * script's stdout), and make sure it ends: killed after `timeoutMs` without
 * output, terminated when the client goes away, terminated when it lingers
 * after closing stdout, always reaped.
 *
 * Used by the node:http handler and, unchanged, by the cgid daemon and its
 * FastCGI face; none of it knows about HTTP.
 */
import { finished, Readable, type Writable } from 'node:stream';
import { ErrorCode, GatehouseError } from '../errors.js';
import {
  CGI_EXIT_WAIT_MS,
  CGI_KILL_GRACE_MS,
  CGI_OUTPUT_HIGH_WATER_MARK,
  CGI_SCRIPT_LOG_CAPTURE_BYTES,
  CGI_SCRIPT_TIMEOUT_MS,
  CGI_STDERR_LINE_MAX,
  CGI_STDERR_LOG_MAX_BYTES,
} from '../limits.js';
import { ResponseHeadParser, type CgiHeadError, type CgiResponseHead, type HeadLimits } from './response-head.js';
import { DefaultSpawner } from '../spawn/default.js';
import type { EnvironmentValue } from '../spawn/order.js';
import { SpawnError, type ScriptExit, type ScriptSpawner, type SpawnedScript } from '../spawn/spawner.js';
import { parseDuration } from '../options/duration.js';

export interface RunScriptOptions {
  file: string;
  /** argv[0] first (the script's path), then the search words (environment.ts searchWords). */
  argv: readonly string[];
  cwd: string;
  /** A string is text (its UTF-8 bytes), a Buffer exact bytes (see environment.ts). */
  env: Readonly<Record<string, EnvironmentValue>>;
  /** The request body: a stream (piped with backpressure), bytes, or nothing (stdin closed at once). */
  stdin?: Readable | Buffer | null;
  /** No stdout for this long (while the consumer is not holding it back) kills the script's group. */
  timeoutMs?: number;
  /** SIGTERM -> SIGKILL grace when the client goes away. */
  killGraceMs?: number;
  /** How long a script may run on after closing stdout before its group is terminated. */
  exitWaitMs?: number;
  /** nph- script: no header parsing; the output is the whole HTTP response. */
  nph?: boolean;
  headLimits?: HeadLimits;
  /** Each stderr line (without its newline; long lines come in pieces of CGI_STDERR_LINE_MAX). */
  onStderrLine?: (line: string) => void;
  spawner?: ScriptSpawner;
  /** Bytes of stdout (head and discarded output) and of stderr kept for a script log entry. */
  captureBytes?: number;
  /** stderr bytes handed to onStderrLine per run; past it one notice, then stderr is only drained. */
  maxStderrLogBytes?: number;
}

export type HeadOutcome =
  | { kind: 'head'; head: CgiResponseHead }
  /** nph: output started; `body` carries all of it. */
  | { kind: 'raw' }
  | { kind: 'malformed'; error: CgiHeadError }
  /** No output for the script timeout before the head was complete. */
  | { kind: 'timeout' }
  | { kind: 'aborted' }
  | { kind: 'spawn-failed'; error: SpawnError };

export interface RunResult extends ScriptExit {
  timedOut: boolean;
  aborted: boolean;
  /** The script outlived its stdout by more than exitWaitMs and was terminated. */
  lingered: boolean;
}

/**
 * CGIDScriptTimeout as operators write it ("20", "20s", "500ms", "2m"), in
 * milliseconds; null for anything else, zero, or longer than a timer can wait.
 * The same parser as every duration in the configuration.
 */
export function parseScriptTimeout(value: string | number): number | null {
  const ms = parseDuration(value);
  return typeof ms === 'number' && ms > 0 ? ms : null;
}

export function runScript(options: RunScriptOptions): ScriptRun {
  return new ScriptRun(options);
}

export class ScriptRun {
  /** Settles once: the parsed head, or why there is none. */
  readonly head: Promise<HeadOutcome>;
  /** Script output after the head (all output for nph). Ends when stdout ends; errors on timeout or abort. */
  readonly body: Readable;
  /** Settles once the script is reaped and its pipes are closed. */
  readonly finished: Promise<RunResult>;

  readonly #options: RunScriptOptions;
  readonly #timeoutMs: number;
  readonly #captureBytes: number;
  #script: SpawnedScript | undefined;
  #parser: ResponseHeadParser | undefined;
  #resolveHead!: (outcome: HeadOutcome) => void;
  #headSettled = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #killTimer: NodeJS.Timeout | undefined;
  #lingerTimer: NodeJS.Timeout | undefined;
  #timedOut = false;
  #aborted = false;
  #lingered = false;
  #lost = false;
  #exited = false;
  #stdoutEnded = false;
  #stderrClosed = false;
  /** After a malformed head, output is drained into the capture and not delivered. */
  #discarding = false;
  #paused = false;
  #stdoutCapture: Buffer[] = [];
  #stdoutCaptured = 0;
  #stderrCapture: string[] = [];
  #stderrCaptured = 0;
  /** performance.now() when the run began, when the spawner answered, and when the script was reaped (0: not yet), for the timing trace. */
  readonly startedAt = performance.now();
  spawnedAt = 0;
  exitedAt = 0;

  constructor(options: RunScriptOptions) {
    this.#options = options;
    this.#timeoutMs = options.timeoutMs ?? CGI_SCRIPT_TIMEOUT_MS;
    this.#captureBytes = options.captureBytes ?? CGI_SCRIPT_LOG_CAPTURE_BYTES;
    this.head = new Promise((resolve) => (this.#resolveHead = resolve));
    this.body = new Readable({
      highWaterMark: CGI_OUTPUT_HIGH_WATER_MARK,
      read: () => this.#resumeOutput(),
      destroy: (error, callback) => {
        // A consumer that stops reading (client gone) must not leave the script blocked on a full pipe.
        if (!this.#stdoutEnded) this.#discarding = true;
        this.#resumeOutput();
        callback(error);
      },
    });
    // The body errors on timeout or abort; a consumer that never attached to it (the head already failed) must not crash the server.
    this.body.on('error', () => {});
    this.finished = this.#run();
  }

  /** The script's file. */
  get file(): string {
    return this.#options.file;
  }

  get pid(): number | undefined {
    return this.#script?.pid;
  }

  /** The script was killed because the cgid daemon that started it went away (see ScriptExit.lost). */
  get lost(): boolean {
    return this.#lost;
  }

  /** Script output kept for the script log: the raw head, and output drained after a bad head. */
  get capturedStdout(): Buffer {
    return Buffer.concat(this.#stdoutCapture);
  }

  /** stderr kept for the script log (bounded), newline-terminated lines. */
  get capturedStderr(): string {
    return this.#stderrCapture.join('');
  }

  /**
   * The client went away (or the server is stopping): SIGTERM to the script's
   * group, SIGKILL after the grace period if it is still there.
   */
  abort(): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#settleHead({ kind: 'aborted' });
    if (!this.body.destroyed)
      this.body.destroy(new GatehouseError(ErrorCode.REQUEST_ABORTED, `script ${this.#options.file} aborted: the client went away`));
    this.#terminate();
  }

  async #run(): Promise<RunResult> {
    const options = this.#options;
    const spawner = options.spawner ?? defaultSpawner;
    try {
      const stdinEmpty = !options.stdin || (Buffer.isBuffer(options.stdin) && options.stdin.length === 0);
      this.#script = await spawner.spawn({ file: options.file, argv: options.argv, cwd: options.cwd, env: options.env, stdinEmpty });
      this.spawnedAt = performance.now();
    } catch (error) {
      const spawnError = error instanceof SpawnError ? error : new SpawnError(options.file, 'EUNKNOWN', String(error));
      this.#settleHead({ kind: 'spawn-failed', error: spawnError });
      if (!this.body.destroyed) this.body.destroy(spawnError);
      return { code: null, signal: null, timedOut: false, aborted: this.#aborted, lingered: false };
    }
    const script = this.#script;
    // Known before the pipes report their end: a lost daemon resolves `exited` as it kills the group.
    void script.exited.then((exit) => {
      if (exit.lost) this.#lost = true;
    });
    if (this.#aborted) this.#terminate();
    if (!options.nph) this.#parser = new ResponseHeadParser(options.headLimits);

    const stdoutClosed = new Promise<void>((resolve) => {
      script.stdout.on('data', (chunk: Buffer) => this.#onStdout(chunk));
      script.stdout.once('end', () => this.#onStdoutEnd());
      script.stdout.once('close', () => {
        if (!this.#stdoutEnded) this.#onStdoutEnd();
        resolve();
      });
      script.stdout.on('error', () => {});
    });
    const stderrClosed = this.#readStderr(script);
    this.#feedStdin(script.stdin);
    this.#armIdle();

    const exit = await script.exited;
    this.exitedAt = performance.now();
    this.#exited = true;
    clearTimeout(this.#lingerTimer);
    this.#lingerTimer = undefined;
    // Something the script started may still hold stderr (a background job that was not redirected).
    if (this.#stdoutEnded && !this.#stderrClosed) this.#startLinger();
    await Promise.all([stdoutClosed, stderrClosed]);
    this.#disarmIdle();
    clearTimeout(this.#killTimer);
    clearTimeout(this.#lingerTimer);
    // Our end of the script's stdin is ours to close: a body that never ended (the request was aborted
    // before or while it was fed) would otherwise keep the socket open with nobody at the other end.
    script.stdin.destroy();
    // Field by field: a spread into a literal takes V8 11.3's (Node 20) slow path, on every request.
    return {
      code: exit.code,
      signal: exit.signal,
      lost: exit.lost,
      timedOut: this.#timedOut,
      aborted: this.#aborted,
      lingered: this.#lingered,
    };
  }

  #onStdout(chunk: Buffer): void {
    if (this.#idleTimer) this.#idleTimer.refresh();
    if (this.#discarding || this.#aborted || this.#timedOut) {
      this.#capture(chunk);
      return;
    }
    const parser = this.#parser;
    if (parser && !this.#headSettled) {
      this.#capture(chunk);
      const step = parser.push(chunk);
      if (step.state === 'incomplete') return;
      if (step.state === 'error') {
        this.#discarding = true;
        this.#settleHead({ kind: 'malformed', error: step.error });
        this.body.destroy(new GatehouseError(step.error.code, step.error.message));
        return;
      }
      this.#settleHead({ kind: 'head', head: step.head });
      if (step.head.kind === 'local-redirect') {
        // RFC 3875 6.2.2: the server discards the script's body and fetches the new location itself.
        this.#discarding = true;
        this.body.push(null);
        return;
      }
      if (step.rest.length > 0) this.#deliver(step.rest);
      return;
    }
    if (!this.#headSettled) this.#settleHead({ kind: 'raw' });
    this.#deliver(chunk);
  }

  #deliver(chunk: Buffer): void {
    if (!this.body.push(chunk)) this.#pauseOutput();
  }

  #onStdoutEnd(): void {
    if (this.#stdoutEnded) return;
    this.#stdoutEnded = true;
    this.#disarmIdle();
    if (this.#parser && !this.#headSettled && !this.#timedOut && !this.#aborted) {
      const step = this.#parser.end();
      if (step.state === 'error') {
        this.#settleHead({ kind: 'malformed', error: step.error });
        this.body.destroy(new GatehouseError(step.error.code, step.error.message));
      }
    } else if (!this.#parser && !this.#headSettled && !this.#timedOut && !this.#aborted) {
      const error: CgiHeadError = {
        code: ErrorCode.CGI_HEAD_INCOMPLETE,
        message: 'end of script output before any output (nph script)',
        lineNumber: 0,
      };
      this.#settleHead({ kind: 'malformed', error });
      this.body.destroy(new GatehouseError(error.code, error.message));
    }
    if (!this.body.destroyed && !this.#discarding) this.body.push(null);
    if (!this.#exited || !this.#stderrClosed) this.#startLinger();
  }

  /**
   * Apache terminates a script still running at the end of its request. The
   * script gets exitWaitMs to exit (and whatever it started, to let go of
   * stderr) by itself, then its group is terminated.
   */
  #startLinger(): void {
    if (this.#lingerTimer || this.#killTimer) return;
    this.#lingerTimer = setTimeout(() => {
      if (this.#exited && this.#stderrClosed) return;
      this.#lingered = true;
      this.#terminate();
    }, this.#options.exitWaitMs ?? CGI_EXIT_WAIT_MS);
    this.#lingerTimer.unref();
  }

  #feedStdin(stdin: Writable): void {
    // EPIPE/ECONNRESET: the script exited or closed stdin without reading everything. Not an error of the request.
    stdin.on('error', () => {});
    const source = this.#options.stdin;
    if (!source) {
      stdin.end();
      return;
    }
    if (Buffer.isBuffer(source)) {
      stdin.end(source);
      return;
    }
    // pipe() passes on the end of the body but not its abort; a body that stops short (or had already
    // stopped when the script started) closes stdin, so the script sees the end of its input at once.
    finished(source, { writable: false }, (error) => {
      if (error) stdin.destroy();
    });
    source.pipe(stdin);
    stdin.once('close', () => source.unpipe(stdin));
  }

  #readStderr(script: SpawnedScript): Promise<void> {
    const maxLine = CGI_STDERR_LINE_MAX;
    let partial = '';
    const maxLogged = this.#options.maxStderrLogBytes ?? CGI_STDERR_LOG_MAX_BYTES;
    let logged = 0;
    const emit = (line: string) => {
      if (this.#stderrCaptured < this.#captureBytes) {
        const kept = line.slice(0, this.#captureBytes - this.#stderrCaptured);
        this.#stderrCapture.push(`${kept}\n`);
        this.#stderrCaptured += kept.length + 1;
      }
      if (logged > maxLogged) return;
      logged += line.length + 1;
      if (logged > maxLogged) {
        this.#options.onStderrLine?.(`(more than ${maxLogged} bytes of stderr: the rest of this run's stderr is not logged)`);
        return;
      }
      this.#options.onStderrLine?.(line);
    };
    script.stderr.setEncoding('utf8');
    script.stderr.on('data', (text: string) => {
      let start = 0;
      for (;;) {
        const newline = text.indexOf('\n', start);
        if (newline === -1) break;
        const line = partial + text.slice(start, newline);
        partial = '';
        for (let offset = 0; offset < line.length || offset === 0; offset += maxLine)
          emit(line.slice(offset, offset + maxLine).replace(/\r$/, ''));
        start = newline + 1;
      }
      partial += text.slice(start);
      while (partial.length >= maxLine) {
        emit(partial.slice(0, maxLine));
        partial = partial.slice(maxLine);
      }
    });
    script.stderr.on('error', () => {});
    return new Promise((resolve) => {
      script.stderr.once('close', () => {
        this.#stderrClosed = true;
        if (partial !== '') emit(partial);
        resolve();
      });
    });
  }

  #capture(chunk: Buffer): void {
    const room = this.#captureBytes - this.#stdoutCaptured;
    if (room <= 0) return;
    const kept = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.#stdoutCapture.push(kept);
    this.#stdoutCaptured += kept.length;
  }

  #settleHead(outcome: HeadOutcome): void {
    if (this.#headSettled) return;
    this.#headSettled = true;
    this.#resolveHead(outcome);
  }

  #pauseOutput(): void {
    if (this.#paused || !this.#script) return;
    this.#paused = true;
    // Waiting on the consumer, not on the script: the script timeout does not run meanwhile.
    this.#disarmIdle();
    this.#script.stdout.pause();
  }

  #resumeOutput(): void {
    if (!this.#paused || !this.#script) return;
    this.#paused = false;
    this.#script.stdout.resume();
    if (!this.#stdoutEnded) this.#armIdle();
  }

  #armIdle(): void {
    if (this.#stdoutEnded || this.#timedOut) return;
    if (this.#idleTimer) {
      this.#idleTimer.refresh();
      return;
    }
    this.#idleTimer = setTimeout(() => this.#onTimeout(), this.#timeoutMs);
  }

  #disarmIdle(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  /** mod_cgid's behaviour: no output for the script timeout -> SIGKILL the whole group. */
  #onTimeout(): void {
    this.#idleTimer = undefined;
    if (this.#stdoutEnded || this.#aborted) return;
    this.#timedOut = true;
    this.#settleHead({ kind: 'timeout' });
    if (!this.body.destroyed) {
      this.body.destroy(
        new GatehouseError(
          ErrorCode.CGI_SCRIPT_TIMEOUT,
          `script ${this.#options.file} wrote no output for ${this.#timeoutMs} ms and was killed`,
        ),
      );
    }
    this.#kill();
  }

  /** SIGTERM now, SIGKILL after the grace period unless the script is reaped and its output closed by then. */
  #terminate(): void {
    const script = this.#script;
    if (!script || this.#killTimer) return;
    if (this.#exited && this.#stdoutEnded && this.#stderrClosed) return;
    script.signalGroup('SIGTERM');
    // SIGTERM can be ignored; a stopped process never sees it until continued.
    script.signalGroup('SIGCONT');
    this.#killTimer = setTimeout(() => this.#kill(), this.#options.killGraceMs ?? CGI_KILL_GRACE_MS);
  }

  /**
   * SIGKILL to the group. A process that left the group (setsid) may still
   * hold the pipes; after the grace period they are closed on our side, so
   * the run always finishes and its slot is always given back.
   */
  #kill(): void {
    const script = this.#script;
    if (!script) return;
    script.signalGroup('SIGKILL');
    const closePipes = setTimeout(() => {
      script.stdout.destroy();
      script.stderr.destroy();
    }, this.#options.killGraceMs ?? CGI_KILL_GRACE_MS);
    closePipes.unref();
    void this.finished.then(() => clearTimeout(closePipes));
  }
}

let defaultSpawner: ScriptSpawner = new DefaultSpawner();

/**
 * Replaces the spawner used by runs that name none (posix_spawn where the
 * system-call binding loads, else child_process.spawn: spawn/default.ts): a
 * program that starts the cgid daemon can make every cgi() handler use it
 * without passing it to each.
 */
export function setDefaultSpawner(spawner: ScriptSpawner): void {
  defaultSpawner = spawner;
}

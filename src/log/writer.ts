/**
 * Writing log text without ever blocking the event loop: lines are collected
 * and written in one batch per event-loop turn (a file with fs.write on
 * libuv's thread pool, a pipe or terminal through its stream), memory is
 * bounded (past LOG_BUFFER_MAX_BYTES lines are dropped and counted, and the
 * next batch says how many), and nothing is lost at a reopen or a close: what
 * was written before is flushed to the old file first.
 *
 * Node writes process.stdout and process.stderr synchronously when they are
 * files (a slow disk stalls every request); they are written here with
 * fs.write on their descriptor instead.
 */
import { fstatSync, open, openSync, close as closeDescriptor, write, writeSync } from 'node:fs';
import { ErrorCode, GatehouseError } from '../errors.js';
import { LOG_BUFFER_MAX_BYTES, LOG_DRAIN_TIMEOUT_MS, LOG_FILE_BATCH_INTERVAL_MS } from '../limits.js';

export interface LogWriter {
  /** What is written to: a path, or stdout/stderr. */
  readonly target: string;
  /** Queues text (whole lines, each with its newline); returns at once. */
  write(text: string): void;
  /** Resolves once everything queued before the call is written (handed to the pipe and drained, for a console). */
  flush(): Promise<void>;
  /** A file opened by path: flushes to the file it had, then opens the path again (after logrotate's mv). */
  reopen(): Promise<void>;
  /** Flushes, then closes the file (the console stays open). Later writes are dropped. */
  close(): Promise<void>;
  /** Lines dropped so far because the buffer was full. */
  readonly droppedTotal: number;
}

export interface LogWriterOptions {
  /** Characters held before lines are dropped (default LOG_BUFFER_MAX_BYTES). */
  maxBufferedBytes?: number;
  /**
   * Called when lines were dropped, before the next batch is written: a line
   * (with its newline) to write at the end of that batch, or undefined when
   * the caller reports the drop elsewhere (the access log reports to the error log).
   */
  onDrop?: (count: number) => string | undefined;
  /** Told when a write fails (once until a write succeeds again); the writer goes on. */
  onError?: (error: Error) => void;
  /**
   * How reopen() opens the file again (a descriptor; throws on failure).
   * Default: the path, with fs.open. kfcgi opens it through a directory
   * descriptor kept from before its chroot.
   */
  openAgain?: () => number;
}

interface SyncFlushable {
  flushSync(): void;
}

/** Writers still open: whatever they hold is written synchronously when the process exits (process.exit included). */
const openWriters = new Set<SyncFlushable>();
let exitHookInstalled = false;
function register(writer: SyncFlushable): void {
  openWriters.add(writer);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const open of openWriters) open.flushSync();
  });
}

/**
 * A log writer for `target`: a file path (opened now, in append mode, 0640:
 * an error here is the caller's to report at start), or "-" for the console
 * stream (stdout or stderr), which is written like a file when it is one.
 */
export function openLogWriter(target: string, console: 'stdout' | 'stderr', options: LogWriterOptions = {}): LogWriter {
  if (target === '-') {
    const stream = console === 'stdout' ? process.stdout : process.stderr;
    const fd = console === 'stdout' ? 1 : 2;
    return isRegularFile(fd) ? new FileLogWriter(console, fd, null, options) : new StreamLogWriter(console, stream, fd, options);
  }
  let fd: number;
  try {
    fd = openSync(target, 'a', 0o640);
  } catch (error) {
    throw new GatehouseError(
      ErrorCode.LOG_SETUP,
      `cannot open the log ${target}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      { cause: error },
    );
  }
  return new FileLogWriter(target, fd, target, options);
}

function isRegularFile(fd: number): boolean {
  try {
    return fstatSync(fd).isFile();
  } catch {
    return false;
  }
}

/** Collects queued text and counts what did not fit. */
class Buffered {
  chunks: string[] = [];
  /** Characters queued and being written. */
  held = 0;
  dropped = 0;
  droppedTotal = 0;
  readonly cap: number;
  readonly onDrop: ((count: number) => string | undefined) | undefined;
  constructor(options: LogWriterOptions) {
    this.cap = options.maxBufferedBytes ?? LOG_BUFFER_MAX_BYTES;
    this.onDrop = options.onDrop;
  }
  /** False when the text did not fit (dropped and counted). */
  add(text: string, alsoHeld = 0): boolean {
    if (this.held + alsoHeld + text.length > this.cap) {
      this.dropped++;
      this.droppedTotal++;
      return false;
    }
    this.chunks.push(text);
    this.held += text.length;
    return true;
  }
  /** Everything queued as one text, with the drop notice after it; null when there is nothing. */
  take(): { text: string; chars: number } | null {
    if (this.chunks.length === 0 && this.dropped === 0) return null;
    let text = this.chunks.length === 1 ? this.chunks[0]! : this.chunks.join('');
    const chars = text.length;
    this.chunks = [];
    if (this.dropped > 0) {
      const count = this.dropped;
      this.dropped = 0;
      const notice = this.onDrop?.(count);
      if (notice) text += notice;
    }
    return { text, chars };
  }
}

class FileLogWriter implements LogWriter, SyncFlushable {
  readonly target: string;
  readonly #path: string | null;
  readonly #buffer: Buffered;
  readonly #onError: ((error: Error) => void) | undefined;
  readonly #openAgain: (() => number) | undefined;
  #fd: number;
  /** Every operation on the descriptor (a batch, a reopen, the close) runs after the one before: never two at once. */
  #operations: Promise<void> = Promise.resolve();
  #batchQueued = false;
  /** performance.now() when the last batch was taken (0: never). */
  #lastBatchAt = 0;
  #closed = false;
  #failing = false;

  constructor(target: string, fd: number, path: string | null, options: LogWriterOptions) {
    this.target = target;
    this.#fd = fd;
    this.#path = path;
    this.#buffer = new Buffered(options);
    this.#onError = options.onError;
    this.#openAgain = options.openAgain;
    register(this);
  }

  get droppedTotal(): number {
    return this.#buffer.droppedTotal;
  }

  write(text: string): void {
    if (this.#closed) {
      this.#buffer.dropped++;
      this.#buffer.droppedTotal++;
      return;
    }
    this.#buffer.add(text);
    if (this.#batchQueued) return;
    // One batch per event-loop turn: lines logged in this turn (and while a write is under way) go out together;
    // under load at most one per LOG_FILE_BATCH_INTERVAL_MS, so that a busy server pays one thread-pool write for
    // many lines instead of one for every turn.
    this.#batchQueued = true;
    const wait = this.#lastBatchAt + LOG_FILE_BATCH_INTERVAL_MS - performance.now();
    if (wait <= 0) setImmediate(this.#startBatch);
    // Unreferenced: the process's exit writes what is queued (flushSync), a timer need not keep it alive.
    else setTimeout(this.#startBatch, wait).unref();
  }

  readonly #startBatch = (): void => void this.#serially(() => this.#writeBatch());

  flush(): Promise<void> {
    return this.#serially(() => this.#writeBatch());
  }

  async reopen(): Promise<void> {
    const path = this.#path;
    if (path === null || this.#closed) return;
    const failed = (error: NodeJS.ErrnoException) =>
      new GatehouseError(
        ErrorCode.LOG_SETUP,
        `cannot reopen the log ${path}: ${error instanceof GatehouseError ? error.message : (error.code ?? error.message)}`,
        { cause: error },
      );
    const openAgain = this.#openAgain;
    await this.#serially(async () => {
      // What was logged before the reopen goes to the file it was logged for; lines logged meanwhile wait.
      await this.#writeBatch();
      const fd = await new Promise<number>((resolve, reject) => {
        if (openAgain) {
          try {
            resolve(openAgain());
          } catch (error) {
            reject(failed(error as NodeJS.ErrnoException));
          }
          return;
        }
        open(path, 'a', 0o640, (error, opened) => (error ? reject(failed(error)) : resolve(opened)));
      });
      const old = this.#fd;
      this.#fd = fd;
      await new Promise<void>((resolve) => closeDescriptor(old, () => resolve()));
    });
  }

  close(): Promise<void> {
    return this.#serially(async () => {
      if (this.#closed) return;
      await this.#writeBatch();
      this.#closed = true;
      openWriters.delete(this);
      if (this.#path !== null) await new Promise<void>((resolve) => closeDescriptor(this.#fd, () => resolve()));
    });
  }

  /** At process exit: what is still queued, written synchronously (the event loop is gone). */
  flushSync(): void {
    if (this.#closed) return;
    const batch = this.#buffer.take();
    if (!batch) return;
    try {
      writeSync(this.#fd, batch.text);
    } catch {
      // Nowhere left to report it.
    }
  }

  #serially(operation: () => Promise<void>): Promise<void> {
    const run = this.#operations.then(operation);
    this.#operations = run.catch(() => {});
    return run;
  }

  /** Takes everything queued at this moment and writes it in one go. */
  async #writeBatch(): Promise<void> {
    this.#batchQueued = false;
    if (this.#closed) return;
    const batch = this.#buffer.take();
    if (!batch) return;
    this.#lastBatchAt = performance.now();
    try {
      await writeFully(this.#fd, Buffer.from(batch.text, 'utf8'));
      this.#failing = false;
    } catch (error) {
      if (!this.#failing) this.#onError?.(error as Error);
      this.#failing = true;
    } finally {
      this.#buffer.held -= batch.chars;
    }
  }
}

function writeFully(fd: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const next = (offset: number) => {
      if (offset >= bytes.length) return resolve();
      write(fd, bytes, offset, bytes.length - offset, null, (error, written) => {
        if (error) reject(error);
        else next(offset + written);
      });
    };
    next(0);
  });
}

/**
 * stdout or stderr when it is a pipe or a terminal: libuv writes those
 * without blocking and queues what the reader has not taken yet; that queue
 * counts against the cap, so a reader that stops reading costs dropped lines,
 * not memory.
 */
class StreamLogWriter implements LogWriter, SyncFlushable {
  readonly target: string;
  readonly #stream: NodeJS.WriteStream;
  readonly #fd: number;
  readonly #buffer: Buffered;
  #scheduled = false;
  #closed = false;

  constructor(target: string, stream: NodeJS.WriteStream, fd: number, options: LogWriterOptions) {
    this.target = target;
    this.#stream = stream;
    this.#fd = fd;
    this.#buffer = new Buffered(options);
    // A reader gone away (EPIPE) must not become an uncaught exception: the lines are lost, the server goes on.
    if (stream.listenerCount('error') === 0) stream.on('error', () => {});
    register(this);
  }

  get droppedTotal(): number {
    return this.#buffer.droppedTotal;
  }

  write(text: string): void {
    if (this.#closed) return;
    this.#buffer.add(text, this.#stream.writableLength);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#handOver());
  }

  #handOver(): void {
    this.#scheduled = false;
    const batch = this.#buffer.take();
    if (!batch) return;
    this.#buffer.held -= batch.chars;
    if (!this.#stream.destroyed) this.#stream.write(batch.text);
  }

  async flush(): Promise<void> {
    this.#handOver();
    if (this.#stream.writableLength === 0 || this.#stream.destroyed) return;
    // Bounded: a reader that never reads again must not hold a graceful stop forever.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, LOG_DRAIN_TIMEOUT_MS);
      timer.unref();
      const stream = this.#stream;
      function done() {
        clearTimeout(timer);
        stream.off('drain', done);
        stream.off('close', done);
        resolve();
      }
      stream.once('drain', done);
      stream.once('close', done);
    });
  }

  async reopen(): Promise<void> {
    // Nothing to reopen: whoever started the process owns this pipe or terminal.
  }

  async close(): Promise<void> {
    await this.flush();
    this.#closed = true;
    openWriters.delete(this);
  }

  flushSync(): void {
    if (this.#closed) return;
    const batch = this.#buffer.take();
    if (!batch) return;
    try {
      // Written directly only when nothing queued in the stream would come after it.
      if (this.#stream.writableLength === 0) writeSync(this.#fd, batch.text);
      else this.#stream.write(batch.text);
    } catch {
      // Nowhere left to report it.
    }
  }
}

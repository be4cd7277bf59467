/**
 * A request body of unknown length (chunked) read whole before the script
 * starts, because RFC 3875 4.1.2 wants CONTENT_LENGTH to be the body's exact
 * length: kept in memory up to a threshold, then in an unlinked temp file (no
 * file is left behind whatever happens to the process), refused above a limit.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { CGI_BODY_MEMORY_SPOOL_BYTES, CGI_MAX_REQUEST_BODY_BYTES } from '../limits.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export interface SpoolOptions {
  memoryBytes?: number;
  maxBytes?: number;
  directory?: string;
  /** Bytes of the start of the body kept for a script log entry. */
  keepHeadBytes?: number;
  /**
   * Aborted when the body is known to be too large before its bytes arrive
   * (a chunk announced above the limit): the spool stops at once with
   * 'too-large', the abort reason as its detail.
   */
  signal?: AbortSignal;
}

export interface SpooledBody {
  length: number;
  /** The start of the body (up to keepHeadBytes). */
  head: Buffer;
  /** The body, once. Closes the temp file when read to the end or destroyed. */
  stream(): Readable;
  /** Releases the temp file (and the stream, if it was taken and not read to its end). */
  dispose(): Promise<void>;
}

export type SpoolOutcome =
  | { kind: 'spooled'; body: SpooledBody }
  /** More than maxBytes arrived, or were announced; the rest was not read. */
  | { kind: 'too-large'; limit: number; detail?: string }
  /** The client stopped sending (connection closed, bad chunked framing). */
  | { kind: 'failed'; error: Error };

export async function spoolBody(source: Readable, options: SpoolOptions = {}): Promise<SpoolOutcome> {
  const spool = new BodySpool(options);
  const outcome = await spool.read(source);
  if (outcome !== 'complete') return outcome;
  return { kind: 'spooled', body: spool.finish() };
}

/** One body being spooled: the bytes in memory or the temp file, and the start kept for the script log. */
class BodySpool {
  readonly #memoryBytes: number;
  readonly #maxBytes: number;
  readonly #directory: string;
  readonly #keepHeadBytes: number;
  readonly #signal: AbortSignal | undefined;
  readonly #memory: Buffer[] = [];
  readonly #headParts: Buffer[] = [];
  #headLength = 0;
  #length = 0;
  #file: FileHandle | undefined;

  constructor(options: SpoolOptions) {
    this.#memoryBytes = options.memoryBytes ?? CGI_BODY_MEMORY_SPOOL_BYTES;
    this.#maxBytes = options.maxBytes ?? CGI_MAX_REQUEST_BODY_BYTES;
    this.#directory = options.directory ?? tmpdir();
    this.#keepHeadBytes = options.keepHeadBytes ?? 0;
    this.#signal = options.signal;
  }

  /**
   * Reads `source` to its end. Event-driven rather than `for await` so that
   * an abort (a chunk announced over the limit) ends the wait at once,
   * without destroying the source: node:http would take the connection down
   * with it, and the 413 would never be sent.
   */
  read(source: Readable): Promise<'complete' | Exclude<SpoolOutcome, { kind: 'spooled' }>> {
    return new Promise((resolve) => {
      let settled = false;
      let writing: Promise<void> = Promise.resolve();
      const settle = (outcome: 'complete' | Exclude<SpoolOutcome, { kind: 'spooled' }>) => {
        if (settled) return;
        settled = true;
        source.off('data', onData);
        source.off('end', onEnd);
        source.off('error', onError);
        source.off('close', onClose);
        this.#signal?.removeEventListener('abort', onAbort);
        if (outcome === 'complete') return resolve(outcome);
        // Refused or failed: nothing more is read, and the temp file (if any) goes.
        source.pause();
        void writing.finally(() => this.#closeFile()).then(() => resolve(outcome));
      };
      const tooLarge = (detail?: string) => settle({ kind: 'too-large', limit: this.#maxBytes, ...(detail ? { detail } : {}) });
      const onAbort = () => tooLarge(describeReason(this.#signal?.reason));
      const onData = (chunk: Buffer) => {
        if (!this.#take(chunk)) return tooLarge();
        if (this.#file === undefined && this.#length <= this.#memoryBytes) return;
        // Past the memory threshold: to the temp file, the source paused while a write is under way.
        source.pause();
        writing = writing
          .then(() => this.#toFile(chunk))
          .then(
            () => {
              if (!settled) source.resume();
            },
            (error: Error) => settle({ kind: 'failed', error }),
          );
      };
      const onEnd = () => void writing.then(() => settle('complete'));
      const onError = (error: Error) => settle({ kind: 'failed', error });
      const onClose = () => {
        if (!source.readableEnded)
          settle({ kind: 'failed', error: new GatehouseError(ErrorCode.CLIENT_CLOSED, 'the body ended before it was complete') });
      };
      if (this.#signal?.aborted) return onAbort();
      this.#signal?.addEventListener('abort', onAbort, { once: true });
      source.on('data', onData);
      source.once('end', onEnd);
      source.once('error', onError);
      source.once('close', onClose);
      if (source.readableEnded) onEnd();
      else if (source.destroyed) onClose();
    });
  }

  /** Counts a chunk and keeps the start of the body; false once the body is over the limit. */
  #take(chunk: Buffer): boolean {
    this.#length += chunk.length;
    if (this.#headLength < this.#keepHeadBytes) {
      const kept = chunk.subarray(0, this.#keepHeadBytes - this.#headLength);
      this.#headParts.push(kept);
      this.#headLength += kept.length;
    }
    if (this.#length > this.#maxBytes) return false;
    if (this.#file === undefined && this.#length <= this.#memoryBytes) this.#memory.push(chunk);
    return true;
  }

  async #toFile(chunk: Buffer): Promise<void> {
    if (this.#file === undefined) {
      this.#file = await openUnlinked(this.#directory);
      for (const held of this.#memory) await writeAll(this.#file, held);
      this.#memory.length = 0;
    }
    await writeAll(this.#file, chunk);
  }

  async #closeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    await file?.close().catch(() => {});
  }

  finish(): SpooledBody {
    const file = this.#file;
    const memory = this.#memory;
    const length = this.#length;
    let used = false;
    let taken: Readable | undefined;
    return {
      length,
      head: Buffer.concat(this.#headParts),
      stream() {
        if (used) throw new GatehouseError(ErrorCode.INVALID_STATE, 'a spooled body can be read once');
        used = true;
        if (!file)
          taken = Readable.from(length === 0 ? [] : [memory.length === 1 ? memory[0]! : Buffer.concat(memory)], { objectMode: false });
        else taken = file.createReadStream({ start: 0, autoClose: true });
        return taken;
      },
      async dispose() {
        if (taken) {
          // A reader that stopped early (the script exited) leaves the stream open: destroying it closes the file.
          if (!taken.destroyed) taken.destroy();
          return;
        }
        if (!used && file) {
          used = true;
          await file.close().catch(() => {});
        }
        used = true;
      },
    };
  }
}

function describeReason(reason: unknown): string | undefined {
  return reason instanceof Error ? reason.message : typeof reason === 'string' ? reason : undefined;
}

/**
 * A private temp file that is already unlinked: it disappears when its descriptor closes, even after a crash.
 * `purpose` names it while it has a name (request bodies, FastCGI responses being buffered).
 */
export async function openUnlinked(directory: string = tmpdir(), purpose = 'body'): Promise<FileHandle> {
  const path = join(directory, `gatehouse-${purpose}-${process.pid}-${randomBytes(8).toString('hex')}`);
  const handle = await fs.open(path, 'wx+', 0o600);
  try {
    await fs.unlink(path);
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
  return handle;
}

async function writeAll(file: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

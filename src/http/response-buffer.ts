/**
 * FastCGI response buffering (nginx's fastcgi_buffers and
 * fastcgi_max_temp_file_size): the application's response is read as fast
 * as it comes, whatever the client's pace, so a slow client does not hold an
 * application process or a pooled connection. Bytes wait in memory up to
 * `memoryBytes`, then in a temporary file (opened and unlinked at once, so it
 * is gone when its descriptor closes, even after a crash) up to
 * `maxTempFileBytes`. Past both, the application is paused as it is without
 * buffering (backpressure still holds), until the client has taken what was
 * kept.
 *
 * Bytes are passed on as soon as the client can take them (no waiting for a
 * buffer to fill, unlike nginx): buffering only decides who waits for a slow
 * client, the application or gatehouse.
 *
 * Order is kept: the memory queue is drained first, then the file; new bytes
 * go to the file while it has unread bytes, and to memory again once the
 * client caught up (the file is then emptied for reuse).
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { openUnlinked } from '../cgi/body-spool.js';
import { CLIENT_RESPONSE_HIGH_WATER_MARK, FASTCGI_BUFFER_READ_BYTES } from '../limits.js';

export interface ResponseBufferOptions {
  /** Bytes kept in memory before the temporary file is used. */
  memoryBytes: number;
  /** Largest temporary file; 0: no file, the application waits once memory is full. */
  maxTempFileBytes: number;
  /** Where the temporary file is made (default the system's temp directory). */
  directory?: string | undefined;
}

export class ResponseBuffer extends Readable {
  readonly #source: Readable;
  readonly #options: ResponseBufferOptions;
  readonly #memory: Buffer[] = [];
  #memoryBytes = 0;
  #file: FileHandle | null = null;
  #fileOpening: Promise<FileHandle> | null = null;
  /** Bytes handed to file writes, and of those the ones written (readable back). */
  #fileQueued = 0;
  #fileWritten = 0;
  #fileRead = 0;
  /** File writes run one after another, in order. */
  #writes: Promise<void> = Promise.resolve();
  #readingFile = false;
  /** The consumer asked for more and has not been given any since. */
  #wanted = false;
  #sourceEnded = false;
  #sourcePaused = false;

  constructor(source: Readable, options: ResponseBufferOptions, first?: Buffer) {
    super({ highWaterMark: CLIENT_RESPONSE_HIGH_WATER_MARK });
    this.#source = source;
    this.#options = options;
    if (first !== undefined && first.length > 0) this.#keepInMemory(first);
    source.on('data', this.#onData);
    source.once('end', this.#onEnd);
    source.once('error', this.#onError);
    source.resume();
  }

  /** Bytes waiting here (memory and file) for the client. */
  get bufferedBytes(): number {
    return this.#memoryBytes + (this.#fileQueued - this.#fileRead);
  }

  readonly #onData = (chunk: Buffer): void => {
    const fileInUse = this.#fileQueued > this.#fileRead;
    if (!fileInUse && this.#memoryBytes + chunk.length <= this.#options.memoryBytes) this.#keepInMemory(chunk);
    else if (this.#options.maxTempFileBytes > 0 && this.#fileQueued < this.#options.maxTempFileBytes) this.#keepInFile(chunk);
    else if (!fileInUse) this.#keepInMemory(chunk);
    // The file is at its bound: this chunk still goes after it (one chunk past the bound at most, as the source stops here).
    else this.#keepInFile(chunk);
    if (this.#full()) this.#pauseSource();
    this.#pump();
  };

  readonly #onEnd = (): void => {
    this.#sourceEnded = true;
    this.#pump();
  };

  readonly #onError = (error: Error): void => {
    this.destroy(error);
  };

  #keepInMemory(chunk: Buffer): void {
    this.#memory.push(chunk);
    this.#memoryBytes += chunk.length;
  }

  #keepInFile(chunk: Buffer): void {
    const position = this.#fileQueued;
    this.#fileQueued += chunk.length;
    this.#writes = this.#writes
      .then(async () => {
        const file = await this.#openFile();
        let offset = 0;
        while (offset < chunk.length) {
          const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset, position + offset);
          offset += bytesWritten;
        }
        this.#fileWritten = position + chunk.length;
        this.#pump();
      })
      .catch((error: unknown) => {
        this.destroy(error as Error);
      });
  }

  #openFile(): Promise<FileHandle> {
    this.#fileOpening ??= openUnlinked(this.#options.directory, 'response').then((file) => {
      // Destroyed while it opened: closed here, as nobody else holds it.
      if (this.destroyed) void file.close().catch(() => {});
      else this.#file = file;
      return file;
    });
    return this.#fileOpening;
  }

  #full(): boolean {
    const fileInUse = this.#fileQueued > this.#fileRead;
    if (this.#options.maxTempFileBytes === 0) return this.#memoryBytes >= this.#options.memoryBytes;
    return fileInUse && this.#fileQueued >= this.#options.maxTempFileBytes;
  }

  #pauseSource(): void {
    if (this.#sourcePaused || this.#sourceEnded) return;
    this.#sourcePaused = true;
    this.#source.pause();
  }

  #resumeSourceIfRoom(): void {
    if (!this.#sourcePaused || this.#full() || this.destroyed) return;
    this.#sourcePaused = false;
    this.#source.resume();
  }

  override _read(): void {
    this.#wanted = true;
    this.#pump();
  }

  /** Gives the consumer what it wants: memory first, then the file, then the end. */
  #pump(): void {
    while (this.#wanted && !this.destroyed) {
      const chunk = this.#memory.shift();
      if (chunk !== undefined) {
        this.#memoryBytes -= chunk.length;
        this.#wanted = this.push(chunk);
        continue;
      }
      if (this.#fileRead < this.#fileWritten) {
        this.#readFile();
        break;
      }
      if (this.#fileRead === this.#fileQueued && this.#fileQueued > 0 && !this.#readingFile) this.#emptyFile();
      if (this.#sourceEnded && this.#fileRead === this.#fileQueued) {
        this.#wanted = false;
        this.push(null);
      }
      break;
    }
    this.#resumeSourceIfRoom();
  }

  #readFile(): void {
    if (this.#readingFile || this.#file === null) return;
    this.#readingFile = true;
    const length = Math.min(FASTCGI_BUFFER_READ_BYTES, this.#fileWritten - this.#fileRead);
    const buffer = Buffer.allocUnsafe(length);
    this.#file
      .read(buffer, 0, length, this.#fileRead)
      .then(({ bytesRead }) => {
        this.#readingFile = false;
        if (this.destroyed) return;
        this.#fileRead += bytesRead;
        this.#wanted = this.push(buffer.subarray(0, bytesRead));
        this.#pump();
      })
      .catch((error: unknown) => {
        this.#readingFile = false;
        this.destroy(error as Error);
      });
  }

  /** The client took everything the file held: start it over, so a long response does not grow it past its bound. */
  #emptyFile(): void {
    this.#fileQueued = 0;
    this.#fileWritten = 0;
    this.#fileRead = 0;
    const file = this.#file;
    if (file !== null)
      this.#writes = this.#writes
        .then(() => file.truncate(0))
        .catch((error: unknown) => {
          this.destroy(error as Error);
        });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#source.off('data', this.#onData);
    this.#source.off('end', this.#onEnd);
    this.#source.off('error', this.#onError);
    // Not read to its end (the client left, or the send timeout closed it): the application's request is aborted.
    if (!this.#sourceEnded) this.#source.destroy();
    const file = this.#file;
    this.#file = null;
    if (file === null) return callback(error);
    file.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}

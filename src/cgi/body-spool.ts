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
}

export interface SpooledBody {
  length: number;
  /** The start of the body (up to keepHeadBytes). */
  head: Buffer;
  /** The body, once. Closes the temp file when read to the end or destroyed. */
  stream(): Readable;
  /** Releases the temp file if the stream was never read. */
  dispose(): Promise<void>;
}

export type SpoolOutcome =
  | { kind: 'spooled'; body: SpooledBody }
  /** More than maxBytes arrived; the rest was not read. */
  | { kind: 'too-large'; limit: number }
  /** The client stopped sending (connection closed, bad chunked framing). */
  | { kind: 'failed'; error: Error };

export async function spoolBody(source: Readable, options: SpoolOptions = {}): Promise<SpoolOutcome> {
  const memoryBytes = options.memoryBytes ?? CGI_BODY_MEMORY_SPOOL_BYTES;
  const maxBytes = options.maxBytes ?? CGI_MAX_REQUEST_BODY_BYTES;
  const keepHeadBytes = options.keepHeadBytes ?? 0;
  const memory: Buffer[] = [];
  const headParts: Buffer[] = [];
  let headLength = 0;
  let length = 0;
  let file: FileHandle | undefined;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      length += chunk.length;
      if (headLength < keepHeadBytes) {
        const kept = chunk.subarray(0, keepHeadBytes - headLength);
        headParts.push(kept);
        headLength += kept.length;
      }
      if (length > maxBytes) {
        await file?.close();
        return { kind: 'too-large', limit: maxBytes };
      }
      if (!file && length <= memoryBytes) {
        memory.push(chunk);
        continue;
      }
      if (!file) {
        file = await openUnlinked(options.directory ?? tmpdir());
        for (const held of memory) await writeAll(file, held);
        memory.length = 0;
      }
      await writeAll(file, chunk);
    }
  } catch (error) {
    await file?.close().catch(() => {});
    return { kind: 'failed', error: error as Error };
  }
  const spooledFile = file;
  let used = false;
  return {
    kind: 'spooled',
    body: {
      length,
      head: Buffer.concat(headParts),
      stream() {
        if (used) throw new GatehouseError(ErrorCode.INVALID_STATE, 'a spooled body can be read once');
        used = true;
        if (!spooledFile)
          return Readable.from(length === 0 ? [] : [memory.length === 1 ? memory[0]! : Buffer.concat(memory)], { objectMode: false });
        return spooledFile.createReadStream({ start: 0, autoClose: true });
      },
      async dispose() {
        if (!used && spooledFile) {
          used = true;
          await spooledFile.close().catch(() => {});
        }
      },
    },
  };
}

/** A private temp file that is already unlinked: it disappears when its descriptor closes, even after a crash. */
async function openUnlinked(directory: string): Promise<FileHandle> {
  const path = join(directory, `gatehouse-body-${process.pid}-${randomBytes(8).toString('hex')}`);
  const handle = await fs.open(path, 'wx+', 0o600);
  await fs.unlink(path);
  return handle;
}

async function writeAll(file: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

/**
 * The access log: one line per request in a format of Apache's LogFormat
 * (combined by default, see access-log-format.ts), to a file or stdout,
 * written without blocking (src/log/writer.ts); lines are built only when
 * the log is on. The error log is a src/log Logger.
 */
import type { ServerResponse } from 'node:http';
import { droppedMessage, openLogWriter, type LogWriter, type Logger } from '../log/index.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { type AccessEntry, type AccessLineFormatter, compileAccessLogFormat } from './access-log-format.js';

export { apacheTime, type AccessEntry } from './access-log-format.js';

export class AccessLog {
  /** False for "off": callers skip building entries. */
  readonly enabled: boolean;
  readonly #writer: LogWriter | null;
  readonly #format: AccessLineFormatter;

  /**
   * `target`: a file, "-" for stdout, or "off". Lines dropped because they
   * came faster than they could be written are counted in the error log (a
   * line of another shape here would break the access log's parsers).
   */
  constructor(target: string, format: string, errorLog: Logger, maxBufferedBytes?: number) {
    const compiled = compileAccessLogFormat(format);
    if (typeof compiled !== 'function') throw new GatehouseError(ErrorCode.CONFIG_INVALID, `access-log-format: ${compiled.problem}`);
    this.#format = compiled;
    this.enabled = target !== 'off';
    this.#writer = this.enabled
      ? openLogWriter(target, 'stdout', {
          ...(maxBufferedBytes !== undefined ? { maxBufferedBytes } : {}),
          onDrop: (count) => {
            errorLog.warn(droppedMessage(count, 'access log'));
            return undefined;
          },
          onError: (error) => errorLog.error(`cannot write the access log ${target}: ${error.message}`),
        })
      : null;
  }

  write(entry: AccessEntry): void {
    this.#writer?.write(`${this.#format(entry)}\n`);
  }

  reopen(): Promise<void> {
    return this.#writer?.reopen() ?? Promise.resolve();
  }

  flush(): Promise<void> {
    return this.#writer?.flush() ?? Promise.resolve();
  }

  close(): Promise<void> {
    return this.#writer?.close() ?? Promise.resolve();
  }
}

/** Counts the body bytes a response sends, for %b, by watching write() and end(). */
export function countResponseBytes(res: ServerResponse): () => number {
  let bytes = 0;
  const count = (chunk: unknown, encoding?: unknown) => {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    bytes +=
      typeof chunk === 'string'
        ? Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : (chunk as Uint8Array).length;
  };
  const write = res.write;
  const end = res.end;
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    count(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof res.write;
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    count(chunk, rest[0]);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as typeof res.end;
  return () => (res.req?.method === 'HEAD' ? 0 : bytes);
}

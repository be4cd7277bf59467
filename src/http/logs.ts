/**
 * The access log: one line per request in a format of Apache's LogFormat
 * (combined by default, see src/log/access-log-format.ts), to a file or stdout,
 * written without blocking (src/log/writer.ts); lines are built only when
 * the log is on. The error log is a src/log Logger.
 */
import { type IncomingMessage, ServerResponse } from 'node:http';
import { droppedMessage, openLogWriter, type LogWriter, type Logger } from '../log/index.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import { type AccessEntry, type AccessLineFormatter, compileAccessLogFormat } from '../log/access-log-format.js';

export { apacheTime, type AccessEntry } from '../log/access-log-format.js';

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

/**
 * The response class of serve's HTTP servers (node:http's `ServerResponse`
 * option): it counts the body bytes handed to write() and end(), for the
 * access log's %b. Methods of a class rather than closures put on each
 * response: that costs four closures per request and gives every response a
 * shape of its own, which slows each later property access node:http makes.
 * node:http's own end() does not call write(), so nothing is counted twice.
 */
export class CountingServerResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {
  #bodyBytes = 0;

  /** Body bytes sent so far (0 for HEAD, whose body is never sent). */
  get bodyBytes(): number {
    return this.req?.method === 'HEAD' ? 0 : this.#bodyBytes;
  }

  override write(chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
    this.#count(chunk, encoding);
    return super.write(chunk, encoding as BufferEncoding, callback as (error: Error | null | undefined) => void);
  }

  override end(chunk?: unknown, encoding?: unknown, callback?: unknown): this {
    this.#count(chunk, encoding);
    return super.end(chunk, encoding as BufferEncoding, callback as () => void);
  }

  #count(chunk: unknown, encoding: unknown): void {
    if (chunk === undefined || chunk === null || typeof chunk === 'function') return;
    this.#bodyBytes +=
      typeof chunk === 'string'
        ? Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : (chunk as Uint8Array).length;
  }
}

/** The body bytes a response sent, for %b (0 from a response that is not serve's own). */
export function responseBodyBytes(res: ServerResponse): number {
  return res instanceof CountingServerResponse ? res.bodyBytes : 0;
}

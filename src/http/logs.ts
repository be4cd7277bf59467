/**
 * The access log (Apache's combined format) and the error log, to files or to
 * stdout/stderr. Writes are appended through a stream so a slow disk never
 * blocks a request; lines are built only when the log is on.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface LogTarget {
  /** False for "off": callers skip building lines. */
  readonly enabled: boolean;
  write(line: string): void;
  close(): Promise<void>;
}

/** "-" is stdout (access log) or stderr (error log); "off" discards. */
export function openLog(target: string, console: 'stdout' | 'stderr'): LogTarget {
  if (target === 'off') return { enabled: false, write: () => {}, close: async () => {} };
  if (target === '-') {
    const stream = console === 'stdout' ? process.stdout : process.stderr;
    return { enabled: true, write: (line) => void stream.write(`${line}\n`), close: async () => {} };
  }
  const stream: WriteStream = createWriteStream(target, { flags: 'a', mode: 0o640 });
  stream.on('error', (error) => process.stderr.write(`gatehouse: cannot write log ${target}: ${error.message}\n`));
  return {
    enabled: true,
    write: (line) => void stream.write(`${line}\n`),
    close: () => new Promise((resolve) => stream.end(resolve)),
  };
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const two = (n: number) => String(n).padStart(2, '0');

/** Apache's %t: [23/Nov/2026:17:40:00 +0000]. */
export function apacheTime(date: Date): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const zone = `${sign}${two(Math.floor(Math.abs(offset) / 60))}${two(Math.abs(offset) % 60)}`;
  return `[${two(date.getDate())}/${MONTHS[date.getMonth()]}/${date.getFullYear()}:${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${zone}]`;
}

/** The error log's time stamp, as Apache 2.4 writes it: [Mon Nov 23 17:40:00.123456 2026]. */
export function errorLogTime(date: Date): string {
  const micros = String(date.getMilliseconds() * 1000).padStart(6, '0');
  return `[${DAYS[date.getDay()]} ${MONTHS[date.getMonth()]} ${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}.${micros} ${date.getFullYear()}]`;
}

/** Escapes what Apache escapes in log fields: quotes, backslashes and control bytes. */
function escapeField(value: string): string {
  return value.replace(/[\\"\x00-\x1f\x7f-\xff]/g, (char) =>
    char === '"' ? '\\"' : char === '\\' ? '\\\\' : `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

/**
 * %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i". `remoteAddress` is
 * read when the request arrives: by the time the response has finished, Node
 * may have detached the socket (req.socket is then null).
 */
export function combinedLogLine(
  req: IncomingMessage,
  res: ServerResponse,
  bodyBytes: number,
  when: Date,
  remoteAddress: string | undefined,
  remoteUser?: string,
): string {
  const requestLine = `${req.method} ${req.url} HTTP/${req.httpVersion}`;
  const referer = req.headers.referer ?? '-';
  const agent = req.headers['user-agent'] ?? '-';
  const status = res.headersSent ? res.statusCode : 0;
  return `${remoteAddress ?? '-'} - ${remoteUser ? escapeField(remoteUser) : '-'} ${apacheTime(when)} "${escapeField(requestLine)}" ${status || '-'} ${bodyBytes > 0 ? bodyBytes : '-'} "${escapeField(referer)}" "${escapeField(agent)}"`;
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

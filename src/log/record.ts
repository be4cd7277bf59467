/**
 * One log line, the same for every command: when, how serious, which process
 * (its role and pid), what happened.
 *
 *   text:  2026-12-02T09:23:58.084Z error cgid[4665]: the message
 *   json:  {"time":"2026-12-02T09:23:58.084Z","level":"error","role":"cgid","pid":4665,"message":"the message"}
 *
 * Time is UTC with milliseconds (ISO 8601), so lines of several processes and
 * machines sort together. A message never spans lines: in the text format
 * control characters are escaped (a script's stderr cannot forge a line), in
 * JSON they are JSON's escapes. Pure: no I/O.
 */

/** From the most to the least serious; a logger at a level writes that level and the ones before it. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export const DEFAULT_LOG_LEVEL: LogLevel = 'info';
export const DEFAULT_LOG_FORMAT: LogFormat = 'text';

export interface LogRecord {
  time: Date;
  level: LogLevel;
  /** The command or part of it: serve, cgid, kfcgi. */
  role: string;
  pid: number;
  message: string;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** True when a logger set to `threshold` writes a record of `level`. */
export function levelEnabled(threshold: LogLevel, level: LogLevel): boolean {
  return RANK[level] <= RANK[threshold];
}

export function isLogLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value);
}

export function isLogFormat(value: unknown): value is LogFormat {
  return typeof value === 'string' && (LOG_FORMATS as readonly string[]).includes(value);
}

/** Control characters (and DEL) as \n, \r, \t or \xHH: one record, one line. */
export function escapeControl(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, (char) => {
    if (char === '\n') return '\\n';
    if (char === '\r') return '\\r';
    if (char === '\t') return '\\t';
    return `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

/** The record as one line, without its newline. */
export function formatRecord(record: LogRecord, format: LogFormat): string {
  const time = record.time.toISOString();
  if (format === 'json') return JSON.stringify({ time, level: record.level, role: record.role, pid: record.pid, message: record.message });
  return `${time} ${record.level} ${record.role}[${record.pid}]: ${escapeControl(record.message)}`;
}

/**
 * A JSON line written by formatRecord, read back (the cgid daemon sends its
 * records to the front this way); null for anything else, so the caller can
 * log a stray line (a crash trace) as it is.
 */
export function parseJsonRecord(line: string): LogRecord | null {
  if (!line.startsWith('{')) return null;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const { time, level, role, pid, message } = value as Record<string, unknown>;
  if (typeof time !== 'string' || !isLogLevel(level) || typeof role !== 'string' || typeof message !== 'string') return null;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid)) return null;
  const date = new Date(time);
  if (Number.isNaN(date.getTime())) return null;
  return { time: date, level, role, pid, message };
}

/**
 * The logger every command uses: records (time, level, role, pid, message)
 * filtered by a level and handed to sinks: a log file or the console in the
 * text or JSON format (src/log/record.ts), or the system log. Writing never
 * blocks (src/log/writer.ts).
 *
 * Code that only produces lines gets `logger.line`, a `(line, level?)`
 * callback: the `errorLog` option of the Node handlers and the `log` option
 * of the cgid daemon and supervisor; a line without a level is an error, as
 * everything in Apache's error log was before levels.
 */
import {
  type LogFormat,
  type LogLevel,
  type LogRecord,
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  formatRecord,
  levelEnabled,
} from './record.js';
import { openLogWriter, type LogWriter } from './writer.js';

/** Where records go. */
export interface LogSink {
  accept(record: LogRecord): void;
  reopen(): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** The `errorLog` / `log` callback shape. */
export type LogLine = (line: string, level?: LogLevel) => void;

/** Records as lines of text or JSON on a writer (a file, or the console). */
export class WriterSink implements LogSink {
  readonly writer: LogWriter;
  readonly #format: LogFormat;
  constructor(writer: LogWriter, format: LogFormat) {
    this.writer = writer;
    this.#format = format;
  }
  accept(record: LogRecord): void {
    this.writer.write(`${formatRecord(record, this.#format)}\n`);
  }
  reopen(): Promise<void> {
    return this.writer.reopen();
  }
  flush(): Promise<void> {
    return this.writer.flush();
  }
  close(): Promise<void> {
    return this.writer.close();
  }
}

export interface LoggerOptions {
  /** serve, cgid, kfcgi: the name before [pid] in every line. */
  role: string;
  level?: LogLevel;
  format?: LogFormat;
  sinks?: LogSink[];
  pid?: number;
}

export class Logger {
  readonly role: string;
  readonly level: LogLevel;
  readonly format: LogFormat;
  readonly pid: number;
  readonly #sinks: LogSink[];

  constructor(options: LoggerOptions) {
    this.role = options.role;
    this.level = options.level ?? DEFAULT_LOG_LEVEL;
    this.format = options.format ?? DEFAULT_LOG_FORMAT;
    this.pid = options.pid ?? process.pid;
    this.#sinks = [...(options.sinks ?? [])];
  }

  addSink(sink: LogSink): void {
    this.#sinks.push(sink);
  }

  /** False when a record of this level would be dropped: callers skip building costly messages. */
  enabled(level: LogLevel): boolean {
    return levelEnabled(this.level, level);
  }

  log(level: LogLevel, message: string): void {
    if (!levelEnabled(this.level, level)) return;
    const record: LogRecord = { time: new Date(), level, role: this.role, pid: this.pid, message };
    for (const sink of this.#sinks) sink.accept(record);
  }

  error(message: string): void {
    this.log('error', message);
  }
  warn(message: string): void {
    this.log('warn', message);
  }
  info(message: string): void {
    this.log('info', message);
  }
  debug(message: string): void {
    this.log('debug', message);
  }

  /** A record made by another process (the cgid daemon's, read from its stderr): its own time, role and pid are kept. */
  emit(record: LogRecord): void {
    if (!levelEnabled(this.level, record.level)) return;
    for (const sink of this.#sinks) sink.accept(record);
  }

  /** The `(line, level?)` callback for code that only produces lines; no level means error. */
  readonly line: LogLine = (line, level = 'error') => this.log(level, line);

  /** One line in this logger's format (with its newline), for a writer that reports on itself (dropped lines). */
  formatLine(level: LogLevel, message: string): string {
    return `${formatRecord({ time: new Date(), level, role: this.role, pid: this.pid, message }, this.format)}\n`;
  }

  /** Reopens every sink (SIGUSR1); a sink that cannot reopen keeps its old file, and the failure is logged. */
  async reopen(): Promise<void> {
    const failures: string[] = [];
    for (const sink of this.#sinks) {
      try {
        await sink.reopen();
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
    for (const failure of failures) this.error(`${failure}; still writing to the file it had`);
  }

  async flush(): Promise<void> {
    await Promise.all(this.#sinks.map((sink) => sink.flush()));
  }

  /** Flushes and closes every sink: the last thing a command does before it exits. */
  async close(): Promise<void> {
    await Promise.all(this.#sinks.map((sink) => sink.close()));
  }
}

/** What the commands log: one target (a file, or "-" for stderr), a level and a format. */
export interface OpenLoggerOptions {
  role: string;
  level?: LogLevel;
  format?: LogFormat;
  /** A file path, or "-" for the console stream. */
  target: string;
  console?: 'stdout' | 'stderr';
  maxBufferedBytes?: number;
}

/** A logger writing to one file or to stderr; lines it had to drop are counted in a line of its own. */
export function openLogger(options: OpenLoggerOptions): Logger {
  const logger = new Logger({
    role: options.role,
    ...(options.level ? { level: options.level } : {}),
    ...(options.format ? { format: options.format } : {}),
  });
  const writer = openLogWriter(options.target, options.console ?? 'stderr', {
    ...(options.maxBufferedBytes !== undefined ? { maxBufferedBytes: options.maxBufferedBytes } : {}),
    onDrop: (count) => logger.formatLine('warn', droppedMessage(count, 'log')),
    onError: (error) => process.stderr.write(logger.formatLine('error', `cannot write the log ${writer.target}: ${error.message}`)),
  });
  logger.addSink(new WriterSink(writer, logger.format));
  return logger;
}

/** The line that says how many lines a log dropped. */
export function droppedMessage(count: number, what: string): string {
  return `${count} ${what} line${count === 1 ? '' : 's'} dropped: they came faster than the ${what} could be written`;
}

const consoleLoggers = new Map<string, Logger>();

/**
 * For a library user who passes no `errorLog` (the cgi() and fastcgi()
 * handlers inside Express): lines on stderr in the one format, written
 * without blocking; one logger per role, made on first use.
 */
export function stderrLogLine(role: string): LogLine {
  return (line, level) => {
    let logger = consoleLoggers.get(role);
    if (!logger) {
      logger = openLogger({ role, target: '-' });
      consoleLoggers.set(role, logger);
    }
    logger.line(line, level);
  };
}

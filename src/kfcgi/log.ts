/**
 * kfcgi's log, on the shared logger (src/log): through the system log as
 * kfcgi(8) does (opened before the jail, with LOG_NDELAY, so it keeps working
 * inside a chroot without /dev/log), or to a file (-E), and with -d to
 * standard error as well. Without a syslog socket (containers, minimal
 * systems) it logs to standard error instead and says so once, rather than
 * send every message nowhere. Every line names the object: `worker 1234: ...`.
 */
import {
  type LogFormat,
  type LogLevel,
  Logger as SharedLogger,
  openLogWriter,
  SyslogSink,
  systemLogAvailable,
  WriterSink,
} from '../log/index.js';
import path from 'node:path';
import { SYSLOG_SOCKET_PATH } from '../limits.js';
import { AT_FDCWD, closeDescriptor, openAt, openForAppendAt } from '../sys/index.js';

/** kfcgi's names for the levels; notice is logged as info (syslog's LOG_INFO). */
export type Level = 'error' | 'warning' | 'notice' | 'info' | 'debug';

export interface Logger {
  error(message: string): void;
  warning(message: string): void;
  notice(message: string): void;
  info(message: string): void;
  /** Only at level debug (-v or -L debug). */
  debug(message: string): void;
  /** True at level debug: callers skip building debug messages otherwise. */
  readonly verbose: boolean;
  /** SIGUSR1: the log file (-E) flushed and opened again by name. */
  reopen(): Promise<void>;
  /** Everything logged so far written out; the log closed. */
  close(): Promise<void>;
}

export interface LoggerOptions {
  /** Also write to standard error (-d). */
  stderr: boolean;
  /** A log file instead of the system log (-E). */
  file?: string | null;
  level?: LogLevel;
  format?: LogFormat;
  ident?: string;
  /** Where the syslog socket is looked for (tests). */
  syslogSocket?: string;
}

/** Where the log goes, for the line the launching process prints. */
export function logDestination(options: Pick<LoggerOptions, 'file' | 'syslogSocket'>): 'file' | 'syslog' | 'stderr' {
  if (options.file) return 'file';
  return systemLogAvailable(options.syslogSocket ?? SYSLOG_SOCKET_PATH) ? 'syslog' : 'stderr';
}

export function createLogger(options: LoggerOptions): Logger {
  const logger = new SharedLogger({
    role: 'kfcgi',
    ...(options.level ? { level: options.level } : {}),
    ...(options.format ? { format: options.format } : {}),
  });
  const writerOptions = {
    onDrop: (count: number) =>
      logger.formatLine('warn', `${count} log line${count === 1 ? '' : 's'} dropped: they came faster than the log could be written`),
  };
  const destination = logDestination(options);
  const toStderr = options.stderr || destination === 'stderr';
  let directory = -1;
  if (destination === 'file') {
    const file = options.file!;
    // Kept open (close-on-exec) from before the jail: SIGUSR1 opens the file by name through it, also inside the chroot.
    directory = openAt(AT_FDCWD, path.dirname(file), true);
    const writer = openLogWriter(file, 'stderr', {
      ...writerOptions,
      openAgain: () => openForAppendAt(directory, path.basename(file), 0o640),
    });
    logger.addSink(new WriterSink(writer, logger.format));
  }
  if (destination === 'syslog') logger.addSink(new SyslogSink(options.ident ?? 'gatehouse-kfcgi'));
  if (toStderr) logger.addSink(new WriterSink(openLogWriter('-', 'stderr', writerOptions), logger.format));
  if (destination === 'stderr')
    logger.warn(`no system log socket at ${options.syslogSocket ?? SYSLOG_SOCKET_PATH}: logging to standard error instead`);
  return {
    error: (message) => logger.error(message),
    warning: (message) => logger.warn(message),
    notice: (message) => logger.info(message),
    info: (message) => logger.info(message),
    debug: (message) => logger.debug(message),
    verbose: logger.enabled('debug'),
    reopen: async () => {
      await logger.reopen();
      logger.info('SIGUSR1: log files reopened');
    },
    close: async () => {
      await logger.close();
      if (directory >= 0) closeDescriptor(directory);
      directory = -1;
    },
  };
}

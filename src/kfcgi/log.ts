/**
 * kfcgi's log: the system log (opened before the jail, with LOG_NDELAY, so it
 * keeps working inside a chroot without /dev/log) and, with -d, standard
 * error as well. Every line names the object: `worker 1234: ...`.
 */
import { openSystemLog, writeSystemLog, SyslogPriority } from '../sys/index.js';

export type Level = 'error' | 'warning' | 'notice' | 'info' | 'debug';

const PRIORITY: Record<Level, SyslogPriority> = {
  error: SyslogPriority.ERR,
  warning: SyslogPriority.WARNING,
  notice: SyslogPriority.NOTICE,
  info: SyslogPriority.INFO,
  debug: SyslogPriority.DEBUG,
};

export interface Logger {
  error(message: string): void;
  warning(message: string): void;
  notice(message: string): void;
  info(message: string): void;
  /** Only with -v. */
  debug(message: string): void;
  readonly verbose: boolean;
}

export interface LoggerOptions {
  /** Also write to standard error (-d). */
  stderr: boolean;
  /** Write to the system log. */
  syslog: boolean;
  verbose: boolean;
  ident?: string;
}

export function createLogger(options: LoggerOptions): Logger {
  if (options.syslog) openSystemLog(options.ident ?? 'gatehouse-kfcgi');
  const write = (level: Level, message: string) => {
    if (level === 'debug' && !options.verbose) return;
    if (options.syslog) writeSystemLog(PRIORITY[level], message);
    if (options.stderr)
      process.stderr.write(`gatehouse kfcgi[${process.pid}]: ${level === 'info' || level === 'debug' ? '' : `${level}: `}${message}\n`);
  };
  return {
    error: (message) => write('error', message),
    warning: (message) => write('warning', message),
    notice: (message) => write('notice', message),
    info: (message) => write('info', message),
    debug: (message) => write('debug', message),
    verbose: options.verbose,
  };
}

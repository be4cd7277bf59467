/**
 * The system log as a sink, for kfcgi (kfcgi(8) logs through syslog(3)).
 * The message alone is sent: syslog adds the time, the ident and the pid.
 * syslog(3) is a datagram to the syslog socket; the kfcgi manager logs
 * workers' starts, exits and output, never once per request, so it is called
 * directly.
 */
import { statSync } from 'node:fs';
import { SYSLOG_SOCKET_PATH } from '../limits.js';
import { openSystemLog, SyslogPriority, writeSystemLog } from '../sys/index.js';
import type { LogSink } from './logger.js';
import type { LogLevel, LogRecord } from './record.js';

const PRIORITY: Record<LogLevel, SyslogPriority> = {
  error: SyslogPriority.ERR,
  warn: SyslogPriority.WARNING,
  info: SyslogPriority.INFO,
  debug: SyslogPriority.DEBUG,
};

/** True when a syslog daemon's socket is there to receive (missing in most containers and on minimal systems). */
export function systemLogAvailable(socketPath: string = SYSLOG_SOCKET_PATH): boolean {
  try {
    return statSync(socketPath).isSocket();
  } catch {
    return false;
  }
}

export class SyslogSink implements LogSink {
  /** Opens the connection now (LOG_NDELAY), so it keeps working inside a chroot without /dev/log. */
  constructor(ident: string) {
    openSystemLog(ident);
  }
  accept(record: LogRecord): void {
    writeSystemLog(PRIORITY[record.level], record.message);
  }
  async reopen(): Promise<void> {}
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

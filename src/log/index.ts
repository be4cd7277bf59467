/** Logging for every command: one line format (text or JSON), levels, non-blocking writers, reopen on SIGUSR1. */
export {
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  LOG_FORMATS,
  LOG_LEVELS,
  escapeControl,
  formatRecord,
  isLogFormat,
  isLogLevel,
  levelEnabled,
  parseJsonRecord,
  type LogFormat,
  type LogLevel,
  type LogRecord,
} from './record.js';
export {
  Logger,
  WriterSink,
  droppedMessage,
  openLogger,
  stderrLogLine,
  type LogLine,
  type LogSink,
  type OpenLoggerOptions,
} from './logger.js';
export { openLogWriter, type LogWriter, type LogWriterOptions } from './writer.js';
export { SyslogSink, systemLogAvailable } from './syslog.js';
export { onReopenSignal } from './reopen-signal.js';

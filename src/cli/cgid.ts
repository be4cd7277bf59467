/**
 * `gatehouse cgid`: the CGI daemon on ScriptSock (what `gatehouse serve`
 * starts as its child), or, with --fastcgi, a FastCGI responder that runs CGI
 * scripts for nginx (fcgiwrap's place). See man/gatehouse-cgid.8.
 *
 * main() reads as a straight line: parse and check every flag, then either
 * the FastCGI face or the daemon: runtime directory, every check of the
 * socket's place, token, socket, token file, ready (checks before writes).
 */
import { readFileSync, renameSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import { CgidDaemon, newInstanceToken } from '../cgid/daemon.js';
import { createFastCGIFace } from '../cgid/fastcgi-face.js';
import { PosixSpawnSpawner } from '../spawn/posix-spawner.js';
import type { ScriptLimits } from '../cgid/protocol.js';
import { checkSocketPlace, defaultRuntimeDirectory, ensureRuntimeDirectory, scriptSockPath } from '../cgid/socket-path.js';
import { ScriptLog } from '../cgi/script-log.js';
import { type LongOption, optionHelpRows, readOptionValues, splitLongOptions } from '../options/command-line.js';
import { formatListenAddress, LISTEN_ADDRESS, netListenOptions, type ListenAddress } from '../options/listen-address.js';
import { ErrorCode, GatehouseError, UsageError } from '../errors.js';
import {
  CGID_SCRIPT_SOCK,
  CGID_SUEXEC_MIN_GID,
  CGID_SUEXEC_MIN_UID,
  CGID_TOKEN_BYTES,
  CGI_SCRIPT_LOG_BUFFER,
  CGI_SCRIPT_LOG_LENGTH,
  CGI_SCRIPT_TIMEOUT_MS,
  HTTP_SEND_TIMEOUT_MS,
} from '../limits.js';
import { dieWithParent } from '../sys/index.js';
import {
  DEFAULT_LOG_FORMAT,
  DEFAULT_LOG_LEVEL,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
  type Logger,
  onReopenSignal,
  openLogger,
} from '../log/index.js';

/** Every flag, for parsing, --help and the manual page (a test keeps man/gatehouse-cgid.8 in step). */
export const CGID_OPTIONS: readonly LongOption[] = [
  {
    name: 'script-sock',
    kind: 'string',
    argument: 'PREFIX',
    summary: "ScriptSock: socket path prefix; the daemon's pid is appended; relative to --runtime-dir",
    defaultText: CGID_SCRIPT_SOCK,
  },
  {
    name: 'runtime-dir',
    kind: 'string',
    argument: 'DIR',
    summary: 'DefaultRuntimeDir: where a relative ScriptSock lives (created 0700; refused when others can write it)',
    defaultText: '/run/gatehouse as root, else $XDG_RUNTIME_DIR/gatehouse or $TMPDIR/gatehouse-UID',
  },
  { name: 'socket', kind: 'string', argument: 'PATH', summary: 'the exact socket path (no pid appended); what gatehouse serve passes' },
  {
    name: 'token-file',
    kind: 'string',
    argument: 'FILE',
    summary: 'read the instance token from FILE (mode 0600); default $GATEHOUSE_CGID_TOKEN, else a new one written to SOCKET.token',
  },
  {
    name: 'parent-pid',
    kind: 'integer',
    min: 1,
    argument: 'PID',
    summary: 'exit (terminating scripts) when this process, the front that started the daemon, dies',
  },
  {
    name: 'fastcgi',
    kind: 'address',
    address: LISTEN_ADDRESS,
    argument: 'ADDR',
    summary:
      'run the FastCGI face instead: listen as a FastCGI responder on unix:PATH, HOST:PORT or fd:N (an inherited socket), for nginx, like fcgiwrap',
  },
  {
    name: 'script-timeout',
    kind: 'duration',
    min: 1,
    argument: 'TIME',
    summary: 'FastCGI face: kill a script that writes nothing for this long (CGIDScriptTimeout): 20, 20s, 500ms',
    defaultText: `${CGI_SCRIPT_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'send-timeout',
    kind: 'duration',
    argument: 'TIME',
    summary: 'FastCGI face: a web server that takes none of the output for this long is disconnected and its scripts killed (0: none)',
    defaultText: `${HTTP_SEND_TIMEOUT_MS / 1000}s`,
  },
  { name: 'script-log', kind: 'string', argument: 'FILE', summary: "FastCGI face: ScriptLog, failed runs in mod_cgi's format" },
  { name: 'script-log-length', kind: 'size', argument: 'SIZE', summary: 'ScriptLogLength', defaultText: String(CGI_SCRIPT_LOG_LENGTH) },
  { name: 'script-log-buffer', kind: 'size', argument: 'SIZE', summary: 'ScriptLogBuffer', defaultText: String(CGI_SCRIPT_LOG_BUFFER) },
  { name: 'rlimit-cpu', kind: 'integer', argument: 'SECONDS', summary: 'RLimitCPU: CPU seconds per script (0: none)', defaultText: '0' },
  {
    name: 'rlimit-mem',
    kind: 'size',
    argument: 'SIZE',
    summary: 'RLimitMEM: address space per script, e.g. 512M (0: none)',
    defaultText: '0',
  },
  {
    name: 'rlimit-nproc',
    kind: 'integer',
    argument: 'N',
    summary: "RLimitNPROC: processes of the script's user (not enforced for root) (0: none)",
    defaultText: '0',
  },
  { name: 'rlimit-nofile', kind: 'integer', argument: 'N', summary: 'open files per script (0: none)', defaultText: '0' },
  {
    name: 'max-output',
    kind: 'size',
    argument: 'SIZE',
    summary: "FastCGI face: a script's output cap; past it the script is killed and its output cut (0: none)",
    defaultText: '0',
  },
  {
    name: 'suexec-min-uid',
    kind: 'integer',
    argument: 'UID',
    summary: 'suexec: lowest uid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_UID),
  },
  {
    name: 'suexec-min-gid',
    kind: 'integer',
    argument: 'GID',
    summary: 'suexec: lowest gid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_GID),
  },
  {
    name: 'error-log',
    kind: 'string',
    argument: 'FILE',
    summary: 'write the log to FILE (reopened on SIGUSR1); - for standard error',
    defaultText: '-',
  },
  {
    name: 'log-level',
    kind: 'choice',
    choices: LOG_LEVELS,
    argument: 'LEVEL',
    summary: `least serious lines logged: ${LOG_LEVELS.join(', ')}`,
    defaultText: DEFAULT_LOG_LEVEL,
  },
  {
    name: 'log-format',
    kind: 'choice',
    choices: LOG_FORMATS,
    argument: 'FORMAT',
    summary: 'text (TIME LEVEL cgid[PID]: MESSAGE) or json (one object per line, same fields; what gatehouse serve reads from its daemon)',
    defaultText: DEFAULT_LOG_FORMAT,
  },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export function cgidUsage(): string {
  return [
    'usage: gatehouse cgid [options]            the CGI daemon on ScriptSock',
    '       gatehouse cgid --fastcgi ADDR [options]   CGI scripts as a FastCGI responder (for nginx)',
    '',
    'options:',
    ...optionHelpRows(CGID_OPTIONS),
    '',
    'Sizes are bytes or 512K, 64M, 2G; times 20 (seconds), 20s, 500ms, 2m.',
  ].join('\n');
}

/** The flags' values, read by their grammars (src/options); UsageError for any mistake. */
export function parseCgidOptions(argv: readonly string[]): Record<string, unknown> {
  return readOptionValues(splitLongOptions(argv, CGID_OPTIONS), CGID_OPTIONS);
}

export async function main(argv: string[]): Promise<number> {
  let v: Record<string, unknown>;
  try {
    v = parseCgidOptions(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    const lines = error.problems.map((problem) => `gatehouse cgid: ${problem}`).join('\n');
    process.stderr.write(`${lines}\nRun 'gatehouse cgid --help' for the options.\n`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(`${cgidUsage()}\n`);
    return 0;
  }
  let logger: Logger;
  try {
    logger = openLogger({
      role: 'cgid',
      level: (v['log-level'] as LogLevel | undefined) ?? DEFAULT_LOG_LEVEL,
      format: (v['log-format'] as LogFormat | undefined) ?? DEFAULT_LOG_FORMAT,
      target: (v['error-log'] as string | undefined) ?? '-',
    });
  } catch (error) {
    process.stderr.write(`gatehouse cgid: ${(error as Error).message}\n`);
    return 1;
  }
  // Also what keeps Node from opening its inspector on SIGUSR1.
  const stopReopening = onReopenSignal(async () => {
    await logger.reopen();
    logger.info('SIGUSR1: log files reopened');
  });
  const finish = async (status: number) => {
    stopReopening();
    await logger.close();
    return status;
  };
  const log = logger.line;
  // Failures to start go to the log (under gatehouse serve: to the front, as records); with a log file, to stderr as well.
  const cannotStart = (error: unknown) => {
    const message = (error as Error).message;
    logger.error(message);
    if (v['error-log'] !== undefined && v['error-log'] !== '-') process.stderr.write(`gatehouse cgid: ${message}\n`);
    return finish(1);
  };
  const limits: ScriptLimits = {
    cpuSeconds: (v['rlimit-cpu'] as number) ?? 0,
    memoryBytes: (v['rlimit-mem'] as number) ?? 0,
    processes: (v['rlimit-nproc'] as number) ?? 0,
    openFiles: (v['rlimit-nofile'] as number) ?? 0,
    outputBytes: (v['max-output'] as number) ?? 0,
  };
  const launch = {
    minUid: (v['suexec-min-uid'] as number) ?? CGID_SUEXEC_MIN_UID,
    minGid: (v['suexec-min-gid'] as number) ?? CGID_SUEXEC_MIN_GID,
    log,
  };

  if (v.fastcgi !== undefined) return finish(await runFastCGIFace(v.fastcgi as ListenAddress, v, limits, launch, logger));

  if (typeof v['parent-pid'] === 'number' && !dieWithParent('SIGTERM', v['parent-pid'])) {
    log(`the front (pid ${v['parent-pid']}) is already gone: not starting`);
    return finish(1);
  }
  // Every check comes before any write: a daemon refused because another one answers on the socket, or because the
  // directory is unsafe, must not have replaced that daemon's token file or left one of its own behind.
  let socketPath: string;
  let token: { token: Buffer; generated: boolean };
  try {
    if (typeof v.socket === 'string') socketPath = v.socket;
    else {
      const runtimeDir = typeof v['runtime-dir'] === 'string' ? v['runtime-dir'] : defaultRuntimeDirectory();
      ensureRuntimeDirectory(runtimeDir);
      socketPath = scriptSockPath(typeof v['script-sock'] === 'string' ? v['script-sock'] : CGID_SCRIPT_SOCK, runtimeDir);
    }
    checkSocketPlace(socketPath);
    token = readToken(v['token-file'] as string | undefined);
  } catch (error) {
    return cannotStart(error);
  }
  const daemon = new CgidDaemon({ socketPath, token: token.token, log, launch, limits });
  try {
    daemon.start();
    // Written once the socket is ours (bind succeeded): a daemon that lost a race for the path never touches it.
    if (token.generated) writeTokenFile(`${socketPath}.token`, token.token);
  } catch (error) {
    void daemon.stop();
    return cannotStart(error);
  }
  process.stdout.write(`ready ${process.pid} ${socketPath}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log(`${signal}: terminating ${daemon.running} script(s) and exiting`, 'info');
      void daemon
        .stop()
        .then(() => {
          if (generatedTokenFile) {
            try {
              unlinkSync(generatedTokenFile);
            } catch {
              /* already gone */
            }
          }
          return finish(0);
        })
        .then((status) => {
          resolve(status);
          setTimeout(() => process.exit(status), 100).unref();
        });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    process.once('SIGQUIT', stop);
  });
}

let generatedTokenFile: string | null = null;

/**
 * The instance token: $GATEHOUSE_CGID_TOKEN (hex, removed from the
 * environment), a token file, or a new one (`generated`: the caller writes it
 * next to the socket once the socket is bound). Reads, never writes.
 */
function readToken(tokenFile: string | undefined): { token: Buffer; generated: boolean } {
  const fromEnvironment = process.env.GATEHOUSE_CGID_TOKEN;
  delete process.env.GATEHOUSE_CGID_TOKEN;
  if (fromEnvironment) {
    if (!/^([0-9a-f]{2}){16,}$/i.test(fromEnvironment))
      throw new GatehouseError(ErrorCode.CGID_SETUP, 'GATEHOUSE_CGID_TOKEN must be at least 32 hex digits');
    return { token: Buffer.from(fromEnvironment, 'hex'), generated: false };
  }
  if (tokenFile) {
    const stat = statSync(tokenFile);
    if ((stat.mode & 0o077) !== 0)
      throw new GatehouseError(
        ErrorCode.CGID_SETUP,
        `the token file ${tokenFile} is readable or writable by others (mode ${(stat.mode & 0o777).toString(8)}): run 'chmod 600 ${tokenFile}'`,
      );
    const text = readFileSync(tokenFile, 'utf8').trim();
    if (!/^([0-9a-f]{2}){16,}$/i.test(text))
      throw new GatehouseError(ErrorCode.CGID_SETUP, `the token file ${tokenFile} must hold at least 32 hex digits`);
    return { token: Buffer.from(text, 'hex'), generated: false };
  }
  return { token: newInstanceToken(CGID_TOKEN_BYTES), generated: true };
}

/**
 * Writes a generated token, mode 0600 from creation, to a private name first
 * and then renamed over `file` (a stale one left by a daemon that died): a
 * reader sees the old file or the whole new one, never a half-written one.
 */
function writeTokenFile(file: string, token: Buffer): void {
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${token.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  try {
    renameSync(temporary, file);
  } catch (error) {
    unlinkSync(temporary);
    throw error;
  }
  generatedTokenFile = file;
}

async function runFastCGIFace(
  address: ListenAddress,
  v: Record<string, unknown>,
  limits: ScriptLimits,
  launch: { minUid: number; minGid: number; log: (line: string, level?: LogLevel) => void },
  logger: Logger,
): Promise<number> {
  const log = logger.line;
  const scriptLog =
    typeof v['script-log'] === 'string'
      ? new ScriptLog({
          path: v['script-log'],
          maxLength: (v['script-log-length'] as number) ?? CGI_SCRIPT_LOG_LENGTH,
          bodyBytes: (v['script-log-buffer'] as number) ?? CGI_SCRIPT_LOG_BUFFER,
          onError: (error) => log(`cannot write the script log ${String(v['script-log'])}: ${error.message}`),
        })
      : undefined;
  const server = createFastCGIFace({
    spawner: new PosixSpawnSpawner({ limits }, launch),
    timeoutMs: (v['script-timeout'] as number) ?? CGI_SCRIPT_TIMEOUT_MS,
    ...(scriptLog ? { scriptLog } : {}),
    log,
    server: { sendTimeoutMs: (v['send-timeout'] as number) ?? HTTP_SEND_TIMEOUT_MS },
  });
  server.on('connectionError', (error: Error) => log(error.message, 'warn'));
  const previousUmask = address.kind === 'unix' ? process.umask(0o117) : null;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(netListenOptions(address), () => resolve());
    });
  } catch (error) {
    process.stderr.write(`gatehouse cgid: cannot listen on ${formatListenAddress(address)}: ${(error as Error).message}\n`);
    return 1;
  } finally {
    if (previousUmask !== null) process.umask(previousUmask);
  }
  process.stdout.write(`ready ${process.pid} ${formatListenAddress(address)}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log(`${signal}: finishing ${server.activeRequests} request(s), then exiting`, 'info');
      server.close();
      let exiting = false;
      const exit = () => {
        if (exiting) return;
        exiting = true;
        // Script log entries of the last requests are written before the logs close.
        void (scriptLog?.flushed() ?? Promise.resolve()).then(() => {
          resolve(0);
          setTimeout(() => process.exit(0), 1000).unref();
        });
      };
      if (server.activeRequests === 0) exit();
      else {
        server.once('drained', exit);
        setTimeout(() => {
          server.closeAllConnections();
          exit();
        }, 10_000).unref();
      }
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    process.once('SIGQUIT', stop);
  });
}

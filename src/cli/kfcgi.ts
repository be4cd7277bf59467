/**
 * `gatehouse kfcgi`: the FastCGI process manager (see man/gatehouse-kfcgi.8).
 *
 *   gatehouse kfcgi [-drv] [-l backlog] ... prog [arg ...]
 *   gatehouse kfcgi status statuspath
 *
 * Options are checked here, before anything is created, so mistakes are
 * reported on the terminal even when kfcgi would daemonise. Without -d the
 * command starts itself again as a detached daemon (Node cannot fork) and
 * waits for it to report that its workers run, or why they do not.
 */
import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { KFCGI_DAEMON_READY_TIMEOUT_MS } from '../limits.js';
import { notifySystemd, takeSystemdEnvironment } from '../sys/index.js';
import {
  formatStatus,
  helpText,
  logDestination,
  parseCommandLine,
  readStatus,
  runKfcgi,
  UsageError,
  usageLine,
  validateOptions,
  type KfcgiConfig,
} from '../kfcgi/index.js';

const DAEMON_FD_VARIABLE = 'GATEHOUSE_KFCGI_DAEMON_FD';

export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'status') return status(argv.slice(1));
  // Before any worker starts: systemd's sockets and variables are taken, so no worker inherits them.
  const systemd = takeSystemdEnvironment();
  let config: KfcgiConfig;
  try {
    const commandLine = parseCommandLine(argv);
    if (commandLine.options.help) {
      process.stdout.write(`${helpText()}\n`);
      return 0;
    }
    config = validateOptions(commandLine, process.env, { socketActivated: systemd.sockets.length > 0 });
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(
        `${error.message
          .split('\n')
          .map((line) => `gatehouse kfcgi: ${line}`)
          .join('\n')}\n${usageLine()}\n`,
      );
      return 1;
    }
    throw error;
  }

  const daemonFd = process.env[DAEMON_FD_VARIABLE];
  if (daemonFd !== undefined) return runAsDaemon(config, Number(daemonFd));
  if (!config.foreground) {
    if (systemd.sockets.length > 0 || systemd.notifySocket !== null) {
      process.stderr.write(
        'gatehouse kfcgi: started by systemd (LISTEN_FDS or NOTIFY_SOCKET is set): add -d, so the manager stays in the foreground as the service\n',
      );
      return 1;
    }
    return startDaemon(argv, config);
  }
  // Type=notify: READY=1 once the workers run, STOPPING=1 on the stop signal (the manager's own handlers act on it).
  const stopping = () => notifySystemd('STOPPING=1');
  process.once('SIGTERM', stopping);
  process.once('SIGINT', stopping);
  return finish(await runKfcgi(config, { onReady: (error) => error === null && notifySystemd('READY=1') }));
}

/** Exits once the manager is done, even if a stray handle would keep the event loop alive. */
function finish(status: number): number {
  setTimeout(() => process.exit(status), 200).unref();
  return status;
}

async function runAsDaemon(config: KfcgiConfig, readyFd: number): Promise<number> {
  const report = (line: string) => {
    try {
      writeSync(readyFd, `${line}\n`);
      closeSync(readyFd);
    } catch {
      // the parent gave up waiting
    }
  };
  const status = await runKfcgi(config, { onReady: (error) => report(error ? `error ${error.message}` : `ready ${process.pid}`) });
  return finish(status);
}

/**
 * Starts this same command detached (a new session, no terminal), and waits
 * for its report. The daemon's standard error is this command's only when it
 * will log there (no syslog socket and no -E): a daemon otherwise holds no
 * terminal or pipe open (kfcgi(8) daemonises with daemon(3)).
 */
async function startDaemon(argv: string[], config: KfcgiConfig): Promise<number> {
  const script = process.argv[1]!;
  const destination = logDestination({ file: config.errorLog });
  const child = spawn(process.execPath, [...process.execArgv, script, 'kfcgi', ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', destination === 'stderr' ? 'inherit' : 'ignore', 'pipe'],
    env: { ...process.env, [DAEMON_FD_VARIABLE]: '3' },
    cwd: '/',
  });
  const channel = child.stdio[3] as NodeJS.ReadableStream;
  let text = '';
  channel.setEncoding('utf8');
  channel.on('data', (chunk: string) => (text += chunk));
  const outcome = await new Promise<string>((resolve) => {
    const timer = setTimeout(
      () => resolve(`error no report from the daemon within ${KFCGI_DAEMON_READY_TIMEOUT_MS} ms; see its log`),
      KFCGI_DAEMON_READY_TIMEOUT_MS,
    );
    channel.on('end', () => {
      clearTimeout(timer);
      resolve(text.trim() || 'error the daemon exited while starting; see its log');
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve(`error cannot start the daemon: ${error.message}`);
    });
  });
  child.unref();
  (channel as unknown as { destroy(): void }).destroy();
  if (outcome.startsWith('ready ')) {
    const where =
      destination === 'file'
        ? `logging to ${config.errorLog}`
        : destination === 'syslog'
          ? 'logging to the system log'
          : 'logging to standard error';
    process.stderr.write(`gatehouse kfcgi: running in the background as pid ${outcome.slice(6)}; ${where}\n`);
    return 0;
  }
  process.stderr.write(`gatehouse kfcgi: ${outcome.replace(/^error /, '')}\n`);
  return 1;
}

async function status(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const path = argv.find((word) => !word.startsWith('-'));
  if (!path) {
    process.stderr.write(`gatehouse kfcgi status: name the status socket (kfcgi's -S statuspath)\n${usageLine()}\n`);
    return 1;
  }
  try {
    const result = await readStatus(path);
    process.stdout.write(`${json ? JSON.stringify(result, null, 2) : formatStatus(result)}\n`);
    return 0;
  } catch (error) {
    process.stderr.write(`gatehouse kfcgi status: ${(error as Error).message}\n`);
    return 1;
  }
}

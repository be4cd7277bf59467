/**
 * `gatehouse example`: serves the built-in example on 127.0.0.1 — a static
 * page, CGI scripts in shell and Perl, and a Node FastCGI application (the
 * worker library) reached through gatehouse's FastCGI client — so a fresh
 * checkout shows every part working with one command.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadServeConfig } from '../config/load.js';
import { GatehouseFront } from '../http/server.js';
import { onReopenSignal, openLogger } from '../log/index.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { startFrontSpawner, type FrontSpawner } from '../spawn/modes.js';
import { formatListenAddress } from '../options/listen-address.js';
import { ErrorCode, GatehouseError, UsageError } from '../errors.js';
import { type LongOption, splitLongOptions } from '../options/command-line.js';
import { EXAMPLE_APP_POLL_MS, EXAMPLE_APP_START_TIMEOUT_MS } from '../limits.js';

const EXAMPLES = fileURLToPath(new URL('../../../examples/', import.meta.url));

const USAGE = `usage: gatehouse example [--listen HOST:PORT]

Serves the built-in example (examples/site and examples/fastcgi-app.mjs):
  /                   a static page linking the rest
  /cgi-bin/env.sh     a shell CGI script printing its environment
  /cgi-bin/form.pl    a Perl CGI form that POSTs to itself
  /cgi-bin/stream.sh  a script whose output streams
  /app/               a Node FastCGI application on a private unix socket
options:
  --listen HOST:PORT  where to listen (default 127.0.0.1:8080)
  --help              print this help`;

async function waitForSocket(socketPath: string, isAlive: () => boolean): Promise<void> {
  for (let waited = 0; waited < EXAMPLE_APP_START_TIMEOUT_MS; waited += EXAMPLE_APP_POLL_MS) {
    if (!isAlive()) throw new GatehouseError(ErrorCode.SERVE_SETUP, 'the example FastCGI application exited before it listened');
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(socketPath, () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(EXAMPLE_APP_POLL_MS);
  }
  throw new GatehouseError(ErrorCode.SERVE_SETUP, `the example FastCGI application did not listen on ${socketPath}`);
}

const EXAMPLE_OPTIONS: LongOption[] = [
  { name: 'listen', kind: 'address', argument: 'HOST:PORT', summary: 'where to listen', defaultText: '127.0.0.1:8080' },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export async function main(argv: string[]): Promise<number> {
  let values: { listen?: string; help?: boolean };
  try {
    values = splitLongOptions(argv, EXAMPLE_OPTIONS) as typeof values;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`gatehouse example: ${error.message}\nRun 'gatehouse example --help' for the options.\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const runtime = mkdtempSync(path.join(tmpdir(), 'gatehouse-example-'));
  const socketPath = path.join(runtime, 'app.sock');
  const app = spawn(process.execPath, [path.join(EXAMPLES, 'fastcgi-app.mjs'), socketPath], { stdio: ['ignore', 'inherit', 'inherit'] });
  let scripts: FrontSpawner | null = null;
  const cleanup = async () => {
    app.kill('SIGTERM');
    await scripts?.stop();
    rmSync(runtime, { recursive: true, force: true });
  };
  try {
    await waitForSocket(socketPath, () => app.exitCode === null && app.signalCode === null);
    const config = loadServeConfig({
      flags: {
        listen: [values.listen ?? '127.0.0.1:8080'],
        docroot: path.join(EXAMPLES, 'site/public'),
        'cgi-bin': path.join(EXAMPLES, 'site/cgi-bin'),
        'server-name': 'localhost',
        'script-timeout': '10s',
        // The cgid daemon's socket lives in the example's private (0700) directory.
        'runtime-dir': runtime,
        fastcgi: [{ url: '/app/', upstreams: [`unix:${socketPath}`], 'script-filename': path.join(EXAMPLES, 'fastcgi-app.mjs') }],
      },
    });
    // As gatehouse serve does: scripts start through the cgid daemon.
    const logger = openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog });
    scripts = await startFrontSpawner(frontSpawnSettings(config), logger.line, logger);
    // The front closes the logger it is given only when it made it: this one is closed after the front stops.
    const front = new GatehouseFront({ config, logger, spawner: scripts.spawner });
    const stopReopening = onReopenSignal(() => front.reopenLogs());
    const closeLogs = () => {
      stopReopening();
      return logger.close();
    };
    const addresses = await front.listen();
    const url = addresses
      .map((address) => ('path' in address ? formatListenAddress(address) : `http://${formatListenAddress(address)}/`))
      .join(' ');
    process.stderr.write(
      `gatehouse example: serving ${url}  (Ctrl-C to stop)\n  try: curl ${url}cgi-bin/env.sh/extra?x=1   curl ${url}app/hello\n`,
    );
    return await new Promise<number>((resolve) => {
      const stop = () => {
        front
          .stop(2000)
          .then(cleanup)
          .then(closeLogs)
          .finally(() => resolve(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      app.once('exit', (code, signal) => {
        front.logError(`the example FastCGI application exited (${signal ?? code}); stopping`);
        front
          .stop(2000)
          .then(cleanup)
          .then(closeLogs)
          .finally(() => resolve(1));
      });
    });
  } catch (error) {
    await cleanup();
    if (error instanceof UsageError) {
      process.stderr.write(`gatehouse example: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

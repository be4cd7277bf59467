/**
 * `gatehouse serve`: the HTTP front. Flags and config keys come from one
 * table (src/config/schema.ts), their values read by the grammars of
 * src/options; flags win over the file.
 */
import { serveFlagOptions } from '../config/schema.js';
import { loadServeConfig } from '../config/load.js';
import { GatehouseFront } from '../http/server.js';
import { type LongOption, optionHelpRows, splitLongOptions } from '../options/command-line.js';
import { formatListenAddress } from '../options/listen-address.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { startFrontSpawner, type FrontSpawner } from '../spawn/modes.js';
import { ConfigError, UsageError } from '../errors.js';
import type { FastCGIRouteConfig, ServeConfig } from '../config/schema.js';
import { type Logger, onReopenSignal, openLogger } from '../log/index.js';
import type { ServeMetricsListener } from '../metrics/serve.js';

const COMMAND_OPTIONS: LongOption[] = [
  {
    name: 'config',
    kind: 'string',
    argument: 'FILE',
    summary: 'read the configuration from this TOML file (see gatehouse-serve(8)); flags override it',
  },
  { name: 'check', kind: 'flag', summary: 'validate the configuration, print what would be served, and exit (0 when valid)' },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export function serveUsage(): string {
  return [
    'usage: gatehouse serve [--config FILE] [options]',
    '',
    'Serves static files, CGI scripts and FastCGI applications over HTTP.',
    'Example: gatehouse serve --listen 127.0.0.1:8080 --docroot ./public --cgi-bin ./cgi-bin --cgi-ext .cgi --script-timeout 5s',
    '',
    'options:',
    ...optionHelpRows([...COMMAND_OPTIONS, ...serveFlagOptions()]),
    '',
    'Sizes are bytes or 512K, 64M, 2G; times 20 (seconds), 20s, 500ms, 2m.',
    'Config-file-only keys: [[fastcgi]] routes, [[script-alias]] routes, [set-env]. See man/gatehouse-serve.8.',
  ].join('\n');
}

function describeFastCGIRoute(route: FastCGIRouteConfig): string {
  const condition =
    route.match !== undefined
      ? ` matching '${route.match}'`
      : route.extensions !== undefined
        ? ` ending in ${route.extensions.join(' ')}`
        : '';
  return `${route.url}${condition} -> FastCGI ${route.upstreams.join(', ')}`;
}

/** What --check prints: what would be served, routes in the order they are tried. */
function checkReport(config: ServeConfig, file: string | undefined): string[] {
  const patterns = config.fastcgi.filter((route) => route.match !== undefined || route.extensions !== undefined);
  const prefixes = config.fastcgi.filter((route) => route.match === undefined && route.extensions === undefined);
  return [
    `configuration OK${file !== undefined ? ` (${file})` : ''}`,
    `listen: ${config.listen.join(', ')}`,
    ...patterns.map(describeFastCGIRoute),
    ...prefixes.map(describeFastCGIRoute),
    ...(config.cgiBin ? [`/cgi-bin/ -> ${config.cgiBin}`] : []),
    ...config.scriptAlias.map((alias) => `${alias.url} -> ${alias.dir} (CGI${alias.user ? ` as ${alias.user}` : ''})`),
    ...(config.docroot ? [`docroot: ${config.docroot}${config.cgiExt.length ? ` (CGI: ${config.cgiExt.join(' ')})` : ''}`] : []),
    `script-timeout: ${config.scriptTimeoutMs} ms`,
    ...(config.scriptLog ? [`script-log: ${config.scriptLog}`] : []),
    `access-log: ${config.accessLog}${config.accessLog !== 'off' ? ` (${config.accessLogFormat})` : ''}`,
    `error-log: ${config.errorLog} (level ${config.logLevel}, ${config.logFormat})`,
    ...(config.metrics ? [`metrics: ${formatListenAddress(config.metrics)}`] : []),
  ];
}

export async function main(argv: string[]): Promise<number> {
  let config: ServeConfig;
  let file: string | undefined;
  let check = false;
  try {
    const { config: configFile, check: checkOnly, help, ...flags } = splitLongOptions(argv, [...COMMAND_OPTIONS, ...serveFlagOptions()]);
    if (help) {
      process.stdout.write(`${serveUsage()}\n`);
      return 0;
    }
    file = typeof configFile === 'string' ? configFile : undefined;
    check = checkOnly === true;
    config = loadServeConfig({ ...(file !== undefined ? { file } : {}), flags });
  } catch (error) {
    if (error instanceof UsageError) {
      const lines = error.problems.map((problem) => `gatehouse serve: ${problem}`).join('\n');
      process.stderr.write(`${lines}\nRun 'gatehouse serve --help' for the options.\n`);
      return 2;
    }
    if (error instanceof ConfigError) {
      process.stderr.write(`gatehouse serve: invalid configuration: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
  if (check) {
    process.stdout.write(`${checkReport(config, file).join('\n')}\n`);
    return 0;
  }
  // The error log first: the cgid daemon's records go to it from its start on.
  let logger: Logger;
  try {
    logger = openLogger({ role: 'serve', level: config.logLevel, format: config.logFormat, target: config.errorLog });
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    return 1;
  }
  let front: GatehouseFront | undefined;
  // SIGUSR1 reopens the logs (and, listened for, no longer opens Node's inspector).
  const stopReopening = onReopenSignal(async () => {
    if (front) await front.reopenLogs();
    else await logger.reopen();
  });
  // Metrics first too (prom-client is loaded only now): the CGI handler takes its spawner metered.
  let metrics: ServeMetricsListener | null = null;
  const finish = async (status: number) => {
    stopReopening();
    await metrics?.close();
    await logger.close();
    return status;
  };
  if (config.metrics) {
    try {
      const { ServeMetricsListener } = await import('../metrics/serve.js');
      metrics = await ServeMetricsListener.open(config.metrics, (line) => logger.warn(line));
    } catch (error) {
      process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
      return finish(1);
    }
  }
  // Scripts start through the cgid daemon by default (started here, before the front takes requests).
  let scripts: FrontSpawner | null = null;
  if (config.cgiBin || config.scriptAlias.length > 0 || config.cgiExt.length > 0) {
    try {
      scripts = await startFrontSpawner(frontSpawnSettings(config), logger.line, logger);
    } catch (error) {
      process.stderr.write(`gatehouse serve: cannot start CGI scripts: ${(error as Error).message}\n`);
      return finish(1);
    }
  }
  try {
    const spawner = scripts && metrics ? metrics.meter(scripts.spawner) : scripts?.spawner;
    front = new GatehouseFront({ config, logger, ...(spawner ? { spawner } : {}) });
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    await scripts?.stop();
    return finish(1);
  }
  let addresses;
  try {
    addresses = await front.listen();
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    // Close what did open (other addresses, the cgid daemon): left running, they would keep this process alive.
    await front.stop(0);
    await scripts?.stop();
    return finish(1);
  }
  logger.info(
    `listening on ${addresses.map(formatListenAddress).join(', ')}${scripts ? `; CGI scripts through the ${scripts.description}` : ''}`,
  );
  if (metrics) {
    metrics.serve({ ...front.parts, daemon: scripts?.supervisor ?? null });
    logger.info(`metrics on ${metrics.describe()} (/metrics for Prometheus, /status for gatehouse status)`);
  }
  const running = front;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn(`${signal} again: exiting now`);
        // The logs' exit hook writes what they still hold.
        process.exit(1);
      }
      stopping = true;
      logger.info(`${signal}: finishing requests in flight (up to ${config.shutdownGraceMs} ms), then exiting`);
      running
        .stop()
        .then(() => scripts?.stop())
        .then(
          () => 0,
          (error: unknown) => {
            logger.error(`stop failed: ${(error as Error).message}`);
            return 1;
          },
        )
        .then((status) => {
          logger.info('stopped');
          return finish(status);
        })
        .then(resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    process.on('SIGQUIT', stop);
  });
}

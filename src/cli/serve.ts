/**
 * `gatehouse serve`: the HTTP front. Flags and config keys come from one
 * table (src/config/schema.ts); flags win over the file.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SERVE_KEYS } from '../config/schema.js';
import { ConfigError, closestName, loadServeConfig } from '../config/load.js';
import { GatehouseFront } from '../http/server.js';
import { formatListenAddress } from '../options/listen-address.js';
import { frontSpawnSettings } from '../config/spawn-settings.js';
import { parseSpawnMode, startFrontSpawner, type FrontSpawner } from '../spawn/modes.js';

const COMMAND_OPTIONS = [
  { flag: 'config', argument: 'FILE', summary: 'read the configuration from this TOML file (see gatehouse-serve(8)); flags override it' },
  { flag: 'check', summary: 'validate the configuration, print what would be served, and exit (0 when valid)' },
  { flag: 'help', summary: 'print this help' },
];

export function serveUsage(): string {
  const rows: Array<[string, string]> = [];
  for (const option of COMMAND_OPTIONS) rows.push([`--${option.flag}${option.argument ? ` ${option.argument}` : ''}`, option.summary]);
  for (const key of SERVE_KEYS) {
    if (!key.flag) continue;
    const argument = key.kind === 'boolean' ? '' : ` ${key.argument ?? 'VALUE'}`;
    rows.push([`--${key.name}${argument}`, `${key.summary}${key.defaultText ? ` (default: ${key.defaultText})` : ''}`]);
  }
  const width = Math.max(...rows.map(([left]) => left.length));
  return [
    'usage: gatehouse serve [--config FILE] [options]',
    '',
    'Serves static files, CGI scripts and FastCGI applications over HTTP.',
    'Example: gatehouse serve --listen 127.0.0.1:8080 --docroot ./public --cgi-bin ./cgi-bin --cgi-ext .cgi --script-timeout 5s',
    '',
    'options:',
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`),
    '',
    'Config-file-only keys: [[fastcgi]] routes, [[script-alias]] routes, [set-env]. See man/gatehouse-serve.8.',
  ].join('\n');
}

function parseFlags(argv: string[]) {
  const options: NonNullable<ParseArgsConfig['options']> = {
    config: { type: 'string' },
    check: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  };
  for (const key of SERVE_KEYS) {
    if (!key.flag) continue;
    options[key.name] =
      key.kind === 'boolean' ? { type: 'boolean' } : { type: 'string', multiple: key.kind === 'strings' || key.kind === 'listen' };
  }
  return parseArgs({ args: argv, options, strict: true, allowPositionals: false });
}

export async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(argv);
  } catch (error) {
    // parseArgs names the unknown option but not the one meant: suggest it, as the config file does for keys.
    const unknown = /Unknown option '--([^']+)'/.exec((error as Error).message)?.[1];
    const hint = unknown
      ? closestName(unknown, [
          ...COMMAND_OPTIONS.map((option) => option.flag),
          ...SERVE_KEYS.filter((key) => key.flag).map((key) => key.name),
        ])
      : undefined;
    process.stderr.write(
      `gatehouse serve: ${(error as Error).message}${hint ? `; did you mean --${hint}?` : ''}\nRun 'gatehouse serve --help' for the options.\n`,
    );
    return 2;
  }
  const { config: file, check, help, ...flags } = parsed.values as Record<string, unknown>;
  if (help) {
    process.stdout.write(`${serveUsage()}\n`);
    return 0;
  }
  let config;
  try {
    config = loadServeConfig({ ...(typeof file === 'string' ? { file } : {}), flags });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`gatehouse serve: invalid configuration: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
  try {
    parseSpawnMode(config.cgiSpawn);
  } catch (error) {
    process.stderr.write(`gatehouse serve: invalid configuration: ${(error as Error).message}\n`);
    return 1;
  }
  if (check) {
    const lines = [
      `configuration OK${typeof file === 'string' ? ` (${file})` : ''}`,
      `listen: ${config.listen.join(', ')}`,
      ...(config.docroot ? [`docroot: ${config.docroot}${config.cgiExt.length ? ` (CGI: ${config.cgiExt.join(' ')})` : ''}`] : []),
      ...(config.cgiBin ? [`/cgi-bin/ -> ${config.cgiBin}`] : []),
      ...config.scriptAlias.map((alias) => `${alias.url} -> ${alias.dir} (CGI)`),
      ...config.fastcgi.map((route) => `${route.url} -> FastCGI ${route.upstreams.join(', ')}`),
      `script-timeout: ${config.scriptTimeoutMs} ms`,
      ...(config.scriptLog ? [`script-log: ${config.scriptLog}`] : []),
      `access-log: ${config.accessLog}`,
      `error-log: ${config.errorLog}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  }
  // Scripts start through the cgid daemon by default (started here, before the front takes requests).
  let front: GatehouseFront | undefined;
  const log = (line: string) => (front ? front.logError(line) : process.stderr.write(`${line}\n`));
  let scripts: FrontSpawner | null = null;
  if (config.cgiBin || config.scriptAlias.length > 0 || config.cgiExt.length > 0) {
    try {
      scripts = await startFrontSpawner(frontSpawnSettings(config), log);
    } catch (error) {
      process.stderr.write(`gatehouse serve: cannot start CGI scripts: ${(error as Error).message}\n`);
      return 1;
    }
  }
  front = new GatehouseFront({ config, ...(scripts ? { spawner: scripts.spawner } : {}) });
  let addresses;
  try {
    addresses = await front.listen();
  } catch (error) {
    process.stderr.write(`gatehouse serve: ${(error as Error).message}\n`);
    // Close what did open (other addresses, the cgid daemon): left running, they would keep this process alive.
    await front.stop(0);
    await scripts?.stop();
    return 1;
  }
  front.logError(
    `gatehouse serve ${process.pid}: listening on ${addresses.map(formatListenAddress).join(', ')}${scripts ? `; CGI scripts through the ${scripts.description}` : ''}`,
  );
  const running = front;
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        running.logError(`${signal} again: exiting now`);
        process.exit(1);
      }
      stopping = true;
      running.logError(`${signal}: finishing requests in flight (up to ${config.shutdownGraceMs} ms), then exiting`);
      running
        .stop()
        .then(() => scripts?.stop())
        .then(
          () => resolve(0),
          (error: unknown) => {
            running.logError(`stop failed: ${(error as Error).message}`);
            resolve(1);
          },
        );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

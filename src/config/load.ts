/**
 * Reading and validating `gatehouse serve`'s configuration: a TOML file and/or
 * flags, one key table for both (schema.ts), values read by the grammars of
 * src/options. Every error names the key and says what to write instead; all
 * errors are collected, not just the first. A flag's value that does not fit
 * its grammar is a UsageError; anything else a ConfigError.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import {
  SERVE_DEFAULTS,
  SERVE_KEYS,
  fieldName,
  type FastCGIRouteConfig,
  type KeyDefinition,
  type ScriptAliasConfig,
  type ServeConfig,
} from './schema.js';
import { ConfigError, UsageError } from '../errors.js';
import { closestName } from '../options/command-line.js';
import { readValue, type ValueRule } from '../options/values.js';
import { HTTP_MIN_HEADER_BYTES } from '../limits.js';
import { resolveAddress } from '../fastcgi/client/address.js';
import { RouteTable } from './routes.js';
import { activatedSockets, lookupGroupId, lookupUser } from '../sys/index.js';
import { compileAccessLogFormat } from '../log/access-log-format.js';

export { ConfigError, UsageError, closestName };

const KEY_BY_NAME = new Map<string, KeyDefinition>();
for (const key of SERVE_KEYS) {
  KEY_BY_NAME.set(key.name, key);
  for (const alias of key.aliases ?? []) KEY_BY_NAME.set(alias, key);
}

/** Reads one raw value (TOML or flag text) for `key`; pushes a problem and returns undefined when it does not fit. */
function convert(key: KeyDefinition, raw: unknown, baseDir: string, problems: string[], where: string): unknown {
  if (key.kind === 'routes') return raw;
  if (key.kind === 'table') return readVariables(raw, problems, where);
  const result = readValue(key as ValueRule, raw);
  if ('problem' in result) {
    problems.push(`${where}: ${result.problem}`);
    return undefined;
  }
  // Addresses stay as written: the front reads them again when it listens (and names them as written).
  if (key.kind === 'addresses') return Array.isArray(raw) ? raw : [raw];
  if (key.kind === 'string' && isPathKey(key.name) && raw !== '-' && raw !== 'off') return path.resolve(baseDir, raw as string);
  return result.value;
}

function readVariables(raw: unknown, problems: string[], where: string): Record<string, string> | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    problems.push(`${where}: expected a table of NAME = "value", got ${JSON.stringify(raw)}`);
    return undefined;
  }
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) problems.push(`${where}.${name}: variable names are letters, digits and _`);
    else if (typeof value !== 'string') problems.push(`${where}.${name}: expected a string value`);
    else out[name] = value;
  }
  return out;
}

function isPathKey(name: string): boolean {
  return (
    name === 'docroot' ||
    name === 'cgi-bin' ||
    name === 'script-log' ||
    name === 'access-log' ||
    name === 'error-log' ||
    name === 'runtime-dir'
  );
}

/** The keys of a [[fastcgi]] route (exported for the manual page's test). */
export const FASTCGI_ROUTE_KEYS = [
  'url',
  'match',
  'extensions',
  'upstreams',
  'root',
  'split-path',
  'index',
  'script-filename',
  'check-script',
  'params',
  'connect-timeout',
  'read-timeout',
  'max-connections',
  'keep-alive',
  'multiplex',
  'buffering',
];

function readScriptAliases(raw: unknown, baseDir: string, problems: string[]): ScriptAliasConfig[] {
  if (!Array.isArray(raw)) {
    problems.push('script-alias: write [[script-alias]] tables, each with url = "/prefix/" and dir = "DIR"');
    return [];
  }
  return raw.flatMap((entry, index) => {
    const where = `script-alias[${index}]`;
    if (typeof entry !== 'object' || entry === null) {
      problems.push(`${where}: expected a table with url and dir`);
      return [];
    }
    const { url, dir, user, group, ...rest } = entry as Record<string, unknown>;
    for (const name of Object.keys(rest))
      problems.push(`${where}: unknown key '${name}'; a script alias has url, dir, and optionally user and group`);
    if (typeof url !== 'string' || !url.startsWith('/'))
      problems.push(`${where}.url: expected a URL prefix starting with "/", such as "/cgi-bin/"`);
    if (typeof dir !== 'string' || dir === '') problems.push(`${where}.dir: expected the directory of the scripts`);
    const accountName = /^[a-z_][a-z0-9_.-]*\$?$/i;
    if (user !== undefined && (typeof user !== 'string' || !accountName.test(user)))
      problems.push(`${where}.user: expected a user name, such as "www-data"`);
    if (group !== undefined && (typeof group !== 'string' || !accountName.test(group)))
      problems.push(`${where}.group: expected a group name, such as "www-data"`);
    if (group !== undefined && user === undefined) problems.push(`${where}.group: set user too; scripts run as that user and group`);
    if (typeof url !== 'string' || typeof dir !== 'string') return [];
    return [
      {
        url,
        dir: path.resolve(baseDir, dir),
        ...(typeof user === 'string' ? { user } : {}),
        ...(typeof group === 'string' ? { group } : {}),
      },
    ];
  });
}

function readFastCGIRoutes(raw: unknown, baseDir: string, problems: string[]): FastCGIRouteConfig[] {
  if (!Array.isArray(raw)) {
    problems.push('fastcgi: write [[fastcgi]] tables, each with url = "/prefix/" and upstreams = ["unix:/path"]');
    return [];
  }
  return raw.flatMap((entry, index) => {
    const where = `fastcgi[${index}]`;
    if (typeof entry !== 'object' || entry === null) {
      problems.push(`${where}: expected a table with url and upstreams`);
      return [];
    }
    const table = entry as Record<string, unknown>;
    for (const name of Object.keys(table)) {
      if (!FASTCGI_ROUTE_KEYS.includes(name)) {
        const hint = closestName(name, FASTCGI_ROUTE_KEYS);
        problems.push(
          `${where}: unknown key '${name}'${hint ? ` (did you mean '${hint}'?)` : ''}; keys are ${FASTCGI_ROUTE_KEYS.join(', ')}`,
        );
      }
    }
    const before = problems.length;
    const route: FastCGIRouteConfig = { url: '/', upstreams: [] };
    readRoutePattern(table, route, where, problems);
    if (table.url === undefined && route.match === undefined && route.extensions === undefined)
      problems.push(`${where}: give url = "/prefix/", or match = '\\.php$' or extensions = [".php"] to choose the requests it serves`);
    else if (table.url !== undefined) {
      if (typeof table.url !== 'string' || !table.url.startsWith('/'))
        problems.push(`${where}.url: expected a URL prefix starting with "/", such as "/app/"`);
      else route.url = table.url;
    }
    const upstreams = typeof table.upstreams === 'string' ? [table.upstreams] : table.upstreams;
    if (!Array.isArray(upstreams) || upstreams.length === 0 || !upstreams.every((u) => typeof u === 'string' && u !== '')) {
      problems.push(`${where}.upstreams: expected a list of addresses such as ["unix:/run/php/php-fpm.sock", "127.0.0.1:9000"]`);
    } else {
      route.upstreams = upstreams.map((upstream: string) =>
        upstream.startsWith('unix:') ? `unix:${path.resolve(baseDir, upstream.slice(5))}` : upstream,
      );
      // The FastCGI client's own parser: what --check accepts, the server can connect to.
      for (const upstream of route.upstreams) {
        try {
          resolveAddress(upstream);
        } catch (error) {
          problems.push(`${where}.upstreams: ${(error as Error).message}`);
        }
      }
    }
    const read = (name: string, rule: ValueRule, set: (value: unknown) => void) => {
      if (table[name] === undefined) return;
      const result = readValue(rule, table[name]);
      if ('problem' in result) problems.push(`${where}.${name}: ${result.problem}`);
      else set(result.value);
    };
    read('root', { kind: 'string' }, (value) => (route.root = path.resolve(baseDir, value as string)));
    read('split-path', { kind: 'string' }, (value) => (route.splitPath = value as string));
    read('index', { kind: 'string' }, (value) => (route.index = value as string));
    read('script-filename', { kind: 'string' }, (value) => (route.scriptFilename = path.resolve(baseDir, value as string)));
    read('check-script', { kind: 'flag' }, (value) => (route.checkScript = value as boolean));
    read('connect-timeout', { kind: 'duration' }, (value) => (route.connectTimeoutMs = value as number));
    read('read-timeout', { kind: 'duration' }, (value) => (route.readTimeoutMs = value as number));
    read('max-connections', { kind: 'integer', min: 1 }, (value) => (route.maxConnections = value as number));
    read('keep-alive', { kind: 'flag' }, (value) => (route.keepAlive = value as boolean));
    read('multiplex', { kind: 'flag' }, (value) => (route.multiplex = value as boolean));
    read('buffering', { kind: 'flag' }, (value) => (route.buffering = value as boolean));
    if (table.params !== undefined) {
      const params = readVariables(table.params, problems, `${where}.params`);
      if (params) route.params = params;
    }
    return problems.length === before ? [route] : [];
  });
}

/** `match` (a regular expression) or `extensions` (file endings): which requests under the url the route takes. */
function readRoutePattern(table: Record<string, unknown>, route: FastCGIRouteConfig, where: string, problems: string[]): void {
  if (table.match !== undefined && table.extensions !== undefined) {
    problems.push(`${where}: give match or extensions, not both; extensions = [".php"] is match = '\\.php$' with PATH_INFO allowed`);
    return;
  }
  if (table.match !== undefined) {
    if (typeof table.match !== 'string' || table.match === '') {
      problems.push(`${where}.match: expected a regular expression in single quotes, such as '\\.php$'`);
      return;
    }
    try {
      new RegExp(table.match);
      route.match = table.match;
    } catch (error) {
      problems.push(`${where}.match: ${(error as Error).message}; write a JavaScript regular expression such as '\\.php$'`);
    }
  }
  if (table.extensions !== undefined) {
    const list = typeof table.extensions === 'string' ? [table.extensions] : table.extensions;
    if (!Array.isArray(list) || list.length === 0 || !list.every((item) => typeof item === 'string' && /^\.[A-Za-z0-9_.-]+$/.test(item)))
      problems.push(`${where}.extensions: expected a list of file endings with their dot, such as [".php"]`);
    else route.extensions = list as string[];
  }
}

/** Applies raw key/values (from TOML or flags) onto `config`. */
function apply(config: ServeConfig, raw: Record<string, unknown>, baseDir: string, problems: string[], source: 'file' | 'flag'): void {
  for (const [name, value] of Object.entries(raw)) {
    const key = KEY_BY_NAME.get(name);
    if (!key) {
      const hint = closestName(name, KEY_BY_NAME.keys());
      problems.push(
        `unknown ${source === 'flag' ? 'option --' : "key '"}${name}${source === 'flag' ? '' : "'"}${hint ? `; did you mean '${hint}'?` : ''} (see gatehouse serve --help)`,
      );
      continue;
    }
    const where = source === 'flag' ? `--${key.name}` : name === key.name ? key.name : `${name} (${key.name})`;
    if (key.kind === 'routes') {
      if (key.name === 'script-alias') config.scriptAlias.push(...readScriptAliases(value, baseDir, problems));
      else config.fastcgi.push(...readFastCGIRoutes(value, baseDir, problems));
      continue;
    }
    const converted = convert(key, value, baseDir, problems, where);
    if (converted === undefined) continue;
    // A flag replaces the file's value, lists included (--cgi-ext .pl over cgi-ext = [".cgi"] runs only .pl), as --listen does.
    (config as unknown as Record<string, unknown>)[fieldName(key)] = converted;
  }
}

/** Cross-field checks, done once up front (Node's http server habit). */
function validate(config: ServeConfig, problems: string[]): void {
  const isDirectory = (dir: string) => {
    try {
      return statSync(dir).isDirectory();
    } catch {
      return false;
    }
  };
  if (!config.docroot && !config.cgiBin && config.scriptAlias.length === 0 && config.fastcgi.length === 0) {
    problems.push('nothing to serve: give --docroot DIR, --cgi-bin DIR, or [[fastcgi]] / [[script-alias]] routes in a config file');
  }
  if (config.docroot && !isDirectory(config.docroot)) problems.push(`docroot: ${config.docroot} is not a directory`);
  if (config.cgiBin && !isDirectory(config.cgiBin)) problems.push(`cgi-bin: ${config.cgiBin} is not a directory`);
  for (const alias of config.scriptAlias)
    if (!isDirectory(alias.dir)) problems.push(`script-alias ${alias.url}: ${alias.dir} is not a directory`);
  for (const ext of config.cgiExt)
    if (!/^\.[A-Za-z0-9_-]+$/.test(ext)) problems.push(`cgi-ext: "${ext}" is not a file ending; write it with its dot, like .cgi`);
  if (config.cgiExt.length > 0 && !config.docroot) problems.push('cgi-ext: set docroot too; the endings are run inside the document root');
  config.fastcgi.forEach((route, index) => {
    if (!route.root && !route.scriptFilename && !config.docroot) {
      problems.push(
        `fastcgi[${index}] (url = "${route.url}"): set root (the app's document root) or script-filename, or a docroot, so SCRIPT_FILENAME can be built`,
      );
    }
  });
  if (config.requestTimeoutMs !== 0 && config.requestTimeoutMs < config.headersTimeoutMs) {
    problems.push(
      `request-timeout (${config.requestTimeoutMs} ms) is shorter than headers-timeout (${config.headersTimeoutMs} ms); raise it or set 0 for no limit`,
    );
  }
  if (config.maxScripts < 1) problems.push('max-scripts: must be at least 1');
  // Each worker runs its share of max-scripts (src/serve/worker-role.ts): a worker with none could never run a script.
  if (config.workers > config.maxScripts)
    problems.push(
      `workers: ${config.workers} workers need max-scripts of at least ${config.workers} (one script each); it is ${config.maxScripts}`,
    );
  if (config.listen.length === 0) problems.push('listen: give at least one address, such as "127.0.0.1:8080"');
  // As Apache does, refuse to start with a log that cannot be opened, rather than serve with nothing logged.
  for (const [key, file] of [
    ['access-log', config.accessLog],
    ['error-log', config.errorLog],
    ['script-log', config.scriptLog],
  ] as const) {
    if (file === undefined || file === '-' || file === 'off') continue;
    if (!isDirectory(path.dirname(file)))
      problems.push(`${key}: the directory of ${file} does not exist; create it, or write - for the console`);
    else if (isDirectory(file)) problems.push(`${key}: ${file} is a directory; give a file name`);
  }
  const accessLogFormat = compileAccessLogFormat(config.accessLogFormat);
  if (typeof accessLogFormat !== 'function') problems.push(`access-log-format: ${accessLogFormat.problem}`);
  if (config.maxHeaderBytes < HTTP_MIN_HEADER_BYTES)
    problems.push(
      `max-header-bytes: ${config.maxHeaderBytes} is too small for any request head; write at least ${HTTP_MIN_HEADER_BYTES} (default ${SERVE_DEFAULTS.maxHeaderBytes})`,
    );
  if (config.maxUrlBytes < 1) problems.push(`max-url-bytes: must be at least 1 (default ${SERVE_DEFAULTS.maxUrlBytes})`);
  // 0 would mean "kill every script at once"; there is no "no limit" for scripts (a hung one would hold its slot forever).
  if (config.scriptTimeoutMs < 1) problems.push('script-timeout: must be longer than 0; write a time such as 60s or 500ms');
  checkSuexecAccounts(config, problems);
  checkRunAsAccounts(config, problems);
  problems.push(...new RouteTable(config).shadowed(config));
}

/**
 * suexec routes name accounts that exist and that the launcher will accept:
 * otherwise every request to the route would be answered 403, found out one
 * request at a time.
 */
function checkSuexecAccounts(config: ServeConfig, problems: string[]): void {
  config.scriptAlias.forEach((alias, index) => {
    if (alias.user === undefined) return;
    const where = `script-alias[${index}]`;
    const user = lookupUser(alias.user);
    if (user === null)
      problems.push(`${where}.user: there is no user "${alias.user}" on this system; create it (useradd), or name an existing user`);
    else if (user.uid < config.suexecMinUid)
      problems.push(
        `${where}.user: ${alias.user} has uid ${user.uid}, below suexec-min-uid (${config.suexecMinUid}), so its scripts would all be refused; name a user with a uid of at least ${config.suexecMinUid}, or lower suexec-min-uid`,
      );
    // The launcher runs the scripts with the group named like the user when the route names none.
    const groupName = alias.group ?? alias.user;
    const gid = lookupGroupId(groupName);
    if (gid === null)
      problems.push(
        alias.group !== undefined
          ? `${where}.group: there is no group "${groupName}" on this system; create it (groupadd), or name an existing group`
          : `${where}.group: there is no group "${groupName}" (without group, scripts run with the group named like the user); write group = "..." with the user's group`,
      );
    else if (gid < config.suexecMinGid)
      problems.push(
        `${where}.group: ${groupName} has gid ${gid}, below suexec-min-gid (${config.suexecMinGid}), so its scripts would all be refused; name a group with a gid of at least ${config.suexecMinGid}, or lower suexec-min-gid`,
      );
  });
}

/** user, group, socket-user and socket-group name accounts that exist (one line each otherwise). */
function checkRunAsAccounts(config: ServeConfig, problems: string[]): void {
  if (config.group !== undefined && config.user === undefined)
    problems.push('group: set user too; the front and the scripts run as that user and this group');
  for (const [key, name] of [
    ['user', config.user],
    ['socket-user', config.socketUser],
  ] as const)
    if (name !== undefined && lookupUser(name) === null)
      problems.push(`${key}: there is no user "${name}" on this system; create it (useradd), or name an existing user such as www-data`);
  for (const [key, name] of [
    ['group', config.group],
    ['socket-group', config.socketGroup],
  ] as const)
    if (name !== undefined && lookupGroupId(name) === null)
      problems.push(`${key}: there is no group "${name}" on this system; create it (groupadd), or name an existing group such as www-data`);
}

export interface LoadOptions {
  /** Path of a TOML config file. */
  file?: string;
  /** Flag values keyed by key name (flags win over the file). */
  flags?: Record<string, unknown>;
  cwd?: string;
}

export function loadServeConfig(options: LoadOptions): ServeConfig {
  const config: ServeConfig = structuredClone(SERVE_DEFAULTS);
  const defaultListen = config.listen;
  const problems: string[] = [];
  const cwd = options.cwd ?? process.cwd();
  let source = 'command line';
  if (options.file) {
    source = options.file;
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (error) {
      throw new ConfigError(options.file, [`cannot read the config file: ${(error as Error).message}`]);
    }
    let raw: Record<string, unknown>;
    try {
      raw = parseToml(text) as Record<string, unknown>;
    } catch (error) {
      const detail =
        error instanceof TomlError ? `line ${error.line}, column ${error.column}: ${error.message.split('\n')[0]}` : String(error);
      throw new ConfigError(options.file, [`not valid TOML: ${detail}`]);
    }
    apply(config, raw, path.dirname(path.resolve(cwd, options.file)), problems, 'file');
  }
  // A flag the command line got wrong is a usage error (exit 2); what the file says, or what the values name, a configuration error.
  const flagProblems: string[] = [];
  if (options.flags) apply(config, options.flags, cwd, flagProblems, 'flag');
  if (flagProblems.length > 0) throw new UsageError([...flagProblems, ...problems.map((problem) => `${source}: ${problem}`)]);
  // Started by systemd's socket activation with no listen address given: the passed sockets are the ones to serve.
  if (config.listen === defaultListen && activatedSockets().length > 0) config.listen = ['systemd'];
  if (problems.length === 0) validate(config, problems);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

/**
 * Reading and validating `gatehouse serve`'s configuration: a TOML file and/or
 * flags, one key table for both (schema.ts). Every error names the key and
 * says what to write instead; all errors are collected, not just the first.
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import {
  SERVE_DEFAULTS,
  SERVE_KEYS,
  fieldName,
  parseDuration,
  type FastCGIRouteConfig,
  type KeyDefinition,
  type ScriptAliasConfig,
  type ServeConfig,
} from './schema.js';
import { HTTP_MIN_HEADER_BYTES } from '../limits.js';
import { parseListenAddress } from './listen.js';
import { resolveAddress } from '../fastcgi/client/address.js';

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(source: string, problems: string[]) {
    super(`${source}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  - ${problems.join('\n  - ')}`}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const KEY_BY_NAME = new Map<string, KeyDefinition>();
for (const key of SERVE_KEYS) {
  KEY_BY_NAME.set(key.name, key);
  for (const alias of key.aliases ?? []) KEY_BY_NAME.set(alias, key);
}

/** The closest known name, for "did you mean" hints. */
export function closestName(name: string, names: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of names) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

type RawValue = unknown;

/** Converts one raw value (TOML or flag text) for `key`; returns an error message on failure. */
function convert(key: KeyDefinition, raw: RawValue, baseDir: string, problems: string[], where: string): unknown {
  const fail = (expected: string) => {
    problems.push(`${where}: expected ${expected}, got ${JSON.stringify(raw)}`);
    return undefined;
  };
  switch (key.kind) {
    case 'string': {
      if (typeof raw !== 'string' || raw === '') return fail('a non-empty string');
      return isPathKey(key.name) && raw !== '-' && raw !== 'off' ? path.resolve(baseDir, raw) : raw;
    }
    case 'strings': {
      const list = Array.isArray(raw) ? raw : [raw];
      if (!list.every((item) => typeof item === 'string' && item !== '')) return fail('a string or a list of strings');
      return list as string[];
    }
    case 'integer': {
      const value = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : raw;
      if (typeof value !== 'number' && typeof value !== 'bigint') return fail('a whole number');
      const number = Number(value);
      if (!Number.isSafeInteger(number) || number < 0) return fail('a whole number >= 0');
      return number;
    }
    case 'boolean': {
      if (raw === true || raw === 'true' || raw === '') return true;
      if (raw === false || raw === 'false') return false;
      return fail('true or false');
    }
    case 'duration': {
      if (typeof raw !== 'string' && typeof raw !== 'number') return fail('a duration such as 20, "20s" or "500ms"');
      const ms = parseDuration(raw);
      if (typeof ms === 'string') {
        problems.push(`${where}: ${ms}`);
        return undefined;
      }
      return ms;
    }
    case 'listen': {
      const list = Array.isArray(raw) ? raw : [raw];
      for (const item of list) {
        if (typeof item !== 'string') return fail('an address such as "127.0.0.1:8080" or "unix:/run/gatehouse.sock"');
        const parsed = parseListenAddress(item);
        if (typeof parsed === 'string') problems.push(`${where}: ${parsed}`);
      }
      return list as string[];
    }
    case 'table': {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('a table of NAME = "value"');
      const out: Record<string, string> = {};
      for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) problems.push(`${where}.${name}: variable names are letters, digits and _`);
        else if (typeof value !== 'string') problems.push(`${where}.${name}: expected a string value`);
        else out[name] = value;
      }
      return out;
    }
    case 'routes':
      return raw;
  }
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
  'upstreams',
  'root',
  'split-path',
  'index',
  'script-filename',
  'params',
  'connect-timeout',
  'read-timeout',
  'max-connections',
  'keep-alive',
  'multiplex',
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
    const route: FastCGIRouteConfig = { url: '', upstreams: [] };
    if (typeof table.url !== 'string' || !table.url.startsWith('/'))
      problems.push(`${where}.url: expected a URL prefix starting with "/", such as "/app/"`);
    else route.url = table.url;
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
    const optionalString = (name: string, set: (value: string) => void) => {
      const value = table[name];
      if (value === undefined) return;
      if (typeof value !== 'string' || value === '') problems.push(`${where}.${name}: expected a non-empty string`);
      else set(value);
    };
    optionalString('root', (value) => (route.root = path.resolve(baseDir, value)));
    optionalString('split-path', (value) => (route.splitPath = value));
    optionalString('index', (value) => (route.index = value));
    optionalString('script-filename', (value) => (route.scriptFilename = path.resolve(baseDir, value)));
    for (const [name, field] of [
      ['connect-timeout', 'connectTimeoutMs'],
      ['read-timeout', 'readTimeoutMs'],
    ] as const) {
      if (table[name] === undefined) continue;
      const ms = parseDuration(table[name] as string);
      if (typeof ms === 'string') problems.push(`${where}.${name}: ${ms}`);
      else route[field] = ms;
    }
    if (table['max-connections'] !== undefined) {
      const value = Number(table['max-connections']);
      if (!Number.isSafeInteger(value) || value < 1) problems.push(`${where}.max-connections: expected a whole number >= 1`);
      else route.maxConnections = value;
    }
    if (table['keep-alive'] !== undefined) {
      if (typeof table['keep-alive'] !== 'boolean') problems.push(`${where}.keep-alive: expected true or false`);
      else route.keepAlive = table['keep-alive'];
    }
    if (table.multiplex !== undefined) {
      if (typeof table.multiplex !== 'boolean') problems.push(`${where}.multiplex: expected true or false`);
      else route.multiplex = table.multiplex;
    }
    if (table.params !== undefined) {
      const params = convert({ name: 'params', kind: 'table', summary: '' }, table.params, baseDir, problems, `${where}.params`);
      if (params) route.params = params as Record<string, string>;
    }
    return route.url && route.upstreams.length ? [route] : [];
  });
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
  for (const route of config.fastcgi) {
    if (!route.root && !route.scriptFilename && !config.docroot) {
      problems.push(
        `fastcgi ${route.url}: set root (the app's document root) or script-filename, or a docroot, so SCRIPT_FILENAME can be built`,
      );
    }
  }
  if (config.requestTimeoutMs !== 0 && config.requestTimeoutMs < config.headersTimeoutMs) {
    problems.push(
      `request-timeout (${config.requestTimeoutMs} ms) is shorter than headers-timeout (${config.headersTimeoutMs} ms); raise it or set 0 for no limit`,
    );
  }
  if (config.maxScripts < 1) problems.push('max-scripts: must be at least 1');
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
  if (config.maxHeaderBytes < HTTP_MIN_HEADER_BYTES)
    problems.push(
      `max-header-bytes: ${config.maxHeaderBytes} is too small for any request head; write at least ${HTTP_MIN_HEADER_BYTES} (default ${SERVE_DEFAULTS.maxHeaderBytes})`,
    );
  if (config.maxUrlBytes < 1) problems.push(`max-url-bytes: must be at least 1 (default ${SERVE_DEFAULTS.maxUrlBytes})`);
  // 0 would mean "kill every script at once"; there is no "no limit" for scripts (a hung one would hold its slot forever).
  if (config.scriptTimeoutMs < 1) problems.push('script-timeout: must be longer than 0; write a time such as 60s or 500ms');
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
  if (options.flags) apply(config, options.flags, cwd, problems, 'flag');
  if (problems.length === 0) validate(config, problems);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}

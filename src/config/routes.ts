/**
 * Which route of `gatehouse serve` takes a request, decided once per request
 * on the decoded, normalised path, in the order the manual documents (like
 * nginx's location rules, where a regular expression wins over a prefix):
 *
 *   1. [[fastcgi]] routes with `match` (a regular expression) or `extensions`
 *      (file endings), in the order of the file: the first whose url prefix
 *      and pattern both fit the path;
 *   2. else the longest url prefix among the other [[fastcgi]] routes, the
 *      cgi-bin directory (/cgi-bin/) and the [[script-alias]] routes (on equal
 *      prefixes the first listed, FastCGI routes before CGI ones);
 *   3. else the document root: a file with a cgi-ext ending runs as CGI, any
 *      other is served as it is (404 without a docroot).
 *
 * Pure: the front asks select(); `gatehouse serve --check` asks
 * shadowedRoutes() for routes that can never be chosen. It is read from the
 * configuration alone and the configuration's check asks it, so it lives
 * here, below the front (src/http) that uses it.
 */
import type { FastCGIRouteConfig, ServeConfig } from './schema.js';

export type RouteTarget =
  /** The [[fastcgi]] route at this position in the configuration. */
  | { kind: 'fastcgi'; index: number }
  /** A CGI directory (cgi-bin or a script alias): the CGI handler resolves the script. */
  | { kind: 'cgi' }
  /** No route: CGI by ending inside the document root, then static files. */
  | { kind: 'document-root' };

interface PatternRoute {
  name: string;
  prefix: string;
  route: FastCGIRouteConfig;
  pattern: RegExp | null;
  target: RouteTarget;
}

interface PrefixRoute {
  name: string;
  prefix: string;
  target: RouteTarget;
}

/** `path` is under `prefix` ("/app/" takes "/app/x" and "/app" itself, as the prefix loop always did). */
function underPrefix(path: string, prefix: string): boolean {
  return path.startsWith(prefix) || `${path}/` === prefix;
}

/**
 * The script part of `path` as the FastCGI handler will compute it: cut after
 * the first segment ending in split-path, and with the index appended to a
 * path that ends in "/".
 */
export function scriptPart(path: string, route: Pick<FastCGIRouteConfig, 'splitPath' | 'index'>): string {
  let script = path;
  if (route.splitPath) {
    const segments = path.split('/');
    const at = segments.findIndex((segment, position) => position > 0 && segment.endsWith(route.splitPath!));
    if (at !== -1) script = segments.slice(0, at + 1).join('/');
  }
  if (script.endsWith('/') && route.index) script += route.index;
  return script;
}

function patternFits(entry: PatternRoute, path: string): boolean {
  const script = scriptPart(path, entry.route);
  if (entry.pattern) return entry.pattern.test(path) || (script !== path && entry.pattern.test(script));
  const name = script.slice(script.lastIndexOf('/') + 1);
  return (entry.route.extensions ?? []).some((extension) => name.length > extension.length && name.endsWith(extension));
}

function describeFastCGI(route: FastCGIRouteConfig, index: number): string {
  const condition =
    route.match !== undefined
      ? `, match = '${route.match}'`
      : route.extensions !== undefined
        ? `, extensions = [${route.extensions.map((extension) => `"${extension}"`).join(', ')}]`
        : '';
  return `fastcgi[${index}] (url = "${route.url}"${condition})`;
}

export class RouteTable {
  readonly #patterns: PatternRoute[] = [];
  readonly #prefixes: PrefixRoute[] = [];
  readonly #aliases: PrefixRoute[] = [];

  constructor(config: Pick<ServeConfig, 'fastcgi' | 'cgiBin' | 'scriptAlias'>) {
    config.fastcgi.forEach((route, index) => {
      const name = describeFastCGI(route, index);
      const target: RouteTarget = { kind: 'fastcgi', index };
      if (route.match !== undefined || route.extensions !== undefined) {
        // The configuration checked the expression already (config/load.ts).
        this.#patterns.push({
          name,
          prefix: route.url,
          route,
          pattern: route.match !== undefined ? new RegExp(route.match) : null,
          target,
        });
      } else this.#prefixes.push({ name, prefix: route.url, target });
    });
    if (config.cgiBin) this.#aliases.push({ name: 'cgi-bin (url = "/cgi-bin/")', prefix: '/cgi-bin/', target: { kind: 'cgi' } });
    for (const [index, alias] of config.scriptAlias.entries())
      this.#aliases.push({ name: `script-alias[${index}] (url = "${alias.url}")`, prefix: alias.url, target: { kind: 'cgi' } });
    this.#prefixes.push(...this.#aliases);
  }

  /** The route that takes `path` (decoded and normalised, starting with "/"). */
  select(path: string): RouteTarget {
    for (const entry of this.#patterns) if (underPrefix(path, entry.prefix) && patternFits(entry, path)) return entry.target;
    let best: PrefixRoute | null = null;
    for (const entry of this.#prefixes)
      if (underPrefix(path, entry.prefix) && (best === null || entry.prefix.length > best.prefix.length)) best = entry;
    return best?.target ?? { kind: 'document-root' };
  }

  /**
   * Routes that can never be chosen, one line each naming the route, the one
   * that takes its paths, and what to write instead. Only sure cases are
   * reported: two regular expressions are compared by their text.
   */
  shadowed(config: Pick<ServeConfig, 'cgiExt'>): string[] {
    const problems: string[] = [];
    this.#patterns.forEach((later, position) => {
      const earlier = this.#patterns.slice(0, position).find((candidate) => covers(candidate, later));
      if (earlier)
        problems.push(
          `${later.name}: never used: ${earlier.name} comes first and takes every path it would; remove it, or give it another url, match or extensions`,
        );
    });
    this.#prefixes.forEach((later, position) => {
      const earlier = this.#prefixes.slice(0, position).find((candidate) => candidate.prefix === later.prefix);
      if (earlier)
        problems.push(`${later.name}: never used: ${earlier.name} has the same url and comes first; remove one, or change its url`);
    });
    // The CGI handler tries its directories in order, as Apache's ScriptAlias are: a longer url after a shorter one is never reached.
    this.#aliases.forEach((later, position) => {
      const earlier = this.#aliases
        .slice(0, position)
        .find((candidate) => candidate.prefix !== later.prefix && underPrefix(later.prefix, candidate.prefix));
      if (earlier)
        problems.push(
          `${later.name}: never used: ${earlier.name} comes first and takes its paths (CGI directories are tried in order, cgi-bin first); list the longer url first, or choose another url`,
        );
    });
    const everything = this.#prefixes.find((entry) => entry.prefix === '/');
    if (everything && config.cgiExt.length > 0)
      problems.push(
        `cgi-ext: never used: ${everything.name} takes every path no other route takes, so no ${config.cgiExt.join(' or ')} file runs as CGI; give that route match or extensions instead of url = "/", or drop cgi-ext`,
      );
    return problems;
  }
}

/** `earlier` takes every path `later` would take (tried before it). */
function covers(earlier: PatternRoute, later: PatternRoute): boolean {
  if (!underPrefix(later.prefix, earlier.prefix)) return false;
  // split-path and index change the script part a pattern is tested on.
  if (earlier.route.splitPath !== later.route.splitPath || earlier.route.index !== later.route.index) return false;
  if (earlier.pattern && later.pattern) return earlier.pattern.source === later.pattern.source;
  if (earlier.pattern || later.pattern) return false;
  const taken = earlier.route.extensions ?? [];
  return (later.route.extensions ?? []).every((extension) => taken.includes(extension));
}

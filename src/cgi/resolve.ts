/**
 * Where a script is: from a URL path to a file on disk, split into
 * SCRIPT_NAME and PATH_INFO (RFC 3875 4.1.5, 4.1.13) by walking the decoded
 * path segments through the filesystem, as Apache's directory walk does.
 *
 * Two kinds of route, as in Apache httpd:
 * - a ScriptAlias: URL prefix -> directory, every regular file there is a script;
 * - a handler by extension inside a document root (AddHandler cgi-script .cgi):
 *   files with those extensions are scripts, other files are static.
 *
 * Refused, never executed and never leaking a file from outside the root:
 * a bad percent escape, an encoded slash (%2F, Apache's AllowEncodedSlashes Off),
 * a NUL, a backslash, `..` (decoded too: %2e%2e) climbing above the URL root, and
 * a symlink whose target leaves the configured root (realpath check).
 *
 * The walk uses synchronous stat(2) and realpath(3), as nginx and Apache's
 * workers do: on a local file system these are answered from the kernel's
 * caches in microseconds, while each asynchronous call is a round trip
 * through libuv's thread pool (measured: the walk was about 0.14 ms of the
 * front's 0.8 ms of CPU per CGI request). The cost is that a hung network
 * file system under a route's directory stalls the front: keep CGI
 * directories on local disks.
 */
import { promises as fs, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { ErrorCode } from '../errors.js';
import { CGI_ROOT_REALPATH_CACHE_ENTRIES, CGI_ROOT_REALPATH_CACHE_MS } from '../limits.js';
import type { EnvironmentValue } from '../spawn/order.js';

export interface ScriptAliasRoute {
  kind: 'script-alias';
  /** URL prefix, e.g. "/cgi-bin/" (a trailing slash means only paths below it match). */
  urlPrefix: string;
  /** Absolute directory the prefix maps to. */
  directory: string;
}

export interface ExtensionRoute {
  kind: 'extensions';
  /** URL prefix the document root serves ("/" for a whole site). */
  urlPrefix?: string;
  documentRoot: string;
  /** File name endings run as scripts, with the dot: [".cgi", ".pl"]. */
  extensions: readonly string[];
}

export type ScriptRoute = ScriptAliasRoute | ExtensionRoute;

export interface ResolvedScript {
  kind: 'script';
  /** Decoded URL path of the script: "" or starting with '/'. */
  scriptName: string;
  /** The script file under the configured directory (its real path checked to be inside the root); never contains PATH_INFO. */
  scriptFilename: string;
  /**
   * Decoded rest of the path after the script: "" or starting with '/'. Text
   * when every decoded segment is UTF-8; otherwise a Buffer of the decoded
   * bytes exactly (`%E9` is the byte e9, as Apache passes it).
   */
  pathInfo: EnvironmentValue;
  /** Apache's CONTEXT_PREFIX and CONTEXT_DOCUMENT_ROOT for this route. */
  contextPrefix: string;
  contextDocumentRoot: string;
  /** The script name starts with "nph-": its output goes to the client raw. */
  nph: boolean;
}

export interface ResolvedStatic {
  kind: 'static';
  /** A regular file or directory inside the document root, for the static handler. */
  filename: string;
  directory: boolean;
}

export interface RefusedPath {
  kind: 'refused';
  status: 400 | 403 | 404;
  code: ErrorCode;
  /** For the error log: what was wrong and with which path. */
  reason: string;
}

export type Resolution = ResolvedScript | ResolvedStatic | RefusedPath | { kind: 'no-match' };

/** The URL path decoded and normalised: segments without '.', '..' or empties, and whether it ended with '/'. */
export interface NormalisedPath {
  /** Decoded segments: UTF-8 text, or one character per byte for a segment whose bytes are not UTF-8. */
  segments: string[];
  /** For each segment, true when its bytes were not UTF-8 (the string holds them one character per byte). */
  bytewise: boolean[];
  trailingSlash: boolean;
}

/**
 * The decoded path from segment `start` on ("" when there is none), with a
 * trailing slash when the URL had one: text when every segment is UTF-8, else
 * the exact decoded bytes. PATH_INFO is made this way.
 */
export function decodedPathFrom(normalised: NormalisedPath, start: number): EnvironmentValue {
  const { segments, bytewise, trailingSlash } = normalised;
  if (start >= segments.length) return trailingSlash ? '/' : '';
  const slash = trailingSlash ? '/' : '';
  if (!bytewise.slice(start).includes(true)) return `/${segments.slice(start).join('/')}${slash}`;
  const parts: Buffer[] = [];
  for (let index = start; index < segments.length; index++)
    parts.push(Buffer.from('/'), Buffer.from(segments[index]!, bytewise[index] ? 'latin1' : 'utf8'));
  if (slash) parts.push(Buffer.from(slash));
  return Buffer.concat(parts);
}

/** Decodes and normalises a raw URL path (no query). Returns a refusal instead of throwing. */
export function normaliseUrlPath(rawPath: string): NormalisedPath | RefusedPath {
  if (!rawPath.startsWith('/'))
    return refuse(400, ErrorCode.CGI_PATH_BAD_REQUEST, `the path ${JSON.stringify(rawPath)} does not start with '/'`);
  const segments: string[] = [];
  const bytewise: boolean[] = [];
  const rawSegments = rawPath.split('/');
  for (let index = 1; index < rawSegments.length; index++) {
    const raw = rawSegments[index]!;
    // An encoded slash would let one segment carry a path: Apache (AllowEncodedSlashes Off) answers 404.
    if (/%2f/i.test(raw)) return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `encoded slash in ${JSON.stringify(rawPath)}`);
    const decoded = percentDecode(raw);
    if (decoded === null) return refuse(400, ErrorCode.CGI_PATH_BAD_REQUEST, `bad percent escape in ${JSON.stringify(rawPath)}`);
    const segment = decoded.text;
    if (segment.includes('\0')) return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `NUL byte in ${JSON.stringify(rawPath)}`);
    if (segment.includes('\\')) return refuse(400, ErrorCode.CGI_PATH_BAD_REQUEST, `backslash in ${JSON.stringify(rawPath)}`);
    if (segment === '' || segment === '.') continue;
    if (segment === '..') {
      if (segments.length === 0)
        return refuse(400, ErrorCode.CGI_PATH_BAD_REQUEST, `'..' climbs above the root in ${JSON.stringify(rawPath)}`);
      segments.pop();
      bytewise.pop();
      continue;
    }
    segments.push(segment);
    bytewise.push(decoded.bytewise);
  }
  const last = rawSegments[rawSegments.length - 1]!;
  const trailingSlash = rawSegments.length > 1 && (last === '' || last === '.' || last === '..' || /^(%2e|\.){1,2}$/i.test(last));
  return { segments, bytewise, trailingSlash };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Percent-decodes one segment (null for a '%' without two hex digits, which
 * Apache answers with 400). The decoded bytes are read as UTF-8 when they are
 * valid UTF-8, else one character per byte (Latin-1, `bytewise`), as Apache
 * accepts any byte: such a path is then simply not found, instead of refused,
 * and as PATH_INFO it is passed on as those bytes.
 */
function percentDecode(raw: string): { text: string; bytewise: boolean } | null {
  if (/^[\x00-\x7f]*$/.test(raw) && !raw.includes('%')) return { text: raw, bytewise: false };
  if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return null;
  // The raw segment is one character per byte (node:http); escapes add their byte.
  const bytes = Buffer.from(
    raw.replace(/%([0-9A-Fa-f]{2})/g, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16))),
    'latin1',
  );
  try {
    return { text: utf8.decode(bytes), bytewise: false };
  } catch {
    return { text: bytes.toString('latin1'), bytewise: true };
  }
}

/** Resolves a raw URL path against one route. */
export async function resolveScript(rawPath: string, route: ScriptRoute): Promise<Resolution> {
  const normalised = normaliseUrlPath(rawPath);
  if ('kind' in normalised) return normalised;
  const prefixSegments = (route.urlPrefix ?? '/').split('/').filter((segment) => segment !== '');
  const { segments } = normalised;
  for (let index = 0; index < prefixSegments.length; index++) if (segments[index] !== prefixSegments[index]) return { kind: 'no-match' };
  // "/cgi-bin" itself (no trailing part) is the directory: a ScriptAlias never runs a directory (Apache: 403).
  const rootDirectory = route.kind === 'script-alias' ? route.directory : route.documentRoot;
  const prefix = prefixSegments.length === 0 ? '' : `/${prefixSegments.join('/')}`;
  const contextPrefix = route.urlPrefix ?? '/';
  let realRoot: string;
  try {
    realRoot = await realRootOf(rootDirectory);
  } catch (error) {
    return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `the route's directory ${rootDirectory} cannot be read: ${(error as Error).message}`);
  }

  // Names as configured (SCRIPT_FILENAME shows the configured directory, as Apache's does); containment is checked on real paths.
  let current = path.resolve(rootDirectory);
  let scriptName = prefix;
  for (let index = prefixSegments.length; index < segments.length; index++) {
    const segment = segments[index]!;
    const candidate = path.join(current, segment);
    let stat;
    try {
      stat = statSync(candidate, { throwIfNoEntry: false });
    } catch {
      stat = undefined; // ENOTDIR, EACCES, ELOOP: nothing usable there either
    }
    if (!stat) return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `${candidate} does not exist (for ${JSON.stringify(rawPath)})`);
    scriptName += `/${segment}`;
    if (stat.isDirectory()) {
      current = candidate;
      continue;
    }
    if (!stat.isFile()) return refuse(403, ErrorCode.CGI_PATH_FORBIDDEN, `${candidate} is not a regular file`);
    const real = realpathInside(candidate, realRoot);
    if (!real) return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `${candidate} leads outside ${realRoot} (symlink)`);
    const pathInfo = decodedPathFrom(normalised, index + 1);
    const isScript = route.kind === 'script-alias' || route.extensions.some((extension) => segment.endsWith(extension));
    if (!isScript) {
      // A static file with trailing path is not found (Apache's AcceptPathInfo default for files).
      if (pathInfo !== '') return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `${candidate} is not a script and takes no path info`);
      return { kind: 'static', filename: real, directory: false };
    }
    if (!isExecutable(stat)) {
      return refuse(403, ErrorCode.CGI_PATH_FORBIDDEN, `${candidate} is not executable (chmod +x it to run it as a CGI script)`);
    }
    return {
      kind: 'script',
      scriptName,
      scriptFilename: candidate,
      pathInfo,
      contextPrefix: route.kind === 'script-alias' ? contextPrefix : '',
      contextDocumentRoot: route.kind === 'script-alias' ? withTrailingSlash(route.directory) : route.documentRoot,
      nph: segment.startsWith('nph-'),
    };
  }
  if (route.kind === 'script-alias') return refuse(403, ErrorCode.CGI_PATH_FORBIDDEN, `${current} is a directory, not a script`);
  const real = realpathInside(current, realRoot);
  if (!real) return refuse(404, ErrorCode.CGI_PATH_NOT_FOUND, `${current} leads outside ${realRoot} (symlink)`);
  return { kind: 'static', filename: real, directory: true };
}

/** Tries each route in order; the first that matches decides. */
export async function resolveInRoutes(rawPath: string, routes: readonly ScriptRoute[]): Promise<Resolution> {
  for (const route of routes) {
    const resolution = await resolveScript(rawPath, route);
    if (resolution.kind !== 'no-match') return resolution;
  }
  return { kind: 'no-match' };
}

const realRoots = new Map<string, { real: string; until: number }>();

/** The real path of a route's root, remembered briefly: it is the same for every request, and the script's own path is still checked each time. */
async function realRootOf(directory: string): Promise<string> {
  const now = Date.now();
  const cached = realRoots.get(directory);
  if (cached && cached.until > now) return cached.real;
  const real = await fs.realpath(directory);
  if (realRoots.size > CGI_ROOT_REALPATH_CACHE_ENTRIES) realRoots.clear();
  realRoots.set(directory, { real, until: now + CGI_ROOT_REALPATH_CACHE_MS });
  return real;
}

function realpathInside(file: string, realRoot: string): string | null {
  let real: string;
  try {
    real = realpathSync.native(file);
  } catch {
    return null;
  }
  const rootWithSlash = realRoot.endsWith('/') ? realRoot : `${realRoot}/`;
  return real === realRoot || real.startsWith(rootWithSlash) ? real : null;
}

/** execute permission for this process, from the stat already made (access(2) would cost another system call per request). */
function isExecutable(stat: { mode: number; uid: number; gid: number }): boolean {
  const uid = process.getuid?.() ?? -1;
  // root may execute a file when any execute bit is set.
  if (uid === 0) return (stat.mode & 0o111) !== 0;
  if (stat.uid === uid) return (stat.mode & 0o100) !== 0;
  const groups = process.getgroups?.() ?? [];
  if (stat.gid === process.getgid?.() || groups.includes(stat.gid)) return (stat.mode & 0o010) !== 0;
  return (stat.mode & 0o001) !== 0;
}

function withTrailingSlash(directory: string): string {
  return directory.endsWith('/') ? directory : `${directory}/`;
}

function refuse(status: RefusedPath['status'], code: ErrorCode, reason: string): RefusedPath {
  return { kind: 'refused', status, code, reason };
}

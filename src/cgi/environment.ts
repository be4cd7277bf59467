/**
 * The one CGI environment builder. It makes a script's environment (CGI/1.1,
 * RFC 3875, with the extras Apache httpd 2.4's mod_cgi adds) and, unchanged,
 * the PARAMS a FastCGI upstream receives, so CGI and FastCGI can never
 * disagree on what a variable means. Pure: no sockets, no processes, no
 * reading of process.env except through the `inheritedEnvironment` the caller
 * passes in.
 *
 * An environment is bytes, not text (execve and FastCGI PARAMS carry bytes).
 * What came off the wire (the request line and the headers) is passed on
 * byte for byte, as Apache, nginx and fcgiwrap do: a header `X-Raw: ff fe 80`
 * reaches the script as HTTP_X_RAW = ff fe 80, never re-encoded. What came
 * from the configuration or the file system (paths, SetEnv, PassEnv) is text
 * and goes out as its UTF-8 bytes.
 */
import type { EnvironmentValue } from '../spawn/order.js';

/** One request as the builder sees it: plain data, so cgid and FastCGI can describe a request without node:http. */
export interface CgiRequestDescription {
  method: string;
  /** The request target exactly as the client sent it (path and query, still percent-encoded), one character per byte as node:http gives it. */
  target: string;
  /** "1.1", "1.0". */
  httpVersion: string;
  /** Header name/value pairs in arrival order, names as sent (node:http's rawHeaders, paired): one character per byte (Latin-1), like `target`. */
  headers: ReadonlyArray<readonly [name: string, value: string]>;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** The connection is TLS: REQUEST_SCHEME=https and HTTPS=on. */
  tls: boolean;
  /** Decoded URL path of the script (empty or starting with '/'). */
  scriptName: string;
  /** The script's file on disk; never contains PATH_INFO. */
  scriptFilename: string;
  /**
   * Decoded extra path after the script (empty or starting with '/'): text,
   * or a Buffer of the decoded bytes when they are not UTF-8 (resolve.ts).
   */
  pathInfo: EnvironmentValue;
  documentRoot: string;
  /** Apache's CONTEXT_PREFIX: the URL prefix of the alias that mapped the script ("" for the document root). */
  contextPrefix?: string;
  /** Apache's CONTEXT_DOCUMENT_ROOT: the directory that prefix maps to (the document root by default). */
  contextDocumentRoot?: string;
  /**
   * Bytes the script will read on stdin. When given it is CONTENT_LENGTH and
   * overrides the Content-Length header (a dechunked, spooled body); when
   * absent CONTENT_LENGTH comes from the Content-Length header, as Apache does.
   */
  contentLength?: number;
  remoteUser?: string;
  authType?: string;
  /** Set only when the server resolved the client's name (Apache: HostnameLookups On). */
  remoteHost?: string;
  /**
   * For a local redirect (RFC 3875 6.2.2): the environment of the request that
   * redirected. Each of its variables reappears as REDIRECT_NAME, as Apache's
   * internal redirect does, with REDIRECT_STATUS and REDIRECT_URL.
   */
  redirectedFrom?: { environment: CgiEnvironment; url: string; status: number };
}

/** How the server is configured; one object per site, shared by every request. */
export interface EnvironmentPolicy {
  /** The configured ServerName; used when the request has no usable Host header, or always with `useCanonicalName`. */
  serverName: string;
  /** Apache's UseCanonicalName On: SERVER_NAME/SERVER_PORT from the configuration, not the Host header. */
  useCanonicalName?: boolean;
  /** The port announced with `useCanonicalName` (default: the local port). */
  serverPort?: number;
  serverSoftware?: string;
  /** Apache's default when ServerAdmin is not set. */
  serverAdmin?: string;
  /** Apache's ServerSignature text; Apache's default (Off) makes it the empty string. */
  serverSignature?: string;
  /** Apache's CGIPassAuth: pass Authorization (and Proxy-Authorization) to the script as HTTP_*. */
  passAuthorization?: boolean;
  /** SetEnv: variables set by the operator, applied after the request's own (the operator wins). */
  setEnv?: Readonly<Record<string, string>>;
  /** PassEnv: names copied from `inheritedEnvironment` when present there. */
  passEnv?: readonly string[];
  /** The server's own environment, read only for PATH and the PassEnv names (default: none). */
  inheritedEnvironment?: Readonly<Record<string, string | undefined>>;
}

/** Ordered, unique names. An array so FastCGI PARAMS keep a stable order; `environmentRecord` makes a spawn env. */
export type CgiEnvironment = Array<[name: string, value: EnvironmentValue]>;

export const GATEWAY_INTERFACE = 'CGI/1.1';
export const DEFAULT_SERVER_SOFTWARE = 'gatehouse';
/** What Apache announces when ServerAdmin is not configured. */
export const DEFAULT_SERVER_ADMIN = '[no address given]';
/** Apache's DEFAULT_PATH on Unix, used when the server's environment has no PATH. */
export const DEFAULT_SCRIPT_PATH = '/usr/local/bin:/usr/bin:/bin';

/** Letters, digits and hyphens: the only header names Apache 2.4 turns into HTTP_* (anything else is dropped, so `X_Forwarded_For` cannot forge `HTTP_X_FORWARDED_FOR`). */
const CGI_HEADER_NAME = /^[A-Za-z0-9-]+$/;
/** Environment variable names the operator may set (POSIX portable names). */
const OPERATOR_VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Builds the environment of one request. Never throws on odd input: unusable headers and values are left out. */
export function buildEnvironment(request: CgiRequestDescription, policy: EnvironmentPolicy): CgiEnvironment {
  const env = new EnvironmentBuilder();
  const redirect = request.redirectedFrom;
  if (redirect) {
    for (const [name, value] of redirect.environment) env.set(`REDIRECT_${name}`, value);
    env.set('REDIRECT_URL', redirect.url);
    env.set('REDIRECT_STATUS', String(redirect.status));
  }
  const { host, headerContentLength } = setHeaderVariables(env, request, policy);
  setRequestVariables(env, request, policy, host, headerContentLength);
  const inherited = policy.inheritedEnvironment ?? {};
  for (const name of policy.passEnv ?? []) {
    if (OPERATOR_VARIABLE_NAME.test(name)) env.set(name, inherited[name]);
  }
  for (const [name, value] of Object.entries(policy.setEnv ?? {})) {
    if (OPERATOR_VARIABLE_NAME.test(name)) env.set(name, value);
  }
  return env.entries();
}

/** The variables in the order first set (a later set replaces the value, not the place). */
class EnvironmentBuilder {
  readonly #env = new Map<string, EnvironmentValue>();

  set(name: string, value: EnvironmentValue | undefined): void {
    // A NUL cannot be passed through execve (and would truncate the value in C); such a variable is left out.
    if (value === undefined || value.includes('\0')) return;
    this.#env.set(name, value);
  }

  /** A value that came off the wire: one character per byte (node:http's Latin-1), passed on as those bytes. */
  setWire(name: string, value: string | undefined): void {
    this.set(name, value === undefined ? undefined : wireBytes(value));
  }

  entries(): CgiEnvironment {
    return [...this.#env];
  }
}

/** CONTENT_TYPE and HTTP_* from the request's headers; returns the Host and Content-Length headers for what follows. */
function setHeaderVariables(env: EnvironmentBuilder, request: CgiRequestDescription, policy: EnvironmentPolicy) {
  let host: string | undefined;
  let headerContentLength: string | undefined;
  for (const [lowerName, { name, value }] of mergeHeaders(request.headers)) {
    if (lowerName === 'content-type') {
      env.setWire('CONTENT_TYPE', value);
      continue;
    }
    if (lowerName === 'content-length') {
      headerContentLength = value;
      continue;
    }
    if (lowerName === 'host') host = value;
    // httpoxy (CVE-2016-5385): HTTP_PROXY is read by many HTTP clients as their proxy setting.
    if (lowerName === 'proxy') continue;
    if ((lowerName === 'authorization' || lowerName === 'proxy-authorization') && !policy.passAuthorization) continue;
    // A dechunked body is announced by CONTENT_LENGTH; the script must not see a framing it will not get.
    if (lowerName === 'transfer-encoding' && request.contentLength !== undefined) continue;
    if (!CGI_HEADER_NAME.test(name)) continue;
    env.setWire(`HTTP_${lowerName.toUpperCase().replaceAll('-', '_')}`, value);
  }
  return { host, headerContentLength };
}

/** The server's, the connection's and the request's variables (RFC 3875 4.1 and Apache's additions), in Apache's order. */
function setRequestVariables(
  env: EnvironmentBuilder,
  request: CgiRequestDescription,
  policy: EnvironmentPolicy,
  host: string | undefined,
  headerContentLength: string | undefined,
): void {
  env.set('PATH', policy.inheritedEnvironment?.PATH || DEFAULT_SCRIPT_PATH);
  env.set('SERVER_SIGNATURE', policy.serverSignature ?? '');
  env.set('SERVER_SOFTWARE', policy.serverSoftware ?? DEFAULT_SERVER_SOFTWARE);
  const { serverName, serverPort } = serverIdentity(request, policy, host);
  env.set('SERVER_NAME', serverName);
  env.set('SERVER_ADDR', request.localAddress);
  env.set('SERVER_PORT', String(serverPort));
  env.set('REMOTE_ADDR', request.remoteAddress);
  env.set('REMOTE_HOST', request.remoteHost);
  env.set('DOCUMENT_ROOT', request.documentRoot);
  env.set('REQUEST_SCHEME', request.tls ? 'https' : 'http');
  env.set('CONTEXT_PREFIX', request.contextPrefix ?? '');
  env.set('CONTEXT_DOCUMENT_ROOT', request.contextDocumentRoot ?? request.documentRoot);
  env.set('SERVER_ADMIN', policy.serverAdmin ?? DEFAULT_SERVER_ADMIN);
  env.set('SCRIPT_FILENAME', request.scriptFilename);
  env.set('REMOTE_PORT', String(request.remotePort));
  env.set('REMOTE_USER', request.remoteUser);
  env.set('AUTH_TYPE', request.authType);
  if (request.tls) env.set('HTTPS', 'on');
  env.set('GATEWAY_INTERFACE', GATEWAY_INTERFACE);
  env.set('SERVER_PROTOCOL', `HTTP/${request.httpVersion}`);
  env.set('REQUEST_METHOD', request.method);
  const queryStart = request.target.indexOf('?');
  env.setWire('QUERY_STRING', queryStart === -1 ? '' : request.target.slice(queryStart + 1));
  // After a local redirect REQUEST_URI stays the client's original target (Apache takes it from the request line).
  const originalUri = request.redirectedFrom?.environment.find(([name]) => name === 'REQUEST_URI')?.[1];
  if (originalUri !== undefined) env.set('REQUEST_URI', originalUri);
  else env.setWire('REQUEST_URI', request.target);
  env.set('SCRIPT_NAME', request.scriptName);
  if (request.pathInfo.length > 0) {
    env.set('PATH_INFO', request.pathInfo);
    env.set('PATH_TRANSLATED', joinPath(request.documentRoot, request.pathInfo));
  }
  if (request.contentLength !== undefined) env.set('CONTENT_LENGTH', String(request.contentLength));
  else if (headerContentLength !== undefined) env.set('CONTENT_LENGTH', headerContentLength);
}

/**
 * A value off the wire, given one character per byte (node:http's Latin-1
 * strings), as the bytes it was: plain ASCII stays a string (its UTF-8 bytes
 * are the same bytes), anything else becomes a Buffer of exactly those bytes.
 * Decoding it as UTF-8 or re-encoding it would change what the client sent.
 */
export function wireBytes(value: string): EnvironmentValue {
  if (/^[\x00-\x7f]*$/.test(value)) return value;
  return Buffer.from(value, 'latin1');
}

/** The bytes a value stands for (a string's UTF-8 encoding). */
export function environmentBytes(value: EnvironmentValue): Buffer {
  return typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
}

/** The environment as one object, name -> value (what a ScriptSpawner takes). */
export function environmentRecord(env: CgiEnvironment): Record<string, EnvironmentValue> {
  const record: Record<string, EnvironmentValue> = Object.create(null);
  for (const [name, value] of env) record[name] = value;
  return record;
}

/** One value of an environment (undefined when absent). */
export function environmentValue(env: CgiEnvironment, name: string): EnvironmentValue | undefined {
  for (const [entryName, value] of env) if (entryName === name) return value;
  return undefined;
}

/**
 * Case-insensitive merge of repeated headers, keeping the first spelling of the
 * name. Apache merges repeated request headers with ", " (RFC 9110 5.3); a
 * Cookie header is a "; "-separated list (RFC 6265 5.4), so cookies are joined
 * that way or the script would read the first cookie of the second header as
 * part of the last cookie value of the first.
 */
function mergeHeaders(pairs: CgiRequestDescription['headers']): Map<string, { name: string; value: string }> {
  const merged = new Map<string, { name: string; value: string }>();
  for (const [name, value] of pairs) {
    const lowerName = name.toLowerCase();
    const existing = merged.get(lowerName);
    if (!existing) merged.set(lowerName, { name, value });
    else existing.value += (lowerName === 'cookie' ? '; ' : ', ') + value;
  }
  return merged;
}

/**
 * SERVER_NAME and SERVER_PORT as Apache's UseCanonicalName Off computes them:
 * the Host header's name (lower-cased) and its port, else the local port.
 */
function serverIdentity(
  request: CgiRequestDescription,
  policy: EnvironmentPolicy,
  host: string | undefined,
): { serverName: string; serverPort: number } {
  if (policy.useCanonicalName || host === undefined) {
    return { serverName: policy.serverName, serverPort: policy.serverPort ?? request.localPort };
  }
  const parsed = parseHostHeader(host);
  if (!parsed) return { serverName: policy.serverName, serverPort: request.localPort };
  return { serverName: parsed.name, serverPort: parsed.port ?? request.localPort };
}

/** `name`, `name:port`, `[v6]`, `[v6]:port`; null when it is none of those. */
export function parseHostHeader(host: string): { name: string; port?: number } | null {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::(\d{0,5}))?$/.exec(host);
  if (!match) return null;
  const name = match[1]!.toLowerCase();
  if (match[2] === undefined || match[2] === '') return { name };
  const port = Number(match[2]);
  if (port > 65535) return null;
  return { name, port };
}

function joinPath(root: string, pathInfo: EnvironmentValue): EnvironmentValue {
  const base = root.endsWith('/') ? root.slice(0, -1) : root;
  return typeof pathInfo === 'string' ? base + pathInfo : Buffer.concat([Buffer.from(base, 'utf8'), pathInfo]);
}

/**
 * The script's argv words from the query (RFC 3875 4.4, as Apache's mod_cgi):
 * only a query without an unencoded '=' is a search string; its '+'-separated
 * words are percent-decoded. A word that cannot be decoded or holds a NUL, or
 * more words than `maxWords`, means no words at all (the script still reads
 * QUERY_STRING). No shell ever sees these: they are execve arguments.
 */
export function searchWords(queryString: string, maxWords: number): string[] {
  if (queryString === '' || queryString.includes('=')) return [];
  const words = queryString.split('+');
  if (words.length > maxWords) return [];
  const decoded: string[] = [];
  for (const word of words) {
    let text: string;
    try {
      text = decodeURIComponent(word);
    } catch {
      return [];
    }
    if (text.includes('\0')) return [];
    decoded.push(text);
  }
  return decoded;
}

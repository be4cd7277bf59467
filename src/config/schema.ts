/**
 * The `gatehouse serve` configuration: one table of keys, each with its type,
 * default, documentation and validation. The same table reads the TOML file
 * and the command-line flags (a flag and a key share a name: --script-timeout
 * and `script-timeout`), prints `--help`, and is checked against the manual
 * by a test. Apache directive names are accepted as aliases where the issue
 * asks for them (CGIDScriptTimeout, ScriptLog, ScriptLogLength, ScriptLogBuffer).
 */
import type { LongOption } from '../options/command-line.js';
import type { ValueKind } from '../options/values.js';
import { CGI_SPAWN_MODES } from '../spawn/modes.js';
import { ACCESS_LOG_DIRECTIVES, DEFAULT_ACCESS_LOG_FORMAT } from '../log/access-log-format.js';
import { METRICS_ADDRESS, type ListenAddress } from '../options/listen-address.js';
import { DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from '../log/index.js';
import {
  CGID_SCRIPT_SOCK,
  CGID_SUEXEC_MIN_GID,
  CGID_SUEXEC_MIN_UID,
  CGI_MAX_CONCURRENT_SCRIPTS,
  CGI_MAX_QUEUED_SCRIPTS,
  CGI_MAX_REQUEST_BODY_BYTES,
  CGI_QUERY_ARGUMENTS,
  CGI_SCRIPT_LOG_BUFFER,
  CGI_SCRIPT_LOG_LENGTH,
  CGI_SCRIPT_TIMEOUT_MS,
  HTTP_HEADERS_TIMEOUT_MS,
  HTTP_KEEPALIVE_TIMEOUT_MS,
  HTTP_MAX_HEADER_BYTES,
  HTTP_MAX_URL_BYTES,
  HTTP_REQUEST_TIMEOUT_MS,
  HTTP_SEND_TIMEOUT_MS,
  HTTP_SHUTDOWN_GRACE_MS,
  SERVE_WORKERS_DEFAULT,
  SERVE_WORKERS_MAX,
  FASTCGI_BUFFER_MEMORY_BYTES,
  FASTCGI_MAX_TEMP_FILE_BYTES,
  UNIX_SOCKET_MODE,
} from '../limits.js';

/**
 * A key: a value grammar of src/options (a size, a duration, an address...),
 * or one of the file's structures: a table of variables, an array of route
 * tables.
 */
export interface KeyDefinition extends Omit<LongOption, 'kind'> {
  kind: ValueKind | 'table' | 'routes';
  /** A command-line flag exists for this key (same name). */
  flag?: boolean;
  /** Other names accepted in the config file (Apache's directive names). */
  aliases?: string[];
}

/** The keys that are also flags, as the command line reads them. */
export function serveFlagOptions(): LongOption[] {
  return SERVE_KEYS.filter((key): key is KeyDefinition & LongOption => key.flag === true && key.kind !== 'table' && key.kind !== 'routes');
}

export const SERVE_KEYS: readonly KeyDefinition[] = [
  {
    name: 'listen',
    kind: 'addresses',
    flag: true,
    argument: 'ADDR',
    summary: 'where to accept HTTP: HOST:PORT, [::1]:PORT, *:PORT, unix:/path, or fd:N for an inherited socket (repeatable)',
    defaultText: '127.0.0.1:8080',
  },
  {
    name: 'user',
    kind: 'string',
    flag: true,
    argument: 'USER',
    summary:
      'started as root: run the front and the scripts as this user once the sockets are bound and the logs open (required as root; "root" keeps root, with a warning)',
  },
  {
    name: 'group',
    kind: 'string',
    flag: true,
    argument: 'GROUP',
    summary: "with user: the group to run as, instead of the user's login group",
    defaultText: "the user's login group",
  },
  {
    name: 'socket-user',
    kind: 'string',
    flag: true,
    argument: 'USER',
    summary: 'owner of unix listen sockets (php-fpm listen.owner)',
    defaultText: 'user, else the user serve runs as',
  },
  {
    name: 'socket-group',
    kind: 'string',
    flag: true,
    argument: 'GROUP',
    summary: "group of unix listen sockets, e.g. the web server's (php-fpm listen.group)",
    defaultText: "socket-user's login group",
  },
  {
    name: 'socket-mode',
    kind: 'mode',
    flag: true,
    argument: 'MODE',
    summary: 'permissions of unix listen sockets, set at bind (php-fpm listen.mode)',
    defaultText: '0660',
  },
  {
    name: 'docroot',
    kind: 'string',
    flag: true,
    argument: 'DIR',
    summary: 'document root: static files, and scripts with a --cgi-ext ending (DOCUMENT_ROOT)',
  },
  {
    name: 'cgi-bin',
    kind: 'string',
    flag: true,
    argument: 'DIR',
    summary: 'a directory of CGI scripts mapped at /cgi-bin/ (every file there is a script, like ScriptAlias)',
  },
  {
    name: 'cgi-ext',
    kind: 'strings',
    flag: true,
    argument: 'EXT',
    summary: 'file endings run as CGI inside the docroot, e.g. .cgi (repeatable)',
  },
  {
    name: 'script-alias',
    kind: 'routes',
    summary:
      'more ScriptAlias mappings: [[script-alias]] tables with url = "/prefix/", dir = "DIR", and optionally user and group (suexec)',
  },
  {
    name: 'fastcgi',
    kind: 'routes',
    summary:
      'FastCGI routes: [[fastcgi]] tables with url, match or extensions, upstreams, root, split-path, index (see gatehouse-serve(8))',
  },
  {
    name: 'fastcgi-buffering',
    kind: 'flag',
    summary:
      "FastCGI routes read responses as fast as the application sends them (memory, then a temporary file), so a slow client does not hold its processes; false streams (a route's buffering key wins)",
    defaultText: 'true',
  },
  {
    name: 'fastcgi-buffer-memory',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: 'FastCGI buffering: bytes of one response kept in memory before the temporary file is used',
    defaultText: String(FASTCGI_BUFFER_MEMORY_BYTES),
  },
  {
    name: 'fastcgi-max-temp-file',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: 'FastCGI buffering: largest temporary file of one response; past it the application waits for the client (0: memory only)',
    defaultText: String(FASTCGI_MAX_TEMP_FILE_BYTES),
  },
  {
    name: 'server-name',
    kind: 'string',
    flag: true,
    argument: 'NAME',
    summary: 'ServerName: SERVER_NAME when the request has no usable Host header',
    defaultText: 'the host name',
  },
  { name: 'server-admin', kind: 'string', flag: true, argument: 'EMAIL', summary: 'ServerAdmin (SERVER_ADMIN)' },
  {
    name: 'script-timeout',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    aliases: ['CGIDScriptTimeout'],
    summary: 'kill a script that writes nothing for this long: 20, 20s, 500ms (CGIDScriptTimeout)',
    defaultText: `${CGI_SCRIPT_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'script-log',
    kind: 'string',
    flag: true,
    argument: 'FILE',
    aliases: ['ScriptLog'],
    summary: "ScriptLog: where failed script runs are written in mod_cgi's format",
  },
  {
    name: 'script-log-length',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    aliases: ['ScriptLogLength'],
    summary: 'ScriptLogLength: stop writing the script log at this size',
    defaultText: String(CGI_SCRIPT_LOG_LENGTH),
  },
  {
    name: 'script-log-buffer',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    aliases: ['ScriptLogBuffer'],
    summary: 'ScriptLogBuffer: request body bytes kept in the script log',
    defaultText: String(CGI_SCRIPT_LOG_BUFFER),
  },
  {
    name: 'script-log-secrets',
    kind: 'flag',
    flag: true,
    summary: 'write Authorization, Cookie and Set-Cookie to the script log instead of redacting them',
    defaultText: 'false',
  },
  {
    name: 'pass-authorization',
    kind: 'flag',
    flag: true,
    aliases: ['CGIPassAuth'],
    summary: 'CGIPassAuth: give scripts and FastCGI apps the Authorization header',
    defaultText: 'false',
  },
  { name: 'set-env', kind: 'table', summary: 'SetEnv: [set-env] table of variables for every script and FastCGI request' },
  {
    name: 'pass-env',
    kind: 'strings',
    flag: true,
    argument: 'NAME',
    summary: "PassEnv: copy these variables from gatehouse's own environment (repeatable)",
  },
  {
    name: 'query-arguments',
    kind: 'flag',
    flag: true,
    summary:
      "a query without '=' becomes the script's command-line arguments, as Apache does (RFC 3875 4.4); unsafe for interpreters such as php-cgi (CVE-2012-1823)",
    defaultText: 'false',
  },
  {
    name: 'max-scripts',
    kind: 'integer',
    flag: true,
    argument: 'N',
    summary: 'scripts running at once; more wait in a queue',
    defaultText: String(CGI_MAX_CONCURRENT_SCRIPTS),
  },
  {
    name: 'max-queued-scripts',
    kind: 'integer',
    flag: true,
    argument: 'N',
    summary: 'scripts waiting to run; past it 503',
    defaultText: String(CGI_MAX_QUEUED_SCRIPTS),
  },
  {
    name: 'workers',
    kind: 'processes',
    flag: true,
    argument: 'N',
    min: 1,
    max: SERVE_WORKERS_MAX,
    summary:
      'front processes accepting on the same sockets, sharing one cgid daemon; auto: one per core (max-scripts and max-queued-scripts are shared out)',
    defaultText: String(SERVE_WORKERS_DEFAULT),
  },
  {
    name: 'max-body',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: 'largest request body (LimitRequestBody); 413 above',
    defaultText: String(CGI_MAX_REQUEST_BODY_BYTES),
  },
  {
    name: 'access-log',
    kind: 'string',
    flag: true,
    argument: 'FILE',
    summary: 'access log, one line per request (see access-log-format); - for stdout, off for none; reopened on SIGUSR1',
    defaultText: '-',
  },
  {
    name: 'access-log-format',
    kind: 'string',
    flag: true,
    argument: 'FORMAT',
    summary: `the access log's line: combined, common, or Apache LogFormat directives ${ACCESS_LOG_DIRECTIVES.join(' ')}`,
    defaultText: DEFAULT_ACCESS_LOG_FORMAT,
  },
  {
    name: 'error-log',
    kind: 'string',
    flag: true,
    argument: 'FILE',
    summary: "error log (with the cgid daemon's lines); - for stderr; reopened on SIGUSR1",
    defaultText: '-',
  },
  {
    name: 'log-level',
    kind: 'choice',
    choices: LOG_LEVELS,
    flag: true,
    argument: 'LEVEL',
    summary: `least serious error-log lines written: ${LOG_LEVELS.join(', ')}`,
    defaultText: DEFAULT_LOG_LEVEL,
  },
  {
    name: 'log-format',
    kind: 'choice',
    choices: LOG_FORMATS,
    flag: true,
    argument: 'FORMAT',
    summary: 'error log lines as text (TIME LEVEL serve[PID]: MESSAGE) or json (one object per line, same fields)',
    defaultText: DEFAULT_LOG_FORMAT,
  },
  {
    name: 'metrics',
    kind: 'address',
    address: METRICS_ADDRESS,
    flag: true,
    argument: 'ADDR',
    summary:
      'serve Prometheus metrics (/metrics) and the status (/status, read with gatehouse status ADDR) on a listener of their own: HOST:PORT or unix:PATH',
    defaultText: 'off',
  },
  {
    name: 'headers-timeout',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    summary: 'a client must send the whole request head within this time (408)',
    defaultText: `${HTTP_HEADERS_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'request-timeout',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    summary: 'a client must send the whole request, body included, within this time (0: no limit)',
    defaultText: `${HTTP_REQUEST_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'keepalive-timeout',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    summary: 'an idle keep-alive connection is closed after this time',
    defaultText: `${HTTP_KEEPALIVE_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'send-timeout',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    summary:
      'a client that takes none of the response for this long is disconnected, and the script or FastCGI request behind it stopped (0: no limit)',
    defaultText: `${HTTP_SEND_TIMEOUT_MS / 1000}s`,
  },
  {
    name: 'max-header-bytes',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: 'largest request head (431 above)',
    defaultText: String(HTTP_MAX_HEADER_BYTES),
  },
  {
    name: 'max-url-bytes',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: 'longest request target (414 above)',
    defaultText: String(HTTP_MAX_URL_BYTES),
  },
  {
    name: 'cgi-spawn',
    kind: 'choice',
    choices: CGI_SPAWN_MODES,
    flag: true,
    argument: 'MODE',
    summary:
      'how scripts start: daemon (the cgid daemon, a separate small process), in-process (posix_spawn from the front), fork (child_process.spawn)',
    defaultText: 'daemon',
  },
  {
    name: 'script-sock',
    kind: 'string',
    flag: true,
    argument: 'PREFIX',
    aliases: ['ScriptSock'],
    summary: "ScriptSock: the cgid socket's path prefix (the front's pid is appended), relative to runtime-dir",
    defaultText: CGID_SCRIPT_SOCK,
  },
  {
    name: 'runtime-dir',
    kind: 'string',
    flag: true,
    argument: 'DIR',
    aliases: ['DefaultRuntimeDir'],
    summary: 'where the cgid socket lives (created 0700; refused when other users can write it)',
    defaultText: '/run/gatehouse as root (/run/gatehouse-USER with user), else $XDG_RUNTIME_DIR/gatehouse or $TMPDIR/gatehouse-UID',
  },
  {
    name: 'rlimit-cpu',
    kind: 'integer',
    flag: true,
    argument: 'SECONDS',
    aliases: ['RLimitCPU'],
    summary: 'RLimitCPU: CPU seconds per script (0: none)',
    defaultText: '0',
  },
  {
    name: 'rlimit-mem',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    aliases: ['RLimitMEM'],
    summary: 'RLimitMEM: address space per script, e.g. 512M (0: none)',
    defaultText: '0',
  },
  {
    name: 'rlimit-nproc',
    kind: 'integer',
    flag: true,
    argument: 'N',
    aliases: ['RLimitNPROC'],
    summary: "RLimitNPROC: processes of the script's user, not enforced for root (0: none)",
    defaultText: '0',
  },
  { name: 'rlimit-nofile', kind: 'integer', flag: true, argument: 'N', summary: 'open files per script (0: none)', defaultText: '0' },
  {
    name: 'max-script-output',
    kind: 'size',
    flag: true,
    argument: 'SIZE',
    summary: "a script's output cap: past it the script is killed and its response cut (0: none)",
    defaultText: '0',
  },
  {
    name: 'suexec-min-uid',
    kind: 'integer',
    flag: true,
    argument: 'UID',
    summary: 'suexec: lowest uid a route may run scripts as',
    defaultText: String(CGID_SUEXEC_MIN_UID),
  },
  {
    name: 'suexec-min-gid',
    kind: 'integer',
    flag: true,
    argument: 'GID',
    summary: 'suexec: lowest gid a route may run scripts as',
    defaultText: String(CGID_SUEXEC_MIN_GID),
  },
  {
    name: 'shutdown-grace',
    kind: 'duration',
    flag: true,
    argument: 'TIME',
    summary: 'on SIGTERM, how long requests in flight may finish before scripts are killed',
    defaultText: `${HTTP_SHUTDOWN_GRACE_MS / 1000}s`,
  },
];

export interface ScriptAliasConfig {
  url: string;
  dir: string;
  /** suexec: run this directory's scripts as this user (the cgid daemon must run as root). */
  user?: string;
  /** suexec: and this group (default: the user's name). */
  group?: string;
}

export interface FastCGIRouteConfig {
  /** URL prefix this route serves ("/app/", or "/" for everything not matched before); "/" when only match or extensions is given. */
  url: string;
  /** A regular expression the request path must match (nginx's `location ~`), such as "\\.php$". */
  match?: string;
  /** File endings the script must have (".php"): the path's script part, after split-path and index, ends in one. */
  extensions?: string[];
  /** One or more upstreams (unix:/path, host:port); tried in order on connection failure. */
  upstreams: string[];
  /** Directory that SCRIPT_FILENAME is built from (DOCUMENT_ROOT for the app); default: docroot. */
  root?: string;
  /** Cut the path after the first segment ending in this (".php"): SCRIPT_NAME up to it, PATH_INFO after. */
  splitPath?: string;
  /** Appended to a path ending in "/" (index.php). */
  index?: string;
  /** A fixed SCRIPT_FILENAME for every request (a single front controller app). */
  scriptFilename?: string;
  /** SCRIPT_FILENAME must be a file here, else 404 before the request goes out (default: on when the root exists here). */
  checkScript?: boolean;
  /** Extra params for this route. */
  params?: Record<string, string>;
  connectTimeoutMs?: number;
  readTimeoutMs?: number;
  maxConnections?: number;
  /** Keep connections open between requests (FCGI_KEEP_CONN, nginx's fastcgi_keep_conn). */
  keepAlive?: boolean;
  /** Share connections between requests when the application multiplexes (off: a slow client would stall the others). */
  multiplex?: boolean;
  /** Buffer the application's responses (memory, then a temp file) so slow clients do not hold its processes; default: fastcgi-buffering. */
  buffering?: boolean;
}

export interface ServeConfig {
  listen: string[];
  /** As root: the user (and group) the front and the scripts run as after start-up. */
  user?: string;
  group?: string;
  /** Owner, group and mode of unix listen sockets. */
  socketUser?: string;
  socketGroup?: string;
  socketMode: number;
  docroot?: string;
  cgiBin?: string;
  cgiExt: string[];
  scriptAlias: ScriptAliasConfig[];
  fastcgi: FastCGIRouteConfig[];
  fastcgiBuffering: boolean;
  fastcgiBufferMemory: number;
  fastcgiMaxTempFile: number;
  serverName?: string;
  serverAdmin?: string;
  scriptTimeoutMs: number;
  scriptLog?: string;
  scriptLogLength: number;
  scriptLogBuffer: number;
  scriptLogSecrets: boolean;
  passAuthorization: boolean;
  setEnv: Record<string, string>;
  passEnv: string[];
  /** RFC 3875 4.4 search words as argv (Apache's behaviour); off by default. */
  queryArguments: boolean;
  maxScripts: number;
  maxQueuedScripts: number;
  /** Front processes (src/serve/workers.ts); 1: this process serves alone. */
  workers: number;
  maxBody: number;
  accessLog: string;
  /** combined, common, or an Apache LogFormat string (src/log/access-log-format.ts). */
  accessLogFormat: string;
  errorLog: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** The metrics listener (off when absent). */
  metrics?: ListenAddress;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepaliveTimeoutMs: number;
  sendTimeoutMs: number;
  maxHeaderBytes: number;
  maxUrlBytes: number;
  shutdownGraceMs: number;
  /** daemon | in-process | fork (src/spawn/modes.ts). */
  cgiSpawn: string;
  scriptSock?: string;
  runtimeDir?: string;
  rlimitCpu: number;
  rlimitMem: number;
  rlimitNproc: number;
  rlimitNofile: number;
  maxScriptOutput: number;
  suexecMinUid: number;
  suexecMinGid: number;
}

export const SERVE_DEFAULTS: ServeConfig = {
  listen: ['127.0.0.1:8080'],
  socketMode: UNIX_SOCKET_MODE,
  cgiExt: [],
  scriptAlias: [],
  fastcgi: [],
  fastcgiBuffering: true,
  fastcgiBufferMemory: FASTCGI_BUFFER_MEMORY_BYTES,
  fastcgiMaxTempFile: FASTCGI_MAX_TEMP_FILE_BYTES,
  scriptTimeoutMs: CGI_SCRIPT_TIMEOUT_MS,
  scriptLogLength: CGI_SCRIPT_LOG_LENGTH,
  scriptLogBuffer: CGI_SCRIPT_LOG_BUFFER,
  scriptLogSecrets: false,
  passAuthorization: false,
  setEnv: {},
  passEnv: [],
  queryArguments: CGI_QUERY_ARGUMENTS,
  maxScripts: CGI_MAX_CONCURRENT_SCRIPTS,
  maxQueuedScripts: CGI_MAX_QUEUED_SCRIPTS,
  workers: SERVE_WORKERS_DEFAULT,
  maxBody: CGI_MAX_REQUEST_BODY_BYTES,
  accessLog: '-',
  accessLogFormat: DEFAULT_ACCESS_LOG_FORMAT,
  errorLog: '-',
  logLevel: DEFAULT_LOG_LEVEL,
  logFormat: DEFAULT_LOG_FORMAT,
  headersTimeoutMs: HTTP_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: HTTP_REQUEST_TIMEOUT_MS,
  keepaliveTimeoutMs: HTTP_KEEPALIVE_TIMEOUT_MS,
  sendTimeoutMs: HTTP_SEND_TIMEOUT_MS,
  maxHeaderBytes: HTTP_MAX_HEADER_BYTES,
  maxUrlBytes: HTTP_MAX_URL_BYTES,
  shutdownGraceMs: HTTP_SHUTDOWN_GRACE_MS,
  cgiSpawn: 'daemon',
  rlimitCpu: 0,
  rlimitMem: 0,
  rlimitNproc: 0,
  rlimitNofile: 0,
  maxScriptOutput: 0,
  suexecMinUid: CGID_SUEXEC_MIN_UID,
  suexecMinGid: CGID_SUEXEC_MIN_GID,
};

/** kebab-case key -> the ServeConfig field it sets (durations gain an Ms suffix). */
export function fieldName(key: KeyDefinition): keyof ServeConfig {
  const camel = key.name.replace(/-([a-z])/g, (_, letter: string) => letter.toUpperCase());
  return (key.kind === 'duration' ? `${camel}Ms` : camel) as keyof ServeConfig;
}

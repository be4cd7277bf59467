/**
 * A closed set of errors with stable codes (undici's habit): callers switch on
 * `code`, never on message text. Messages say what happened and what to do.
 */

export const ErrorCode = {
  // FastCGI wire protocol (codec and state machines)
  FCGI_BAD_VERSION: 'GH_FCGI_BAD_VERSION',
  FCGI_BAD_RECORD: 'GH_FCGI_BAD_RECORD',
  FCGI_BAD_NAME_VALUE: 'GH_FCGI_BAD_NAME_VALUE',
  FCGI_PARAMS_TOO_LARGE: 'GH_FCGI_PARAMS_TOO_LARGE',
  FCGI_PAIR_TOO_LARGE: 'GH_FCGI_PAIR_TOO_LARGE',
  FCGI_UNEXPECTED_RECORD: 'GH_FCGI_UNEXPECTED_RECORD',
  FCGI_TOO_MANY_REQUESTS: 'GH_FCGI_TOO_MANY_REQUESTS',
  FCGI_TRUNCATED: 'GH_FCGI_TRUNCATED',
  // FastCGI client, talking to an upstream application
  UPSTREAM_REFUSED: 'GH_UPSTREAM_REFUSED',
  UPSTREAM_CONNECT_TIMEOUT: 'GH_UPSTREAM_CONNECT_TIMEOUT',
  UPSTREAM_TIMEOUT: 'GH_UPSTREAM_TIMEOUT',
  UPSTREAM_RESET: 'GH_UPSTREAM_RESET',
  UPSTREAM_PROTOCOL: 'GH_UPSTREAM_PROTOCOL',
  UPSTREAM_OVERLOADED: 'GH_UPSTREAM_OVERLOADED',
  UPSTREAM_CANT_MPX: 'GH_UPSTREAM_CANT_MPX',
  UPSTREAM_UNKNOWN_ROLE: 'GH_UPSTREAM_UNKNOWN_ROLE',
  UPSTREAM_QUEUE_FULL: 'GH_UPSTREAM_QUEUE_FULL',
  REQUEST_ABORTED: 'GH_REQUEST_ABORTED',
  CLIENT_CLOSED: 'GH_CLIENT_CLOSED',
  // CGI scripts: their response head, their path, their lifecycle
  CGI_HEAD_MALFORMED: 'GH_CGI_HEAD_MALFORMED',
  CGI_HEAD_TOO_LARGE: 'GH_CGI_HEAD_TOO_LARGE',
  CGI_HEAD_INCOMPLETE: 'GH_CGI_HEAD_INCOMPLETE',
  CGI_HEAD_BAD_STATUS: 'GH_CGI_HEAD_BAD_STATUS',
  CGI_HEAD_BAD_VALUE: 'GH_CGI_HEAD_BAD_VALUE',
  CGI_HEAD_TRANSFER_ENCODING: 'GH_CGI_HEAD_TRANSFER_ENCODING',
  CGI_HEAD_BAD_CONTENT_LENGTH: 'GH_CGI_HEAD_BAD_CONTENT_LENGTH',
  CGI_PATH_BAD_REQUEST: 'GH_CGI_PATH_BAD_REQUEST',
  CGI_PATH_NOT_FOUND: 'GH_CGI_PATH_NOT_FOUND',
  CGI_PATH_FORBIDDEN: 'GH_CGI_PATH_FORBIDDEN',
  CGI_SPAWN_FAILED: 'GH_CGI_SPAWN_FAILED',
  CGI_SCRIPT_TIMEOUT: 'GH_CGI_SCRIPT_TIMEOUT',
  CGI_QUEUE_FULL: 'GH_CGI_QUEUE_FULL',
  CGI_BODY_TOO_LARGE: 'GH_CGI_BODY_TOO_LARGE',
  CGI_REDIRECT_LOOP: 'GH_CGI_REDIRECT_LOOP',
  CGI_OUTPUT_LENGTH_MISMATCH: 'GH_CGI_OUTPUT_LENGTH_MISMATCH',
  // System calls Node lacks (src/sys)
  SYSCALL_FAILED: 'GH_SYSCALL_FAILED',
  // Deployment: a unix socket path taken by a live server or by a file; switching users; systemd's environment
  SOCKET_IN_USE: 'GH_SOCKET_IN_USE',
  PRIVILEGES: 'GH_PRIVILEGES',
  SYSTEMD: 'GH_SYSTEMD',
  // Options and configuration of every command (src/options, src/config)
  USAGE: 'GH_USAGE',
  CONFIG_INVALID: 'GH_CONFIG_INVALID',
  ADDRESS_INVALID: 'GH_ADDRESS_INVALID',
  // kfcgi process manager
  KFCGI_SETUP: 'GH_KFCGI_SETUP',
  /** A status socket that does not answer, or answers something that is not status. */
  STATUS_UNAVAILABLE: 'GH_STATUS_UNAVAILABLE',
  UPSTREAM_RESPONSE_TOO_LARGE: 'GH_UPSTREAM_RESPONSE_TOO_LARGE',
  // cgid daemon: its wire protocol, its socket, its availability
  CGID_PROTOCOL: 'GH_CGID_PROTOCOL',
  CGID_SETUP: 'GH_CGID_SETUP',
  CGID_UNAVAILABLE: 'GH_CGID_UNAVAILABLE',
  // gatehouse serve: starting up (listening, the example)
  SERVE_SETUP: 'GH_SERVE_SETUP',
  // Logs: opening, reopening or writing a log file
  LOG_SETUP: 'GH_LOG_SETUP',
  // A server that is stopping refuses new work (503 and the connection closed)
  SERVER_STOPPING: 'GH_SERVER_STOPPING',
  // An API called in a state where it cannot work (a header set after the head was sent, a body read twice)
  INVALID_STATE: 'GH_INVALID_STATE',
  // A library function called with an argument it cannot use (a relative path, a role that does not exist)
  INVALID_ARGUMENT: 'GH_INVALID_ARGUMENT',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class GatehouseError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'GatehouseError';
  }
}

/** Malformed FastCGI input. The caller closes the connection (or answers with an error); it never throws out of an event handler. */
export class FastCGIProtocolError extends GatehouseError {
  constructor(code: ErrorCode, message: string) {
    super(code, message);
    this.name = 'FastCGIProtocolError';
  }
}

/**
 * A FastCGI client failure, naming the upstream. `code` tells the HTTP front
 * which status to answer: refused/queue-full/overloaded -> 503, timeout -> 504,
 * reset/protocol -> 502.
 */
export class UpstreamError extends GatehouseError {
  readonly upstream: string;
  /** True when nothing of the request had reached the application, so a retry elsewhere is safe. */
  readonly retryable: boolean;
  constructor(code: ErrorCode, upstream: string, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(code, `${upstream}: ${message}`, options);
    this.name = 'UpstreamError';
    this.upstream = upstream;
    this.retryable = options?.retryable ?? false;
  }
}

/**
 * A library function called with an argument it cannot use (undici's
 * InvalidArgumentError): thrown at once, when the handler or client is made,
 * never while a request is served. The message names the option and what it
 * takes.
 */
export class InvalidArgumentError extends GatehouseError {
  constructor(message: string) {
    super(ErrorCode.INVALID_ARGUMENT, message);
    this.name = 'InvalidArgumentError';
  }
}

/**
 * A mistake on a command line: an unknown flag, a missing value, a value the
 * flag's grammar does not take (src/options). `problems` holds one line per
 * mistake, each naming the flag and what to write instead. The commands exit
 * with status 2, except `gatehouse kfcgi`, which exits 1 as kfcgi(8) does.
 */
export class UsageError extends GatehouseError {
  readonly problems: readonly string[];
  constructor(problems: string | readonly string[]) {
    const list = typeof problems === 'string' ? [problems] : [...problems];
    super(ErrorCode.USAGE, list.join('\n'));
    this.name = 'UsageError';
    this.problems = list;
  }
}

/**
 * A configuration that cannot be served as written (`gatehouse serve`'s TOML
 * file, or what its flags name: a missing directory, an unknown user, a route
 * that can never match). `problems` holds one line per problem, each naming
 * the key and what to write instead; every problem is collected, not only the
 * first. `gatehouse serve` exits with status 1.
 */
export class ConfigError extends GatehouseError {
  readonly problems: readonly string[];
  /** The file, or "command line". */
  readonly source: string;
  constructor(source: string, problems: readonly string[]) {
    super(
      ErrorCode.CONFIG_INVALID,
      `${source}: ${problems.length === 1 ? problems[0] : `${problems.length} problems:\n  - ${problems.join('\n  - ')}`}`,
    );
    this.name = 'ConfigError';
    this.source = source;
    this.problems = [...problems];
  }
}

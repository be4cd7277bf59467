/**
 * What the client is told when a script or an upstream application gives no
 * usable response: one table from an outcome (a spawn that failed and why, a
 * timeout, a malformed head, the cgid daemon down, a body over the limit, a
 * full queue, a redirect loop, an upstream failure) to an HTTP status, the
 * headers that go with it (Retry-After), whether the connection must close,
 * a stable error code, and the line for the error log. The `cgi()` handler,
 * the FastCGI proxy and the cgid FastCGI face all answer through it, so a
 * daemon that is down is a 503 everywhere.
 *
 * Pure: no sockets, no responses. The log line names the script and the
 * reason; the client only ever gets the bare status page (paths and parser
 * details stay in the error log).
 */
import { ErrorCode } from '../errors.js';
import type { CgiHeadError } from './response-head.js';
import type { SpawnError } from '../spawn/spawner.js';

/** An outcome that leaves nothing of the script's or application's own response to send. */
export type Failure =
  /** The request does not name a script this route may run (path refused, no such file, not executable). */
  | { kind: 'refused'; status: 400 | 403 | 404; request: string; reason: string }
  /** The script could not be started: by errno, or the cgid daemon could not take the order (code CGID_UNAVAILABLE). */
  | { kind: 'spawn-failed'; error: SpawnError }
  /** The cgid daemon died while the script ran and took the script with it. */
  | { kind: 'daemon-lost'; script: string }
  /** No output for the script timeout before the head was complete. */
  | { kind: 'timeout'; script: string; timeoutMs: number }
  | { kind: 'malformed-head'; script: string; error: CgiHeadError }
  /** A request body over max-body: declared by Content-Length (`declared`) or found while reading a chunked one. */
  | { kind: 'body-too-large'; script: string; limit: number; declared?: number | undefined; detail?: string | undefined }
  /** The request body could not be read to its end (the client went away, bad chunked framing). */
  | { kind: 'body-unreadable'; script: string; error: Error }
  /** Every script slot taken and the queue behind them full. */
  | { kind: 'queue-full'; script: string; running: number; queued: number }
  /** Local redirects (Location: /path) followed more often than the limit allows. */
  | { kind: 'redirect-loop'; script: string; limit: number; location: string }
  /** The server is stopping: no new script is started. */
  | { kind: 'stopping'; script: string }
  /** The FastCGI client failed (refused, overloaded, timeout, reset, protocol); `error.code` decides the status. */
  | { kind: 'upstream-failed'; request: string; error: Error }
  /** The application's STDOUT did not start with a valid CGI head. */
  | { kind: 'upstream-bad-head'; upstream: string; script: string; error: CgiHeadError }
  /** The application ended the request without writing a head. */
  | { kind: 'upstream-no-head'; upstream: string; script: string };

export interface FailureAnswer {
  status: number;
  /** Headers the error page carries besides its own (Retry-After when trying again shortly can help). */
  headers: ReadonlyArray<readonly [string, string]>;
  /** Close the connection after the page: a request body was left unread, or the server is stopping. */
  closeConnection: boolean;
  /** The stable code of what happened (the same codes the errors thrown elsewhere carry). */
  code: ErrorCode;
  /** The error-log line, without the caller's prefix ("cgi: "); never sent to the client. */
  logLine: string | null;
  /** What a script log entry says about it; null when the outcome is not the script's doing (nothing is logged there). */
  scriptLogError: string | null;
}

const RETRY_SOON: ReadonlyArray<readonly [string, string]> = [['Retry-After', '1']];
const NONE: ReadonlyArray<readonly [string, string]> = [];

export function answerFor(failure: Failure): FailureAnswer {
  switch (failure.kind) {
    case 'refused':
      return {
        status: failure.status,
        headers: NONE,
        closeConnection: false,
        code: PATH_CODES[failure.status],
        logLine: `refused ${failure.request}: ${failure.reason}`,
        scriptLogError: null,
      };
    case 'spawn-failed': {
      const { error } = failure;
      // The cgid daemon is being restarted: worth retrying in a moment.
      if (error.code === ErrorCode.CGID_UNAVAILABLE)
        return answer(503, RETRY_SOON, false, ErrorCode.CGID_UNAVAILABLE, error.message, error.message);
      return answer(spawnFailureStatus(error), NONE, false, error.code, error.message, error.message);
    }
    case 'daemon-lost':
      // Not the script's fault: the daemon died under it and killed it. Retry shortly.
      return answer(
        503,
        RETRY_SOON,
        false,
        ErrorCode.CGID_UNAVAILABLE,
        `${failure.script}: the cgid daemon went away while the script ran (script killed): answering 503`,
        null,
      );
    case 'timeout':
      return answer(
        504,
        NONE,
        false,
        ErrorCode.CGI_SCRIPT_TIMEOUT,
        `${failure.script}: no output for ${failure.timeoutMs} ms before the headers: script killed, answering 504`,
        `timeout: no output for ${failure.timeoutMs} ms`,
      );
    case 'malformed-head': {
      const where = failure.error.line !== undefined ? `: Bad header: ${failure.error.line}` : '';
      return answer(
        500,
        NONE,
        false,
        failure.error.code,
        `malformed header from script ${failure.script}: ${failure.error.message}${where}`,
        `malformed header from script${where} (${failure.error.message})`,
      );
    }
    case 'body-too-large': {
      const what =
        failure.declared !== undefined
          ? `request body of ${failure.declared} bytes for ${failure.script} is over the limit of ${failure.limit}`
          : `chunked request body for ${failure.script} is over the limit of ${failure.limit} bytes${failure.detail ? ` (${failure.detail})` : ''}`;
      // The body is left unread: the connection cannot carry another request.
      return answer(413, NONE, true, ErrorCode.CGI_BODY_TOO_LARGE, what, null);
    }
    case 'body-unreadable':
      return answer(
        400,
        NONE,
        true,
        ErrorCode.CLIENT_CLOSED,
        `reading the request body for ${failure.script} failed: ${failure.error.message}`,
        null,
      );
    case 'queue-full':
      return answer(
        503,
        RETRY_SOON,
        false,
        ErrorCode.CGI_QUEUE_FULL,
        `${failure.running} scripts running and ${failure.queued} waiting: refused ${failure.script} with 503`,
        null,
      );
    case 'redirect-loop':
      return answer(
        500,
        NONE,
        false,
        ErrorCode.CGI_REDIRECT_LOOP,
        `${failure.script}: more than ${failure.limit} local redirects (last to ${failure.location}); answering 500`,
        null,
      );
    case 'stopping':
      return answer(503, NONE, true, ErrorCode.SERVER_STOPPING, `stopping: refused ${failure.script} with 503`, null);
    case 'upstream-failed': {
      const code = (failure.error as { code?: ErrorCode }).code ?? ErrorCode.UPSTREAM_PROTOCOL;
      const status = statusForUpstreamError(failure.error);
      // The client went away (the request was aborted on its behalf): nothing to report.
      const logLine = code === ErrorCode.REQUEST_ABORTED ? null : `${failure.request}: ${failure.error.message}: answered ${status}`;
      return answer(status, NONE, false, code, logLine, null);
    }
    case 'upstream-bad-head':
      return answer(
        502,
        NONE,
        false,
        failure.error.code,
        `${failure.upstream}: ${failure.script}: bad response head: ${failure.error.message}${failure.error.line ? `: ${failure.error.line}` : ''}`,
        null,
      );
    case 'upstream-no-head':
      return answer(
        502,
        NONE,
        false,
        ErrorCode.UPSTREAM_PROTOCOL,
        `${failure.upstream}: ${failure.script}: the application ended the request without a response head`,
        null,
      );
  }
}

function answer(
  status: number,
  headers: ReadonlyArray<readonly [string, string]>,
  closeConnection: boolean,
  code: ErrorCode,
  logLine: string | null,
  scriptLogError: string | null,
): FailureAnswer {
  return { status, headers, closeConnection, code, logLine, scriptLogError };
}

const PATH_CODES: Record<400 | 403 | 404, ErrorCode> = {
  400: ErrorCode.CGI_PATH_BAD_REQUEST,
  403: ErrorCode.CGI_PATH_FORBIDDEN,
  404: ErrorCode.CGI_PATH_NOT_FOUND,
};

/** EACCES (not executable) and EPERM (a suexec refusal) -> 403, ENOENT -> 404, others 500. */
function spawnFailureStatus(error: SpawnError): number {
  if (error.errno === 'EACCES' || error.errno === 'EPERM') return 403;
  if (error.errno === 'ENOENT') return 404;
  return 500;
}

/** Which HTTP status an upstream failure becomes (nginx's choices): can't take it now 503, too slow 504, broken 502. */
export function statusForUpstreamError(error: unknown): number {
  const code = (error as { code?: string }).code;
  switch (code) {
    case ErrorCode.UPSTREAM_REFUSED:
    case ErrorCode.UPSTREAM_QUEUE_FULL:
    case ErrorCode.UPSTREAM_OVERLOADED:
    case ErrorCode.UPSTREAM_CANT_MPX:
      return 503;
    case ErrorCode.UPSTREAM_CONNECT_TIMEOUT:
    case ErrorCode.UPSTREAM_TIMEOUT:
      return 504;
    default:
      return 502;
  }
}

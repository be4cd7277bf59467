/**
 * Turning a CGI response (RFC 3875 section 6: a parsed head, then a body
 * stream) into an HTTP response. Shared by everything that answers with a
 * CGI-style response: CGI scripts, FastCGI upstreams (whose STDOUT is a CGI
 * response too) and the cgid daemon's client, so they cannot disagree on
 * which headers pass, how Content-Length is held to, or what an error page is.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { CgiResponseHead } from './response-head.js';
import { ErrorCode, GatehouseError } from '../errors.js';

/** Response headers an application may not set: they describe the connection, which the server owns. */
export const HOP_BY_HOP_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'upgrade',
  'te',
  'trailer',
  'transfer-encoding',
]);

/** What writeCgiHead needs of a response: node:http's ServerResponse, or the FastCGI worker library's response (the cgid FastCGI face). */
export interface HeadTarget {
  statusCode: number;
  statusMessage?: string | undefined;
  setHeader(name: string, value: string | string[]): unknown;
}

/** Status and headers from a parsed head onto `res` (not sent yet); repeated names become one multi-valued header. */
export function writeCgiHead(res: HeadTarget, head: CgiResponseHead): void {
  res.statusCode = head.status;
  if (head.reason) res.statusMessage = head.reason;
  const grouped = new Map<string, { name: string; values: string[] }>();
  for (const [name, value] of head.headers) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP_HEADERS.has(lower)) continue;
    const entry = grouped.get(lower);
    if (entry) entry.values.push(value);
    else grouped.set(lower, { name, values: [value] });
  }
  for (const { name, values } of grouped.values()) res.setHeader(name, values.length === 1 ? values[0]! : values);
  // CVE-2020-24553 (Go's net/http/cgi sniffed a type-less script response as text/html, an XSS): no type is ever
  // added, and the browser is told not to guess one either, unless the script said how itself.
  if (!grouped.has('content-type') && !grouped.has(NOSNIFF[0].toLowerCase())) res.setHeader(...NOSNIFF);
}

/**
 * X-Content-Type-Options: nosniff, on every response whose type is not the
 * script's own: none given, or one the server chose (its error and redirect
 * pages, static files by extension).
 */
export const NOSNIFF = ['X-Content-Type-Options', 'nosniff'] as const;

/**
 * Streams a CGI body to the client with backpressure (the source is paused
 * while the client's socket is full). An announced Content-Length is held to:
 * extra bytes are not sent (they would be read as the next response on a
 * kept-alive connection) and a short body ends in an error, so the caller
 * closes the connection instead of leaving the client waiting. If the client
 * goes away first, the source is destroyed (which stops the script or aborts
 * the FastCGI request). `done(error)` is called once, after the response
 * finished or failed.
 *
 * Written by hand rather than with stream.pipeline: this runs once per
 * request, and pipeline's generality costs more than the rest of a small
 * response. `first`: body bytes already taken from the source (those after
 * the head in its chunk), written before anything else.
 */
export function pipeCgiBody(
  body: Readable,
  res: ServerResponse,
  head: CgiResponseHead,
  done: (error: NodeJS.ErrnoException | null) => void,
  source = 'the application',
  first?: Buffer,
): void {
  const expected = head.contentLength;
  let sent = 0;
  let settled = false;
  const settle = (error: NodeJS.ErrnoException | null) => {
    if (settled) return;
    settled = true;
    body.off('data', onData);
    body.off('end', onEnd);
    body.off('error', onError);
    res.off('drain', onDrain);
    res.off('close', onClose);
    done(error);
  };
  const onData = (chunk: Buffer) => {
    if (expected !== undefined) {
      const room = expected - sent;
      if (room <= 0) return;
      if (chunk.length > room) chunk = chunk.subarray(0, room);
    }
    sent += chunk.length;
    if (!res.write(chunk)) {
      body.pause();
      res.once('drain', onDrain);
    }
  };
  const onDrain = () => body.resume();
  const onEnd = () => {
    if (expected !== undefined && sent < expected) {
      settle(
        new GatehouseError(ErrorCode.CGI_OUTPUT_LENGTH_MISMATCH, `${source} announced Content-Length ${expected} but wrote ${sent} bytes`),
      );
      return;
    }
    res.end(() => settle(null));
  };
  const onError = (error: NodeJS.ErrnoException) => settle(error);
  const onClose = () => {
    if (res.writableFinished) return;
    body.destroy();
    settle(new GatehouseError(ErrorCode.CLIENT_CLOSED, 'the client closed the connection before the response was sent'));
  };
  body.on('data', onData);
  body.once('end', onEnd);
  body.once('error', onError);
  res.once('close', onClose);
  // node:http uncorks its socket on the next tick, but a stream's 'end' comes a tick after its last
  // 'data': without this, a small response that arrived whole (head, body, end in one read) would
  // leave in two system calls, the head and body, then the chunked terminator on its own.
  // Held until the end of this turn of the event loop, everything written by then leaves in one writev.
  // The socket is corked, not `res`: from Node 22 a corked ServerResponse keeps chunked writes in a buffer
  // of its own, and write() answers false once that holds a high-water mark, but uncork() hands those
  // chunks to the socket one by one; when the kernel takes each at once, the socket never needed a drain
  // and emits none, so `res` never emits 'drain' either and the body stays paused for good (a response
  // over 64 KiB that arrived in one turn hung, with nothing left to send for the send timeout to see).
  const socket = res.socket;
  if (socket) {
    socket.cork();
    setImmediate(() => socket.uncork());
  }
  // A caller that paused the source (to parse the head first) hands it over flowing. Before
  // `first` is written: if that fills the client's socket, its pause() must be the last word.
  body.resume();
  if (first !== undefined && first.length > 0) onData(first);
}

/** A short HTML error page, Apache-like; if the head already went out, the connection is closed instead. */
export function sendErrorPage(res: ServerResponse, status: number, closeConnection = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (res.writableEnded) return;
  for (const name of res.getHeaderNames()) if (name !== 'allow' && name !== 'retry-after') res.removeHeader(name);
  const reason = STATUS_CODES[status] ?? 'Error';
  const body = `<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>${status} ${reason}</title>\n</head><body>\n<h1>${reason}</h1>\n</body></html>\n`;
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=iso-8859-1');
  res.setHeader(...NOSNIFF);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  if (closeConnection) res.setHeader('Connection', 'close');
  res.end(res.req?.method === 'HEAD' ? undefined : body);
}

/**
 * Ends `res` with the server's redirect page in place of the application's
 * body, as Apache answers a script's client redirect: the status and
 * Location are the caller's; the type is the page's own, never the
 * application's (which described the dropped body), so it goes with nosniff
 * (CVE-2020-24553). Used by the CGI handler and the FastCGI proxy alike, so
 * the two never send different pages.
 */
export function endWithRedirectPage(res: ServerResponse, location: string, method: string): void {
  res.removeHeader('content-length');
  res.setHeader('Content-Type', 'text/html; charset=iso-8859-1');
  res.setHeader(...NOSNIFF);
  res.end(method === 'HEAD' ? undefined : redirectPage(location));
}

/** The body Apache sends with a 302 to the client. */
export function redirectPage(location: string): string {
  const escaped = location.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  return `<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>302 Found</title>\n</head><body>\n<h1>Found</h1>\n<p>The document has moved <a href="${escaped}">here</a>.</p>\n</body></html>\n`;
}

/** Request header pairs from node:http's rawHeaders (names as sent, in order). */
export function pairRawHeaders(raw: readonly string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let index = 0; index + 1 < raw.length; index += 2) pairs.push([raw[index]!, raw[index + 1]!]);
  return pairs;
}

/** Path and query of a request target; an absolute-form target (http://host/path) gives its path. */
export function splitTarget(target: string): { pathname: string; query: string } {
  let rest = target;
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(rest);
  if (absolute) rest = rest.slice(absolute[0].length) || '/';
  const hash = rest.indexOf('#');
  if (hash !== -1) rest = rest.slice(0, hash);
  const question = rest.indexOf('?');
  return question === -1 ? { pathname: rest, query: '' } : { pathname: rest.slice(0, question), query: rest.slice(question + 1) };
}

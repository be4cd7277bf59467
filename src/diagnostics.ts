/**
 * node:diagnostics_channel events, named and shaped as undici publishes its
 * own (`undici:request:create`, `:headers`, `:trailers`, `:error`), so that
 * APM tools tracing undici can trace gatehouse the same way:
 *
 *   gatehouse:cgi:request:create       the cgi() handler took a request
 *   gatehouse:cgi:request:headers      its response head is sent
 *   gatehouse:cgi:request:trailers     the response ended (CGI has no trailers: the list is empty)
 *   gatehouse:cgi:request:error        it failed (the response, if any, is an error status)
 *   gatehouse:fastcgi:request:*        the same four for the fastcgi() handler
 *   gatehouse:fastcgi-client:request:* the same four for FastCGIClient requests
 *                                      (headers: the application's first STDOUT bytes;
 *                                      trailers: END_REQUEST)
 *
 * A message's `request` object is the same in every event of one request,
 * so a subscriber can key its own state (a span, a start time) on it. Every
 * publisher checks `hasSubscribers` first: with nobody listening an event
 * costs one property read and builds nothing. gatehouse serve's metrics are
 * such a subscriber. docs/handlers.md and docs/fastcgi-client.md describe
 * the messages.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, GatehouseError, type UpstreamError } from './errors.js';

/** The request a FastCGIClient event is about. */
export interface ClientRequestInfo {
  /** `unix:/path` or `host:port`. */
  readonly upstream: string;
  /** responder, authorizer or filter. */
  readonly role: 'responder' | 'authorizer' | 'filter';
}

export interface ClientCreateMessage {
  request: ClientRequestInfo;
}
export interface ClientHeadersMessage {
  request: ClientRequestInfo;
}
export interface ClientTrailersMessage {
  request: ClientRequestInfo;
  /** Always empty: FastCGI has no trailers. */
  trailers: never[];
  /** END_REQUEST's application status (a CGI script's exit status under gatehouse cgid --fastcgi; fcgiwrap always sends 0). */
  appStatus: number;
}
export interface ClientErrorMessage {
  request: ClientRequestInfo;
  error: UpstreamError;
}

/** The request a cgi() or fastcgi() handler event is about. */
export interface HandlerRequestInfo {
  /** Which handler: cgi() or fastcgi(). */
  readonly handler: 'cgi' | 'fastcgi';
  readonly method: string;
  /** The request target as received (req.url when the handler took the request). */
  readonly url: string;
  /** node:http's objects, for tracers that already follow them. */
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
}
export interface HandlerCreateMessage {
  request: HandlerRequestInfo;
}
export interface HandlerHeadersMessage {
  request: HandlerRequestInfo;
  response: { statusCode: number };
}
export interface HandlerTrailersMessage {
  request: HandlerRequestInfo;
  /** Always empty. */
  trailers: never[];
}
export interface HandlerErrorMessage {
  request: HandlerRequestInfo;
  /** A GatehouseError with its stable code (GH_CGI_SCRIPT_TIMEOUT, GH_CGI_QUEUE_FULL, GH_UPSTREAM_TIMEOUT, GH_CLIENT_CLOSED, ...). */
  error: GatehouseError;
}

function channels<Create, Headers, Trailers, Failure>(prefix: string) {
  return {
    create: diagnosticsChannel.channel(`${prefix}:request:create`) as TypedChannel<Create>,
    headers: diagnosticsChannel.channel(`${prefix}:request:headers`) as TypedChannel<Headers>,
    trailers: diagnosticsChannel.channel(`${prefix}:request:trailers`) as TypedChannel<Trailers>,
    error: diagnosticsChannel.channel(`${prefix}:request:error`) as TypedChannel<Failure>,
  };
}

/** A channel whose messages have one shape. */
export interface TypedChannel<Message> {
  readonly name: string | symbol;
  readonly hasSubscribers: boolean;
  publish(message: Message): void;
  subscribe(listener: (message: Message, name: string | symbol) => void): void;
  unsubscribe(listener: (message: Message, name: string | symbol) => void): unknown;
}

export const clientChannels = channels<ClientCreateMessage, ClientHeadersMessage, ClientTrailersMessage, ClientErrorMessage>(
  'gatehouse:fastcgi-client',
);
export const cgiChannels = channels<HandlerCreateMessage, HandlerHeadersMessage, HandlerTrailersMessage, HandlerErrorMessage>(
  'gatehouse:cgi',
);
export const fastcgiChannels = channels<HandlerCreateMessage, HandlerHeadersMessage, HandlerTrailersMessage, HandlerErrorMessage>(
  'gatehouse:fastcgi',
);

export type HandlerChannels = typeof cgiChannels;

/**
 * One handler request's events: create when the handler takes the request,
 * headers when its response head goes out, then either trailers (the
 * response ended) or error (a failure answered with an error page, a
 * response cut short, the client gone before the end), never both. Made only
 * when someone listens (reportHandlerRequest returns null otherwise).
 */
export class HandlerReport {
  readonly #channels: HandlerChannels;
  readonly #request: HandlerRequestInfo;
  #sentHeaders = false;
  #done = false;

  constructor(channels: HandlerChannels, request: HandlerRequestInfo) {
    this.#channels = channels;
    this.#request = request;
    if (channels.create.hasSubscribers) channels.create.publish({ request });
    request.res.once('close', () => this.#closed());
  }

  /** The response head is out (its status is res.statusCode). */
  headers(): void {
    if (this.#sentHeaders || this.#done) return;
    this.#sentHeaders = true;
    if (this.#channels.headers.hasSubscribers)
      this.#channels.headers.publish({ request: this.#request, response: { statusCode: this.#request.res.statusCode } });
  }

  /** The request failed: `code` says how (the outcome table's code); the error page, if any, is the response. */
  error(code: ErrorCode, message: string): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#channels.error.hasSubscribers)
      this.#channels.error.publish({ request: this.#request, error: new GatehouseError(code, message) });
  }

  /** The response ended whole, written some other way than through `res` (an nph- script's raw output to the socket). */
  ended(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#channels.trailers.hasSubscribers) this.#channels.trailers.publish({ request: this.#request, trailers: [] });
  }

  #closed(): void {
    if (this.#done) return;
    if (this.#request.res.writableFinished) this.ended();
    else this.error(ErrorCode.CLIENT_CLOSED, 'the connection closed before the response ended');
  }
}

/** A HandlerReport for this request when anyone listens to `channels`, else null (and nothing is made). */
export function reportHandlerRequest(
  channels: HandlerChannels,
  handler: HandlerRequestInfo['handler'],
  req: IncomingMessage,
  res: ServerResponse,
  url: string,
): HandlerReport | null {
  if (
    !channels.create.hasSubscribers &&
    !channels.headers.hasSubscribers &&
    !channels.trailers.hasSubscribers &&
    !channels.error.hasSubscribers
  )
    return null;
  return new HandlerReport(channels, { handler, method: req.method ?? 'GET', url, req, res });
}

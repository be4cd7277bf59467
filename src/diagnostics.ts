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
import type { UpstreamError } from './errors.js';

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
  /** END_REQUEST's application status (a CGI script's exit status under fcgiwrap). */
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
  /** The request target as received. */
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
  /** A GatehouseError with its stable code (GH_CGI_SCRIPT_TIMEOUT, GH_CGI_QUEUE_FULL, GH_UPSTREAM_TIMEOUT, ...). */
  error: Error & { code?: string };
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

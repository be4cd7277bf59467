/**
 * gatehouse: a CGI and FastCGI application server for Node.js.
 *
 * - `cgi(options)` and `fastcgi(options)`: `(req, res, next?)` handlers for
 *   node:http, Express and Fastify.
 * - `createServer(handler)`: run a Node application as a FastCGI responder,
 *   authorizer or filter (also at 'gatehouse-server/fastcgi').
 * - `FastCGIClient`: talk to php-fpm, kfcgi pools and other FastCGI
 *   applications (also at 'gatehouse-server/fastcgi/client').
 * - `GatehouseFront` and `loadServeConfig`: what `gatehouse serve` runs.
 */
export { cgi, type CgiOptions, type CgiHandler } from './cgi/index.js';
export { fastcgi, GatehouseFront, type FastCGIHandler, type FastCGIHandlerOptions, type FrontOptions } from './http/index.js';
export {
  createServer,
  FastCGIServer,
  FastCGIRequest,
  FastCGIResponse,
  type RequestHandler,
  type WorkerServerOptions,
} from './fastcgi/index.js';
export { FastCGIClient, UpstreamResponse, type FastCGIClientOptions, type FastCGIRequestOptions } from './fastcgi/client/index.js';
export { loadServeConfig, ConfigError } from './config/load.js';
export type { ServeConfig } from './config/schema.js';
export { ErrorCode, GatehouseError, FastCGIProtocolError, UpstreamError } from './errors.js';

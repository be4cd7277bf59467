/**
 * gatehouse-server/fastcgi: run a Node application as a FastCGI responder,
 * authorizer or filter (under nginx, Apache, spawn-fcgi or gatehouse kfcgi),
 * plus the pure FastCGI 1.0 codec.
 */
export { createServer, FastCGIServer, type RequestHandler, type WorkerServerOptions } from './worker/server.js';
export { FastCGIRequest } from './worker/request.js';
export { FastCGIResponse } from './worker/response.js';
export * from './codec.js';
export { ErrorCode, GatehouseError, FastCGIProtocolError, UpstreamError } from '../errors.js';

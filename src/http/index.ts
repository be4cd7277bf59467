/** The HTTP front's public surface: the server behind `gatehouse serve`, and the FastCGI proxy handler. */
export { GatehouseFront, type FrontOptions } from './server.js';
export { fastcgi, statusForUpstreamError, type FastCGIHandler, type FastCGIHandlerOptions } from './fastcgi-handler.js';
export { serveStatic, type StaticOptions } from './static.js';

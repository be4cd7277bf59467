/**
 * The FastCGI client: gatehouse talking to FastCGI applications (php-fpm,
 * libfcgi programs, fcgiwrap, gatehouse workers). See docs/fastcgi-client.md.
 */
export { FastCGIClient } from './client.js';
export type { FastCGIClientOptions, FastCGIRequestOptions, FastCGIParams, FetchAllOptions, FetchAllResult, RoleName } from './client.js';
export { UpstreamResponse } from './request.js';
export type { BodySource, FastCGICompletion } from './request.js';
export type { UpstreamCapabilities } from './probe.js';
export type { PoolStats } from './pool.js';
export type { UpstreamAddress } from './address.js';
export { ErrorCode, UpstreamError } from '../../errors.js';

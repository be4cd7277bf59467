/**
 * Where a FastCGI application listens, in the forms an operator writes:
 * `unix:/run/app.sock`, `/run/app.sock`, `./app.sock`, `127.0.0.1:9000`,
 * `[::1]:9000`, `php:9000` (a host name), `{ path }` or `{ host, port }`.
 * Strings are read by the address grammar every command uses
 * (src/options/listen-address.ts); parsed once, up front, into what
 * net.connect takes plus a label that every error message carries.
 */
import type { NetConnectOpts } from 'node:net';
import { ErrorCode, GatehouseError } from '../../errors.js';
import { parseListenAddress, UPSTREAM_ADDRESS } from '../../options/listen-address.js';

export type UpstreamAddress = string | { path: string } | { host: string; port: number };

export interface ResolvedAddress {
  connectOptions: NetConnectOpts;
  /** `unix:/path` or `host:port`: how logs and errors name this upstream. */
  label: string;
  isUnix: boolean;
}

function invalid(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.ADDRESS_INVALID, `FastCGI address ${message}`);
}

export function resolveAddress(address: UpstreamAddress): ResolvedAddress {
  if (typeof address === 'object' && address !== null) {
    if ('path' in address && typeof address.path === 'string' && address.path.length > 0) return unixAddress(address.path);
    if ('host' in address && typeof address.host === 'string') return tcpAddress(address.host, address.port);
    throw invalid('must be { path } or { host, port }');
  }
  if (typeof address !== 'string' || address.length === 0)
    throw invalid('must be "unix:/path", "/path", "host:port" or an object { path } / { host, port }');
  const parsed = parseListenAddress(address, UPSTREAM_ADDRESS);
  if (typeof parsed === 'string') throw invalid(parsed);
  if (parsed.kind === 'unix') return unixAddress(parsed.path);
  if (parsed.kind === 'tcp') return tcpAddress(parsed.host, parsed.port);
  throw invalid(`"${address}" cannot be connected to`);
}

function unixAddress(path: string): ResolvedAddress {
  return { connectOptions: { path }, label: `unix:${path}`, isUnix: true };
}

function tcpAddress(host: string, port: number): ResolvedAddress {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`${host}:${String(port)} has no valid port (1-65535)`);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { connectOptions: { host, port }, label: `${shownHost}:${port}`, isUnix: false };
}

/**
 * Where a FastCGI application listens, in the forms an operator writes:
 * `unix:/run/app.sock`, `/run/app.sock`, `127.0.0.1:9000`, `[::1]:9000`,
 * `{ path }` or `{ host, port }`. Parsed once, up front, into what
 * net.connect takes plus a label that every error message carries.
 */
import type { NetConnectOpts } from 'node:net';

export type UpstreamAddress = string | { path: string } | { host: string; port: number };

export interface ResolvedAddress {
  connectOptions: NetConnectOpts;
  /** `unix:/path` or `host:port`: how logs and errors name this upstream. */
  label: string;
  isUnix: boolean;
}

export function resolveAddress(address: UpstreamAddress): ResolvedAddress {
  if (typeof address === 'object' && address !== null) {
    if ('path' in address && typeof address.path === 'string' && address.path.length > 0) return unixAddress(address.path);
    if ('host' in address && typeof address.host === 'string') return tcpAddress(address.host, address.port);
    throw new TypeError('FastCGI address must be { path } or { host, port }');
  }
  if (typeof address !== 'string' || address.length === 0) {
    throw new TypeError('FastCGI address must be "unix:/path", "/path", "host:port" or an object { path } / { host, port }');
  }
  if (address.startsWith('unix:')) return unixAddress(address.slice('unix:'.length));
  if (address.startsWith('/') || address.startsWith('./')) return unixAddress(address);
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(address);
  if (bracketed) return tcpAddress(bracketed[1]!, Number(bracketed[2]));
  const colon = address.lastIndexOf(':');
  if (colon <= 0 || address.indexOf(':') !== colon) {
    throw new TypeError(`FastCGI address "${address}" is neither "unix:/path" nor "host:port" (write IPv6 as "[::1]:9000")`);
  }
  return tcpAddress(address.slice(0, colon), Number(address.slice(colon + 1)));
}

function unixAddress(path: string): ResolvedAddress {
  if (path.length === 0) throw new TypeError('FastCGI unix socket address has an empty path');
  return { connectOptions: { path }, label: `unix:${path}`, isUnix: true };
}

function tcpAddress(host: string, port: number): ResolvedAddress {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new TypeError(`FastCGI address ${host}:${String(port)} has no valid port (1-65535)`);
  }
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { connectOptions: { host, port }, label: `${shownHost}:${port}`, isUnix: false };
}

/** Listen addresses as operators write them: 127.0.0.1:8080, [::1]:8080, :8080, unix:/path. */
import net from 'node:net';

export type ListenAddress = { host: string; port: number } | { path: string };

export function parseListenAddress(text: string): ListenAddress | string {
  if (text.startsWith('unix:')) {
    const socketPath = text.slice(5);
    return socketPath.startsWith('/')
      ? { path: socketPath }
      : `"${text}": a unix socket needs an absolute path, like unix:/run/gatehouse.sock`;
  }
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  if (!match) return `"${text}" is not an address; write HOST:PORT (127.0.0.1:8080), [::1]:8080, or unix:/path`;
  const host = match[1] ?? (match[2] || '127.0.0.1');
  const port = Number(match[3]);
  if (port > 65535) return `"${text}": port ${port} is above 65535`;
  if (!net.isIP(host) && host !== 'localhost') return `"${text}": ${host} is not an IP address; write 127.0.0.1, ::1 or 0.0.0.0`;
  return { host, port };
}

export function formatListenAddress(address: ListenAddress): string {
  return 'path' in address
    ? `unix:${address.path}`
    : net.isIPv6(address.host)
      ? `[${address.host}]:${address.port}`
      : `${address.host}:${address.port}`;
}

/**
 * Socket addresses as operators write them, for every command and the
 * FastCGI client: `127.0.0.1:8080`, `[::1]:8080`, `:8080` (loopback),
 * `*:8080` (every interface), `localhost:8080`, `unix:/run/app.sock`, a bare
 * path where a command always took one (kfcgi's -s, the client's upstreams),
 * `fd:3` for a socket inherited already listening, and `systemd` or
 * `systemd:NAME` for the sockets systemd passes (socket activation; every
 * one, or the one with FileDescriptorName=NAME). One reader, with a
 * grammar per use (what each place may take), and one type: ListenAddress,
 * from src/sys, where the sockets are made.
 *
 * IP literals are checked by Node's own parser (net.isIP), never by hand; the
 * 16 bytes of an IPv6 address are libc's inet_pton's (src/sys). Pure: returns
 * the address, or a message that quotes the text and says what to write.
 */
import net from 'node:net';
import path from 'node:path';
import type { ListenAddress } from '../sys/index.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export type { ListenAddress };

export interface AddressGrammar {
  /** How a path without `unix:` is read: never, when it starts with / or ./, or always (kfcgi's -s sockpath). */
  barePaths: 'never' | 'explicit' | 'always';
  /** A relative unix path is resolved against the working directory (else it must be absolute). */
  relativePaths: boolean;
  /** Host names other than localhost (the FastCGI client resolves them; a listener binds numeric addresses only). */
  hostNames: boolean;
  /** `fd:N`: a listening socket inherited on descriptor N; `systemd[:NAME]`: sockets systemd passed. */
  descriptors: boolean;
  /** Port 0: the kernel chooses (a listener only). */
  portZero: boolean;
  /** An IPv6 zone index (fe80::1%eth0): Node binds and connects with one; kfcgi's own bind(2) takes none. */
  zoneIndex: boolean;
  /** `*:PORT` means every interface (a listener only). */
  wildcard: boolean;
}

/** `gatehouse serve --listen` and `gatehouse cgid --fastcgi`. */
export const LISTEN_ADDRESS: AddressGrammar = {
  barePaths: 'never',
  relativePaths: false,
  hostNames: false,
  descriptors: true,
  portZero: true,
  zoneIndex: true,
  wildcard: true,
};

/** `gatehouse kfcgi -s sockpath`: kfcgi(8) takes a path; gatehouse also takes HOST:PORT. */
export const KFCGI_SOCKET_ADDRESS: AddressGrammar = {
  barePaths: 'always',
  relativePaths: true,
  hostNames: false,
  descriptors: false,
  portZero: false,
  zoneIndex: false,
  wildcard: true,
};

/** A FastCGI upstream (the client, `[[fastcgi]] upstreams`). */
export const UPSTREAM_ADDRESS: AddressGrammar = {
  barePaths: 'explicit',
  relativePaths: true,
  hostNames: true,
  descriptors: false,
  portZero: false,
  zoneIndex: true,
  wildcard: false,
};

const HOST_PORT = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d+)$/;
const HOST_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?$/;

/** What to write instead, for a grammar. */
function forms(grammar: AddressGrammar): string {
  const paths = grammar.barePaths === 'explicit' ? 'unix:/path or /path' : 'unix:/path';
  return `write HOST:PORT (127.0.0.1:8080), [::1]:8080, ${grammar.descriptors ? `${paths}, fd:N, or systemd` : `or ${paths}`}`;
}

/** Reads `text` by `grammar`: the address, or a message saying what is wrong and what to write. */
export function parseListenAddress(text: string, grammar: AddressGrammar = LISTEN_ADDRESS): ListenAddress | string {
  if (text.startsWith('unix:')) return unixAddress(text, text.slice('unix:'.length), grammar);
  if (text.startsWith('fd:')) {
    if (!grammar.descriptors) return `"${text}": an inherited descriptor cannot be used here; ${forms(grammar)}`;
    const digits = text.slice('fd:'.length);
    if (!/^\d{1,9}$/.test(digits)) return `"${text}": write fd:N with N the number of a descriptor inherited already listening, like fd:3`;
    return { kind: 'fd', fd: Number(digits) };
  }
  // Where descriptors are not taken (kfcgi's -s, upstreams), "systemd" is read as any other word: a path, or a mistake.
  if (grammar.descriptors && (text === 'systemd' || text.startsWith('systemd:'))) {
    if (text === 'systemd') return { kind: 'systemd' };
    const name = text.slice('systemd:'.length);
    // FileDescriptorName=: up to 255 printable characters, no colon (systemd.socket(5)).
    if (!/^[\x21-\x39\x3b-\x7e]{1,255}$/.test(name))
      return `"${text}": write systemd:NAME with NAME the FileDescriptorName= of the .socket unit, or systemd for every passed socket`;
    return { kind: 'systemd', name };
  }
  const match = HOST_PORT.exec(text);
  if (match) {
    const [, bracketed, plain, portText] = match;
    // kfcgi's -s takes any path: only a word whose host could be an address is read as one.
    const looksLikeHost = bracketed !== undefined || grammar.barePaths !== 'always' || /^(?:[\d.]*|\*|localhost)$/.test(plain!);
    if (looksLikeHost) return tcpAddress(text, bracketed, plain, Number(portText), grammar);
  }
  if (grammar.barePaths === 'always' || (grammar.barePaths === 'explicit' && /^\.{0,2}\//.test(text)))
    return unixAddress(text, text, grammar);
  if (/^[^[\]]*:[^[\]]*:/.test(text)) return `"${text}": write an IPv6 address in brackets, like [::1]:8080`;
  return `"${text}" is not an address; ${forms(grammar)}`;
}

function unixAddress(text: string, socketPath: string, grammar: AddressGrammar): ListenAddress | string {
  if (socketPath === '') return `"${text}": a unix socket needs an absolute path, like unix:/run/gatehouse.sock`;
  if (grammar.relativePaths) return { kind: 'unix', path: path.resolve(socketPath) };
  if (!path.isAbsolute(socketPath)) return `"${text}": a unix socket needs an absolute path, like unix:/run/gatehouse.sock`;
  return { kind: 'unix', path: socketPath };
}

function tcpAddress(
  text: string,
  bracketed: string | undefined,
  plain: string | undefined,
  port: number,
  grammar: AddressGrammar,
): ListenAddress | string {
  if (port > 65535) return `"${text}": port ${port} is above 65535`;
  if (port === 0 && !grammar.portZero) return `"${text}": the port must be from 1 to 65535`;
  let host: string;
  if (bracketed !== undefined) {
    if (!net.isIPv6(bracketed)) return `"${text}": ${bracketed} is not an IPv6 address; write one such as [::1]:8080`;
    host = bracketed;
  } else if (plain === '') host = '127.0.0.1';
  else if (plain === '*') {
    if (!grammar.wildcard) return `"${text}": * (every interface) is for listening; name the host to connect to`;
    host = '0.0.0.0';
  } else if (plain === 'localhost') host = grammar.hostNames ? 'localhost' : '127.0.0.1';
  else if (net.isIPv4(plain!)) host = plain!;
  // Digits and dots that are not an IPv4 address are a mistake, not a host name (the resolver would read 1.2.3 as 1.2.0.3).
  else if (grammar.hostNames && HOST_NAME.test(plain!) && !/^[\d.]+$/.test(plain!)) host = plain!;
  else return `"${text}": ${plain} is not an IP address; write 127.0.0.1, ::1 or 0.0.0.0`;
  if (host.includes('%') && !grammar.zoneIndex)
    return `"${text}": a zone index (%${host.split('%')[1]}) cannot be used here; write the address without it`;
  return { kind: 'tcp', host, port };
}

/** How logs and messages name an address; parseListenAddress reads it back. */
export function formatListenAddress(address: ListenAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  if (address.kind === 'fd') return `fd:${address.fd}`;
  if (address.kind === 'systemd') return address.name === undefined ? 'systemd' : `systemd:${address.name}`;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** What net.Server.listen() takes for `address` (a `systemd` address is resolved to descriptors first: src/sys/systemd.ts). */
export function netListenOptions(address: ListenAddress): net.ListenOptions | { fd: number } {
  if (address.kind === 'unix') return { path: address.path };
  if (address.kind === 'fd') return { fd: address.fd };
  if (address.kind === 'systemd')
    throw new GatehouseError(ErrorCode.ADDRESS_INVALID, `${formatListenAddress(address)} must be resolved to the passed sockets first`);
  return { host: address.host, port: address.port };
}

/**
 * Raw HTTP/1.x on a socket, for tests about bytes on the wire: exact request
 * bytes out (possibly trickled), everything the server sends back, whether
 * the server closed the connection, and a parser for what came back.
 */
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Writes `request` (PORT replaced by the port) and resolves with everything the server sent before it closed. */
export async function rawRequest(port: number, request: string, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.on('error', reject);
    socket.setTimeout(timeoutMs, () => socket.destroy());
    socket.write(Buffer.from(request.replaceAll('PORT', String(port)), 'latin1'));
  });
}

export interface RawResponse {
  /** The status line after the version: "200 OK". */
  status: string;
  /** Lower-case names, every value in order. */
  headers: Map<string, string[]>;
  /** The body, de-chunked. */
  body: string;
}

export function parseRawResponse(text: string): RawResponse {
  const end = text.indexOf('\r\n\r\n');
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers = new Map<string, string[]>();
  for (const line of lines) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon).toLowerCase();
    headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
  }
  let body = text.slice(end + 4);
  if (headers.get('transfer-encoding')?.[0] === 'chunked') {
    let decoded = '';
    for (let rest = body; ; ) {
      const lineEnd = rest.indexOf('\r\n');
      const size = Number.parseInt(rest.slice(0, lineEnd), 16);
      if (!size) break;
      decoded += rest.slice(lineEnd + 2, lineEnd + 2 + size);
      rest = rest.slice(lineEnd + 2 + size + 2);
    }
    body = decoded;
  }
  return { status: statusLine!.slice(statusLine!.indexOf(' ') + 1), headers, body };
}

export interface RawExchange {
  /** Everything the server sent, as latin1 text. */
  text: string;
  /** The server closed (or reset) the connection before `waitMs` ran out. */
  closedByServer: boolean;
}

/**
 * Writes `data` (a string, or pieces with pauses in milliseconds between them:
 * a client that trickles) on a fresh connection and collects what comes back
 * until the server closes, or `until(text)` holds, or `waitMs` (default 5 s)
 * passes. A trickle stops as soon as the server closes.
 */
export async function rawExchange(
  port: number,
  data: string | Buffer | Array<string | Buffer | number>,
  options: { waitMs?: number; until?: (text: string) => boolean } = {},
): Promise<RawExchange> {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  let closedByServer = false;
  let enough!: () => void;
  const done = new Promise<void>((resolve) => (enough = resolve));
  const serverClosed = new Promise<void>((resolve) => {
    socket.on('close', () => {
      closedByServer = true;
      resolve();
      enough();
    });
  });
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    if (options.until?.(text)) enough();
  });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const pieces = Array.isArray(data) ? data : [data];
  for (const piece of pieces) {
    if (closedByServer) break;
    if (typeof piece === 'number') await Promise.race([sleep(piece), serverClosed]);
    else socket.write(piece);
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise<void>((resolve) => (timer = setTimeout(resolve, options.waitMs ?? 5000)))]);
  clearTimeout(timer);
  const result = { text, closedByServer };
  socket.destroy();
  return result;
}

/** The status codes of every response in `text` (pipelined responses come one after another). */
export function statusCodes(text: string): number[] {
  return [...text.matchAll(/^HTTP\/1\.1 (\d{3}) /gm)].map((match) => Number(match[1]));
}

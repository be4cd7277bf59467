/** Raw HTTP/1.x for differential tests: exact request bytes out, the whole response (read until close) back, then parsed. */
import net from 'node:net';

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

/**
 * A raw FastCGI peer for protocol tests: writes exact records and collects
 * every record the other side sends, so tests can assert on the wire itself
 * rather than through gatehouse's own client.
 */
import net from 'node:net';
import { once } from 'node:events';
import { RecordDecoder, type FastCGIRecord } from '../../src/fastcgi/decoder.js';
import { encodeBeginRequest, encodeParamsRecords, encodeRecord, frameStream } from '../../src/fastcgi/records.js';
import { RecordType, Role } from '../../src/fastcgi/protocol.js';
import type { Address } from './process.js';

export interface ReceivedRecord {
  type: number;
  requestId: number;
  content: Buffer;
}

export class RawFastCGIPeer {
  readonly socket: net.Socket;
  readonly records: ReceivedRecord[] = [];
  readonly #decoder = new RecordDecoder();
  #waiters: Array<() => void> = [];
  closed = false;
  decodeError: Error | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      const error = this.#decoder.push(chunk, (record: FastCGIRecord) => {
        this.records.push({ type: record.type, requestId: record.requestId, content: Buffer.from(record.content) });
      });
      if (error) this.decodeError = error;
      this.#wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
    socket.on('error', () => {});
  }

  static async connect(address: Address): Promise<RawFastCGIPeer> {
    const socket = net.connect(address as net.NetConnectOpts);
    await once(socket, 'connect');
    return new RawFastCGIPeer(socket);
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter();
  }

  write(...buffers: Buffer[]): void {
    for (const buffer of buffers) this.socket.write(buffer);
  }

  /** BEGIN_REQUEST, the params, the empty PARAMS record, then the body as STDIN and its end. */
  sendRequest(
    requestId: number,
    params: Record<string, string>,
    options: { body?: Buffer; keepConn?: boolean; role?: number; endStdin?: boolean } = {},
  ): void {
    this.write(encodeBeginRequest(requestId, (options.role ?? Role.RESPONDER) as Role, options.keepConn ?? false));
    if (Object.keys(params).length > 0) this.write(encodeParamsRecords(RecordType.PARAMS, requestId, Object.entries(params)));
    this.write(encodeRecord(RecordType.PARAMS, requestId));
    if (options.body && options.body.length > 0) this.write(...frameStream(RecordType.STDIN, requestId, options.body));
    if (options.endStdin !== false) this.write(encodeRecord(RecordType.STDIN, requestId));
  }

  /** Waits until `predicate` holds over the records received (or the connection closed), at most timeoutMs. */
  async waitFor(predicate: (records: ReceivedRecord[]) => boolean, timeoutMs = 5000): Promise<ReceivedRecord[]> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.records)) {
      if (this.closed) throw new Error(`connection closed before the expected records arrived; got ${describe(this.records)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for records; got ${describe(this.records)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.records;
  }

  async waitForEnd(requestId: number, timeoutMs = 5000): Promise<ReceivedRecord> {
    await this.waitFor((records) => records.some((r) => r.type === RecordType.END_REQUEST && r.requestId === requestId), timeoutMs);
    return this.records.find((r) => r.type === RecordType.END_REQUEST && r.requestId === requestId)!;
  }

  async waitForClose(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('connection still open');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** The STDOUT bytes of one request, concatenated. */
  stdout(requestId: number): Buffer {
    return Buffer.concat(this.records.filter((r) => r.type === RecordType.STDOUT && r.requestId === requestId).map((r) => r.content));
  }

  stderr(requestId: number): Buffer {
    return Buffer.concat(this.records.filter((r) => r.type === RecordType.STDERR && r.requestId === requestId).map((r) => r.content));
  }

  close(): void {
    this.socket.destroy();
  }
}

function describe(records: ReceivedRecord[]): string {
  return records.map((r) => `${r.type}#${r.requestId}(${r.content.length})`).join(' ') || 'nothing';
}

/**
 * A raw FastCGI peer for protocol tests: writes exact records and collects
 * every record the other side sends, so tests can assert on the wire itself
 * rather than through gatehouse's own client.
 */
import net from 'node:net';
import { EventEmitter, once } from 'node:events';
import { RecordDecoder, type FastCGIRecord } from '../../src/fastcgi/decoder.js';
import { encodeBeginRequest, encodeParamsRecords, encodeRecord, frameStream } from '../../src/fastcgi/records.js';
import { RecordType, Role } from '../../src/fastcgi/protocol.js';
import type { Address } from './process.js';
import { waitFor, type WaitOptions } from './wait.js';

export interface ReceivedRecord {
  type: number;
  requestId: number;
  content: Buffer;
}

export class RawFastCGIPeer {
  readonly socket: net.Socket;
  readonly records: ReceivedRecord[] = [];
  readonly #decoder = new RecordDecoder();
  /** Emits 'change' for every chunk received and at close: what wakes the waits. */
  readonly #changes = new EventEmitter();
  closed = false;
  decodeError: Error | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      const error = this.#decoder.push(chunk, (record: FastCGIRecord) => {
        this.records.push({ type: record.type, requestId: record.requestId, content: Buffer.from(record.content) });
      });
      if (error) this.decodeError = error;
      this.#changes.emit('change');
    });
    socket.on('close', () => {
      this.closed = true;
      this.#changes.emit('change');
    });
    socket.on('error', () => {});
  }

  static async connect(address: Address): Promise<RawFastCGIPeer> {
    const socket = net.connect(address as net.NetConnectOpts);
    await once(socket, 'connect');
    return new RawFastCGIPeer(socket);
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

  /**
   * Waits (test/kit/wait.ts's contract) until `predicate` holds over the
   * records received, woken by every record; gives up when the connection
   * closes first. Resolves with the records.
   */
  async waitForRecords(
    predicate: (records: ReceivedRecord[]) => boolean,
    what: string,
    options: WaitOptions = {},
  ): Promise<ReceivedRecord[]> {
    await waitFor(() => predicate(this.records), what, {
      wakeOn: { emitter: this.#changes, events: ['change'] },
      giveUpIf: () => this.closed && 'the connection closed',
      context: () => `records so far: ${describe(this.records)}`,
      ...options,
    });
    return this.records;
  }

  async waitForEnd(requestId: number, options: WaitOptions = {}): Promise<ReceivedRecord> {
    const isEnd = (r: ReceivedRecord) => r.type === RecordType.END_REQUEST && r.requestId === requestId;
    await this.waitForRecords((records) => records.some(isEnd), `END_REQUEST of request ${requestId}`, options);
    return this.records.find(isEnd)!;
  }

  /** Waits until the other side closed the connection. */
  async waitForClose(options: WaitOptions = {}): Promise<void> {
    await waitFor(() => this.closed, 'the connection to close', {
      wakeOn: { emitter: this.#changes, events: ['change'] },
      context: () => `records so far: ${describe(this.records)}`,
      ...options,
    });
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

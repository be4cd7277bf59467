/**
 * The front-to-daemon wire format (pure: no sockets, timers or processes).
 *
 * Every message is one frame: a 12-byte header, then the payload.
 *
 *   0  u16  magic 0x4763 ("Gc")
 *   2  u8   protocol version (CGID_PROTOCOL_VERSION)
 *   3  u8   message type
 *   4  u32  request id (0 for connection-level messages)
 *   8  u32  payload length (at most CGID_MAX_FRAME_BYTES)
 *
 * Inside payloads: strings are u32 length + UTF-8 bytes; the environment's
 * NAME=VALUE entries are u32 length + their bytes exactly (request bytes that
 * are not UTF-8 reach the script unchanged); lists are u32 count + items;
 * numbers are u32, or f64 where a limit may exceed 4 GiB. All big-endian.
 * Version 2 carries the environment as bytes (version 1 decoded it as UTF-8).
 *
 * Conversation: the front sends HELLO with a random nonce; the daemon
 * answers WELCOME with its pid and HMAC-SHA256(token, "cgid-daemon" +
 * nonce), which proves it was started with this front's instance token
 * without revealing it. Only then does the front send SPAWN orders, each
 * carrying the token itself and three descriptors (SCM_RIGHTS: the script's
 * stdin, stdout, stderr), answered by SPAWNED (the pid) or FAILED (errno and
 * why); EXITED follows when the daemon has reaped the script. SIGNAL asks the
 * daemon to signal a script's process group (the daemon knows whether the pid
 * is still its child, so a recycled pid is never signalled). ERROR ends the
 * connection with a reason (wrong token, wrong version, malformed frame).
 *
 * What a spawn order holds (src/spawn/order.ts) belongs to spawning, not to
 * this wire: the daemon and a front spawning in-process launch the same orders.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { CGID_MAX_FRAME_BYTES } from '../limits.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import type { EnvironmentValue } from '../spawn/order.js';
import type { ScriptLimits, SpawnOrder } from '../spawn/order.js';

export const CGID_PROTOCOL_VERSION = 2;
export const CGID_MAGIC = 0x4763;
export const CGID_HEADER_BYTES = 12;
export const CGID_NONCE_BYTES = 16;

export const MessageType = {
  HELLO: 1,
  WELCOME: 2,
  SPAWN: 3,
  SPAWNED: 4,
  FAILED: 5,
  SIGNAL: 6,
  EXITED: 7,
  ERROR: 8,
} as const;

/** The environment of a spawn order to send: NAME=VALUE entries in bytes, or the environment record itself. */
export type WireEnvironment = readonly Uint8Array[] | Readonly<Record<string, EnvironmentValue>>;

/** A spawn order as the front sends it: the environment may be the record (encoded without a Buffer per entry). */
export type OutgoingSpawnOrder = Omit<SpawnOrder, 'env'> & { env: WireEnvironment };

/** What encodeMessage takes: any message, with a spawn order's environment as a list or as the record. */
export type OutgoingMessage =
  | Exclude<CgidMessage, { type: 'spawn' }>
  | { type: 'spawn'; id: number; token: Buffer; order: OutgoingSpawnOrder };

export type CgidMessage =
  | { type: 'hello'; nonce: Buffer }
  | { type: 'welcome'; pid: number; proof: Buffer }
  | { type: 'spawn'; id: number; token: Buffer; order: SpawnOrder }
  | { type: 'spawned'; id: number; pid: number }
  | { type: 'failed'; id: number; errno: string; message: string }
  | { type: 'signal'; id: number; signal: string }
  | { type: 'exited'; id: number; code: number | null; signal: string | null }
  | { type: 'error'; message: string };

export interface ProtocolError {
  error: string;
}

/** What the daemon must present in WELCOME for `nonce`. */
export function daemonProof(token: Buffer, nonce: Buffer): Buffer {
  return createHmac('sha256', token).update('cgid-daemon').update(nonce).digest();
}

/** Constant-time comparison of two secrets of any length. */
export function secretsEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * One scratch buffer for every encode (encoding is synchronous and never
 * nested): fields are written straight into it and the frame is copied out
 * once, instead of a Buffer per field joined by Buffer.concat (a spawn order
 * has a few dozen fields; this runs once per CGI request on the front).
 */
const SCRATCH_BYTES = 16 * 1024;
let scratch = Buffer.allocUnsafe(SCRATCH_BYTES);

class Writer {
  #offset = CGID_HEADER_BYTES;
  #room(count: number): void {
    const needed = this.#offset + count;
    if (needed <= scratch.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(needed, scratch.length * 2));
    scratch.copy(bigger, 0, 0, this.#offset);
    scratch = bigger;
  }
  u32(value: number): this {
    this.#room(4);
    scratch.writeUInt32BE(value >>> 0, this.#offset);
    this.#offset += 4;
    return this;
  }
  i32(value: number): this {
    this.#room(4);
    scratch.writeInt32BE(value | 0, this.#offset);
    this.#offset += 4;
    return this;
  }
  f64(value: number): this {
    this.#room(8);
    scratch.writeDoubleBE(value, this.#offset);
    this.#offset += 8;
    return this;
  }
  bytes(value: Uint8Array): this {
    this.u32(value.length);
    this.#room(value.length);
    scratch.set(value, this.#offset);
    this.#offset += value.length;
    return this;
  }
  string(value: string): this {
    // UTF-8 takes at most 3 bytes per UTF-16 unit; the length is written once the bytes are.
    this.#room(4 + value.length * 3);
    const written = scratch.write(value, this.#offset + 4, 'utf8');
    scratch.writeUInt32BE(written, this.#offset);
    this.#offset += 4 + written;
    return this;
  }
  strings(values: readonly string[]): this {
    this.u32(values.length);
    for (const value of values) this.string(value);
    return this;
  }
  /** NAME=VALUE entries: a list already in bytes, or the environment record itself (no Buffer per entry). */
  environment(env: WireEnvironment): this {
    if (Array.isArray(env)) {
      this.u32(env.length);
      for (const value of env) this.bytes(value);
      return this;
    }
    const record = env as Readonly<Record<string, EnvironmentValue>>;
    const countAt = this.#offset;
    this.u32(0);
    let count = 0;
    for (const name in record) {
      const value = record[name]!;
      if (typeof value === 'string') this.string(`${name}=${value}`);
      else {
        const lengthAt = this.#offset;
        this.string(`${name}=`);
        this.#room(value.length);
        scratch.set(value, this.#offset);
        this.#offset += value.length;
        scratch.writeUInt32BE(this.#offset - lengthAt - 4, lengthAt);
      }
      count++;
    }
    scratch.writeUInt32BE(count, countAt);
    return this;
  }
  frame(type: number, id: number): Buffer {
    scratch.writeUInt16BE(CGID_MAGIC, 0);
    scratch.writeUInt8(CGID_PROTOCOL_VERSION, 2);
    scratch.writeUInt8(type, 3);
    scratch.writeUInt32BE(id >>> 0, 4);
    scratch.writeUInt32BE(this.#offset - CGID_HEADER_BYTES, 8);
    const frame = Buffer.allocUnsafe(this.#offset);
    scratch.copy(frame, 0, 0, this.#offset);
    // An absurd environment grew it: not kept for the life of the process.
    if (scratch.length > SCRATCH_BYTES * 4) scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
    return frame;
  }
}

/** Encodes one message as a frame. Throws a CGID_PROTOCOL GatehouseError for a message larger than CGID_MAX_FRAME_BYTES (a caller bug or an absurd environment). */
export function encodeMessage(message: OutgoingMessage): Buffer {
  const w = new Writer();
  let frame: Buffer;
  switch (message.type) {
    case 'hello':
      frame = w.bytes(message.nonce).frame(MessageType.HELLO, 0);
      break;
    case 'welcome':
      frame = w.u32(message.pid).bytes(message.proof).frame(MessageType.WELCOME, 0);
      break;
    case 'spawn': {
      const { order } = message;
      w.bytes(message.token).string(order.file).strings(order.argv).string(order.cwd).environment(order.env);
      w.f64(order.limits.cpuSeconds)
        .f64(order.limits.memoryBytes)
        .f64(order.limits.processes)
        .f64(order.limits.openFiles)
        .f64(order.limits.outputBytes);
      if (order.runAs) w.u32(1).string(order.runAs.user).string(order.runAs.group).string(order.runAs.root);
      else w.u32(0);
      frame = w.frame(MessageType.SPAWN, message.id);
      break;
    }
    case 'spawned':
      frame = w.u32(message.pid).frame(MessageType.SPAWNED, message.id);
      break;
    case 'failed':
      frame = w.string(message.errno).string(message.message).frame(MessageType.FAILED, message.id);
      break;
    case 'signal':
      frame = w.string(message.signal).frame(MessageType.SIGNAL, message.id);
      break;
    case 'exited':
      frame = w
        .i32(message.code ?? -1)
        .string(message.signal ?? '')
        .frame(MessageType.EXITED, message.id);
      break;
    case 'error':
      frame = w.string(message.message).frame(MessageType.ERROR, 0);
      break;
  }
  if (frame.length - CGID_HEADER_BYTES > CGID_MAX_FRAME_BYTES) {
    throw new GatehouseError(
      ErrorCode.CGID_PROTOCOL,
      `cgid ${message.type} message of ${frame.length} bytes exceeds the frame limit of ${CGID_MAX_FRAME_BYTES} bytes`,
    );
  }
  return frame;
}

class Reader {
  #offset = 0;
  constructor(readonly buffer: Buffer) {}
  #need(count: number): void {
    if (this.#offset + count > this.buffer.length) throw new TruncatedPayload();
  }
  u32(): number {
    this.#need(4);
    const value = this.buffer.readUInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }
  i32(): number {
    this.#need(4);
    const value = this.buffer.readInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }
  f64(): number {
    this.#need(8);
    const value = this.buffer.readDoubleBE(this.#offset);
    this.#offset += 8;
    return value;
  }
  bytes(): Buffer {
    const length = this.u32();
    this.#need(length);
    const value = this.buffer.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return value;
  }
  string(): string {
    return this.bytes().toString('utf8');
  }
  strings(): string[] {
    return this.#list(() => this.string());
  }
  /**
   * Copies (so a decoded order does not pin the connection's read buffer)
   * into one block with a NUL after each entry: one allocation for the whole
   * environment, and C strings posix_spawn can take without another copy.
   */
  bytesList(): Buffer[] {
    const views = this.#list(() => this.bytes());
    let total = 0;
    for (const view of views) total += view.length + 1;
    const block = Buffer.allocUnsafe(total);
    const copies: Buffer[] = [];
    let offset = 0;
    for (const view of views) {
      view.copy(block, offset);
      block[offset + view.length] = 0;
      copies.push(block.subarray(offset, offset + view.length));
      offset += view.length + 1;
    }
    // posix_spawn (src/sys/posix-spawn.ts, C_STRINGS) may then pass the entries without copying them again.
    Object.defineProperty(copies, Symbol.for('gatehouse.cStrings'), { value: true });
    return copies;
  }
  #list<T>(item: () => T): T[] {
    const count = this.u32();
    // Each item needs at least its 4-byte length: a count beyond that is garbage, refused before allocating.
    if (count * 4 > this.buffer.length - this.#offset) throw new TruncatedPayload();
    const values: T[] = [];
    for (let index = 0; index < count; index++) values.push(item());
    return values;
  }
  get done(): boolean {
    return this.#offset === this.buffer.length;
  }
}

/**
 * A field that runs past the end of the payload. Thrown by Reader and caught in
 * decodeMessage, which answers with a ProtocolError instead: it never leaves
 * this module, but it is a GatehouseError like every error src/ makes.
 */
class TruncatedPayload extends GatehouseError {
  constructor() {
    super(ErrorCode.CGID_PROTOCOL, 'cgid payload ends inside a field');
    this.name = 'TruncatedPayload';
  }
}

/** A decoded frame: header fields and the raw payload. */
export interface Frame {
  type: number;
  id: number;
  payload: Buffer;
}

/** Decodes a frame's payload; garbage gives a ProtocolError, never an exception. */
export function decodeMessage(frame: Frame): CgidMessage | ProtocolError {
  const r = new Reader(frame.payload);
  let message: CgidMessage;
  try {
    switch (frame.type) {
      case MessageType.HELLO:
        message = { type: 'hello', nonce: Buffer.from(r.bytes()) };
        break;
      case MessageType.WELCOME:
        message = { type: 'welcome', pid: r.u32(), proof: Buffer.from(r.bytes()) };
        break;
      case MessageType.SPAWN: {
        const token = Buffer.from(r.bytes());
        const file = r.string();
        const argv = r.strings();
        const cwd = r.string();
        const env = r.bytesList();
        const limits: ScriptLimits = {
          cpuSeconds: r.f64(),
          memoryBytes: r.f64(),
          processes: r.f64(),
          openFiles: r.f64(),
          outputBytes: r.f64(),
        };
        for (const [name, value] of Object.entries(limits)) {
          if (!Number.isSafeInteger(value) || value < 0)
            return { error: `spawn order ${frame.id}: limit ${name} is ${value}; limits are whole numbers >= 0` };
        }
        const hasRunAs = r.u32();
        const runAs = hasRunAs === 1 ? { user: r.string(), group: r.string(), root: r.string() } : null;
        if (hasRunAs > 1) return { error: `spawn order ${frame.id}: run-as flag ${hasRunAs} is neither 0 nor 1` };
        message = { type: 'spawn', id: frame.id, token, order: { file, argv, cwd, env, limits, runAs } };
        break;
      }
      case MessageType.SPAWNED:
        message = { type: 'spawned', id: frame.id, pid: r.u32() };
        break;
      case MessageType.FAILED:
        message = { type: 'failed', id: frame.id, errno: r.string(), message: r.string() };
        break;
      case MessageType.SIGNAL:
        message = { type: 'signal', id: frame.id, signal: r.string() };
        break;
      case MessageType.EXITED: {
        const code = r.i32();
        const signal = r.string();
        message = { type: 'exited', id: frame.id, code: code < 0 ? null : code, signal: signal === '' ? null : signal };
        break;
      }
      case MessageType.ERROR:
        message = { type: 'error', message: r.string() };
        break;
      default:
        return { error: `unknown cgid message type ${frame.type}` };
    }
  } catch (error) {
    if (error instanceof TruncatedPayload)
      return { error: `cgid message type ${frame.type} (id ${frame.id}): payload of ${frame.payload.length} bytes ends inside a field` };
    throw error;
  }
  if (!r.done)
    return { error: `cgid message type ${frame.type} (id ${frame.id}): ${frame.payload.length} bytes of payload, more than its fields` };
  return message;
}

/**
 * Incremental frame decoder: push() bytes as they arrive, in any chunking;
 * it returns the complete frames, or an error (bad magic, another version, an
 * oversized frame) after which the connection must be closed.
 */
export class FrameDecoder {
  #pending: Buffer = Buffer.alloc(0);
  #failed: ProtocolError | null = null;
  readonly #maxPayload: number;

  constructor(maxPayload = CGID_MAX_FRAME_BYTES) {
    this.#maxPayload = maxPayload;
  }

  push(chunk: Buffer): { frames: Frame[]; error: ProtocolError | null } {
    if (this.#failed) return { frames: [], error: this.#failed };
    this.#pending = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const frames: Frame[] = [];
    let offset = 0;
    while (this.#pending.length - offset >= CGID_HEADER_BYTES) {
      const magic = this.#pending.readUInt16BE(offset);
      const version = this.#pending.readUInt8(offset + 2);
      const length = this.#pending.readUInt32BE(offset + 8);
      if (magic !== CGID_MAGIC)
        return this.#fail(
          frames,
          `not a cgid frame (magic 0x${magic.toString(16).padStart(4, '0')}): the socket is not a gatehouse cgid daemon or front`,
        );
      if (version !== CGID_PROTOCOL_VERSION) {
        return this.#fail(
          frames,
          `cgid protocol version ${version}, this end speaks ${CGID_PROTOCOL_VERSION}: run the front and the daemon from the same gatehouse installation`,
        );
      }
      if (length > this.#maxPayload) return this.#fail(frames, `cgid frame of ${length} bytes exceeds the limit of ${this.#maxPayload}`);
      if (this.#pending.length - offset < CGID_HEADER_BYTES + length) break;
      frames.push({
        type: this.#pending.readUInt8(offset + 3),
        id: this.#pending.readUInt32BE(offset + 4),
        payload: this.#pending.subarray(offset + CGID_HEADER_BYTES, offset + CGID_HEADER_BYTES + length),
      });
      offset += CGID_HEADER_BYTES + length;
    }
    // Keep only the unfinished tail (copied, so the frames handed out do not pin a growing buffer).
    this.#pending =
      offset === this.#pending.length ? Buffer.alloc(0) : offset === 0 ? this.#pending : Buffer.from(this.#pending.subarray(offset));
    return { frames, error: null };
  }

  /** Bytes of an unfinished frame (a peer that closes mid-frame left this many). */
  get buffered(): number {
    return this.#pending.length;
  }

  #fail(frames: Frame[], error: string): { frames: Frame[]; error: ProtocolError } {
    this.#failed = { error };
    this.#pending = Buffer.alloc(0);
    return { frames, error: this.#failed };
  }
}

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
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { CGID_MAX_FRAME_BYTES } from '../limits.js';
import { ErrorCode, GatehouseError } from '../errors.js';
import type { EnvironmentValue } from '../cgi/environment.js';

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

/** Per-script resource limits (Apache's RLimitCPU, RLimitMEM, RLimitNPROC, plus open files and output). 0 means no limit. */
export interface ScriptLimits {
  /** RLIMIT_CPU, seconds. */
  cpuSeconds: number;
  /** RLIMIT_AS, bytes. */
  memoryBytes: number;
  /** RLIMIT_NPROC: processes of the script's user. */
  processes: number;
  /** RLIMIT_NOFILE. */
  openFiles: number;
  /** stdout bytes (head included) before the script's group is killed and its output cut. */
  outputBytes: number;
}

export const NO_LIMITS: ScriptLimits = { cpuSeconds: 0, memoryBytes: 0, processes: 0, openFiles: 0, outputBytes: 0 };

/** suexec: run the script as this user and group; it must lie inside `root`. */
export interface RunAs {
  user: string;
  group: string;
  root: string;
}

export interface SpawnOrder {
  file: string;
  argv: string[];
  cwd: string;
  /** NAME=VALUE, the whole environment, as the bytes execve passes. */
  env: Buffer[];
  limits: ScriptLimits;
  runAs: RunAs | null;
}

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

class Writer {
  readonly #parts: Buffer[] = [];
  #length = 0;
  #push(buffer: Buffer): void {
    this.#parts.push(buffer);
    this.#length += buffer.length;
  }
  u32(value: number): this {
    const buffer = Buffer.allocUnsafe(4);
    buffer.writeUInt32BE(value >>> 0);
    this.#push(buffer);
    return this;
  }
  i32(value: number): this {
    const buffer = Buffer.allocUnsafe(4);
    buffer.writeInt32BE(value | 0);
    this.#push(buffer);
    return this;
  }
  f64(value: number): this {
    const buffer = Buffer.allocUnsafe(8);
    buffer.writeDoubleBE(value);
    this.#push(buffer);
    return this;
  }
  bytes(value: Buffer): this {
    this.u32(value.length);
    this.#push(value);
    return this;
  }
  string(value: string): this {
    return this.bytes(Buffer.from(value, 'utf8'));
  }
  strings(values: readonly string[]): this {
    this.u32(values.length);
    for (const value of values) this.string(value);
    return this;
  }
  bytesList(values: readonly Buffer[]): this {
    this.u32(values.length);
    for (const value of values) this.bytes(value);
    return this;
  }
  frame(type: number, id: number): Buffer {
    const header = Buffer.allocUnsafe(CGID_HEADER_BYTES);
    header.writeUInt16BE(CGID_MAGIC, 0);
    header.writeUInt8(CGID_PROTOCOL_VERSION, 2);
    header.writeUInt8(type, 3);
    header.writeUInt32BE(id >>> 0, 4);
    header.writeUInt32BE(this.#length, 8);
    return Buffer.concat([header, ...this.#parts], CGID_HEADER_BYTES + this.#length);
  }
}

/** Encodes one message as a frame. Throws a CGID_PROTOCOL GatehouseError for a message larger than CGID_MAX_FRAME_BYTES (a caller bug or an absurd environment). */
export function encodeMessage(message: CgidMessage): Buffer {
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
      w.bytes(message.token).string(order.file).strings(order.argv).string(order.cwd).bytesList(order.env);
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
  /** Copies, so a decoded order does not pin the connection's read buffer. */
  bytesList(): Buffer[] {
    return this.#list(() => Buffer.from(this.bytes()));
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

class TruncatedPayload extends Error {}

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

/** The environment record as NAME=VALUE entries, in bytes (what execve takes): text as UTF-8, bytes as they are. */
export function environmentList(env: Readonly<Record<string, EnvironmentValue>>): Buffer[] {
  const list: Buffer[] = [];
  for (const name in env) {
    const value = env[name]!;
    list.push(
      typeof value === 'string' ? Buffer.from(`${name}=${value}`, 'utf8') : Buffer.concat([Buffer.from(`${name}=`, 'utf8'), value]),
    );
  }
  return list;
}

/**
 * The front's side of ScriptSock: one connection to the daemon, multiplexed
 * by request id. connect() checks that the daemon knows this front's instance
 * token (its WELCOME proof) before anything is sent that a foreign or stale
 * listener could misuse; spawn() sends an order with the script's three stdio
 * descriptors attached and resolves with the pid.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ErrorCode, GatehouseError } from '../errors.js';
import { SpawnError, type ScriptExit } from '../spawn/spawner.js';
import {
  CGID_BATCH_BYTES,
  CGID_BATCH_DESCRIPTORS,
  CGID_SPAWN_ANSWER_CHECK_MS,
  CGID_SPAWN_ANSWER_TIMEOUT_MS,
  CGID_START_TIMEOUT_MS,
  CGID_READ_CHUNK_BYTES,
} from '../limits.js';
import {
  closeDescriptor,
  connectUnix,
  receiveDescriptors,
  sendDescriptors,
  watchDescriptor,
  type DescriptorWatcher,
} from '../sys/index.js';
import {
  CGID_NONCE_BYTES,
  daemonProof,
  decodeMessage,
  encodeMessage,
  FrameDecoder,
  secretsEqual,
  type CgidMessage,
  type SpawnOrder,
} from './protocol.js';

export interface SpawnedRemote {
  pid: number;
  /** Resolves when the daemon reports the script reaped, or with null when the connection was lost first. */
  exited: Promise<ScriptExit | null>;
  signal(signal: NodeJS.Signals): void;
}

interface Pending {
  file: string;
  /** When the order was sent (Date.now()), until the daemon answered. */
  sentAt: number;
  resolveSpawn: (remote: SpawnedRemote) => void;
  rejectSpawn: (error: Error) => void;
  resolveExit: ((exit: ScriptExit | null) => void) | null;
  pid: number;
}

/** Emits 'close' (reason: string) once, when the daemon goes away or breaks the protocol. */
export class CgidConnection extends EventEmitter {
  readonly #fd: number;
  readonly #token: Buffer;
  readonly #decoder = new FrameDecoder();
  readonly #watcher: DescriptorWatcher;
  readonly #pending = new Map<number, Pending>();
  readonly #queue: Array<{ data: Buffer; fds: number[]; sent: () => void }> = [];
  #nextId = 1;
  #flushScheduled = false;
  #closed = false;
  #welcome: ((message: { pid: number; proof: Buffer } | Error) => void) | null = null;
  daemonPid = 0;
  /** How long a spawn order may stay unanswered before the connection is given up. */
  answerTimeoutMs = CGID_SPAWN_ANSWER_TIMEOUT_MS;

  private constructor(fd: number, token: Buffer) {
    super();
    this.#fd = fd;
    this.#token = token;
    this.#watcher = watchDescriptor(fd, (event) => {
      if (event.writable) this.#flush();
      if (event.readable || event.disconnect) this.#read();
    });
  }

  /** Connects and authenticates the daemon; rejects (GatehouseError CGID_UNAVAILABLE / CGID_PROTOCOL) otherwise. */
  static async connect(socketPath: string, token: Buffer, timeoutMs = CGID_START_TIMEOUT_MS): Promise<CgidConnection> {
    let fd: number;
    try {
      fd = connectUnix(socketPath);
    } catch (error) {
      throw new GatehouseError(
        ErrorCode.CGID_UNAVAILABLE,
        `cannot connect to the cgid daemon at ${socketPath}: ${(error as Error).message}`,
      );
    }
    const connection = new CgidConnection(fd, token);
    const nonce = randomBytes(CGID_NONCE_BYTES);
    const welcome = new Promise<{ pid: number; proof: Buffer } | Error>((resolve) => (connection.#welcome = resolve));
    connection.#enqueue(encodeMessage({ type: 'hello', nonce }), [], () => {});
    let timer: NodeJS.Timeout | undefined;
    const answer = await Promise.race([
      welcome,
      new Promise<Error>(
        (resolve) =>
          (timer = setTimeout(
            () => resolve(new GatehouseError(ErrorCode.CGID_UNAVAILABLE, `no answer within ${timeoutMs} ms`)),
            timeoutMs,
          )),
      ),
    ]);
    clearTimeout(timer);
    if (answer instanceof Error) {
      connection.close(answer.message);
      throw new GatehouseError(ErrorCode.CGID_UNAVAILABLE, `cgid daemon at ${socketPath}: ${answer.message}`);
    }
    if (!secretsEqual(answer.proof, daemonProof(token, nonce))) {
      connection.close('wrong instance proof');
      throw new GatehouseError(
        ErrorCode.CGID_PROTOCOL,
        `the process answering on ${socketPath} (pid ${answer.pid}) was not started by this front (its instance proof does not match): not trusted; remove the stale socket or choose another ScriptSock`,
      );
    }
    connection.daemonPid = answer.pid;
    return connection;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Scripts started through this connection and not yet reported exited. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Pids of scripts started through this connection whose exit was not reported yet. */
  runningPids(): number[] {
    return [...this.#pending.values()].filter((entry) => entry.pid > 0).map((entry) => entry.pid);
  }

  /**
   * Sends one spawn order with `stdio` attached. The caller may close its
   * copies of `stdio` once this resolves or rejects.
   */
  spawn(order: SpawnOrder, stdio: readonly [number, number, number]): Promise<SpawnedRemote> {
    if (this.#closed) return Promise.reject(SpawnError.daemonUnavailable(order.file, 'the cgid daemon connection is closed'));
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0x7fffffff ? 1 : this.#nextId + 1;
    return new Promise<SpawnedRemote>((resolveSpawn, rejectSpawn) => {
      this.#pending.set(id, { file: order.file, sentAt: Date.now(), resolveSpawn, rejectSpawn, resolveExit: null, pid: 0 });
      this.#watchAnswers();
      let data: Buffer;
      try {
        data = encodeMessage({ type: 'spawn', id, token: this.#token, order });
      } catch (error) {
        this.#pending.delete(id);
        rejectSpawn(new SpawnError(order.file, 'E2BIG', (error as Error).message));
        return;
      }
      this.#enqueue(data, [...stdio], () => {});
    });
  }

  #enqueue(data: Buffer, fds: number[], sent: () => void): void {
    this.#queue.push({ data, fds, sent });
    // Orders made in one turn of the event loop (a front often parses several requests per turn) leave
    // together at its end: one sendmsg, and one wake-up of the daemon, for all of them.
    if (this.#queue.length === 1 && !this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        this.#flush();
      });
    }
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      // As many queued messages as one sendmsg may carry: the daemon reads up to CGID_BATCH_DESCRIPTORS
      // descriptors per read, and a send larger than the socket buffer would be cut short.
      let count = 0;
      let bytes = 0;
      let descriptors = 0;
      for (const item of this.#queue) {
        if (count > 0 && (bytes + item.data.length > CGID_BATCH_BYTES || descriptors + item.fds.length > CGID_BATCH_DESCRIPTORS)) break;
        count += 1;
        bytes += item.data.length;
        descriptors += item.fds.length;
      }
      const batch = this.#queue.slice(0, count);
      let done: boolean;
      try {
        done =
          count === 1
            ? sendDescriptors(this.#fd, batch[0]!.data, batch[0]!.fds)
            : sendDescriptors(
                this.#fd,
                Buffer.concat(
                  batch.map((item) => item.data),
                  bytes,
                ),
                batch.flatMap((item) => item.fds),
              );
      } catch (error) {
        this.close(`writing to the daemon: ${(error as Error).message}`);
        return;
      }
      if (!done) {
        this.#watcher.want(true);
        return;
      }
      this.#queue.splice(0, count);
      for (const item of batch) item.sent();
    }
    this.#watcher.want(false);
  }

  #read(): void {
    while (!this.#closed) {
      let received;
      try {
        received = receiveDescriptors(this.#fd, CGID_READ_CHUNK_BYTES, 0);
      } catch (error) {
        this.close(`reading from the daemon: ${(error as Error).message}`);
        return;
      }
      if (received.kind === 'again') return;
      if (received.kind === 'eof') {
        this.close('the daemon closed the connection');
        return;
      }
      const { frames, error } = this.#decoder.push(received.payload);
      for (const frame of frames) {
        const message = decodeMessage(frame);
        if ('error' in message) {
          this.close(message.error);
          return;
        }
        this.#handle(message);
      }
      if (error) {
        this.close(error.error);
        return;
      }
    }
  }

  #handle(message: CgidMessage): void {
    switch (message.type) {
      case 'welcome':
        this.#welcome?.({ pid: message.pid, proof: message.proof });
        this.#welcome = null;
        return;
      case 'spawned': {
        const entry = this.#pending.get(message.id);
        if (!entry) return;
        entry.pid = message.pid;
        entry.sentAt = 0;
        const id = message.id;
        const exited = new Promise<ScriptExit | null>((resolve) => (entry.resolveExit = resolve));
        entry.resolveSpawn({
          pid: message.pid,
          exited,
          signal: (signal) => {
            if (this.#pending.has(id)) this.#enqueue(encodeMessage({ type: 'signal', id, signal }), [], () => {});
          },
        });
        return;
      }
      case 'failed': {
        const entry = this.#pending.get(message.id);
        if (!entry) return;
        this.#pending.delete(message.id);
        entry.rejectSpawn(new SpawnError(entry.file, message.errno, message.message));
        return;
      }
      case 'exited': {
        const entry = this.#pending.get(message.id);
        if (!entry) return;
        this.#pending.delete(message.id);
        entry.resolveExit?.({ code: message.code, signal: message.signal as NodeJS.Signals | null });
        return;
      }
      case 'error':
        this.close(`the daemon refused: ${message.message}`);
        return;
      default:
        this.close(`unexpected ${message.type} message from the daemon`);
    }
  }

  #answerTimer: NodeJS.Timeout | undefined;

  /**
   * A daemon that stops answering (stopped, wedged) must not hold requests
   * forever: one coarse timer checks the orders still unanswered, and past
   * CGID_SPAWN_ANSWER_TIMEOUT_MS the connection is closed (the supervisor
   * then replaces the daemon).
   */
  #watchAnswers(): void {
    if (this.#answerTimer) return;
    this.#answerTimer = setInterval(
      () => {
        const now = Date.now();
        let waiting = false;
        for (const entry of this.#pending.values()) {
          if (entry.sentAt === 0) continue;
          waiting = true;
          if (now - entry.sentAt > this.answerTimeoutMs) {
            this.close(`the daemon did not answer a spawn order for ${entry.file} within ${this.answerTimeoutMs} ms`);
            return;
          }
        }
        if (!waiting) {
          clearInterval(this.#answerTimer);
          this.#answerTimer = undefined;
        }
      },
      Math.min(CGID_SPAWN_ANSWER_CHECK_MS, this.answerTimeoutMs),
    );
    this.#answerTimer.unref();
  }

  /** Closes the connection: spawns in flight fail (SpawnError.daemonUnavailable), running scripts resolve exited with null. */
  close(reason = 'closed by the front'): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#answerTimer);
    this.#watcher.close();
    closeDescriptor(this.#fd);
    this.#welcome?.(new GatehouseError(ErrorCode.CGID_UNAVAILABLE, reason));
    this.#welcome = null;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const entry of pending) {
      if (entry.resolveExit) entry.resolveExit(null);
      else entry.rejectSpawn(SpawnError.daemonUnavailable(entry.file, `the cgid daemon went away before starting the script: ${reason}`));
    }
    this.emit(
      'close',
      reason,
      pending.filter((entry) => entry.pid > 0).map((entry) => entry.pid),
    );
  }
}

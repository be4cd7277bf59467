/**
 * The CGI daemon (mod_cgid's design, done concurrently): a small process
 * that listens on ScriptSock and starts scripts for the front. It never
 * touches request or response bytes: each spawn order arrives with the
 * script's stdin, stdout and stderr attached (SCM_RIGHTS), which the daemon
 * dup2()s into the script and closes. Every connection is served
 * independently from the event loop (non-blocking sockets, no per-client
 * state machine that waits), so one slow front stalls nobody.
 *
 * The daemon reaps its scripts (pidfd), reports each exit to the connection
 * that asked, signals process groups on request (it alone knows whether a pid
 * is still its unreaped child), and kills a connection's scripts when that
 * connection closes (the front died) or when the daemon stops.
 */
import { randomBytes } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import path from 'node:path';
import { SpawnError } from '../spawn/spawner.js';
import {
  CGID_BATCH_DESCRIPTORS,
  CGID_KILL_GRACE_MS,
  CGID_READ_CHUNK_BYTES,
  CGID_STDIO_DESCRIPTORS,
  CGID_LISTEN_BACKLOG,
  CGID_STOP_POLL_MS,
  CGID_STOP_REAP_SLACK_MS,
} from '../limits.js';
import {
  AT_FDCWD,
  acceptConnection,
  closeDescriptor,
  createListener,
  identityAt,
  openAt,
  peerCredentials,
  receiveDescriptors,
  sendBytes,
  setNonBlocking,
  watchDescriptor,
  type DescriptorWatcher,
  type FileIdentity,
  watchChildExit,
  type ExitWatcher,
} from '../sys/index.js';
import { launchScript, type LaunchPolicy } from '../spawn/launcher.js';
import { signalScript } from '../spawn/posix-spawner.js';
import { daemonProof, decodeMessage, encodeMessage, FrameDecoder, secretsEqual, type CgidMessage } from './protocol.js';
import type { ScriptLimits, SpawnOrder } from '../spawn/order.js';
import { clearStaleSocket } from './socket-path.js';
import type { LogLevel } from '../log/index.js';

export interface DaemonOptions {
  socketPath: string;
  /** The instance token every spawn order must carry. */
  token: Buffer;
  /** One line per event; an error unless a level is given (the daemon's role, cgid, is in every line already). */
  log: (line: string, level?: LogLevel) => void;
  launch?: LaunchPolicy;
  /** Ceilings applied to every script whatever the order asks (0: none). */
  limits?: Partial<ScriptLimits>;
  /**
   * Owner of the socket file, and the one user besides root and the daemon's
   * own that may connect: the user gatehouse serve's front runs as once it
   * dropped root (the daemon itself may keep root for suexec).
   */
  socketOwner?: { uid: number; gid: number };
  /** The socket's mode from bind on (default 0600: only its owner connects). */
  socketMode?: number;
  killGraceMs?: number;
}

/** Signals a front may ask for; anything else is refused. */
const ALLOWED_SIGNALS = new Set(['SIGTERM', 'SIGKILL', 'SIGCONT', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGSTOP', 'SIGQUIT']);

interface RunningScript {
  pid: number;
  reaped: boolean;
  watcher: ExitWatcher;
  file: string;
}

export class CgidDaemon {
  readonly #options: DaemonOptions;
  readonly #connections = new Set<DaemonConnection>();
  #listenFd = -1;
  #watcher: DescriptorWatcher | null = null;
  #identity: FileIdentity | null = null;
  #stopped = false;
  /** Scripts of connections that already closed, still being terminated and reaped. */
  readonly #orphans = new Set<RunningScript>();

  constructor(options: DaemonOptions) {
    this.#options = options;
  }

  get socketPath(): string {
    return this.#options.socketPath;
  }

  /** Scripts started and not yet reaped. */
  get running(): number {
    let count = this.#orphans.size;
    for (const connection of this.#connections) count += connection.scripts.size;
    return count;
  }

  /** Checks the directory and the path, clears a stale socket, binds with mode 0600 from the start, and accepts. */
  start(): void {
    const socketPath = this.#options.socketPath;
    const owner = this.#options.socketOwner;
    clearStaleSocket(socketPath, owner?.uid);
    this.#listenFd = createListener(
      { kind: 'unix', path: socketPath },
      { backlog: CGID_LISTEN_BACKLOG, mode: this.#options.socketMode ?? 0o600, ...(owner ? { owner } : {}) },
    );
    // Accepted in a loop until EAGAIN: the listener must not block.
    setNonBlocking(this.#listenFd, true);
    const directoryFd = openAt(AT_FDCWD, path.dirname(socketPath), true);
    try {
      this.#identity = identityAt(directoryFd, path.basename(socketPath));
    } finally {
      closeDescriptor(directoryFd);
    }
    this.#watcher = watchDescriptor(this.#listenFd, () => this.#acceptAll());
  }

  #acceptAll(): void {
    for (;;) {
      let accepted;
      try {
        accepted = acceptConnection(this.#listenFd, { nonBlocking: true });
      } catch (error) {
        this.#options.log(`${this.socketPath}: ${(error as Error).message}`, 'error');
        return;
      }
      if (accepted === null) return;
      const { fd } = accepted;
      const ownUid = process.geteuid?.() ?? 0;
      const frontUid = this.#options.socketOwner?.uid ?? ownUid;
      const peer = peerCredentials(fd);
      if (peer.uid !== ownUid && peer.uid !== 0 && peer.uid !== frontUid) {
        this.#options.log(
          `refused a connection from uid ${peer.uid} (pid ${peer.pid}): only uid ${ownUid}${frontUid !== ownUid ? `, uid ${frontUid}` : ''} and root may start scripts`,
          'warn',
        );
        closeDescriptor(fd);
        continue;
      }
      const connection = new DaemonConnection(fd, this, peer.pid);
      this.#connections.add(connection);
    }
  }

  /** @internal */
  get options(): DaemonOptions {
    return this.#options;
  }

  /** @internal A connection closed: its remaining scripts are terminated, and still reaped here. */
  connectionClosed(connection: DaemonConnection): void {
    this.#connections.delete(connection);
    for (const script of connection.scripts.values()) {
      this.#orphans.add(script);
      this.#terminate(script);
    }
    connection.scripts.clear();
  }

  /** @internal A script started for a connection that closed meanwhile. */
  adoptOrphan(script: RunningScript): void {
    if (script.reaped) return;
    this.#orphans.add(script);
    this.#terminate(script);
  }

  /** @internal */
  orphanReaped(script: RunningScript): void {
    this.#orphans.delete(script);
  }

  #terminate(script: RunningScript): void {
    signalScript(script.pid, 'SIGTERM', () => script.reaped);
    signalScript(script.pid, 'SIGCONT', () => script.reaped);
    const timer = setTimeout(
      () => signalScript(script.pid, 'SIGKILL', () => script.reaped),
      this.#options.killGraceMs ?? CGID_KILL_GRACE_MS,
    );
    timer.unref();
  }

  /**
   * Stops accepting, closes every connection (terminating their scripts:
   * SIGTERM, SIGKILL after the grace), waits until all are reaped (bounded by
   * the grace plus a second), and removes the socket if it is still ours.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#watcher?.close();
    if (this.#listenFd >= 0) closeDescriptor(this.#listenFd);
    this.#removeSocket();
    for (const connection of [...this.#connections]) connection.close();
    const deadline = Date.now() + (this.#options.killGraceMs ?? CGID_KILL_GRACE_MS) + CGID_STOP_REAP_SLACK_MS;
    while (this.running > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, CGID_STOP_POLL_MS));
  }

  /** Removes the socket file only if it is the one we bound (another daemon may have replaced it). */
  #removeSocket(): void {
    if (!this.#identity) return;
    try {
      const directoryFd = openAt(AT_FDCWD, path.dirname(this.socketPath), true);
      try {
        const now = identityAt(directoryFd, path.basename(this.socketPath));
        if (now && now.dev === this.#identity.dev && now.ino === this.#identity.ino) unlinkSync(this.socketPath);
      } finally {
        closeDescriptor(directoryFd);
      }
    } catch {
      /* gone already */
    }
  }
}

class DaemonConnection {
  readonly scripts = new Map<number, RunningScript>();
  readonly #fd: number;
  readonly #daemon: CgidDaemon;
  readonly #peerPid: number;
  readonly #decoder = new FrameDecoder();
  readonly #watcher: DescriptorWatcher;
  /** Descriptors received and not yet claimed by a spawn order, in arrival order. */
  readonly #descriptors: number[] = [];
  /** Spawn orders whose posix_spawn is still running on a worker thread. */
  readonly #starting = new Set<number>();
  #output: Buffer[] = [];
  #welcomed = false;
  #closed = false;

  constructor(fd: number, daemon: CgidDaemon, peerPid: number) {
    this.#fd = fd;
    this.#daemon = daemon;
    this.#peerPid = peerPid;
    this.#watcher = watchDescriptor(fd, (event) => {
      if (event.writable) this.#flush();
      if (event.readable || event.disconnect) this.#read();
    });
  }

  #read(): void {
    while (!this.#closed) {
      let received;
      try {
        received = receiveDescriptors(this.#fd, CGID_READ_CHUNK_BYTES, CGID_BATCH_DESCRIPTORS);
      } catch (error) {
        this.#fail(`reading from the front (pid ${this.#peerPid}): ${(error as Error).message}`);
        return;
      }
      if (received.kind === 'again') return;
      if (received.kind === 'eof') {
        this.close();
        return;
      }
      this.#descriptors.push(...received.fds);
      const { frames, error } = this.#decoder.push(received.payload);
      for (const frame of frames) {
        const message = decodeMessage(frame);
        if ('error' in message) {
          this.#fail(message.error);
          return;
        }
        this.#handle(message);
        if (this.#closed) return;
      }
      if (error) {
        this.#fail(error.error);
        return;
      }
    }
  }

  #handle(message: CgidMessage): void {
    switch (message.type) {
      case 'hello':
        this.#welcomed = true;
        this.#send({ type: 'welcome', pid: process.pid, proof: daemonProof(this.#daemon.options.token, message.nonce) });
        return;
      case 'spawn':
        this.#spawn(message.id, message.token, message.order);
        return;
      case 'signal': {
        const script = this.scripts.get(message.id);
        if (!script) return; // already exited: its EXITED is on the way
        if (!ALLOWED_SIGNALS.has(message.signal)) {
          this.#daemon.options.log(`the front (pid ${this.#peerPid}) asked for signal ${JSON.stringify(message.signal)}: refused`, 'warn');
          return;
        }
        signalScript(script.pid, message.signal as NodeJS.Signals, () => script.reaped);
        return;
      }
      default:
        this.#fail(`unexpected ${message.type} message from the front`);
    }
  }

  #spawn(id: number, token: Buffer, requested: SpawnOrder): void {
    const stdio = this.#descriptors.splice(0, CGID_STDIO_DESCRIPTORS);
    const closeStdio = () => {
      for (const fd of stdio) closeDescriptor(fd);
    };
    if (!this.#welcomed || !secretsEqual(token, this.#daemon.options.token)) {
      closeStdio();
      this.#send({
        type: 'error',
        message: 'instance token mismatch: this daemon was started by another gatehouse front; connect to your own daemon',
      });
      this.#daemon.options.log(`spawn order with a wrong instance token from pid ${this.#peerPid}: connection closed`, 'warn');
      this.#closeAfterFlush();
      return;
    }
    if (stdio.length !== CGID_STDIO_DESCRIPTORS) {
      closeStdio();
      this.#fail(`spawn order ${id} came with ${stdio.length} descriptors instead of ${CGID_STDIO_DESCRIPTORS}`);
      return;
    }
    if (this.scripts.has(id) || this.#starting.has(id)) {
      closeStdio();
      this.#fail(`spawn order ${id} reuses the id of a script still running`);
      return;
    }
    const order = { ...requested, limits: ceiling(requested.limits, this.#daemon.options.limits) };
    this.#starting.add(id);
    launchScript(order, stdio as [number, number, number], { ...this.#daemon.options.launch, log: this.#daemon.options.log }).then(
      (pid) => {
        this.#starting.delete(id);
        closeStdio();
        this.#started(id, pid, order.file);
      },
      (error: unknown) => {
        this.#starting.delete(id);
        closeStdio();
        const spawnError = error instanceof SpawnError ? error : new SpawnError(order.file, 'EUNKNOWN', String(error));
        this.#send({ type: 'failed', id, errno: spawnError.errno ?? 'EIO', message: spawnError.detail });
      },
    );
  }

  #started(id: number, pid: number, file: string): void {
    const script: RunningScript = { pid, reaped: false, file, watcher: undefined as unknown as ExitWatcher };
    script.watcher = watchChildExit(pid, (exit) => {
      script.reaped = true;
      if (this.scripts.get(id) === script) {
        this.scripts.delete(id);
        this.#send({ type: 'exited', id, code: exit.code, signal: exit.signal });
      } else this.#daemon.orphanReaped(script);
    });
    if (this.#closed) {
      // The front went away while the script was being started: it is terminated like the others.
      this.#daemon.adoptOrphan(script);
      return;
    }
    this.scripts.set(id, script);
    this.#send({ type: 'spawned', id, pid });
  }

  /**
   * Queues a message; the queue is written once per event-loop turn, so the
   * answers and exits produced in one turn (several scripts ending together)
   * leave in one send(2) and wake the front once.
   */
  #send(message: CgidMessage): void {
    if (this.#closed) return;
    this.#output.push(encodeMessage(message));
    if (this.#output.length === 1 && !this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        this.#flush();
      });
    }
  }

  #flushScheduled = false;

  #flush(): void {
    if (this.#output.length > 1) this.#output = [Buffer.concat(this.#output)];
    while (this.#output.length > 0 && !this.#closed) {
      const head = this.#output[0]!;
      let sent: number;
      try {
        sent = sendBytes(this.#fd, head);
      } catch (error) {
        this.#fail(`writing to the front (pid ${this.#peerPid}): ${(error as Error).message}`);
        return;
      }
      if (sent === 0) {
        this.#watcher.want(true);
        return;
      }
      if (sent < head.length) this.#output[0] = head.subarray(sent);
      else this.#output.shift();
    }
    this.#watcher.want(false);
    if (this.#closeWhenFlushed) this.close();
  }

  #closeWhenFlushed = false;
  #closeAfterFlush(): void {
    this.#closeWhenFlushed = true;
    if (this.#output.length === 0) this.close();
  }

  #fail(reason: string): void {
    this.#daemon.options.log(`connection from the front (pid ${this.#peerPid}) closed: ${reason}`, 'error');
    this.#send({ type: 'error', message: reason });
    this.#closeAfterFlush();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    closeDescriptor(this.#fd);
    for (const fd of this.#descriptors.splice(0)) closeDescriptor(fd);
    this.#daemon.connectionClosed(this);
  }
}

/** Each limit is the smaller of the order's and the daemon's (0 meaning none on either side). */
function ceiling(asked: ScriptLimits, daemon: Partial<ScriptLimits> | undefined): ScriptLimits {
  if (!daemon) return asked;
  const pick = (a: number, b: number | undefined) => (!b ? a : !a ? b : Math.min(a, b));
  return {
    cpuSeconds: pick(asked.cpuSeconds, daemon.cpuSeconds),
    memoryBytes: pick(asked.memoryBytes, daemon.memoryBytes),
    processes: pick(asked.processes, daemon.processes),
    openFiles: pick(asked.openFiles, daemon.openFiles),
    outputBytes: pick(asked.outputBytes, daemon.outputBytes),
  };
}

/** A fresh random instance token. */
export function newInstanceToken(bytes: number): Buffer {
  return randomBytes(bytes);
}

/**
 * What the kernel says about the pool's listening socket: how many
 * connections wait in its listen queue (what php-fpm calls the listen
 * queue), and which sockets are connections accepted from it, so that the
 * manager can tell whether a worker is serving one.
 *
 * Unix sockets: NETLINK_SOCK_DIAG. A listening socket's UNIX_DIAG_RQLEN is
 * its queue and backlog; an accepted socket carries the listener's name, so
 * a dump of the unix sockets bearing that name (other than the listener)
 * lists the pool's connections. TCP: TCP_INFO on the listener gives the
 * accept queue and backlog; /proc/net/tcp and tcp6 list the sockets on the
 * listener's port with their inodes.
 *
 * A worker is "busy" when its process tree holds one of those connections
 * (/proc/PID/fd). When the kernel cannot say which sockets are the pool's
 * (no sock_diag), any socket the worker was not started with counts, which
 * errs on the busy side (a database connection looks like a client).
 */
import { fstatSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { KFCGI_FREEZE_WAIT_MS } from '../limits.js';
import { type ProcView, SockDiag, UnixDiagShow, UnixState, parseProcNetTcp, tcpListenQueue } from '../sys/index.js';
import type { Listener } from './listener.js';
import type { WorkerProcess } from './worker-process.js';

export interface ListenQueue {
  /** Connections waiting for accept(). */
  queued: number;
  /** The backlog the kernel applies. */
  limit: number;
}

export class SocketView {
  readonly #listener: Listener;
  readonly #proc: ProcView;
  readonly #diag: SockDiag | null;
  readonly #inode: number;
  /** The listener's name as sock_diag reports it (accepted sockets share it). */
  #name: Buffer | null = null;

  constructor(listener: Listener, proc: ProcView) {
    this.#listener = listener;
    this.#proc = proc;
    this.#inode = fstatSync(listener.fd).ino;
    let diag: SockDiag | null = null;
    if (listener.address.kind === 'unix') {
      try {
        diag = new SockDiag();
        this.#name = diag.unixSocket(this.#inode, UnixDiagShow.NAME)?.name ?? null;
      } catch {
        diag?.close();
        diag = null;
      }
    }
    this.#diag = diag;
  }

  /** How it reads the queue, for the start-up log line. */
  describe(): string {
    if (this.#listener.address.kind === 'tcp') return 'listen queue from TCP_INFO, connections from /proc/net/tcp';
    return this.#diag ? 'listen queue and connections from sock_diag' : 'no sock_diag: listen queue unknown';
  }

  /** The listen queue now, or null when the kernel does not say. */
  queue(): ListenQueue | null {
    if (this.#listener.address.kind === 'tcp') return tcpListenQueue(this.#listener.fd);
    if (!this.#diag) return null;
    try {
      const info = this.#diag.unixSocket(this.#inode, UnixDiagShow.RQLEN);
      if (info?.receiveQueue === undefined || info.sendQueue === undefined) return null;
      return { queued: info.receiveQueue, limit: info.sendQueue };
    } catch {
      return null;
    }
  }

  /** The connections accepted from the listener ("socket:[inode]"), or null when the kernel does not say. */
  connections(): Set<string> | null {
    const address = this.#listener.address;
    if (address.kind === 'tcp') {
      const found = new Set<string>();
      let readable = false;
      for (const file of ['net/tcp', 'net/tcp6']) {
        const text = this.#proc.read(file);
        if (text === null) continue;
        readable = true;
        for (const inode of parseProcNetTcp(text, address.port)) found.add(inode);
      }
      return readable ? found : null;
    }
    if (!this.#diag || this.#name === null) return null;
    try {
      const name = this.#name;
      const found = new Set<string>();
      for (const socket of this.#diag.unixSockets(UnixDiagShow.NAME, ~(1 << UnixState.LISTEN) >>> 0)) {
        if (socket.inode !== this.#inode && socket.name?.equals(name)) found.add(`socket:[${socket.inode}]`);
      }
      return found;
    } catch {
      return null;
    }
  }

  /**
   * Records the sockets a worker was started with (its listening socket and
   * the log pipes, which libuv makes as socket pairs): the fallback for
   * telling a connection apart when the kernel cannot.
   */
  recordGivenSockets(worker: WorkerProcess): void {
    const sockets = this.#proc.sockets(worker.pid);
    worker.givenSockets = sockets ? new Set(sockets.values()) : null;
  }

  /** How many of the pool's connections the worker's process tree holds; null when unknown. */
  connectionsHeld(worker: WorkerProcess, connections: Set<string> | null = this.connections()): number | null {
    const held = this.#proc.treeSockets(worker.pid);
    if (held === null) return null;
    let count = 0;
    if (connections !== null) {
      for (const socket of held) if (connections.has(socket)) count += 1;
      return count;
    }
    if (worker.givenSockets === null) return null;
    for (const socket of held) if (!worker.givenSockets.has(socket)) count += 1;
    return count;
  }

  /**
   * Freezes the worker's process group with SIGSTOP when it serves no
   * connection, so that it can be stopped without losing one: a stopped
   * process does not accept (a blocked accept() that a connection woke
   * takes that connection before it stops, and is then seen busy), so new
   * connections wait in the listen queue for the other workers. Returns
   * false, and lets it run on, when it is busy or cannot be read.
   */
  async freezeIfIdle(worker: WorkerProcess): Promise<boolean> {
    worker.signal('SIGSTOP');
    const deadline = Date.now() + KFCGI_FREEZE_WAIT_MS;
    let stopped = this.#allStopped(worker.pid);
    while (worker.running && !stopped && Date.now() < deadline) {
      await sleep(1);
      stopped = this.#allStopped(worker.pid);
    }
    // Not frozen in time (a process in uninterruptible sleep): it might still accept, so it counts as busy.
    const idle = worker.running && stopped && this.connectionsHeld(worker) === 0;
    if (!idle) worker.signal('SIGCONT');
    return idle;
  }

  #allStopped(pid: number): boolean {
    return this.#proc.tree(pid).every((member) => {
      const state = this.#proc.state(member);
      return state === null || state === 'T' || state === 'Z';
    });
  }

  close(): void {
    this.#diag?.close();
  }
}

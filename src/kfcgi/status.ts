/**
 * Pool status on request: a unix socket (-S) that answers every connection
 * with one JSON object and closes; `gatehouse kfcgi status statuspath` reads
 * it and prints it.
 */
import net from 'node:net';
import { chownSync } from 'node:fs';
import { KFCGI_SOCKET_MODE, KFCGI_STATUS_BACKLOG, KFCGI_STATUS_READ_TIMEOUT_MS } from '../limits.js';
import { createListener, closeDescriptor, type UserEntry } from '../sys/index.js';
import { clearStaleSocket, OwnedSocketPath } from './listener.js';
import type { PoolStatus } from './supervisor.js';
import { ErrorCode, GatehouseError } from '../errors.js';

export interface StatusServer {
  owned: OwnedSocketPath;
  /** Starts answering (after the jail: the socket was bound before). */
  serve(status: () => PoolStatus): void;
  close(): void;
}

/** Binds the status socket now (before the jail), mode 0660, owned by `owner`. */
export function openStatusSocket(path: string, owner: UserEntry | null, notes: string[]): StatusServer {
  const note = clearStaleSocket(path, 'the status socket path');
  if (note) notes.push(note);
  const fd = createListener({ kind: 'unix', path }, { backlog: KFCGI_STATUS_BACKLOG, mode: KFCGI_SOCKET_MODE });
  if (owner) chownSync(path, owner.uid, owner.gid);
  const owned = new OwnedSocketPath(path);
  let server: net.Server | null = null;
  return {
    owned,
    serve(status) {
      server = net.createServer((socket) => {
        socket.on('error', () => undefined);
        socket.end(`${JSON.stringify(status())}\n`);
      });
      server.listen({ fd });
    },
    close() {
      if (server) server.close();
      else closeDescriptor(fd);
    },
  };
}

/** Reads the status from a running kfcgi's status socket. */
export function readStatus(path: string, timeoutMs = KFCGI_STATUS_READ_TIMEOUT_MS): Promise<PoolStatus> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () =>
      socket.destroy(new GatehouseError(ErrorCode.STATUS_UNAVAILABLE, `no answer from ${path} within ${timeoutMs} ms`)),
    );
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (error) =>
      reject(
        new GatehouseError(
          ErrorCode.STATUS_UNAVAILABLE,
          `cannot read kfcgi status from ${path}: ${error.message}; is kfcgi running with -S ${path}?`,
        ),
      ),
    );
    socket.on('end', () => {
      try {
        resolve(JSON.parse(text) as PoolStatus);
      } catch {
        reject(
          new GatehouseError(ErrorCode.STATUS_UNAVAILABLE, `${path} answered something that is not kfcgi status: ${text.slice(0, 80)}`),
        );
      }
    });
  });
}

export function formatStatus(status: PoolStatus): string {
  const show = (value: number | null | undefined) => (value === null || value === undefined ? '-' : String(value));
  const causes = Object.entries(status.respawnCauses ?? {})
    .map(([cause, count]) => `${cause}: ${count}`)
    .join(', ');
  const lines = [
    `pid:        ${status.pid}`,
    `mode:       ${status.mode} (${status.minWorkers}..${status.maxWorkers} workers)`,
    `listen:     ${status.listen}`,
    `started:    ${status.startedAt}`,
    `workers:    ${status.workers} (busy ${show(status.busy)}, idle ${show(status.idle)}, starting ${show(status.starting)})`,
    `pids:       ${status.pids.join(' ')}`,
    `accepted:   ${show(status.accepted)}   handed over: ${show(status.handedOver)}`,
    `max reached: ${show(status.maxReached)}   pool full: ${show(status.poolFull)}`,
    `queued:     ${show(status.queued)}`,
    `respawns:   ${status.respawns}${causes ? ` (${causes})` : ''}   restarts: ${status.restarts}   recycled: ${status.recycled}   released: ${show(status.released)}`,
    `backlog:    ${status.backlog.configured} (queued ${show(status.backlog.queued)}, most ${show(status.backlog.maxQueued)}, limit ${show(status.backlog.limit)})`,
  ];
  if (status.processes?.length) {
    lines.push('', '  pid      state     cpu s     rss MiB  conns  started');
    for (const worker of status.processes) {
      const rss = worker.rssBytes === null ? '-' : (worker.rssBytes / 1048576).toFixed(1);
      const cpu = worker.cpuSeconds === null ? '-' : worker.cpuSeconds.toFixed(2);
      lines.push(
        `  ${String(worker.pid).padEnd(8)} ${(worker.state ?? '-').padEnd(9)} ${cpu.padStart(7)}  ${rss.padStart(9)}  ${show(worker.connections).padStart(5)}  ${worker.startedAt}`,
      );
    }
  }
  return lines.join('\n');
}

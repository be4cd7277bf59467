/**
 * The status page, php-fpm's idea for every gatehouse process: one JSON
 * document (the metrics listener's /status) with a row per pool, and
 * `gatehouse status ADDRESS`, which reads it and prints a short table.
 *
 * A pool is whatever does the work and can run full: the CGI scripts of
 * serve or cgid --fastcgi (slots under max-scripts), the connections to a
 * FastCGI upstream, the workers of a kfcgi pool. Each row says, in the same
 * words for all of them: active (working now), idle (ready, doing nothing),
 * queue (waiting for one of them), max (the size limit), max reached (times
 * the pool was full), as php-fpm's "active processes", "idle processes",
 * "listen queue" and "max children reached" do.
 *
 * ADDRESS is a metrics address (HOST:PORT or unix:PATH) or a kfcgi status
 * socket (-S), which answers its own JSON on connect; both are read with one
 * request. An address that turns out to be a FastCGI socket (a kfcgi pool's
 * -s, given by mistake) is recognised and named.
 */
import net from 'node:net';
import { ErrorCode, GatehouseError } from '../errors.js';
import { STATUS_MAX_BYTES, STATUS_READ_TIMEOUT_MS } from '../limits.js';
import { parseListenAddress, STATUS_ADDRESS } from '../options/listen-address.js';
import { probeCapabilities } from '../fastcgi/client/probe.js';
import { gatehouseVersion, type MetricsCommand } from './registry.js';

export interface StatusPool {
  /** What the pool is: `cgi scripts`, `fastcgi unix:/run/php.sock`, `kfcgi unix:/run/app.sock`. */
  name: string;
  /** Working now: scripts running, connections carrying a request, busy workers; null when unknown. */
  active: number | null;
  /** Ready and unused: free script slots, idle connections, idle workers. */
  idle: number | null;
  /** Waiting for one: scripts queued, requests waiting for a connection, connections in the listen queue. */
  queue: number | null;
  /** The pool's limit: max-scripts, the upstream's connection cap, kfcgi's -N. */
  max: number | null;
  /** Times the pool was full: requests refused for a full script queue, requests that starved for a connection, kfcgi's maxReached. */
  maxReached: number | null;
}

/*
 * A kfcgi pool's own status: what its status socket (-S) answers and its
 * document's `kfcgi` field carries. Defined here with the document, below
 * src/kfcgi, whose pools fill it in (status()) and whose metrics listener
 * serves it.
 */

/** How the manager sees a worker; the manual (STATUS) says how each is known. */
export type WorkerState = 'starting' | 'idle' | 'busy';

/** One worker in the status. */
export interface WorkerStatus {
  pid: number;
  /** null when it cannot be told (no /proc). */
  state: WorkerState | null;
  startedAt: string;
  /** CPU seconds of the worker's process tree, children it reaped included; null without /proc. */
  cpuSeconds: number | null;
  /** Resident memory of the worker's process tree; null without /proc. */
  rssBytes: number | null;
  /** Connections it holds: seen by the kernel (fixed, dynamic), or handed over and not yet returned (variable). */
  connections: number | null;
  /** Variable pool: connections handed to it so far. */
  handed?: number;
}

/** Pool status, as the status socket and `gatehouse kfcgi status` report it (fields documented in the manual). */
export interface PoolStatus {
  pid: number;
  mode: 'fixed' | 'variable' | 'dynamic';
  listen: string;
  startedAt: string;
  workers: number;
  minWorkers: number;
  maxWorkers: number;
  /** Workers serving a connection; null when unknown (no /proc). */
  busy: number | null;
  idle: number | null;
  /** Workers started and not yet seen waiting for a connection. */
  starting: number | null;
  pids: number[];
  /** Connections the manager accepted (variable pool); null in fixed and dynamic pools, where workers accept. */
  accepted: number | null;
  /** Connections handed to workers (variable pool). */
  handedOver: number | null;
  /** Connections that found every worker busy at -N (variable pool). */
  poolFull: number | null;
  /** Times the pool was at its largest size with connections waiting (episodes, counted once each). */
  maxReached: number;
  /** Accepted connections waiting for a free worker (variable pool). */
  queued: number | null;
  /** Workers started again after an unexpected exit. */
  respawns: number;
  /** The unexpected exits respawns answered, by cause: "exit N", "signal NAME", "spawn error". */
  respawnCauses: Record<string, number>;
  /** SIGHUP restarts done. */
  restarts: number;
  /** Workers replaced after -R connections. */
  recycled: number;
  /** Workers released after -w seconds idle (variable and dynamic pools). */
  released: number;
  /** The listen queue: the backlog asked for, connections waiting now, the kernel's limit, the most seen waiting. */
  backlog: { configured: number; queued: number | null; limit: number | null; maxQueued: number | null };
  processes: WorkerStatus[];
}

export interface StatusDocument {
  command: MetricsCommand;
  version: string;
  pid: number;
  startedAt: string;
  uptimeSeconds: number;
  pools: StatusPool[];
  /** kfcgi: the pool's full status, as its status socket (-S) answers it. */
  kfcgi?: PoolStatus;
  /**
   * serve --workers: the pools are the workers' rows added up, of the workers
   * that answered (pid and uptime are the supervisor's).
   */
  workers?: { configured: number; answered: number };
}

/** This process's document: its command, version, pid and uptime, and its pools. */
export function statusDocument(
  command: MetricsCommand,
  pools: StatusPool[],
  extra: Pick<StatusDocument, 'kfcgi' | 'workers'> = {},
): StatusDocument {
  const uptime = process.uptime();
  return {
    command,
    version: gatehouseVersion(),
    pid: process.pid,
    startedAt: new Date(Date.now() - uptime * 1000).toISOString(),
    uptimeSeconds: Math.floor(uptime),
    pools,
    ...extra,
  };
}

/** A kfcgi pool's row, from its status: busy and idle workers, the listen queue (plus, variable pools, accepted connections waiting). */
export function kfcgiPoolRow(status: PoolStatus): StatusPool {
  const waiting = status.backlog.queued === null && status.queued === null ? null : (status.backlog.queued ?? 0) + (status.queued ?? 0);
  return {
    name: `kfcgi ${status.listen} (${status.mode})`,
    active: status.busy,
    idle: status.idle,
    queue: waiting,
    max: status.maxWorkers,
    maxReached: status.maxReached,
  };
}

/** What a kfcgi status socket (-S) answers, read as a status document. */
export function fromKfcgiStatus(status: PoolStatus): StatusDocument {
  const started = Date.parse(status.startedAt);
  return {
    command: 'kfcgi',
    version: 'unknown',
    pid: status.pid,
    startedAt: status.startedAt,
    uptimeSeconds: Number.isFinite(started) ? Math.max(0, Math.floor((Date.now() - started) / 1000)) : 0,
    pools: [kfcgiPoolRow(status)],
    kfcgi: status,
  };
}

/** 3d 04h, 2h 03m, 4m 05s, 12s. */
export function formatUptime(seconds: number): string {
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  if (d > 0) return `${d}d ${two(h)}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(s)}s`;
  return `${s}s`;
}

/** The short table `gatehouse status` prints. */
export function formatStatusTable(document: StatusDocument): string {
  const show = (value: number | null) => (value === null ? '-' : String(value));
  const uptime = formatUptime(document.uptimeSeconds);
  const header = ['POOL', 'ACTIVE', 'IDLE', 'QUEUE', 'MAX REACHED', 'UPTIME'];
  const rows = document.pools.map((pool) => [
    pool.name,
    show(pool.active),
    show(pool.idle),
    show(pool.queue),
    show(pool.maxReached),
    uptime,
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [
    `gatehouse ${document.command}${document.version !== 'unknown' ? ` ${document.version}` : ''}, pid ${document.pid}, started ${document.startedAt}${
      document.workers ? `; workers: ${document.workers.answered} of ${document.workers.configured} answered` : ''
    }`,
    line(header),
    ...rows.map(line),
    ...(document.pools.length === 0 ? ['(no pools: nothing that runs scripts or talks to FastCGI applications is configured)'] : []),
  ].join('\n');
}

/** A kfcgi pool's workers, one line each (`gatehouse status --full`). */
export function formatKfcgiWorkers(status: PoolStatus): string {
  const show = (value: number | null | undefined) => (value === null || value === undefined ? '-' : String(value));
  const causes = Object.entries(status.respawnCauses ?? {})
    .map(([cause, count]) => `${cause}: ${count}`)
    .join(', ');
  const lines = [
    `mode ${status.mode} (${status.minWorkers}..${status.maxWorkers} workers), ${status.workers} running; accepted ${show(status.accepted)}, handed over ${show(status.handedOver)}, pool full ${show(status.poolFull)}`,
    `respawns ${status.respawns}${causes ? ` (${causes})` : ''}, restarts ${status.restarts}, recycled ${status.recycled}, released ${show(status.released)}`,
    `backlog ${status.backlog.configured} (queued ${show(status.backlog.queued)}, most ${show(status.backlog.maxQueued)}, limit ${show(status.backlog.limit)})`,
  ];
  if (status.processes?.length) {
    lines.push('PID       STATE     CPU S    RSS MIB  CONNS  STARTED');
    for (const worker of status.processes) {
      const rss = worker.rssBytes === null ? '-' : (worker.rssBytes / 1048576).toFixed(1);
      const cpu = worker.cpuSeconds === null ? '-' : worker.cpuSeconds.toFixed(2);
      lines.push(
        `${String(worker.pid).padEnd(9)} ${(worker.state ?? '-').padEnd(9)} ${cpu.padStart(5)}  ${rss.padStart(9)}  ${show(worker.connections).padStart(5)}  ${worker.startedAt}`,
      );
    }
  }
  return lines.join('\n');
}

function unavailable(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.STATUS_UNAVAILABLE, message);
}

/** Where `text` (a metrics address, a kfcgi -S path) connects to. */
function connectOptions(text: string): { options: net.NetConnectOpts; unix: boolean } {
  const address = parseListenAddress(text, STATUS_ADDRESS);
  if (typeof address === 'string') throw unavailable(`not an address: ${address}`);
  if (address.kind === 'unix') return { options: { path: address.path }, unix: true };
  if (address.kind === 'tcp') return { options: { host: address.host, port: address.port }, unix: false };
  throw unavailable(`${text}: give a metrics address (HOST:PORT, unix:PATH) or a kfcgi status socket path`);
}

/** One request on a fresh connection; everything the server sent until it closed. */
function exchange(options: net.NetConnectOpts, request: string, timeoutMs: number): Promise<{ bytes: Buffer; error: Error | null }> {
  return new Promise((resolve) => {
    const socket = net.connect(options);
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;
    const finish = (error: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ bytes: Buffer.concat(chunks, length), error });
    };
    const timer = setTimeout(() => finish(unavailable(`no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      length += chunk.length;
      if (length > STATUS_MAX_BYTES) return finish(unavailable(`the answer is larger than ${STATUS_MAX_BYTES} bytes`));
      chunks.push(chunk);
    });
    socket.on('end', () => finish(null));
    // A reset after the answer arrived (a kfcgi status socket closes with our request unread) still counts as the answer.
    socket.on('error', (error) => finish(length > 0 ? null : error));
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isStatusDocument(value: unknown): value is StatusDocument {
  return typeof value === 'object' && value !== null && 'command' in value && Array.isArray((value as StatusDocument).pools);
}

function isKfcgiStatus(value: unknown): value is PoolStatus {
  return typeof value === 'object' && value !== null && 'mode' in value && 'backlog' in value && 'pids' in value;
}

/**
 * Reads the status of the gatehouse process at `text`: serve's, cgid
 * --fastcgi's or kfcgi's metrics address, or kfcgi's status socket. Throws
 * GatehouseError STATUS_UNAVAILABLE saying what was found instead.
 */
export async function fetchStatus(text: string, timeoutMs = STATUS_READ_TIMEOUT_MS): Promise<StatusDocument> {
  const { options } = connectOptions(text);
  // A kfcgi status socket answers on connect and ignores this; a metrics listener answers it.
  const request = 'GET /status HTTP/1.1\r\nHost: gatehouse\r\nAccept: application/json\r\nConnection: close\r\n\r\n';
  const { bytes, error } = await exchange(options, request, timeoutMs);
  if (error && bytes.length === 0) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ECONNREFUSED' || code === 'ENOENT')
      throw unavailable(`cannot connect to ${text} (${code}): is gatehouse running with this metrics address, or kfcgi with -S ${text}?`);
    // A timeout or a reset goes on to the FastCGI question below; anything else ends here.
    if (!(error instanceof GatehouseError) && code !== 'ECONNRESET' && code !== 'EPIPE')
      throw unavailable(`cannot read ${text}: ${error.message}`);
  }
  const answer = bytes.toString('utf8');
  if (answer.startsWith('{')) {
    const value = parseJson(answer);
    if (isKfcgiStatus(value)) return fromKfcgiStatus(value);
    if (isStatusDocument(value)) return value;
  }
  if (answer.startsWith('HTTP/1.')) {
    const statusCode = Number(answer.slice(9, 12));
    const bodyStart = answer.indexOf('\r\n\r\n');
    const value = bodyStart === -1 ? undefined : parseJson(answer.slice(bodyStart + 4));
    if (statusCode === 200 && isStatusDocument(value)) return value;
    if (statusCode === 503) throw unavailable(`${text} is a gatehouse metrics address that is still starting (503); try again in a moment`);
    throw unavailable(
      `${text} answers HTTP (${answer.slice(0, answer.indexOf('\r\n'))}) but not gatehouse status: point at the metrics address (serve's metrics key, cgid --metrics, kfcgi -M), not the public listener`,
    );
  }
  // Nothing we know: a FastCGI application reads our request as a broken record and closes, or waits. Ask it as FastCGI.
  if (bytes.length === 0 || bytes[0] === 1) {
    const capabilities = await probeCapabilities({ connectOptions: options, label: text, isUnix: 'path' in options }, timeoutMs).result;
    if (capabilities !== null || bytes[0] === 1)
      throw unavailable(
        `${text} is a FastCGI socket (a kfcgi pool's main socket, -s?), not a status address: start kfcgi with -S statuspath (or -M for metrics) and run gatehouse status on that`,
      );
  }
  throw unavailable(
    bytes.length === 0
      ? `${text} closed the connection without an answer: it is not a gatehouse metrics address or kfcgi status socket (-S)`
      : `${text} answered something that is not gatehouse status: ${JSON.stringify(answer.slice(0, 60))}`,
  );
}

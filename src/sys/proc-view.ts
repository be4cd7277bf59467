/**
 * What gatehouse reads of other processes in /proc: kfcgi's manager of its
 * workers, serve's metrics of the cgid daemon it started. Through a
 * descriptor of /proc opened before the jail (the jail rarely has /proc;
 * openat() on that descriptor keeps working inside it). A kfcgi worker is a
 * process tree: php-cgi with PHP_FCGI_CHILDREN and fcgiwrap fork, and their
 * children do the work, so its CPU, memory and connections are summed over
 * the worker and its descendants (usage, treeSockets); a single process's own
 * numbers are processUsage's.
 *
 * The parsers are pure and exported for the unit tests.
 */
import { closeSync, readFileSync, constants as fsConstants, openSync } from 'node:fs';
import { KFCGI_PROCESS_TREE_MAX } from '../limits.js';
import { clockTicksPerSecond, listDirectoryAt, openAt, pageSize, readLinkAt } from './index.js';

/** The fields of /proc/PID/stat the manager uses. */
export interface ProcessStat {
  /** R running, S sleeping, D disk wait, T stopped, Z zombie, ... */
  state: string;
  ppid: number;
  pgrp: number;
  /** utime + stime of every thread, in clock ticks. */
  cpuTicks: number;
  /** cutime + cstime: CPU of the children it has reaped, in clock ticks. */
  childCpuTicks: number;
  /** Resident pages. */
  rssPages: number;
}

/**
 * Parses /proc/PID/stat. The command name (field 2) is in parentheses and
 * may hold spaces and parentheses itself, so fields are counted from the
 * last ')'. Returns null for text that is not a stat line.
 */
export function parseProcStat(text: string): ProcessStat | null {
  const close = text.lastIndexOf(')');
  if (close === -1) return null;
  // Field 3 (state) is fields[0]: field N is fields[N - 3].
  const fields = text
    .slice(close + 2)
    .trim()
    .split(' ');
  if (fields.length < 22) return null;
  const number = (field: number) => Number(fields[field - 3]);
  const stat = {
    state: fields[0]!,
    ppid: number(4),
    pgrp: number(5),
    cpuTicks: number(14) + number(15),
    childCpuTicks: number(16) + number(17),
    rssPages: number(24),
  };
  return Object.values(stat).every((value) => typeof value === 'string' || Number.isFinite(value)) ? stat : null;
}

/** The first field of /proc/PID/schedstat: nanoseconds the task (the main thread) ran. */
export function parseSchedstat(text: string): number | null {
  const value = Number(text.split(' ')[0]);
  return Number.isFinite(value) ? value : null;
}

/**
 * Inodes ("socket:[N]", as /proc/PID/fd shows them) of the TCP sockets in
 * /proc/net/tcp or tcp6 text whose local port is `port` and that are not
 * listening: the connections accepted from a listener on that port (ones
 * still in its accept queue have inode 0 and are left out).
 */
export function parseProcNetTcp(text: string, port: number): string[] {
  const inodes: string[] = [];
  const LISTEN = '0A';
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const local = fields[1]!;
    const localPort = Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
    if (localPort !== port || fields[3] === LISTEN || fields[9] === '0') continue;
    inodes.push(`socket:[${fields[9]}]`);
  }
  return inodes;
}

/** One process's own CPU and memory. */
export interface ProcessUsage {
  /** utime + stime, in seconds. */
  cpuSeconds: number;
  /** Resident memory. */
  rssBytes: number;
}

/** CPU and memory of a worker's process tree. */
export interface TreeUsage {
  /** The worker and its live descendants. */
  processes: number;
  /** CPU seconds of the tree, including children it reaped (utime+stime+cutime+cstime). */
  cpuSeconds: number;
  /**
   * A value that changes whenever the tree used any CPU: clock ticks are
   * 10 ms, so the nanoseconds each process's main thread ran (schedstat) are
   * added, and a worker serving a few cheap requests still shows as used.
   */
  cpuSignature: string;
  /** Resident memory summed over the tree (pages shared between them counted once per process). */
  rssBytes: number;
}

export class ProcView {
  readonly #fd: number | null;

  constructor() {
    let fd: number | null = null;
    try {
      fd = openSync('/proc', fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    } catch {
      fd = null;
    }
    this.#fd = fd;
  }

  get available(): boolean {
    return this.#fd !== null;
  }

  /** A file under /proc as text, or null when it cannot be read (the process is gone, no /proc). */
  read(path: string): string | null {
    if (this.#fd === null) return null;
    try {
      const fd = openAt(this.#fd, path);
      try {
        return readFileSync(fd, 'utf8');
      } finally {
        closeSync(fd);
      }
    } catch {
      return null;
    }
  }

  stat(pid: number): ProcessStat | null {
    const text = this.read(`${pid}/stat`);
    return text === null ? null : parseProcStat(text);
  }

  /** The process state letter from /proc/PID/stat (R, S, T, Z, ...), or null. */
  state(pid: number): string | null {
    return this.stat(pid)?.state ?? null;
  }

  /** Child pids, from /proc/PID/task/TID/children of every thread (a child may be forked by any thread). */
  children(pid: number): number[] {
    if (this.#fd === null) return [];
    let threads: string[];
    try {
      threads = listDirectoryAt(this.#fd, `${pid}/task`);
    } catch {
      return [];
    }
    const children: number[] = [];
    for (const thread of threads) {
      const text = this.read(`${pid}/task/${thread}/children`);
      if (text) for (const word of text.trim().split(' ')) if (word) children.push(Number(word));
    }
    return children;
  }

  /** The process and its descendants (breadth first, at most KFCGI_PROCESS_TREE_MAX). */
  tree(pid: number): number[] {
    const found = [pid];
    for (let index = 0; index < found.length && found.length < KFCGI_PROCESS_TREE_MAX; index += 1) {
      for (const child of this.children(found[index]!)) if (found.length < KFCGI_PROCESS_TREE_MAX) found.push(child);
    }
    return found;
  }

  /**
   * The process's own CPU seconds (utime + stime of its threads, not of the
   * children it reaped) and resident memory; null when it is gone or /proc
   * cannot be read.
   */
  processUsage(pid: number): ProcessUsage | null {
    const stat = this.stat(pid);
    if (stat === null) return null;
    return { cpuSeconds: stat.cpuTicks / clockTicksPerSecond(), rssBytes: stat.rssPages * pageSize() };
  }

  /** CPU and memory of the process tree under `pid`; null when the process is gone. */
  usage(pid: number): TreeUsage | null {
    let ticks = 0;
    let runtime = 0;
    let pages = 0;
    let processes = 0;
    for (const member of this.tree(pid)) {
      const stat = this.stat(member);
      if (stat === null) continue;
      processes += 1;
      ticks += stat.cpuTicks + stat.childCpuTicks;
      pages += stat.rssPages;
      const schedstat = this.read(`${member}/schedstat`);
      runtime += (schedstat === null ? null : parseSchedstat(schedstat)) ?? 0;
    }
    if (processes === 0) return null;
    return {
      processes,
      cpuSeconds: ticks / clockTicksPerSecond(),
      cpuSignature: `${ticks}:${runtime}`,
      rssBytes: pages * pageSize(),
    };
  }

  /** The socket inodes a process holds, by descriptor number; null when it cannot be read. */
  sockets(pid: number): Map<number, string> | null {
    if (this.#fd === null) return null;
    try {
      const result = new Map<number, string>();
      for (const name of listDirectoryAt(this.#fd, `${pid}/fd`)) {
        const target = readLinkAt(this.#fd, `${pid}/fd/${name}`);
        if (target?.startsWith('socket:')) result.set(Number(name), target);
      }
      return result;
    } catch {
      return null;
    }
  }

  /** Every socket inode held by the process tree under `pid`; null when the worker itself cannot be read. */
  treeSockets(pid: number): Set<string> | null {
    const own = this.sockets(pid);
    if (own === null) return null;
    const all = new Set(own.values());
    for (const member of this.tree(pid).slice(1)) for (const socket of this.sockets(member)?.values() ?? []) all.add(socket);
    return all;
  }
}

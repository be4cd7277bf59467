/**
 * What /proc tells about processes (Linux only): parents and children,
 * process groups, zombies, descriptors, jails. The tests use it to check that
 * no script, worker or grandchild is left behind and that nothing leaks.
 * Every reader tolerates a process that exits while it is being read.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface ProcStat {
  /** R, S, D, T, Z, ... */
  state: string;
  ppid: number;
  pgrp: number;
}

/** State, parent and process group from /proc/PID/stat, read in one step; null once the process is reaped. */
export function procStat(pid: number): ProcStat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, ppid: Number(fields[1]), pgrp: Number(fields[2]) };
  } catch {
    return null;
  }
}

/** Every process on the machine, with its stat. */
function allProcesses(): Array<{ pid: number } & ProcStat> {
  const processes: Array<{ pid: number } & ProcStat> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat) processes.push({ pid: Number(entry), ...stat });
  }
  return processes;
}

/** The process runs (it exists and is not a zombie waiting to be reaped). */
export function processExists(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== null && stat.state !== 'Z';
}

/** Children of `pid` with their state letters, zombies included (to check that none is left unreaped). */
export function childProcesses(pid: number): Array<{ pid: number; state: string }> {
  return allProcesses()
    .filter((entry) => entry.ppid === pid)
    .map((entry) => ({ pid: entry.pid, state: entry.state }))
    .sort((a, b) => a.pid - b.pid);
}

/** Live (non-zombie) children of `pid`, sorted. */
export function childrenOf(pid: number): number[] {
  return childProcesses(pid)
    .filter((child) => child.state !== 'Z')
    .map((child) => child.pid);
}

/** Live (non-zombie) processes in any of the process groups `pgids` (a script's group is its pid). */
export function groupMembers(...pgids: number[]): number[] {
  const groups = new Set(pgids);
  return allProcesses()
    .filter((entry) => groups.has(entry.pgrp) && entry.state !== 'Z')
    .map((entry) => entry.pid);
}

/** The command line, arguments joined by spaces ('' once gone). */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** One field of /proc/PID/status ("Uid", "Groups", "SigBlk", ...), trimmed. */
export function procStatusField(pid: number, field: string): string {
  const match = new RegExp(`^${field}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? match[1]!.trim() : '';
}

/** The root directory the process sees (its jail after chroot). */
export function procRoot(pid: number): string {
  return readlinkSync(`/proc/${pid}/root`);
}

/** The sockets among the process's descriptors, as "socket:[INODE]". */
export function socketsOf(pid: number): string[] {
  const result: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith('socket:')) result.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return result;
}

/**
 * Where in the kernel the process sleeps (/proc/PID/wchan): "poll_schedule_timeout"
 * in poll(2), "unix_stream_read_generic" in a read(2) on a unix socket,
 * "anon_pipe_write" (older kernels: "pipe_write") blocked on a full pipe.
 * '0' while it runs, '' once it is gone.
 */
export function wchan(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8');
  } catch {
    return '';
  }
}

/** wchan values of a process blocked writing: a full pipe, a full unix socket (also a child's stdio: libuv uses socketpairs), a full TCP socket. */
const BLOCKED_WRITING = /pipe_write|sock_alloc_send_pskb|sk_stream_wait_memory|wait_woken/;

/** The process sleeps in a write to a pipe or socket that is full: its reader stopped reading. */
export function blockedWriting(pid: number): boolean {
  return BLOCKED_WRITING.test(wchan(pid));
}

/**
 * Every live process below `pid` (children, their children, ...): scripts a daemon started for this process, too.
 * With `zombies`, also those exited and not yet reaped (what a reaping check must see).
 */
export function descendantsOf(pid: number, options: { zombies?: boolean } = {}): number[] {
  const processes = options.zombies ? allProcesses() : allProcesses().filter((entry) => entry.state !== 'Z');
  const found: number[] = [];
  for (let frontier = [pid]; frontier.length > 0; ) {
    const children = processes.filter((entry) => frontier.includes(entry.ppid)).map((entry) => entry.pid);
    found.push(...children);
    frontier = children;
  }
  return found;
}

/** Bytes the process has written so far (/proc/PID/io wchar), or -1 once it is gone: its progress as a producer. */
export function bytesWritten(pid: number): number {
  try {
    return Number(/^wchar:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? -1);
  } catch {
    return -1;
  }
}

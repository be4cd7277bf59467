/**
 * What the deployment tests read about processes and sockets from /proc
 * (Linux only): the user and groups a process runs as, its children, whether
 * it listens on a TCP port; and a bounded wait for a condition. Every reader
 * tolerates a process that exits while it is being read.
 */
import { chmodSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { closeDescriptor, openDatagramReceiver, receiveDatagram } from '../../src/sys/index.js';
import { requireProgram, startProcess, type RunningProcess } from './process.js';
import { waitFor } from './wait.js';

export interface Credentials {
  /** Real, effective, saved and file-system uid. */
  uids: number[];
  gids: number[];
  /** Supplementary groups. */
  groups: number[];
}

/** The ids of a process from /proc/PID/status. */
export function credentialsOf(pid: number): Credentials {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) =>
    (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uids: field('Uid'), gids: field('Gid'), groups: field('Groups') };
}

/** The ids a script printed with `grep -E '^(Uid|Gid|Groups):' /proc/$$/status`. */
export function credentialsFromText(text: string): Credentials {
  const field = (name: string) =>
    (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uids: field('Uid'), gids: field('Gid'), groups: field('Groups') };
}

/** A shell CGI script that prints the ids it runs with, read from /proc. */
export const ID_SCRIPT = `#!/bin/sh
printf 'Content-Type: text/plain\\n\\n'
grep -E '^(Uid|Gid|Groups):' /proc/$$/status
`;

// The process readers shared with the other tests (test/kit/proc.ts), re-exported for the deployment tests.
export { childrenOf, commandLine } from './proc.js';

/** The inodes of the sockets `pid` holds open. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match) inodes.add(match[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  return inodes;
}

/** The TCP ports `pid` itself listens on (IPv4 and IPv6), from /proc/net/tcp{,6} matched by socket inode. */
export function listeningTcpPorts(pid: number): number[] {
  const mine = socketInodes(pid);
  const ports: number[] = [];
  for (const table of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is HEX_IP:HEX_PORT; st 0A is LISTEN; the inode is the tenth field.
      if (fields.length < 10 || fields[3] !== '0A' || !mine.has(fields[9]!)) continue;
      ports.push(Number.parseInt(fields[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

/** waitFor (test/kit/wait.ts) with a deadline and context given in place: the deployment tests' shorthand. */
export function waitUntil<T>(condition: () => T | Promise<T>, what: string, timeoutMs = 15_000, context?: () => string) {
  return waitFor(condition, what, { timeoutMs, ...(context ? { context } : {}) });
}

/**
 * A unix datagram socket standing in for systemd's NOTIFY_SOCKET: `address`
 * is a path or "@name" (the abstract namespace); messages() returns every
 * datagram received so far, in order.
 */
export function notifyListener(t: { after(fn: () => unknown): void }, address: string): { address: string; messages(): string[] } {
  const fd = openDatagramReceiver(address);
  t.after(() => closeDescriptor(fd));
  // As systemd's /run/systemd/notify: any process of the service may write to it, after it dropped root too.
  if (!address.startsWith('@')) chmodSync(address, 0o777);
  const received: string[] = [];
  return {
    address,
    messages: () => {
      for (let datagram = receiveDatagram(fd); datagram !== null; datagram = receiveDatagram(fd)) received.push(datagram.toString());
      return received;
    },
  };
}

/** `systemd-socket-activate -l ADDRESS ... COMMAND`: the command is started on the first connection, with the socket as fd 3. */
export function startActivated(
  t: { after(fn: () => unknown): void },
  listen: string,
  command: readonly string[],
  options: { fdname?: string; env?: Record<string, string> } = {},
): RunningProcess {
  const binary = requireProgram('/usr/bin/systemd-socket-activate');
  return startProcess(t, binary, [
    '-l',
    listen,
    ...(options.fdname ? [`--fdname=${options.fdname}`] : []),
    ...Object.entries(options.env ?? {}).flatMap(([name, value]) => ['-E', `${name}=${value}`]),
    ...command,
  ]);
}

/**
 * systemd's two conventions for services, without libsystemd:
 *
 * - Socket activation (sd_listen_fds(3)): the service manager passes
 *   listening sockets from descriptor 3 on, with LISTEN_FDS (how many),
 *   LISTEN_PID (the process they are for: a child that inherits the
 *   environment must not take them) and LISTEN_FDNAMES (colon-separated
 *   names, FileDescriptorName= in the .socket unit).
 * - Readiness (sd_notify(3)): a service of Type=notify sends "READY=1",
 *   "RELOADING=1", "STOPPING=1" as datagrams to the unix socket named in
 *   NOTIFY_SOCKET ("@name" is the abstract namespace).
 *
 * takeSystemdEnvironment() reads all four variables once, removes them from
 * the environment (so no child, script or worker inherits them) and marks the
 * passed sockets close-on-exec (so none leaks into a child either). Every
 * command calls it before it starts any process.
 */
import { ErrorCode, GatehouseError } from '../errors.js';
import { SYSTEMD_LISTEN_FDS_START } from '../limits.js';
import { type ListenAddress, sendDatagram, setCloseOnExec, socketAddress } from './sockets.js';

/** A socket systemd passed: its descriptor, its name (FileDescriptorName=; "unknown" when unnamed) and where it is bound. */
export interface ActivatedSocket {
  fd: number;
  name: string;
  address: ListenAddress | null;
}

interface SystemdEnvironment {
  sockets: ActivatedSocket[];
  notifySocket: string | null;
}

let taken: SystemdEnvironment | null = null;

function systemdError(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.SYSTEMD, message);
}

/** What the four variables say, read without touching any descriptor (pure). */
export interface SystemdVariables {
  /** Descriptors passed (from 3 on) and their names; empty when LISTEN_PID names another process. */
  sockets: Array<{ fd: number; name: string }>;
  notifySocket: string | null;
}

/**
 * Reads LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES and NOTIFY_SOCKET as
 * sd_listen_fds(3) and sd_notify(3) do: sockets only when LISTEN_PID is
 * `pid` (a child that inherited the variables by mistake takes none);
 * unnamed ones are "unknown". Throws SYSTEMD for a LISTEN_FDS that is not a
 * number.
 */
export function readSystemdVariables(env: NodeJS.ProcessEnv, pid: number): SystemdVariables {
  const { LISTEN_FDS: count, LISTEN_PID: listenPid, LISTEN_FDNAMES: names, NOTIFY_SOCKET: notify } = env;
  const sockets: Array<{ fd: number; name: string }> = [];
  if (count !== undefined && listenPid !== undefined && Number(listenPid) === pid) {
    if (!/^\d{1,4}$/.test(count)) throw systemdError(`LISTEN_FDS=${count} is not a number of sockets`);
    const nameList = names === undefined ? [] : names.split(':');
    for (let index = 0; index < Number(count); index++)
      sockets.push({ fd: SYSTEMD_LISTEN_FDS_START + index, name: nameList[index] || 'unknown' });
  }
  return { sockets, notifySocket: notify !== undefined && notify !== '' ? notify : null };
}

/**
 * The sockets and the notification socket systemd gave this process (empty
 * and null when it gave none), read once; the variables are then removed
 * from process.env and the sockets made close-on-exec.
 */
export function takeSystemdEnvironment(env: NodeJS.ProcessEnv = process.env): SystemdEnvironment {
  if (taken) return taken;
  const variables = readSystemdVariables(env, process.pid);
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  delete env.NOTIFY_SOCKET;
  const sockets = variables.sockets.map(({ fd, name }) => {
    setCloseOnExec(fd);
    return { fd, name, address: socketAddress(fd) };
  });
  taken = { sockets, notifySocket: variables.notifySocket };
  return taken;
}

/** The sockets systemd passed to this process (socket activation); empty when started otherwise. */
export function activatedSockets(): readonly ActivatedSocket[] {
  return takeSystemdEnvironment().sockets;
}

/**
 * The descriptors a `systemd` or `systemd:NAME` listen address stands for:
 * every passed socket, or those named NAME. Any other address is returned as
 * it is. Throws SYSTEMD, naming what was passed, when nothing fits.
 */
export function resolveActivatedAddress(address: ListenAddress): ListenAddress[] {
  if (address.kind !== 'systemd') return [address];
  const sockets = activatedSockets();
  if (sockets.length === 0)
    throw systemdError(
      `listen address ${address.name === undefined ? 'systemd' : `systemd:${address.name}`}: no socket was passed by systemd (LISTEN_FDS is not set for this process); start it from a .socket unit, or listen on an address`,
    );
  const chosen = address.name === undefined ? sockets : sockets.filter((socket) => socket.name === address.name);
  if (chosen.length === 0)
    throw systemdError(
      `listen address systemd:${address.name}: systemd passed no socket of that name (it passed ${sockets.map((socket) => socket.name).join(', ')}); set FileDescriptorName=${address.name} in the .socket unit, or write systemd`,
    );
  return chosen.map((socket) => ({ kind: 'fd', fd: socket.fd }));
}

/**
 * Tells the service manager about a state change (sd_notify(3)): "READY=1",
 * "RELOADING=1", "STOPPING=1", "STATUS=...". Does nothing when NOTIFY_SOCKET
 * was not set. Returns false when the datagram could not be sent (the manager
 * is gone); a notification is never worth stopping the service for.
 */
export function notifySystemd(...states: string[]): boolean {
  const socket = takeSystemdEnvironment().notifySocket;
  if (socket === null) return true;
  try {
    sendDatagram(socket, Buffer.from(`${states.join('\n')}\n`));
    return true;
  } catch {
    return false;
  }
}

/** RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload (systemd 253) wants it; older managers ignore the extra field. */
export function reloadingStates(): string[] {
  return ['RELOADING=1', `MONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`];
}

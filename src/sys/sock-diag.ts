/**
 * Asking the kernel about unix sockets through NETLINK_SOCK_DIAG (what
 * ss(8) uses): one socket, opened once (it needs no privilege and no file
 * system, so it keeps working inside a chroot), requests encoded by
 * ./netlink.ts. Every receive is non-blocking: the kernel queues an exact
 * reply, and each part of a dump, before the call that asked for it returns.
 */
import os from 'node:os';
import { ErrorCode, GatehouseError } from '../errors.js';
import { SysError, closeQuietly, fail, koffi, libc } from './libc.js';
import { MSG_DONTWAIT, SOCK_CLOEXEC } from './linux.js';
import { ALL_STATES, NETLINK_SOCK_DIAG, decodeNetlinkReplies, encodeUnixDiagRequest, type UnixSocketInfo } from './netlink.js';

export { UnixDiagShow, UnixState, type UnixSocketInfo } from './netlink.js';

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
/** Receive buffer: the kernel fills a dump part up to this size (it uses at most 32 KiB per part). */
const RECEIVE_BYTES = 64 * 1024;
/** A dump of more parts than this is refused rather than read for ever (each part holds dozens of sockets). */
const MAX_DUMP_PARTS = 100_000;

const c = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  send: libc.func('intptr_t send(int fd, const uint8_t *buf, size_t len, int flags)'),
  recv: libc.func('intptr_t recv(int fd, _Out_ uint8_t *buf, size_t len, int flags)'),
};

export class SockDiag {
  readonly #fd: number;
  readonly #buffer = Buffer.alloc(RECEIVE_BYTES);
  #sequence = 0;
  #closed = false;

  constructor() {
    const fd = c.socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as number;
    if (fd < 0) fail('socket', 'AF_NETLINK NETLINK_SOCK_DIAG');
    this.#fd = fd;
  }

  /** One unix socket by inode, with the attributes `show` asks for; null when no such socket exists. */
  unixSocket(inode: number, show: number): UnixSocketInfo | null {
    const found = this.#ask({ inode, show }, false);
    return found.length > 0 ? found[0]! : null;
  }

  /** Every unix socket of this network namespace in one of `states` (a bitmask of 1 << state). */
  unixSockets(show: number, states: number = ALL_STATES): UnixSocketInfo[] {
    return this.#ask({ show, states }, true);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#fd);
  }

  #ask(request: { inode?: number; states?: number; show: number }, dump: boolean): UnixSocketInfo[] {
    if (this.#closed) throw new GatehouseError(ErrorCode.SYSCALL_FAILED, 'sock_diag: the netlink socket is closed');
    this.#sequence = (this.#sequence + 1) >>> 0;
    const sequence = this.#sequence;
    const what = request.inode !== undefined ? `unix socket inode ${request.inode}` : 'unix sockets (dump)';
    const message = encodeUnixDiagRequest({ ...request, sequence });
    if (Number(c.send(this.#fd, message, message.length, 0)) !== message.length) fail('send', `sock_diag request for ${what}`);
    const sockets: UnixSocketInfo[] = [];
    for (let part = 0; part < MAX_DUMP_PARTS; part += 1) {
      const length = Number(c.recv(this.#fd, this.#buffer, this.#buffer.length, MSG_DONTWAIT));
      if (length < 0) {
        const errno = koffi.errno();
        if (errno === os.constants.errno.EINTR) continue;
        throw new SysError('recv', `sock_diag reply for ${what}`, errno);
      }
      for (const reply of decodeNetlinkReplies(this.#buffer.subarray(0, length))) {
        // A reply to an earlier request that was given up (it threw midway) is left behind: skip it.
        if (reply.kind !== 'malformed' && reply.sequence !== sequence) continue;
        switch (reply.kind) {
          case 'socket':
            sockets.push(reply.socket);
            if (!dump) return sockets;
            break;
          case 'done':
            return sockets;
          case 'error':
            if (reply.errno === 0) return sockets;
            if (!dump && reply.errno === os.constants.errno.ENOENT) return sockets;
            throw new SysError('sock_diag', what, reply.errno);
          case 'malformed':
            throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `sock_diag ${what}: the kernel's reply does not parse (${reply.reason})`);
        }
      }
    }
    throw new GatehouseError(ErrorCode.SYSCALL_FAILED, `sock_diag ${what}: more than ${MAX_DUMP_PARTS} parts; gave up`);
  }
}

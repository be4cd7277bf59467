/**
 * The netlink messages of NETLINK_SOCK_DIAG for unix sockets (linux/netlink.h,
 * linux/sock_diag.h, linux/unix_diag.h), encoded and decoded as bytes: pure,
 * no system call, so they are tested with exact-byte tables. ./sock-diag.ts
 * sends and receives them.
 *
 * What kfcgi reads with them: the listen queue of a unix socket (a listening
 * socket's UNIX_DIAG_RQLEN is the number of connections waiting for accept()
 * and its backlog, which Linux reports nowhere else for unix sockets), and
 * the sockets accepted from it (they carry the listener's name).
 *
 * Host byte order, as netlink uses: little-endian on every target gatehouse
 * runs on (x86_64, aarch64).
 */

export const NETLINK_SOCK_DIAG = 4;
/** nlmsg_type of a sock_diag request and of its replies. */
export const SOCK_DIAG_BY_FAMILY = 20;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
/** NLM_F_ROOT | NLM_F_MATCH: every socket of the family. */
export const NLM_F_DUMP = 0x300;
const AF_UNIX = 1;

/** udiag_show bits: which attributes the kernel adds to each reply. */
export const UnixDiagShow = { NAME: 0x01, VFS: 0x02, PEER: 0x04, ICONS: 0x08, RQLEN: 0x10, MEMINFO: 0x20, UID: 0x40 } as const;
/** Attribute types of a unix_diag_msg. */
const UNIX_DIAG_NAME = 0;
const UNIX_DIAG_VFS = 1;
const UNIX_DIAG_PEER = 2;
const UNIX_DIAG_ICONS = 3;
const UNIX_DIAG_RQLEN = 4;
const UNIX_DIAG_UID = 7;
/** Socket states (the TCP numbers, which unix sockets reuse). */
export const UnixState = { ESTABLISHED: 1, CLOSE: 7, LISTEN: 10 } as const;
/** udiag_states bitmask selecting every state. */
export const ALL_STATES = 0xffffffff;
/** INET_DIAG_NOCOOKIE: an exact lookup by inode that checks no cookie. */
const NO_COOKIE = 0xffffffff;

const NLMSG_HEADER = 16;
const UNIX_DIAG_REQ = 24;
const UNIX_DIAG_MSG = 16;
const NLA_HEADER = 4;
/** nla_type carries two flag bits (nested, network byte order) above the type. */
const NLA_TYPE_MASK = 0x3fff;

const align4 = (length: number) => (length + 3) & ~3;

export interface UnixDiagRequest {
  /** nlmsg_seq, echoed in every reply. */
  sequence: number;
  /** One socket by inode (an exact lookup), or every socket (a dump) when absent. */
  inode?: number;
  /** udiag_states: a bitmask of 1 << state; dumps only (an exact lookup ignores it). */
  states?: number;
  /** udiag_show: UnixDiagShow bits. */
  show: number;
}

/** struct nlmsghdr + struct unix_diag_req: 40 bytes. */
export function encodeUnixDiagRequest(request: UnixDiagRequest): Buffer {
  const message = Buffer.alloc(NLMSG_HEADER + UNIX_DIAG_REQ);
  const exact = request.inode !== undefined;
  message.writeUInt32LE(message.length, 0); // nlmsg_len
  message.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4); // nlmsg_type
  message.writeUInt16LE(exact ? NLM_F_REQUEST : NLM_F_REQUEST | NLM_F_DUMP, 6); // nlmsg_flags
  message.writeUInt32LE(request.sequence >>> 0, 8); // nlmsg_seq
  message.writeUInt32LE(0, 12); // nlmsg_pid: the kernel fills it in
  message.writeUInt8(AF_UNIX, 16); // sdiag_family
  message.writeUInt8(0, 17); // sdiag_protocol (must be 0 for unix)
  message.writeUInt16LE(0, 18); // pad
  message.writeUInt32LE((request.states ?? ALL_STATES) >>> 0, 20); // udiag_states
  message.writeUInt32LE(request.inode ?? 0, 24); // udiag_ino
  message.writeUInt32LE(request.show >>> 0, 28); // udiag_show
  message.writeUInt32LE(exact ? NO_COOKIE : 0, 32); // udiag_cookie[0]
  message.writeUInt32LE(exact ? NO_COOKIE : 0, 36); // udiag_cookie[1]
  return message;
}

/** One unix socket as sock_diag describes it; attributes are present when asked for (and known). */
export interface UnixSocketInfo {
  /** SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5. */
  type: number;
  /** UnixState. */
  state: number;
  inode: number;
  /** The bound name as the kernel keeps it (a path, possibly with its NUL; abstract names start with NUL). */
  name?: Buffer;
  /** The socket file's inode and device (bound sockets). */
  vfs?: { inode: number; device: number };
  /** The peer's socket inode (connected sockets). */
  peer?: number;
  /** A listener's pending connections (their inodes). */
  pending?: number[];
  /** A listener: connections waiting for accept() and its backlog; others: bytes queued to read and to write. */
  receiveQueue?: number;
  sendQueue?: number;
  uid?: number;
}

export type NetlinkReply =
  | { kind: 'socket'; sequence: number; socket: UnixSocketInfo }
  | { kind: 'done'; sequence: number }
  /** NLMSG_ERROR: errno 0 is an acknowledgement; otherwise the request failed with that errno (positive). */
  | { kind: 'error'; sequence: number; errno: number }
  | { kind: 'malformed'; reason: string };

/**
 * Decodes one datagram of netlink replies (it may hold several messages).
 * Never throws: bytes that do not parse end the list with a 'malformed'
 * entry. Messages of other types are skipped.
 */
export function decodeNetlinkReplies(data: Uint8Array): NetlinkReply[] {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const replies: NetlinkReply[] = [];
  let offset = 0;
  while (offset + NLMSG_HEADER <= buffer.length) {
    const length = buffer.readUInt32LE(offset);
    const type = buffer.readUInt16LE(offset + 4);
    const sequence = buffer.readUInt32LE(offset + 8);
    if (length < NLMSG_HEADER || offset + length > buffer.length) {
      replies.push({ kind: 'malformed', reason: `message of ${length} bytes at offset ${offset} of ${buffer.length}` });
      return replies;
    }
    const body = buffer.subarray(offset + NLMSG_HEADER, offset + length);
    if (type === NLMSG_DONE) replies.push({ kind: 'done', sequence });
    else if (type === NLMSG_ERROR) {
      if (body.length < 4) {
        replies.push({ kind: 'malformed', reason: `NLMSG_ERROR of ${body.length} bytes` });
        return replies;
      }
      replies.push({ kind: 'error', sequence, errno: -body.readInt32LE(0) });
    } else if (type === SOCK_DIAG_BY_FAMILY) {
      const socket = decodeUnixDiagMessage(body);
      if (typeof socket === 'string') {
        replies.push({ kind: 'malformed', reason: socket });
        return replies;
      }
      replies.push({ kind: 'socket', sequence, socket });
    }
    offset += align4(length);
  }
  if (offset < buffer.length) replies.push({ kind: 'malformed', reason: `${buffer.length - offset} bytes left over` });
  return replies;
}

/** struct unix_diag_msg and its attributes; a string says what is wrong. */
function decodeUnixDiagMessage(body: Buffer): UnixSocketInfo | string {
  if (body.length < UNIX_DIAG_MSG) return `unix_diag_msg of ${body.length} bytes`;
  if (body.readUInt8(0) !== AF_UNIX) return `unix_diag_msg of family ${body.readUInt8(0)}`;
  const socket: UnixSocketInfo = { type: body.readUInt8(1), state: body.readUInt8(2), inode: body.readUInt32LE(4) };
  let offset = UNIX_DIAG_MSG;
  while (offset + NLA_HEADER <= body.length) {
    const length = body.readUInt16LE(offset);
    const type = body.readUInt16LE(offset + 2) & NLA_TYPE_MASK;
    if (length < NLA_HEADER || offset + length > body.length) return `attribute of ${length} bytes at offset ${offset} of ${body.length}`;
    const value = body.subarray(offset + NLA_HEADER, offset + length);
    switch (type) {
      case UNIX_DIAG_NAME:
        socket.name = Buffer.from(value);
        break;
      case UNIX_DIAG_VFS:
        if (value.length < 8) return `UNIX_DIAG_VFS of ${value.length} bytes`;
        socket.vfs = { inode: value.readUInt32LE(0), device: value.readUInt32LE(4) };
        break;
      case UNIX_DIAG_PEER:
        if (value.length < 4) return `UNIX_DIAG_PEER of ${value.length} bytes`;
        socket.peer = value.readUInt32LE(0);
        break;
      case UNIX_DIAG_ICONS:
        socket.pending = [];
        for (let at = 0; at + 4 <= value.length; at += 4) socket.pending.push(value.readUInt32LE(at));
        break;
      case UNIX_DIAG_RQLEN:
        if (value.length < 8) return `UNIX_DIAG_RQLEN of ${value.length} bytes`;
        socket.receiveQueue = value.readUInt32LE(0);
        socket.sendQueue = value.readUInt32LE(4);
        break;
      case UNIX_DIAG_UID:
        if (value.length < 4) return `UNIX_DIAG_UID of ${value.length} bytes`;
        socket.uid = value.readUInt32LE(0);
        break;
      default:
        break; // MEMINFO, SHUTDOWN and later additions: not used
    }
    offset += align4(length);
  }
  return socket;
}

/**
 * Constants from the Linux UAPI headers (identical on x86_64 and aarch64),
 * shared by the modules of src/sys so each is written once.
 */
/** openat(2) and friends: a path relative to the current directory. */
export const AT_FDCWD = -100;
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_ACCEPTCONN = 30;
export const SCM_RIGHTS = 1;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const MSG_CMSG_CLOEXEC = 0x40000000;
export const IPPROTO_TCP = 6;
export const TCP_INFO = 11;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const FD_CLOEXEC = 1;
export const O_NONBLOCK = 0o4000;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const STATX_INO = 0x100;
export const UNIX_PATH_MAX = 108;
export const SO_PEERCRED = 17;
export const MSG_CTRUNC = 0x8;
export const O_CLOEXEC = 0o2000000;

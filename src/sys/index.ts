/**
 * The few system calls Node lacks, behind typed functions. src/sys is the
 * only place in gatehouse that imports koffi (the binding): everything else
 * calls these functions and never sees a pointer. This module is the entry
 * point: the jail, users and groups, resource limits, the system log and
 * files by directory descriptor live here; sockets (listening, accepting,
 * passing descriptors, watching them) in ./sockets.ts, re-exported here;
 * starting and reaping processes in ./posix-spawn.ts (re-exported too); other processes' CPU, memory and
 * descendants read from /proc in ./proc-view.ts (re-exported); what they all share
 * (the libc handle, SysError, memory blocks) in ./libc.ts.
 *
 * Linux only (glibc). Each call is checked; a failure throws SysError naming
 * the operation, the object and errno (`chroot /var/www: EPERM (...)`).
 * Every descriptor created here is close-on-exec, so none leaks into a
 * spawned child unless it is passed on purpose (dup2 onto the child's stdio
 * clears the flag on the child's copy).
 *
 * Memory for struct arguments is laid out by hand in koffi-allocated blocks
 * (stable addresses), using the sizes koffi reports for `size_t` and
 * pointers; the layouts are those of the Linux UAPI and glibc on 64-bit and
 * 32-bit targets alike (statx, passwd, group, rlimit, dirent).
 */
import os from 'node:os';
import { AT_SYMLINK_NOFOLLOW, O_CLOEXEC, STATX_INO } from './linux.js';
import { POINTER_SIZE, SysError, closeDescriptor, fail, koffi, libc, withBlock } from './libc.js';

export { SysError, closeDescriptor } from './libc.js';
export * from './sockets.js';
export * from './posix-spawn.js';
export * from './privileges.js';
export * from './systemd.js';
export * from './listen-server.js';
export { AT_FDCWD } from './linux.js';
export { armLifeline, createLifeline, type Lifeline } from './lifeline.js';
export { SockDiag, UnixDiagShow, UnixState, type UnixSocketInfo } from './sock-diag.js';
export { clockTicksPerSecond, pageSize } from './sysconf.js';
export * from './proc-view.js';

const c = {
  chroot: libc.func('int chroot(const char *path)'),
  unlinkat: libc.func('int unlinkat(int dirfd, const char *path, int flags)'),
  statx: libc.func('int statx(int dirfd, const char *path, int flags, uint32_t mask, void *buf)'),
  getrlimit: libc.func('int getrlimit(int resource, void *rlim)'),
  setrlimit: libc.func('int setrlimit(int resource, const void *rlim)'),
  getpwnam: libc.func('void *getpwnam(const char *name)'),
  getpwuid: libc.func('void *getpwuid(uint32_t uid)'),
  getgrnam: libc.func('void *getgrnam(const char *name)'),
  getgrgid: libc.func('void *getgrgid(uint32_t gid)'),
  getgrouplist: libc.func('int getgrouplist(const char *user, uint32_t group, _Out_ uint32_t *groups, _Inout_ int *ngroups)'),
  openlog: libc.func('void openlog(void *ident, int option, int facility)'),
  syslog: libc.func('void syslog(int priority, const char *format, ...)'),
  closelog: libc.func('void closelog(void)'),
};

// ---------------------------------------------------------------------------
// The jail

/** chroot(2). The caller must chdir('/') right after (process.chdir). Needs root (CAP_SYS_CHROOT). */
export function chroot(path: string): void {
  if (c.chroot(path) !== 0) fail('chroot', path);
}

// ---------------------------------------------------------------------------
// Files by directory descriptor (these keep working after chroot)

/** Device and inode of a file, to tell whether a path still names the object we created. */
export interface FileIdentity {
  dev: string;
  ino: bigint;
}

/**
 * statx(2) of `name` relative to the directory open at `dirFd` (not following
 * a final symlink), or null when it does not exist. Works after chroot on a
 * directory opened before it.
 */
export function identityAt(dirFd: number, name: string): FileIdentity | null {
  return withBlock(256, (block) => {
    if (c.statx(dirFd, name, AT_SYMLINK_NOFOLLOW, STATX_INO, block.ptr) !== 0) {
      const errno = koffi.errno();
      if (errno === os.constants.errno.ENOENT) return null;
      throw new SysError('statx', name, errno);
    }
    // struct statx: stx_ino at 32; stx_dev_major, stx_dev_minor at 136, 140.
    return {
      ino: block.view.getBigUint64(32, true),
      dev: `${block.view.getUint32(136, true)}:${block.view.getUint32(140, true)}`,
    };
  });
}

/** unlinkat(2): removes `name` in the directory open at `dirFd`. */
export function unlinkAt(dirFd: number, name: string): void {
  if (c.unlinkat(dirFd, name, 0) !== 0) fail('unlinkat', name);
}

// ---------------------------------------------------------------------------
// Users and groups (resolve them BEFORE chroot: the jail rarely has /etc/passwd)

export interface UserEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

// struct passwd: name, passwd (char *), uid, gid (u32), gecos, dir, shell (char *).
const PASSWD_UID = POINTER_SIZE * 2;
const PASSWD_GECOS = PASSWD_UID + 8;

/** getpwnam(3) through NSS, or null when there is no such user. */
export function lookupUser(name: string): UserEntry | null {
  koffi.errno(0);
  return readPasswd(c.getpwnam(name));
}

/** getpwuid(3): the user with this uid, or null when the database has none. */
export function lookupUserById(uid: number): UserEntry | null {
  koffi.errno(0);
  return readPasswd(c.getpwuid(uid));
}

function readPasswd(entry: unknown): UserEntry | null {
  if (entry === null) return null;
  const view = new DataView(koffi.view(entry, PASSWD_GECOS + POINTER_SIZE * 3));
  const readString = (offset: number) => {
    const pointer = POINTER_SIZE === 8 ? view.getBigUint64(offset, true) : BigInt(view.getUint32(offset, true));
    return pointer === 0n ? '' : String(koffi.decode(entry, offset, 'char *'));
  };
  return {
    name: readString(0),
    uid: view.getUint32(PASSWD_UID, true),
    gid: view.getUint32(PASSWD_UID + 4, true),
    home: readString(PASSWD_GECOS + POINTER_SIZE),
    shell: readString(PASSWD_GECOS + POINTER_SIZE * 2),
  };
}

/** getgrnam(3): the gid of a group name, or null when there is no such group. */
export function lookupGroupId(name: string): number | null {
  const entry = c.getgrnam(name);
  if (entry === null) return null;
  // struct group: gr_name, gr_passwd (char *), gr_gid (gid_t), gr_mem (char **).
  return new DataView(koffi.view(entry, POINTER_SIZE * 2 + 4)).getUint32(POINTER_SIZE * 2, true);
}

/** getgrgid(3): the name of a group id, or null when the database has none. */
export function lookupGroupName(gid: number): string | null {
  const entry = c.getgrgid(gid);
  if (entry === null) return null;
  return String(koffi.decode(entry, 0, 'char *'));
}

/** The user's groups per the group database (getgrouplist(3)), always including `gid`. */
export function groupList(user: string, gid: number): number[] {
  let capacity = 64;
  for (;;) {
    const groups = new Array<number>(capacity).fill(0);
    const count = [capacity];
    if ((c.getgrouplist(user, gid, groups, count) as number) >= 0) return groups.slice(0, count[0]);
    if (count[0]! <= capacity) return [gid];
    capacity = count[0]!;
  }
}

// ---------------------------------------------------------------------------
// Resource limits

export const RLIMIT = { CPU: 0, FSIZE: 1, DATA: 2, STACK: 3, CORE: 4, NOFILE: 7, AS: 9, NPROC: 6 } as const;
export type RlimitResource = keyof typeof RLIMIT;
/** rlim_t's "no limit"; reported as Infinity. */
const RLIM_INFINITY = 0xffffffffffffffffn;

export interface ResourceLimit {
  soft: number;
  hard: number;
}

export function getResourceLimit(resource: RlimitResource): ResourceLimit {
  return withBlock(16, (block) => {
    if (c.getrlimit(RLIMIT[resource], block.ptr) !== 0) fail('getrlimit', resource);
    const read = (offset: number) => {
      const value = block.view.getBigUint64(offset, true);
      return value === RLIM_INFINITY ? Infinity : Number(value);
    };
    return { soft: read(0), hard: read(8) };
  });
}

/** setrlimit(2); Infinity means no limit. Raising a hard limit needs root. */
export function setResourceLimit(resource: RlimitResource, limit: ResourceLimit): void {
  withBlock(16, (block) => {
    const write = (offset: number, value: number) =>
      block.view.setBigUint64(offset, value === Infinity ? RLIM_INFINITY : BigInt(value), true);
    write(0, limit.soft);
    write(8, limit.hard);
    if (c.setrlimit(RLIMIT[resource], block.ptr) !== 0) fail('setrlimit', resource);
  });
}

// ---------------------------------------------------------------------------
// System log

export const SyslogPriority = { ERR: 3, WARNING: 4, NOTICE: 5, INFO: 6, DEBUG: 7 } as const;
export type SyslogPriority = (typeof SyslogPriority)[keyof typeof SyslogPriority];
export const SyslogFacility = { DAEMON: 3 << 3, USER: 1 << 3, LOCAL0: 16 << 3 } as const;
const LOG_PID = 0x01;
const LOG_NDELAY = 0x08;

let syslogIdent: unknown = null;

/**
 * openlog(3) with LOG_PID and LOG_NDELAY: the connection to /dev/log is made
 * now, so logging keeps working after chroot into a jail without /dev/log.
 */
export function openSystemLog(ident: string, facility: number = SyslogFacility.DAEMON): void {
  // openlog keeps the pointer, so the string lives in memory we never free while the log is open.
  const bytes = Buffer.from(`${ident}\0`);
  const previous = syslogIdent;
  syslogIdent = koffi.alloc('uint8_t', bytes.length);
  new Uint8Array(koffi.view(syslogIdent, bytes.length)).set(bytes);
  c.openlog(syslogIdent, LOG_PID | LOG_NDELAY, facility);
  if (previous !== null) koffi.free(previous);
}

/** syslog(3) of one message (never used as a format string). */
export function writeSystemLog(priority: SyslogPriority, message: string): void {
  c.syslog(priority, '%s', 'str', message);
}

export function closeSystemLog(): void {
  c.closelog();
}

/** Whether this process runs with effective uid 0. */
export function isRoot(): boolean {
  return process.geteuid?.() === 0;
}

// ---------------------------------------------------------------------------
// Reading /proc (or any tree) through a directory opened before chroot

const O_RDONLY = 0;
const O_DIRECTORY = 0o200000;
const libcDirectory = {
  openat: libc.func('int openat(int dirfd, const char *path, int flags, ...)'),
  fdopendir: libc.func('void *fdopendir(int fd)'),
  readdir: libc.func('void *readdir(void *dir)'),
  closedir: libc.func('int closedir(void *dir)'),
  readlinkat: libc.func('intptr_t readlinkat(int dirfd, const char *path, _Out_ uint8_t *buf, size_t size)'),
};
// struct dirent on Linux (glibc, 64-bit and LFS): d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[256].
const DIRENT_NAME = 19;

/** openat(2) read-only and close-on-exec; the descriptor can be read with node:fs (readFileSync(fd), readSync). */
export function openAt(dirFd: number, path: string, directory = false): number {
  const fd = libcDirectory.openat(dirFd, path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0), 'int', 0) as number;
  if (fd < 0) fail('openat', path);
  return fd;
}

const O_WRONLY = 1;
const O_CREAT = 0o100;
const O_APPEND = 0o2000;

/**
 * openat(2) to append (a log file), created with `mode` (less the umask) when
 * missing, close-on-exec. Through a directory opened before chroot, a log
 * outside the jail can be opened again by name from inside it (SIGUSR1).
 */
export function openForAppendAt(dirFd: number, name: string, mode: number): number {
  const fd = libcDirectory.openat(dirFd, name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 'uint32_t', mode) as number;
  if (fd < 0) fail('openat', name);
  return fd;
}

/** The entry names of the directory `path` under `dirFd` (without "." and ".."). */
export function listDirectoryAt(dirFd: number, path: string): string[] {
  const fd = openAt(dirFd, path, true);
  const dir = libcDirectory.fdopendir(fd);
  if (dir === null) {
    const errno = koffi.errno();
    closeDescriptor(fd);
    throw new SysError('fdopendir', path, errno);
  }
  const names: string[] = [];
  try {
    for (;;) {
      const entry = libcDirectory.readdir(dir);
      if (entry === null) break;
      const name = String(koffi.decode(entry, DIRENT_NAME, 'char', -1));
      if (name !== '.' && name !== '..') names.push(name);
    }
  } finally {
    libcDirectory.closedir(dir); // also closes fd
  }
  return names;
}

/** readlinkat(2): the target of the symbolic link `path` under `dirFd`, or null when it does not exist. */
export function readLinkAt(dirFd: number, path: string): string | null {
  const buffer = Buffer.alloc(4096);
  const length = Number(libcDirectory.readlinkat(dirFd, path, buffer, buffer.length));
  if (length < 0) {
    const errno = koffi.errno();
    if (errno === os.constants.errno.ENOENT || errno === os.constants.errno.ESRCH) return null;
    throw new SysError('readlinkat', path, errno);
  }
  return buffer.subarray(0, length).toString('utf8');
}

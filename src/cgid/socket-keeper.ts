/**
 * The socket keeper: the small part that keeps root after a privilege drop,
 * so that a unix socket made by root in a directory only root may write
 * (/run/gatehouse, mode 0755 root) is still removed at the stop.
 *
 * Why a process and not something cheaper: once the process is --user,
 * unlink(2) and unlinkat(2) check the caller's credentials against the
 * directory, not those of a descriptor opened before the drop (kfcgi's
 * OwnedSocketPath removes from inside its jail that way, which helps with
 * chroot but not with permissions); keeping a saved uid of 0 or
 * CAP_DAC_OVERRIDE would let any code running in the process become root
 * again, which is what the drop is for. The peers that remove their sockets
 * keep a root process for it: php-fpm's and nginx's masters stay root and
 * unlink at stop; spawn-fcgi does not and leaves its socket behind.
 *
 * gatehouse keeps the least it can: a /bin/sh child, started as root before
 * the drop, which serves nothing and runs nothing the network can reach. It
 * waits on a pipe; when the process that started it asks (a line) or is gone
 * (end of file: a crash or SIGKILL too), it removes each file if it is still
 * the one that was made (same device and inode: another instance may have
 * replaced it), prints one line per file and exits. It ignores the stop
 * signals, because systemd (KillMode=control-group) and a terminal's ^C send
 * them to every process of the service or group at once. It is started only
 * when the user to become could not remove the file itself.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { lstatSync, statSync } from 'node:fs';
import path from 'node:path';
import { SOCKET_KEEPER_WAIT_MS } from '../limits.js';
import type { Account } from '../sys/index.js';

/** Ignores the stop signals, waits for a line or end of file, then removes each file ($1 identity, $2 path, ...) still the same. */
const KEEPER_SCRIPT = `trap '' HUP INT QUIT TERM USR1 USR2 PIPE
read -r _
while [ $# -ge 2 ]; do
  now=$(stat -c %d:%i -- "$2" 2>/dev/null)
  if [ -z "$now" ]; then echo "$2: already gone"
  elif [ "$now" != "$1" ]; then echo "$2: left in place, another server replaced it"
  elif rm -f -- "$2"; then echo "$2: removed"
  else echo "$2: could not remove it; the next start finds it stale and replaces it"
  fi
  shift 2
done`;

/**
 * Whether `account` could remove `file` itself: write and search permission
 * on its directory (owner, group or other bits, as the kernel picks them),
 * and with the sticky bit, owning the file or the directory. ACLs are not
 * read: a directory that grants the user more through one only costs an
 * unneeded keeper.
 */
export function canRemoveAs(file: string, account: Account): boolean {
  const directory = statSync(path.dirname(file));
  const uid = account.user.uid;
  if (uid === 0) return true;
  const bits =
    directory.uid === uid
      ? (directory.mode >> 6) & 7
      : account.groups.includes(directory.gid) || directory.gid === account.gid
        ? (directory.mode >> 3) & 7
        : directory.mode & 7;
  if ((bits & 3) !== 3) return false;
  if ((directory.mode & 0o1000) !== 0) return directory.uid === uid || lstatSync(file).uid === uid;
  return true;
}

export class SocketKeeper {
  readonly #child: ChildProcess;
  readonly #files: readonly string[];
  readonly #closed: Promise<void>;
  #output = '';
  #released: Promise<string[]> | null = null;

  private constructor(child: ChildProcess, files: readonly string[]) {
    this.#child = child;
    this.#files = files;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (text: string) => (this.#output += text));
    this.#closed = new Promise((resolve) => {
      child.once('close', () => resolve());
      child.once('error', () => resolve());
    });
    // Neither the keeper nor its pipe keeps the process alive: it waits for the process, not the other way round.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stdout as unknown as { unref?: () => void }).unref?.();
  }

  /**
   * Starts a keeper, as root and before the drop to `account`, for those of
   * `files` (made by this process just now) that `account` could not remove;
   * null when there are none, or when no drop happens.
   */
  static start(files: readonly string[], account: Account | null): SocketKeeper | null {
    if (account === null || account.user.uid === 0 || (process.geteuid?.() ?? 0) !== 0) return null;
    const kept = files.filter((file) => !canRemoveAs(file, account));
    if (kept.length === 0) return null;
    const args: string[] = [];
    for (const file of kept) {
      const stat = lstatSync(file);
      args.push(`${stat.dev}:${stat.ino}`, file);
    }
    const child = spawn('/bin/sh', ['-c', KEEPER_SCRIPT, 'gatehouse-socket-keeper', ...args], {
      // What ps shows first: the script follows.
      argv0: 'gatehouse-socket-keeper',
      stdio: ['pipe', 'pipe', 'ignore'],
      cwd: '/',
      env: { PATH: '/usr/bin:/bin' },
    });
    // A failed spawn (no /bin/sh) leaves the files as before the keeper existed: the next start replaces them.
    child.stdin!.on('error', () => {});
    return new SocketKeeper(child, kept);
  }

  /** The files the keeper removes. */
  get files(): readonly string[] {
    return this.#files;
  }

  /**
   * Asks the keeper to remove its files now (call it once the sockets are
   * closed) and waits for it, at most SOCKET_KEEPER_WAIT_MS; returns its
   * lines, for the log.
   */
  release(): Promise<string[]> {
    this.#released ??= (async () => {
      this.#child.stdin!.end('stop\n');
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        this.#closed.then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), SOCKET_KEEPER_WAIT_MS))),
      ]);
      clearTimeout(timer);
      const lines = this.#output.split('\n').filter((line) => line !== '');
      if (!finished) lines.push(`the socket keeper (pid ${this.#child.pid}) did not finish within ${SOCKET_KEEPER_WAIT_MS} ms`);
      return lines;
    })();
    return this.#released;
  }
}

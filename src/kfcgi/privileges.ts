/**
 * The jail and the privilege drop, in kfcgi's order: chroot + chdir("/"),
 * then supplementary groups, gid, uid, then a check that root cannot come
 * back. The group list is resolved before the jail (the jail seldom has
 * /etc/group), and numeric ids are used afterwards (no lookups in the jail).
 */
import { ErrorCode, GatehouseError } from '../errors.js';
import { chroot, groupList, type UserEntry } from '../sys/index.js';

/** Enters the jail (no-op for "/"). Everything the process needs must already be loaded. */
export function enterJail(jail: string): void {
  if (jail === '/') return;
  chroot(jail);
  process.chdir('/');
}

export interface Credentials {
  user: UserEntry;
  groups: number[];
}

/** Resolves the supplementary groups of `user` now, before the jail hides /etc/group. */
export function resolveCredentials(user: UserEntry): Credentials {
  return { user, groups: groupList(user.name, user.gid) };
}

/** Becomes `credentials.user` for good: groups, gid, uid, then verifies that uid 0 cannot be regained. */
export function dropPrivileges(credentials: Credentials): void {
  const { user, groups } = credentials;
  const euid = process.geteuid!();
  if (euid === user.uid && process.getegid!() === user.gid) return;
  try {
    process.setgroups!(groups);
    process.setgid!(user.gid);
    process.setuid!(user.uid);
  } catch (error) {
    throw new GatehouseError(
      ErrorCode.KFCGI_SETUP,
      `dropping privileges to ${user.name} (uid ${user.uid}, gid ${user.gid}) failed: ${(error as Error).message}`,
    );
  }
  if (user.uid !== 0) {
    let regained = false;
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // expected: EPERM
    }
    if (regained || process.geteuid!() === 0 || process.getuid!() === 0) {
      throw new GatehouseError(ErrorCode.KFCGI_SETUP, `after dropping to ${user.name}, root privileges could be regained: refusing to run`);
    }
  }
  const now = process.getgroups!();
  if (now.some((gid) => !groups.includes(gid))) {
    throw new GatehouseError(
      ErrorCode.KFCGI_SETUP,
      `after dropping to ${user.name}, unexpected supplementary groups remain (${now.join(', ')}): refusing to run`,
    );
  }
}

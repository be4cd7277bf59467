/**
 * The jail and the privilege drop, in kfcgi's order: chroot + chdir("/"),
 * then supplementary groups, gid, uid, then a check that root cannot come
 * back. The group list is resolved before the jail (the jail seldom has
 * /etc/group), and numeric ids are used afterwards (no lookups in the jail).
 */
import { ErrorCode, GatehouseError } from '../errors.js';
import { chroot, dropPrivileges as dropToAccount, groupList, type UserEntry } from '../sys/index.js';

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

/** Becomes `credentials.user` for good: groups, gid, uid, then verifies that uid 0 cannot be regained (src/sys, shared with serve and cgid). */
export function dropPrivileges(credentials: Credentials): void {
  const { user, groups } = credentials;
  try {
    dropToAccount({ user, groupName: String(user.gid), gid: user.gid, groups });
  } catch (error) {
    throw new GatehouseError(ErrorCode.KFCGI_SETUP, (error as Error).message, { cause: error });
  }
}

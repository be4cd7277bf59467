/**
 * Becoming another user for good, in the order that cannot be undone half
 * way: the supplementary groups (the user's own, as initgroups(3) would set
 * them), then the gid, then the uid, then a check that root cannot come back
 * and that no other group stayed. Each step by itself leaves a hole: setuid
 * first would make setgid and setgroups fail (no longer root) and keep root's
 * groups; groups left alone keep root's supplementary groups (kfcgi's bug).
 *
 * Every command that starts as root and runs as a user goes through here:
 * `gatehouse serve` (the front, the cgid daemon), `gatehouse cgid --fastcgi`,
 * `gatehouse kfcgi` (its -U/-u). Accounts are resolved before anything hides
 * /etc/passwd and /etc/group (a jail), and numeric ids are used afterwards.
 */
import { ErrorCode, GatehouseError } from '../errors.js';
import { groupList, lookupGroupId, lookupGroupName, lookupUser, type UserEntry } from './index.js';

/** A user to run as: the passwd entry, the gid to run with, and the supplementary groups. */
export interface Account {
  user: UserEntry;
  /** The group's name (its number when the group database has no name for it). */
  groupName: string;
  gid: number;
  /** Supplementary groups: the user's groups from the group database, with `gid` among them. */
  groups: number[];
}

function privilegeError(message: string): GatehouseError {
  return new GatehouseError(ErrorCode.PRIVILEGES, message);
}

/**
 * Resolves `userName` (and `groupName`, by default the user's login group)
 * into an Account, or throws PRIVILEGES with a line that names what is missing.
 * `what` names the option for the message ("user", "--user").
 */
export function resolveAccount(
  userName: string,
  groupName?: string,
  what: { user: string; group: string } = { user: 'user', group: 'group' },
): Account {
  const user = lookupUser(userName);
  if (user === null)
    throw privilegeError(`${what.user}: there is no user "${userName}" on this system; create it (useradd), or name an existing user`);
  let gid = user.gid;
  let name = groupName ?? lookupGroupName(user.gid) ?? String(user.gid);
  if (groupName !== undefined) {
    const found = lookupGroupId(groupName);
    if (found === null)
      throw privilegeError(
        `${what.group}: there is no group "${groupName}" on this system; create it (groupadd), or name an existing group`,
      );
    gid = found;
    name = groupName;
  }
  const groups = groupList(user.name, gid);
  return { user, groupName: name, gid, groups: groups.includes(gid) ? groups : [gid, ...groups] };
}

/** "www-data (uid 33, gid 33)", for log lines. */
export function describeAccount(account: Account): string {
  return `${account.user.name} (uid ${account.user.uid}, gid ${account.gid}${account.groupName !== String(account.gid) ? ` ${account.groupName}` : ''})`;
}

/** Whether this process already runs as `account` (nothing to drop, and nothing it could drop). */
export function runsAs(account: Account): boolean {
  return process.geteuid!() === account.user.uid && process.getuid!() === account.user.uid && process.getegid!() === account.gid;
}

/**
 * Becomes `account` for good: setgroups, setgid, setuid (each sets the real,
 * effective and saved ids as root), then verifies that uid 0 cannot be
 * regained and that only the account's groups remain. Does nothing when the
 * process already runs as the account. Throws PRIVILEGES when a step fails or
 * a check does not hold: the caller must not go on serving.
 */
export function dropPrivileges(account: Account): void {
  if (runsAs(account)) return;
  const { user, gid, groups } = account;
  try {
    process.setgroups!(groups);
    process.setgid!(gid);
    process.setuid!(user.uid);
  } catch (error) {
    throw privilegeError(`switching to ${describeAccount(account)} failed: ${(error as Error).message} (only root can switch users)`);
  }
  if (user.uid !== 0) {
    let regained = false;
    try {
      process.setuid!(0);
      regained = true;
    } catch {
      // expected: EPERM
    }
    if (regained || process.geteuid!() === 0 || process.getuid!() === 0)
      throw privilegeError(`after switching to ${describeAccount(account)}, root could be regained: refusing to run`);
  }
  if (process.getgid!() !== gid || process.getegid!() !== gid)
    throw privilegeError(`after switching to ${describeAccount(account)}, the group is ${process.getegid!()}: refusing to run`);
  const now = process.getgroups!();
  if (now.some((group) => !groups.includes(group)))
    throw privilegeError(
      `after switching to ${describeAccount(account)}, unexpected supplementary groups remain (${now.join(', ')}): refusing to run`,
    );
}

/**
 * Who a command runs as, decided once before anything is bound: `gatehouse
 * serve` (user, group, socket-user, socket-group) and `gatehouse cgid`
 * (--user, --group, --socket-user, --socket-group) read the same way.
 *
 * As nginx and php-fpm do, a command started as root binds its sockets and
 * opens its logs as root, then runs as the configured user. Started as root
 * without one it refuses to start (Apache refuses `User root`; php-fpm a root
 * pool without -R): an explicit "root" keeps root, with a warning. Started as
 * another user, a different user cannot be taken: a warning, as nginx gives.
 */
import { ErrorCode, GatehouseError } from '../errors.js';
import { type Account, describeAccount, isRoot, lookupUserById, resolveAccount, runsAs } from '../sys/index.js';

export interface RunAsNames {
  /** How the command names its options in messages: "user" (a config key) or "--user" (a flag). */
  user: string;
  group: string;
  socketUser: string;
  socketGroup: string;
}

export interface RunAsInput {
  user?: string | undefined;
  group?: string | undefined;
  socketUser?: string | undefined;
  socketGroup?: string | undefined;
}

export interface RunAsPlan {
  /** The account to switch to once the sockets are bound; null: stay as started. */
  account: Account | null;
  /** Owner and group of the unix sockets the command binds; undefined: the process's own. */
  socketOwner: { uid: number; gid: number } | undefined;
  /** Lines for the log (root kept on purpose, a user that cannot be taken). */
  warnings: string[];
}

/** The one line a command started as root without a user refuses with. */
export function rootWithoutUser(names: RunAsNames, what: string): string {
  const remedy = names.user.startsWith('--')
    ? `give ${names.user} www-data (or another unprivileged user), or ${names.user} root to keep root on purpose`
    : `set ${names.user} = "www-data" (or another unprivileged user; --${names.user} on the command line), or ${names.user} = "root" to keep root on purpose`;
  return `started as root without ${names.user}: ${what} would run as root; ${remedy}`;
}

/**
 * Resolves the accounts (throws GH_PRIVILEGES naming a missing one). `required`:
 * the command refuses to run as root without a user (serve, cgid --fastcgi):
 * GH_PRIVILEGES with rootWithoutUser()'s line.
 */
export function planRunAs(input: RunAsInput, names: RunAsNames, required: { command: string; what: string } | null): RunAsPlan {
  const warnings: string[] = [];
  const root = isRoot();
  const resolveNames = { user: names.user, group: names.group };
  let account = input.user !== undefined ? resolveAccount(input.user, input.group, resolveNames) : null;
  if (root && account === null && required) throw new GatehouseError(ErrorCode.PRIVILEGES, rootWithoutUser(names, required.what));
  if (account && !root && !runsAs(account)) {
    warnings.push(
      `${names.user} ${input.user} has no effect: ${required?.command ?? 'this command'} was not started as root (it runs as uid ${process.geteuid?.()}), and only root can switch users`,
    );
    account = null;
  } else if (account && account.user.uid === 0 && root && required) {
    warnings.push(
      `running as root on purpose (${names.user} root): ${required?.what ?? 'every script'} runs with every privilege; name an unprivileged user instead`,
    );
  }
  let socketOwner: { uid: number; gid: number } | undefined;
  if (input.socketUser !== undefined || input.socketGroup !== undefined) {
    const owner = resolveAccount(input.socketUser ?? input.user ?? currentUserName(), input.socketGroup, {
      user: names.socketUser,
      group: names.socketGroup,
    });
    socketOwner = { uid: owner.user.uid, gid: owner.gid };
  } else if (account) socketOwner = { uid: account.user.uid, gid: account.gid };
  return { account, socketOwner, warnings };
}

/** The user this process runs as, by name (for a socket-group given without socket-user). */
function currentUserName(): string {
  const uid = process.geteuid?.() ?? 0;
  return lookupUserById(uid)?.name ?? String(uid);
}

export { describeAccount };

/**
 * What a reload (SIGHUP on `gatehouse serve`) can change, and what only a
 * restart can: the sockets are bound and the logs opened as root before the
 * front drops to its user, and the cgid daemon was started with its users,
 * limits and socket, so those keys keep their running values until a restart.
 * Everything else (routes, directories, FastCGI upstreams, request limits and
 * timeouts, the environment given to scripts) is swapped by the reload.
 */
import type { ServeConfig } from './schema.js';

/** The keys a reload refuses to change, as the configuration file names them. */
export const RESTART_ONLY_KEYS: ReadonlyArray<readonly [string, (config: ServeConfig) => unknown]> = [
  ['listen', (config) => config.listen],
  ['user', (config) => config.user],
  ['group', (config) => config.group],
  ['socket-user', (config) => config.socketUser],
  ['socket-group', (config) => config.socketGroup],
  ['socket-mode', (config) => config.socketMode],
  ['access-log', (config) => config.accessLog],
  ['error-log', (config) => config.errorLog],
  // The logs are opened once, with their level and formats (the cgid daemon was started with the level too).
  ['access-log-format', (config) => config.accessLogFormat],
  ['log-level', (config) => config.logLevel],
  ['log-format', (config) => config.logFormat],
  ['cgi-spawn', (config) => config.cgiSpawn],
  ['script-sock', (config) => config.scriptSock],
  ['runtime-dir', (config) => config.runtimeDir],
  ['rlimit-cpu', (config) => config.rlimitCpu],
  ['rlimit-mem', (config) => config.rlimitMem],
  ['rlimit-nproc', (config) => config.rlimitNproc],
  ['rlimit-nofile', (config) => config.rlimitNofile],
  ['max-script-output', (config) => config.maxScriptOutput],
  ['suexec-min-uid', (config) => config.suexecMinUid],
  ['suexec-min-gid', (config) => config.suexecMinGid],
  // Which directories run scripts as which user is the daemon's policy, fixed when it started.
  [
    'script-alias user/group',
    (config) => config.scriptAlias.flatMap((alias) => (alias.user ? [`${alias.dir}=${alias.user}:${alias.group ?? alias.user}`] : [])),
  ],
];

/** The restart-only keys whose values differ between the running and the new configuration. */
export function restartOnlyChanges(running: ServeConfig, next: ServeConfig): string[] {
  return RESTART_ONLY_KEYS.filter(([, read]) => JSON.stringify(read(running)) !== JSON.stringify(read(next))).map(([name]) => name);
}

/**
 * How `gatehouse serve`'s configuration chooses and sets up the script
 * spawner: the settings src/serve/front-spawner.ts starts it from (the modes:
 * src/spawn/modes.ts).
 */
import type { SuexecRoute } from '../spawn/posix-spawner.js';
import type { ScriptLimits } from '../spawn/order.js';
import type { Account } from '../sys/index.js';
import type { ServeConfig } from './schema.js';

export interface FrontSpawnSettings {
  /** `cgi-spawn`: one of CGI_SPAWN_MODES (checked when the spawner starts). */
  mode?: string;
  /** ScriptSock prefix; relative to runtimeDir. */
  scriptSock?: string;
  runtimeDir?: string;
  limits?: Partial<ScriptLimits>;
  suexec?: readonly SuexecRoute[];
  suexecMinUid?: number;
  suexecMinGid?: number;
  /**
   * The user the front runs as once it drops root. The daemon's socket and
   * the runtime directory are given to it (so the front can connect, and a
   * daemon restarted after the drop can bind), and the daemon and the scripts
   * run as it too; while suexec routes need it, the daemon keeps root and
   * runs the other scripts as this user.
   */
  runAs?: { user: string; group: string; uid: number; gid: number };
}

/** The spawn settings from `gatehouse serve`'s configuration; `runAs`: the account the front drops to. */
export function frontSpawnSettings(config: ServeConfig, runAs?: Account | null): FrontSpawnSettings {
  return {
    ...(runAs ? { runAs: { user: runAs.user.name, group: runAs.groupName, uid: runAs.user.uid, gid: runAs.gid } } : {}),
    mode: config.cgiSpawn,
    ...(config.scriptSock !== undefined ? { scriptSock: config.scriptSock } : {}),
    ...(config.runtimeDir !== undefined ? { runtimeDir: config.runtimeDir } : {}),
    limits: {
      cpuSeconds: config.rlimitCpu,
      memoryBytes: config.rlimitMem,
      processes: config.rlimitNproc,
      openFiles: config.rlimitNofile,
      outputBytes: config.maxScriptOutput,
    },
    suexecMinUid: config.suexecMinUid,
    suexecMinGid: config.suexecMinGid,
    suexec: config.scriptAlias.flatMap((alias) =>
      alias.user ? [{ directory: alias.dir, user: alias.user, group: alias.group ?? alias.user }] : [],
    ),
  };
}

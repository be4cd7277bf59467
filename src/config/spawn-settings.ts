/** How `gatehouse serve`'s configuration chooses and sets up the script spawner (src/spawn/modes.ts). */
import type { FrontSpawnSettings } from '../spawn/modes.js';
import type { Account } from '../sys/index.js';
import type { ServeConfig } from './schema.js';

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

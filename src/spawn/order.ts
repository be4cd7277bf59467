/**
 * What starting one script takes, whoever starts it (src/spawn/launcher.ts in
 * the cgid daemon or in the front itself): the program, its argv, directory and
 * environment in the bytes execve passes, its resource limits, and the account
 * it runs as. The cgid wire format (src/cgid/protocol.ts) carries these orders
 * from the front to the daemon, so they live here, below both (pure: no
 * sockets, timers or processes).
 */

/**
 * One value of an environment: a string is text and goes out as its UTF-8
 * bytes (configuration, paths, numbers); a Buffer goes out exactly as it is
 * (bytes from the wire that are not plain ASCII). ASCII from the wire stays a
 * string: its UTF-8 bytes are the wire bytes, and strings keep the common case
 * cheap (one PARAMS record written as one string). It lives here, with the
 * spawn order, because every spawner takes it; src/cgi builds environments of
 * it and src/cgid carries them.
 */
export type EnvironmentValue = string | Buffer;

/** Per-script resource limits (Apache's RLimitCPU, RLimitMEM, RLimitNPROC, plus open files and output). 0 means no limit. */
export interface ScriptLimits {
  /** RLIMIT_CPU, seconds. */
  cpuSeconds: number;
  /** RLIMIT_AS, bytes. */
  memoryBytes: number;
  /** RLIMIT_NPROC: processes of the script's user. */
  processes: number;
  /** RLIMIT_NOFILE. */
  openFiles: number;
  /** stdout bytes (head included) before the script's group is killed and its output cut. */
  outputBytes: number;
}

export const NO_LIMITS: ScriptLimits = { cpuSeconds: 0, memoryBytes: 0, processes: 0, openFiles: 0, outputBytes: 0 };

/** suexec: run the script as this user and group; it must lie inside `root`. */
export interface RunAs {
  user: string;
  group: string;
  root: string;
}

export interface SpawnOrder {
  file: string;
  argv: string[];
  cwd: string;
  /**
   * NAME=VALUE, the whole environment, as the bytes execve passes. An order
   * decoded from the cgid wire keeps a NUL after each entry in memory, so
   * posix_spawn takes them as they are.
   */
  env: Buffer[];
  limits: ScriptLimits;
  runAs: RunAs | null;
}

/** The environment record as NAME=VALUE entries, in bytes (what execve takes): text as UTF-8, bytes as they are. */
export function environmentList(env: Readonly<Record<string, EnvironmentValue>>): Buffer[] {
  const list: Buffer[] = [];
  for (const name in env) {
    const value = env[name]!;
    list.push(
      typeof value === 'string' ? Buffer.from(`${name}=${value}`, 'utf8') : Buffer.concat([Buffer.from(`${name}=`, 'utf8'), value]),
    );
  }
  return list;
}

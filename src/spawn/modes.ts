/**
 * The ways `gatehouse serve` can start CGI scripts, named by `cgi-spawn`:
 *
 * - `daemon` (default): the cgid daemon, a separate small process started
 *   and supervised by the front; scripts' parent is the daemon, and the cost
 *   of a start does not depend on the front's size.
 * - `in-process`: posix_spawn from the front itself (no daemon round trip;
 *   also cheap from a large heap, since posix_spawn does not copy page tables).
 * - `fork`: Node's child_process.spawn (libuv forks: slows down as the heap
 *   grows); kept for comparison and for systems without the binding.
 *
 * Only the names and their check live here, where the configuration schema
 * can read them; starting the chosen spawner needs the cgid daemon's
 * supervisor, which itself spawns through src/spawn, so the choice is made
 * above both, in src/serve/front-spawner.ts.
 */
import { ErrorCode, GatehouseError } from '../errors.js';

export const CGI_SPAWN_MODES = ['daemon', 'in-process', 'fork'] as const;
export type CgiSpawnMode = (typeof CGI_SPAWN_MODES)[number];

/** Checks the mode (an error names the key and the values to write). */
export function parseSpawnMode(mode: string | undefined): CgiSpawnMode {
  const value = mode ?? 'daemon';
  if (!(CGI_SPAWN_MODES as readonly string[]).includes(value)) {
    throw new GatehouseError(ErrorCode.CGID_SETUP, `cgi-spawn: "${value}" is not a spawn mode; write one of ${CGI_SPAWN_MODES.join(', ')}`);
  }
  return value as CgiSpawnMode;
}

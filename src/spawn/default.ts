/**
 * The spawner a run uses when it names none (the `cgi()` library's default):
 * posix_spawn in this process wherever the system-call binding loads, else
 * Node's child_process.spawn.
 *
 * posix_spawn is the default because it passes the environment as bytes
 * (child_process.spawn encodes every value as UTF-8 and cannot carry a
 * request header that is not UTF-8: see fork.ts) and because its cost does
 * not grow with the heap. The binding is imported on the first spawn, not at
 * load time, so a program that never runs a script never loads it, and a
 * system where it cannot load (another OS, a libc without the calls) still
 * runs scripts through child_process.spawn.
 */
import { ChildProcessSpawner } from './fork.js';
import type { ScriptSpawner, SpawnedScript, SpawnRequest } from './spawner.js';

export class DefaultSpawner implements ScriptSpawner {
  #chosen: Promise<ScriptSpawner> | null = null;

  /** Which spawner it settled on (after the first spawn): 'posix_spawn' or 'child_process.spawn'. */
  kind: 'posix_spawn' | 'child_process.spawn' | null = null;

  spawn(request: SpawnRequest): Promise<SpawnedScript> {
    this.#chosen ??= this.#choose();
    return this.#chosen.then((spawner) => spawner.spawn(request));
  }

  async #choose(): Promise<ScriptSpawner> {
    try {
      const { PosixSpawnSpawner } = await import('./posix-spawner.js');
      this.kind = 'posix_spawn';
      return new PosixSpawnSpawner();
    } catch {
      this.kind = 'child_process.spawn';
      return new ChildProcessSpawner();
    }
  }
}

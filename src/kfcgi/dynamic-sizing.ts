/**
 * The dynamic pool's decisions (-D), apart from processes and clocks so that
 * they are tested as tables: how many workers to start for the connections
 * waiting in the listen queue, within a spawn-rate budget, and which workers
 * to release once they have used no CPU for -w seconds.
 */

/**
 * A token bucket: `ratePerSecond` starts a second at most, `burst` at once.
 * Starting a process costs the manager a fork; the bucket keeps a flood of
 * connections from turning into a flood of forks.
 */
export class SpawnBudget {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(ratePerSecond: number, burst: number, now: number) {
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = now;
  }

  /** Whole starts allowed now. */
  available(now: number): number {
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) / 1000) * this.#rate);
    this.#at = now;
    return Math.floor(this.#tokens);
  }

  take(count: number, now: number): void {
    this.available(now);
    this.#tokens -= count;
  }
}

export interface GrowthInput {
  /** Connections in the listen queue. */
  queued: number;
  /** Workers started and not yet seen waiting for connections: capacity on its way. */
  starting: number;
  /** Workers that take connections (not being released or replaced). */
  active: number;
  max: number;
  /** Starts the budget allows now. */
  budget: number;
}

export interface Growth {
  /** Workers to start now. */
  start: number;
  /** Connections wait that the pool cannot grow for, because it is at -N. */
  atMax: boolean;
}

/**
 * One worker per waiting connection that no starting worker will take, up
 * to -N and the budget. A waiting connection means every worker is busy
 * (an idle worker blocked in accept() would have taken it); a worker that
 * is still starting will take one soon, so it is counted as capacity, or a
 * slow starter would be joined by one new worker per poll.
 */
export function plannedGrowth({ queued, starting, active, max, budget }: GrowthInput): Growth {
  const uncovered = queued - starting;
  if (uncovered <= 0) return { start: 0, atMax: false };
  if (active >= max) return { start: 0, atMax: true };
  return { start: Math.max(0, Math.min(uncovered, max - active, budget)), atMax: false };
}

export interface ReleaseCandidate<T> {
  worker: T;
  /** When its CPU time last changed (ms). */
  cpuChangedAt: number;
}

/**
 * The workers to release: those whose CPU time has not changed for
 * `idleMs`, longest unchanged first, as many as the pool has above `min`.
 * (Whether each one also holds no connection is checked when it is
 * stopped: see SocketView.freezeIfIdle.)
 */
export function idleToRelease<T>(
  candidates: readonly ReleaseCandidate<T>[],
  active: number,
  min: number,
  idleMs: number,
  now: number,
): T[] {
  const surplus = active - min;
  if (surplus <= 0) return [];
  return candidates
    .filter((candidate) => now - candidate.cpuChangedAt >= idleMs)
    .sort((a, b) => a.cpuChangedAt - b.cpuChangedAt)
    .slice(0, surplus)
    .map((candidate) => candidate.worker);
}

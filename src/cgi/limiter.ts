/**
 * A cap on scripts running at once, with a bounded FIFO queue behind it. Past
 * the queue the caller answers 503 at once instead of piling up requests (and
 * their bodies) in memory. A waiter whose client went away leaves the queue.
 */
import { CGI_MAX_CONCURRENT_SCRIPTS, CGI_MAX_QUEUED_SCRIPTS } from '../limits.js';
import { InvalidArgumentError } from '../errors.js';

export type Release = () => void;

export class ScriptLimiter {
  readonly maxRunning: number;
  readonly maxQueued: number;
  #running = 0;
  #queue: Array<(release: Release | null) => void> = [];
  /** Times a request was refused because the queue was full (for status pages and metrics). */
  refused = 0;

  constructor(maxRunning = CGI_MAX_CONCURRENT_SCRIPTS, maxQueued = CGI_MAX_QUEUED_SCRIPTS) {
    if (!Number.isInteger(maxRunning) || maxRunning < 1)
      throw new InvalidArgumentError(`maxRunning must be a positive integer, got ${maxRunning}`);
    if (!Number.isInteger(maxQueued) || maxQueued < 0)
      throw new InvalidArgumentError(`maxQueued must be a non-negative integer, got ${maxQueued}`);
    this.maxRunning = maxRunning;
    this.maxQueued = maxQueued;
  }

  get running(): number {
    return this.#running;
  }

  get queued(): number {
    return this.#queue.length;
  }

  /** A slot now, or null when all are taken (no allocation: the fast path of every request). */
  tryAcquire(): Release | null {
    return this.#running < this.maxRunning && this.#queue.length === 0 ? this.#grant() : null;
  }

  /**
   * A slot: at once when one is free, else after waiting in the queue.
   * Resolves null when the queue is full, or when `signal` aborts while waiting.
   */
  acquire(signal?: AbortSignal): Promise<Release | null> {
    if (this.#running < this.maxRunning) return Promise.resolve(this.#grant());
    if (this.#queue.length >= this.maxQueued || signal?.aborted) {
      this.refused++;
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      const waiter = (release: Release | null) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(release);
      };
      const onAbort = () => {
        const index = this.#queue.indexOf(waiter);
        if (index !== -1) this.#queue.splice(index, 1);
        resolve(null);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
    });
  }

  #grant(): Release {
    this.#running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running--;
      const next = this.#queue.shift();
      if (next) next(this.#grant());
    };
  }
}

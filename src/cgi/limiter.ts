/**
 * A cap on scripts running at once, with a bounded FIFO queue behind it. Past
 * the queue the caller answers 503 at once instead of piling up requests (and
 * their bodies) in memory. A waiter whose client went away leaves the queue.
 *
 * Waiting is first come, first served: a slot that frees up goes to the
 * oldest waiter, never to a request that arrives meanwhile (tryAcquire refuses
 * while anyone waits). The queue's depth and its oldest wait are in stats(),
 * for the error log (onPressure) and for metrics.
 */
import { CGI_MAX_CONCURRENT_SCRIPTS, CGI_MAX_QUEUED_SCRIPTS, CGI_QUEUE_WARN_INTERVAL_MS, CGI_QUEUE_WARN_WAIT_MS } from '../limits.js';
import { InvalidArgumentError } from '../errors.js';

export type Release = () => void;

/** A snapshot of the limiter, for status pages, metrics and the error log. */
export interface ScriptLimiterStats {
  running: number;
  maxRunning: number;
  queued: number;
  maxQueued: number;
  /** How long the oldest request in the queue has waited, in ms (0 when none waits). */
  oldestWaitMs: number;
  /** Slots given since start (at once or after waiting). */
  granted: number;
  /** Slots given after waiting in the queue. */
  grantedAfterWait: number;
  /** Requests refused because the queue was full. */
  refused: number;
  /** The longest wait in the queue a granted request had, in ms, since start. */
  longestWaitMs: number;
}

/** Called when the queue is long (half full, or its oldest has waited CGI_QUEUE_WARN_WAIT_MS), at most once per interval. */
export type PressureListener = (stats: ScriptLimiterStats) => void;

interface Waiter {
  /** performance.now() when it joined the queue. */
  since: number;
  grant: (release: Release | null) => void;
}

export class ScriptLimiter {
  readonly maxRunning: number;
  readonly maxQueued: number;
  #running = 0;
  /** Waiters in arrival order; #head is the index of the oldest (shifting a long array on every grant is O(n)). */
  #queue: Array<Waiter | null> = [];
  #head = 0;
  #waiting = 0;
  /** Times a request was refused because the queue was full (for status pages and metrics). */
  refused = 0;
  #granted = 0;
  #grantedAfterWait = 0;
  #longestWaitMs = 0;
  #lastWarned = Number.NEGATIVE_INFINITY;
  /** See PressureListener; set by the server to log a warning. */
  onPressure: PressureListener | undefined;

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
    return this.#waiting;
  }

  stats(now = performance.now()): ScriptLimiterStats {
    const oldest = this.#oldest();
    return {
      running: this.#running,
      maxRunning: this.maxRunning,
      queued: this.#waiting,
      maxQueued: this.maxQueued,
      oldestWaitMs: oldest ? Math.max(0, now - oldest.since) : 0,
      granted: this.#granted,
      grantedAfterWait: this.#grantedAfterWait,
      refused: this.refused,
      longestWaitMs: this.#longestWaitMs,
    };
  }

  /** A slot now, or null when all are taken or others wait (no allocation: the fast path of every request). */
  tryAcquire(): Release | null {
    return this.#running < this.maxRunning && this.#waiting === 0 ? this.#grant() : null;
  }

  /**
   * A slot: at once when one is free and nobody waits, else after waiting in
   * the queue behind everyone who came before. Resolves null when the queue is
   * full, or when `signal` aborts while waiting.
   */
  acquire(signal?: AbortSignal): Promise<Release | null> {
    if (this.#running < this.maxRunning && this.#waiting === 0) return Promise.resolve(this.#grant());
    if (this.#waiting >= this.maxQueued || signal?.aborted) {
      this.refused++;
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        since: performance.now(),
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = () => {
        const index = this.#queue.indexOf(waiter, this.#head);
        if (index !== -1) {
          this.#queue[index] = null;
          this.#waiting--;
          this.#compact();
        }
        resolve(null);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#queue.push(waiter);
      this.#waiting++;
      this.#checkPressure(waiter.since);
    });
  }

  #oldest(): Waiter | null {
    for (let index = this.#head; index < this.#queue.length; index++) {
      const waiter = this.#queue[index];
      if (waiter) return waiter;
    }
    return null;
  }

  #next(): Waiter | null {
    while (this.#head < this.#queue.length) {
      const waiter = this.#queue[this.#head];
      this.#queue[this.#head++] = null;
      if (waiter) {
        this.#waiting--;
        this.#compact();
        return waiter;
      }
    }
    this.#compact();
    return null;
  }

  /** Drops the spent front of the array once it is empty or mostly spent. */
  #compact(): void {
    if (this.#waiting === 0) {
      this.#queue.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  #checkPressure(now: number): void {
    if (!this.onPressure || now - this.#lastWarned < CGI_QUEUE_WARN_INTERVAL_MS) return;
    const oldest = this.#oldest();
    const long = this.#waiting * 2 >= this.maxQueued || (oldest !== null && now - oldest.since >= CGI_QUEUE_WARN_WAIT_MS);
    if (!long) return;
    this.#lastWarned = now;
    this.onPressure(this.stats(now));
  }

  #grant(): Release {
    this.#running++;
    this.#granted++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#running--;
      const next = this.#next();
      if (!next) return;
      const waited = performance.now() - next.since;
      if (waited > this.#longestWaitMs) this.#longestWaitMs = waited;
      this.#grantedAfterWait++;
      next.grant(this.#grant());
    };
  }
}

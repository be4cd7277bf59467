/**
 * The one way a test waits for something: `waitFor(condition, what, options)`.
 *
 * The contract, the same for every caller:
 * - `condition` is called at once, then again whenever one of `wakeOn`'s events
 *   fires and at least every POLL_MS; the wait resolves with the first truthy
 *   value it returns (so a probe can hand back what it found: a pid, a log's text).
 * - The wait is bounded: past `timeoutMs` it rejects with an error that says
 *   what was awaited (`what`, written to follow "waiting for") and, through
 *   `context`, the state that explains why (a process's output, the records so far).
 * - `giveUpIf` ends the wait early when it returns a reason (the process it
 *   waits on exited, the connection closed): no test waits out a deadline for
 *   something that can no longer happen. It is asked after the condition, so an
 *   event that satisfies the condition and ends the source at once still counts.
 * - A condition that throws ends the wait with that error.
 *
 * Assertions that something did NOT happen use it too: wait for the event that
 * would have caused it (the signal handled, the log line written, the peer's
 * record received), then assert; never sleep and hope.
 */
import type { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';

/** How often the condition is checked when no event wakes the wait. */
const POLL_MS = 25;
/** The deadline when the caller gives none: generous, because a wait that succeeds costs only the time it takes. */
export const DEFAULT_WAIT_MS = 15_000;
/** What the deadline's promise resolves with, told apart from any value a condition returns. */
const EXPIRED = Symbol('expired');

export interface WaitOptions {
  /** The deadline in milliseconds (default DEFAULT_WAIT_MS). */
  timeoutMs?: number;
  /** Appended to the failure message. */
  context?: () => string;
  /** Check the condition again as soon as one of these events fires. */
  wakeOn?: { emitter: EventEmitter; events: readonly string[] };
  /** A reason to stop waiting at once (the condition can no longer become true), or a falsy value to go on. */
  giveUpIf?: () => string | false | null | undefined;
}

type Truthy<T> = Exclude<T, false | null | undefined | 0 | ''>;

export async function waitFor<T>(condition: () => T | Promise<T>, what: string, options: WaitOptions = {}): Promise<Truthy<T>> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
  const deadline = Date.now() + timeoutMs;
  const fail = (why: string) => {
    const context = options.context?.();
    return new Error(`${why}${context ? `\n${context}` : ''}`);
  };
  // The deadline also bounds a condition that never settles (a request that hangs).
  let deadlineTimer: NodeJS.Timeout | undefined;
  const expired = new Promise<typeof EXPIRED>((resolve) => (deadlineTimer = setTimeout(() => resolve(EXPIRED), timeoutMs)));
  let woken = false;
  let wake: (() => void) | undefined;
  const onEvent = () => {
    woken = true;
    wake?.();
  };
  const { emitter, events = [] } = options.wakeOn ?? {};
  for (const event of events) emitter!.on(event, onEvent);
  try {
    for (;;) {
      woken = false;
      const value = await Promise.race([condition(), expired]);
      if (value === EXPIRED) throw fail(`timed out after ${timeoutMs} ms waiting for ${what} (the last check did not finish)`);
      if (value) return value as Truthy<T>;
      const reason = options.giveUpIf?.();
      if (reason) throw fail(`gave up waiting for ${what}: ${reason}`);
      const left = deadline - Date.now();
      if (left <= 0) throw fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
      // An event that fired while the condition ran already counts.
      if (woken) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(POLL_MS, left));
        function done() {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
        wake = done;
      });
    }
  } finally {
    clearTimeout(deadlineTimer);
    for (const event of events) emitter!.off(event, onEvent);
  }
}

/** The text of a file, or '' while it does not exist yet (logs are created by the process that writes them). */
export function textOf(path: string): string {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

/** Waits until the file at `path` holds text matching `pattern`; resolves with the whole text. */
export function waitForText(path: string, pattern: RegExp | string, what: string, options: WaitOptions = {}): Promise<string> {
  const matches = (text: string) => (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text));
  return waitFor(
    () => {
      const text = textOf(path);
      return matches(text) && text;
    },
    what,
    { context: () => `${path} holds:\n${textOf(path).slice(-2000)}`, ...options },
  ) as Promise<string>;
}

/**
 * Waits until a process's collected output (`source.output()`, a RunningProcess's
 * stdout and stderr) matches `pattern`; resolves with the whole output. A line
 * reaches the test through a pipe later than the socket events that follow it
 * in the process (and gatehouse's logs are written in batches, a turn later);
 * after an exit too (`exited` resolves on 'exit', before the pipes are read to
 * the end). So a line is waited for, never read once.
 */
export function waitForOutput(
  source: { output(): string },
  pattern: RegExp | string,
  what: string,
  options: WaitOptions = {},
): Promise<string> {
  const matches = (text: string) => (typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text));
  return waitFor(
    () => {
      const text = source.output();
      return matches(text) && text;
    },
    what,
    { context: () => `the output so far:\n${source.output().slice(-4000)}`, ...options },
  ) as Promise<string>;
}

/** Reads `read()` until `check` holds, under waitFor's contract; resolves with the value that satisfied it. */
export async function waitForValue<T>(read: () => T, check: (value: T) => boolean, what: string, options: WaitOptions = {}): Promise<T> {
  const found = await waitFor(
    () => {
      const value = read();
      return check(value) ? { value } : null;
    },
    what,
    options,
  );
  return found.value;
}

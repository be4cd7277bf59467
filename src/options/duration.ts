/**
 * Durations as operators write them, mod_cgid style: "20" (seconds), "20s",
 * "500ms", "2m", "1h". Returns milliseconds, or an error message that says
 * what to write instead. Pure: the configuration and the CGI core share it.
 */
import { MAX_DURATION_MS } from '../limits.js';

export { MAX_DURATION_MS };

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/** A Node timer longer than MAX_DURATION_MS fires after 1 ms instead: "600h" would kill every script at once. */
const TOO_LONG = `is longer than a timer can wait (${MAX_DURATION_MS} ms, about 24 days); write a shorter time`;

export function parseDuration(value: string | number): number | string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return `${value} is not a duration; write a number of seconds, or 20s, 500ms, 2m`;
    const ms = Math.round(value * 1000);
    return ms > MAX_DURATION_MS ? `${value} seconds ${TOO_LONG}` : ms;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match) return `"${value}" is not a duration; write 20 (seconds), 20s, 500ms, 2m or 1h`;
  const ms = Math.round(Number(match[1]) * UNITS[match[2] ?? 's']!);
  return ms > MAX_DURATION_MS ? `"${value}" ${TOO_LONG}` : ms;
}

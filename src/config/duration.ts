/**
 * Durations as operators write them, mod_cgid style: "20" (seconds), "20s",
 * "500ms", "2m", "1h". Returns milliseconds, or an error message that says
 * what to write instead.
 */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(value: string | number): number | string {
  if (typeof value === 'number') {
    return Number.isFinite(value) && value >= 0 ? Math.round(value * 1000) : `${value} is not a duration; write a number of seconds, or 20s, 500ms, 2m`;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(value);
  if (!match) return `"${value}" is not a duration; write 20 (seconds), 20s, 500ms, 2m or 1h`;
  return Math.round(Number(match[1]) * UNITS[match[2] ?? 's']!);
}

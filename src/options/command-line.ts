/**
 * Long options (`--name VALUE`, `--name=VALUE`, `--flag`) read from one table
 * that also prints --help and is checked against the manual page: what
 * `gatehouse serve`, `gatehouse cgid` and `gatehouse example` take.
 * (`gatehouse kfcgi` keeps kfcgi(8)'s getopt surface in src/kfcgi/options.ts,
 * with the same value grammars.)
 *
 * Every mistake is a UsageError naming the flag and what to write, with the
 * closest known flag for a misspelt one.
 */
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.js';
import { readValue, type ValueRule } from './values.js';

export interface LongOption extends ValueRule {
  /** The flag without its dashes (and, for serve, the configuration key). */
  name: string;
  /** One line for --help. */
  summary: string;
  /** The value's name in --help and the manual (`--listen ADDR`). */
  argument?: string;
  /** The default, as --help shows it. */
  defaultText?: string;
  /** A one-letter alias (-h). */
  short?: string;
}

/** Kinds given several times on a command line (each adds a value). */
export function isRepeatable(option: ValueRule): boolean {
  return option.kind === 'strings' || option.kind === 'addresses';
}

/**
 * Splits `argv` by `options`: the raw text of every option given (a list for
 * repeatable ones, true for flags). Values are not read yet: readOptionValues()
 * does that, or the serve configuration, which also reads the file.
 */
export function splitLongOptions(argv: readonly string[], options: readonly LongOption[]): Record<string, unknown> {
  const config: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const option of options) {
    config[option.name] = {
      type: option.kind === 'flag' ? 'boolean' : 'string',
      ...(isRepeatable(option) ? { multiple: true } : {}),
      ...(option.short ? { short: option.short } : {}),
    };
  }
  try {
    return parseArgs({ args: [...argv], options: config, strict: true, allowPositionals: false }).values as Record<string, unknown>;
  } catch (error) {
    const message = (error as Error).message;
    // parseArgs names the unknown option but not the one meant: suggest it, as the config file does for keys.
    const unknown = /Unknown option '--([^']+)'/.exec(message)?.[1];
    const hint = unknown
      ? closestName(
          unknown,
          options.map((option) => option.name),
        )
      : undefined;
    throw new UsageError(`${message}${hint ? `; did you mean --${hint}?` : ''}`);
  }
}

/** Reads every given value by its option's grammar; all mistakes in one UsageError. */
export function readOptionValues(raw: Record<string, unknown>, options: readonly LongOption[]): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  const problems: string[] = [];
  for (const option of options) {
    if (raw[option.name] === undefined) continue;
    const result = readValue(option, raw[option.name]);
    if ('problem' in result) problems.push(`--${option.name}: ${result.problem}`);
    else values[option.name] = result.value;
  }
  if (problems.length > 0) throw new UsageError(problems);
  return values;
}

/** The option rows of --help: "  --name ARG  summary (default: X)", aligned. */
export function optionHelpRows(options: readonly LongOption[]): string[] {
  const rows = options.map(
    (option) =>
      [
        `--${option.name}${option.kind === 'flag' ? '' : ` ${option.argument ?? 'VALUE'}`}`,
        `${option.summary}${option.defaultText ? ` (default: ${option.defaultText})` : ''}`,
      ] as const,
  );
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`);
}

/** The closest known name, for "did you mean" hints. */
export function closestName(name: string, names: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of names) {
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

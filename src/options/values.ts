/**
 * The value grammars every option table uses: `gatehouse serve`'s flags and
 * TOML keys, `gatehouse cgid`'s flags, `gatehouse kfcgi`'s getopt options. A
 * table row names its kind; readValue() reads a raw value (the text after a
 * flag, or a TOML value) by that kind. One grammar per kind, so `512M` means
 * the same to every command and in the file.
 */
import { type AddressGrammar, LISTEN_ADDRESS, parseListenAddress } from './listen-address.js';
import { parseDuration } from './duration.js';
import { parseSize } from './size.js';

export type ValueKind =
  /** true or false; on a command line, given or not (takes no value). */
  | 'flag'
  /** Non-empty text: a path, a name. */
  | 'string'
  /** Non-empty texts: repeatable on the command line, a string or a list in TOML. */
  | 'strings'
  /** A whole number, optionally within min..max: counts, ids, seconds kfcgi-style. */
  | 'integer'
  /** Bytes: 1048576, 512K, 64M, 2G (src/options/size.ts). */
  | 'size'
  /** Milliseconds from 20 (seconds), 20s, 500ms, 2m, 1h (src/options/duration.ts). */
  | 'duration'
  /** One of `choices`. */
  | 'choice'
  /** File permission bits in octal: 0660, 660 (a TOML number such as 0o660 too). */
  | 'mode'
  /** A socket address by `address` (default: a listener's), src/options/listen-address.ts. */
  | 'address'
  /** Several addresses: repeatable, or a list in TOML. */
  | 'addresses';

export interface ValueRule {
  kind: ValueKind;
  /** integer, size, duration (milliseconds): the smallest and largest value taken. */
  min?: number;
  max?: number;
  /** choice: the words taken. */
  choices?: readonly string[];
  /** address, addresses: what may be written. */
  address?: AddressGrammar;
}

export type ValueResult = { value: unknown } | { problem: string };

/** Reads `raw` by `rule`: the value (number, string, boolean, addresses...) or one problem saying what to write. */
export function readValue(rule: ValueRule, raw: unknown): ValueResult {
  const expected = (what: string): ValueResult => ({ problem: `expected ${what}, got ${JSON.stringify(raw)}` });
  switch (rule.kind) {
    case 'flag':
      if (raw === true || raw === 'true' || raw === '') return { value: true };
      if (raw === false || raw === 'false') return { value: false };
      return expected('true or false');
    case 'string':
      return typeof raw === 'string' && raw !== '' ? { value: raw } : expected('a non-empty string');
    case 'strings': {
      const list = Array.isArray(raw) ? raw : [raw];
      return list.every((item) => typeof item === 'string' && item !== '')
        ? { value: list as string[] }
        : expected('a string or a list of strings');
    }
    case 'integer': {
      const value = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : typeof raw === 'bigint' ? Number(raw) : raw;
      const range = describeRange(rule, 0);
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) return expected(`a whole number ${range}`);
      return inRange(value, rule, 0) ? { value } : expected(`a whole number ${range}`);
    }
    case 'size': {
      if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'bigint') return expected('a size such as 512K or 64M');
      const bytes = parseSize(raw);
      if (typeof bytes === 'string') return { problem: bytes };
      return inRange(bytes, rule, 0)
        ? { value: bytes }
        : { problem: `${bytes} bytes is outside the range taken: ${describeRange(rule, 0)}` };
    }
    case 'duration': {
      if (typeof raw !== 'string' && typeof raw !== 'number') return expected('a duration such as 20, "20s" or "500ms"');
      const ms = parseDuration(raw);
      if (typeof ms === 'string') return { problem: ms };
      if (rule.min !== undefined && ms < rule.min)
        return { problem: rule.min === 1 ? 'must be longer than 0; write a time such as 60s or 500ms' : `must be at least ${rule.min} ms` };
      return { value: ms };
    }
    case 'choice': {
      const choices = rule.choices ?? [];
      return typeof raw === 'string' && choices.includes(raw)
        ? { value: raw }
        : { problem: `${JSON.stringify(raw)} is not one of ${choices.join(', ')}; write one of them` };
    }
    case 'mode': {
      if (typeof raw === 'number' || typeof raw === 'bigint') {
        const bits = Number(raw);
        return Number.isSafeInteger(bits) && bits >= 0 && bits <= 0o777
          ? { value: bits }
          : { problem: `${String(raw)} is not a mode; write octal permission bits such as "0660" (or 0o660)` };
      }
      if (typeof raw === 'string' && /^0?[0-7]{3}$/.test(raw.trim())) return { value: Number.parseInt(raw.trim(), 8) };
      return { problem: `${JSON.stringify(raw)} is not a mode; write octal permission bits such as 0660` };
    }
    case 'address':
    case 'addresses': {
      const list = rule.kind === 'addresses' && Array.isArray(raw) ? raw : [raw];
      const addresses = [];
      for (const item of list) {
        if (typeof item !== 'string') return expected('an address such as "127.0.0.1:8080" or "unix:/run/gatehouse.sock"');
        const address = parseListenAddress(item, rule.address ?? LISTEN_ADDRESS);
        if (typeof address === 'string') return { problem: address };
        addresses.push(address);
      }
      return { value: rule.kind === 'address' ? addresses[0] : addresses };
    }
  }
}

function inRange(value: number, rule: ValueRule, floor: number): boolean {
  return value >= (rule.min ?? floor) && (rule.max === undefined || value <= rule.max);
}

function describeRange(rule: ValueRule, floor: number): string {
  const min = rule.min ?? floor;
  return rule.max === undefined ? `>= ${min}` : `from ${min} to ${rule.max}`;
}

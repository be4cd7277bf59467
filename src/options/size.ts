/**
 * Sizes as operators write them, nginx style: "1048576" (bytes), "512K",
 * "64M", "2G" (powers of 1024, either case). Returns bytes, or a message
 * that says what to write instead. Pure: every command's flags and the serve
 * configuration read sizes here.
 */

const FACTORS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const WRITE = 'write bytes (1048576) or a number with K, M or G (512K, 64M, 2G)';

export function parseSize(value: string | number | bigint): number | string {
  if (typeof value !== 'string') {
    const number = Number(value);
    return Number.isSafeInteger(number) && number >= 0 ? number : `${String(value)} is not a size; ${WRITE}`;
  }
  const match = /^\s*(\d+)\s*([KMG]?)\s*$/i.exec(value);
  if (!match) return `"${value}" is not a size; ${WRITE}`;
  const bytes = Number(match[1]) * FACTORS[match[2]!.toUpperCase()]!;
  return Number.isSafeInteger(bytes) ? bytes : `"${value}" is too large a size; ${WRITE}`;
}

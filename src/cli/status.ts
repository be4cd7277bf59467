/**
 * `gatehouse status ADDRESS`: the status of a running gatehouse process, as
 * php-fpm's status page shows a pool's. ADDRESS is the metrics address of
 * serve, cgid --fastcgi or kfcgi (HOST:PORT or unix:PATH), or a kfcgi status
 * socket (-S). A short table by default, the whole document with --json.
 * See man/gatehouse-status.8.
 */
import { type LongOption, optionHelpRows, readOptionValues, splitLongOptions } from '../options/command-line.js';
import { UsageError } from '../errors.js';
import { fetchStatus, formatKfcgiWorkers, formatStatusTable } from '../metrics/status.js';

export const STATUS_OPTIONS: readonly LongOption[] = [
  { name: 'json', kind: 'flag', summary: 'print the status document as JSON (every field; kfcgi: its pool status as -S answers it)' },
  { name: 'full', kind: 'flag', summary: "after the table, kfcgi's counters and one line per worker (state, CPU, memory, connections)" },
  { name: 'help', kind: 'flag', short: 'h', summary: 'print this help' },
];

export function statusUsage(command = 'gatehouse status'): string {
  return [
    `usage: ${command} [--json | --full] ADDRESS`,
    '',
    'Prints the status of a running gatehouse serve, cgid --fastcgi or kfcgi:',
    'one row per pool (pool, active, idle, queue, max reached, uptime).',
    "ADDRESS is the process's metrics address (HOST:PORT or unix:PATH: serve's",
    'metrics key, cgid --metrics, kfcgi -M) or a kfcgi status socket (-S path).',
    '',
    'options:',
    ...optionHelpRows(STATUS_OPTIONS),
    '',
    'See man/gatehouse-status.8.',
  ].join('\n');
}

/** `gatehouse status` (and `gatehouse kfcgi status`, which is the same command under kfcgi's name). */
export async function main(argv: string[], command = 'gatehouse status'): Promise<number> {
  const positional = argv.filter((word) => !word.startsWith('-'));
  let values: Record<string, unknown>;
  try {
    values = readOptionValues(
      splitLongOptions(
        argv.filter((word) => word.startsWith('-')),
        STATUS_OPTIONS,
      ),
      STATUS_OPTIONS,
    );
    if (values.help) {
      process.stdout.write(`${statusUsage(command)}\n`);
      return 0;
    }
    if (positional.length !== 1)
      throw new UsageError('name one ADDRESS: a metrics address (HOST:PORT, unix:PATH) or a kfcgi status socket');
    if (values.json && values.full) throw new UsageError('--json already holds everything --full shows; give one of them');
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(
      `${error.problems.map((problem) => `${command}: ${problem}`).join('\n')}\n${statusUsage(command).split('\n')[0]}\n`,
    );
    return 2;
  }
  try {
    const document = await fetchStatus(positional[0]!);
    if (values.json) process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
    else {
      process.stdout.write(`${formatStatusTable(document)}\n`);
      if (values.full && document.kfcgi) process.stdout.write(`\n${formatKfcgiWorkers(document.kfcgi)}\n`);
    }
    return 0;
  } catch (error) {
    process.stderr.write(`${command}: ${(error as Error).message}\n`);
    return 1;
  }
}

/** Tables for the terminal and for bench/README.md, and the README section writer. */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';

export function markdownTable(rows) {
  if (rows.length === 0) return '(no rows)';
  const columns = Object.keys(rows[0]);
  const cell = (value) => String(value ?? '').replace(/\|/g, '\\|');
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => cell(row[column]).length)));
  const line = (values) => `| ${values.map((value, i) => cell(value).padEnd(widths[i])).join(' | ')} |`;
  return [
    line(columns),
    `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`,
    ...rows.map((row) => line(columns.map((column) => row[column]))),
  ].join('\n');
}

export function machineLine() {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, Node ${process.version}, load average ${os.loadavg()[0].toFixed(1)} at the end`;
}

/** The markdown block for one benchmark result. */
export function renderSection(_name, result, command) {
  const when = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const parts = [
    `### ${result.title}`,
    '',
    `Measured ${when} on ${machineLine()}; the machine was shared with other work, so compare ratios, not absolute numbers.`,
    '',
    'Reproduce with:',
    '',
    '```sh',
    command,
    '```',
    '',
    markdownTable(result.rows),
  ];
  if (result.verdicts?.length) parts.push('', ...result.verdicts.map((verdict) => `- ${verdict}`));
  if (result.notes?.length) parts.push('', ...result.notes.map((note) => `- ${note}`));
  return parts.join('\n');
}

/**
 * Replaces the results section of benchmark `name` in bench/README.md (between
 * its markers), or appends it: re-running a benchmark updates its numbers in place.
 */
export function writeSection(readmePath, name, markdown) {
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n${markdown}\n${end}`;
  let text = existsSync(readmePath) ? readFileSync(readmePath, 'utf8') : '# Benchmarks\n';
  const from = text.indexOf(start);
  const to = text.indexOf(end);
  if (from !== -1 && to !== -1) text = text.slice(0, from) + block + text.slice(to + end.length);
  else text = `${text.trimEnd()}\n\n${block}\n`;
  writeFileSync(readmePath, text);
}

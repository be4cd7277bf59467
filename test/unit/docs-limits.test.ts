/**
 * The limits and defaults the docs state are the ones src/limits.ts holds, as
 * the man-page tests hold the manuals to the option tables. A doc states a
 * limit as its value followed by the constant's name: `250 ms (\`CLIENT_STARVATION_MS\`)`,
 * `64 (\`CLIENT_MAX_CONNECTIONS\`)`. Checked both ways:
 * - every such statement has the constant's value (a doc that drifts fails);
 * - a number that looks like a limit or default (a duration or a size in
 *   prose, a number in a table's default column, a number in a passage about
 *   defaults) must be such a statement, so none goes unchecked;
 * - each doc states the constants of what it documents (a new client limit
 *   with no word in docs/fastcgi-client.md fails).
 * And the library options tables list the options the code takes, no more and
 * no fewer (the worker's sendTimeoutMs was public and missing from its table).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as limits from '../../src/limits.js';
import { REPO_ROOT } from '../kit/paths.js';

const DOCS = [
  ...readdirSync(join(REPO_ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => `docs/${name}`),
  'bench/README.md',
];
const constants = limits as unknown as Record<string, unknown>;

/** A stated limit: a number, an optional unit, then the constant's name in backticks and parentheses. */
const STATEMENT = /(\d[\d,]*(?:\.\d+)?)(?:\s?(ms|s|min|h|KiB|MiB|GiB|bytes))?\s\(`([A-Z][A-Z0-9_]*)`\)/g;
/** A duration or a size in prose: what a doc would say a limit is. */
const AMOUNT = /\b\d[\d,]*(?:\.\d+)?\s?(?:ms|s|seconds?|minutes?|KiB|MiB|GiB|kB|MB|GB|bytes?)\b|\b\d[\d,]*-byte\b/g;

const TIME_MS: Record<string, number> = { ms: 1, s: 1000, min: 60_000, h: 3_600_000 };
const SIZE: Record<string, number> = { bytes: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/** What each doc documents, so what it must state. */
const MUST_STATE: Record<string, (name: string) => boolean> = {
  'docs/fastcgi-client.md': (name) => name.startsWith('CLIENT_'),
  'docs/fastcgi-worker.md': (name) => /^(WORKER_|DEFAULT_)/.test(name) || name === 'REQUEST_BODY_HIGH_WATER_MARK',
  'docs/handlers.md': (name) =>
    [
      'CGI_SCRIPT_TIMEOUT_MS',
      'CGI_MAX_CONCURRENT_SCRIPTS',
      'CGI_MAX_QUEUED_SCRIPTS',
      'CGI_MAX_REQUEST_BODY_BYTES',
      'CLIENT_IDLE_TIMEOUT_MS',
      'CLIENT_CONNECT_TIMEOUT_MS',
      'CLIENT_MAX_CONNECTIONS',
    ].includes(name),
};

interface Doc {
  file: string;
  /** The text with fenced code blocks blanked (line numbers kept): examples are not statements. */
  prose: string;
}

function readDoc(file: string): Doc {
  let fenced = false;
  const lines = readFileSync(join(REPO_ROOT, file), 'utf8')
    .split('\n')
    .map((line) => {
      if (/^\s*```/.test(line)) {
        fenced = !fenced;
        return '';
      }
      return fenced ? '' : line;
    });
  return { file, prose: lines.join('\n') };
}

const docs = DOCS.map(readDoc);

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split('\n').length;
}

/** What a statement says, in the constant's own unit (milliseconds for *_MS, seconds for *_SECONDS, bytes for sizes). */
function statedValue(number: string, unit: string | undefined, name: string): number | string {
  const value = Number(number.replace(/,/g, ''));
  if (unit === undefined) return value;
  if (unit in TIME_MS) {
    if (name.endsWith('_MS')) return value * TIME_MS[unit]!;
    if (name.endsWith('_SECONDS')) return (value * TIME_MS[unit]!) / 1000;
    return `a duration for ${name}, which is not one (its name ends in neither _MS nor _SECONDS)`;
  }
  return value * SIZE[unit]!;
}

/** The prose with every statement and inline code span blanked: what is left must state no limit. */
function unstated(prose: string): string {
  const blank = (match: string) => match.replace(/[^\n]/g, ' ');
  return prose.replace(STATEMENT, blank).replace(/`[^`\n]*`/g, blank);
}

test('every limit a doc states has the value of the constant it names', () => {
  const problems: string[] = [];
  let statements = 0;
  for (const { file, prose } of docs) {
    for (const match of prose.matchAll(STATEMENT)) {
      statements += 1;
      const [text, number, unit, name] = match as unknown as [string, string, string | undefined, string];
      const where = `${file}:${lineOf(prose, match.index!)}: "${text}"`;
      if (typeof constants[name] !== 'number') {
        problems.push(`${where}: src/limits.ts exports no number ${name}`);
        continue;
      }
      const stated = statedValue(number, unit, name);
      if (stated !== constants[name])
        problems.push(`${where}: ${typeof stated === 'string' ? stated : `says ${stated}`}, ${name} is ${constants[name]}`);
    }
  }
  assert.ok(statements > 30, `only ${statements} statements found: is the pattern still the one the docs use?`);
  assert.deepEqual(problems, []);
});

test('the reference docs state no duration or size without the constant it comes from', () => {
  const problems: string[] = [];
  for (const { file, prose } of docs.filter((doc) => doc.file.startsWith('docs/'))) {
    const rest = unstated(prose);
    for (const match of rest.matchAll(AMOUNT)) problems.push(`${file}:${lineOf(rest, match.index!)}: "${match[0]}" names no constant`);
  }
  assert.deepEqual(problems, []);
});

test("a number in a table's default column is a statement of its constant", () => {
  const problems: string[] = [];
  for (const { file, prose } of docs) {
    let defaultColumn = -1;
    for (const [index, line] of prose.split('\n').entries()) {
      if (!line.startsWith('|')) {
        defaultColumn = -1;
        continue;
      }
      const cells = line.split('|').slice(1, -1);
      if (defaultColumn === -1) {
        defaultColumn = cells.findIndex((cell) => /^\s*default\s*$/i.test(cell));
        continue;
      }
      const cell = cells[defaultColumn] ?? '';
      if (/\d/.test(unstated(cell))) problems.push(`${file}:${index + 1}: default "${cell.trim()}" names no constant`);
    }
  }
  assert.deepEqual(problems, []);
});

test('what bench/README.md says about defaults comes from src/limits.ts', () => {
  const readme = docs.find((doc) => doc.file === 'bench/README.md')!;
  const problems: string[] = [];
  // Sentences about defaults or timeouts (a sentence may run over several lines; code blocks are blanked).
  const sentences = readme.prose.replace(/\s+/g, ' ').split(/(?<=[.!?:;])\s+(?=[A-Z(*`-])/);
  for (const sentence of sentences) {
    if (!/\b(defaults?|timeouts?)\b/i.test(sentence)) continue;
    for (const match of unstated(sentence).matchAll(AMOUNT))
      problems.push(`bench/README.md: "${match[0]}" in a sentence about defaults names no constant: ${sentence}`);
  }
  // The client bench's generated label (bench/client.mjs prints it from src/limits.ts).
  for (const match of readme.prose.matchAll(/defaults: keep-alive, maxConnections (\d+)/g))
    if (Number(match[1]) !== limits.CLIENT_MAX_CONNECTIONS)
      problems.push(`bench/README.md: "${match[0]}", but CLIENT_MAX_CONNECTIONS is ${limits.CLIENT_MAX_CONNECTIONS}`);
  assert.deepEqual(problems, []);
});

test('each doc states the limits and defaults of what it documents', () => {
  const problems: string[] = [];
  for (const [file, documents] of Object.entries(MUST_STATE)) {
    const doc = docs.find((candidate) => candidate.file === file);
    assert.ok(doc, `${file} is gone`);
    const stated = new Set([...doc.prose.matchAll(STATEMENT)].map((match) => match[3]));
    for (const name of Object.keys(constants).filter(documents)) if (!stated.has(name)) problems.push(`${file} does not state ${name}`);
  }
  assert.deepEqual(problems, []);
});

/** The property names of `export interface NAME { ... }` in a source file (top-level members only). */
function interfaceMembers(source: string, name: string): string[] {
  const text = readFileSync(join(REPO_ROOT, source), 'utf8');
  const start = text.indexOf(`export interface ${name} {`);
  assert.notEqual(start, -1, `${source} exports no interface ${name}`);
  const body = text.slice(start, text.indexOf('\n}', start));
  return [...body.matchAll(/^ {2}(?:readonly )?([A-Za-z_$][\w$]*)\??:/gm)].map((match) => match[1]!);
}

/** The names in the first column of the first table after `heading` (a cell may name several: `a`, `b`). */
function tableNames(file: string, heading: string): string[] {
  const lines = readFileSync(join(REPO_ROOT, file), 'utf8').split('\n');
  let index = lines.indexOf(heading);
  assert.notEqual(index, -1, `${file} has no line ${heading}`);
  while (index < lines.length && !lines[index]!.startsWith('|')) index += 1;
  const names: string[] = [];
  for (const line of lines.slice(index + 2)) {
    if (!line.startsWith('|')) break;
    const first = line.split('|')[1] ?? '';
    names.push(...[...first.matchAll(/`([^`]+)`/g)].map((match) => match[1]!));
  }
  return names;
}

test('the library docs list every option the code takes, and no other', () => {
  const tables: Array<[doc: string, heading: string, source: string, options: string]> = [
    ['docs/fastcgi-worker.md', '## `createServer(handler?, options?)`', 'src/fastcgi/worker/server.ts', 'WorkerServerOptions'],
    ['docs/fastcgi-client.md', '## Options', 'src/fastcgi/client/client.ts', 'FastCGIClientOptions'],
    [
      'docs/fastcgi-client.md',
      '## `client.request(options)` and `UpstreamResponse`',
      'src/fastcgi/client/client.ts',
      'FastCGIRequestOptions',
    ],
  ];
  for (const [doc, heading, source, options] of tables) {
    const inCode = interfaceMembers(source, options);
    assert.ok(inCode.length >= 5, `${source}: only ${inCode.join(', ')} found in ${options}: is the parse still right?`);
    const documented = tableNames(doc, heading);
    assert.deepEqual(
      { missing: inCode.filter((name) => !documented.includes(name)), unknown: documented.filter((name) => !inCode.includes(name)) },
      { missing: [], unknown: [] },
      `${doc}'s table under ${heading} against ${options} in ${source}`,
    );
  }
});

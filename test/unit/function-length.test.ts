/**
 * No function in src/ grows long enough to hide a sequence of steps, or the
 * state shared between them, in its body (issue 14: long functions that keep
 * stop and finish state in closures). Every function, method, constructor,
 * accessor and arrow function is measured from its first line to its closing
 * brace, nested closures included: a closure is part of the function that
 * holds it. Found with the TypeScript parser, so a regular expression cannot
 * miss an arrow function or a method. A failure names the file, the line, the
 * function and its length.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const src = path.join(root, 'src');

/**
 * The longest a function may be, in lines. The commands' main()s, the kfcgi
 * option check and the supervisors' starts, split into named steps, are at
 * most 50 lines now, and the longest elsewhere 79; 80 keeps what is there and
 * stops the next 100-line function at review.
 */
const MAX_LINES = 80;

/**
 * Functions allowed past MAX_LINES, each with its length today (it may
 * shrink, not grow) and why. An entry whose function is gone or back under
 * the bound fails the test too, so the list only ever gets shorter.
 */
const EXCEPTIONS: ReadonlyMap<string, { lines: number; why: string }> = new Map([
  [
    'cgi/outcome.ts answerFor',
    {
      lines: 112,
      why: 'one case per Failure kind of a closed union, each a row of the outcome table (status, headers, code, log line); split, the table would no longer read as one',
    },
  ],
]);

interface Measured {
  /** "file name": the file relative to src/, the function's name qualified by its class or enclosing function. */
  key: string;
  /** The name alone ("main > stop"). */
  name: string;
  /** "file:line" of its first line. */
  where: string;
  lines: number;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return entry.endsWith('.ts') ? [full] : [];
  });
}

type FunctionNode = ts.FunctionLikeDeclaration & { body: ts.Node };

function isFunctionWithBody(node: ts.Node): node is FunctionNode {
  return (
    (ts.isFunctionDeclaration(node) ||
      ts.isMethodDeclaration(node) ||
      ts.isConstructorDeclaration(node) ||
      ts.isGetAccessorDeclaration(node) ||
      ts.isSetAccessorDeclaration(node) ||
      ts.isFunctionExpression(node) ||
      ts.isArrowFunction(node)) &&
    node.body !== undefined
  );
}

/** A name a reader can search for: `runKfcgi`, `SignalQueue.next`, `main > stop`, `main > (anonymous)`. */
function nameOf(node: FunctionNode, file: ts.SourceFile, enclosing: string | null): string {
  const classOf = (member: ts.Node) => {
    const owner = member.parent;
    return ts.isClassLike(owner) ? `${owner.name?.text ?? '(class)'}.` : '';
  };
  let own: string;
  if (ts.isFunctionDeclaration(node)) own = node.name?.text ?? 'default';
  else if (ts.isConstructorDeclaration(node)) own = `${classOf(node)}constructor`;
  else if (ts.isMethodDeclaration(node) || ts.isGetAccessorDeclaration(node) || ts.isSetAccessorDeclaration(node))
    own = `${classOf(node)}${node.name.getText(file)}`;
  else if (ts.isFunctionExpression(node) && node.name) own = node.name.text;
  else if (ts.isVariableDeclaration(node.parent) || ts.isPropertyAssignment(node.parent)) own = node.parent.name.getText(file);
  else if (ts.isPropertyDeclaration(node.parent)) own = `${classOf(node.parent)}${node.parent.name.getText(file)}`;
  else own = '(anonymous)';
  return enclosing === null ? own : `${enclosing} > ${own}`;
}

/** Every function in one source text, with its length in lines (signature to closing brace). */
function measure(relative: string, text: string): Measured[] {
  const file = ts.createSourceFile(relative, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: Measured[] = [];
  const visit = (node: ts.Node, enclosing: string | null) => {
    let inner = enclosing;
    if (isFunctionWithBody(node)) {
      // getStart skips the leading comment: a function's documentation is not held against it.
      const first = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
      const last = file.getLineAndCharacterOfPosition(node.getEnd()).line;
      const name = nameOf(node, file, enclosing);
      found.push({ key: `${relative} ${name}`, name, where: `${relative}:${first + 1}`, lines: last - first + 1 });
      inner = name;
    }
    ts.forEachChild(node, (child) => visit(child, inner));
  };
  visit(file, null);
  return found;
}

const measured = sourceFiles(src).flatMap((file) => {
  const relative = path.relative(src, file).split(path.sep).join('/');
  return measure(relative, readFileSync(file, 'utf8'));
});

test('the walk finds the functions it must judge (one that finds nothing would pass)', () => {
  assert.ok(measured.length > 1000, `only ${measured.length} functions found`);
  const runKfcgi = measured.find((entry) => entry.key === 'kfcgi/index.ts runKfcgi');
  assert.ok(runKfcgi && runKfcgi.lines > 10, `runKfcgi not found or measured as ${runKfcgi?.lines} lines`);
  for (const kind of ['SignalQueue.next', 'SignalQueue.stopPending', 'SignalQueue.constructor', 'SignalQueue.#onStop']) {
    assert.ok(
      measured.some((entry) => entry.key === `kfcgi/index.ts ${kind}`),
      `kfcgi/index.ts ${kind} not found`,
    );
  }
});

test('the measure counts a function from its signature to its closing brace, closures included, its comment not', () => {
  const body = Array.from({ length: 100 }, (_, index) => `  const v${index} = ${index};`).join('\n');
  const text = `/** Why. */\nexport function long(): void {\n${body}\n  const inner = () => {\n    return 1;\n  };\n}\n`;
  const found = measure('synthetic.ts', text);
  assert.deepEqual(
    found.map(({ key, lines }) => ({ key, lines })),
    [
      { key: 'synthetic.ts long', lines: 105 },
      { key: 'synthetic.ts long > inner', lines: 3 },
    ],
  );
});

test(`no function in src/ is longer than ${MAX_LINES} lines, except those listed with their reason`, () => {
  const tooLong = measured
    .filter((entry) => entry.lines > MAX_LINES && !EXCEPTIONS.has(entry.key))
    .map((entry) => `${entry.where} ${entry.name}: ${entry.lines} lines`);
  assert.deepEqual(tooLong, [], `split these into named steps (at most ${MAX_LINES} lines each)`);
});

test('a listed exception does not grow, and leaves the list once it is gone or short enough', () => {
  const problems: string[] = [];
  for (const [key, { lines }] of EXCEPTIONS) {
    const entry = measured.find((candidate) => candidate.key === key);
    if (!entry) problems.push(`${key}: not found; remove it from the exceptions`);
    else if (entry.lines <= MAX_LINES) problems.push(`${key}: ${entry.lines} lines now; remove it from the exceptions`);
    else if (entry.lines > lines) problems.push(`${entry.where} ${entry.name}: ${entry.lines} lines, grown from ${lines}`);
  }
  assert.deepEqual(problems, []);
});

/**
 * The error set is closed: every error src/ throws carries a stable code
 * (a GatehouseError or a subclass, never a bare Error), and every code
 * src/errors.ts defines is raised somewhere (a code nobody raises is a
 * promise callers cannot rely on). Checked on the sources so it cannot drift.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '../../src/errors.js';

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return entry.endsWith('.ts') ? [full] : [];
  });
}

/** The file's text without comments, so that prose about `new Error(` does not count. */
function code(file: string): string {
  return readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

test('src/ throws no bare Error: every error has a code from src/errors.ts', () => {
  const bare = sourceFiles(src).flatMap((file) =>
    code(file)
      .split('\n')
      .flatMap((line, index) =>
        /\bnew (Type|Range)?Error\(/.test(line) ? [`${path.relative(src, file)}:${index + 1}: ${line.trim()}`] : [],
      ),
  );
  assert.deepEqual(bare, [], 'throw a GatehouseError (or a subclass) with an ErrorCode instead');
});

/** A class that extends a built-in error (Error, TypeError, RangeError...) directly. */
const extendsBuiltIn = /\bclass\s+\w+(?:<[^>]*>)?\s+extends\s+(?:globalThis\.)?(?:Aggregate|Eval|Range|Reference|Syntax|Type|URI)?Error\b/;

test('only src/errors.ts extends the built-in errors: every other error class is a GatehouseError', () => {
  // Such a class makes errors without a code, as a bare `new Error(` does, and the check above would not see them.
  const classes = sourceFiles(src)
    .filter((file) => path.relative(src, file) !== 'errors.ts')
    .flatMap((file) =>
      code(file)
        .split('\n')
        .flatMap((line, index) => (extendsBuiltIn.test(line) ? [`${path.relative(src, file)}:${index + 1}: ${line.trim()}`] : [])),
    );
  assert.deepEqual(classes, [], 'extend GatehouseError (or a subclass) from src/errors.ts and give the error a code');
  // The one place allowed: a pattern that matched nothing would pass the check above for any source.
  assert.match(code(path.join(src, 'errors.ts')), extendsBuiltIn, 'GatehouseError in src/errors.ts extends Error');
});

test('every error code src/errors.ts defines is raised somewhere in src/', () => {
  const sources = sourceFiles(src).map(code).join('\n');
  const unused = Object.keys(ErrorCode).filter((name) => !new RegExp(`ErrorCode\\.${name}\\b`).test(sources));
  assert.deepEqual(unused, [], 'raise these codes where they happen, or remove them');
});

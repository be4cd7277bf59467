#!/usr/bin/env node
// The build that ships: npm runs it as `prepare` before `npm pack` and
// `npm publish`, when a git dependency is installed, and after `npm ci` in a
// checkout. It compiles src/ alone with tsconfig.build.json (no tests, no
// source maps: a map would point at src/*.ts, which the package does not ship)
// into a dist/src emptied first, so no .js.map left by `npm run build` (the
// test build, which keeps its maps) can slip into the tarball. Then it checks
// that every file package.json's "bin" and "exports" name exists.
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const require = createRequire(import.meta.url);
const pkg = require('../package.json');

let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc');
} catch {
  console.error(
    'build-package: typescript is not installed, so dist/ cannot be built. Install the dev dependencies first (npm ci without --omit=dev).',
  );
  process.exit(1);
}

rmSync(join(root, 'dist/src'), { recursive: true, force: true });
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);

/** Every file path named by "bin" and "exports", relative to the package root. */
function targets(value) {
  if (typeof value === 'string') return [value];
  if (value && typeof value === 'object') return Object.values(value).flatMap(targets);
  return [];
}
const missing = [...targets(pkg.bin), ...targets(pkg.exports)].filter((target) => !existsSync(join(root, target)));
if (missing.length > 0) {
  console.error(`build-package: package.json names files the build did not make: ${missing.join(', ')}`);
  process.exit(1);
}

function maps(dir) {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return maps(path);
    return entry.endsWith('.map') ? [path] : [];
  });
}
const leftover = maps(join(root, 'dist/src'));
if (leftover.length > 0) {
  console.error(`build-package: source maps in dist/src, which would point at the unshipped src/: ${leftover.join(', ')}`);
  process.exit(1);
}

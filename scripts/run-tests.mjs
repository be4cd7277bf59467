#!/usr/bin/env node
// Runs the compiled test files with node's test runner. Node 20's `node --test`
// does not expand globs, so the files are listed here. Extra arguments are
// substrings that select test files (e.g. `npm test -- codec worker`).
//
// `--node PATH` runs the tests on another node binary (CI runs the suite on
// Node 22 and 24 this way, see .ci/run): the test runner and every process the
// tests start with process.execPath use it, and its directory goes first in
// PATH so that `#!/usr/bin/env node` scripts and npm (which the package test
// runs) use it too.
import { readdirSync, statSync, existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist/test');

function collect(dir) {
  const files = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) files.push(...collect(path));
    else if (entry.endsWith('.test.js')) files.push(path);
  }
  return files;
}

const args = process.argv.slice(2);
let node = process.execPath;
const nodeFlag = args.indexOf('--node');
if (nodeFlag !== -1) {
  const path = args[nodeFlag + 1];
  if (path === undefined || !existsSync(path)) {
    console.error(`--node needs the path of a node binary${path === undefined ? '' : ` (${path} does not exist)`}`);
    process.exit(2);
  }
  node = resolve(path);
  args.splice(nodeFlag, 2);
}
const filters = args;
const files = collect(testRoot)
  .filter((file) => filters.length === 0 || filters.some((filter) => relative(testRoot, file).includes(filter)))
  .sort();
if (files.length === 0) {
  console.error(`no test files matched ${filters.join(' ') || '(all)'} under ${testRoot}`);
  process.exit(1);
}
const env = node === process.execPath ? process.env : { ...process.env, PATH: `${dirname(node)}:${process.env.PATH ?? ''}` };
const version = spawnSync(node, ['--version'], { encoding: 'utf8' });
if (version.status !== 0) {
  console.error(`${node} --version failed: ${version.stderr || version.error?.message}`);
  process.exit(1);
}
console.log(`# ${files.length} test files on node ${version.stdout.trim()} (${node})`);
const result = spawnSync(node, ['--test', '--test-concurrency=2', '--test-timeout=300000', ...files], { stdio: 'inherit', env });
process.exit(result.status ?? 1);

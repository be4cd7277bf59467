/**
 * The layering the README's layout promises, checked on the sources so it
 * cannot drift: dependencies point down only. A failure names the file, the
 * import and the rule it breaks.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const src = path.join(root, 'src');

interface ImportEdge {
  /** The importing file, relative to src/ ("cgi/handler.ts"). */
  from: string;
  /** The specifier as written. */
  specifier: string;
  /** For relative specifiers: the imported file relative to src/ ("errors.ts"); null for packages and node: modules. */
  target: string | null;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return entry.endsWith('.ts') ? [full] : [];
  });
}

function importsOf(file: string): ImportEdge[] {
  const text = readFileSync(file, 'utf8');
  const from = path.relative(src, file);
  const edges: ImportEdge[] = [];
  // Static imports and re-exports (`import x from`, `import type`, `export * from`), side-effect imports
  // (`import './x.js'`) and dynamic import('...').
  const pattern =
    /(?:^|\n)\s*(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g;
  for (const match of text.matchAll(pattern)) {
    const specifier = (match[1] ?? match[2] ?? match[3])!;
    const target = specifier.startsWith('.')
      ? path.relative(src, path.resolve(path.dirname(file), specifier)).replace(/\.js$/, '.ts')
      : null;
    edges.push({ from, specifier, target });
  }
  return edges;
}

const edges = sourceFiles(src).flatMap(importsOf);
const topFolder = (relative: string) => (relative.includes(path.sep) ? relative.split(path.sep)[0]! : '');

function violations(rule: (edge: ImportEdge) => boolean): string[] {
  return edges.filter(rule).map((edge) => `${edge.from} imports ${edge.specifier}`);
}

test('the parser finds the imports it must judge (a walk that finds nothing would pass every rule)', () => {
  assert.ok(edges.length > 200, `only ${edges.length} imports found`);
  assert.ok(edges.some((edge) => edge.from === path.join('cgi', 'handler.ts') && edge.target === 'errors.ts'));
  assert.ok(edges.some((edge) => edge.specifier === 'koffi'));
});

test('the pure codecs import nothing but errors, limits, each other and hashing', () => {
  const codecs = new Set(
    [
      'fastcgi/protocol.ts',
      'fastcgi/records.ts',
      'fastcgi/decoder.ts',
      'fastcgi/name-value.ts',
      'fastcgi/codec.ts',
      'cgid/protocol.ts',
      'spawn/order.ts',
      'cgi/environment.ts',
      'cgi/response-head.ts',
      'cgi/request-from-env.ts',
    ].map(path.normalize),
  );
  const allowed = (edge: ImportEdge) =>
    edge.target === 'errors.ts' ||
    edge.target === 'limits.ts' ||
    (edge.target !== null && codecs.has(edge.target)) ||
    edge.specifier === 'node:crypto';
  assert.deepEqual(
    violations((edge) => codecs.has(edge.from) && !allowed(edge)),
    [],
  );
});

test('only src/sys loads the system-call binding', () => {
  assert.deepEqual(
    violations((edge) => edge.specifier === 'koffi' && topFolder(edge.from) !== 'sys'),
    [],
  );
});

test('src/sys is entered through its index only', () => {
  assert.deepEqual(
    violations(
      (edge) =>
        topFolder(edge.from) !== 'sys' &&
        edge.target !== null &&
        topFolder(edge.target) === 'sys' &&
        edge.target !== path.join('sys', 'index.ts'),
    ),
    [],
  );
});

test('the cores (cgi, fastcgi, sys, spawn, options, log) never import the layers above them (config, cli, http)', () => {
  const cores = new Set(['cgi', 'fastcgi', 'sys', 'spawn', 'options', 'log']);
  const above = new Set(['config', 'cli', 'http']);
  assert.deepEqual(
    violations((edge) => cores.has(topFolder(edge.from)) && edge.target !== null && above.has(topFolder(edge.target))),
    [],
  );
});

test('spawning points down: src/spawn never imports src/cgid or src/serve, which spawn through it', () => {
  // The cgid daemon launches with src/spawn's launcher and the front chooses among daemon, in-process and fork
  // (src/serve/front-spawner.ts); an import back from src/spawn would make a cycle of the two layers.
  const users = new Set(['cgid', 'serve']);
  assert.deepEqual(
    violations((edge) => topFolder(edge.from) === 'spawn' && edge.target !== null && users.has(topFolder(edge.target))),
    [],
  );
});

test('src/sys depends on nothing of gatehouse but errors and limits', () => {
  assert.deepEqual(
    violations(
      (edge) =>
        topFolder(edge.from) === 'sys' &&
        edge.target !== null &&
        topFolder(edge.target) !== 'sys' &&
        edge.target !== 'errors.ts' &&
        edge.target !== 'limits.ts',
    ),
    [],
  );
});

test('nothing imports the command-line layer but the command line', () => {
  assert.deepEqual(
    violations((edge) => topFolder(edge.from) !== 'cli' && edge.target !== null && topFolder(edge.target) === 'cli'),
    [],
  );
});

/**
 * Cycles that must remain, as "a <-> b" (names sorted) with the reason. Empty: every folder of src/ can say which
 * of two others is below it. An entry whose cycle is gone fails the test too, so the list only gets shorter.
 */
const FOLDER_CYCLE_EXCEPTIONS: ReadonlyMap<string, string> = new Map();

/** The folders of src/ as a graph: folder -> the folders its files import ("" for src/'s own files is left out). */
function folderGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const edge of edges) {
    if (edge.target === null) continue;
    const from = topFolder(edge.from);
    const to = topFolder(edge.target);
    if (from === '' || to === '' || from === to) continue;
    if (!graph.has(from)) graph.set(from, new Set());
    graph.get(from)!.add(to);
  }
  return graph;
}

/** The folders that reach each other (Tarjan's strongly connected components), those of two or more only, sorted. */
function folderCycles(graph: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (folder: string) => {
    index.set(folder, index.size);
    low.set(folder, index.get(folder)!);
    stack.push(folder);
    onStack.add(folder);
    for (const next of graph.get(folder) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(folder, Math.min(low.get(folder)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(folder, Math.min(low.get(folder)!, index.get(next)!));
    }
    if (low.get(folder) !== index.get(folder)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== folder);
    if (component.length > 1) components.push(component.sort());
  };
  for (const folder of [...graph.keys()].sort()) if (!index.has(folder)) visit(folder);
  return components.sort((a, b) => a.join().localeCompare(b.join()));
}

/** The imports that close a cycle: each edge between two folders of one component, named by file. */
function cycleImports(component: readonly string[]): string[] {
  const members = new Set(component);
  return violations(
    (edge) =>
      edge.target !== null &&
      topFolder(edge.from) !== topFolder(edge.target) &&
      members.has(topFolder(edge.from)) &&
      members.has(topFolder(edge.target)),
  );
}

test('the cycle finder finds a cycle of three folders and none in a chain (a finder that finds nothing would pass)', () => {
  const cyclic = new Map([
    ['a', new Set(['b'])],
    ['b', new Set(['c'])],
    ['c', new Set(['a', 'd'])],
  ]);
  assert.deepEqual(folderCycles(cyclic), [['a', 'b', 'c']]);
  const chain = new Map([
    ['a', new Set(['b'])],
    ['b', new Set(['c'])],
  ]);
  assert.deepEqual(folderCycles(chain), []);
  assert.ok(folderGraph().size > 10, `only ${folderGraph().size} folders import another`);
});

test('no two top-level folders of src/ import each other, directly or through others', () => {
  const found = folderCycles(folderGraph());
  const unexplained = found
    .filter((component) => !(component.length === 2 && FOLDER_CYCLE_EXCEPTIONS.has(component.join(' <-> '))))
    .map((component) => `${component.join(' <-> ')}:\n  ${cycleImports(component).join('\n  ')}`);
  assert.deepEqual(
    unexplained,
    [],
    `folders that import each other (move the shared piece down, or pass it in):\n${unexplained.join('\n')}`,
  );
  const stale = [...FOLDER_CYCLE_EXCEPTIONS.keys()].filter((name) => !found.some((component) => component.join(' <-> ') === name));
  assert.deepEqual(stale, [], 'exceptions whose cycle is gone: remove them');
});

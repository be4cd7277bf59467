/**
 * The package as users get it: `npm pack` of a checkout without dist/ (what a
 * fresh clone is), the tarball installed into an empty prefix, then the
 * INSTALLED command and modules used the way a user would: `gatehouse
 * --version`, `gatehouse serve` running a CGI script, every entry of
 * package.json "exports" imported from an ESM consumer, and a TypeScript
 * consumer type-checked against the installed declarations (NodeNext).
 * Then the README's install command, read from the README and run by a
 * shell as written (but for its `npm ci`: the copy links this checkout's
 * node_modules), with npm's global prefix a temporary directory: the
 * command it puts in <prefix>/bin runs and serves, and the manual pages are
 * where the README says.
 *
 * The checkout is copied (without node_modules, dist and .git) so that the
 * pack's `prepare` build neither depends on nor disturbs the dist/ the other
 * test files are running from. Dependencies come from the npm registry
 * (--prefer-offline: npm's cache first). koffi's install script is denied in
 * the consumer, as it is in this checkout: its prebuilt binary must load
 * without it (README, "Installing").
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { httpRequest } from '../kit/http.js';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const TSC = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');

interface PackageJson {
  name: string;
  version: string;
  bin: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
}

const SOURCE_PACKAGE = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as PackageJson;

/** Every file path an "exports" entry names (types and default). */
function exportTargets(entry: string | Record<string, string>): string[] {
  return typeof entry === 'string' ? [entry] : Object.values(entry);
}

/** The bare specifier for an "exports" key: '.' is the package name, './fastcgi' is NAME/fastcgi. */
function specifierOf(name: string, subpath: string): string {
  return subpath === '.' ? name : `${name}/${subpath.slice(2)}`;
}

/** The environment without the npm_* variables `npm test` sets, so the nested npm sees no outer project. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.toLowerCase().startsWith('npm_')));
}

const OUTPUT_LIMIT = 256 * 1024;

/**
 * Runs a command to completion within `timeoutMs` (then its whole process
 * group is killed: npm's scripts and tsc included) and resolves with its
 * output; rejects with the output when it fails.
 */
async function run(
  command: string,
  args: readonly string[],
  options: { cwd: string; timeoutMs: number; env?: NodeJS.ProcessEnv },
): Promise<{ stdout: string; stderr: string }> {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: { ...cleanEnv(), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    if (stdout.length < OUTPUT_LIMIT) stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    if (stderr.length < OUTPUT_LIMIT) stderr += chunk.toString('utf8');
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }, options.timeoutMs);
  const { code, signal, error } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(timer);
  const described = `${command} ${args.join(' ')} (in ${options.cwd})`;
  if (error) throw new Error(`${described} could not start: ${error.message}`);
  if (timedOut) throw new Error(`${described} did not finish within ${options.timeoutMs} ms\n${stdout}\n${stderr}`);
  if (code !== 0) throw new Error(`${described} failed (${signal ?? `exit ${code}`})\n--- stdout:\n${stdout}\n--- stderr:\n${stderr}`);
  return { stdout, stderr };
}

test('the packed package installs into an empty prefix and works as installed', { timeout: 900_000 }, async (t) => {
  const work = tempDir(t, 'gatehouse-package-');

  // A checkout as a fresh clone has it: no dist/. node_modules is linked (the
  // dev dependencies `prepare` builds with), not copied.
  const checkout = join(work, 'checkout');
  const skipped = new Set(['node_modules', 'dist', '.git']);
  cpSync(REPO_ROOT, checkout, {
    recursive: true,
    // A tarball left in the checkout by an earlier `npm pack` would be a second match of the README's glob.
    filter: (source) => !skipped.has(relative(REPO_ROOT, source).split('/')[0]!) && !source.endsWith('.tgz'),
  });
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(checkout, 'node_modules'), 'dir');

  const packed = await run('npm', ['pack', '--json', '--pack-destination', work], { cwd: checkout, timeoutMs: 300_000 });
  const [report] = JSON.parse(packed.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  assert.ok(report, `npm pack --json reported nothing:\n${packed.stdout}`);
  const tarball = join(work, basename(report.filename));
  const shipped = new Set(report.files.map((file) => file.path));

  await t.test('the tarball holds the built dist/, the license, and nothing pointing at unshipped sources', () => {
    for (const target of [...Object.values(SOURCE_PACKAGE.bin), ...Object.values(SOURCE_PACKAGE.exports).flatMap(exportTargets)])
      assert.ok(shipped.has(target.replace(/^\.\//, '')), `package.json names ${target}, which the tarball lacks`);
    for (const file of ['LICENSE', 'README.md', 'package.json', 'man/gatehouse-serve.8', 'examples/node-http.mjs'])
      assert.ok(shipped.has(file), `the tarball lacks ${file}`);
    const maps = [...shipped].filter((path) => path.endsWith('.map'));
    assert.deepEqual(maps, [], 'source maps would point at src/, which is not shipped');
    const sources = [...shipped].filter((path) => /^(src|test|bench|dist\/test)\//.test(path));
    assert.deepEqual(sources, [], 'sources, tests and benchmarks stay out of the package');
  });

  // The consumer: an empty project. koffi's install script denied, as in the checkout.
  const prefix = join(work, 'consumer');
  mkdirSync(prefix);
  writeFileSync(
    join(prefix, 'package.json'),
    `${JSON.stringify({ name: 'gatehouse-consumer', private: true, type: 'module', allowScripts: { koffi: false } }, null, 2)}\n`,
  );
  const installed = await run('npm', ['install', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: work,
    timeoutMs: 300_000,
  });
  const packageDir = join(prefix, 'node_modules', SOURCE_PACKAGE.name);
  const installedPackage = JSON.parse(readFileSync(join(packageDir, 'package.json'), 'utf8')) as PackageJson;
  const gatehouse = join(prefix, 'node_modules/.bin/gatehouse');

  await t.test('npm install reports no unsupported engine on this Node', () => {
    assert.doesNotMatch(`${installed.stdout}\n${installed.stderr}`, /EBADENGINE/);
  });

  await t.test('the installed gatehouse --version prints the package version; --help mentions it', async () => {
    assert.ok(existsSync(gatehouse), `npm linked no ${gatehouse}`);
    const version = await run(gatehouse, ['--version'], { cwd: work, timeoutMs: 60_000 });
    assert.equal(version.stdout, `gatehouse ${SOURCE_PACKAGE.version}\n`);
    const help = await run(gatehouse, ['--help'], { cwd: work, timeoutMs: 60_000 });
    assert.match(help.stdout, /--version/);
    // The command starts through `#!/usr/bin/env node`: the node first in PATH
    // is the one under test (run-tests.mjs --node puts it there).
    const pathNode = await run('node', ['--version'], { cwd: work, timeoutMs: 60_000 });
    assert.equal(pathNode.stdout.trim(), process.version, 'the installed command runs on the Node under test');
  });

  await t.test('the installed gatehouse serve runs a CGI script', (t) => serveRunsCgi(t, gatehouse, join(work, 'serve-local')));

  const subpaths = Object.keys(installedPackage.exports);
  const moduleSpecifiers = subpaths
    .filter((subpath) => subpath !== './package.json')
    .map((subpath) => specifierOf(installedPackage.name, subpath));
  let runtimeNames: Record<string, string[]> = {};

  await t.test('every "exports" entry points at an installed file, and imports from an ESM consumer', async () => {
    for (const [subpath, entry] of Object.entries(installedPackage.exports))
      for (const target of exportTargets(entry))
        assert.ok(existsSync(join(packageDir, target)), `exports["${subpath}"] points at ${target}, which was not installed`);
    writeFileSync(
      join(prefix, 'consumer.mjs'),
      [
        "import { createRequire } from 'node:module';",
        `const specifiers = ${JSON.stringify(moduleSpecifiers)};`,
        'const names = {};',
        'for (const specifier of specifiers) names[specifier] = Object.keys(await import(specifier)).sort();',
        `const pkg = createRequire(import.meta.url)(${JSON.stringify(`${installedPackage.name}/package.json`)});`,
        'console.log(JSON.stringify({ version: pkg.version, names }));',
        '',
      ].join('\n'),
    );
    const consumer = await run(process.execPath, ['consumer.mjs'], { cwd: prefix, timeoutMs: 60_000 });
    const result = JSON.parse(consumer.stdout) as { version: string; names: Record<string, string[]> };
    assert.equal(result.version, SOURCE_PACKAGE.version);
    runtimeNames = result.names;
    for (const specifier of moduleSpecifiers) assert.ok(runtimeNames[specifier]!.length > 0, `${specifier} exports nothing`);
    // What the README and docs show importing.
    const root = runtimeNames[installedPackage.name]!;
    for (const name of ['cgi', 'fastcgi', 'createServer', 'FastCGIClient'])
      assert.ok(root.includes(name), `the package root lacks ${name}`);
    assert.ok(runtimeNames[`${installedPackage.name}/fastcgi`]!.includes('createServer'));
    assert.ok(runtimeNames[`${installedPackage.name}/fastcgi/client`]!.includes('FastCGIClient'));
  });

  await t.test('a TypeScript consumer type-checks against the installed declarations (NodeNext)', async () => {
    assert.ok(Object.keys(runtimeNames).length > 0, 'the ESM consumer ran first');
    // Every value the JavaScript exports must be declared: `keyof typeof` the
    // module fails to compile for a name the .d.ts lacks, and an untyped
    // module is an error under strict (TS7016), not a silent `any`.
    const lines = moduleSpecifiers.flatMap((specifier, index) => [
      `import * as module${index} from ${JSON.stringify(specifier)};`,
      `export const names${index}: Array<keyof typeof module${index}> = ${JSON.stringify(runtimeNames[specifier])};`,
    ]);
    lines.push(
      `import { createServer } from ${JSON.stringify(`${installedPackage.name}/fastcgi`)};`,
      'export const server = createServer((request, response) => {',
      "  response.end('typed: ' + request.method + ' ' + request.url);",
      '});',
      '',
    );
    writeFileSync(join(prefix, 'consumer.ts'), lines.join('\n'));
    writeFileSync(
      join(prefix, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
          typeRoots: [join(REPO_ROOT, 'node_modules/@types')],
        },
        files: ['consumer.ts'],
      }),
    );
    await run(process.execPath, [TSC, '-p', join(prefix, 'tsconfig.json')], { cwd: prefix, timeoutMs: 180_000 });
  });

  await t.test(
    "the README's install command, as written, installs a gatehouse that runs (global prefix in a temporary directory)",
    async (t) => {
      const command = readmeInstallCommand();
      // `npm ci` would replace the linked node_modules (this checkout's own); the copy already has what it installs.
      const asRun = command.replace(/^npm ci && /, '');
      assert.notEqual(asRun, command, `the README's install command no longer starts with npm ci: ${command}`);
      const globalPrefix = join(work, 'global');
      mkdirSync(globalPrefix);
      // npm's global prefix is config: the environment sets it without touching the command.
      const env = {
        npm_config_prefix: globalPrefix,
        npm_config_prefer_offline: 'true',
        npm_config_audit: 'false',
        npm_config_fund: 'false',
      };
      await run('/bin/sh', ['-c', asRun], { cwd: checkout, timeoutMs: 600_000, env });
      const installedCommand = join(globalPrefix, 'bin', 'gatehouse');
      assert.ok(existsSync(installedCommand), `the README's command installed no ${installedCommand}`);
      const version = await run(installedCommand, ['--version'], { cwd: work, timeoutMs: 60_000 });
      assert.equal(version.stdout, `gatehouse ${SOURCE_PACKAGE.version}\n`);
      // The README: "its manual pages under $(npm root -g)/gatehouse-server/man/".
      const root = (await run('npm', ['root', '-g'], { cwd: work, timeoutMs: 60_000, env })).stdout.trim();
      assert.ok(root.startsWith(globalPrefix), `npm root -g is ${root}, outside ${globalPrefix}`);
      for (const page of ['gatehouse-serve.8', 'gatehouse-cgid.8', 'gatehouse-kfcgi.8'])
        assert.ok(
          existsSync(join(root, SOURCE_PACKAGE.name, 'man', page)),
          `${page} is not under $(npm root -g)/${SOURCE_PACKAGE.name}/man/`,
        );
      await serveRunsCgi(t, installedCommand, join(work, 'serve-global'));
    },
  );
});

/** `gatehouse serve` from an installed package, serving a CGI script from a directory of its own under `dir`. */
async function serveRunsCgi(t: TestContext, gatehouse: string, dir: string): Promise<void> {
  const cgiBin = join(dir, 'cgi-bin');
  mkdirSync(cgiBin, { recursive: true });
  writeFileSync(
    join(cgiBin, 'hello.sh'),
    '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n"\necho "hello from $SCRIPT_NAME, path $PATH_INFO, $GATEWAY_INTERFACE"\n',
  );
  chmodSync(join(cgiBin, 'hello.sh'), 0o755);
  const port = await freePort();
  const serve = startProcess(
    t,
    gatehouse,
    [
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--cgi-bin',
      cgiBin,
      '--runtime-dir',
      join(dir, 'run'),
      '--access-log',
      'off',
      // As root, serve refuses to start without a user: this test is about the package, so it keeps root on purpose.
      ...(process.getuid?.() === 0 ? ['--user', 'root'] : []),
    ],
    { cwd: dir, env: cleanEnv() },
  );
  await waitForListener({ host: '127.0.0.1', port }, { what: `the installed ${gatehouse} serve`, process: serve, timeoutMs: 30_000 });
  const response = await httpRequest(`http://127.0.0.1:${port}/cgi-bin/hello.sh/extra`);
  assert.equal(response.status, 200, serve.output());
  assert.equal(response.body.toString(), 'hello from /cgi-bin/hello.sh, path /extra, CGI/1.1\n');
  await serve.stop();
}

/** The README's command line that installs the `gatehouse` command (its comment says so), without the comment. */
function readmeInstallCommand(): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const lines = readme.split('\n').filter((line) => /#\s*install the `gatehouse` command/.test(line));
  assert.equal(lines.length, 1, 'the README has one line that installs the gatehouse command');
  return lines[0]!.replace(/\s+#.*$/, '').trim();
}

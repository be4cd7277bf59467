/**
 * One option module for every command: a size, a duration and an address
 * mean the same to `gatehouse serve`'s flags, its TOML file, `gatehouse
 * cgid`'s flags and `gatehouse kfcgi`'s -s, and the grammars are written once.
 * Regression: `cgid --rlimit-mem 512M` was accepted while the same flag of
 * serve was refused ("expected a whole number"), `--max-body 10M` too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadServeConfig } from '../../src/config/load.js';
import { parseCgidOptions } from '../../src/cli/cgid.js';
import { parseCommandLine, validateOptions } from '../../src/kfcgi/options.js';
import { ErrorCode, UsageError } from '../../src/errors.js';
import { tempDir } from '../kit/process.js';

test('512M, 10M, 1G and 2m read the same from serve flags, the serve file and cgid flags', (t) => {
  const dir = tempDir(t, 'gatehouse-options-');
  const flags = loadServeConfig({
    flags: { docroot: dir, 'rlimit-mem': '512M', 'max-body': '10M', 'max-script-output': '1G', 'shutdown-grace': '2m' },
  });
  const file = path.join(dir, 'gatehouse.toml');
  writeFileSync(file, `docroot = "."\nRLimitMEM = "512M"\nmax-body = "10M"\nmax-script-output = "1g"\nshutdown-grace = "2m"\n`);
  const fromFile = loadServeConfig({ file });
  const cgid = parseCgidOptions(['--rlimit-mem', '512M', '--max-output', '1G', '--script-timeout', '2m']);
  for (const config of [flags, fromFile]) {
    assert.equal(config.rlimitMem, 512 * 1024 ** 2);
    assert.equal(config.maxBody, 10 * 1024 ** 2);
    assert.equal(config.maxScriptOutput, 1024 ** 3);
    assert.equal(config.shutdownGraceMs, 120_000);
  }
  assert.equal(cgid['rlimit-mem'], 512 * 1024 ** 2);
  assert.equal(cgid['max-output'], 1024 ** 3);
  assert.equal(cgid['script-timeout'], 120_000);
});

test('a value outside its grammar is a UsageError (GH_USAGE) naming the flag, from every command', (t) => {
  const dir = tempDir(t, 'gatehouse-options-');
  const usage = (load: () => unknown, pattern: RegExp) =>
    assert.throws(load, (error: unknown) => error instanceof UsageError && error.code === ErrorCode.USAGE && pattern.test(error.message));
  usage(() => loadServeConfig({ flags: { docroot: dir, 'max-body': '10X' } }), /^--max-body: "10X" is not a size/);
  usage(() => parseCgidOptions(['--max-output', '10X']), /^--max-output: "10X" is not a size/);
  usage(() => parseCgidOptions(['--fastcgi', '[::1g]:9000']), /^--fastcgi: "\[::1g\]:9000": ::1g is not an IPv6 address/);
  usage(() => parseCgidOptions(['--rlimit-cpu', 'lots']), /^--rlimit-cpu: expected a whole number >= 0, got "lots"/);
  usage(
    () => validateOptions(parseCommandLine(['-p', '/', '-s', '[::1g]:9000', '/bin/true']), {}),
    /-s "\[::1g\]:9000": ::1g is not an IPv6 address/,
  );
});

test('the value grammars are written once, in src/options', () => {
  const src = fileURLToPath(new URL('../../../src/', import.meta.url));
  const files = (dir: string): string[] =>
    readdirSync(dir).flatMap((entry) => {
      const full = path.join(dir, entry);
      return statSync(full).isDirectory() ? files(full) : full.endsWith('.ts') ? [full] : [];
    });
  const definitions = files(src).flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/function (parse\w*(?:Size|Bytes|Duration|Address)|expandIPv6)\b/g)].map(
      (match) => `${path.relative(src, file)}: ${match[1]}`,
    ),
  );
  assert.deepEqual(definitions.sort(), [
    'options/duration.ts: parseDuration',
    'options/listen-address.ts: parseListenAddress',
    'options/size.ts: parseSize',
  ]);
});

/**
 * The logging options of every command read the same words: --log-level
 * (error, warn, info, debug) and --log-format (text, json) for serve (flags
 * and keys) and cgid, -L and -F for kfcgi, where -v stays and means debug;
 * the manuals state the buffer cap the code uses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadServeConfig } from '../../src/config/load.js';
import { parseCgidOptions } from '../../src/cli/cgid.js';
import { parseCommandLine, validateOptions } from '../../src/kfcgi/options.js';
import { LOG_BUFFER_MAX_BYTES } from '../../src/limits.js';
import { tempDir } from '../kit/process.js';

test('serve: log-level and log-format as flags and keys; a word outside them is a usage error naming the flag', (t) => {
  const docroot = tempDir(t);
  const config = loadServeConfig({ flags: { docroot, 'log-level': 'debug', 'log-format': 'json' } });
  assert.equal(config.logLevel, 'debug');
  assert.equal(config.logFormat, 'json');
  const defaults = loadServeConfig({ flags: { docroot } });
  assert.equal(defaults.logLevel, 'info');
  assert.equal(defaults.logFormat, 'text');
  assert.throws(() => loadServeConfig({ flags: { docroot, 'log-level': 'verbose' } }), {
    code: 'GH_USAGE',
    message: /log-level: "verbose" is not one of error, warn, info, debug/,
  });
});

test('cgid: --log-level, --log-format, --error-log', () => {
  const values = parseCgidOptions(['--log-level', 'warn', '--log-format', 'json', '--error-log', '/var/log/cgid.log']);
  assert.deepEqual([values['log-level'], values['log-format'], values['error-log']], ['warn', 'json', '/var/log/cgid.log']);
  assert.throws(() => parseCgidOptions(['--log-format', 'xml']), {
    code: 'GH_USAGE',
    message: /--log-format: "xml" is not one of text, json/,
  });
});

test('kfcgi: -v is debug, -L wins over it, -F json, -E resolved and its directory checked', (t) => {
  const dir = tempDir(t);
  const config = (argv: string[]) => validateOptions(parseCommandLine(['-p', '/', '-s', join(dir, 's.sock'), ...argv, '/bin/sh']));
  assert.equal(config([]).logLevel, 'info');
  assert.equal(config(['-v']).logLevel, 'debug');
  assert.equal(config(['-v', '-L', 'warn']).logLevel, 'warn');
  assert.equal(config(['--log-level=error']).logLevel, 'error');
  assert.equal(config(['-F', 'json']).logFormat, 'json');
  assert.equal(config([]).errorLog, null);
  assert.equal(config(['-E', join(dir, 'k.log')]).errorLog, join(dir, 'k.log'));
  assert.throws(() => config(['-L', 'loud']), { message: /-L level: "loud" is not one of error, warn, info, debug/ });
  assert.throws(() => config(['-E', join(dir, 'missing', 'k.log')]), { message: /-E .*: the directory .*missing does not exist/ });
});

test('the manuals state the cap on log lines held in memory that the code uses', () => {
  const mib = `${LOG_BUFFER_MAX_BYTES / 1024 / 1024} MiB`;
  for (const page of ['gatehouse-serve.8', 'gatehouse-cgid.8', 'gatehouse-kfcgi.8']) {
    const manual = readFileSync(new URL(`../../../man/${page}`, import.meta.url), 'utf8');
    assert.ok(manual.includes(mib), `${page} does not say ${mib}`);
  }
});

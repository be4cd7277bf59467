/**
 * loadServeConfig: the TOML file and the flags through one key table. Errors
 * name the key and say what to write; flags win over the file; relative paths
 * in a file are relative to the file, on the command line to the working directory.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, UsageError, loadServeConfig } from '../../src/config/load.js';
import { SERVE_DEFAULTS } from '../../src/config/schema.js';
import { tempDir } from '../kit/process.js';

function site(t: { after(fn: () => unknown): void }, toml: string): { dir: string; file: string } {
  const dir = tempDir(t, 'gatehouse-config-');
  mkdirSync(join(dir, 'conf'));
  mkdirSync(join(dir, 'conf', 'www'));
  mkdirSync(join(dir, 'conf', 'cgi'));
  mkdirSync(join(dir, 'conf', 'logs'));
  mkdirSync(join(dir, 'elsewhere'));
  const file = join(dir, 'conf', 'gatehouse.toml');
  writeFileSync(file, toml);
  return { dir, file };
}

/** The problems of a configuration error, or of a usage error (a flag's value outside its grammar) when `kind` says so. */
function problemsOf(load: () => unknown, kind: typeof ConfigError | typeof UsageError = ConfigError): string[] {
  try {
    load();
  } catch (error) {
    assert.ok(error instanceof kind, `expected a ${kind.name}, got ${String(error)}`);
    return [...error.problems];
  }
  assert.fail('the configuration was accepted');
}

test("relative paths in the file resolve against the file's directory, not the working directory", (t) => {
  const { dir, file } = site(
    t,
    `docroot = "www"
cgi-bin = "./cgi"
script-log = "logs/script.log"
access-log = "access.log"
error-log = "-"
[[script-alias]]
url = "/tools/"
dir = "cgi"
[[fastcgi]]
url = "/php/"
upstreams = ["unix:run/php.sock", "127.0.0.1:9000"]
root = "www"
`,
  );
  const config = loadServeConfig({ file, cwd: join(dir, 'elsewhere') });
  assert.equal(config.docroot, join(dir, 'conf', 'www'));
  assert.equal(config.cgiBin, join(dir, 'conf', 'cgi'));
  assert.equal(config.scriptLog, join(dir, 'conf', 'logs', 'script.log'));
  assert.equal(config.accessLog, join(dir, 'conf', 'access.log'));
  assert.equal(config.errorLog, '-', '"-" means stderr and is not a path');
  assert.deepEqual(config.scriptAlias, [{ url: '/tools/', dir: join(dir, 'conf', 'cgi') }]);
  assert.deepEqual(config.fastcgi[0]!.upstreams, [`unix:${join(dir, 'conf', 'run', 'php.sock')}`, '127.0.0.1:9000']);
  assert.equal(config.fastcgi[0]!.root, join(dir, 'conf', 'www'));
});

test('a relative path given as a flag resolves against the working directory', (t) => {
  const { dir, file } = site(t, 'docroot = "www"\n');
  mkdirSync(join(dir, 'elsewhere', 'public'));
  const config = loadServeConfig({ file, cwd: join(dir, 'elsewhere'), flags: { docroot: 'public' } });
  assert.equal(config.docroot, join(dir, 'elsewhere', 'public'));
});

test('flags override the file, lists included', (t) => {
  const { file, dir } = site(
    t,
    `listen = ["127.0.0.1:8080", "127.0.0.1:8081"]
docroot = "www"
cgi-ext = [".cgi"]
script-timeout = "20s"
server-name = "from.file"
max-scripts = 3
`,
  );
  const config = loadServeConfig({
    file,
    cwd: dir,
    flags: { listen: ['127.0.0.1:9090'], 'cgi-ext': ['.pl'], 'script-timeout': '500ms', 'server-name': 'from.flag', 'max-scripts': '7' },
  });
  assert.deepEqual(config.listen, ['127.0.0.1:9090']);
  assert.deepEqual(config.cgiExt, ['.pl'], "a --cgi-ext flag replaces the file's list (as --listen does)");
  assert.equal(config.scriptTimeoutMs, 500);
  assert.equal(config.serverName, 'from.flag');
  assert.equal(config.maxScripts, 7);
  // What no flag touched keeps the file's value, and what neither set keeps the default.
  assert.equal(config.docroot, join(dir, 'conf', 'www'));
  assert.equal(config.maxBody, SERVE_DEFAULTS.maxBody);
});

test('Apache directive names are accepted for the keys they correspond to', (t) => {
  const { file } = site(
    t,
    `docroot = "www"
cgi-ext = [".cgi"]
CGIDScriptTimeout = 20
ScriptLog = "script.log"
ScriptLogLength = 4096
ScriptLogBuffer = 512
CGIPassAuth = true
`,
  );
  const config = loadServeConfig({ file });
  assert.equal(config.scriptTimeoutMs, 20_000, 'CGIDScriptTimeout 20 is 20 seconds, as in Apache');
  assert.ok(config.scriptLog?.endsWith('/conf/script.log'));
  assert.equal(config.scriptLogLength, 4096);
  assert.equal(config.scriptLogBuffer, 512);
  assert.equal(config.passAuthorization, true);
});

test('an unknown key names the closest known one', (t) => {
  const { file } = site(t, 'docroot = "www"\nscript-timout = "5s"\nScriptLogLenght = 10\n');
  const problems = problemsOf(() => loadServeConfig({ file }));
  assert.ok(
    problems.some((line) => line.includes("unknown key 'script-timout'") && line.includes("did you mean 'script-timeout'?")),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((line) => line.includes("unknown key 'ScriptLogLenght'") && line.includes("did you mean 'ScriptLogLength'?")),
    problems.join('\n'),
  );
});

test('an unknown flag names the closest option too', () => {
  const problems = problemsOf(() => loadServeConfig({ flags: { docroot: '/', 'scipt-log': '/tmp/x' } }), UsageError);
  assert.ok(
    problems.some((line) => line.includes('unknown option --scipt-log') && line.includes("did you mean 'script-log'?")),
    problems.join('\n'),
  );
});

test('every problem is reported at once, each naming its key and what to write', (t) => {
  const { file } = site(
    t,
    `listen = "127.0.0.1:99999"
docroot = "www"
CGIDScriptTimeout = "soon"
max-body = -1
pass-authorization = "yes"
[[fastcgi]]
url = "app/"
upstreams = []
rooot = "x"
`,
  );
  const problems = problemsOf(() => loadServeConfig({ file }));
  const expect = (pattern: RegExp) =>
    assert.ok(
      problems.some((line) => pattern.test(line)),
      `no problem matches ${pattern}:\n${problems.join('\n')}`,
    );
  expect(/^listen: "127\.0\.0\.1:99999": port 99999 is above 65535/);
  expect(/^CGIDScriptTimeout \(script-timeout\): "soon" is not a duration; write 20 \(seconds\), 20s, 500ms/);
  expect(/^max-body: -1 is not a size; write bytes \(1048576\) or a number with K, M or G/);
  expect(/^pass-authorization: expected true or false, got "yes"/);
  expect(/^fastcgi\[0\]\.url: expected a URL prefix starting with "\/", such as "\/app\/"/);
  expect(/^fastcgi\[0\]\.upstreams: expected a list of addresses such as \["unix:/);
  expect(/^fastcgi\[0\]: unknown key 'rooot' \(did you mean 'root'\?\)/);
  assert.equal(problems.length, 7, problems.join('\n'));
});

test('cross-field checks: nothing to serve, missing directories, endings without a docroot', (t) => {
  const dir = tempDir(t, 'gatehouse-config-');
  assert.match(problemsOf(() => loadServeConfig({ flags: {} }))[0]!, /nothing to serve: give --docroot DIR, --cgi-bin DIR/);
  assert.match(
    problemsOf(() => loadServeConfig({ flags: { docroot: join(dir, 'missing') } }))[0]!,
    /^docroot: .*missing is not a directory/,
  );
  assert.match(problemsOf(() => loadServeConfig({ flags: { 'cgi-bin': dir, 'cgi-ext': ['.cgi'] } }))[0]!, /^cgi-ext: set docroot too/);
  assert.match(
    problemsOf(() => loadServeConfig({ flags: { docroot: dir, 'cgi-ext': ['cgi'] } }))[0]!,
    /^cgi-ext: "cgi" is not a file ending; write it with its dot, like \.cgi/,
  );
  assert.match(
    problemsOf(() => loadServeConfig({ flags: { docroot: dir, 'headers-timeout': '30s', 'request-timeout': '10s' } }))[0]!,
    /^request-timeout \(10000 ms\) is shorter than headers-timeout \(30000 ms\)/,
  );
});

test('regression: script-timeout 0 is refused by the check instead of crashing the server at start', (t) => {
  const dir = tempDir(t, 'gatehouse-config-');
  assert.match(
    problemsOf(() => loadServeConfig({ flags: { 'cgi-bin': dir, 'script-timeout': '0' } }))[0]!,
    /^script-timeout: must be longer than 0/,
  );
});

test('a file that is not TOML, or cannot be read, is one problem with its line', (t) => {
  const { file } = site(t, 'docroot = "www"\nlisten = [\n');
  assert.match(problemsOf(() => loadServeConfig({ file }))[0]!, /^not valid TOML: line \d+, column \d+/);
  assert.match(problemsOf(() => loadServeConfig({ file: `${file}.missing` }))[0]!, /^cannot read the config file: .*ENOENT/);
});

test('regression: an upstream the FastCGI client cannot parse fails the check, not the start', (t) => {
  const { file } = site(
    t,
    'docroot = "www"\n[[fastcgi]]\nurl = "/php/"\nupstreams = ["php-fpm.sock", "127.0.0.1:99999", "unix:run/ok.sock"]\n',
  );
  const problems = problemsOf(() => loadServeConfig({ file }));
  assert.equal(problems.length, 2, problems.join('\n'));
  assert.match(problems[0]!, /^fastcgi\[0\]\.upstreams: FastCGI address "php-fpm\.sock" is not an address; write .*unix:\/path or \/path/);
  assert.match(problems[1]!, /^fastcgi\[0\]\.upstreams: FastCGI address "127\.0\.0\.1:99999": port 99999 is above 65535/);
});

test('values that would leave the server useless are refused: no listen address, a head limit below any request', (t) => {
  const dir = tempDir(t, 'gatehouse-config-');
  const file = join(dir, 'g.toml');
  writeFileSync(file, `docroot = "${dir}"\nlisten = []\nmax-header-bytes = 10\n`);
  const problems = problemsOf(() => loadServeConfig({ file }));
  assert.ok(
    problems.some((line) => /^listen: give at least one address/.test(line)),
    problems.join('\n'),
  );
  assert.ok(
    problems.some((line) => /^max-header-bytes: 10 is too small for any request head; write at least 1024/.test(line)),
    problems.join('\n'),
  );
});

test('a FastCGI route may turn keep-alive to the application off (fastcgi_keep_conn); it is on unless told', (t) => {
  const { file } = site(
    t,
    'docroot = "www"\n[[fastcgi]]\nurl = "/a/"\nupstreams = ["127.0.0.1:9000"]\nkeep-alive = false\n[[fastcgi]]\nurl = "/b/"\nupstreams = ["127.0.0.1:9001"]\n',
  );
  const config = loadServeConfig({ file });
  assert.equal(config.fastcgi[0]!.keepAlive, false);
  assert.equal(config.fastcgi[1]!.keepAlive, undefined);
  const bad = site(t, 'docroot = "www"\n[[fastcgi]]\nurl = "/a/"\nupstreams = ["127.0.0.1:9000"]\nkeep-alive = "no"\n');
  assert.match(problemsOf(() => loadServeConfig({ file: bad.file }))[0]!, /^fastcgi\[0\]\.keep-alive: expected true or false/);
});

test('a FastCGI route may turn connection multiplexing on; it is off unless asked for', (t) => {
  const { file } = site(
    t,
    'docroot = "www"\n[[fastcgi]]\nurl = "/a/"\nupstreams = ["127.0.0.1:9000"]\nmultiplex = true\n[[fastcgi]]\nurl = "/b/"\nupstreams = ["127.0.0.1:9001"]\n',
  );
  const config = loadServeConfig({ file });
  assert.equal(config.fastcgi[0]!.multiplex, true);
  assert.equal(config.fastcgi[1]!.multiplex, undefined);
  const bad = site(t, 'docroot = "www"\n[[fastcgi]]\nurl = "/a/"\nupstreams = ["127.0.0.1:9000"]\nmultiplex = "yes"\n');
  assert.match(problemsOf(() => loadServeConfig({ file: bad.file }))[0]!, /^fastcgi\[0\]\.multiplex: expected true or false/);
});

test('a log that cannot be opened stops the start, as in Apache, instead of serving with nothing logged', (t) => {
  const dir = tempDir(t, 'gatehouse-config-');
  const problems = problemsOf(() =>
    loadServeConfig({
      flags: {
        docroot: dir,
        'access-log': join(dir, 'missing', 'access.log'),
        'error-log': dir,
        'script-log': join(dir, 'nope', 'script.log'),
      },
    }),
  );
  assert.deepEqual(problems, [
    `access-log: the directory of ${join(dir, 'missing', 'access.log')} does not exist; create it, or write - for the console`,
    `error-log: ${dir} is a directory; give a file name`,
    `script-log: the directory of ${join(dir, 'nope', 'script.log')} does not exist; create it, or write - for the console`,
  ]);
  assert.equal(loadServeConfig({ flags: { docroot: dir, 'access-log': 'off', 'error-log': '-' } }).accessLog, 'off');
});

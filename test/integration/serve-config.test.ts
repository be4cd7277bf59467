/** `gatehouse serve --check` and configuration mistakes, through the real CLI. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { rawExchange } from '../kit/raw-http.js';
import { runGatehouse, startGatehouse } from '../kit/serve.js';

test('--check on a valid file: exit 0 and a summary with paths resolved against the file', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  mkdirSync(join(dir, 'site', 'www'), { recursive: true });
  mkdirSync(join(dir, 'site', 'cgi'));
  writeFileSync(
    join(dir, 'site', 'gatehouse.toml'),
    `listen = "127.0.0.1:8099"
docroot = "www"
cgi-bin = "cgi"
cgi-ext = [".cgi"]
CGIDScriptTimeout = "5s"
ScriptLog = "script.log"
[[fastcgi]]
url = "/php/"
upstreams = ["unix:php.sock", "127.0.0.1:9000"]
split-path = ".php"
index = "index.php"
`,
  );
  // Run from another directory: the file's relative paths must not depend on where gatehouse was started.
  const result = await runGatehouse(['serve', '--config', 'site/gatehouse.toml', '--check'], { cwd: dir });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(
    result.stdout,
    [
      'configuration OK (site/gatehouse.toml)',
      'listen: 127.0.0.1:8099',
      `docroot: ${join(dir, 'site', 'www')} (CGI: .cgi)`,
      `/cgi-bin/ -> ${join(dir, 'site', 'cgi')}`,
      `/php/ -> FastCGI unix:${join(dir, 'site', 'php.sock')}, 127.0.0.1:9000`,
      'script-timeout: 5000 ms',
      `script-log: ${join(dir, 'site', 'script.log')}`,
      'access-log: -',
      'error-log: -',
      '',
    ].join('\n'),
  );
});

test('--check on an invalid file: exit 1, every problem named with what to write', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  mkdirSync(join(dir, 'www'));
  writeFileSync(
    join(dir, 'bad.toml'),
    `docroot = "www"
script-timout = "5s"
CGIDScriptTimeout = "five"
ScriptLog = 3
`,
  );
  const result = await runGatehouse(['serve', '--config', join(dir, 'bad.toml'), '--check']);
  assert.equal(result.code, 1);
  assert.equal(result.stdout, '');
  assert.match(result.stderr, /^gatehouse serve: invalid configuration: .*bad\.toml: 3 problems:/);
  assert.match(result.stderr, /unknown key 'script-timout'; did you mean 'script-timeout'\?/);
  assert.match(result.stderr, /CGIDScriptTimeout \(script-timeout\): "five" is not a duration; write 20 \(seconds\), 20s, 500ms/);
  assert.match(result.stderr, /ScriptLog \(script-log\): expected a non-empty string, got 3/);
});

test('--check with flags only, and flags over a file', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'other'));
  writeFileSync(join(dir, 'gatehouse.toml'), 'docroot = "www"\nscript-timeout = "20s"\nlisten = "127.0.0.1:8001"\n');
  const result = await runGatehouse(
    [
      'serve',
      '--config',
      'gatehouse.toml',
      '--docroot',
      'other',
      '--script-timeout',
      '250ms',
      '--listen',
      '127.0.0.1:8002',
      '--listen',
      '[::1]:8003',
      '--check',
    ],
    { cwd: dir },
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^listen: 127\.0\.0\.1:8002, \[::1\]:8003$/m);
  assert.match(result.stdout, new RegExp(`^docroot: ${join(dir, 'other')}$`, 'm'));
  assert.match(result.stdout, /^script-timeout: 250 ms$/m);
});

test('an unknown flag: exit 2 and the closest option suggested', async (_t) => {
  const result = await runGatehouse(['serve', '--docroot', '/', '--script-timout', '5s']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /Unknown option '--script-timout'; did you mean --script-timeout\?/);
  assert.match(result.stderr, /Run 'gatehouse serve --help'/);
});

test('--help lists every flag the issue names', async (_t) => {
  const result = await runGatehouse(['serve', '--help']);
  assert.equal(result.code, 0);
  for (const flag of [
    '--listen',
    '--docroot',
    '--cgi-bin',
    '--cgi-ext',
    '--script-timeout',
    '--server-name',
    '--script-log',
    '--config',
    '--check',
  ]) {
    assert.match(result.stdout, new RegExp(`^  ${flag}\\b`, 'm'), `--help lacks ${flag}`);
  }
});

test('an invalid configuration stops the server before it listens (exit 1, nothing started)', async (_t) => {
  const result = await runGatehouse(['serve', '--listen', '127.0.0.1:1', '--docroot', '/nonexistent-gatehouse-dir']);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /docroot: \/nonexistent-gatehouse-dir is not a directory/);
});

test('the flags of the simple case serve a CGI script with the configured name and timeout', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'cgi', 'name.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n%s\\n" "$SERVER_NAME"\n', { mode: 0o755 });
  writeFileSync(join(dir, 'cgi', 'slow.sh'), '#!/bin/sh\nsleep 30\n', { mode: 0o755 });
  const server = await startGatehouse(
    t,
    'serve',
    ['--docroot', 'www', '--cgi-bin', 'cgi', '--server-name', 'configured.example', '--script-timeout', '300ms', '--access-log', 'off'],
    { cwd: dir },
  );
  // A request without a Host header: SERVER_NAME comes from --server-name.
  const named = await rawExchange(server.port, 'GET /cgi-bin/name.sh HTTP/1.0\r\n\r\n');
  assert.match(named.text, /^HTTP\/1\.1 200 /);
  assert.match(named.text, /\r\n\r\nconfigured\.example\n$/);
  const slow = await httpRequest(`${server.base}/cgi-bin/slow.sh`);
  assert.equal(slow.status, 504, 'a script silent for longer than --script-timeout is stopped with 504');
});

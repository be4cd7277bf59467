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
user = "www-data"
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
  const result = await runGatehouse(['serve', '--config', 'site/gatehouse.toml', '--check'], { cwd: dir, asWritten: true });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(
    result.stdout,
    [
      'configuration OK (site/gatehouse.toml)',
      'listen: 127.0.0.1:8099',
      'user: www-data (uid 33, gid 33 www-data)',
      // Routes in the order they are tried: FastCGI patterns, then prefixes, then the document root.
      `/php/ -> FastCGI unix:${join(dir, 'site', 'php.sock')}, 127.0.0.1:9000`,
      `/cgi-bin/ -> ${join(dir, 'site', 'cgi')}`,
      `docroot: ${join(dir, 'site', 'www')} (CGI: .cgi)`,
      'script-timeout: 5000 ms',
      `script-log: ${join(dir, 'site', 'script.log')}`,
      'access-log: - (combined)',
      'error-log: - (level info, text)',
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

test('sizes and durations: serve takes what cgid takes (512M, 10M), and a value outside the grammar is a usage error (exit 2)', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  const sizes = ['--max-body', '10M', '--rlimit-mem', '512M', '--script-log-length', '10M', '--max-script-output', '1G'];
  const ok = await runGatehouse(['serve', '--docroot', dir, ...sizes, '--shutdown-grace', '2m', '--check']);
  assert.equal(ok.code, 0, ok.stderr);
  const cgid = await runGatehouse(['cgid', '--rlimit-mem', '1.5G', '--script-timeout', 'soon']);
  assert.equal(cgid.code, 2, cgid.stderr);
  assert.match(cgid.stderr, /^gatehouse cgid: --script-timeout: "soon" is not a duration/m);
  assert.match(cgid.stderr, /^gatehouse cgid: --rlimit-mem: "1\.5G" is not a size; write bytes \(1048576\) or a number with K, M or G/m);
  const serve = await runGatehouse(['serve', '--docroot', dir, '--max-body', '10X', '--rlimit-mem', '1.5G']);
  assert.equal(serve.code, 2, serve.stderr);
  assert.match(serve.stderr, /^gatehouse serve: --max-body: "10X" is not a size; write bytes \(1048576\) or a number with K, M or G/m);
  assert.match(serve.stderr, /^gatehouse serve: --rlimit-mem: "1\.5G" is not a size/m);
  assert.match(serve.stderr, /Run 'gatehouse serve --help'/);
  const listen = await runGatehouse(['serve', '--docroot', dir, '--listen', '[::1g]:80']);
  assert.equal(listen.code, 2, listen.stderr);
  assert.match(listen.stderr, /--listen: "\[::1g\]:80": ::1g is not an IPv6 address/);
  const example = await runGatehouse(['example', '--lisen', '127.0.0.1:1']);
  assert.equal(example.code, 2, example.stderr);
  assert.match(example.stderr, /did you mean --listen\?/);
});

test('--check reports a shadowed route and a suexec user below the minimum, one line each with what to write', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-config-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `docroot = "www"
cgi-bin = "cgi"
[[fastcgi]]
extensions = [".php"]
upstreams = ["127.0.0.1:9000"]
[[fastcgi]]
url = "/blog/"
extensions = [".php"]
upstreams = ["127.0.0.1:9001"]
[[script-alias]]
url = "/cgi-bin/"
dir = "cgi"
user = "www-data"
`,
  );
  const result = await runGatehouse(['serve', '--config', join(dir, 'gatehouse.toml'), '--check']);
  assert.equal(result.code, 1, result.stdout);
  assert.match(result.stderr, /: 4 problems:/);
  assert.match(
    result.stderr,
    /^ {2}- script-alias\[0\]\.user: www-data has uid 33, below suexec-min-uid \(1000\), .*; name a user with a uid of at least 1000, or lower suexec-min-uid$/m,
  );
  assert.match(result.stderr, /^ {2}- script-alias\[0\]\.group: www-data has gid 33, below suexec-min-gid \(1000\)/m);
  assert.match(
    result.stderr,
    /^ {2}- fastcgi\[1\] \(url = "\/blog\/", extensions = \[".php"\]\): never used: fastcgi\[0\] \(url = "\/", extensions = \[".php"\]\) comes first and takes every path it would; remove it, or give it another url, match or extensions$/m,
  );
  assert.match(
    result.stderr,
    /^ {2}- script-alias\[0\] \(url = "\/cgi-bin\/"\): never used: cgi-bin \(url = "\/cgi-bin\/"\) has the same url and comes first/m,
  );
});

test('--help lists every flag the issue names', async () => {
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

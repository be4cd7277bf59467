/**
 * Regressions in what the logs name:
 *  - an IPv4 client of a dual-stack (::) listener was logged as
 *    ::ffff:127.0.0.1 in the access log, where REMOTE_ADDR already said
 *    127.0.0.1 (as Apache and nginx log it);
 *  - a FastCGI response cut short was logged with its upstream twice
 *    ("fastcgi: unix:/x.sock: /s.php: unix:/x.sock (/s.php) announced ...").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { waitForValue } from '../kit/wait.js';
import { startServe } from '../kit/serve-logged.js';

const BOUND_MS = 20_000;

test('the access log shows an IPv4 client of a [::] listener as a.b.c.d, as REMOTE_ADDR does', async (t) => {
  const dir = tempDir(t, 'gatehouse-log-addresses-');
  writeFileSync(join(dir, 'hello.txt'), 'hello\n');
  const accessLog = join(dir, 'access.log');
  const port = await freePort();
  const serve = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['serve', '--listen', `[::]:${port}`, '--docroot', dir, '--access-log', accessLog]),
  ]);
  await waitForListener({ host: '127.0.0.1', port }, { process: serve, timeoutMs: BOUND_MS }).catch((error: Error) => {
    throw new Error(`gatehouse serve did not start: ${error.message}\n${serve.output()}`);
  });
  assert.equal((await httpRequest(`http://127.0.0.1:${port}/hello.txt`)).status, 200);
  const log = await waitForValue(
    () => (existsSync(accessLog) ? readFileSync(accessLog, 'utf8') : ''),
    (text) => text.includes('GET /hello.txt'),
    'the access log line',
    { timeoutMs: BOUND_MS },
  );
  assert.match(log, /^127\.0\.0\.1 - - \[.*\] "GET \/hello\.txt HTTP\/1\.1" 200 /m);
  assert.doesNotMatch(log, /::ffff:/);
});

test('a FastCGI response shorter than its Content-Length is logged naming its upstream once', async (t) => {
  const fpm = await startPhpFpm(t, { scripts: { 'short.php': `<?php header('Content-Length: 100'); echo "short";` } });
  const dir = tempDir(t, 'gatehouse-log-upstream-');
  const config = join(dir, 'gatehouse.toml');
  writeFileSync(config, `[[fastcgi]]\nextensions = [".php"]\nupstreams = ["${fpm.addressString}"]\nroot = "${fpm.docRoot}"\n`);
  const site = await startServe(t, ['--config', config]);
  await httpRequest(`http://127.0.0.1:${site.port}/short.php`, { timeoutMs: BOUND_MS }).catch(() => null);
  const log = await waitForValue(
    () => site.log(),
    (text) => text.includes('announced Content-Length'),
    'the cut response logged',
    { timeoutMs: BOUND_MS },
  );
  const line = log.split('\n').find((entry) => entry.includes('announced Content-Length'))!;
  assert.equal(line.split(fpm.addressString).length - 1, 1, `the upstream is named once: ${line}`);
  assert.match(line, /fastcgi: \S+: \S+short\.php: the application announced Content-Length 100 but wrote 5 bytes/);
});

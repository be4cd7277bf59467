/**
 * The php-fpm example of man/gatehouse-serve.8, run as pasted: the TOML is
 * taken from the manual page itself, only its machine-specific paths and
 * address are replaced (each must appear in it, so a changed example fails
 * here instead of being skipped), and `gatehouse serve` runs it in front of a
 * real php-fpm. Regression for the example that sent every request to
 * php-fpm (url = "/"): /hello.txt answered 403 and /cgi-bin/env.sh 404.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { CGI_FIXTURES, GATEHOUSE_MAIN, REPO_ROOT } from '../kit/paths.js';
import { asRootOnPurpose, runGatehouse } from '../kit/serve.js';

/** The literal block that follows `lead` in an mdoc page, with roff's escapes turned back into the characters they print. */
function literalBlockAfter(manual: string, lead: string): string {
  const at = manual.indexOf(lead);
  assert.notEqual(at, -1, `the manual has no "${lead}"`);
  const start = manual.indexOf('.Bd -literal', at);
  const end = manual.indexOf('\n.Ed', start);
  assert.ok(start !== -1 && end !== -1, 'no literal block after the lead');
  const body = manual.slice(manual.indexOf('\n', start) + 1, end);
  return `${body
    .replace(/\\\(dq/g, '"')
    .replace(/\\e/g, '\\')
    .replace(/\\&/g, '')}\n`;
}

/** Replaces each machine-specific value of the example, checking that the example has it. */
function localise(toml: string, replacements: Record<string, string>): string {
  let text = toml;
  for (const [pasted, local] of Object.entries(replacements)) {
    assert.ok(text.includes(pasted), `the manual's example no longer contains ${pasted}:\n${toml}`);
    text = text.split(pasted).join(local);
  }
  return text;
}

test("the manual's php-fpm example, as pasted: PHP to php-fpm, static files and cgi-bin kept", async (t) => {
  const manual = readFileSync(join(REPO_ROOT, 'man', 'gatehouse-serve.8'), 'utf8');
  const pasted = literalBlockAfter(manual, 'with PHP through php-fpm');
  const fpm = await startPhpFpm(t, {
    scripts: {
      'index.php': `<?php header('Content-Type: text/plain'); echo "php ", PHP_MAJOR_VERSION, " SCRIPT_NAME=", $_SERVER['SCRIPT_NAME'], " PATH_INFO=", $_SERVER['PATH_INFO'] ?? '', "\\n";`,
    },
  });
  writeFileSync(join(fpm.docRoot, 'hello.txt'), 'hello from the document root\n');
  const dir = tempDir(t, 'gatehouse-manual-example-');
  const port = await freePort();
  const file = join(dir, 'gatehouse.toml');
  writeFileSync(
    file,
    localise(pasted, {
      '127.0.0.1:8080': `127.0.0.1:${port}`,
      '/var/www/html': fpm.docRoot,
      '/usr/lib/cgi-bin': CGI_FIXTURES.replace(/\/$/, ''),
      'unix:/run/php/php8.2-fpm.sock': fpm.addressString,
      '/var/log/gatehouse/script.log': join(dir, 'script.log'),
    }),
  );

  const check = await runGatehouse(['serve', '--config', file, '--check']);
  assert.equal(check.code, 0, `--check refused the manual's example:\n${check.stderr}`);

  const server = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['serve', '--config', file])]);
  await waitForListener({ host: '127.0.0.1', port }, { process: server, timeoutMs: 15_000, what: 'gatehouse' }).catch((error: Error) => {
    throw new Error(`gatehouse serve did not start with the manual's example: ${error.message}\n${server.output()}`);
  });
  const base = `http://127.0.0.1:${port}`;

  const staticFile = await httpRequest(`${base}/hello.txt`);
  assert.equal(staticFile.status, 200, `/hello.txt: ${staticFile.body.toString()}`);
  assert.equal(staticFile.body.toString(), 'hello from the document root\n');

  const script = await httpRequest(`${base}/cgi-bin/env.sh`);
  assert.equal(script.status, 200, `/cgi-bin/env.sh: ${script.body.toString()}\n${server.output()}`);
  assert.match(script.body.toString(), /^GATEWAY_INTERFACE=CGI\/1\.1$/m);
  assert.match(script.body.toString(), /^SCRIPT_NAME=\/cgi-bin\/env\.sh$/m);

  const php = await httpRequest(`${base}/index.php`);
  assert.equal(php.status, 200, `/index.php: ${php.body.toString()}`);
  assert.match(php.body.toString(), /^php \d+ SCRIPT_NAME=\/index\.php PATH_INFO=\n$/);

  const pathInfo = await httpRequest(`${base}/index.php/extra/path`);
  assert.match(pathInfo.body.toString(), /^php \d+ SCRIPT_NAME=\/index\.php PATH_INFO=\/extra\/path\n$/);
  const index = await httpRequest(`${base}/`);
  assert.match(index.body.toString(), /^php \d+ SCRIPT_NAME=\/index\.php PATH_INFO=\n$/);
});

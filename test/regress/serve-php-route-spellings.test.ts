/**
 * Regression: a FastCGI route was matched on the request path as written, and
 * the static document root (which holds the PHP files, as in most PHP sites)
 * on the normalised one, so `/%70hp/info.php`, `//php/info.php` or
 * `/x/../php/info.php` missed the route and the static handler sent the PHP
 * source. Every spelling of the route's path must reach PHP.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startPhpFpm } from '../kit/php-fpm.js';
import { tempDir } from '../kit/process.js';
import { rawExchange, statusCodes } from '../kit/raw-http.js';
import { startGatehouse } from '../kit/serve.js';

test("an encoded or dotted spelling of a PHP route's path still goes to PHP, never to the static files", async (t) => {
  const dir = tempDir(t, 'gatehouse-regress-php-');
  mkdirSync(join(dir, 'site', 'php'), { recursive: true });
  writeFileSync(
    join(dir, 'site', 'php', 'info.php'),
    `<?php header('Content-Type: application/json'); echo json_encode(['SCRIPT_FILENAME' => $_SERVER['SCRIPT_FILENAME']]);`,
  );
  const fpm = await startPhpFpm(t, { scripts: {}, children: 1, poolConfig: 'security.limit_extensions = .php' });
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `access-log = "off"
# The PHP files are inside the static document root too: a request that missed the route would get their source.
docroot = "site"

[[fastcgi]]
url = "/php/"
upstreams = ["${fpm.addressString}"]
root = "site"
split-path = ".php"
`,
  );
  const server = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')], { cwd: dir });
  for (const path of ['/%70hp/info.php', '//php/info.php', '/x/../php/info.php', '/./php/info.php', '/php//info.php']) {
    const raw = await rawExchange(server.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    assert.ok(!raw.text.includes('<?php'), `${path} served the PHP source:\n${raw.text}`);
    assert.deepEqual(statusCodes(raw.text), [200], `${path}: ${raw.text}`);
    assert.match(raw.text, /"SCRIPT_FILENAME":"[^"]*\\\/php\\\/info\.php"/, path);
  }
});

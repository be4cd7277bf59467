/**
 * Regression: the 301 that adds a directory's trailing slash echoed the
 * request path, so `GET //docs` (the directory docs/, reached through an
 * empty first segment) answered `Location: //docs/`, which a browser reads as
 * the host "docs": an open redirect. Leading slashes are collapsed, so the
 * Location always stays on this server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { rawExchange, statusCodes } from '../kit/raw-http.js';
import { startGatehouse } from '../kit/serve.js';

test('a directory redirect never points at another host (//host)', async (t) => {
  const www = join(tempDir(t, 'gatehouse-regress-redirect-'), 'www');
  mkdirSync(join(www, 'docs'), { recursive: true });
  writeFileSync(join(www, 'docs', 'index.html'), '<p>docs</p>\n');
  const server = await startGatehouse(t, 'serve', ['--docroot', www, '--access-log', 'off']);
  const result = await rawExchange(server.port, 'GET //docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.deepEqual(statusCodes(result.text), [301]);
  assert.match(result.text, /\r\nLocation: \/docs\/\r\n/);
});

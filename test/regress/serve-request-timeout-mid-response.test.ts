/**
 * Regression: when request-timeout fired while a CGI script was already
 * answering (its head sent, the request body still trickling in), the front
 * wrote a complete 408 response into the middle of the running one. The
 * connection must be cut instead, and the cut response must not look complete.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { CGI_FIXTURES } from '../kit/paths.js';
import { tempDir } from '../kit/process.js';
import { rawExchange, statusCodes } from '../kit/raw-http.js';
import { startGatehouse } from '../kit/serve.js';

test('a body slower than request-timeout while the script already answers: the connection is cut, no 408 inside the body', async (t) => {
  const dir = tempDir(t, 'gatehouse-regress-timeout-');
  mkdirSync(join(dir, 'cgi'));
  // echo.sh sends its head at once, then echoes the body as it arrives.
  copyFileSync(join(CGI_FIXTURES, 'echo.sh'), join(dir, 'cgi', 'echo.sh'));
  const server = await startGatehouse(t, 'serve', [
    '--cgi-bin',
    join(dir, 'cgi'),
    '--headers-timeout',
    '1s',
    '--request-timeout',
    '1s',
    '--access-log',
    'off',
  ]);
  // 10 of the 100 bytes announced, then nothing: the timeout fires while the response runs.
  const result = await rawExchange(server.port, 'POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b', {
    waitMs: 12_000,
  });
  assert.equal(result.closedByServer, true);
  assert.deepEqual(statusCodes(result.text), [200], result.text);
  assert.ok(!result.text.includes('408'), `an error response was written into the running one:\n${result.text}`);
  assert.ok(!result.text.endsWith('0\r\n\r\n'), 'a cut response must not look complete (no last chunk)');
});

/**
 * Regression: a chunked request body over max-body is answered 413 and the
 * connection closed; logging that request read req.socket after Node had
 * detached it, and the TypeError took the whole server down. The request is
 * logged (413) and the server goes on serving.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { httpRequest } from '../kit/http.js';
import { isRunning, tempDir } from '../kit/process.js';
import { startGatehouse } from '../kit/serve.js';
import { waitForText } from '../kit/wait.js';

test('a chunked body over max-body: 413 in the access log, and the server still serves', async (t) => {
  const dir = tempDir(t, 'gatehouse-regress-413-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  writeFileSync(join(dir, 'cgi', 'ok.sh'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nok\\n'\n", { mode: 0o755 });
  const accessLog = join(dir, 'access.log');
  const server = await startGatehouse(t, 'serve', [
    '--docroot',
    join(dir, 'www'),
    '--cgi-bin',
    join(dir, 'cgi'),
    '--max-body',
    '1000',
    '--access-log',
    accessLog,
  ]);
  async function* chunks() {
    for (let i = 0; i < 5; i++) yield Buffer.alloc(1000, 'x');
  }
  // The front may close the connection before the client sent everything: a reset is the client's view then.
  const tooBig = await httpRequest(`${server.base}/cgi-bin/ok.sh`, { method: 'POST', body: chunks() }).catch((error: Error) => error);
  if (!(tooBig instanceof Error)) assert.equal(tooBig.status, 413);
  const log = await waitForText(accessLog, '" 413 ', 'the 413 in the access log', {
    giveUpIf: () => !isRunning(server.child) && 'gatehouse serve exited',
    context: server.output,
  });
  assert.match(log, /^127\.0\.0\.1 - - \[[^\]]+\] "POST \/cgi-bin\/ok\.sh HTTP\/1\.1" 413 \d+ "-" "-"$/m);
  assert.equal((await httpRequest(`${server.base}/a.txt`)).status, 200, `the server died:\n${server.output()}`);
});

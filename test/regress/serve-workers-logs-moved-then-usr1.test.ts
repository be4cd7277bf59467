/**
 * Regression (found in the operator run): `serve --workers 2 --user www-data`
 * started as root, its logs moved away by hand (`mv`, no logrotate `create`),
 * then SIGUSR1, as gatehouse-serve(8) says to rotate. The supervisor, still
 * root, reopened its error log and so made a new error.log owned by root; the
 * workers, already www-data, could open neither it (EACCES) nor a new
 * access.log in a directory only root may write, and went on writing into the
 * moved files. As nginx's master does, the supervisor now makes the moved
 * files again and gives them to the workers' user before passing SIGUSR1 on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startGatehouse } from '../kit/serve.js';
import { textOf, waitForText, waitForValue } from '../kit/wait.js';

/** How many of the access log's lines are of the requests sent after the rotation. */
const linesAfter = (text: string) => text.split('\n').filter((line) => line.includes('/a.txt?after-')).length;

const USER = 'www-data';

test('serve --workers 2 as www-data: logs moved by hand, SIGUSR1: new files owned by www-data, every later line in them', async (t) => {
  if (process.geteuid?.() !== 0) return t.skip('needs root (a privilege drop to www-data)');
  const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
  const dir = tempDir(t, 'gatehouse-regress-rotate-');
  // Readable by www-data, writable only by root: the directory the workers cannot create files in.
  chmodSync(dir, 0o755);
  const docroot = join(dir, 'www');
  mkdirSync(docroot, { mode: 0o755 });
  writeFileSync(join(docroot, 'a.txt'), 'file a\n');
  const logs = join(dir, 'logs');
  mkdirSync(logs, { mode: 0o755 });
  const accessLog = join(logs, 'access.log');
  const errorLog = join(logs, 'error.log');
  const server = await startGatehouse(t, 'serve', [
    '--workers',
    '2',
    '--user',
    USER,
    '--docroot',
    docroot,
    '--access-log',
    accessLog,
    '--error-log',
    errorLog,
    '--runtime-dir',
    join(dir, 'run'),
  ]);
  await waitForText(errorLog, /with 2 workers/, "the supervisor's start line", { timeoutMs: 15_000 });
  assert.equal((await httpRequest(`${server.base}/a.txt?before`)).status, 200);
  await waitForText(accessLog, 'GET /a.txt?before', 'the first request in the access log');

  renameSync(accessLog, `${accessLog}.1`);
  renameSync(errorLog, `${errorLog}.1`);
  process.kill(server.child.pid!, 'SIGUSR1');
  await waitForText(errorLog, /SIGUSR1: error log reopened; passed to 2 worker/, "the supervisor's reopen line in the new error log");
  // Both workers reopened (each says so in the error log it has then: the new one, when it could open it).
  await waitForText(errorLog, /serve\[\d+\]: SIGUSR1: log files reopened[\s\S]*serve\[\d+\]: SIGUSR1: log files reopened/, 'both workers', {
    timeoutMs: 10_000,
  });

  // Enough requests that both workers answer some (the kernel gives each new connection to either).
  for (let i = 0; i < 20; i++) assert.equal((await httpRequest(`${server.base}/a.txt?after-${i}`)).status, 200);
  await waitForText(accessLog, 'GET /a.txt?after-19', 'the last request in the new access log');
  // Each worker writes its own lines in batches: the other one's may still be on their way, to either file.
  // Once all 20 are in (the two files together), none can land in the moved log later.
  await waitForValue(
    () => linesAfter(textOf(accessLog)) + linesAfter(textOf(`${accessLog}.1`)),
    (count) => count === 20,
    'an access log line for each of the 20 requests',
  );
  const moved = readFileSync(`${accessLog}.1`, 'utf8');
  assert.doesNotMatch(moved, /after-/, 'no request after the rotation went to the moved access log');
  assert.doesNotMatch(readFileSync(errorLog, 'utf8'), /cannot reopen/, readFileSync(errorLog, 'utf8'));
  assert.doesNotMatch(readFileSync(`${errorLog}.1`, 'utf8'), /cannot reopen/, readFileSync(`${errorLog}.1`, 'utf8'));
  for (const file of [accessLog, errorLog]) assert.equal(statSync(file).uid, uid, `${file} belongs to ${USER}`);
});

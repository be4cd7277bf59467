/**
 * Logs and stopping, for `gatehouse serve`: the access log in Apache's
 * combined format, the error log in a file, and SIGTERM (requests in flight
 * finish; past --shutdown-grace, scripts' process groups are killed).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { httpRequest } from '../kit/http.js';
import { CGI_FIXTURES } from '../kit/paths.js';
import { processExists } from '../kit/proc.js';
import { tempDir } from '../kit/process.js';
import { rawExchange } from '../kit/raw-http.js';
import { startGatehouse } from '../kit/serve.js';
import { waitFor, waitForText } from '../kit/wait.js';

const DATE = String.raw`\[\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\]`;

function site(t: { after(fn: () => unknown): void }) {
  const dir = tempDir(t, 'gatehouse-serve-life-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  writeFileSync(
    join(dir, 'cgi', 'slow.sh'),
    `#!/bin/sh
# Announces itself, then works until the test releases it.
echo "$$" > "${join(dir, 'slow.started')}"
while [ ! -e "${join(dir, 'slow.release')}" ]; do sleep 0.05; done
printf 'Content-Type: text/plain\\n\\nfinished\\n'
`,
    { mode: 0o755 },
  );
  writeFileSync(
    join(dir, 'cgi', 'chatty.sh'),
    `#!/bin/sh\necho "a line on stderr from chatty" >&2\nprintf 'Content-Type: text/plain\\n\\nhello\\n'\n`,
    { mode: 0o755 },
  );
  return dir;
}

test('access log: Apache combined format, one line per request', async (t) => {
  const dir = site(t);
  const accessLog = join(dir, 'logs-access.log');
  const server = await startGatehouse(t, 'serve', [
    '--docroot',
    join(dir, 'www'),
    '--cgi-bin',
    join(dir, 'cgi'),
    '--access-log',
    accessLog,
    '--error-log',
    join(dir, 'error.log'),
  ]);
  await httpRequest(`${server.base}/a.txt?x=1`, {
    headers: { Referer: 'http://referrer.example/page', 'User-Agent': 'agent/1.0 "quoted"' },
  });
  await httpRequest(`${server.base}/missing.txt`);
  await httpRequest(`${server.base}/cgi-bin/chatty.sh/p?q`, { method: 'POST', body: 'abc' });
  await httpRequest(`${server.base}/a.txt`, { method: 'HEAD' });
  const lines = (await waitForText(accessLog, /(?:.*\n){4}/, 'four lines in the access log')).trimEnd().split('\n');
  assert.equal(lines.length, 4, lines.join('\n'));
  const exactly = (line: string, expected: string) => {
    const pattern = new RegExp(`^${expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace('DATE', DATE)}$`);
    assert.match(line, pattern);
  };
  exactly(lines[0]!, '127.0.0.1 - - DATE "GET /a.txt?x=1 HTTP/1.1" 200 7 "http://referrer.example/page" "agent/1.0 \\"quoted\\""');
  exactly(lines[1]!, '127.0.0.1 - - DATE "GET /missing.txt HTTP/1.1" 404 141 "-" "-"');
  exactly(lines[2]!, '127.0.0.1 - - DATE "POST /cgi-bin/chatty.sh/p?q HTTP/1.1" 200 6 "-" "-"');
  exactly(lines[3]!, '127.0.0.1 - - DATE "HEAD /a.txt HTTP/1.1" 200 - "-" "-"');
});

test("access log to stdout by default; error log to a file with the script's stderr", async (t) => {
  const dir = site(t);
  const errorLog = join(dir, 'error.log');
  const server = await startGatehouse(t, 'serve', ['--docroot', join(dir, 'www'), '--cgi-bin', join(dir, 'cgi'), '--error-log', errorLog]);
  const response = await httpRequest(`${server.base}/cgi-bin/chatty.sh`);
  assert.equal(response.body.toString(), 'hello\n');
  const log = await waitForText(errorLog, 'a line on stderr from chatty', "the script's stderr line in the error log");
  // The line format of every command (time, level, role[pid]); the script's line names the script.
  assert.match(log, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z info serve\[\d+\]: listening on 127\.0\.0\.1:\d+\b/m);
  assert.match(log, /chatty\.sh.*a line on stderr from chatty/);
  const stdout = await waitFor(
    () => server.output().includes('GET /cgi-bin/chatty.sh') && server.output(),
    'the access log line on stdout',
  );
  assert.match(stdout, new RegExp(`^127\\.0\\.0\\.1 - - ${DATE} "GET /cgi-bin/chatty\\.sh HTTP/1\\.1" 200 6 "-" "-"$`, 'm'));
  assert.ok(!stdout.includes('listening on'), 'error-log lines went to the file, not the console');
});

test('SIGTERM while a slow CGI script runs: the request completes, new connections are refused, exit 0', async (t) => {
  const dir = site(t);
  const server = await startGatehouse(t, 'serve', [
    '--docroot',
    join(dir, 'www'),
    '--cgi-bin',
    join(dir, 'cgi'),
    '--shutdown-grace',
    '20s',
    '--access-log',
    'off',
  ]);
  // An idle keep-alive connection must not hold the stop up.
  const idle = net.connect(server.port, '127.0.0.1');
  idle.on('error', () => {});
  idle.write('GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n');
  const slow = httpRequest(`${server.base}/cgi-bin/slow.sh`);
  await waitFor(() => existsSync(join(dir, 'slow.started')), 'slow.sh to start');
  server.child.kill('SIGTERM');
  // Once the signal is handled, new connections are refused while the script is still running.
  await waitFor(
    () =>
      rawExchange(server.port, 'GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', { waitMs: 2000 }).then(
        () => false,
        (error: NodeJS.ErrnoException) => error.code === 'ECONNREFUSED',
      ),
    'the stopping server to refuse new connections',
  );
  writeFileSync(join(dir, 'slow.release'), '');
  const response = await slow;
  assert.equal(response.status, 200);
  assert.equal(response.body.toString(), 'finished\n');
  assert.equal(response.headers.connection, 'close');
  const { code, signal } = await server.exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null }, server.output());
  idle.destroy();
});

for (const mode of ['daemon', 'in-process', 'fork']) {
  test(`SIGTERM with a hanging script and a short --shutdown-grace: the script's process group is killed and gatehouse exits (--cgi-spawn ${mode})`, async (t) => {
    const dir = site(t);
    const errorLog = join(dir, 'error.log');
    const server = await startGatehouse(t, 'serve', [
      '--cgi-bin',
      CGI_FIXTURES,
      '--cgi-spawn',
      mode,
      '--shutdown-grace',
      '500ms',
      '--error-log',
      errorLog,
      '--access-log',
      'off',
    ]);
    const client = http.get(`${server.base}/cgi-bin/hang.sh`, { agent: false });
    const clientDone = new Promise<string>((resolve) => {
      client.on('response', (res) => resolve(`response ${res.statusCode}`));
      client.on('error', (error) => resolve(`error ${error.message}`));
    });
    // hang.sh writes "script PID grandchild PID" to stderr, which goes to the error log.
    const log = await waitForText(errorLog, /script \d+ grandchild \d+/, "hang.sh's pids in the error log");
    const [, script, grandchild] = /script (\d+) grandchild (\d+)/.exec(log)!.map(Number) as [number, number, number];
    assert.ok(processExists(script) && processExists(grandchild), 'the script and its background child run');
    server.child.kill('SIGTERM');
    const { code, signal } = await server.exited;
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, server.output());
    // A killed orphan may stay a zombie under a PID 1 that does not reap: processExists counts it as gone.
    await waitFor(() => ![script, grandchild].some(processExists), "the script's process group to be gone after gatehouse exited", {
      context: () => `still running: ${[script, grandchild].filter(processExists).join(', ')}`,
    });
    assert.match(await clientDone, /^error /, 'the client of the killed script sees its connection end');
    assert.match(readFileSync(errorLog, 'utf8'), /stop: 1 request\(s\) still running after 500 ms: closing their connections/);
  });
}

/**
 * Issue 15 item 4: ScriptLog redacts Authorization, Cookie and Set-Cookie in
 * every section a header appears in, not only under %request and %response:
 * a failing script's own header block is logged under %stdout, and the bad
 * line is quoted in the error. Checked through `gatehouse serve --script-log`
 * and `gatehouse cgid --fastcgi --script-log` (a raw FastCGI peer).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { RecordType } from '../../src/fastcgi/protocol.js';
import { waitForValue } from '../kit/wait.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, startGatehouse } from '../kit/serve.js';

/** Failing scripts that print a secret in a Set-Cookie header: malformed head, a 500, a bad line that is itself Set-Cookie. */
const LEAKY_SCRIPTS: Record<string, string> = {
  'leak-malformed.sh': "printf 'Content-Type: text/plain\\nSet-Cookie: session=SECRET1\\nthis is not a header\\n\\nbody\\n'",
  'leak-500.sh': "printf 'Status: 500\\r\\nSet-Cookie: session=SECRET2\\r\\nContent-Type: text/plain\\r\\n\\r\\nfailed\\n'",
  'leak-badline.sh': "printf 'Content-Type: text/plain\\nSet-Cookie: session=SECRET3\\001\\n\\nbody\\n'",
};

function writeScripts(directory: string): void {
  mkdirSync(directory, { recursive: true });
  for (const [name, body] of Object.entries(LEAKY_SCRIPTS)) {
    writeFileSync(join(directory, name), `#!/bin/sh\n${body}\n`);
    chmodSync(join(directory, name), 0o755);
  }
}

/** Waits for one entry per leaky script (each entry is appended whole), then checks no secret is in the file. */
async function assertRedacted(t: TestContext, logPath: string): Promise<void> {
  const entries = Object.keys(LEAKY_SCRIPTS).length;
  const text = await waitForValue(
    () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : ''),
    (content) => (content.match(/^%% \[/gm)?.length ?? 0) >= entries,
    'every script-log entry',
    { timeoutMs: 20_000 },
  );
  assert.equal(text.match(/^%% \[/gm)?.length, entries, text);
  for (const name of Object.keys(LEAKY_SCRIPTS)) assert.ok(text.includes(name), `${name} logged`);
  assert.doesNotMatch(text, /SECRET|hunter2/, text);
  // The entries still say what went wrong, with the names in place.
  assert.match(text, /%stdout\nContent-Type: text\/plain\nSet-Cookie: \[redacted\]\nthis is not a header\n/);
  assert.match(text, /Bad header: Set-Cookie: \[redacted\]/);
  assert.match(text, /%response\nSet-Cookie: \[redacted\]\n/);
  t.diagnostic(`script log: ${text.length} bytes, ${entries} entries`);
}

test("serve --script-log: a failing script's Set-Cookie is redacted under %response, %stdout and in the error", async (t) => {
  const dir = tempDir(t, 'gatehouse-scriptlog-');
  writeScripts(join(dir, 'cgi-bin'));
  const logPath = join(dir, 'script.log');
  const serve = await startGatehouse(t, 'serve', [
    '--cgi-bin',
    join(dir, 'cgi-bin'),
    '--script-log',
    logPath,
    '--runtime-dir',
    join(dir, 'run'),
    '--error-log',
    join(dir, 'error.log'),
  ]);
  for (const name of Object.keys(LEAKY_SCRIPTS)) {
    const reply = await httpRequest(`${serve.base}/cgi-bin/${name}`, { headers: { Cookie: 'session=hunter2' } });
    assert.equal(reply.status, 500, name);
  }
  await assertRedacted(t, logPath);
});

test('cgid --fastcgi --script-log: the same, for requests that come as FastCGI records', async (t) => {
  const dir = tempDir(t, 'gatehouse-scriptlog-face-');
  writeScripts(join(dir, 'cgi-bin'));
  const logPath = join(dir, 'script.log');
  const socket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`, '--script-log', logPath]),
  ]);
  await waitForListener({ path: socket }, { process: face, timeoutMs: 20_000 });
  const peer = await RawFastCGIPeer.connect({ path: socket });
  t.after(() => peer.close());
  let requestId = 1;
  for (const name of Object.keys(LEAKY_SCRIPTS)) {
    const id = requestId++;
    peer.sendRequest(
      id,
      {
        SCRIPT_FILENAME: join(dir, 'cgi-bin', name),
        REQUEST_METHOD: 'GET',
        REQUEST_URI: `/cgi-bin/${name}`,
        SERVER_PROTOCOL: 'HTTP/1.1',
        HTTP_COOKIE: 'session=hunter2',
      },
      { keepConn: true },
    );
    await peer.waitForEnd(id, { timeoutMs: 20_000 });
    assert.match(peer.stdout(id).toString('latin1'), /^Status: 500/, name);
  }
  assert.ok(peer.records.every((record) => record.type !== RecordType.UNKNOWN_TYPE));
  await assertRedacted(t, logPath);
});

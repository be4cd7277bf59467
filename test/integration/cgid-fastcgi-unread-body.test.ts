/**
 * The cgid FastCGI face and a request body its script never reads (the
 * face's side of CVE-2014-0231): a 5 MiB POST (FCGI_STDIN) to a script that
 * ignores stdin and answers at once. Through real clients, nginx
 * (fastcgi_pass with fastcgi_keep_conn, so the next request comes on the same
 * connection when nginx keeps it), libfcgi's cgi-fcgi (a connection of its
 * own) and the kit's FastCGI peer (the next request on the same kept
 * connection, for certain): the POST is
 * answered, the face serves the next request, and afterwards it holds no
 * more descriptors than before and no process of the scripts is left.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { httpRequest } from '../kit/http.js';
import { startNginx } from '../kit/nginx.js';
import { commandLine, descendantsOf } from '../kit/proc.js';
import { requireProgram, runToExit, startProcess, tempDir } from '../kit/process.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { waitFor, waitForValue } from '../kit/wait.js';

const BODY_BYTES = 5 * 1024 * 1024;
const QUICK = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nanswered without reading\\n"\n';
const HELLO = '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello\\n"\n';

const descriptors = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const leftovers = (pid: number) => descendantsOf(pid, { zombies: true }).map((child) => `${child} ${commandLine(child)}`);

test('cgid --fastcgi: a 5 MiB body its script never reads is answered; the face keeps serving, with no descriptor or process left', async (t) => {
  const dir = tempDir(t, 'gatehouse-face-unread-');
  chmodSync(dir, 0o755);
  for (const [name, source] of [
    ['quick.sh', QUICK],
    ['hello.sh', HELLO],
  ] as const)
    writeFileSync(join(dir, name), source, { mode: 0o755 });
  const socket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`])]);
  await waitFor(() => /^ready /m.test(face.output()) || face.child.exitCode !== null, 'the face to be ready', { context: face.output });
  assert.equal(face.child.exitCode, null, face.output());
  const facePid = face.child.pid!;
  const nginx = await startNginx(t, {
    httpBlock: `upstream face { server unix:${socket}; keepalive 4; }`,
    serverBlock: `location / {
      fastcgi_pass face;
      fastcgi_keep_conn on;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME ${dir}$fastcgi_script_name;
    }`,
  });

  // The baseline holds nginx's kept connection: the requests below reuse it.
  const warm = await httpRequest(`${nginx.url}/hello.sh`);
  assert.equal(warm.status, 200, warm.body.toString());
  const baseline = descriptors(facePid);

  const body = Buffer.alloc(BODY_BYTES, 0x61);
  const post = await httpRequest(`${nginx.url}/quick.sh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(BODY_BYTES) },
    body,
  });
  assert.equal(post.status, 200, `${post.body.toString()}\n${face.output()}`);
  assert.equal(post.body.toString(), 'answered without reading\n');
  const next = await httpRequest(`${nginx.url}/hello.sh`);
  assert.equal(next.status, 200, `the face serves the next request:\n${face.output()}`);
  assert.equal(next.body.toString(), 'hello\n');

  // A connection of its own: libfcgi's cgi-fcgi sends the body from its stdin as FCGI_STDIN.
  const bodyFile = join(dir, 'body');
  writeFileSync(bodyFile, body);
  const direct = await runToExit(
    '/bin/sh',
    ['-c', `exec "${requireProgram('/usr/bin/cgi-fcgi')}" -bind -connect "${socket}" < "${bodyFile}"`],
    {
      env: {
        REQUEST_METHOD: 'POST',
        CONTENT_LENGTH: String(BODY_BYTES),
        SCRIPT_FILENAME: join(dir, 'quick.sh'),
        GATEWAY_INTERFACE: 'CGI/1.1',
      },
      timeoutMs: 20_000,
    },
  );
  assert.equal(direct.code, 0, `${direct.stderr}\n${face.output()}`);
  assert.match(direct.stdout, /\r\n\r\nanswered without reading\n$/);
  assert.equal((await httpRequest(`${nginx.url}/hello.sh`)).body.toString(), 'hello\n');

  // The same connection, for certain (nginx may close its own after such a request): the kit's FastCGI peer keeps it
  // (FCGI_KEEP_CONN) and sends the next request on it once the first ended.
  const peer = await RawFastCGIPeer.connect({ path: socket });
  t.after(() => peer.close());
  const params = (script: string, length: number) => ({
    REQUEST_METHOD: length > 0 ? 'POST' : 'GET',
    CONTENT_LENGTH: String(length),
    SCRIPT_FILENAME: join(dir, script),
    GATEWAY_INTERFACE: 'CGI/1.1',
  });
  peer.sendRequest(1, params('quick.sh', BODY_BYTES), { body, keepConn: true });
  await peer.waitForEnd(1, { context: face.output });
  assert.match(peer.stdout(1).toString(), /\r\n\r\nanswered without reading\n$/);
  peer.sendRequest(2, params('hello.sh', 0), { keepConn: true });
  await peer.waitForEnd(2, { context: face.output });
  assert.match(peer.stdout(2).toString(), /\r\n\r\nhello\n$/);
  assert.equal(peer.closed, false, 'the connection stays open (FCGI_KEEP_CONN)');
  peer.close();

  await waitForValue(
    () => leftovers(facePid),
    (list) => list.length === 0,
    'every script of the face to be reaped',
  );
  await waitForValue(
    () => descriptors(facePid),
    (count) => count <= baseline,
    `the face's descriptors to come back to ${baseline} (nginx's kept connection included)`,
  );
  assert.equal(face.child.exitCode, null, face.output());
});

/**
 * Regression (issue 15, item 1): no send timeout. A client that stops reading
 * held a script slot, an application process or a static download forever:
 * with --max-scripts 2, two clients of a 200 MB script that never read kept
 * both scripts running (past any --script-timeout, since the scripts were
 * blocked writing, not silent) and every other CGI request waited.
 *
 * Each case starts the real `gatehouse serve`, opens clients with a 4 KiB
 * receive buffer that never read (test/kit/non-reader.ts), and waits for the
 * events the send timeout causes (the log line, the scripts gone, the third
 * request answered), each wait bounded by a failure limit far above the
 * 1 s send timeout, never a timing assertion. The last cases use the
 * handlers and the worker library (sendTimeoutMs) in a process of their own.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { encodeBeginRequest, encodeParamsRecords, encodeRecord } from '../../src/fastcgi/records.js';
import { RecordType, Role } from '../../src/fastcgi/protocol.js';
import { cgi } from '../../src/cgi/handler.js';
import { createServer } from '../../src/fastcgi/index.js';
import { ChildProcessSpawner } from '../../src/spawn/fork.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { openNonReader } from '../kit/non-reader.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { waitForValue } from '../kit/wait.js';
import { startServe } from '../kit/serve-logged.js';

/** The longest any wait here may take before the test fails (a failure bound, far above the 1 s send timeout). */
const BOUND_MS = 25_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function countLines(text: string, pattern: RegExp): number {
  return text.split('\n').filter((line) => pattern.test(line)).length;
}

/** A cgi-bin whose big.sh records its pid (it execs head, which keeps the pid) and writes 200 MB, and a quick hello.sh. */
function makeCgiBin(t: TestContext): { cgiBin: string; pids: string } {
  const dir = tempDir(t, 'gatehouse-send-timeout-cgi-');
  const cgiBin = join(dir, 'cgi-bin');
  const pids = join(dir, 'pids');
  mkdirSync(cgiBin);
  mkdirSync(pids);
  writeFileSync(
    join(cgiBin, 'big.sh'),
    `#!/bin/sh\n: > ${pids}/$$\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec head -c 200000000 /dev/zero\n`,
  );
  writeFileSync(join(cgiBin, 'hello.sh'), `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello\\n'\n`);
  for (const name of ['big.sh', 'hello.sh']) chmodSync(join(cgiBin, name), 0o755);
  return { cgiBin, pids };
}

for (const spawn of ['daemon', 'in-process'] as const) {
  test(`CGI (${spawn}): two clients that never read a 200 MB script lose it after the send timeout, and a third request is served`, async (t) => {
    const { cgiBin, pids } = makeCgiBin(t);
    const site = await startServe(t, [
      '--cgi-bin',
      cgiBin,
      '--cgi-spawn',
      spawn,
      '--max-scripts',
      '2',
      '--script-timeout',
      '5s',
      '--send-timeout',
      '1s',
    ]);
    const request = `GET /cgi-bin/big.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`;
    const readers = [await openNonReader(t, site.port, request), await openNonReader(t, site.port, request)];
    // Both script slots are taken before the third request is sent: otherwise it could be served with no defence at all.
    const started = await waitForValue(
      () => readdirSync(pids).map(Number),
      (list) => list.length === 2,
      'both script slots taken',
      { timeoutMs: BOUND_MS },
    );
    assert.equal(started.length, 2, `both scripts should have started; error log:\n${site.log()}`);
    // Served only once a slot is free: without a send timeout it waits until the failure bound.
    const third = await httpRequest(`http://127.0.0.1:${site.port}/cgi-bin/hello.sh`, { timeoutMs: BOUND_MS });
    assert.equal(third.status, 200);
    assert.equal(third.body.toString(), 'hello\n');
    const gone = await waitForValue(
      () => started.filter(alive),
      (list) => list.length === 0,
      'both scripts killed',
      { timeoutMs: BOUND_MS },
    );
    assert.deepEqual(gone, [], 'the scripts of the clients that stopped reading are killed');
    assert.equal(countLines(site.log(), /send timeout: .*GET \/cgi-bin\/big\.sh/), 2, site.log());
    for (const reader of readers) {
      const { bytes, status } = await reader.drain();
      assert.equal(status, 200);
      assert.ok(bytes < 200_000_000, `the response was cut (${bytes} bytes)`);
    }
  });
}

test('static: a download to a client that never reads is closed after the send timeout', async (t) => {
  const docroot = tempDir(t, 'gatehouse-send-timeout-docroot-');
  const size = 256 * 1024 * 1024;
  // Sparse: no disk used, and far more than the client's and the server's socket buffers hold.
  writeFileSync(join(docroot, 'big.bin'), '');
  truncateSync(join(docroot, 'big.bin'), size);
  const site = await startServe(t, ['--docroot', docroot, '--send-timeout', '1s']);
  const reader = await openNonReader(t, site.port, `GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const logged = await waitForValue(
    () => site.log(),
    (log) => /send timeout: .*GET \/big\.bin/.test(log),
    'the send timeout logged for the static download',
    { timeoutMs: BOUND_MS },
  );
  assert.match(logged, /send timeout: 127\.0\.0\.1 took none of \d+ bytes for \d+ ms answering GET \/big\.bin \(send-timeout 1000 ms\)/);
  const { bytes, status } = await reader.drain();
  assert.equal(status, 200);
  assert.ok(bytes < size, `the download was cut (${bytes} of ${size} bytes)`);
  // The server still serves.
  const again = await httpRequest(`http://127.0.0.1:${site.port}/big.bin`, { method: 'HEAD', timeoutMs: BOUND_MS });
  assert.equal(again.status, 200);
});

test('cgid --fastcgi: a FastCGI client that never reads the output of a 200 MB script is disconnected and the script killed', async (t) => {
  const { cgiBin, pids } = makeCgiBin(t);
  const dir = tempDir(t, 'gatehouse-send-timeout-face-');
  const socketPath = join(dir, 'face.sock');
  const errorLog = join(dir, 'error.log');
  const face = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socketPath}`, '--send-timeout', '1s', '--error-log', errorLog]),
  ]);
  await waitForListener({ path: socketPath }, { process: face, timeoutMs: BOUND_MS }).catch((error: Error) => {
    throw new Error(`gatehouse cgid --fastcgi did not start: ${error.message}\n${face.output()}`);
  });
  const socket = net.connect(socketPath);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const params: Array<[string, string]> = [
    ['SCRIPT_FILENAME', join(cgiBin, 'big.sh')],
    ['REQUEST_METHOD', 'GET'],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['REQUEST_URI', '/big.sh'],
    ['QUERY_STRING', ''],
  ];
  socket.write(
    Buffer.concat([
      encodeBeginRequest(1, Role.RESPONDER, false),
      encodeParamsRecords(RecordType.PARAMS, 1, params),
      encodeRecord(RecordType.PARAMS, 1),
      encodeRecord(RecordType.STDIN, 1),
    ]),
  );
  // Never read: the face's writes stop once the socket buffers are full.
  socket.pause();
  const [pid] = await waitForValue(
    () => readdirSync(pids).map(Number),
    (list) => list.length === 1,
    'the script started',
    { timeoutMs: BOUND_MS },
  );
  assert.ok(pid, 'the script started');
  const read = () => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : '');
  const log = await waitForValue(read, (text) => /send timeout: the web server/.test(text), 'the send timeout logged', {
    timeoutMs: BOUND_MS,
  });
  assert.match(log, /send timeout: the web server took none of \d+ bytes for \d+ ms \(send-timeout 1000 ms\): connection closed/);
  assert.equal(
    await waitForValue(
      () => alive(pid!),
      (running) => !running,
      'the script killed',
      { timeoutMs: BOUND_MS },
    ),
    false,
    'the script is killed',
  );
  // Read at last: what was sent, then the end of a connection the face closed.
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  socket.resume();
  await once(socket, 'close');
  assert.ok(received < 200_000_000, `the output was cut (${received} bytes)`);
});

test('cgi({ sendTimeout }): the handler in a plain node:http server disconnects a client that never reads and kills its script', async (t) => {
  const { cgiBin, pids } = makeCgiBin(t);
  const lines: string[] = [];
  const handler = cgi({
    documentRoot: cgiBin,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: cgiBin }],
    sendTimeout: '1s',
    spawner: new ChildProcessSpawner(),
    errorLog: (line) => lines.push(line),
  });
  const server = http.createServer((req, res) => handler(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    server.closeAllConnections();
    server.close();
    await handler.shutdown(0);
  });
  const port = (server.address() as net.AddressInfo).port;
  await openNonReader(t, port, `GET /cgi-bin/big.sh HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  const [pid] = await waitForValue(
    () => readdirSync(pids).map(Number),
    (list) => list.length === 1,
    'the script started',
    { timeoutMs: BOUND_MS },
  );
  await waitForValue(
    () => lines.join('\n'),
    (text) => /cgi: send timeout: .*GET \/cgi-bin\/big\.sh/.test(text),
    "cgi()'s send timeout logged",
    { timeoutMs: BOUND_MS },
  );
  assert.equal(
    await waitForValue(
      () => alive(pid!),
      (running) => !running,
      'the script killed',
      { timeoutMs: BOUND_MS },
    ),
    false,
    'the script is killed',
  );
});

test('the worker library: createServer({ sendTimeoutMs }) disconnects a web server that takes no output, aborts its request, emits connectionError', async (t) => {
  const dir = tempDir(t, 'gatehouse-send-timeout-worker-');
  const socketPath = join(dir, 'app.sock');
  let responseClosed = false;
  let written = 0;
  // An application that writes until it is told to stop (backpressure respected, as a real one would).
  const server = createServer(
    (_req, res) => {
      res.setHeader('Content-Type', 'application/octet-stream');
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (!res.destroyed && !res.writableEnded) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      res.once('close', () => (responseClosed = true));
      pump();
    },
    { sendTimeoutMs: 1000, handleSignals: false },
  );
  const errors: Error[] = [];
  server.on('connectionError', (error: Error) => errors.push(error));
  await new Promise<void>((resolve) => server.listen(socketPath, () => resolve()));
  const socket = net.connect(socketPath);
  // On a failure the connection is still open and the application still writing: both end with the test.
  t.after(() => {
    socket.destroy();
    server.closeAllConnections();
    server.close();
  });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(
    Buffer.concat([
      encodeBeginRequest(1, Role.RESPONDER, false),
      encodeParamsRecords(RecordType.PARAMS, 1, [
        ['REQUEST_METHOD', 'GET'],
        ['SCRIPT_NAME', '/endless'],
      ]),
      encodeRecord(RecordType.PARAMS, 1),
      encodeRecord(RecordType.STDIN, 1),
    ]),
  );
  // The web server stops reading: the application's writes stop once the socket buffers are full.
  socket.pause();
  const [error] = await waitForValue(
    () => errors,
    (list) => list.length > 0,
    'the send timeout reported as a connectionError',
    { timeoutMs: BOUND_MS },
  );
  assert.match(
    error!.message,
    /send timeout: the web server took none of \d+ bytes for \d+ ms \(send-timeout 1000 ms\): connection closed/,
  );
  await waitForValue(() => responseClosed, Boolean, "the request's response closed (aborted)", { timeoutMs: BOUND_MS });
  const stoppedAt = written;
  socket.resume();
  await once(socket, 'close');
  assert.ok(stoppedAt > 0 && written === stoppedAt, `the application wrote nothing more once aborted (${stoppedAt}, then ${written})`);
  assert.equal(server.activeRequests, 0);
});

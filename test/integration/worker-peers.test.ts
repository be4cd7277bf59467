/**
 * The worker library under the other real peers: Apache httpd's
 * mod_proxy_fcgi, libfcgi's cgi-fcgi, and spawn-fcgi (which hands the
 * listening socket over as fd 0, FCGI_LISTENSOCK_FILENO). Plus the process
 * behaviours a process manager relies on: graceful stop on SIGTERM/SIGUSR1
 * and FCGI_WEB_SERVER_ADDRS on TCP.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import net from 'node:net';
import { startApache } from '../kit/apache.js';
import {
  freePort,
  isRunning,
  requireProgram,
  startProcess,
  tempDir,
  waitForListener,
  type Address,
  type RunningProcess,
} from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { appStats, startTestApp, TEST_APP } from '../kit/worker-app.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { waitFor } from '../kit/wait.js';

const run = promisify(execFile);

test('Apache httpd mod_proxy_fcgi -> worker: GET with query, POST body, PATH_INFO', async (t) => {
  const dir = tempDir(t);
  const port = await freePort();
  await startTestApp(t, dir, { port });
  const apache = await startApache(t, {
    modules: ['proxy', 'proxy_fcgi'],
    config: `ProxyPass "/app/" "fcgi://127.0.0.1:${port}/"`,
  });
  const env = await httpRequest(`${apache.url}/app/env?x=1&y=two`, { headers: { 'X-Custom': 'c' } });
  assert.equal(env.status, 200, env.body.toString());
  const body = JSON.parse(env.body.toString());
  assert.equal(body.method, 'GET');
  assert.equal(body.params.QUERY_STRING, 'x=1&y=two');
  assert.equal(body.headers['x-custom'], 'c');
  assert.equal(body.params.REQUEST_URI, '/app/env?x=1&y=two');
  const payload = Buffer.alloc(2 * 1024 * 1024 + 3, 7);
  const count = await httpRequest(`${apache.url}/app/count`, { method: 'POST', body: payload });
  assert.equal(count.status, 200);
  assert.equal(JSON.parse(count.body.toString()).bytes, payload.length);
  const hello = await httpRequest(`${apache.url}/app/hello`);
  assert.equal(hello.body.toString(), 'hello from gatehouse\n');
  const missing = await httpRequest(`${apache.url}/app/nothing-here`);
  assert.equal(missing.status, 404);
});

test('cgi-fcgi -bind -connect -> worker on a unix socket and on TCP', async (t) => {
  const cgiFcgi = requireProgram('/usr/bin/cgi-fcgi');
  const dir = tempDir(t);
  const app = await startTestApp(t, dir);
  const socketPath = 'path' in app.address ? app.address.path : '';
  const { stdout } = await run(cgiFcgi, ['-bind', '-connect', socketPath], {
    env: { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/hello', QUERY_STRING: '', SERVER_PROTOCOL: 'HTTP/1.1' },
  });
  assert.equal(stdout, 'Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from gatehouse\n');
  const port = await freePort();
  await startTestApp(t, dir, { port });
  const tcp = await run(cgiFcgi, ['-bind', '-connect', `127.0.0.1:${port}`], {
    env: { REQUEST_METHOD: 'GET', REQUEST_URI: '/env?q=1', QUERY_STRING: 'q=1' },
  });
  const json = JSON.parse(tcp.stdout.slice(tcp.stdout.indexOf('\r\n\r\n') + 4));
  assert.equal(json.url, '/env?q=1');
});

test('spawn-fcgi starts the worker with the listening socket on fd 0; it serves from there', async (t) => {
  const spawnFcgi = requireProgram('/usr/bin/spawn-fcgi');
  const dir = tempDir(t);
  const socketPath = join(dir, 'spawned.sock');
  // -n: stay in the foreground so the test owns the process.
  const running = startProcess(t, spawnFcgi, ['-n', '-s', socketPath, '--', process.execPath, TEST_APP]);
  await waitForListener({ path: socketPath }, { what: 'the worker under spawn-fcgi', process: running });
  const stats = await appStats({ path: socketPath });
  assert.equal(stats.requests, 1);
  assert.equal(stats.pid, running.child.pid, 'spawn-fcgi -n execs the worker in its place');
});

/** The worker wrote that it handles `signal` (its stderr): the signal arrived and the graceful stop began. */
function signalHandled(app: RunningProcess, signal: string): Promise<unknown> {
  return waitFor(() => new RegExp(`: ${signal}: finishing \\d+ request`).test(app.output()), `the worker to handle ${signal}`, {
    context: app.output,
  });
}

/** Connecting to `address` fails: nothing listens there any more. */
function refusesConnections(address: Address): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(address as net.NetConnectOpts);
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

test('SIGTERM: the worker finishes the request in flight, then exits 0; new connections are refused', async (t) => {
  const dir = tempDir(t);
  const app = await startTestApp(t, dir);
  const peer = await RawFastCGIPeer.connect(app.address);
  t.after(() => peer.close());
  // A 30 MiB response read slowly is in flight when the signal arrives.
  peer.socket.pause();
  peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/stream?mb=30' });
  await waitFor(async () => (await appStats(app.address)).streamedBytes > 0, 'the response to be under way');
  app.child.kill('SIGTERM');
  await signalHandled(app, 'SIGTERM');
  await waitFor(() => refusesConnections(app.address), 'the stopping worker to refuse new connections');
  peer.socket.resume();
  await peer.waitForEnd(1, { timeoutMs: 20_000 });
  const stdout = peer.stdout(1);
  assert.equal(stdout.length - stdout.indexOf('\r\n\r\n') - 4, 30 * 1024 * 1024);
  const exit = await app.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
});

test('SIGUSR1 stops an idle worker at once with status 0, as libfcgi does; a second SIGTERM cuts a drain short', async (t) => {
  const dir = tempDir(t);
  const idle = await startTestApp(t, dir);
  idle.child.kill('SIGUSR1');
  assert.deepEqual(await idle.exited, { code: 0, signal: null });

  const busyDir = tempDir(t);
  const busy = await startTestApp(t, busyDir);
  const peer = await RawFastCGIPeer.connect(busy.address);
  t.after(() => peer.close());
  peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/forever' });
  await peer.waitForRecords((records) => records.length > 0, 'the endless response to start');
  busy.child.kill('SIGTERM');
  await signalHandled(busy, 'SIGTERM');
  // Draining, not gone: the endless response goes on after the signal was handled, far past what socket buffers hold.
  const atSignal = peer.stdout(1).length;
  await peer.waitForRecords(() => peer.stdout(1).length > atSignal + 4 * 1024 * 1024, 'the endless response to go on while draining');
  busy.child.kill('SIGTERM');
  assert.deepEqual(await busy.exited, { code: 0, signal: null });
});

test('FCGI_WEB_SERVER_ADDRS: on TCP, connections from other addresses are refused', async (t) => {
  const port = await freePort();
  // Listen on 127.0.0.1 but allow only 127.0.0.2.
  const running = startProcess(t, process.execPath, [TEST_APP, `127.0.0.1:${port}`], {
    env: { ...process.env, FCGI_WEB_SERVER_ADDRS: '127.0.0.2' },
  });
  // Its "listening" line, not a probe connection: a probe would be refused and logged too.
  await waitFor(() => / listening\n/.test(running.output()), 'the test app to listen', {
    giveUpIf: () => !isRunning(running.child) && 'it exited',
    context: running.output,
  });
  const refused = await RawFastCGIPeer.connect({ host: '127.0.0.1', port });
  refused.sendRequest(1, { REQUEST_URI: '/hello' });
  await refused.waitForClose();
  assert.equal(refused.records.length, 0);
  await waitFor(
    () => /refused FastCGI connection from 127\.0\.0\.1: not in FCGI_WEB_SERVER_ADDRS/.test(running.output()),
    "the refusal in the worker's log",
    { context: running.output },
  );
});

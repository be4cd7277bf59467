/**
 * Where `gatehouse serve` listens: a port or unix socket that is taken is a
 * clear error and an exit (also with the cgid daemon already started); a
 * unix socket left by a dead server is replaced, a live one or a plain file
 * never; serving on a unix socket, and the socket removed on stop.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { waitForOutput } from '../kit/wait.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, runGatehouse } from '../kit/serve.js';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';

function site(t: { after(fn: () => unknown): void }) {
  const dir = tempDir(t, 'gatehouse-serve-listen-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  return dir;
}

async function occupy(t: { after(fn: () => unknown): void }, where: number | string): Promise<net.Server> {
  const server = net.createServer((socket) => socket.end());
  await new Promise<void>((resolve) =>
    typeof where === 'number' ? server.listen(where, '127.0.0.1', resolve) : server.listen(where, resolve),
  );
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return server;
}

test('a port in use: a message that says so, exit 1 (with the cgid daemon started, it used to hang)', async (t) => {
  const dir = site(t);
  const port = await freePort();
  await occupy(t, port);
  const free = await freePort();
  const result = await runGatehouse([
    'serve',
    '--listen',
    `127.0.0.1:${free}`,
    '--listen',
    `127.0.0.1:${port}`,
    '--docroot',
    join(dir, 'www'),
    '--cgi-bin',
    join(dir, 'cgi'),
  ]);
  assert.equal(result.code, 1, result.stderr);
  assert.match(
    result.stderr,
    new RegExp(`gatehouse serve: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE: another process is listening on this port`),
  );
  // The address that did bind was closed again.
  await assert.rejects(new Promise<void>((resolve, reject) => net.connect(free, '127.0.0.1', resolve).on('error', reject)), /ECONNREFUSED/);
});

test('a unix socket left by a dead server is replaced; the socket is served and removed on stop', async (t) => {
  const dir = site(t);
  const socketPath = join(dir, 'gatehouse.sock');
  // A socket file whose server is gone: bind it from a process that then exits.
  execFileSync(process.execPath, [
    '-e',
    `const s=require('net').createServer();s.listen(${JSON.stringify(socketPath)},()=>process.exit(0))`,
  ]);
  assert.ok(lstatSync(socketPath).isSocket());
  const server = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['serve', '--listen', `unix:${socketPath}`, '--docroot', join(dir, 'www'), '--access-log', 'off']),
  ]);
  await waitForListener({ path: socketPath }, { what: 'gatehouse serve', process: server });
  const body = await new Promise<string>((resolve, reject) => {
    http
      .get({ socketPath, path: '/a.txt', agent: false }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
  assert.equal(body, 'file a\n');
  server.child.kill('SIGTERM');
  assert.deepEqual(await server.exited, { code: 0, signal: null });
  assert.equal(existsSync(socketPath), false, 'the socket was left behind');
});

test('a unix socket a live server listens on is refused and left in place; so is a file that is not a socket', async (t) => {
  const dir = site(t);
  const live = join(dir, 'live.sock');
  await occupy(t, live);
  const liveResult = await runGatehouse(['serve', '--listen', `unix:${live}`, '--docroot', join(dir, 'www')]);
  assert.equal(liveResult.code, 1);
  assert.equal(
    liveResult.stderr,
    `gatehouse serve: another server is accepting connections on ${live}: stop it first, or choose another path\n`,
  );
  await new Promise<void>((resolve, reject) => net.connect(live, resolve).on('error', reject));
  const file = join(dir, 'not-a-socket');
  writeFileSync(file, 'precious\n');
  const fileResult = await runGatehouse(['serve', '--listen', `unix:${file}`, '--docroot', join(dir, 'www')]);
  assert.equal(fileResult.code, 1);
  assert.equal(
    fileResult.stderr,
    `gatehouse serve: ${file} exists and is not a socket; it is left alone: move it away, or choose another path\n`,
  );
  assert.equal(readFileSync(file, 'utf8'), 'precious\n');
});

/** A listening socket on 127.0.0.1 the test owns, to hand to a child as an inherited descriptor. */
async function inheritedListener(t: { after(fn: () => unknown): void }): Promise<{ server: net.Server; port: number; fd: number }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => server.close(resolve)));
  // spawn's stdio takes the descriptor of the listening socket; the child gets its own copy.
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  return { server, port: (server.address() as net.AddressInfo).port, fd };
}

test('fd:N: serve --listen and cgid --fastcgi serve on a socket inherited already listening (as a supervisor passes one)', async (t) => {
  const dir = site(t);
  const web = await inheritedListener(t);
  const serve = startProcess(
    t,
    process.execPath,
    [GATEHOUSE_MAIN, ...asRootOnPurpose(['serve', '--listen', 'fd:3', '--docroot', join(dir, 'www')])],
    {
      stdio: ['ignore', 'pipe', 'pipe', web.fd],
    },
  );
  // The test's own copy stops accepting: from now on only the child answers on the port.
  await new Promise((resolve) => web.server.close(resolve));
  await waitForListener({ host: '127.0.0.1', port: web.port }, { process: serve, timeoutMs: 15_000, what: 'gatehouse' });
  const body = await new Promise<string>((resolve, reject) => {
    http
      .get(`http://127.0.0.1:${web.port}/a.txt`, (response) => {
        let text = '';
        response.on('data', (chunk) => (text += chunk));
        response.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
  assert.equal(body, 'file a\n');
  // Logged in a batch after the listen, and read through a pipe: the response can come first.
  await waitForOutput(serve, /listening on 127\.0\.0\.1:\d+/, "serve's listening line");

  writeFileSync(join(dir, 'cgi', 'hi.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhi from fd\\n"\n', { mode: 0o755 });
  const face = await inheritedListener(t);
  const cgid = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', 'fd:3'])], {
    stdio: ['ignore', 'pipe', 'pipe', face.fd],
  });
  await new Promise((resolve) => face.server.close(resolve));
  await waitForListener({ host: '127.0.0.1', port: face.port }, { process: cgid, timeoutMs: 15_000, what: 'gatehouse' });
  const client = new FastCGIClient({ address: `127.0.0.1:${face.port}` });
  t.after(() => client.close());
  const answer = await client.fetchAll({
    params: { REQUEST_METHOD: 'GET', SCRIPT_FILENAME: join(dir, 'cgi', 'hi.sh'), SCRIPT_NAME: '/hi.sh', GATEWAY_INTERFACE: 'CGI/1.1' },
  });
  assert.match(answer.stdout.toString(), /\r?\n\r?\nhi from fd\n$/, `${answer.stdout.toString()}\n${cgid.output()}`);
  // Its stdout comes through a pipe, read apart from the FastCGI socket: the answer can come first.
  await waitForOutput(cgid, /^ready \d+ fd:3$/m, "cgid's ready line");
});

/**
 * systemd (issue 12, item 5): every command started on a socket the real
 * systemd-socket-activate passes (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES)
 * serves a request on it; readiness goes to a unix datagram socket standing
 * in for NOTIFY_SOCKET (a path, and the abstract "@" form); the unit files
 * in contrib/systemd pass `systemd-analyze verify`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { freePort, requireProgram, tempDir, type RunningProcess } from '../kit/process.js';
import { waitForOutput } from '../kit/wait.js';
import { httpRequest } from '../kit/http.js';
import { commandLine, notifyListener, startActivated, waitUntil } from '../kit/deploy.js';
import { CGI_FIXTURES, GATEHOUSE_MAIN, REPO_ROOT } from '../kit/paths.js';

const LISTEN_APP = fileURLToPath(new URL('../fixtures/workers/listen-app.js', import.meta.url));
const NODE_WORKER = fileURLToPath(new URL('../fixtures/kfcgi/node-worker.js', import.meta.url));
const asRoot = process.getuid?.() === 0 ? ['--user', 'root'] : [];

/** Waits until systemd-socket-activate listens (it prints "Listening on ADDRESS as 3."). */
async function activatorListening(activator: RunningProcess): Promise<void> {
  await waitUntil(() => /Listening on .* as 3\./.test(activator.output()), 'systemd-socket-activate to listen', 15_000, activator.output);
}

async function fastcgiGet(address: string, params: Record<string, string>): Promise<string> {
  const client = new FastCGIClient({ address });
  try {
    return (await client.fetchAll({ params: { REQUEST_METHOD: 'GET', ...params } })).stdout.toString();
  } finally {
    await client.close();
  }
}

function stateLines(messages: string[]): string[] {
  return messages.flatMap((message) => message.split('\n')).filter((line) => /^(READY|STOPPING|RELOADING)=1$/.test(line));
}

test('gatehouse serve on the socket systemd passes (no --listen): serves, and tells READY, RELOADING and STOPPING', async (t) => {
  const dir = tempDir(t, 'gatehouse-deploy-systemd-');
  mkdirSync(join(dir, 'www'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  const notify = notifyListener(t, join(dir, 'notify'));
  const port = await freePort();
  const activator = startActivated(
    t,
    `127.0.0.1:${port}`,
    [process.execPath, GATEHOUSE_MAIN, 'serve', '--docroot', join(dir, 'www'), ...asRoot],
    { env: { NOTIFY_SOCKET: notify.address } },
  );
  await activatorListening(activator);
  // The first connection starts serve, which takes the socket over as its own listener.
  const response = await httpRequest(`http://127.0.0.1:${port}/a.txt`);
  assert.equal(response.status, 200);
  assert.equal(response.body.toString(), 'file a\n');
  // Logged in a batch after the listen, and read through a pipe: the response can come first.
  await waitForOutput(activator, new RegExp(`listening on 127\\.0\\.0\\.1:${port}`), "serve's listening line");
  // systemd-socket-activate became serve (exec): the pid LISTEN_PID named.
  assert.match(commandLine(activator.child.pid!), /main\.js serve/);
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1');
  assert.match(notify.messages().join('\n'), new RegExp(`STATUS=serving on 127\\.0\\.0\\.1:${port}`));

  activator.child.kill('SIGHUP');
  await waitUntil(
    () => stateLines(notify.messages()).length >= 3,
    'RELOADING=1 and READY=1',
    15_000,
    () => notify.messages().join('|'),
  );
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'RELOADING=1', 'READY=1']);
  assert.match(notify.messages().join('\n'), /MONOTONIC_USEC=\d+/);
  activator.child.kill('SIGTERM');
  assert.deepEqual(await activator.exited, { code: 0, signal: null });
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
});

test('gatehouse cgid --fastcgi systemd:NAME on a unix socket systemd passes, with an abstract NOTIFY_SOCKET', async (t) => {
  const dir = tempDir(t, 'gatehouse-deploy-systemd-');
  const socket = join(dir, 'cgi.sock');
  const notify = notifyListener(t, `@gatehouse-test-notify-${randomBytes(6).toString('hex')}`);
  const activator = startActivated(t, socket, [process.execPath, GATEHOUSE_MAIN, 'cgid', '--fastcgi', 'systemd:cgi', ...asRoot], {
    fdname: 'cgi',
    env: { NOTIFY_SOCKET: notify.address },
  });
  await activatorListening(activator);
  const output = await fastcgiGet(`unix:${socket}`, {
    SCRIPT_FILENAME: join(CGI_FIXTURES, 'env.sh'),
    SCRIPT_NAME: '/env.sh',
    GATEWAY_INTERFACE: 'CGI/1.1',
  });
  assert.match(output, /GATEWAY_INTERFACE=CGI\/1\.1/);
  // The script's environment holds nothing of systemd's.
  assert.doesNotMatch(output, /LISTEN_FDS|LISTEN_PID|NOTIFY_SOCKET/);
  // Its stdout comes through a pipe, read apart from the FastCGI socket: the answer can come first.
  await waitForOutput(activator, /^ready \d+ systemd:cgi$/m, "cgid's ready line");
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1 on the abstract socket');
  activator.child.kill('SIGTERM');
  assert.deepEqual(await activator.exited, { code: 0, signal: null });
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'STOPPING=1']);
});

test('gatehouse kfcgi -d uses the socket systemd passes as its pool socket; without -d it says to add it', async (t) => {
  const dir = tempDir(t, 'gatehouse-deploy-systemd-');
  const socket = join(dir, 'pool.sock');
  const notify = notifyListener(t, join(dir, 'notify'));
  const pool = [process.execPath, GATEHOUSE_MAIN, 'kfcgi', '-p', '/', '-n', '2', process.execPath, NODE_WORKER];
  const activator = startActivated(t, socket, [...pool.slice(0, 3), '-d', ...pool.slice(3)], { env: { NOTIFY_SOCKET: notify.address } });
  await activatorListening(activator);
  assert.match(await fastcgiGet(`unix:${socket}`, { SCRIPT_NAME: '/x' }), /hello from node pid \d+/);
  // Logged in a batch, read through a pipe: a worker's answer can come first.
  await waitForOutput(activator, /passed by systemd as fd 3/, "the manager's listening line");
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1 once the workers run');
  activator.child.kill('SIGTERM');
  await activator.exited;
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'STOPPING=1']);

  const daemonised = startActivated(t, join(dir, 'other.sock'), pool);
  await activatorListening(daemonised);
  await fastcgiGet(`unix:${join(dir, 'other.sock')}`, { SCRIPT_NAME: '/x' }).catch(() => '');
  assert.equal((await daemonised.exited).code, 1);
  // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
  await waitForOutput(daemonised, /started by systemd \(LISTEN_FDS or NOTIFY_SOCKET is set\): add -d/, 'the refusal without -d');
});

test('the worker library: listen() with no address serves the socket systemd passes, and tells READY', async (t) => {
  const dir = tempDir(t, 'gatehouse-deploy-systemd-');
  const notify = notifyListener(t, join(dir, 'notify'));
  const port = await freePort();
  const activator = startActivated(t, `127.0.0.1:${port}`, [process.execPath, LISTEN_APP], { env: { NOTIFY_SOCKET: notify.address } });
  await activatorListening(activator);
  assert.match(await fastcgiGet(`127.0.0.1:${port}`, { SCRIPT_NAME: '/x' }), /listen-app \d+ uid/);
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1 from the library');
  activator.child.kill('SIGTERM');
  assert.deepEqual(await activator.exited, { code: 0, signal: null });
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'STOPPING=1']);
});

test('the unit files in contrib/systemd pass systemd-analyze verify', async (t) => {
  const analyze = requireProgram('/usr/bin/systemd-analyze');
  // verify checks that ExecStart's program exists: the units name /usr/bin/gatehouse, here a wrapper of this checkout.
  const dir = tempDir(t, 'gatehouse-deploy-units-');
  const gatehouse = join(dir, 'gatehouse');
  writeFileSync(gatehouse, `#!/bin/sh\nexec ${process.execPath} ${GATEHOUSE_MAIN} "$@"\n`);
  chmodSync(gatehouse, 0o755);
  const source = join(REPO_ROOT, 'contrib/systemd');
  const units = readdirSync(source).filter((name) => /\.(service|socket)$/.test(name));
  assert.deepEqual(units.sort(), [
    'gatehouse-cgid.service',
    'gatehouse-cgid.socket',
    'gatehouse-kfcgi@.service',
    'gatehouse-kfcgi@.socket',
    'gatehouse-serve.service',
  ]);
  for (const unit of units) {
    const text = readFileSync(join(source, unit), 'utf8');
    if (unit.endsWith('.service')) assert.ok(text.includes('/usr/bin/gatehouse '), `${unit} names /usr/bin/gatehouse`);
    writeFileSync(join(dir, unit), text.replaceAll('/usr/bin/gatehouse ', `${gatehouse} `));
  }
  for (const unit of units) {
    const target = unit.includes('@') ? unit.replace('@', '@app') : unit;
    if (target !== unit) copyFileSync(join(dir, unit), join(dir, target));
    const result = (() => {
      try {
        return execFileSync(analyze, ['verify', '--man=no', join(dir, target)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (error) {
        return `failed: ${(error as { stderr?: string }).stderr ?? String(error)}`;
      }
    })();
    assert.equal(result, '', `systemd-analyze verify ${target}`);
  }
  // The check sees mistakes: a misspelt key is reported.
  writeFileSync(join(dir, 'broken.service'), '[Service]\nExecStart=/bin/true\nKilMode=mixed\n');
  const broken = (() => {
    try {
      execFileSync(analyze, ['verify', '--man=no', join(dir, 'broken.service')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      return '';
    } catch (error) {
      return String((error as { stderr?: string }).stderr);
    }
  })();
  const warnings =
    broken ||
    execFileSync('sh', ['-c', `${analyze} verify --man=no ${join(dir, 'broken.service')} 2>&1`], {
      encoding: 'utf8',
    });
  assert.match(warnings, /Unknown key 'KilMode' in section \[Service\]/);
});

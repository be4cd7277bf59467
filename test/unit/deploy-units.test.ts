/**
 * The pure parts of deployment: the socket-mode grammar, `systemd` listen
 * addresses, systemd's variables, what a reload may change, and the socket
 * primitives every command shares (mode and owner from bind on, stale and
 * live sockets).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readValue } from '../../src/options/values.js';
import { formatListenAddress, KFCGI_SOCKET_ADDRESS, parseListenAddress } from '../../src/options/listen-address.js';
import { restartOnlyChanges } from '../../src/config/reload.js';
import { SERVE_DEFAULTS, type ServeConfig } from '../../src/config/schema.js';
import { ErrorCode, GatehouseError } from '../../src/errors.js';
import {
  claimUnixSocketPath,
  closeDescriptor,
  createListener,
  lookupUser,
  readSystemdVariables,
  unixSocketPathState,
} from '../../src/sys/index.js';
import { tempDir } from '../kit/process.js';

test('socket-mode: octal permission bits, as text or a TOML number', () => {
  assert.deepEqual(readValue({ kind: 'mode' }, '0660'), { value: 0o660 });
  assert.deepEqual(readValue({ kind: 'mode' }, '600'), { value: 0o600 });
  assert.deepEqual(readValue({ kind: 'mode' }, 0o640), { value: 0o640 });
  for (const bad of ['0999', 'rw-rw----', '06600', '', 0o1777, -1])
    assert.ok('problem' in readValue({ kind: 'mode' }, bad), `${String(bad)} is refused`);
});

test('listen addresses: systemd and systemd:NAME where descriptors are taken; a plain word for kfcgi -s', () => {
  assert.deepEqual(parseListenAddress('systemd'), { kind: 'systemd' });
  assert.deepEqual(parseListenAddress('systemd:web'), { kind: 'systemd', name: 'web' });
  assert.equal(formatListenAddress({ kind: 'systemd', name: 'web' }), 'systemd:web');
  assert.equal(formatListenAddress({ kind: 'systemd' }), 'systemd');
  assert.match(String(parseListenAddress('systemd:')), /write systemd:NAME/);
  assert.match(String(parseListenAddress('systemd:a:b')), /write systemd:NAME/);
  // kfcgi(8)'s -s takes any path: "systemd" is a relative path there, not a descriptor.
  assert.deepEqual(parseListenAddress('systemd', KFCGI_SOCKET_ADDRESS), { kind: 'unix', path: join(process.cwd(), 'systemd') });
});

test("systemd's variables: sockets only for the pid they name, from fd 3, named or unknown", () => {
  const env = { LISTEN_FDS: '2', LISTEN_PID: '4242', LISTEN_FDNAMES: 'http', NOTIFY_SOCKET: '@notify' };
  assert.deepEqual(readSystemdVariables(env, 4242), {
    sockets: [
      { fd: 3, name: 'http' },
      { fd: 4, name: 'unknown' },
    ],
    notifySocket: '@notify',
  });
  assert.deepEqual(readSystemdVariables(env, 4243).sockets, [], 'inherited by another process: not its sockets');
  assert.deepEqual(readSystemdVariables({ NOTIFY_SOCKET: '' }, 1), { sockets: [], notifySocket: null });
  assert.throws(
    () => readSystemdVariables({ LISTEN_FDS: 'x', LISTEN_PID: '7' }, 7),
    (error: unknown) => error instanceof GatehouseError && error.code === ErrorCode.SYSTEMD,
  );
});

test('a reload may change routes, directories and limits, not what only a restart can', () => {
  const running: ServeConfig = structuredClone(SERVE_DEFAULTS);
  const next = (change: Partial<ServeConfig>): ServeConfig => ({ ...structuredClone(SERVE_DEFAULTS), ...change });
  assert.deepEqual(restartOnlyChanges(running, next({ docroot: '/srv/www', maxBody: 10, scriptTimeoutMs: 5 })), []);
  assert.deepEqual(restartOnlyChanges(running, next({ listen: ['127.0.0.1:81'], user: 'www-data' })), ['listen', 'user']);
  assert.deepEqual(restartOnlyChanges(running, next({ scriptAlias: [{ url: '/s/', dir: '/srv/s' }] })), []);
  assert.deepEqual(restartOnlyChanges(running, next({ scriptAlias: [{ url: '/s/', dir: '/srv/s', user: 'alice' }] })), [
    'script-alias user/group',
  ]);
});

test('createListener: the unix socket has its mode from bind on, its owner before listen, and the umask is left as it was', () => {
  const dir = tempDir({ after: (fn) => test.after(fn) }, 'gatehouse-unit-sock-');
  const before = process.umask();
  const path = join(dir, 'private.sock');
  const fd = createListener({ kind: 'unix', path }, { backlog: 4, mode: 0o600 });
  assert.equal(lstatSync(path).mode & 0o777, 0o600);
  assert.equal(process.umask(), before);
  closeDescriptor(fd);
  if (process.getuid?.() === 0) {
    const nobody = lookupUser('nobody')!;
    const owned = join(dir, 'owned.sock');
    const ownedFd = createListener({ kind: 'unix', path: owned }, { backlog: 4, mode: 0o660, owner: { uid: nobody.uid, gid: nobody.gid } });
    assert.equal(lstatSync(owned).uid, nobody.uid);
    assert.equal(lstatSync(owned).mode & 0o777, 0o660);
    closeDescriptor(ownedFd);
  }
});

test('claimUnixSocketPath: a stale socket is removed, a live one and a plain file refused and left alone', async () => {
  const dir = tempDir({ after: (fn) => test.after(fn) }, 'gatehouse-unit-claim-');
  assert.equal(claimUnixSocketPath(join(dir, 'none.sock')), false);
  const stale = join(dir, 'stale.sock');
  closeDescriptor(createListener({ kind: 'unix', path: stale }, { backlog: 1 }));
  assert.equal(unixSocketPathState(stale), 'stale');
  assert.equal(claimUnixSocketPath(stale), true);
  assert.equal(unixSocketPathState(stale), 'absent');
  const live = join(dir, 'live.sock');
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(live, resolve));
  try {
    assert.throws(
      () => claimUnixSocketPath(live),
      (error: unknown) =>
        error instanceof GatehouseError &&
        error.code === ErrorCode.SOCKET_IN_USE &&
        error.message === `another server is accepting connections on ${live}: stop it first, or choose another path`,
    );
    assert.equal(unixSocketPathState(live), 'live');
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
  const file = join(dir, 'file');
  writeFileSync(file, 'keep');
  assert.throws(() => claimUnixSocketPath(file), /exists and is not a socket; it is left alone/);
  assert.equal(readFileSync(file, 'utf8'), 'keep');
});

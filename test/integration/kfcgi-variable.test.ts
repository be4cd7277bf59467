/**
 * gatehouse kfcgi -r: variable pools with kcgi's FastCGI Extensions for
 * Management Control, proved across languages with a C worker written from
 * the extension's description and with the gatehouse worker library (Node).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startNginx, NGINX_FASTCGI_PARAMS } from '../kit/nginx.js';
import { httpRequest } from '../kit/http.js';
import { freePort, tempDir } from '../kit/process.js';
import { readStatus } from '../../src/kfcgi/status.js';
import { SockDiag, UnixDiagShow, UnixState } from '../../src/sys/index.js';
import {
  buildFixtures,
  cgiFcgi,
  cookiePatternWorker,
  kfcgiOutputSoFar,
  nodeWorker,
  runKfcgiCommand,
  startKfcgi,
  statusWhen,
  steadyLoad,
} from '../kit/kfcgi.js';
import { processExists, socketsOf } from '../kit/proc.js';
import { waitFor } from '../kit/wait.js';

const workerKinds = [
  {
    name: 'the C extension worker',
    program: (f: ReturnType<typeof buildFixtures>) => [f.kcgiExt],
    expect: /hello from kcgi-ext pid (\d+)/,
  },
  { name: 'the gatehouse worker library', program: () => [process.execPath, nodeWorker], expect: /hello from node pid (\d+)/ },
];

for (const kind of workerKinds) {
  test(`variable pool with ${kind.name}: grows to -N under concurrent load, then shrinks to -n after -w`, async (t) => {
    const fixtures = buildFixtures(t);
    const dir = tempDir(t);
    const socket = join(dir, 'app.sock');
    const status = join(dir, 'status.sock');
    const kfcgi = await startKfcgi(
      t,
      ['-r', '-p', '/', '-n', '1', '-N', '4', '-w', '1', '-s', socket, '-S', status, ...kind.program(fixtures)],
      { socket, expectWorkers: 1 },
    );
    const nginx = await startNginx(t, { serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_pass unix:${socket}; }` });
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, kfcgi.workers().length)), 20);
    t.after(() => clearInterval(watch));
    // Long enough that all 8 are in flight together even on a loaded machine.
    const responses = await Promise.all(Array.from({ length: 8 }, () => httpRequest(`${nginx.url}/?sleep=1200`)));
    clearInterval(watch);
    const pids = new Set<string>();
    for (const response of responses) {
      assert.equal(
        response.status,
        200,
        `${response.body.toString()}\nnginx: ${readFileSync(nginx.errorLog, 'utf8').slice(-2000)}\nkfcgi: ${kfcgi.output().slice(-4000)}`,
      );
      const match = kind.expect.exec(response.body.toString());
      assert.ok(match, response.body.toString());
      pids.add(match[1]!);
    }
    assert.equal(pids.size, 4, `answered by ${[...pids].join(', ')}`);
    assert.ok(most <= 4, `the pool grew past -N: ${most} workers`);
    const during = await readStatus(status);
    assert.equal(during.mode, 'variable');
    assert.ok(during.poolFull! >= 1, 'some connections found the pool full');
    assert.ok(during.accepted! >= 8);
    assert.equal(during.handedOver, during.accepted, 'every accepted connection was handed to a worker');
    const after = await statusWhen(status, (now) => now.released === 3, 'the three extra workers released', kfcgi.output);
    assert.equal(after.workers, 1);
    assert.equal(after.respawns, 0, 'released workers are not respawned');
    await waitFor(() => kfcgi.workers().length === 1, 'the pool to shrink back to -n 1', { context: kfcgi.output, timeoutMs: 15_000 });
    // Log lines are written asynchronously: the status can count the release before its line is out.
    await waitFor(() => /releasing \(idle for more than 1 s\)/.test(kfcgi.output()), 'the release logged', { context: kfcgi.output });
    // Still serving after the shrink.
    assert.match((await httpRequest(`${nginx.url}/`)).body.toString(), kind.expect);
  });
}

test('variable pool: the manager closes its copy of each connection it hands over', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '2', '-N', '2', '-s', socket, '-S', status, fixtures.kcgiExt], {
    socket,
    expectWorkers: 2,
  });
  const pending = [cgiFcgi(socket, { QUERY_STRING: 'sleep=2000' }), cgiFcgi(socket, { QUERY_STRING: 'sleep=2000' })];
  // The pool's connections, as the kernel lists them (accepted sockets carry the listener's name): the manager must
  // hold none of them (its other sockets, such as the status socket's connections, do not count).
  const diag = new SockDiag();
  t.after(() => diag.close());
  const connections = () =>
    new Set(
      diag
        .unixSockets(UnixDiagShow.NAME, ~(1 << UnixState.LISTEN) >>> 0)
        .filter((info) => info.name?.toString().replace(/\0$/, '') === socket)
        .map((info) => `socket:[${info.inode}]`),
    );
  const heldBy = (pid: number, pool: Set<string>) => socketsOf(pid).filter((inode) => pool.has(inode));
  // The event after which the manager would still hold a copy: both connections handed over and received.
  await statusWhen(status, (now) => now.busy === 2, 'both connections handed over', kfcgi.output);
  await waitFor(() => kfcgi.workers().flatMap((pid) => heldBy(pid, connections())).length === 2, 'the workers to hold both connections', {
    context: kfcgi.output,
  });
  assert.deepEqual(heldBy(kfcgi.pid, connections()), [], 'the manager holds no accepted connection while workers serve them');
  for (const response of await Promise.all(pending)) assert.match(response, /hello from kcgi-ext/);
});

test('variable pool: -R replaces a worker after that many connections', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '1', '-N', '1', '-R', '3', '-s', socket, '-S', status, fixtures.kcgiExt], {
    socket,
    expectWorkers: 1,
  });
  const pids: string[] = [];
  for (let i = 0; i < 9; i += 1) pids.push(/pid (\d+)/.exec(await cgiFcgi(socket))![1]!);
  // startKfcgi's readiness probe was the first worker's first connection, so its run is one shorter.
  const runs = pids.reduce<{ pid: string; count: number }[]>((acc, pid) => {
    if (acc.at(-1)?.pid === pid) acc.at(-1)!.count += 1;
    else acc.push({ pid, count: 1 });
    return acc;
  }, []);
  assert.deepEqual(
    runs.map((run) => run.count),
    [2, 3, 3, 1],
    `pids: ${pids.join(' ')}`,
  );
  assert.equal(new Set(pids).size, 4, 'each run is a new worker');
  assert.ok((await readStatus(status)).recycled >= 2);
  await waitFor(() => kfcgi.workers().length === 1, 'one worker');
});

test('variable pool: a worker killed with SIGKILL is replaced and requests go on', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '2', '-s', socket, fixtures.kcgiExt], { socket, expectWorkers: 2 });
  const [victim] = kfcgi.workers();
  process.kill(victim!, 'SIGKILL');
  await waitFor(() => kfcgi.workers().length === 2 && !kfcgi.workers().includes(victim!), 'a replacement', { context: kfcgi.output });
  for (let i = 0; i < 6; i += 1) assert.match(await cgiFcgi(socket), /hello from kcgi-ext/);
});

test('variable pool: SIGHUP under steady load replaces every worker and no request fails', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '3', '-N', '6', '-s', socket, fixtures.kcgiExt], { socket, expectWorkers: 3 });
  const nginx = await startNginx(t, { serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_pass unix:${socket}; }` });
  const before = kfcgi.workers();
  const load = steadyLoad(nginx.url, 4);
  await waitFor(() => load.served() >= 25, 'the load to run', { context: kfcgi.output });
  process.kill(kfcgi.pid, 'SIGHUP');
  await waitFor(() => kfcgi.workers().every((pid) => !before.includes(pid)), 'every old worker to go', { context: kfcgi.output });
  // Requests go on being served by the new workers.
  const afterRestart = load.served();
  await waitFor(() => load.served() >= afterRestart + 25, 'requests served after the restart', { context: kfcgi.output });
  const { ok, failures } = await load.stop();
  assert.deepEqual(failures, [], `${failures.length} of ${ok + failures.length} requests failed`);
  assert.ok(ok >= 50, `only ${ok} requests`);
});

test('variable pool: SIGTERM removes the socket and leaves no worker', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '3', '-s', socket, process.execPath, nodeWorker], { socket, expectWorkers: 3 });
  await cgiFcgi(socket);
  const workers = kfcgi.workers();
  process.kill(kfcgi.pid, 'SIGTERM');
  assert.deepEqual(await kfcgi.exited, { code: 0, signal: null }, kfcgi.output());
  assert.equal(existsSync(socket), false);
  for (const pid of workers) assert.equal(processExists(pid), false, `worker ${pid} is still running`);
  void fixtures;
});

test('-r with a worker that does not implement the extension fails at start with what to do', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const plain = await runKfcgiCommand(['-d', '-r', '-p', '/', '-s', socket, fixtures.hello]);
  assert.equal(plain.status, 1, plain.output);
  assert.match(plain.output, /does not seem to implement the FastCGI Extensions for Management Control .*run it without -r/);
  assert.equal(existsSync(socket), false, 'no socket left behind');
  const php = await runKfcgiCommand(['-d', '-r', '-p', '/', '-s', socket, '/usr/bin/php-cgi']);
  assert.equal(php.status, 1);
  assert.match(php.output, /php-cgi does not implement the FastCGI Extensions for Management Control/);
});

test('variable pool on TCP: the manager refuses peers outside -a (FCGI_WEB_SERVER_ADDRS)', async (t) => {
  const fixtures = buildFixtures(t);
  for (const [allowed, served] of [
    ['127.0.0.1', true],
    ['10.9.9.9', false],
  ] as const) {
    const port = await freePort();
    const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '1', '-s', `127.0.0.1:${port}`, '-a', allowed, fixtures.kcgiExt], {
      socket: { host: '127.0.0.1', port },
      expectWorkers: 1,
    });
    const result = await cgiFcgi(`127.0.0.1:${port}`).then(
      (text) => text,
      (error: Error) => `failed: ${error.message}`,
    );
    if (served) assert.match(result, /hello from kcgi-ext/);
    else {
      assert.match(result, /^failed/);
      // The manager's log is written on a later turn of its event loop: waited for, not read at once.
      await waitFor(
        () => /refused connection from 127\.0\.0\.1: not in FCGI_WEB_SERVER_ADDRS/.test(kfcgi.output()),
        'the refusal in the log',
        { context: kfcgi.output },
      );
    }
    await kfcgi.stop();
  }
});

test('variable pool -C: a multiplexing worker (the Node library) is given several connections at once', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(
    t,
    ['-r', '-p', '/', '-n', '1', '-N', '2', '-C', '4', '-s', socket, '-S', status, process.execPath, nodeWorker],
    { socket, expectWorkers: 1 },
  );
  const pending = Array.from({ length: 8 }, () => cgiFcgi(socket, { QUERY_STRING: 'sleep=600' }));
  await waitFor(() => kfcgi.workers().length === 2, 'the second worker');
  const during = await statusWhen(status, (now) => now.busy === 2, 'both workers serving connections at once', kfcgi.output);
  assert.equal(during.processes.length, 2);
  assert.ok(
    during.processes.every((worker) => worker.connections! >= 1 && worker.handed! >= 1),
    JSON.stringify(during.processes),
  );
  const responses = await Promise.all(pending);
  const pids = new Set(responses.map((response) => /hello from node pid (\d+)/.exec(response)?.[1]));
  assert.equal(pids.size, 2, `8 connections at 4 per worker need 2 workers: ${[...pids].join(', ')}`);
  assert.equal(kfcgi.workers().length, 2);
  assert.equal((await readStatus(status)).maxWorkers, 2);
});

test('variable pool -C: connections go to the least busy worker, so every worker of the pool is used', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '2', '-N', '2', '-C', '16', '-s', socket, process.execPath, nodeWorker], {
    socket,
    expectWorkers: 2,
  });
  assert.equal(kfcgi.workers().length, 2);
  // Four at once: packing would put all four on one worker (it has room for 16); spreading gives each two.
  const responses = await Promise.all(Array.from({ length: 4 }, () => cgiFcgi(socket, { QUERY_STRING: 'sleep=300' })));
  const perPid = new Map<string, number>();
  for (const response of responses) {
    const pid = /hello from node pid (\d+)/.exec(response)?.[1] ?? 'none';
    perPid.set(pid, (perPid.get(pid) ?? 0) + 1);
  }
  assert.deepEqual([...perPid.values()], [2, 2], `connections per worker: ${JSON.stringify([...perPid])}`);
});

test('variable pool -C: an extra worker gets connections only while the floor is full, so it ages out under light load', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  // -C 8: a worker counts a connection as its own until it has written the cookie back, which on a busy
  // machine comes a little after the response; the room keeps that lag from looking like a full floor.
  const kfcgi = await startKfcgi(
    t,
    ['-r', '-p', '/', '-n', '1', '-N', '2', '-C', '8', '-w', '1', '-s', socket, process.execPath, nodeWorker],
    { socket, expectWorkers: 1 },
  );
  const [floor] = kfcgi.workers();
  // Nine at once: the floor worker takes eight, the ninth needs an extra worker.
  await Promise.all(Array.from({ length: 9 }, () => cgiFcgi(socket, { QUERY_STRING: 'sleep=300' })));
  assert.equal(kfcgi.workers().length, 2);
  // Light load (two at a time, well within the floor worker's room) for longer than -w: all of it goes to
  // the floor worker (picking the least busy worker overall would hand every second one to the idle extra
  // worker and keep it alive), and the extra one is released.
  const pids = new Set<string>();
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    for (const response of await Promise.all([cgiFcgi(socket, {}), cgiFcgi(socket, {})]))
      pids.add(/hello from node pid (\d+)/.exec(response)?.[1] ?? 'none');
  }
  assert.deepEqual([...pids], [String(floor)], 'light load went to the floor worker only');
  await waitFor(() => kfcgi.workers().length === 1, 'the extra worker released after -w', { context: kfcgi.output, timeoutMs: 15_000 });
});

/** Has the cookie-pattern worker return what it holds (the socket probes' cookies) until the pool is idle. */
async function releaseProbes(worker: number, status: string, output: () => string): Promise<void> {
  let last: Awaited<ReturnType<typeof readStatus>> | null = null;
  await waitFor(
    async () => {
      // Again on every check: a signal that came before the worker installed its handler did nothing.
      process.kill(worker, 'SIGWINCH');
      last = await readStatus(status).catch((error: Error) => {
        throw new Error(`${error.message}\n${output()}`);
      });
      return last.busy === 0 && (last.accepted ?? 0) > 0;
    },
    "the pool to go idle (the probes' cookies written back)",
    { timeoutMs: 10_000, context: () => `last status: ${JSON.stringify(last)}\n${output()}` },
  );
}

test('variable pool: two cookies written back in one write free both connections', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(
    t,
    ['-r', '-p', '/', '-n', '1', '-N', '1', '-C', '2', '-s', socket, '-S', status, process.execPath, cookiePatternWorker, 'together'],
    { socket, expectWorkers: 1 },
  );
  const [worker] = kfcgi.workers();
  await releaseProbes(worker!, status, kfcgi.output);
  // Both connections go to the one worker; it returns their cookies together, 16 bytes in one write.
  const responses = await Promise.all([cgiFcgi(socket), cgiFcgi(socket)]);
  for (const response of responses) assert.match(response, new RegExp(`hello from pattern pid ${worker}`));
  // A manager that took only the first cookie of a read would count one connection as open for ever.
  await statusWhen(status, (now) => now.busy === 0, 'both connections released', kfcgi.output);
  // And the worker was not retired for a protocol error: the next two connections go to it again.
  const again = await Promise.all([cgiFcgi(socket), cgiFcgi(socket)]);
  for (const response of again) assert.match(response, new RegExp(`hello from pattern pid ${worker}`));
  assert.deepEqual(kfcgi.workers(), [worker]);
  // A protocol error would have been logged when the cookies were read: every line up to now is waited for first.
  assert.doesNotMatch(await kfcgiOutputSoFar(kfcgi), /protocol error|no connection it was given/);
});

test('variable pool: a cookie that arrives in two pieces frees the worker only when it is whole', async (t) => {
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(
    t,
    ['-r', '-v', '-p', '/', '-n', '1', '-N', '1', '-s', socket, '-S', status, process.execPath, cookiePatternWorker, 'split'],
    { socket, expectWorkers: 1 },
  );
  const [worker] = kfcgi.workers();
  await releaseProbes(worker!, status, kfcgi.output);
  assert.match(await cgiFcgi(socket), new RegExp(`hello from pattern pid ${worker}`));
  // 3 of the 8 bytes are back: the worker still counts as busy, so with -N 1 the next connection waits.
  let secondDone = false;
  const second = cgiFcgi(socket).then((response) => {
    secondDone = true;
    return response;
  });
  // The event that would free the worker, were a partial cookie taken for a whole one: the manager reading those 3 bytes.
  await waitFor(() => /3 of 8 bytes of a cookie so far/.test(kfcgi.output()), 'the manager to read the partial cookie', {
    context: kfcgi.output,
  });
  // And the second connection is there to be taken: waiting in the listen queue.
  const partial = await statusWhen(status, (now) => now.backlog.queued === 1, 'the next connection in the listen queue', kfcgi.output);
  assert.equal(partial.busy, 1, 'the worker still counts as busy');
  assert.equal(partial.handedOver, partial.accepted, 'the next connection was not accepted and handed over');
  assert.equal(secondDone, false, 'the next connection waits for the whole cookie');
  process.kill(worker!, 'SIGWINCH');
  const served = await waitFor(() => second, 'the next connection to be served once the cookie is whole', {
    timeoutMs: 10_000,
    context: kfcgi.output,
  });
  assert.match(served, new RegExp(`hello from pattern pid ${worker}`));
  assert.deepEqual(kfcgi.workers(), [worker], 'the worker was not retired');
  // A protocol error would have been logged when the cookie was read: every line up to now is waited for first.
  assert.doesNotMatch(await kfcgiOutputSoFar(kfcgi), /protocol error|no connection it was given/);
});

test('variable pool -C with a kcgi-style worker: it serves the connections it is given one after another', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  await startKfcgi(t, ['-r', '-p', '/', '-n', '1', '-N', '1', '-C', '3', '-s', socket, fixtures.kcgiExt], { socket, expectWorkers: 1 });
  const responses = await Promise.all(Array.from({ length: 5 }, () => cgiFcgi(socket, { QUERY_STRING: 'sleep=100' })));
  for (const response of responses) assert.match(response, /hello from kcgi-ext/);
});

for (const kind of workerKinds) {
  test(`variable pool with ${kind.name}, fronted by the gatehouse FastCGI client with keep-alive`, async (t) => {
    const { FastCGIClient } = await import('../../src/fastcgi/client/index.js');
    const fixtures = buildFixtures(t);
    const socket = join(tempDir(t), 'app.sock');
    await startKfcgi(t, ['-r', '-p', '/', '-n', '2', '-N', '4', '-s', socket, ...kind.program(fixtures)], { socket, expectWorkers: 2 });
    const client = new FastCGIClient({ address: socket, maxConnections: 3 });
    t.after(() => client.close());
    const params = {
      REQUEST_METHOD: 'GET',
      SCRIPT_FILENAME: '/x',
      SCRIPT_NAME: '/x',
      QUERY_STRING: 'sleep=20',
      SERVER_PROTOCOL: 'HTTP/1.1',
      SERVER_NAME: 'localhost',
      SERVER_PORT: '80',
      GATEWAY_INTERFACE: 'CGI/1.1',
      REQUEST_URI: '/x',
    };
    // Kept-alive connections stay with their worker until the client closes them; requests on them keep working.
    const results = await Promise.all(Array.from({ length: 12 }, () => client.fetchAll({ params })));
    for (const result of results) {
      assert.equal(result.protocolStatus, 0);
      assert.match(result.stdout.toString(), kind.expect);
    }
  });
}

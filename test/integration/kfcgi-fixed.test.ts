/**
 * gatehouse kfcgi, fixed pools, with real workers fronted by nginx and by
 * libfcgi's cgi-fcgi: php-cgi, fcgiwrap, a libfcgi C program, a Perl FCGI
 * script and the gatehouse worker library; respawn after SIGKILL; SIGHUP
 * under load; SIGTERM; the jail, the users and the socket's mode.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startNginx, NGINX_FASTCGI_PARAMS } from '../kit/nginx.js';
import { httpRequest } from '../kit/http.js';
import { freePort, requireProgram, tempDir } from '../kit/process.js';
import { buildFixtures, buildJail, cgiFcgi, nodeWorker, runKfcgiCommand, startKfcgi, steadyLoad } from '../kit/kfcgi.js';
import { processExists, procRoot, procStatusField, socketsOf } from '../kit/proc.js';
import { waitFor } from '../kit/wait.js';

const isRoot = process.getuid?.() === 0;

function nginxFor(socket: string, scriptFilename = '/x') {
  return {
    serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_param SCRIPT_FILENAME ${scriptFilename}; fastcgi_pass unix:${socket}; }`,
  };
}

const realWorkers: {
  name: string;
  program: (f: ReturnType<typeof buildFixtures>) => string[];
  script?: (f: ReturnType<typeof buildFixtures>) => string;
  env?: NodeJS.ProcessEnv;
  expect: RegExp;
}[] = [
  { name: 'a libfcgi C program', program: (f) => [f.hello], expect: /^hello from libfcgi pid (\d+)/m },
  {
    name: 'php-cgi (PHP_FCGI_CHILDREN=0)',
    program: () => [requireProgram('/usr/bin/php-cgi')],
    script: (f) => f.phpScript,
    env: { PHP_FCGI_CHILDREN: '0' },
    expect: /^hello from php-cgi pid (\d+)/m,
  },
  {
    name: 'fcgiwrap',
    program: () => [requireProgram('/usr/sbin/fcgiwrap')],
    script: (f) => f.cgiScript,
    expect: /^hello from fcgiwrap cgi pid \d+/m,
  },
  { name: 'a Perl FCGI script', program: (f) => ['/usr/bin/perl', f.perl], expect: /^hello from perl pid (\d+)/m },
  { name: 'the gatehouse worker library', program: () => [process.execPath, nodeWorker], expect: /^hello from node pid (\d+)/m },
];

for (const worker of realWorkers) {
  test(`fixed pool runs ${worker.name} unchanged, behind nginx and cgi-fcgi`, async (t) => {
    const fixtures = buildFixtures(t);
    const dir = tempDir(t);
    const socket = join(dir, 'app.sock');
    const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', socket, ...worker.program(fixtures)], {
      socket,
      env: worker.env,
      expectWorkers: 2,
    });
    const nginx = await startNginx(t, nginxFor(socket, worker.script?.(fixtures) ?? '/x'));
    const seen = new Set<string>();
    for (let i = 0; i < 20; i += 1) {
      const response = await httpRequest(`${nginx.url}/`);
      assert.equal(response.status, 200, `${response.body.toString()}\n${kfcgi.output()}`);
      const match = worker.expect.exec(response.body.toString());
      assert.ok(match, `unexpected body: ${response.body.toString()}`);
      if (match[1]) seen.add(match[1]);
    }
    const direct = await cgiFcgi(socket, { SCRIPT_FILENAME: worker.script?.(fixtures) ?? '/x' });
    assert.match(direct, worker.expect);
    // The workers are the pool's processes (fcgiwrap's pid is its CGI child's, not a worker's).
    for (const pid of seen)
      assert.ok(kfcgi.workers().includes(Number(pid)), `pid ${pid} answered but is not one of kfcgi's workers ${kfcgi.workers()}`);
  });
}

test('workers start with a clean signal mask and default dispositions, in their own process group', async (t) => {
  const _fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  // sleep(1) changes no disposition itself, so what it shows is what kfcgi gave it. The manager runs with signals handled.
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, '/bin/sleep', '600'], { socket, expectWorkers: 1 });
  const [pid] = kfcgi.workers();
  assert.equal(procStatusField(pid!, 'SigBlk'), '0000000000000000');
  assert.equal(procStatusField(pid!, 'SigIgn'), '0000000000000000');
  assert.equal(procStatusField(pid!, 'SigCgt'), '0000000000000000');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  assert.equal(Number(fields[2]), pid, 'the worker leads its own process group');
});

test('a worker killed with SIGKILL is started again and the next requests are served', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', socket, fixtures.hello], { socket, expectWorkers: 2 });
  const before = kfcgi.workers();
  process.kill(before[0]!, 'SIGKILL');
  await waitFor(() => kfcgi.workers().length === 2 && !kfcgi.workers().includes(before[0]!), 'a replacement worker', {
    context: kfcgi.output,
  });
  const after = kfcgi.workers();
  assert.ok(after.includes(before[1]!));
  for (let i = 0; i < 10; i += 1) assert.match(await cgiFcgi(socket), /hello from libfcgi/);
  const killedLine = new RegExp(`worker ${before[0]}: killed by SIGKILL`);
  await waitFor(() => killedLine.test(kfcgi.output()), 'the kill logged', { context: kfcgi.output });
});

for (const subject of [
  { name: 'a program that SIGTERM ends even mid-request', kind: 'abrupt' },
  { name: 'php-cgi', kind: 'php' },
  { name: 'a Perl FCGI script', kind: 'perl' },
] as const) {
  test(`SIGHUP under steady load (${subject.name}): every worker is replaced and no request fails`, async (t) => {
    const fixtures = buildFixtures(t);
    const socket = join(tempDir(t), 'app.sock');
    const program = {
      perl: ['/usr/bin/perl', fixtures.perl],
      php: [requireProgram('/usr/bin/php-cgi')],
      abrupt: [fixtures.hello, '--die-on-sigterm'],
    }[subject.kind];
    // PHP_FCGI_MAX_REQUESTS=0: php-cgi otherwise exits after 500 requests, which this load reaches within
    // seconds; its replacement (correct behaviour) would then race the worker count read below.
    const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '3', '-s', socket, ...program], {
      socket,
      expectWorkers: 3,
      env: { PHP_FCGI_CHILDREN: '0', PHP_FCGI_MAX_REQUESTS: '0' },
    });
    const nginx = await startNginx(t, nginxFor(socket, subject.kind === 'php' ? fixtures.phpScript : '/x'));
    const before = kfcgi.workers();
    const load = steadyLoad(nginx.url, 6);
    await waitFor(() => load.served() >= 25, 'the load to run', { context: kfcgi.output });
    process.kill(kfcgi.pid, 'SIGHUP');
    await waitFor(() => /SIGHUP: restart done/.test(kfcgi.output()), 'the restart to finish', { context: kfcgi.output, timeoutMs: 60_000 });
    // Requests go on being served by the new workers.
    const afterRestart = load.served();
    await waitFor(() => load.served() >= afterRestart + 25, 'requests served after the restart', { context: kfcgi.output });
    const { ok, failures } = await load.stop();
    const after = kfcgi.workers();
    assert.equal(after.length, 3);
    for (const pid of after) assert.ok(!before.includes(pid), `worker ${pid} was not replaced`);
    assert.deepEqual(failures, [], `${failures.length} of ${ok + failures.length} requests failed`);
    assert.ok(ok >= 50, `only ${ok} requests were made`);
  });
}

test('SIGTERM stops the workers, removes the socket and exits 0 with no process left', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '3', '-s', socket, '-S', status, fixtures.hello], { socket, expectWorkers: 3 });
  const workers = kfcgi.workers();
  process.kill(kfcgi.pid, 'SIGTERM');
  const exit = await kfcgi.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, kfcgi.output());
  assert.equal(existsSync(socket), false, 'the socket was removed');
  assert.equal(existsSync(status), false, 'the status socket was removed');
  for (const pid of workers) assert.equal(processExists(pid), false, `worker ${pid} is still running`);
});

test('-s host:port listens on TCP and passes FCGI_WEB_SERVER_ADDRS (-a) to the workers', async (t) => {
  const fixtures = buildFixtures(t);
  const port = await freePort();
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', `127.0.0.1:${port}`, '-a', '127.0.0.1', fixtures.hello], {
    socket: { host: '127.0.0.1', port },
    expectWorkers: 2,
  });
  const [pid] = kfcgi.workers();
  const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
  assert.ok(environ.includes('FCGI_WEB_SERVER_ADDRS=127.0.0.1'), 'the worker got FCGI_WEB_SERVER_ADDRS');
  const nginx = await startNginx(t, { serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_pass 127.0.0.1:${port}; }` });
  const response = await httpRequest(`${nginx.url}/`);
  assert.equal(response.status, 200);
  assert.match(response.body.toString(), /hello from libfcgi/);
});

test('an existing socket: a stale one is replaced, a live one is refused', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const first = await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  const refused = await runKfcgiCommand(['-d', '-p', '/', '-n', '1', '-s', socket, fixtures.hello]);
  assert.notEqual(refused.status, 0);
  assert.match(refused.output, /another server is accepting connections on .*app\.sock/);
  assert.ok(existsSync(socket), 'the live socket was left in place');
  // A crash leaves the socket file behind (its workers die with the manager: kfcgi-lifeline.test.ts): the next start replaces it.
  const workers = first.workers();
  process.kill(first.pid, 'SIGKILL');
  await first.exited;
  await waitFor(() => workers.every((pid) => !processExists(pid)), 'the old workers to exit');
  assert.ok(existsSync(socket));
  const second = await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  // Logged before the socket was bound, written out on a later turn of the manager's event loop.
  await waitFor(() => /removed stale socket/.test(second.output()), 'the stale socket to be reported', { context: second.output });
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
});

test('-p: the workers run inside the jail (their /proc/PID/root is the jail)', { skip: !isRoot && 'needs root (chroot)' }, async (t) => {
  const fixtures = buildFixtures(t);
  const { jail, program } = buildJail(t, fixtures.helloStatic, 'hello');
  const socket = join(jail, 'run/httpd.sock');
  const kfcgi = await startKfcgi(t, ['-p', jail, '-n', '2', '-s', socket, program], { socket, expectWorkers: 2 });
  for (const pid of kfcgi.workers()) assert.equal(procRoot(pid), jail);
  assert.equal(procRoot(kfcgi.pid), jail, 'the manager is jailed too');
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
  process.kill(kfcgi.pid, 'SIGTERM');
  assert.equal((await kfcgi.exited).code, 0);
  assert.equal(existsSync(socket), false, 'the socket was removed from inside the jail');
});

test('-p with a dynamically linked worker: its libraries copied per ldd', { skip: !isRoot && 'needs root (chroot)' }, async (t) => {
  const fixtures = buildFixtures(t);
  const { jail, program } = buildJail(t, fixtures.hello, 'hello');
  const socket = join(jail, 'run/httpd.sock');
  const kfcgi = await startKfcgi(t, ['-p', jail, '-n', '1', '-s', socket, program], { socket, expectWorkers: 1 });
  assert.equal(procRoot(kfcgi.workers()[0]!), jail);
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
});

test('-U runs the workers as that user (groups, gid, uid); -u gives the socket to a user with mode 0660', {
  skip: !isRoot && 'needs root',
}, async (t) => {
  const fixtures = buildFixtures(t);
  const { jail, program } = buildJail(t, fixtures.helloStatic, 'hello');
  const socket = join(jail, 'run/httpd.sock');
  const kfcgi = await startKfcgi(t, ['-p', jail, '-n', '2', '-s', socket, '-u', 'nobody', '-U', 'nobody', program], {
    socket,
    expectWorkers: 2,
  });
  const stat = statSync(socket);
  assert.equal(stat.uid, 65534, 'socket owner');
  assert.equal(stat.mode & 0o777, 0o660, 'socket mode');
  for (const pid of [...kfcgi.workers(), kfcgi.pid]) {
    assert.match(procStatusField(pid, 'Uid'), /^65534\s+65534\s+65534\s+65534$/);
    assert.match(procStatusField(pid, 'Gid'), /^65534\s+65534\s+65534\s+65534$/);
    assert.equal(procStatusField(pid, 'Groups'), '65534');
  }
  assert.match(await cgiFcgi(socket), /hello from libfcgi pid \d+ uid 65534/);
  // Jailed and unprivileged, the manager still sees (through /proc opened before the jail) whether a worker is idle.
  const before = kfcgi.workers();
  process.kill(kfcgi.pid, 'SIGHUP');
  await waitFor(() => /SIGHUP: restart done/.test(kfcgi.output()), 'the restart', { context: kfcgi.output, timeoutMs: 30_000 });
  assert.doesNotMatch(kfcgi.output(), /still busy after/);
  const after = kfcgi.workers();
  assert.equal(after.length, 2);
  for (const pid of after) assert.ok(!before.includes(pid));
  assert.match(await cgiFcgi(socket), /uid 65534/);
});

test('the socket has mode 0660 from bind on, whatever the umask', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const previous = process.umask(0);
  try {
    await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  } finally {
    process.umask(previous);
  }
  assert.equal(statSync(socket).mode & 0o777, 0o660);
});

test('the manager holds no connection: a busy worker has it, the manager does not', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, fixtures.hello], { socket, expectWorkers: 1 });
  // Compared by inode, not counted: sockets the manager had right after start may close meanwhile (two did
  // in one fresh-clone CI run, which failed a count), and that is no connection held; a new one would be.
  const before = socketsOf(kfcgi.pid);
  const [worker] = kfcgi.workers();
  const workerBefore = socketsOf(worker!);
  const pending = cgiFcgi(socket, { QUERY_STRING: 'sleep=2000' });
  // The event after which the manager could hold the connection: the worker has accepted it.
  await waitFor(() => socketsOf(worker!).some((inode) => !workerBefore.includes(inode)), 'the worker to accept the connection', {
    context: kfcgi.output,
  });
  assert.deepEqual(
    socketsOf(kfcgi.pid).filter((inode) => !before.includes(inode)),
    [],
  );
  assert.match(await pending, /hello from libfcgi/);
});

/**
 * gatehouse kfcgi -D: a dynamic pool of programs that know nothing of it
 * (php-cgi, a libfcgi C program) behind nginx. A bounded burst grows the
 * pool to -N; once idle for -w seconds it shrinks back to -n; a worker that
 * holds a connection is never released, however long it uses no CPU; and
 * the status socket reports what the kernel and /proc say (the listen queue
 * with a known number of waiting connections, workers by state, respawns by
 * cause, CPU and memory), for fixed pools too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startNginx, NGINX_FASTCGI_PARAMS } from '../kit/nginx.js';
import { httpRequest } from '../kit/http.js';
import { requireProgram, tempDir } from '../kit/process.js';
import { readStatus } from '../../src/kfcgi/status.js';
import { buildFixtures, cgiFcgi, kfcgiOutputSoFar, startKfcgi, statusWhen } from '../kit/kfcgi.js';
import { waitFor } from '../kit/wait.js';

function procState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

const programs = [
  {
    name: 'a libfcgi C program',
    program: (f: ReturnType<typeof buildFixtures>) => [f.hello],
    script: () => '/x',
    env: {},
    expect: /hello from libfcgi pid (\d+)/,
  },
  {
    name: 'php-cgi',
    program: () => [requireProgram('/usr/bin/php-cgi')],
    script: (f: ReturnType<typeof buildFixtures>) => f.phpScript,
    env: { PHP_FCGI_CHILDREN: '0', PHP_FCGI_MAX_REQUESTS: '0' },
    expect: /hello from php-cgi pid (\d+)/,
  },
];

for (const subject of programs) {
  test(`-D with ${subject.name} behind nginx: a burst grows the pool to -N, and after -w idle seconds it shrinks back to -n`, async (t) => {
    const fixtures = buildFixtures(t);
    const dir = tempDir(t);
    const socket = join(dir, 'app.sock');
    const status = join(dir, 'status.sock');
    const kfcgi = await startKfcgi(
      t,
      ['-D', '-p', '/', '-n', '1', '-N', '4', '-w', '1', '-s', socket, '-S', status, ...subject.program(fixtures)],
      { socket, env: subject.env, expectWorkers: 1 },
    );
    const nginx = await startNginx(t, {
      serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_param SCRIPT_FILENAME ${subject.script(fixtures)}; fastcgi_pass unix:${socket}; }`,
    });
    // A bounded burst: eight requests at once, each holding its worker for a moment, so connections wait.
    const responses = await Promise.all(Array.from({ length: 8 }, () => httpRequest(`${nginx.url}/?sleep=1000`)));
    const pids = new Set<string>();
    for (const response of responses) {
      assert.equal(response.status, 200, `${response.body}\n${readFileSync(nginx.errorLog, 'utf8').slice(-2000)}\n${kfcgi.output()}`);
      const match = subject.expect.exec(response.body.toString());
      assert.ok(match, response.body.toString());
      pids.add(match[1]!);
    }
    // The pool's largest size, from the manager's own record of each start: exactly -N, never more.
    const sizes = [...kfcgi.output().matchAll(/worker \d+: started \((\d+) worker\(s\)\)/g)].map((match) => Number(match[1]));
    assert.equal(Math.max(...sizes), 4, `pool sizes seen: ${sizes.join(' ')}\n${kfcgi.output()}`);
    assert.ok(pids.size >= 2, `the workers started for the burst served it: ${[...pids].join(' ')}`);
    const grown = await readStatus(status);
    assert.equal(grown.mode, 'dynamic');
    assert.ok(grown.maxReached >= 1, 'the burst wanted more than -N workers');
    assert.ok((grown.backlog.maxQueued ?? 0) >= 1, 'connections were seen waiting in the listen queue');

    const shrunk = await statusWhen(status, (now) => now.released === 3, 'the three extra workers released', kfcgi.output);
    assert.equal(shrunk.workers, 1);
    await waitFor(() => kfcgi.workers().length === 1, 'one worker process', { context: kfcgi.output });
    assert.equal(shrunk.respawns, 0, 'released workers are not respawned');
    await waitFor(() => /releasing \(no CPU used for 1 s\)/.test(kfcgi.output()), 'the release logged', { context: kfcgi.output });
    // Still serving after the shrink.
    const after = await httpRequest(`${nginx.url}/`);
    assert.equal(after.status, 200);
    assert.match(after.body.toString(), subject.expect);
  });
}

test('-D never releases a worker that holds a connection, however long it uses no CPU', async (t) => {
  const fixtures = buildFixtures(t);
  const socket = join(tempDir(t), 'app.sock');
  const kfcgi = await startKfcgi(t, ['-D', '-v', '-p', '/', '-n', '1', '-N', '2', '-w', '1', '-s', socket, fixtures.hello], {
    socket,
    expectWorkers: 1,
  });
  // Two long requests: the pool grows to two workers, both sleeping with a connection (no CPU for -w seconds).
  const requests = [cgiFcgi(socket, { QUERY_STRING: 'sleep=4000' }), cgiFcgi(socket, { QUERY_STRING: 'sleep=4000' })];
  // The event that would release a busy worker: the manager picking it as idle by CPU. It must keep it.
  await waitFor(() => /used no CPU for 1 s but holds a connection; kept/.test(kfcgi.output()), 'an idle-by-CPU worker checked', {
    context: kfcgi.output,
  });
  // Both workers hold a sleeping request (4 s) now, so no release may have happened: every line up to now is
  // waited for first (the pool logs "worker PID: releasing (REASON)").
  assert.doesNotMatch(await kfcgiOutputSoFar(kfcgi), /worker \d+: releasing \(/);
  // A busy worker released would have been killed with its request: both are answered.
  for (const response of await Promise.all(requests)) assert.match(response, /hello from libfcgi/);
  // Once the requests are done, the extra worker goes.
  await waitFor(() => kfcgi.workers().length === 1, 'the extra worker released', { context: kfcgi.output });
});

test('status: the listen queue with a known number of waiting connections, workers by state, respawns by cause, CPU and memory', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t);
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', socket, '-S', status, fixtures.hello], { socket, expectWorkers: 2 });
  const [first, second] = kfcgi.workers();
  assert.match(await cgiFcgi(socket), /hello from libfcgi/);
  const idle = await statusWhen(status, (now) => now.idle === 2, 'both workers idle', kfcgi.output);
  assert.equal(idle.mode, 'fixed');
  assert.deepEqual([idle.busy, idle.starting, idle.backlog.queued], [0, 0, 0]);
  for (const worker of idle.processes) {
    assert.equal(worker.state, 'idle');
    assert.equal(worker.connections, 0);
    assert.ok(worker.rssBytes! > 0 && worker.cpuSeconds! >= 0, JSON.stringify(worker));
  }

  // One worker busy with a connection: the kernel's list of the socket's connections shows which.
  const busyRequest = cgiFcgi(socket, { QUERY_STRING: 'sleep=3000' });
  const busy = await statusWhen(status, (now) => now.busy === 1, 'one worker busy', kfcgi.output);
  assert.equal(busy.idle, 1);
  const busyWorker = busy.processes.find((worker) => worker.state === 'busy')!;
  assert.equal(busyWorker.connections, 1);

  // Freeze the idle one too: nobody accepts, so three new connections wait in the listen queue, and exactly three.
  const idleWorker = busyWorker.pid === first ? second! : first!;
  const before = await readStatus(status);
  process.kill(idleWorker, 'SIGSTOP');
  // Stopped for real before the first connect (a blocked accept() woken by a connection takes it before it stops).
  await waitFor(() => procState(idleWorker) === 'T', 'the idle worker stopped', { context: kfcgi.output });
  const waiting: net.Socket[] = [];
  t.after(() => {
    for (const connection of waiting) connection.destroy();
  });
  for (let index = 0; index < 3; index += 1) {
    const connection = net.connect(socket);
    connection.on('error', () => undefined);
    await new Promise((resolve) => connection.once('connect', resolve));
    waiting.push(connection);
  }
  const queued = await readStatus(status);
  assert.equal(queued.backlog.queued, 3);
  // Connections wait while every worker is busy (or frozen): the manager's next reading of the queue counts that
  // as a fixed pool's maximum reached, and remembers the most that waited.
  const saturated = await statusWhen(status, (now) => now.maxReached > before.maxReached, 'a max-reached event', kfcgi.output);
  assert.equal(saturated.backlog.maxQueued, 3);
  for (const connection of waiting) connection.destroy();
  process.kill(idleWorker, 'SIGCONT');
  assert.match(await busyRequest, /hello from libfcgi/);

  // A worker killed with SIGKILL: respawned, and the cause counted.
  process.kill(idleWorker, 'SIGKILL');
  const respawned = await statusWhen(status, (now) => now.respawns === 1 && now.workers === 2, 'the respawn', kfcgi.output);
  assert.deepEqual(respawned.respawnCauses, { 'signal SIGKILL': 1 });
  assert.ok(!respawned.pids.includes(idleWorker));
});

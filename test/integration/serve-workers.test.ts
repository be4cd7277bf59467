/**
 * `gatehouse serve --workers 2`: two front processes accepting on the same
 * sockets, one cgid daemon, CGI, FastCGI (the worker library's test app) and
 * static routes. Which worker served a request is read from the access log's
 * %P (the serving process's pid); the process tree from /proc.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startTestApp } from '../kit/worker-app.js';
import { runGatehouse, startGatehouse, type RunningServe } from '../kit/serve.js';
import { waitFor, waitForValue } from '../kit/wait.js';
import { childrenOf, commandLine, processExists } from '../kit/proc.js';

const alive = processExists;

/** Live children of `parent` with their command lines, from /proc. */
function children(parent: number): Array<{ pid: number; cmdline: string }> {
  return childrenOf(parent).map((pid) => ({ pid, cmdline: ` ${commandLine(pid)} ` }));
}

async function site(t: { after(fn: () => unknown): void }) {
  const dir = tempDir(t, 'gatehouse-serve-workers-');
  mkdirSync(join(dir, 'www'));
  mkdirSync(join(dir, 'cgi'));
  writeFileSync(join(dir, 'www', 'a.txt'), 'file a\n');
  writeFileSync(join(dir, 'cgi', 'hi.sh'), `#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nhi from cgi\\n'\n`, { mode: 0o755 });
  writeFileSync(
    join(dir, 'cgi', 'slow.sh'),
    `#!/bin/sh
echo "$$" > "${join(dir, 'slow.started')}"
while [ ! -e "${join(dir, 'slow.release')}" ]; do sleep 0.05; done
printf 'Content-Type: text/plain\\n\\nfinished\\n'
`,
    { mode: 0o755 },
  );
  const app = await startTestApp(t, dir);
  const config = join(dir, 'serve.toml');
  writeFileSync(
    config,
    `docroot = "www"
cgi-bin = "cgi"
access-log = "access.log"
access-log-format = "%P %>s %r"

[[fastcgi]]
url = "/app/"
upstreams = ["unix:${join(dir, 'app.sock')}"]
root = "www"
# The application answers every path under /app/: no script file to check first.
check-script = false
`,
  );
  return { dir, app, config, accessLog: join(dir, 'access.log') };
}

interface Started {
  server: RunningServe;
  supervisor: number;
  workers: number[];
}

/** serve --workers 2, once the supervisor says both workers listen. */
async function startWorkers(t: { after(fn: () => unknown): void }, config: string, extra: readonly string[] = []): Promise<Started> {
  const server = await startGatehouse(t, 'serve', ['--config', config, '--workers', '2', ...extra]);
  const line = await waitForValue(
    () => /listening on .* with 2 workers \(pids (\d+), (\d+)\)/.exec(server.output()),
    (match) => match !== null,
    "the supervisor's line naming both workers",
    { timeoutMs: 15_000 },
  );
  assert.ok(line, `the supervisor did not report its workers:\n${server.output()}`);
  return { server, supervisor: server.child.pid!, workers: [Number(line[1]), Number(line[2])] };
}

/** The pids in the access log's lines (the %P field), one per request, in order. */
function servedBy(accessLog: string): number[] {
  if (!existsSync(accessLog)) return [];
  return readFileSync(accessLog, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => Number(line.split(' ', 1)[0]));
}

const ROUTES = [
  { path: '/a.txt', body: 'file a\n' },
  { path: '/cgi-bin/hi.sh', body: 'hi from cgi\n' },
  { path: '/app/hello', body: 'hello from gatehouse\n' },
];

test('--workers 2: CGI, FastCGI and static requests spread over both workers, with one cgid daemon for both', async (t) => {
  const { config, accessLog } = await site(t);
  const { server, supervisor, workers } = await startWorkers(t, config);
  const tree = children(supervisor);
  const daemons = tree.filter((child) => / cgid /.test(child.cmdline));
  assert.equal(daemons.length, 1, `one cgid daemon under the supervisor: ${JSON.stringify(tree)}`);
  assert.deepEqual(
    tree
      .filter((child) => / serve /.test(child.cmdline))
      .map((child) => child.pid)
      .sort(),
    [...workers].sort(),
  );
  // Each worker connected to that daemon and no other: its start line names the daemon's pid.
  // A worker tells the supervisor it listens before its own log line is written (logs go out a turn later).
  for (const pid of workers) {
    const started = new RegExp(`serve\\[${pid}\\]: worker \\d: listening .* cgid daemon \\(pid ${daemons[0]!.pid}\\)`);
    await waitFor(() => started.test(server.output()), `worker ${pid}'s line naming the shared daemon`, {
      timeoutMs: 10_000,
      context: () => server.output(),
    });
  }

  // Concurrent clients, a connection per request, until both workers have served every route (bounded).
  let sent = 0;
  const seen = new Map<string, Set<number>>(ROUTES.map((route) => [route.path, new Set()]));
  const deadline = Date.now() + 30_000;
  const everyRouteOnBoth = () => [...seen.values()].every((pids) => pids.size === 2);
  while (!everyRouteOnBoth() && sent < 3000 && Date.now() < deadline) {
    const batch = Array.from({ length: 12 }, (_, index) => ROUTES[index % ROUTES.length]!);
    const results = await Promise.all(batch.map((route) => httpRequest(`${server.base}${route.path}`)));
    results.forEach((result, index) => {
      assert.equal(result.status, 200, batch[index]!.path);
      assert.equal(result.body.toString(), batch[index]!.body);
    });
    sent += batch.length;
    // The access log is written in batches: read what is there; the lines name the route and the pid.
    for (const line of readFileSync(accessLog, 'utf8').split('\n').filter(Boolean)) {
      const [pid, , , path] = line.split(' ');
      seen.get(path!)?.add(Number(pid));
    }
  }
  assert.ok(everyRouteOnBoth(), `after ${sent} requests, routes by worker: ${JSON.stringify([...seen].map(([p, s]) => [p, [...s]]))}`);
  for (const pids of seen.values()) for (const pid of pids) assert.ok(workers.includes(pid), `pid ${pid} is not a worker`);
  const lines = await waitForValue(
    () => servedBy(accessLog),
    (pids) => pids.length === sent,
    'an access log line per request',
  );
  assert.equal(lines.length, sent);
  const share = workers.map((pid) => lines.filter((served) => served === pid).length / sent);
  t.diagnostic(`${sent} requests; shares by worker: ${share.map((s) => s.toFixed(2)).join(', ')}`);
});

test('a worker killed with SIGKILL under load: only requests in flight on it fail, and it comes back', async (t) => {
  const { config, accessLog } = await site(t);
  const { server, workers } = await startWorkers(t, config);
  const victim = workers[0]!;
  const clients = 6;
  let killedAt = Number.POSITIVE_INFINITY;
  let restartSeen = Number.POSITIVE_INFINITY;
  let stop = false;
  const outcomes: Array<{ started: number; ended: number; ok: boolean; error?: string }> = [];
  const client = async (index: number) => {
    // Bounded: at most 400 requests per client, and the loop below stops it.
    for (let count = 0; count < 400 && !stop; count++) {
      const route = ROUTES[(index + count) % ROUTES.length]!;
      const started = Date.now();
      try {
        const result = await httpRequest(`${server.base}${route.path}`, { timeoutMs: 10_000 });
        const ok = result.status === 200 && result.body.toString() === route.body;
        outcomes.push({ started, ended: Date.now(), ok, ...(ok ? {} : { error: `status ${result.status}` }) });
      } catch (error) {
        outcomes.push({ started, ended: Date.now(), ok: false, error: (error as Error).message });
      }
    }
  };
  const load = Promise.all(Array.from({ length: clients }, (_, index) => client(index)));
  // Kill it once it is serving under this load (its pid in the access log).
  await waitForValue(
    () => servedBy(accessLog).includes(victim),
    (served) => served,
    'the victim serving requests',
    { timeoutMs: 15_000 },
  );
  killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  // From the moment it is gone, no request can be in flight on it.
  await waitForValue(
    () => !alive(victim),
    (gone) => gone,
    'the killed worker to be gone',
  );
  const died = Date.now();
  const restarted = await waitForValue(
    () => /worker 0 restarted \(pid (\d+)\)/.exec(server.output()),
    (match) => match !== null,
    "the dead worker's restart",
    { timeoutMs: 15_000 },
  );
  assert.ok(restarted, `the worker was not restarted:\n${server.output()}`);
  assert.match(server.output(), new RegExp(`worker 0 \\(pid ${victim}\\) killed by SIGKILL after \\d+ ms; starting a new one in \\d+ ms`));
  restartSeen = Date.now();
  const newPid = Number(restarted[1]);
  // Requests go on until the new worker has served some, then the clients stop.
  const servedByNew = await waitForValue(
    () => servedBy(accessLog).includes(newPid),
    (served) => served,
    'the restarted worker serving requests',
    { timeoutMs: 20_000 },
  );
  stop = true;
  await load;
  assert.ok(servedByNew, 'the restarted worker served requests');
  const failed = outcomes.filter((outcome) => !outcome.ok);
  // A failed request was in flight when the worker died: sent before the kill, and at most one per client.
  for (const failure of failed) assert.ok(failure.started <= died, `a request started after the worker was gone failed: ${failure.error}`);
  assert.ok(failed.length <= clients, `${failed.length} failed requests, more than the ${clients} that can be in flight`);
  // The other worker served while the slot waited for its restart, and both did after it.
  assert.ok(
    outcomes.some((outcome) => outcome.started > died && outcome.ended < restartSeen && outcome.ok),
    'requests between the death and the restart succeeded',
  );
  assert.ok(
    outcomes.some((outcome) => outcome.started > restartSeen && outcome.ok),
    'requests after the restart succeeded',
  );
  assert.ok(!alive(victim));
  t.diagnostic(`${outcomes.length} requests, ${failed.length} failed (in flight at the kill at ${killedAt})`);
});

test('SIGUSR1 reaches every worker; SIGHUP reloads the configuration in every worker and kills none; SIGTERM finishes a script in flight, then stops every process', async (t) => {
  const { dir, config } = await site(t);
  const socket = join(dir, 'front.sock');
  const { server, supervisor, workers } = await startWorkers(t, config, ['--listen', `unix:${socket}`]);
  const daemon = children(supervisor).find((child) => / cgid /.test(child.cmdline))!.pid;
  // The unix socket is served by the workers too.
  const overUnix = await httpRequest('http://localhost/a.txt', { socketPath: socket });
  assert.equal(overUnix.body.toString(), 'file a\n');

  process.kill(supervisor, 'SIGUSR1');
  for (const pid of workers)
    assert.match(
      await waitForValue(server.output, (text) => text.includes(`serve[${pid}]: SIGUSR1: log files reopened`), "a worker's SIGUSR1 line"),
      new RegExp(`serve\\[${pid}\\]: SIGUSR1`),
    );
  // SIGHUP: every worker reloads the file (here a new docroot) and keeps its sockets and its share of the limits.
  mkdirSync(join(dir, 'www2'));
  writeFileSync(join(dir, 'www2', 'a.txt'), 'file a, reloaded\n');
  writeFileSync(config, readFileSync(config, 'utf8').replace('docroot = "www"', 'docroot = "www2"'));
  process.kill(supervisor, 'SIGHUP');
  for (const pid of workers)
    await waitForValue(
      server.output,
      (text) => text.includes(`serve[${pid}]: SIGHUP: reloaded the configuration from ${config}`),
      `worker ${pid}'s reload line`,
    );
  for (const pid of [supervisor, ...workers, daemon]) assert.ok(alive(pid), `pid ${pid} survived SIGHUP`);
  // Both workers serve the new docroot: requests until each has answered one (bounded), every answer the new file.
  const reloadedBy = new Set<number>();
  const logged = servedBy(join(dir, 'access.log')).length;
  for (let count = 0; count < 200 && reloadedBy.size < 2; count++) {
    const answers = await Promise.all(Array.from({ length: 4 }, () => httpRequest(`${server.base}/a.txt`)));
    for (const answer of answers) assert.equal(answer.body.toString(), 'file a, reloaded\n');
    for (const pid of servedBy(join(dir, 'access.log')).slice(logged)) reloadedBy.add(pid);
  }
  assert.deepEqual([...reloadedBy].sort(), [...workers].sort());

  // A script in flight at SIGTERM finishes.
  const slow = httpRequest(`${server.base}/cgi-bin/slow.sh`);
  await waitForValue(
    () => existsSync(join(dir, 'slow.started')),
    (started) => started,
    "the slow script's start",
  );
  process.kill(supervisor, 'SIGTERM');
  await waitForValue(
    server.output,
    (text) => /SIGTERM: the workers finish their requests in flight/.test(text),
    "the supervisor's SIGTERM line",
  );
  writeFileSync(join(dir, 'slow.release'), '');
  const answer = await slow;
  assert.equal(answer.body.toString(), 'finished\n');
  const { code } = await server.exited;
  assert.equal(code, 0, server.output());
  const leftovers = await waitForValue(
    () => [...workers, daemon].filter(alive),
    (pids) => pids.length === 0,
    'every worker and the daemon to exit',
  );
  assert.deepEqual(leftovers, [], 'no worker or daemon outlives the supervisor');
  assert.ok(!existsSync(socket), 'the unix socket file is removed');
});

test('workers: auto is one per core, and fewer max-scripts than workers is refused', async (t) => {
  const { config } = await site(t);
  const { availableParallelism } = await import('node:os');
  const auto = await runGatehouse(['serve', '--config', config, '--workers', 'auto', '--check']);
  assert.equal(auto.code, 0, auto.stderr);
  if (availableParallelism() > 1) assert.match(auto.stdout, new RegExp(`^workers: ${availableParallelism()}$`, 'm'));
  const refused = await runGatehouse(['serve', '--config', config, '--workers', '4', '--max-scripts', '3', '--check']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /workers: 4 workers need max-scripts of at least 4/);
  const bad = await runGatehouse(['serve', '--config', config, '--workers', 'many', '--check']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--workers: expected a whole number from 1 to 256, got "many", or auto/);
});

test('the shared cgid daemon killed: the supervisor starts a new one and every worker connects to it again', async (t) => {
  const { config } = await site(t);
  const { server, supervisor, workers } = await startWorkers(t, config);
  const daemon = children(supervisor).find((child) => / cgid /.test(child.cmdline))!.pid;
  process.kill(daemon, 'SIGKILL');
  for (const pid of workers)
    assert.match(
      await waitForValue(
        server.output,
        (text) => new RegExp(`serve\\[${pid}\\]: cgid: connected to the daemon again`).test(text),
        'a worker connecting to the new daemon',
        { timeoutMs: 20_000 },
      ),
      new RegExp(`serve\\[${pid}\\]: cgid: connected to the daemon again \\(pid \\d+\\)`),
    );
  const daemons = children(supervisor).filter((child) => / cgid /.test(child.cmdline));
  assert.equal(daemons.length, 1);
  assert.notEqual(daemons[0]!.pid, daemon);
  // Both workers run scripts again: requests until each has answered one (bounded).
  const answered = new Set<number>();
  for (let count = 0; count < 200 && answered.size < 2; count++) {
    const results = await Promise.all(Array.from({ length: 4 }, () => httpRequest(`${server.base}/cgi-bin/hi.sh`)));
    for (const result of results) assert.equal(result.body.toString(), 'hi from cgi\n');
    for (const line of readFileSync(join(dirname(config), 'access.log'), 'utf8').split('\n'))
      if (line.includes('/cgi-bin/hi.sh') && line.split(' ')[1] === '200') answered.add(Number(line.split(' ')[0]));
  }
  assert.deepEqual([...answered].sort(), [...workers].sort());
});

test('the supervisor killed with SIGKILL: its workers and the cgid daemon stop by themselves', async (t) => {
  const { config } = await site(t);
  const { server, supervisor, workers } = await startWorkers(t, config);
  const daemon = children(supervisor).find((child) => / cgid /.test(child.cmdline))!.pid;
  process.kill(supervisor, 'SIGKILL');
  await server.exited;
  // Workers see their IPC channel close, the daemon its parent die; none is left serving.
  const leftovers = await waitForValue(
    () => [...workers, daemon].filter(alive),
    (pids) => pids.length === 0,
    'every worker and the daemon to exit',
    { timeoutMs: 15_000 },
  );
  assert.deepEqual(leftovers, [], `still running after the supervisor's death:\n${server.output()}`);
});

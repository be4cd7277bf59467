/**
 * Signals as operators know them (issue 12, item 3): SIGHUP makes `gatehouse
 * serve` re-read its configuration under load without a failed request,
 * requests and scripts in flight finishing on the settings they started
 * with; a configuration that fails validation, or changes what only a
 * restart can, is refused and the running one stays. SIGUSR1 never opens
 * Node's inspector in any gatehouse process.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { waitForOutput } from '../kit/wait.js';
import { httpRequest } from '../kit/http.js';
import { listeningTcpPorts, waitUntil } from '../kit/deploy.js';
import { startTestApp } from '../kit/worker-app.js';
import { CGI_FIXTURES, GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, startGatehouse } from '../kit/serve.js';

const LISTEN_APP = fileURLToPath(new URL('../fixtures/workers/listen-app.js', import.meta.url));
const NODE_WORKER = fileURLToPath(new URL('../fixtures/kfcgi/node-worker.js', import.meta.url));
/** Node's default inspector port. */
const INSPECTOR_PORT = 9229;

interface ReloadSite {
  dir: string;
  config: string;
  errorLog: string;
  /** Where the FastCGI test applications listen: configuration A routes /fcgi/ to `a`, B to `b`. */
  apps: { a: string; b: string };
  write(settings: { docroot: 'www-a' | 'www-b'; oldRoute: boolean; maxBody: string; extra?: string }): void;
}

/**
 * Two document roots that answer "A" and "B", a cgi-bin, an /old/ script
 * alias only configuration A has, and /fcgi/ to a FastCGI application of
 * each configuration's own (started by the test that needs them).
 */
function reloadSite(t: TestContext): ReloadSite {
  const dir = tempDir(t, 'gatehouse-deploy-reload-');
  const apps = { a: join(dir, 'app-a'), b: join(dir, 'app-b') };
  for (const app of Object.values(apps)) mkdirSync(app);
  for (const name of ['www-a', 'www-b']) {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'v.txt'), name === 'www-a' ? 'A' : 'B');
  }
  mkdirSync(join(dir, 'old'));
  writeFileSync(join(dir, 'old', 'echo.sh'), readFileSync(join(CGI_FIXTURES, 'echo.sh')));
  chmodSync(join(dir, 'old', 'echo.sh'), 0o755);
  const config = join(dir, 'serve.toml');
  const errorLog = join(dir, 'error.log');
  const write: ReloadSite['write'] = ({ docroot, oldRoute, maxBody, extra }) =>
    writeFileSync(
      config,
      [
        `docroot = "${docroot}"`,
        `cgi-bin = "${CGI_FIXTURES}"`,
        `max-body = "${maxBody}"`,
        `error-log = "${errorLog}"`,
        'access-log = "off"',
        ...(extra ? [extra] : []),
        ...(oldRoute ? ['[[script-alias]]', 'url = "/old/"', `dir = "${join(dir, 'old')}"`] : []),
        '[[fastcgi]]',
        'url = "/fcgi/"',
        `upstreams = ["unix:${join(docroot === 'www-a' ? apps.a : apps.b, 'app.sock')}"]`,
        // The application answers every path under /fcgi/: no script file to check first.
        'check-script = false',
        '',
      ].join('\n'),
    );
  write({ docroot: 'www-a', oldRoute: true, maxBody: '1M' });
  return { dir, config, errorLog, apps, write };
}

const count = (text: string, pattern: RegExp) => [...text.matchAll(pattern)].length;

test('SIGHUP under a bounded load loop: every request succeeds, old and new settings never mix within a request', async (t) => {
  const site = reloadSite(t);
  const appA = await startTestApp(t, site.apps.a);
  const appB = await startTestApp(t, site.apps.b);
  const server = await startGatehouse(t, 'serve', ['--config', site.config]);
  const log = () => readFileSync(site.errorLog, 'utf8');
  const reloads = () => count(log(), /SIGHUP: reloaded the configuration/g);

  // A script of configuration A's /old/ route, started now and kept running (its body not yet sent) across the reloads.
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  async function* slowBody(): AsyncIterable<Buffer> {
    yield Buffer.from('started on A, ');
    await released;
    yield Buffer.from('finished after reloads');
  }
  const inFlight = httpRequest(`${server.base}/old/echo.sh`, {
    method: 'POST',
    headers: { 'Content-Length': String('started on A, finished after reloads'.length) },
    body: slowBody(),
  });
  // And a request to A's FastCGI application, which echoes its body: its answer has begun (the head and the first
  // part echoed back) before the first reload, and its body's end is sent only after the last one, when /fcgi/
  // leads to B's application. It must finish on A's connection, neither cut nor moved.
  const appBody = { status: 0, text: '' };
  const appAnswer = new Promise<void>((resolve, reject) => {
    const request = http.request(
      `${server.base}/fcgi/echo`,
      { method: 'POST', headers: { 'Content-Type': 'text/plain', 'Content-Length': String('to app A, answered after reloads'.length) } },
      (res) => {
        appBody.status = res.statusCode ?? 0;
        res.on('data', (chunk: Buffer) => (appBody.text += chunk.toString()));
        res.on('end', resolve);
        res.on('error', reject);
      },
    );
    request.on('error', reject);
    request.write('to app A, ');
    void released.then(() => request.end('answered after reloads'));
  });
  // Awaited at the end; a failure meanwhile (the connection cut by a reload) must not end the test as unhandled.
  appAnswer.catch(() => undefined);
  await waitUntil(
    () => appBody.text === 'to app A, ',
    "A's application echoing the first part",
    15_000,
    () => JSON.stringify(appBody),
  );
  const answeringApp = async () => (JSON.parse((await httpRequest(`${server.base}/fcgi/stats`)).body.toString()) as { pid: number }).pid;
  assert.equal(await answeringApp(), appA.pid, "configuration A's /fcgi/ is A's application");

  // The load: 4 kept-alive clients, at most 800 requests and 30 s in all.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.after(() => agent.destroy());
  const deadline = Date.now() + 30_000;
  const seen: string[] = [];
  const failures: string[] = [];
  let stop = false;
  const get = (path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get(`${server.base}${path}`, { agent }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        })
        .on('error', reject);
    });
  const client = async () => {
    while (!stop && seen.length + failures.length < 800 && Date.now() < deadline) {
      const path = seen.length % 3 === 0 ? '/cgi-bin/env.sh' : '/v.txt';
      try {
        const response = await get(path);
        if (response.status !== 200) failures.push(`${path}: ${response.status} ${response.body.slice(0, 80)}`);
        else seen.push(path === '/v.txt' ? response.body : 'cgi');
      } catch (error) {
        failures.push(`${path}: ${(error as Error).message}`);
      }
    }
  };
  const load = Promise.all([client(), client(), client(), client()]);

  // Four reloads, alternating B and A, each confirmed by its log line while the load runs.
  for (let round = 1; round <= 4; round++) {
    site.write(
      round % 2 === 1 ? { docroot: 'www-b', oldRoute: false, maxBody: '16' } : { docroot: 'www-a', oldRoute: true, maxBody: '1M' },
    );
    await waitUntil(() => seen.length >= round * 10 || failures.length > 0, `requests before reload ${round}`, 15_000);
    server.child.kill('SIGHUP');
    await waitUntil(() => reloads() === round, `reload ${round} in the error log`, 15_000, log);
  }
  site.write({ docroot: 'www-b', oldRoute: false, maxBody: '16' });
  server.child.kill('SIGHUP');
  await waitUntil(() => reloads() === 5, 'the last reload', 15_000, log);
  await waitUntil(() => seen.length >= 60 || failures.length > 0, 'requests after the last reload', 15_000);
  stop = true;
  await load;
  assert.deepEqual(failures, [], `failed requests during the reloads:\n${failures.join('\n')}`);
  assert.ok(seen.length >= 60, `only ${seen.length} requests`);
  assert.ok(seen.includes('A') && seen.includes('B'), 'both configurations served');
  assert.ok(seen.every((body) => body === 'A' || body === 'B' || body === 'cgi'));

  // Now B: its docroot, no /old/ route, its max-body.
  assert.equal((await httpRequest(`${server.base}/v.txt`)).body.toString(), 'B');
  assert.equal((await httpRequest(`${server.base}/old/echo.sh`)).status, 404);
  assert.equal((await httpRequest(`${server.base}/cgi-bin/echo.sh`, { method: 'POST', body: 'x'.repeat(17) })).status, 413);
  // The script started on A finishes on A's route, though B has no such route.
  release();
  const finished = await inFlight;
  assert.equal(finished.status, 200);
  assert.equal(finished.body.toString(), 'started on A, finished after reloads');
  // The FastCGI request started on A finished on A's connection, whole; /fcgi/ now leads to B's application.
  await appAnswer;
  assert.deepEqual(appBody, { status: 200, text: 'to app A, answered after reloads' });
  assert.equal(await answeringApp(), appB.pid, "configuration B's /fcgi/ is B's application");
  // The reloads never restarted the cgid daemon.
  assert.equal(count(log(), /daemon pid \d+ exited/g), 0);
  assert.equal(server.child.exitCode, null);
});

test('SIGHUP with a configuration that fails validation, or changes what needs a restart: refused with a log line, the running one stays', async (t) => {
  const site = reloadSite(t);
  const server = await startGatehouse(t, 'serve', ['--config', site.config]);
  const log = () => readFileSync(site.errorLog, 'utf8');
  const refusals = () => count(log(), /SIGHUP: reload refused, still serving the previous configuration/g);

  writeFileSync(site.config, `docroot = "no-such-dir"\nerror-log = "${site.errorLog}"\nscript-timout = "5s"\n`);
  server.child.kill('SIGHUP');
  await waitUntil(() => refusals() === 1, 'the refusal in the error log', 15_000, log);
  assert.match(log(), /reload refused.*unknown key 'script-timout'; did you mean 'script-timeout'\?/);
  assert.equal((await httpRequest(`${server.base}/v.txt`)).body.toString(), 'A');
  assert.equal((await httpRequest(`${server.base}/old/echo.sh`, { method: 'POST', body: 'still A' })).body.toString(), 'still A');

  // (listen and user come from the command line here, which wins over the file: cgi-spawn stands for the restart-only keys.)
  site.write({ docroot: 'www-b', oldRoute: false, maxBody: '1M', extra: 'cgi-spawn = "in-process"' });
  server.child.kill('SIGHUP');
  await waitUntil(() => refusals() === 2, 'the second refusal', 15_000, log);
  assert.match(log(), /reload refused.*cgi-spawn changed: it takes effect only when gatehouse serve is restarted/);
  assert.equal((await httpRequest(`${server.base}/v.txt`)).body.toString(), 'A', 'nothing of the refused file was applied');
  assert.equal(server.child.exitCode, null);
});

/** Sends SIGUSR1 and waits until it was delivered (no longer pending in /proc), then for `roundTrip` through the process. */
async function sendUsr1(pid: number, roundTrip: () => Promise<unknown>): Promise<void> {
  process.kill(pid, 'SIGUSR1');
  const pending = () => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const masks = [...status.matchAll(/^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$/gm)].map((match) => BigInt(`0x${match[1]}`));
    return masks.some((mask) => (mask & (1n << 9n)) !== 0n);
  };
  await waitUntil(() => !pending(), `SIGUSR1 delivered to ${pid}`);
  // Node starts its inspector from its event loop after the signal: two trips through that loop come after it.
  await roundTrip();
  await roundTrip();
}

function assertNoInspector(label: string, pid: number, output: string): void {
  assert.ok(!listeningTcpPorts(pid).includes(INSPECTOR_PORT), `${label} (pid ${pid}) listens on ${INSPECTOR_PORT}`);
  assert.doesNotMatch(output, /Debugger listening|inspector/i, `${label} started an inspector`);
}

test('SIGUSR1 opens no inspector in serve, its cgid daemon, cgid --fastcgi, the kfcgi manager or the worker library', async (t) => {
  // The check can see an inspector: a bare Node process opens one on SIGUSR1.
  const bare = startProcess(t, process.execPath, ['-e', 'setInterval(() => {}, 1000)']);
  const caught = () => {
    const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${bare.child.pid}/status`, 'utf8'))?.[1];
    return mask !== undefined && (BigInt(`0x${mask}`) & (1n << 9n)) !== 0n;
  };
  await waitUntil(caught, 'the bare node to catch SIGUSR1');
  process.kill(bare.child.pid!, 'SIGUSR1');
  // Node listens first and writes its "Debugger listening" line after: wait for both (the line reaches our pipe later).
  await waitUntil(
    () => listeningTcpPorts(bare.child.pid!).includes(INSPECTOR_PORT) && /Debugger listening/.test(bare.output()),
    'its inspector port and its "Debugger listening" line',
    15_000,
    bare.output,
  );
  await bare.stop('SIGKILL');

  const dir = tempDir(t, 'gatehouse-deploy-usr1-');
  const errorLog = join(dir, 'error.log');
  const serve = await startGatehouse(t, 'serve', ['--cgi-bin', CGI_FIXTURES, '--error-log', errorLog, '--access-log', 'off']);
  const daemon = Number(
    await waitUntil(() => /cgid daemon \(pid (\d+)\)/.exec(readFileSync(errorLog, 'utf8'))?.[1], 'the daemon named in the error log'),
  );
  const cgi = () => httpRequest(`${serve.base}/cgi-bin/env.sh`);
  await sendUsr1(serve.child.pid!, cgi);
  await sendUsr1(daemon, cgi);
  assert.equal((await cgi()).status, 200);
  assertNoInspector('serve', serve.child.pid!, serve.output() + readFileSync(errorLog, 'utf8'));
  assertNoInspector('the cgid daemon', daemon, readFileSync(errorLog, 'utf8'));

  const faceSocket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${faceSocket}`])]);
  await waitForListener({ path: faceSocket }, { process: face, timeoutMs: 15_000 });
  const fastcgi = async (address: string, params: Record<string, string>) => {
    const client = new FastCGIClient({ address });
    try {
      return (await client.fetchAll({ params })).stdout.toString();
    } finally {
      await client.close();
    }
  };
  const faceRequest = () =>
    fastcgi(`unix:${faceSocket}`, {
      REQUEST_METHOD: 'GET',
      SCRIPT_FILENAME: join(CGI_FIXTURES, 'env.sh'),
      SCRIPT_NAME: '/env.sh',
      GATEWAY_INTERFACE: 'CGI/1.1',
    });
  await sendUsr1(face.child.pid!, faceRequest);
  assert.match(await faceRequest(), /GATEWAY_INTERFACE=CGI\/1\.1/);
  assertNoInspector('cgid --fastcgi', face.child.pid!, face.output());

  // A variable pool: the manager accepts every connection, so a request is a trip through its event loop.
  const poolSocket = join(dir, 'pool.sock');
  const kfcgi = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    'kfcgi',
    '-d',
    '-r',
    '-p',
    '/',
    '-n',
    '1',
    '-N',
    '1',
    '-s',
    poolSocket,
    process.execPath,
    NODE_WORKER,
  ]);
  await waitForListener({ path: poolSocket }, { process: kfcgi, timeoutMs: 15_000 });
  const poolRequest = () => fastcgi(`unix:${poolSocket}`, { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/x' });
  assert.match(await poolRequest(), /hello from node/);
  await sendUsr1(kfcgi.child.pid!, poolRequest);
  assert.match(await poolRequest(), /hello from node/);
  assertNoInspector('the kfcgi manager', kfcgi.child.pid!, kfcgi.output());

  // The worker library with handleSignals: SIGUSR1 is libfcgi's graceful stop, never an inspector.
  const appSocket = join(dir, 'app.sock');
  const app = startProcess(t, process.execPath, [LISTEN_APP, JSON.stringify({ path: appSocket })]);
  await waitForListener({ path: appSocket }, { process: app, timeoutMs: 15_000 });
  process.kill(app.child.pid!, 'SIGUSR1');
  assert.deepEqual(await app.exited, { code: 0, signal: null });
  // 'exited' is the exit event: the pipes may still hold its lines. Its SIGUSR1 line is waited for, and an
  // inspector's line, written to the same stderr when the signal came, would be there before it.
  await waitForOutput(app, /SIGUSR1: finishing 0 request\(s\) in flight, then exiting/, "the library's SIGUSR1 line");
  assert.doesNotMatch(app.output(), /Debugger listening|inspector/i);

  for (const [label, running] of [
    ['serve', serve],
    ['cgid --fastcgi', face],
    ['kfcgi', kfcgi],
  ] as Array<[string, RunningProcess]>)
    assert.equal(running.child.exitCode, null, `${label} lives on after SIGUSR1`);
  assert.ok(readFileSync(`/proc/${daemon}/status`, 'utf8').includes('State:'), 'the cgid daemon lives on');
});

/**
 * Metrics and `gatehouse status` against the real commands: a kfcgi pool of
 * libfcgi workers with -M and -S, and cgid --fastcgi with --metrics. The
 * status command prints its table and --json for each, reads a kfcgi status
 * socket as well as a metrics address, and says what a pool's FastCGI socket
 * is when given one by mistake; every exposition passes promtool; a worker
 * killed with SIGKILL shows as a respawn by that signal.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpGet, promtoolCheck, sampleValue, scrape, scrapeUntil } from '../kit/metrics.js';
import { buildFixtures, gatehouseMain, startKfcgi, statusWhen } from '../kit/kfcgi.js';

/** Runs `gatehouse ARGS` to completion. */
function gatehouse(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [gatehouseMain, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

test('kfcgi -M and -S: gatehouse status (table, --json, --full), the main socket named as such, metrics, a killed worker', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t, 'gatehouse-metrics-kfcgi-');
  const socket = join(dir, 'app.sock');
  const statusSocket = join(dir, 'status.sock');
  const port = await freePort();
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', socket, '-S', statusSocket, '-M', `127.0.0.1:${port}`, fixtures.hello], {
    socket,
    expectWorkers: 2,
  });
  await waitForListener({ host: '127.0.0.1', port });
  await statusWhen(statusSocket, (now) => now.idle === 2, 'both workers idle', kfcgi.output);

  await t.test('the table from the metrics address and from the status socket', async () => {
    for (const address of [`127.0.0.1:${port}`, statusSocket, `unix:${statusSocket}`]) {
      const result = await gatehouse(['status', address]);
      assert.equal(result.code, 0, result.stderr);
      const lines = result.stdout.trimEnd().split('\n');
      assert.match(lines[0]!, new RegExp(`^gatehouse kfcgi( \\S+)?, pid ${kfcgi.pid}, started `));
      assert.match(lines[1]!, /^POOL\s+ACTIVE\s+IDLE\s+QUEUE\s+MAX REACHED\s+UPTIME$/);
      assert.match(
        lines[2]!,
        new RegExp(`^kfcgi ${socket.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(fixed\\)\\s+0\\s+2\\s+0\\s+0\\s+\\d+s$`),
      );
    }
  });

  await t.test('--json: the document, with the pool status of -S inside', async () => {
    const result = await gatehouse(['status', '--json', `127.0.0.1:${port}`]);
    assert.equal(result.code, 0, result.stderr);
    const document = JSON.parse(result.stdout);
    assert.equal(document.command, 'kfcgi');
    assert.equal(document.pid, kfcgi.pid);
    assert.deepEqual(document.pools[0], { name: `kfcgi ${socket} (fixed)`, active: 0, idle: 2, queue: 0, max: 2, maxReached: 0 });
    assert.deepEqual([...document.kfcgi.pids].sort(), kfcgi.workers().sort());
  });

  await t.test('--full and gatehouse kfcgi status: the same command, with one line per worker', async () => {
    const result = await gatehouse(['kfcgi', 'status', '--full', statusSocket]);
    assert.equal(result.code, 0, result.stderr);
    for (const pid of kfcgi.workers()) assert.match(result.stdout, new RegExp(`^${pid}\\s+idle\\s`, 'm'));
  });

  await t.test("the pool's own socket given by mistake: said, and -S named", async () => {
    const result = await gatehouse(['status', socket]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /is a FastCGI socket \(a kfcgi pool's main socket, -s\?\), not a status address: start kfcgi with -S/);
  });

  await t.test('/metrics passes promtool; a worker killed with SIGKILL is a respawn by that signal', async () => {
    const first = await scrape({ port });
    const verdict = await promtoolCheck(first.text);
    assert.equal(verdict.code, 0, verdict.output);
    assert.equal(sampleValue(first.samples, 'gatehouse_kfcgi_pool_workers'), 2);
    assert.equal(sampleValue(first.samples, 'gatehouse_kfcgi_respawns_total', { reason: 'signal', code: 'SIGKILL' }), undefined);
    for (const pid of kfcgi.workers())
      assert.ok((sampleValue(first.samples, 'gatehouse_kfcgi_worker_resident_memory_bytes', { pid: String(pid) }) ?? 0) > 0);
    const victim = kfcgi.workers()[0]!;
    process.kill(victim, 'SIGKILL');
    const after = await scrapeUntil(
      port,
      (samples) => sampleValue(samples, 'gatehouse_kfcgi_respawns_total', { reason: 'signal', code: 'SIGKILL' }) === 1,
      'the respawn counted',
    );
    assert.equal(sampleValue(after.samples, 'gatehouse_kfcgi_worker_resident_memory_bytes', { pid: String(victim) }), undefined);
  });

  await t.test('anything but GET and HEAD of /metrics, /status and / is refused', async () => {
    assert.equal((await httpGet({ port }, '/nothing')).status, 404);
    const index = await httpGet({ port }, '/');
    assert.equal(index.status, 200);
    assert.match(index.body, /\/metrics/);
  });
});

test('kfcgi -M unix:PATH: mode 0660 from the start, removed at stop', async (t) => {
  const fixtures = buildFixtures(t);
  const dir = tempDir(t, 'gatehouse-metrics-kfcgi-unix-');
  const socket = join(dir, 'app.sock');
  const metrics = join(dir, 'metrics.sock');
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '1', '-s', socket, '-M', `unix:${metrics}`, fixtures.hello], {
    socket,
    expectWorkers: 1,
  });
  await waitForListener({ path: metrics });
  assert.equal(statSync(metrics).mode & 0o777, 0o660);
  // 503 while the command starts (none here: the pool serves its metrics from its first worker on).
  assert.equal((await httpGet({ socketPath: metrics }, '/status')).status, 200);
  const result = await gatehouse(['status', '--json', `unix:${metrics}`]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).command, 'kfcgi');
  const samples = (await scrape({ socketPath: metrics })).samples;
  assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'kfcgi' }), 1);
  await kfcgi.stop();
  assert.equal(existsSync(metrics), false, 'the metrics socket was removed');
});

test('cgid --fastcgi --metrics: scripts counted by outcome, gatehouse status, promtool', async (t) => {
  const dir = tempDir(t, 'gatehouse-metrics-cgid-');
  const ok = join(dir, 'ok.sh');
  writeFileSync(ok, '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nok\\n"\n');
  const three = join(dir, 'three.sh');
  writeFileSync(three, '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nthree\\n"\nexit 3\n');
  // Executable, but neither a binary nor a #! script: execve would answer ENOEXEC, and the spawner refuses it so.
  const noexec = join(dir, 'noexec.txt');
  writeFileSync(noexec, 'just text\n');
  for (const file of [ok, three, noexec]) chmodSync(file, 0o755);
  const socket = join(dir, 'face.sock');
  const port = await freePort();
  const face = startProcess(t, process.execPath, [
    gatehouseMain,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`, '--metrics', `127.0.0.1:${port}`]),
  ]);
  await waitForListener({ path: socket }, { what: 'cgid --fastcgi', process: face, timeoutMs: 20_000 });
  await waitForListener({ host: '127.0.0.1', port }, { what: "cgid --fastcgi's metrics", process: face, timeoutMs: 20_000 });
  const client = new FastCGIClient({ address: socket });
  t.after(() => client.close());
  const run = (file: string) =>
    client.fetchAll({
      params: { SCRIPT_FILENAME: file, REQUEST_METHOD: 'GET', SERVER_PROTOCOL: 'HTTP/1.1', GATEWAY_INTERFACE: 'CGI/1.1' },
    });
  for (let count = 0; count < 3; count += 1) assert.match((await run(ok)).stdout.toString(), /ok/);
  assert.equal((await run(three)).appStatus, 3);
  assert.match((await run(noexec)).stdout.toString(), /^Status: 500/);

  const { text, samples } = await scrapeUntil(
    port,
    (now) => sampleValue(now, 'gatehouse_cgi_script_exits_total', { reason: 'exit', code: '3' }) === 1,
    'the exit status 3 counted',
  );
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);
  assert.equal(sampleValue(samples, 'gatehouse_info', { command: 'cgid' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawns_total'), 5);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_failures_total', { errno: 'ENOEXEC' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_spawn_duration_seconds_count'), 4);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_script_exits_total', { reason: 'exit', code: '0' }), 3);
  assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_alive'), 0);

  const table = await gatehouse(['status', `127.0.0.1:${port}`]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`^gatehouse cgid( \\S+)?, pid ${face.child.pid}, `));
  assert.match(table.stdout, /^cgi scripts\s+0\s+-\s+-\s+-\s+\d+s$/m);
  const json = await gatehouse(['status', '--json', `127.0.0.1:${port}`]);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout).pools, [
    { name: 'cgi scripts', active: 0, idle: null, queue: null, max: null, maxReached: null },
  ]);
});

test('gatehouse status: nothing listening, a web server, a usage mistake', async (t) => {
  const dir = tempDir(t, 'gatehouse-status-');
  const missing = await gatehouse(['status', join(dir, 'none.sock')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot connect to .*none\.sock \(ENOENT\)/);
  const usage = await gatehouse(['status']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /name one ADDRESS/);
  // An HTTP server that is not gatehouse's metrics listener.
  const http = await import('node:http');
  const server = http.createServer((_req, res) => res.writeHead(404).end('no')).listen(0, '127.0.0.1');
  t.after(() => server.close());
  await new Promise((resolve) => server.once('listening', resolve));
  const port = (server.address() as { port: number }).port;
  const web = await gatehouse(['status', `127.0.0.1:${port}`]);
  assert.equal(web.code, 1);
  assert.match(web.stderr, /answers HTTP \(HTTP\/1\.1 404 Not Found\) but not gatehouse status/);
});

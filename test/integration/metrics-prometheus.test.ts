/**
 * A real Prometheus server (Debian's package, started on loopback by the
 * test) scrapes gatehouse's metrics listeners while a bounded load runs:
 * cgid --fastcgi with scripts that succeed, exit 3, cannot be executed and
 * time out, and a kfcgi pool one of whose workers is killed. Then every
 * counter's expected value is read back through Prometheus's HTTP API, so
 * the exposition is checked by the program operators run, not only by our
 * own parser.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { startPrometheus } from '../kit/prometheus.js';
import { buildFixtures, cgiFcgi, gatehouseMain, startKfcgi } from '../kit/kfcgi.js';
import { waitFor } from '../kit/wait.js';

test('Prometheus scrapes cgid --fastcgi and a kfcgi pool under a bounded load and reads back every count', async (t) => {
  const dir = tempDir(t, 'gatehouse-prometheus-load-');
  const script = (name: string, body: string) => {
    const file = join(dir, name);
    writeFileSync(file, body);
    chmodSync(file, 0o755);
    return file;
  };
  const ok = script('ok.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nok\\n"\n');
  const three = script('three.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nthree\\n"\nexit 3\n');
  const noexec = script('noexec.txt', 'just text\n');
  // Writes nothing: killed by the script timeout (SIGKILL to its process group), answered 504.
  const silent = script('silent.sh', '#!/bin/sh\nexec sleep 30\n');

  const facePort = await freePort();
  const faceSocket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [
    gatehouseMain,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${faceSocket}`, '--script-timeout', '1s', '--metrics', `127.0.0.1:${facePort}`]),
  ]);
  await waitForListener({ host: '127.0.0.1', port: facePort }, { what: "cgid --fastcgi's metrics", process: face, timeoutMs: 20_000 });

  const fixtures = buildFixtures(t);
  const poolSocket = join(dir, 'pool.sock');
  const poolPort = await freePort();
  const kfcgi = await startKfcgi(t, ['-p', '/', '-n', '2', '-s', poolSocket, '-M', `127.0.0.1:${poolPort}`, fixtures.hello], {
    socket: poolSocket,
    expectWorkers: 2,
  });

  const prometheus = await startPrometheus(t, [
    { job: 'cgid', address: `127.0.0.1:${facePort}` },
    { job: 'kfcgi', address: `127.0.0.1:${poolPort}` },
  ]);
  await prometheus.waitForTargets();

  // The load: bounded in count (and each request in time by the client's timeouts).
  const client = new FastCGIClient({ address: faceSocket, idleTimeoutMs: 15_000 });
  t.after(() => client.close());
  const run = (file: string) =>
    client.fetchAll({
      params: { SCRIPT_FILENAME: file, REQUEST_METHOD: 'GET', SERVER_PROTOCOL: 'HTTP/1.1', GATEWAY_INTERFACE: 'CGI/1.1' },
    });
  const answers = await Promise.all([...Array.from({ length: 8 }, () => run(ok)), run(three), run(three), run(noexec), run(silent)]);
  assert.equal(answers.filter((answer) => answer.stdout.toString().endsWith('ok\n')).length, 8);
  assert.match(answers[11]!.stdout.toString(), /^Status: 504/);
  for (let count = 0; count < 5; count += 1) assert.match(await cgiFcgi(poolSocket), /hello/);
  const victim = kfcgi.workers()[0]!;
  process.kill(victim, 'SIGKILL');
  await waitFor(() => kfcgi.workers().length === 2 && !kfcgi.workers().includes(victim), 'the replacement worker', {
    context: kfcgi.output,
  });

  const expectations: Array<[string, number]> = [
    ['gatehouse_info{job="cgid",command="cgid"}', 1],
    ['gatehouse_cgi_spawns_total{job="cgid"}', 12],
    ['gatehouse_cgi_spawn_failures_total{job="cgid",errno="ENOEXEC"}', 1],
    ['gatehouse_cgi_spawn_duration_seconds_count{job="cgid"}', 11],
    ['gatehouse_cgi_script_exits_total{job="cgid",reason="exit",code="0"}', 8],
    ['gatehouse_cgi_script_exits_total{job="cgid",reason="exit",code="3"}', 2],
    // mod_cgid's way: a script silent past the timeout gets SIGKILL (its whole process group).
    ['gatehouse_cgi_script_exits_total{job="cgid",reason="signal",code="SIGKILL"}', 1],
    ['gatehouse_cgi_scripts_alive{job="cgid"}', 0],
    ['gatehouse_cgid_fastcgi_requests_active{job="cgid"}', 0],
    ['gatehouse_info{job="kfcgi",command="kfcgi"}', 1],
    ['gatehouse_kfcgi_respawns_total{job="kfcgi",reason="signal",code="SIGKILL"}', 1],
    ['gatehouse_kfcgi_pool_workers{job="kfcgi"}', 2],
    ['gatehouse_kfcgi_pool_max_workers{job="kfcgi"}', 2],
    ['count(gatehouse_kfcgi_worker_resident_memory_bytes{job="kfcgi"} > 0)', 2],
    ['up{job="cgid"}', 1],
    ['up{job="kfcgi"}', 1],
  ];
  const wrong: string[] = [];
  for (const [promql, expected] of expectations) {
    const value = await prometheus.valueWhen(promql, expected);
    if (value !== expected) wrong.push(`${promql}: expected ${expected}, Prometheus has ${value}`);
  }
  assert.deepEqual(wrong, []);
  // The default metrics of every process reach Prometheus too.
  assert.equal((await prometheus.query('count(process_resident_memory_bytes)'))[0]?.value, 2);
});

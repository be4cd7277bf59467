/**
 * gatehouse serve with --metrics, against the real thing: CGI scripts through
 * the cgid daemon, php-fpm behind FastCGI routes (one upstream that answers,
 * one too slow for its read-timeout, one that is not there) and static files.
 * A real Prometheus scrapes serve while a bounded load runs, with a script
 * that times out (504) and a request refused by a full queue (503); every
 * count is read back through Prometheus's HTTP API. promtool checks serve's
 * exposition, and `gatehouse status` reads serve's status page, as a table
 * and as JSON.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLIENT_MAX_CONNECTIONS } from '../../src/limits.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { startGatehouse } from '../kit/serve.js';
import { httpRequest } from '../kit/http.js';
import { promtoolCheck, sampleValue, scrape, scrapeUntil } from '../kit/metrics.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { freePort, tempDir, waitForListener } from '../kit/process.js';
import { startPrometheus } from '../kit/prometheus.js';

function gatehouse(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [GATEHOUSE_MAIN, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

test('serve --metrics: Prometheus reads back every count of a bounded load; promtool; gatehouse status', async (t) => {
  const dir = tempDir(t, 'gatehouse-metrics-serve-');
  const cgiBin = join(dir, 'cgi-bin');
  const docroot = join(dir, 'htdocs');
  mkdirSync(cgiBin);
  mkdirSync(docroot);
  writeFileSync(join(docroot, 'index.txt'), 'static\n');
  const script = (name: string, body: string) => {
    writeFileSync(join(cgiBin, name), body);
    chmodSync(join(cgiBin, name), 0o755);
  };
  script('ok.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nok\\n"\n');
  script('three.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nthree\\n"\nexit 3\n');
  // Writes nothing: killed at the script timeout (SIGKILL to its group), 504. It holds the only slot meanwhile.
  script('silent.sh', '#!/bin/sh\nexec sleep 30\n');
  // Executable, but no #! line: execve fails with ENOEXEC, 500.
  script('noexec.sh', 'just text\n');

  const fpm = await startPhpFpm(t, {
    scripts: { 'hello.php': '<?php echo "hello\\n";', 'sleep.php': '<?php sleep(5); echo "late\\n";' },
  });
  const dead = join(dir, 'nobody.sock');
  const config = join(dir, 'serve.toml');
  writeFileSync(
    config,
    `docroot = "${docroot}"
cgi-bin = "${cgiBin}"
script-timeout = "1s"
max-scripts = 1
max-queued-scripts = 0
access-log = "off"

[[fastcgi]]
url = "/php/"
upstreams = ["${fpm.addressString}"]
script-filename = "${fpm.script('hello.php')}"
max-connections = 3

[[fastcgi]]
url = "/slow/"
upstreams = ["${fpm.addressString}"]
script-filename = "${fpm.script('sleep.php')}"
read-timeout = "500ms"
max-connections = 2

[[fastcgi]]
url = "/dead/"
upstreams = ["unix:${dead}"]
script-filename = "${fpm.script('hello.php')}"
`,
  );
  const metricsPort = await freePort();
  const serve = await startGatehouse(t, 'serve', ['--config', config, '--metrics', `127.0.0.1:${metricsPort}`]);
  await waitForListener({ host: '127.0.0.1', port: metricsPort }, { what: "serve's metrics", process: serve, timeoutMs: 15_000 });
  const prometheus = await startPrometheus(t, [{ job: 'serve', address: `127.0.0.1:${metricsPort}` }]);
  await prometheus.waitForTargets();

  // The load: bounded in count, one request at a time except where the test needs two at once.
  const status = async (path: string) => (await httpRequest(`${serve.base}${path}`, { timeoutMs: 20_000 })).status;
  // A script's slot is given back when it is reaped, which may come after its response: with one slot and no
  // queue, each script request waits until the slot is free (read from the metrics), or it would be a 503.
  const slotFree = () =>
    scrapeUntil(metricsPort, (samples) => sampleValue(samples, 'gatehouse_cgi_scripts_running') === 0, 'the slot free');
  const runScript = async (path: string) => {
    await slotFree();
    return status(path);
  };
  for (let count = 0; count < 5; count += 1) assert.equal(await runScript('/cgi-bin/ok.sh'), 200);
  assert.equal(await runScript('/cgi-bin/three.sh'), 200);
  assert.equal(await runScript('/cgi-bin/noexec.sh'), 500);
  await slotFree();
  const silent = status('/cgi-bin/silent.sh');
  await scrapeUntil(metricsPort, (samples) => sampleValue(samples, 'gatehouse_cgi_scripts_running') === 1, 'silent.sh holds the slot');
  assert.equal(await status('/cgi-bin/ok.sh'), 503, 'the only slot taken and no queue');
  assert.equal(await silent, 504);
  for (let count = 0; count < 3; count += 1) assert.equal(await status('/php/'), 200);
  assert.equal(await status('/slow/'), 504);
  assert.equal(await status('/dead/'), 503);
  assert.equal(await status('/index.txt'), 200);
  assert.equal(await status('/missing.txt'), 404);

  const cgi = (statusClass: string) => `gatehouse_http_requests_total{job="serve",route="cgi",status_class="${statusClass}"}`;
  const fastcgi = (statusClass: string) => `gatehouse_http_requests_total{job="serve",route="fastcgi",status_class="${statusClass}"}`;
  const php = `upstream="${fpm.addressString}"`;
  const expectations: Array<[string, number]> = [
    ['up{job="serve"}', 1],
    ['gatehouse_info{job="serve",command="serve"}', 1],
    [cgi('2xx'), 6],
    [cgi('5xx'), 3],
    [fastcgi('2xx'), 3],
    [fastcgi('5xx'), 2],
    ['gatehouse_http_requests_total{job="serve",route="static",status_class="2xx"}', 1],
    ['gatehouse_http_requests_total{job="serve",route="static",status_class="4xx"}', 1],
    ['sum(gatehouse_http_request_duration_seconds_count{job="serve"})', 16],
    ['gatehouse_http_requests_in_flight{job="serve"}', 0],
    ['gatehouse_cgi_script_timeouts_total{job="serve"}', 1],
    ['gatehouse_cgi_queue_rejections_total{job="serve"}', 1],
    ['gatehouse_cgi_scripts_running{job="serve"}', 0],
    ['gatehouse_cgi_spawns_total{job="serve"}', 8],
    ['gatehouse_cgi_spawn_failures_total{job="serve",errno="ENOEXEC"}', 1],
    ['gatehouse_cgi_spawn_duration_seconds_count{job="serve"}', 7],
    ['gatehouse_cgi_script_exits_total{job="serve",reason="exit",code="0"}', 5],
    ['gatehouse_cgi_script_exits_total{job="serve",reason="exit",code="3"}', 1],
    ['gatehouse_cgi_script_exits_total{job="serve",reason="signal",code="SIGKILL"}', 1],
    ['gatehouse_cgi_scripts_alive{job="serve"}', 0],
    ['gatehouse_cgid_daemon_up{job="serve"}', 1],
    ['gatehouse_cgid_daemon_restarts_total{job="serve"}', 0],
    [`gatehouse_fastcgi_upstream_requests_total{job="serve",${php}}`, 4],
    [`gatehouse_fastcgi_upstream_timeouts_total{job="serve",${php}}`, 1],
    [`gatehouse_fastcgi_upstream_errors_total{job="serve",${php},code="GH_UPSTREAM_TIMEOUT"}`, 1],
    [`gatehouse_fastcgi_upstream_errors_total{job="serve",upstream="unix:${dead}",code="GH_UPSTREAM_REFUSED"}`, 1],
  ];
  const wrong: string[] = [];
  for (const [promql, expected] of expectations) {
    const value = await prometheus.valueWhen(promql, expected);
    if (value !== expected) wrong.push(`${promql}: expected ${expected}, Prometheus has ${value}`);
  }
  assert.deepEqual(wrong, []);

  const { text } = await scrape({ port: metricsPort });
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);

  const table = await gatehouse(['status', `127.0.0.1:${metricsPort}`]);
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, new RegExp(`^gatehouse serve( \\S+)?, pid ${serve.child.pid}, started `));
  assert.match(lines[1]!, /^POOL\s+ACTIVE\s+IDLE\s+QUEUE\s+MAX REACHED\s+UPTIME$/);
  assert.match(table.stdout, /^cgi scripts\s+0\s+1\s+0\s+1\s+\S+$/m, 'scripts: none running, one free slot, one 503');
  assert.match(table.stdout, new RegExp(`^fastcgi ${fpm.addressString.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\s`, 'm'));
  const json = await gatehouse(['status', '--json', `127.0.0.1:${metricsPort}`]);
  assert.equal(json.code, 0, json.stderr);
  const document = JSON.parse(json.stdout) as { command: string; pid: number; pools: Array<Record<string, unknown>> };
  assert.equal(document.command, 'serve');
  assert.equal(document.pid, serve.child.pid);
  assert.deepEqual(document.pools[0], { name: 'cgi scripts', active: 0, idle: 1, queue: 0, max: 1, maxReached: 1 });
  assert.deepEqual(
    document.pools.map((pool) => pool.name),
    ['cgi scripts', `fastcgi ${fpm.addressString}`, `fastcgi unix:${dead}`],
  );
  // An upstream's max is its connection cap: the max-connections of every route to it, added up (3 + 2 to php-fpm).
  assert.deepEqual(
    document.pools.slice(1).map((pool) => pool.max),
    [5, CLIENT_MAX_CONNECTIONS],
    'the max-connections of the routes to php-fpm, and the default for the other',
  );
});

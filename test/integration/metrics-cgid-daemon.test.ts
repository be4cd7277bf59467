/**
 * serve --metrics and the cgid daemon it starts, through the CLI: the
 * daemon's own resident memory and CPU seconds are its /proc/PID/stat at the
 * moment of the scrape (read with the daemon stopped by SIGSTOP, so /proc
 * cannot move between the test's reading and serve's); and a daemon killed
 * with SIGKILL is seen end to end: the script in flight is counted as lost,
 * a request made while the daemon was down as a spawn failure with
 * errno="daemon_unavailable", the daemon comes back (gatehouse_cgid_daemon_up)
 * counted once in gatehouse_cgid_daemon_restarts_total, and the memory and
 * CPU then are the new daemon's.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { httpRequest } from '../kit/http.js';
import { promtoolCheck, sampleValue, scrape, scrapeUntil } from '../kit/metrics.js';
import { childrenOf, commandLine, procStat } from '../kit/proc.js';
import { freePort, tempDir, waitForListener } from '../kit/process.js';
import { startGatehouse, type RunningServe } from '../kit/serve.js';
import { waitFor } from '../kit/wait.js';

/** The daemon's start and restart on a shared machine: generous bounds. */
const PATIENT = { timeoutMs: 30_000 };
/** Scrapes here are patient (a daemon restarting) and show the gatehouse_cgi lines when they give up. */
const CGI_SCRAPES = { ...PATIENT, contextPrefix: 'gatehouse_cgi' };

/** The daemon's numbers as the kernel gives them, read here without gatehouse's code (units from getconf). */
function procNumbers(pid: number): { rssBytes: number; cpuSeconds: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which may hold spaces: fields[0] is field 3 (state), so field N is fields[N - 3].
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const field = (n: number) => Number(fields[n - 3]);
  const pageSize = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }));
  const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }));
  // utime (14) + stime (15) in clock ticks; rss (24) in pages.
  return { rssBytes: field(24) * pageSize, cpuSeconds: (field(14) + field(15)) / ticks };
}

interface Site {
  serve: RunningServe;
  base: string;
  metricsPort: number;
  /** The live cgid daemon under serve, if one runs. */
  daemonPid(): number | undefined;
}

async function startSite(t: TestContext): Promise<Site> {
  const dir = tempDir(t, 'gatehouse-metrics-daemon-');
  const cgiBin = join(dir, 'cgi-bin');
  mkdirSync(cgiBin);
  const script = (name: string, body: string) => {
    writeFileSync(join(cgiBin, name), body);
    chmodSync(join(cgiBin, name), 0o755);
  };
  script('ok.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nok\\n"\n');
  // Sends its head, then stays: in flight when the daemon dies.
  script('slow.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nstarted\\n"\nexec sleep 60\n');
  const metricsPort = await freePort();
  const serve = await startGatehouse(t, 'serve', [
    '--cgi-bin',
    cgiBin,
    '--script-timeout',
    '120s',
    '--access-log',
    'off',
    '--metrics',
    `127.0.0.1:${metricsPort}`,
  ]);
  await waitForListener({ host: '127.0.0.1', port: metricsPort }, { what: "serve's metrics", process: serve, ...PATIENT });
  const pid = serve.child.pid!;
  return {
    serve,
    base: serve.base,
    metricsPort,
    daemonPid: () => childrenOf(pid).find((child) => commandLine(child).includes(' cgid ')),
  };
}

/**
 * A GET on a connection of its own: `sent` once its bytes are in the kernel
 * (on loopback, in the server's socket, which the kernel accepted for it even
 * while the server is stopped), `status` once the answer is in.
 */
function sendRequest(serve: { port: number }, path: string): { sent: Promise<void>; status: Promise<number> } {
  const socket = net.connect(serve.port, '127.0.0.1');
  socket.setTimeout(30_000, () => socket.destroy(new Error(`GET ${path}: no answer within 30 s`)));
  const sent = new Promise<void>((resolve, reject) => {
    socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`, (error) => (error ? reject(error) : resolve()));
  });
  const status = new Promise<number>((resolve, reject) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => {
      const match = /^HTTP\/1\.1 (\d{3}) /.exec(text);
      if (match) resolve(Number(match[1]));
      else reject(new Error(`GET ${path}: no status line in ${JSON.stringify(text.slice(0, 200))}`));
    });
  });
  return { sent, status };
}

/**
 * Stops the daemon (SIGSTOP: its /proc numbers stand still), reads /proc,
 * scrapes, reads /proc again, lets it go on: the scrape must show exactly
 * what /proc showed.
 */
async function assertDaemonNumbers(site: Site, pid: number): Promise<{ rssBytes: number; cpuSeconds: number }> {
  process.kill(pid, 'SIGSTOP');
  try {
    await waitFor(() => procStat(pid)?.state === 'T', `daemon ${pid} stopped by SIGSTOP`);
    const before = procNumbers(pid);
    const { samples, text } = await scrape({ port: site.metricsPort });
    assert.deepEqual(procNumbers(pid), before, 'a stopped process stands still');
    assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_resident_memory_bytes'), before.rssBytes, `daemon ${pid}'s rss`);
    assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_cpu_seconds_total'), before.cpuSeconds, `daemon ${pid}'s utime + stime`);
    assert.ok(before.rssBytes > 0);
    assert.notEqual(
      sampleValue(samples, 'gatehouse_cgid_daemon_resident_memory_bytes'),
      sampleValue(samples, 'process_resident_memory_bytes'),
      "the daemon's memory, not the front's",
    );
    const verdict = await promtoolCheck(text);
    assert.equal(verdict.code, 0, verdict.output);
    return before;
  } finally {
    process.kill(pid, 'SIGCONT');
  }
}

test("serve --metrics: the cgid daemon's resident memory and CPU seconds are its /proc/PID/stat at each scrape", async (t) => {
  const site = await startSite(t);
  const daemon = await waitFor(() => site.daemonPid(), 'the cgid daemon', PATIENT);
  const idle = await assertDaemonNumbers(site, daemon);
  // Work for the daemon (each script is a spawn order it answers), then a second reading: read at the scrape, not at start.
  for (let count = 0; count < 30; count += 1) assert.equal((await httpRequest(`${site.base}/cgi-bin/ok.sh`)).status, 200);
  await scrapeUntil(
    site.metricsPort,
    (samples) => sampleValue(samples, 'gatehouse_cgi_scripts_alive') === 0,
    'every script reaped',
    CGI_SCRAPES,
  );
  const busy = await assertDaemonNumbers(site, daemon);
  assert.ok(busy.cpuSeconds >= idle.cpuSeconds, 'CPU seconds never go back for one daemon');
});

test('serve --metrics: a cgid daemon killed with SIGKILL is counted end to end (lost script, daemon_unavailable, one restart)', async (t) => {
  const site = await startSite(t);
  const first = await waitFor(() => site.daemonPid(), 'the cgid daemon', PATIENT);
  const { samples: before } = await scrapeUntil(
    site.metricsPort,
    (samples) => sampleValue(samples, 'gatehouse_cgid_daemon_up') === 1,
    'the daemon up',
    CGI_SCRAPES,
  );
  assert.equal(sampleValue(before, 'gatehouse_cgid_daemon_restarts_total'), 0);
  assert.equal(sampleValue(before, 'gatehouse_cgi_spawn_failures_total', { errno: 'daemon_unavailable' }), undefined);

  // A script in flight: its head sent, sleeping.
  const inFlight = httpRequest(`${site.base}/cgi-bin/slow.sh`, { timeoutMs: 30_000 }).catch((error: Error) => error);
  await scrapeUntil(
    site.metricsPort,
    (samples) => sampleValue(samples, 'gatehouse_cgi_scripts_alive') === 1,
    'slow.sh running',
    CGI_SCRAPES,
  );

  // The front is stopped while the daemon dies and a request arrives, so that the front finds the daemon gone
  // (its socket at end of file, the process a zombie it has not reaped) when it reads that request: the
  // request is made while the daemon is down, however soon a new one would start.
  const front = site.serve.child.pid!;
  process.kill(front, 'SIGSTOP');
  let whileDown: Promise<number>;
  try {
    await waitFor(() => procStat(front)?.state === 'T', 'the front stopped by SIGSTOP');
    process.kill(first, 'SIGKILL');
    await waitFor(() => procStat(first)?.state === 'Z', 'the daemon dead (a zombie until the stopped front reaps it)');
    const request = sendRequest(site.serve, '/cgi-bin/ok.sh');
    whileDown = request.status;
    await request.sent;
  } finally {
    process.kill(front, 'SIGCONT');
  }
  assert.equal(await whileDown, 503, 'a request made while the daemon is down');
  await inFlight;

  const { samples: after } = await scrapeUntil(
    site.metricsPort,
    (samples) =>
      sampleValue(samples, 'gatehouse_cgid_daemon_up') === 1 && sampleValue(samples, 'gatehouse_cgid_daemon_restarts_total') === 1,
    'the daemon back (up 1, one restart)',
    CGI_SCRAPES,
  );
  assert.equal(sampleValue(after, 'gatehouse_cgid_daemon_restarts_total'), 1);
  assert.equal(sampleValue(after, 'gatehouse_cgi_spawn_failures_total', { errno: 'daemon_unavailable' }), 1, 'the request made while down');
  assert.equal(sampleValue(after, 'gatehouse_cgi_script_exits_total', { reason: 'lost', code: '' }), 1, 'the script in flight');
  assert.equal(sampleValue(after, 'gatehouse_cgi_scripts_alive'), 0);
  assert.deepEqual(
    after.filter((sample) => sample.name === 'gatehouse_cgi_spawn_failures_total').map((sample) => sample.labels.errno),
    ['daemon_unavailable'],
    'no other failure, and no made-up errno',
  );

  // The new daemon serves, and the memory and CPU are now its own.
  assert.equal((await httpRequest(`${site.base}/cgi-bin/ok.sh`)).status, 200);
  const second = await waitFor(() => {
    const pid = site.daemonPid();
    return pid !== first && pid;
  }, 'the new cgid daemon');
  await assertDaemonNumbers(site, second);
});

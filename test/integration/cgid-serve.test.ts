/**
 * `gatehouse serve` running CGI scripts through the cgid daemon it starts:
 * the scripts' parent is the daemon, the CGI promises hold through it
 * (bodies, stderr, timeouts with the group killed, aborts, ScriptLog, large
 * streamed output, no zombies), the socket is private, and the front
 * recovers when the daemon is killed under load, leaving no orphans.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DAEMON_NODE_FLAGS } from '../../src/cgid/supervisor.js';
import { httpRequest } from '../kit/http.js';
import { CGI_FIXTURES, GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { childProcesses, childrenOf, commandLine, groupMembers, processExists } from '../kit/proc.js';
import { freePort, startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { textOf, waitFor, waitForText, waitForOutput } from '../kit/wait.js';

interface Served {
  base: string;
  port: number;
  process: RunningProcess;
  pid: number;
  runtime: string;
  errorLog: string;
  scriptLog: string;
  errors(): string;
  daemonPid(): number | undefined;
}

function writeScript(dir: string, name: string, body: string): void {
  writeFileSync(join(dir, name), body);
  chmodSync(join(dir, name), 0o755);
}

/** The fixtures plus scripts these tests need, in a private cgi-bin. */
function makeCgiBin(t: TestContext): string {
  const dir = join(tempDir(t, 'gatehouse-cgid-bin-'), 'cgi-bin');
  cpSync(CGI_FIXTURES, dir, { recursive: true });
  writeScript(dir, 'ppid.sh', '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\n%s\\n" "$PPID"\n');
  writeScript(dir, 'slow-head.sh', '#!/bin/sh\necho "slow-head pid $$" >&2\nsleep 30\n');
  writeScript(
    dir,
    'slow.sh',
    '#!/bin/sh\necho "slow pid $$" >&2\nprintf "Content-Type: text/plain\\n\\nstarted\\n"\nsleep 30 &\nsleep 30\n',
  );
  return dir;
}

async function startServe(t: TestContext, args: string[] = [], cgiBin = makeCgiBin(t)): Promise<Served> {
  const dir = tempDir(t, 'gatehouse-cgid-serve-');
  const runtime = join(dir, 'run');
  const errorLog = join(dir, 'error.log');
  const scriptLog = join(dir, 'script.log');
  const port = await freePort();
  const proc = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['serve']),
    '--listen',
    `127.0.0.1:${port}`,
    '--cgi-bin',
    cgiBin,
    '--runtime-dir',
    runtime,
    '--error-log',
    errorLog,
    '--script-log',
    scriptLog,
    '--access-log',
    'off',
    ...args,
  ]);
  await waitForListener({ host: '127.0.0.1', port }, { what: 'gatehouse serve', process: proc, ...PATIENT });
  const pid = proc.child.pid!;
  return {
    base: `http://127.0.0.1:${port}`,
    port,
    process: proc,
    pid,
    runtime,
    errorLog,
    scriptLog,
    errors: () => textOf(errorLog),
    daemonPid: () => childrenOf(pid).find((child) => commandLine(child).includes('cgid')),
  };
}

/** The daemon's start, a restart, a killed group: generous waits, since CI and this machine are shared. */
const PATIENT = { timeoutMs: 30_000 };

test('gatehouse serve runs scripts through its cgid daemon', async (t) => {
  const site = await startServe(t, ['--script-timeout', '1s']);
  const daemon = await waitFor(() => site.daemonPid(), 'the cgid daemon', PATIENT);
  assert.notEqual(daemon, site.pid);

  await t.test("the script's parent process is the daemon, not the front", async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/ppid.sh`);
    assert.equal(response.status, 200);
    assert.equal(Number(response.body.toString().trim()), daemon);
  });

  await t.test("the daemon runs under its own Node flags (for its memory), and V8 wrote nothing to serve's log", async () => {
    const [file, ...args] = readFileSync(`/proc/${daemon}/cmdline`, 'utf8').split('\0');
    assert.equal(file, process.execPath);
    const script = args.findIndex((arg) => arg.endsWith('main.js'));
    assert.deepEqual(args.slice(0, script), [...DAEMON_NODE_FLAGS]);
    assert.equal(args[script + 1], 'cgid');
    // Anything V8 says about the flags reaches the log as an error of the daemon (a line that is not a JSON record).
    const response = await httpRequest(`${site.base}/cgi-bin/ppid.sh`);
    assert.equal(response.status, 200);
    assert.doesNotMatch(site.errors(), / error cgid\[/);
  });

  await t.test('the socket is the front pid appended to cgisock, mode 0600, in a 0700 directory', () => {
    const socket = join(site.runtime, `cgisock.${site.pid}`);
    const stat = statSync(socket);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o600);
    assert.equal(statSync(site.runtime).mode & 0o777, 0o700);
  });

  await t.test('environment and query reach the script', async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/env.sh/extra?a=1&b=2`, { headers: { 'X-Test': 'yes' } });
    assert.equal(response.status, 200);
    const body = response.body.toString();
    assert.match(body, /^QUERY_STRING=a=1&b=2$/m);
    assert.match(body, /^PATH_INFO=\/extra$/m);
    assert.match(body, /^HTTP_X_TEST=yes$/m);
    assert.match(body, /^GATEWAY_INTERFACE=CGI\/1.1$/m);
  });

  await t.test('a 1 MiB POST body streams through and back (front to script directly)', async () => {
    const body = randomBytes(1024 * 1024);
    const response = await httpRequest(`${site.base}/cgi-bin/echo.sh`, { method: 'POST', body });
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-content-length'], String(body.length));
    assert.ok(response.body.equals(body));
  });

  await t.test('a 50 MB response streams in full', async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/big.sh`);
    assert.equal(response.status, 200);
    assert.equal(response.body.length, 52_428_800);
  });

  await t.test('stderr reaches the error log with the script name; an error status is script-logged', async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/error-status.sh`);
    assert.equal(response.status, 503);
    await waitForText(site.errorLog, /error-status\.sh: error-status\.sh: database unreachable/, 'the stderr line', PATIENT);
    await waitForText(site.scriptLog, /%% 503 .*error-status\.sh/, 'the ScriptLog entry', PATIENT);
  });

  await t.test('malformed output is a 500 with the bad line logged', async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/malformed.sh`);
    assert.equal(response.status, 500);
    const logged = await waitForText(site.errorLog, /malformed header from script .*malformed\.sh/, 'the malformed-header line', PATIENT);
    // The error log has the script's path and the bad line; the client's page has neither (issue 12, item 6).
    const path = /malformed header from script (\S*malformed\.sh)/.exec(logged)![1]!;
    assert.ok(path.startsWith('/'), `the log names the script's path: ${path}`);
    const page = `${JSON.stringify(response.headers)}\n${response.body.toString('latin1')}`;
    for (const secret of [path, 'malformed.sh', 'this is not a header', 'Bad header'])
      assert.ok(!page.includes(secret), `the 500 shows ${JSON.stringify(secret)}:\n${page}`);
  });

  await t.test('a script silent past the timeout gets 504 and its whole group is killed', async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/hang.sh`);
    assert.equal(response.status, 504);
    const match = await waitFor(() => /script (\d+) grandchild (\d+)/.exec(site.errors()), 'the hang.sh pids', PATIENT);
    const [script, grandchild] = [Number(match[1]), Number(match[2])];
    await waitFor(
      () => groupMembers(script).length === 0 && !processExists(grandchild),
      'the script and its grandchild to be gone',
      PATIENT,
    );
  });

  await t.test('a client that goes away takes its script (SIGTERM, then SIGKILL for one that ignores it)', async () => {
    const socket = net.connect(site.port, '127.0.0.1');
    socket.write('GET /cgi-bin/ignore-term.sh HTTP/1.1\r\nHost: x\r\n\r\n');
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString()));
    const pid = Number((await waitFor(() => /pid (\d+)/.exec(text), 'the script pid', PATIENT))[1]);
    assert.ok(processExists(pid));
    socket.destroy();
    await waitFor(() => groupMembers(pid).length === 0, 'the script group to be gone');
  });

  await t.test('nph, local and client redirects, HEAD and a chunked body behave as without the daemon', async () => {
    const nph = await httpRequest(`${site.base}/cgi-bin/nph-raw.sh`);
    assert.equal(nph.status, 299);
    assert.equal(nph.body.toString(), 'raw!');
    const local = await httpRequest(`${site.base}/cgi-bin/redirect.sh`);
    assert.equal(local.status, 200);
    assert.match(local.body.toString(), /QUERY_STRING.*from=redirect/);
    const client = await httpRequest(`${site.base}/cgi-bin/client-redirect.sh`);
    assert.equal(client.status, 302);
    assert.equal(client.headers.location, 'https://example.com/elsewhere');
    const head = await httpRequest(`${site.base}/cgi-bin/env.sh`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    async function* chunks(): AsyncIterable<Buffer> {
      yield Buffer.from('chunked ');
      yield Buffer.from('body');
    }
    const chunked = await httpRequest(`${site.base}/cgi-bin/echo.sh`, { method: 'POST', body: chunks() });
    assert.equal(chunked.status, 200);
    assert.equal(chunked.headers['x-content-length'], '12');
    assert.equal(chunked.body.toString(), 'chunked body');
  });

  await t.test(
    "many requests at once (spawn orders sent to the daemon together): each gets its own script's stdin and stdout",
    async () => {
      const requests = Array.from({ length: 24 }, (_, index) =>
        index % 2 === 0
          ? httpRequest(`${site.base}/cgi-bin/env.sh?request=${index}`).then((response) => ({ index, response }))
          : httpRequest(`${site.base}/cgi-bin/echo.sh`, { method: 'POST', body: `body of request ${index}` }).then((response) => ({
              index,
              response,
            })),
      );
      for (const { index, response } of await Promise.all(requests)) {
        assert.equal(response.status, 200, `request ${index}`);
        if (index % 2 === 0) assert.match(response.body.toString(), new RegExp(`^QUERY_STRING=request=${index}$`, 'm'), `request ${index}`);
        else assert.equal(response.body.toString(), `body of request ${index}`);
      }
    },
  );

  await t.test('no zombies: every script the daemon started was reaped', async () => {
    await Promise.all(Array.from({ length: 20 }, () => httpRequest(`${site.base}/cgi-bin/env.sh`)));
    await waitFor(() => childProcesses(daemon).every((child) => child.state !== 'Z'), 'no zombie children of the daemon', {
      ...PATIENT,
      context: () => JSON.stringify(childProcesses(daemon)),
    });
  });
});

test('the daemon killed under load: requests in flight end, scripts are killed, the front answers 503 then serves again', async (t) => {
  const site = await startServe(t, ['--script-timeout', '20s']);
  const first = await waitFor(() => site.daemonPid(), 'the cgid daemon', PATIENT);
  const inFlight = Array.from({ length: 6 }, () =>
    httpRequest(`${site.base}/cgi-bin/slow.sh`, { timeoutMs: 20_000 }).catch((error: Error) => error),
  );
  const pids = await waitFor(
    () => {
      const found = [...site.errors().matchAll(/slow pid (\d+)/g)].map((match) => Number(match[1]));
      return found.length >= 6 && found;
    },
    'six running scripts',
    PATIENT,
  );
  // Two more whose scripts have not printed their head yet when the daemon dies: they are answered 503.
  const beforeHead = Array.from({ length: 2 }, () => httpRequest(`${site.base}/cgi-bin/slow-head.sh`, { timeoutMs: 20_000 }));
  const headless = await waitFor(
    () => {
      const found = [...site.errors().matchAll(/slow-head pid (\d+)/g)].map((match) => Number(match[1]));
      return found.length >= 2 && found;
    },
    'two scripts without a head yet',
    PATIENT,
  );
  const groups = [...pids, ...headless];
  assert.equal(groupMembers(...groups).length >= 8, true, 'the scripts and their sleeps run');

  process.kill(first, 'SIGKILL');
  // Every request in flight finishes (none hangs until the client timeout).
  const results = await Promise.all(inFlight);
  for (const result of results) assert.ok(!(result instanceof Error) || !/timed out/.test(result.message), String(result));
  for (const response of await Promise.all(beforeHead)) {
    assert.equal(response.status, 503);
    assert.equal(response.headers['retry-after'], '1');
  }
  // No orphans: the scripts and everything they started are gone.
  await waitFor(() => groupMembers(...groups).length === 0, 'the orphaned script groups to be killed', PATIENT);

  // While the daemon restarts, CGI requests get 503 (never a hang or a 500); then 200 again.
  const statuses: number[] = [];
  await waitFor(async () => {
    const response = await httpRequest(`${site.base}/cgi-bin/env.sh`);
    statuses.push(response.status);
    return response.status === 200;
  }, 'a 200 from a new daemon');
  for (const status of statuses.slice(0, -1)) assert.equal(status, 503, `statuses while restarting: ${statuses.join(' ')}`);
  const second = site.daemonPid();
  assert.ok(second !== undefined && second !== first, 'a new daemon runs');
  await waitForText(site.errorLog, /cgid: daemon pid \d+ exited \(SIGKILL\)/, 'the restart logged', PATIENT);
});

test('the runtime directory is refused when other users can write it', async (t) => {
  for (const mode of [0o777, 0o1777, 0o770]) {
    const dir = join(tempDir(t, 'gatehouse-cgid-unsafe-'), 'run');
    mkdirSync(dir);
    chmodSync(dir, mode);
    const port = await freePort();
    const proc = startProcess(t, process.execPath, [
      GATEHOUSE_MAIN,
      ...asRootOnPurpose(['serve']),
      '--listen',
      `127.0.0.1:${port}`,
      '--cgi-bin',
      CGI_FIXTURES,
      '--runtime-dir',
      dir,
      '--access-log',
      'off',
    ]);
    const exit = await proc.exited;
    assert.equal(exit.code, 1, proc.output());
    // 'exited' is the exit event: the pipes may still hold the line, so it is waited for.
    await waitForOutput(
      proc,
      /refusing to create the cgid socket in .*writable by (every user|its group) \(mode \d+\).*chmod go-w/,
      `the refusal of mode ${mode.toString(8)}`,
    );
  }
});

test('cgi-spawn in-process runs scripts from the front itself (posix_spawn)', async (t) => {
  const site = await startServe(t, ['--cgi-spawn', 'in-process']);
  assert.equal(site.daemonPid(), undefined);
  const response = await httpRequest(`${site.base}/cgi-bin/ppid.sh`);
  assert.equal(response.status, 200);
  assert.equal(Number(response.body.toString().trim()), site.pid);
});

test('the config file takes CGIDScriptTimeout, ScriptSock and DefaultRuntimeDir under their Apache names', async (t) => {
  const dir = tempDir(t, 'gatehouse-cgid-config-');
  const runtime = join(dir, 'rt');
  const config = join(dir, 'serve.toml');
  writeFileSync(config, `CGIDScriptTimeout = "500ms"\nScriptSock = "mysock"\nDefaultRuntimeDir = "${runtime}"\n`);
  const port = await freePort();
  const proc = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['serve']),
    '--config',
    config,
    '--listen',
    `127.0.0.1:${port}`,
    '--cgi-bin',
    makeCgiBin(t),
    '--access-log',
    'off',
  ]);
  await waitForListener({ host: '127.0.0.1', port }, { what: 'gatehouse serve', process: proc, ...PATIENT });
  assert.ok(statSync(join(runtime, `mysock.${proc.child.pid}`)).isSocket());
  const response = await httpRequest(`http://127.0.0.1:${port}/cgi-bin/hang.sh`);
  assert.equal(response.status, 504);
});

/**
 * Logs an operator can read, rotate and ship, for each command:
 * - one line format (time, level, role[pid], message), text or JSON, with
 *   the cgid daemon's records passing through serve's error log un-nested;
 * - levels (--log-level / -L; kfcgi's -v is debug);
 * - logrotate's recipe (mv, then kill -USR1) for serve's access and error
 *   logs, cgid --fastcgi's error and script logs, and kfcgi's -E log: the
 *   next lines land in the new files, and SIGUSR1 never opens Node's inspector;
 * - a graceful stop writes out every line logged before it;
 * - kfcgi without -d logs through syslog, or, with no syslog socket, to
 *   standard error, and says so once.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { parseJsonRecord, systemLogAvailable } from '../../src/log/index.js';
import { httpRequest } from '../kit/http.js';
import { outputEnded, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { waitForValue, waitForOutput } from '../kit/wait.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, startGatehouse } from '../kit/serve.js';

/** A line of the text format: ISO time, level, role[pid]: message. */
const TEXT_LINE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (error|warn|info|debug) (serve|cgid|kfcgi)\[(\d+)\]: (.*)$/;
/** Generous: the machine is shared (never a timing assertion). */
const SLOW_MACHINE_MS = 20_000;

const read = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8') : '');
const linesOf = (text: string) => text.split('\n').filter(Boolean);

async function until(file: string, what: string | RegExp): Promise<string> {
  const text = await waitForValue(
    () => read(file),
    (value) => (typeof what === 'string' ? value.includes(what) : what.test(value)),
    'the log line',
    { timeoutMs: SLOW_MACHINE_MS },
  );
  assert.ok(typeof what === 'string' ? text.includes(what) : what.test(text), `${file} never got ${what}:\n${text}`);
  return text;
}

function site(t: TestContext): { dir: string; www: string; cgi: string } {
  const dir = tempDir(t, 'gatehouse-logs-');
  const www = join(dir, 'www');
  const cgi = join(dir, 'cgi');
  mkdirSync(www);
  mkdirSync(cgi);
  writeFileSync(join(www, 'a.txt'), 'hello\n');
  writeFileSync(join(cgi, 'chatty.sh'), '#!/bin/sh\necho "stderr line from chatty" >&2\nprintf "Content-Type: text/plain\\n\\nhi\\n"\n');
  chmodSync(join(cgi, 'chatty.sh'), 0o755);
  return { dir, www, cgi };
}

test('serve: mv + SIGUSR1 moves the access and error logs to new files; no inspector opens', async (t) => {
  const { dir, www, cgi } = site(t);
  const accessLog = join(dir, 'access.log');
  const errorLog = join(dir, 'error.log');
  const server = await startGatehouse(t, 'serve', ['--docroot', www, '--cgi-bin', cgi, '--access-log', accessLog, '--error-log', errorLog]);
  await httpRequest(`${server.base}/a.txt?before`);
  await until(accessLog, 'GET /a.txt?before');
  await until(errorLog, 'listening on');

  renameSync(accessLog, `${accessLog}.1`);
  renameSync(errorLog, `${errorLog}.1`);
  server.child.kill('SIGUSR1');
  // The reopen's own line is the first in the new error log.
  await until(errorLog, 'SIGUSR1: log files reopened');
  await httpRequest(`${server.base}/a.txt?after`);
  await httpRequest(`${server.base}/cgi-bin/chatty.sh`);
  await until(accessLog, 'GET /cgi-bin/chatty.sh');
  await until(errorLog, 'stderr line from chatty');

  assert.deepEqual(
    linesOf(read(accessLog)).map((line) => /"GET (\S+)/.exec(line)?.[1]),
    ['/a.txt?after', '/cgi-bin/chatty.sh'],
  );
  assert.ok(!read(`${accessLog}.1`).includes('after'));
  assert.ok(!read(`${errorLog}.1`).includes('chatty'));
  await server.stop();
  assert.equal(server.child.exitCode, 0, server.output());
  // Checked on the whole output (its pipes ended), not on what had come through them so far.
  const output = await outputEnded(server);
  assert.ok(!output.includes('Debugger listening'), output);
});

test("serve: one line format, the cgid daemon's records un-nested, stops logged as info; JSON lines and --log-level", async (t) => {
  const { dir, www, cgi } = site(t);
  const errorLog = join(dir, 'error.log');
  const server = await startGatehouse(t, 'serve', ['--docroot', www, '--cgi-bin', cgi, '--access-log', 'off', '--error-log', errorLog]);
  await httpRequest(`${server.base}/cgi-bin/chatty.sh`);
  await until(errorLog, 'stderr line from chatty');
  await server.stop();
  assert.equal(server.child.exitCode, 0, server.output());
  const lines = linesOf(read(errorLog));
  for (const line of lines) assert.match(line, TEXT_LINE);
  const parsed = lines.map((line) => TEXT_LINE.exec(line)!);
  const servePid = String(server.child.pid);
  const daemon = parsed.find((match) => match[2] === 'cgid');
  assert.ok(daemon, `no line of the cgid daemon:\n${lines.join('\n')}`);
  assert.notEqual(daemon[3], servePid);
  assert.deepEqual(
    parsed.filter((match) => /SIGTERM/.test(match[4]!)).map((match) => `${match[1]} ${match[2]}`),
    ['info serve', 'info cgid'],
  );
  assert.ok(parsed.some((match) => match[1] === 'error' && match[2] === 'serve' && match[3] === servePid && match[4]!.includes('chatty')));
  // No line inside a line: one time stamp and one role per line.
  for (const line of lines) assert.equal(line.match(/\d{4}-\d{2}-\d{2}T\d{2}:/g)?.length, 1, line);

  // The same in JSON, at level warn: the script's stderr (an error) is there, info lines are not.
  const jsonLog = join(dir, 'error.json');
  const quiet = await startGatehouse(t, 'serve', [
    '--docroot',
    www,
    '--cgi-bin',
    cgi,
    '--access-log',
    'off',
    '--error-log',
    jsonLog,
    '--log-format',
    'json',
    '--log-level',
    'warn',
  ]);
  await httpRequest(`${quiet.base}/cgi-bin/chatty.sh`);
  await until(jsonLog, 'stderr line from chatty');
  await quiet.stop();
  const records = linesOf(read(jsonLog)).map((line) => parseJsonRecord(line));
  assert.ok(records.length > 0 && records.every((record) => record !== null), read(jsonLog));
  assert.ok(
    records.every((record) => record!.level === 'error' || record!.level === 'warn'),
    read(jsonLog),
  );
  assert.ok(records.some((record) => record!.role === 'serve' && record!.message.includes('stderr line from chatty')));
});

test('serve: requests still running at SIGTERM finish, and their access log lines are written before the exit', async (t) => {
  const { dir, www, cgi } = site(t);
  const accessLog = join(dir, 'access.log');
  const errorLog = join(dir, 'error.log');
  const started = join(dir, 'started');
  const go = join(dir, 'go');
  mkdirSync(started);
  // Each script says it runs, then waits for the test's go (bounded: it gives up after 30 s).
  writeFileSync(
    join(cgi, 'held.sh'),
    `#!/bin/sh\ntouch ${started}/$$\nn=0\nwhile [ ! -e ${go} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done\nprintf "Content-Type: text/plain\\n\\nheld\\n"\n`,
  );
  chmodSync(join(cgi, 'held.sh'), 0o755);
  const server = await startGatehouse(t, 'serve', ['--docroot', www, '--cgi-bin', cgi, '--access-log', accessLog, '--error-log', errorLog]);
  const count = 12;
  const responses = Array.from({ length: count }, (_, index) => httpRequest(`${server.base}/cgi-bin/held.sh?n=${index}`));
  await waitForValue(
    () => readdirSync(started).length,
    (running) => running === count,
    'every script started',
    { timeoutMs: SLOW_MACHINE_MS },
  );
  server.child.kill('SIGTERM');
  await until(errorLog, 'SIGTERM: finishing requests in flight');
  writeFileSync(go, '');
  const statuses = (await Promise.all(responses)).map((response) => response.status);
  assert.deepEqual(statuses, Array(count).fill(200));
  await server.exited;
  assert.equal(server.child.exitCode, 0, server.output());
  // Logged while the server was stopping, written before it exited.
  const logged = linesOf(read(accessLog)).filter((line) => line.includes('GET /cgi-bin/held.sh?n='));
  assert.equal(logged.length, count, read(accessLog));
  assert.match(read(errorLog), /info serve\[\d+\]: stopped$/m);
});

test('cgid --fastcgi: mv + SIGUSR1 for its error log, the script log follows the move; one line format', async (t) => {
  const { dir, cgi } = site(t);
  writeFileSync(join(cgi, 'broken.sh'), '#!/bin/sh\necho "not a header"\n');
  chmodSync(join(cgi, 'broken.sh'), 0o755);
  const socket = join(dir, 'face.sock');
  const errorLog = join(dir, 'cgid.log');
  const scriptLog = join(dir, 'script.log');
  const face = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`, '--error-log', errorLog, '--script-log', scriptLog]),
  ]);
  await waitForListener({ path: socket }, { process: face, timeoutMs: SLOW_MACHINE_MS });
  const client = new FastCGIClient({ address: `unix:${socket}` });
  t.after(() => client.close());
  const run = (script: string) =>
    client.fetchAll({ params: { REQUEST_METHOD: 'GET', SCRIPT_FILENAME: join(cgi, script), REQUEST_URI: `/${script}` } });

  await run('missing-before.sh');
  await until(errorLog, 'missing-before.sh');
  await run('broken.sh');
  await until(scriptLog, '%% 500');

  renameSync(errorLog, `${errorLog}.1`);
  renameSync(scriptLog, `${scriptLog}.1`);
  face.child.kill('SIGUSR1');
  await until(errorLog, 'SIGUSR1: log files reopened');
  await run('missing-after.sh');
  await run('broken.sh');
  await until(errorLog, 'missing-after.sh');
  await until(scriptLog, '%% 500');

  assert.ok(!read(`${errorLog}.1`).includes('missing-after'));
  assert.equal(read(`${scriptLog}.1`).match(/^%% 500/gm)?.length, 1);
  assert.equal(read(scriptLog).match(/^%% 500/gm)?.length, 1);
  await face.stop();
  // Checked on the whole output (its pipes ended), not on what had come through them so far.
  const output = await outputEnded(face);
  assert.ok(!output.includes('Debugger listening'), output);
  const lines = linesOf(read(errorLog));
  for (const line of lines) assert.match(line, TEXT_LINE);
  assert.ok(lines.every((line) => TEXT_LINE.exec(line)![2] === 'cgid'));
  assert.match(lines.at(-1)!, /info cgid\[\d+\]: SIGTERM: finishing 0 request\(s\), then exiting$/);
});

/** A fixed-pool worker that writes a line to stderr, then holds the socket (it never has to answer). */
function stderrWorker(dir: string): string {
  const worker = join(dir, 'worker.sh');
  writeFileSync(worker, '#!/bin/sh\necho "worker script $$ started" >&2\nexec sleep 600\n');
  chmodSync(worker, 0o755);
  return worker;
}

test('kfcgi: -E, mv + SIGUSR1: the next lines land in the new file; -F json; -v is debug', async (t) => {
  const dir = tempDir(t, 'gatehouse-logs-kfcgi-');
  const worker = stderrWorker(dir);
  const socket = join(dir, 'pool.sock');
  const logFile = join(dir, 'kfcgi.log');
  const kfcgi = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    'kfcgi',
    '-d',
    '-n',
    '2',
    '-p',
    '/',
    '-s',
    socket,
    '-E',
    logFile,
    worker,
  ]);
  await waitForListener({ path: socket }, { process: kfcgi, timeoutMs: SLOW_MACHINE_MS });
  const before = await until(logFile, /worker script \d+ started[\s\S]*worker script \d+ started/);
  for (const line of linesOf(before)) assert.match(line, TEXT_LINE);

  renameSync(logFile, `${logFile}.1`);
  kfcgi.child.kill('SIGUSR1');
  await until(logFile, 'SIGUSR1: log files reopened');
  // A worker replaced after the rotation: its start and its own line go to the new file.
  const victim = Number(/worker script (\d+) started/.exec(before)![1]);
  process.kill(victim, 'SIGKILL');
  const after = await until(logFile, /worker script \d+ started/);
  assert.ok(after.includes(`worker ${victim}`), after);
  assert.ok(!read(`${logFile}.1`).includes('SIGUSR1'));
  await kfcgi.stop();
  assert.match(read(logFile), /info kfcgi\[\d+\]: stopped$/m);
  // Checked on the whole output (its pipes ended), not on what had come through them so far.
  const output = await outputEnded(kfcgi);
  assert.ok(!output.includes('Debugger listening'), output);
  // -d: the same lines on standard error, in the same format.
  assert.match(output, /^\S+ info kfcgi\[\d+\]: listening on /m);

  // JSON lines on standard error; -v shows debug lines.
  const jsonSocket = join(dir, 'json.sock');
  const json = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    'kfcgi',
    '-d',
    '-v',
    '-F',
    'json',
    '-n',
    '1',
    '-p',
    '/',
    '-s',
    jsonSocket,
    worker,
  ]);
  await waitForListener({ path: jsonSocket }, { process: json, timeoutMs: SLOW_MACHINE_MS });
  await json.stop();
  const jsonOutput = await outputEnded(json);
  const records = linesOf(jsonOutput).map(parseJsonRecord);
  assert.ok(records.length > 0 && records.every((record) => record?.role === 'kfcgi'), jsonOutput);
  assert.ok(records.some((record) => record!.message.startsWith('listening on ')));
});

test('kfcgi without -d: through the system log, or, with no syslog socket, on standard error (said once)', async (t) => {
  const dir = tempDir(t, 'gatehouse-logs-kfcgi-');
  const worker = stderrWorker(dir);
  const socket = join(dir, 'pool.sock');
  const launcher = startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'kfcgi', '-n', '1', '-p', '/', '-s', socket, worker]);
  const { code } = await launcher.exited;
  assert.equal(code, 0, launcher.output());
  // 'exited' is the exit event: the pipe may still hold the launcher's report (the daemon keeps it open), so it is waited for.
  const report = await waitForOutput(launcher, /running in the background as pid \d+; logging to .*\n/, "the launcher's report", {
    timeoutMs: SLOW_MACHINE_MS,
  });
  const daemonPid = Number(/running in the background as pid (\d+)/.exec(report)?.[1]);
  assert.ok(daemonPid > 0, launcher.output());
  t.after(() => {
    try {
      process.kill(daemonPid, 'SIGKILL');
    } catch {
      /* stopped */
    }
  });
  if (systemLogAvailable()) {
    assert.match(launcher.output(), /logging to the system log/);
    process.kill(daemonPid, 'SIGTERM');
    return;
  }
  // The daemon kept the launcher's standard error: its lines arrive there while it runs.
  const output = await waitForValue(
    () => launcher.output(),
    (text) => /worker script \d+ started/.test(text),
    'the worker script started',
    { timeoutMs: SLOW_MACHINE_MS },
  );
  assert.match(output, /running in the background as pid \d+; logging to standard error/);
  assert.equal(output.match(/no system log socket at \/dev\/log: logging to standard error instead/g)?.length, 1, output);
  assert.match(output, new RegExp(`^\\S+ info kfcgi\\[${daemonPid}\\]: listening on `, 'm'));
  process.kill(daemonPid, 'SIGTERM');
  await waitForOutput(launcher, new RegExp(`info kfcgi\\[${daemonPid}\\]: stopped`), 'the stop logged', { timeoutMs: SLOW_MACHINE_MS });
});

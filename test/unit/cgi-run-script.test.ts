import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { runScript, parseScriptTimeout, type RunScriptOptions } from '../../src/cgi/run-script.js';
import { ScriptLimiter } from '../../src/cgi/limiter.js';
import { searchWords } from '../../src/cgi/environment.js';
import { ErrorCode } from '../../src/errors.js';
import { blockedWriting, groupMembers, procStat, wchan } from '../kit/proc.js';
import { waitFor } from '../kit/wait.js';

const cgiBin = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));

function options(script: string, extra: Partial<RunScriptOptions> = {}): RunScriptOptions {
  const file = cgiBin + script;
  return { file, argv: [file], cwd: cgiBin, env: { PATH: '/usr/bin:/bin', GATEWAY_INTERFACE: 'CGI/1.1' }, timeoutMs: 20_000, ...extra };
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function processState(pid: number): string | null {
  return procStat(pid)?.state ?? null;
}

/** Waits until nothing of the script's process group runs any more. */
function groupGone(pgid: number): Promise<unknown> {
  return waitFor(() => groupMembers(pgid).length === 0, `process group ${pgid} to be gone`, {
    context: () => `still running: ${groupMembers(pgid).join(', ')}`,
  });
}

test('environment, argv and working directory reach the script exactly; nothing else is inherited', async () => {
  const env = { PATH: '/usr/bin:/bin', QUERY_STRING: 'a+b%20c', WEIRD: 'line1\nline2 "q" $x `y`' };
  const file = `${cgiBin}env.pl`;
  const run = runScript({ ...options('env.pl'), env, argv: [file, ...searchWords(env.QUERY_STRING, 512)] });
  const head = await run.head;
  assert.equal(head.kind, 'head');
  const dump = JSON.parse((await collect(run.body)).toString());
  assert.deepEqual(dump.argv, ['a', 'b c']);
  assert.equal(dump.cwd, cgiBin.replace(/\/$/, ''));
  // Perl itself adds nothing; the environment is exactly what was passed.
  assert.deepEqual(dump.env, env);
  const result = await run.finished;
  assert.equal(result.code, 0);
});

test('argv search words: only without "=", decoded, refused wholesale when undecodable or too many', () => {
  assert.deepEqual(searchWords('a+b%2Bc', 512), ['a', 'b+c']);
  assert.deepEqual(searchWords('x=1', 512), []);
  assert.deepEqual(searchWords('', 512), []);
  assert.deepEqual(searchWords('a+%zz', 512), []);
  assert.deepEqual(searchWords('a+%00', 512), []);
  assert.deepEqual(searchWords('a+b+c', 2), []);
  assert.deepEqual(searchWords(';rm+-rf+/', 512), [';rm', '-rf', '/']);
});

test('a 10 MB body goes to stdin while stdout is read: no deadlock, every byte back in order', async () => {
  const body = randomBytes(10 * 1024 * 1024);
  const run = runScript(options('echo.sh', { stdin: Readable.from([body.subarray(0, 3_000_000), body.subarray(3_000_000)]) }));
  const head = await run.head;
  assert.equal(head.kind, 'head');
  const echoed = await collect(run.body);
  assert.equal(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(body).digest('hex'));
  assert.equal((await run.finished).code, 0);
});

test('a stderr flood while stdout is written: both drained, every stderr line logged', async () => {
  const lines: string[] = [];
  const run = runScript(options('stderr-flood.pl', { onStderrLine: (line) => lines.push(line) }));
  assert.equal((await run.head).kind, 'head');
  const output = await collect(run.body);
  await run.finished;
  assert.equal(output.length, 1024 * 1024);
  assert.equal(lines.length, 2048);
  assert.ok(lines.every((line) => line.length === 1023 && /^e+$/.test(line)));
  assert.ok(run.capturedStderr.length <= 64 * 1024 + 1024);
});

test('stderr logged per run is capped: one notice, the rest drained', async () => {
  const lines: string[] = [];
  const run = runScript(options('stderr-flood.pl', { maxStderrLogBytes: 10 * 1024, onStderrLine: (line) => lines.push(line) }));
  assert.equal((await collect(run.body)).length, 1024 * 1024);
  await run.finished;
  assert.equal(lines.length, 11);
  assert.match(lines[10]!, /more than 10240 bytes of stderr/);
});

test('no output for the script timeout: 504-style outcome, the whole process group killed and reaped', async () => {
  let grandchild = 0;
  const run = runScript(
    options('hang.sh', { timeoutMs: 300, onStderrLine: (line) => (grandchild = Number(/grandchild (\d+)/.exec(line)?.[1] ?? grandchild)) }),
  );
  const head = await run.head;
  assert.equal(head.kind, 'timeout');
  const result = await run.finished;
  assert.equal(result.timedOut, true);
  assert.equal(result.signal, 'SIGKILL');
  assert.ok(grandchild > 0, 'the script reported its grandchild');
  const pid = run.pid!;
  await groupGone(pid);
  assert.equal(processState(pid), null, 'the script was reaped (no zombie)');
  assert.notEqual(processState(grandchild), 'S');
});

test('a timeout after the head was sent errors the body stream and kills the group', async () => {
  const run = runScript(options('hang-after-head.sh', { timeoutMs: 300 }));
  assert.equal((await run.head).kind, 'head');
  await assert.rejects(collect(run.body), (error: { code?: string }) => error.code === ErrorCode.CGI_SCRIPT_TIMEOUT);
  assert.equal((await run.finished).timedOut, true);
  assert.deepEqual(groupMembers(run.pid!), []);
});

test('abort: SIGTERM to the group, SIGKILL after the grace period for a script that ignores SIGTERM', async () => {
  const run = runScript(options('ignore-term.sh', { killGraceMs: 300 }));
  assert.equal((await run.head).kind, 'head');
  run.body.on('error', () => {});
  run.abort();
  const result = await run.finished;
  assert.equal(result.aborted, true);
  assert.equal(result.signal, 'SIGKILL');
  await groupGone(run.pid!);
});

test('backpressure: a consumer that does not read pauses the script, and the timeout does not fire meanwhile', async (t) => {
  const run = runScript(options('big.sh', { timeoutMs: 200, env: { PATH: '/usr/bin:/bin', HTTP_X_BIG_BYTES: String(8 * 1024 * 1024) } }));
  // A failed check leaves the script blocked: it must not keep the test file alive.
  t.after(() => run.abort());
  assert.equal((await run.head).kind, 'head');
  // big.sh execs head(1), which blocks on its full stdout once the stream stopped reading it.
  const blocked = () => blockedWriting(run.pid!);
  await waitFor(blocked, 'the script to block on its full stdout', { context: () => `wchan: ${wchan(run.pid!)}` });
  // What the stream holds is bounded by its high-water mark (plus one pipe read).
  assert.ok(run.body.readableLength <= 64 * 1024 + 256 * 1024, `buffered ${run.body.readableLength}`);
  // What would fire the timeout is time without output: let three timeouts pass with the script blocked.
  await sleep(3 * 200);
  assert.ok(blocked(), `the script stopped waiting on its stdout (killed by the timeout?): wchan ${wchan(run.pid!)}`);
  const output = await collect(run.body);
  assert.equal(output.length, 8 * 1024 * 1024);
  assert.equal((await run.finished).timedOut, false);
});

test('a malformed head is reported with its line; the output is captured for the script log', async () => {
  const run = runScript(options('malformed.sh'));
  const head = await run.head;
  assert.equal(head.kind, 'malformed');
  assert.equal(head.kind === 'malformed' && head.error.lineNumber, 2);
  assert.equal(head.kind === 'malformed' && head.error.line, 'this is not a header');
  run.body.on('error', () => {});
  await run.finished;
  assert.match(run.capturedStdout.toString(), /this is not a header/);
  assert.match(run.capturedStderr, /malformed.sh was here/);
  const nothing = runScript(options('nothing.sh'));
  nothing.body.on('error', () => {});
  const none = await nothing.head;
  assert.equal(none.kind === 'malformed' && none.error.code, ErrorCode.CGI_HEAD_INCOMPLETE);
});

test('nph: output passes through raw, status line included', async () => {
  const run = runScript(options('nph-raw.sh', { nph: true }));
  assert.equal((await run.head).kind, 'raw');
  assert.match((await collect(run.body)).toString(), /^HTTP\/1.1 299 Raw Status\r\n.*raw!$/s);
});

test('a local redirect settles the head and discards the body', async () => {
  const run = runScript(options('redirect.sh'));
  const head = await run.head;
  assert.equal(head.kind === 'head' && head.head.kind, 'local-redirect');
  assert.equal((await collect(run.body)).length, 0);
});

test('spawn failures are typed: no #! line (no shell fallback), not executable, missing', async () => {
  for (const [script, errno] of [
    ['no-shebang.sh', 'ENOEXEC'],
    ['not-executable.sh', 'EACCES'],
    ['missing.sh', 'ENOENT'],
  ] as const) {
    const run = runScript(options(script));
    run.body.on('error', () => {});
    const head = await run.head;
    assert.equal(head.kind, 'spawn-failed', script);
    assert.equal(head.kind === 'spawn-failed' && head.error.errno, errno, script);
    await run.finished;
  }
});

test('a script that closes stdout and lingers is terminated after the exit wait', async () => {
  const run = runScript(options('linger.sh', { exitWaitMs: 200 }));
  assert.equal((await collect(run.body)).toString(), 'done\n');
  const result = await run.finished;
  assert.equal(result.lingered, true);
  assert.equal(result.signal, 'SIGTERM');
});

test('a background job still holding stderr after the script exited is terminated; the run finishes', async () => {
  let holder = 0;
  const run = runScript(
    options('stderr-holder.sh', {
      exitWaitMs: 200,
      killGraceMs: 200,
      onStderrLine: (line) => (holder = Number(/holder (\d+)/.exec(line)?.[1] ?? holder)),
    }),
  );
  assert.equal((await collect(run.body)).toString(), 'done\n');
  const result = await run.finished;
  assert.equal(result.code, 0);
  assert.equal(result.lingered, true);
  assert.ok(holder > 0);
  await groupGone(run.pid!);
});

test('a process that left the group and holds stdout: the run still finishes after the timeout and grace', async (t) => {
  let escaped = 0;
  const run = runScript(
    options('escape.sh', {
      timeoutMs: 300,
      killGraceMs: 200,
      onStderrLine: (line) => (escaped = Number(/escaped (\d+)/.exec(line)?.[1] ?? escaped)),
    }),
  );
  t.after(() => {
    if (escaped > 0) {
      try {
        process.kill(escaped, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
  assert.equal((await run.head).kind, 'head');
  await assert.rejects(collect(run.body));
  const result = await run.finished;
  assert.equal(result.timedOut, true);
  assert.ok(escaped > 0 && processState(escaped) !== null, 'the escaped process is outside our reach, as expected');
});

test('script timeout values as CGIDScriptTimeout writes them', () => {
  assert.equal(parseScriptTimeout('20'), 20_000);
  assert.equal(parseScriptTimeout('20s'), 20_000);
  assert.equal(parseScriptTimeout('500ms'), 500);
  assert.equal(parseScriptTimeout('1.5s'), 1500);
  assert.equal(parseScriptTimeout('2m'), 120_000);
  assert.equal(parseScriptTimeout(3), 3000);
  assert.equal(parseScriptTimeout('1h'), 3_600_000);
  for (const bad of ['', 'abc', '-1', '0', '5d', '1 2', '600h', 0]) assert.equal(parseScriptTimeout(bad), null, String(bad));
});

test('limiter: a cap, a FIFO queue, refusal past the queue, aborted waiters leave', async () => {
  const limiter = new ScriptLimiter(2, 1);
  const first = await limiter.acquire();
  const second = await limiter.acquire();
  assert.ok(first && second);
  const controller = new AbortController();
  const waiting = limiter.acquire(controller.signal);
  assert.equal(await limiter.acquire(), null);
  assert.equal(limiter.refused, 1);
  controller.abort();
  assert.equal(await waiting, null);
  const third = limiter.acquire();
  first();
  first();
  const granted = await third;
  assert.ok(granted);
  assert.equal(limiter.running, 2);
  second();
  granted();
  assert.equal(limiter.running, 0);
});

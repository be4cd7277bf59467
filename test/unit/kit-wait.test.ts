/** The test kit's one waitFor keeps its contract (test/kit/wait.ts): every wait in the suite relies on it. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { startProcess } from '../kit/process.js';
import { waitFor, waitForOutput } from '../kit/wait.js';

test('resolves with the first truthy value the condition returns', async () => {
  let calls = 0;
  const found = await waitFor(() => (++calls === 3 ? { pid: 42 } : undefined), 'the third look');
  assert.deepEqual(found, { pid: 42 });
  assert.equal(calls, 3);
});

test('past the deadline it fails naming what it waited for, with the context', async () => {
  await assert.rejects(
    waitFor(() => false, 'the moon', { timeoutMs: 60, context: () => 'sky: cloudy' }),
    {
      message: 'timed out after 60 ms waiting for the moon\nsky: cloudy',
    },
  );
});

test('the deadline also bounds a condition that never settles', async () => {
  await assert.rejects(
    waitFor(() => new Promise<boolean>(() => {}), 'a hanging check', { timeoutMs: 60 }),
    /timed out after 60 ms waiting for a hanging check \(the last check did not finish\)/,
  );
});

test('giveUpIf ends the wait at once with its reason; a condition that holds still wins', async () => {
  const started = Date.now();
  await assert.rejects(
    waitFor(() => false, 'an answer', { giveUpIf: () => 'the connection closed' }),
    /gave up waiting for an answer: the connection closed/,
  );
  assert.ok(Date.now() - started < 5000);
  assert.equal(await waitFor(() => true, 'an answer', { giveUpIf: () => 'the connection closed' }), true);
});

test('an event wakes the wait and leaves no listener behind; a throwing condition ends the wait', async () => {
  const changes = new EventEmitter();
  let ready = false;
  const waiting = waitFor(() => ready, 'the change', { wakeOn: { emitter: changes, events: ['change'] } });
  setImmediate(() => {
    ready = true;
    changes.emit('change');
  });
  assert.equal(await waiting, true);
  assert.equal(changes.listenerCount('change'), 0, 'the wait leaves no listener behind');
  await assert.rejects(
    waitFor(() => {
      throw new Error('broken probe');
    }, 'anything'),
    /broken probe/,
  );
});

test("waitForOutput: a process's line that is not there at the first look is waited for; past the deadline, the output so far", async (t) => {
  // The line comes a turn after the process started, as gatehouse's batched log lines do.
  const child = startProcess(t, process.execPath, ['-e', "setTimeout(() => console.error('late line'), 200); setTimeout(() => {}, 5000)"]);
  assert.doesNotMatch(child.output(), /late line/, 'a one-shot read would have missed it');
  await waitForOutput(child, /^late line$/m, 'the late line');
  const source = { output: () => 'one line\n' };
  await assert.rejects(waitForOutput(source, 'never', 'a line that never comes', { timeoutMs: 60 }), {
    message: 'timed out after 60 ms waiting for a line that never comes\nthe output so far:\none line\n',
  });
});

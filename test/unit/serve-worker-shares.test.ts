/**
 * `serve --workers N`: each worker's share of max-scripts and
 * max-queued-scripts, so that all of them together run and queue what one
 * process would (gatehouse-serve(8), WORKERS).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ServeWorkerRole, shareOf } from '../../src/serve/worker-role.js';
import { SERVE_DEFAULTS } from '../../src/config/schema.js';

test('shares add up to the total and differ by at most one', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 256 }), fc.integer({ min: 0, max: 100_000 }), (count, total) => {
      const shares = Array.from({ length: count }, (_, slot) => shareOf(total, slot, count));
      assert.equal(
        shares.reduce((a, b) => a + b, 0),
        total,
      );
      assert.ok(Math.max(...shares) - Math.min(...shares) <= 1);
    }),
  );
  assert.deepEqual(
    [0, 1, 2].map((slot) => shareOf(128, slot, 3)),
    [43, 43, 42],
  );
});

test("a worker's configuration: the inherited sockets and its share of the script limits, the rest unchanged", () => {
  const role = new ServeWorkerRole({ slot: 1, count: 2, listen: ['fd:4', 'fd:5'] });
  const config = role.configure({
    ...SERVE_DEFAULTS,
    listen: ['127.0.0.1:8080', 'unix:/run/a.sock'],
    maxScripts: 5,
    maxQueuedScripts: 11,
    workers: 2,
  });
  assert.deepEqual(config.listen, ['fd:4', 'fd:5']);
  assert.equal(config.maxScripts, 2);
  assert.equal(config.maxQueuedScripts, 5);
  assert.equal(config.workers, 2);
  assert.equal(config.scriptTimeoutMs, SERVE_DEFAULTS.scriptTimeoutMs);
});

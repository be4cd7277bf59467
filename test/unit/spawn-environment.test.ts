/**
 * How each spawner carries the environment's bytes: child_process.spawn only
 * UTF-8 (other bytes refused, never re-encoded), posix_spawn every byte; the
 * default spawner is posix_spawn where the binding loads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { textEnvironment } from '../../src/spawn/fork.js';
import { DefaultSpawner } from '../../src/spawn/default.js';
import { SpawnError } from '../../src/spawn/spawner.js';
import { runScript } from '../../src/cgi/run-script.js';

test('fork: text stays text, UTF-8 bytes become the string that encodes back to them (a leading BOM kept)', () => {
  const env = textEnvironment('/x', { A: 'caf\u00e9', B: Buffer.from('efbbbf41c3a9', 'hex'), C: Buffer.from('plain') });
  assert.equal(env.A, 'caf\u00e9');
  assert.equal(Buffer.from(env.B!, 'utf8').toString('hex'), 'efbbbf41c3a9');
  assert.equal(env.C, 'plain');
});

test('fork: bytes that are not UTF-8 refuse the spawn with EILSEQ, naming the variable', () => {
  assert.throws(
    () => textEnvironment('/srv/x.cgi', { HTTP_X_RAW: Buffer.from('fffe80', 'hex') }),
    (error: SpawnError) => error instanceof SpawnError && error.errno === 'EILSEQ' && /HTTP_X_RAW/.test(error.message),
  );
});

test('the default spawner is posix_spawn here and passes every byte', async () => {
  const spawner = new DefaultSpawner();
  const run = runScript({
    file: '/bin/sh',
    argv: ['/bin/sh', '-c', 'printf "Content-Type: text/plain\\n\\n"; printf %s "$RAW" | od -An -tx1'],
    cwd: '/',
    env: { RAW: Buffer.from('fffe80c3a9e9', 'hex'), PATH: '/usr/bin:/bin' },
    spawner,
  });
  const outcome = await run.head;
  assert.equal(outcome.kind, 'head');
  const chunks: Buffer[] = [];
  for await (const chunk of run.body) chunks.push(chunk as Buffer);
  await run.finished;
  assert.equal(spawner.kind, 'posix_spawn');
  assert.equal(Buffer.concat(chunks).toString().replace(/\s+/g, ''), 'fffe80c3a9e9');
});

/**
 * Logging never blocks and never loses what it was given at a stop or a
 * reopen (src/log/writer.ts): lines are written in batches after the call
 * returns, a flood past the cap is dropped and counted in one line, close()
 * and reopen() flush to the file the lines were logged for, and lines still
 * queued when the process exits are written by the exit hook.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Logger, WriterSink, openLogWriter, openLogger, parseJsonRecord } from '../../src/log/index.js';
import { tempDir } from '../kit/process.js';

const LOG_MODULE = fileURLToPath(new URL('../../src/log/index.js', import.meta.url));
const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

test('write() returns before anything reaches the file; flush() writes every line, in order', async (t) => {
  const file = join(tempDir(t), 'log');
  const writer = openLogWriter(file, 'stderr');
  for (let index = 0; index < 500; index++) writer.write(`line ${index}\n`);
  // Nothing was written by the calls themselves: the batch goes out on a later turn of the event loop.
  assert.equal(readFileSync(file, 'utf8'), '');
  await writer.flush();
  assert.deepEqual(
    lines(file),
    Array.from({ length: 500 }, (_, index) => `line ${index}`),
  );
  await writer.close();
});

test('a flood past the cap: the lines that fit are written, the rest dropped and counted in one line', async (t) => {
  const file = join(tempDir(t), 'log');
  const notices: number[] = [];
  const writer = openLogWriter(file, 'stderr', {
    maxBufferedBytes: 1000,
    onDrop: (count) => {
      notices.push(count);
      return `${count} lines dropped\n`;
    },
  });
  const line = `${'x'.repeat(45)} %%%\n`; // 50 characters
  for (let index = 0; index < 100; index++) writer.write(line.replace('%%%', String(index).padStart(3, '0')));
  await writer.flush();
  const written = lines(file);
  // 1000 characters hold 20 lines of 50; the other 80 are counted, once.
  assert.equal(written.length, 21);
  assert.equal(written.at(-1), '80 lines dropped');
  assert.deepEqual(notices, [80]);
  assert.equal(writer.droppedTotal, 80);
  // The first 20, in order: what is dropped is the newest, never a line in the middle.
  assert.ok(written[0]!.endsWith(' 000') && written[19]!.endsWith(' 019'));
  // Once written out, there is room again.
  writer.write('after the flood\n');
  await writer.flush();
  assert.equal(lines(file).at(-1), 'after the flood');
  await writer.close();
});

test('close() writes everything queued before it, then later lines are dropped', async (t) => {
  const file = join(tempDir(t), 'log');
  const writer = openLogWriter(file, 'stderr');
  for (let index = 0; index < 1000; index++) writer.write(`line ${index}\n`);
  await writer.close();
  assert.equal(lines(file).length, 1000);
  writer.write('too late\n');
  await writer.flush();
  assert.equal(lines(file).length, 1000);
});

test("reopen() after logrotate's mv: earlier lines go to the moved file, the next ones to a new file", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'log');
  const writer = openLogWriter(file, 'stderr');
  writer.write('before 1\n');
  await writer.flush();
  // Let the batch that write() scheduled run (it finds nothing): 'before 2' is then written by the reopen itself.
  await new Promise((resolve) => setImmediate(resolve));
  renameSync(file, `${file}.1`);
  writer.write('before 2\n'); // queued, not yet written when the reopen starts
  await writer.reopen();
  writer.write('after\n');
  await writer.flush();
  assert.deepEqual(lines(`${file}.1`), ['before 1', 'before 2']);
  assert.deepEqual(lines(file), ['after']);
  await writer.close();
});

test('a reopen that fails keeps the old file and says why through the logger', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'logs'));
  const file = join(dir, 'logs', 'log');
  const writer = openLogWriter(file, 'stderr');
  const logger = new Logger({ role: 'serve', sinks: [new WriterSink(writer, 'text')] });
  renameSync(join(dir, 'logs'), join(dir, 'moved'));
  await logger.reopen();
  logger.info('still here');
  await logger.flush();
  const moved = lines(join(dir, 'moved', 'log'));
  assert.match(moved[0]!, /^\S+ error serve\[\d+\]: cannot reopen the log .*\/logs\/log: ENOENT; still writing to the file it had$/);
  assert.match(moved[1]!, /info serve\[\d+\]: still here$/);
  await logger.close();
});

test('lines still queued when the process exits (process.exit included) are written by the exit hook', (t) => {
  const file = join(tempDir(t), 'log');
  const script = `
    const { openLogger } = await import(${JSON.stringify(LOG_MODULE)});
    const logger = openLogger({ role: 'serve', target: ${JSON.stringify(file)} });
    for (let index = 0; index < 2000; index++) logger.info('line ' + index);
    process.exit(3);
  `;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(result.status, 3, result.stderr);
  const written = lines(file);
  assert.equal(written.length, 2000);
  assert.match(written[1999]!, /info serve\[\d+\]: line 1999$/);
});

test('stderr as a pipe: the lines in the chosen format, and a flood past the cap counted in a record of its own', (t) => {
  tempDir(t);
  const script = `
    const { openLogger } = await import(${JSON.stringify(LOG_MODULE)});
    const logger = openLogger({ role: 'cgid', format: 'json', target: '-', maxBufferedBytes: 20000 });
    for (let index = 0; index < 1000; index++) logger.info('line ' + index);
    await logger.close();
  `;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(result.status, 0, result.stderr);
  const records = result.stderr.split('\n').filter(Boolean).map(parseJsonRecord);
  assert.ok(records.every((record) => record !== null && record.role === 'cgid'));
  const notice = records.at(-1)!;
  const kept = records.length - 1;
  assert.equal(notice.level, 'warn');
  const dropped = Number(/^(\d+) log lines dropped/.exec(notice.message)?.[1]);
  assert.ok(kept > 0 && dropped > 0, notice.message);
  assert.equal(kept + dropped, 1000);
});

test('openLogger: a log that cannot be opened is an error at start, naming the file', (t) => {
  const dir = tempDir(t);
  rmSync(dir, { recursive: true });
  assert.throws(() => openLogger({ role: 'serve', target: join(dir, 'missing', 'log') }), {
    code: 'GH_LOG_SETUP',
    message: /^cannot open the log .*missing\/log: ENOENT$/,
  });
});

/**
 * `gatehouse serve` on a free loopback port with its error log in a temp dir
 * (read by the tests that wait for a log line), no access log, and its own
 * runtime directory for the cgid daemon.
 */
import type { TestContext } from 'node:test';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, startProcess, tempDir, waitForListener } from './process.js';
import { asRootOnPurpose } from './serve.js';
import { GATEHOUSE_MAIN } from './paths.js';

export interface Served {
  port: number;
  pid: number;
  errorLog: string;
  log(): string;
}

/** `gatehouse serve` with an error log in a temp dir (read by the tests), on a free loopback port. */
export async function startServe(t: TestContext, args: string[]): Promise<Served> {
  const dir = tempDir(t, 'gatehouse-send-timeout-');
  const errorLog = join(dir, 'error.log');
  const port = await freePort();
  const proc = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose([
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--runtime-dir',
      join(dir, 'run'),
      '--error-log',
      errorLog,
      '--access-log',
      'off',
      ...args,
    ]),
  ]);
  await waitForListener({ host: '127.0.0.1', port }, { process: proc, timeoutMs: 20_000 }).catch((error: Error) => {
    throw new Error(`gatehouse serve did not start: ${error.message}\n${proc.output()}`);
  });
  return {
    port,
    pid: proc.child.pid!,
    errorLog,
    log: () => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : ''),
  };
}

/** Starts the FastCGI test application (test/fixtures/workers/app.ts) as its own process. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { startProcess, waitForListener, type Address, type Cleanup, type RunningProcess } from './process.js';

export const TEST_APP = fileURLToPath(new URL('../fixtures/workers/app.js', import.meta.url));

export interface RunningApp extends RunningProcess {
  address: Address;
  pid: number;
}

/** Listens on a unix socket inside `dir`, or on 127.0.0.1:port when `port` is given. */
export async function startTestApp(t: Cleanup, dir: string, options: { port?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunningApp> {
  const address: Address = options.port ? { host: '127.0.0.1', port: options.port } : { path: join(dir, 'app.sock') };
  const target = 'path' in address ? address.path : `${address.host}:${address.port}`;
  const running = startProcess(t, process.execPath, [TEST_APP, target], { env: { ...process.env, ...options.env } });
  await waitForListener(address, 10_000, () => running.child.exitCode === null).catch((error) => {
    throw new Error(`test app did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, address, pid: running.child.pid! };
}

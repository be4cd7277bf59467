/**
 * `gatehouse serve` (and `gatehouse example`) as the tests run it: the real
 * CLI as a child process on a free loopback port (the flag syntax has no
 * port 0), waited for until it accepts connections and stopped after the
 * test; or run to completion for --check and bad configurations.
 */
import { GATEHOUSE_MAIN } from './paths.js';
import { freePort, runToExit, startProcess, waitForListener, type Cleanup, type Finished, type RunningProcess } from './process.js';

/**
 * The tests run as root, and serve and cgid --fastcgi refuse root without a
 * user: tests that are not about users keep root on purpose (`--user root`,
 * which they log as a warning). A test that passes --user itself, or is about
 * the refusal, gets its arguments as written.
 */
export function asRootOnPurpose(args: readonly string[]): string[] {
  const refusesRoot =
    args[0] === 'serve' || (args[0] === 'cgid' && args.some((arg) => arg === '--fastcgi' || arg.startsWith('--fastcgi=')));
  if (process.geteuid?.() !== 0 || !refusesRoot || args.some((arg) => arg === '--user' || arg.startsWith('--user='))) return [...args];
  return [...args, '--user', 'root'];
}

export interface RunningServe extends RunningProcess {
  port: number;
  base: string;
}

/** Runs `gatehouse <command> --listen 127.0.0.1:PORT ...args` and waits until it accepts connections. */
export async function startGatehouse(
  t: Cleanup,
  command: 'serve' | 'example',
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunningServe> {
  const port = await freePort();
  const running = startProcess(
    t,
    process.execPath,
    [GATEHOUSE_MAIN, ...asRootOnPurpose([command, '--listen', `127.0.0.1:${port}`, ...args])],
    {
      ...(options.cwd ? { cwd: options.cwd } : {}),
      env: { ...process.env, ...options.env },
    },
  );
  await waitForListener({ host: '127.0.0.1', port }, { what: `gatehouse ${command}`, process: running });
  return { ...running, port, base: `http://127.0.0.1:${port}` };
}

/** Runs `gatehouse ...args` to completion (for --check and bad configurations); as root, keeping root on purpose unless `asWritten`. */
export function runGatehouse(args: readonly string[], options: { cwd?: string; asWritten?: boolean } = {}): Promise<Finished> {
  return runToExit(
    process.execPath,
    [GATEHOUSE_MAIN, ...(options.asWritten ? args : asRootOnPurpose(args))],
    options.cwd ? { cwd: options.cwd } : {},
  );
}

/**
 * fcgiwrap (runs CGI scripts named by SCRIPT_FILENAME) on a private unix
 * socket; stopped after the test. fcgiwrap takes the socket as `-s unix:PATH`
 * and serves in the foreground.
 */
import { join } from 'node:path';
import { requireProgram, startProcess, tempDir, waitForListener, type Cleanup, type RunningProcess } from './process.js';

export interface RunningFcgiwrap extends RunningProcess {
  path: string;
  addressString: string;
}

export interface FcgiwrapOptions {
  children?: number;
  /** -f: send the scripts' stderr to the web server as FCGI_STDERR (default true); otherwise it goes to fcgiwrap's own stderr. */
  stderrOverFastCGI?: boolean;
}

export async function startFcgiwrap(t: Cleanup, options: FcgiwrapOptions = {}): Promise<RunningFcgiwrap> {
  const binary = requireProgram('/usr/sbin/fcgiwrap');
  const dir = tempDir(t, 'gatehouse-fcgiwrap-');
  const path = join(dir, 'fcgiwrap.sock');
  const running = startProcess(t, binary, [
    '-s',
    `unix:${path}`,
    '-c',
    String(options.children ?? 1),
    ...(options.stderrOverFastCGI === false ? [] : ['-f']),
  ]);
  await waitForListener({ path }, { what: 'fcgiwrap', process: running });
  return { ...running, path, addressString: `unix:${path}` };
}

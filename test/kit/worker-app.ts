/** The FastCGI test application (test/fixtures/workers/app.ts): started as its own process, and asked for its counters. */
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { startProcess, waitForListener, type Address, type Cleanup, type RunningProcess } from './process.js';
import { RawFastCGIPeer } from './raw-fastcgi.js';
import { waitFor } from './wait.js';

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
  await waitForListener(address, { what: 'the FastCGI test app', process: running });
  return { ...running, address, pid: running.child.pid! };
}

/** The test app's counters (its /stats route; see test/fixtures/workers/app.ts). */
export interface AppStats {
  requests: number;
  aborted: number;
  completed: number;
  /** Bytes /stream and /forever wrote so far. */
  streamedBytes: number;
  /** Streams that wait for 'drain' now: backpressure reached the app. */
  waitingForDrain: number;
  pid: number;
  rss: number;
}

/** Asks the app for its counters over a FastCGI connection of its own, bypassing any front in between. */
export async function appStats(address: Address): Promise<AppStats> {
  const peer = await RawFastCGIPeer.connect(address);
  try {
    peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/stats' });
    await peer.waitForEnd(1);
    const stdout = peer.stdout(1).toString();
    return JSON.parse(stdout.slice(stdout.indexOf('\r\n\r\n') + 4)) as AppStats;
  } finally {
    peer.close();
  }
}

/**
 * While a client holds a response of `total` bytes from the app unread: waits
 * until the app is held up, its stream waiting for 'drain' with no more bytes
 * written between two looks (each look is a request the app answers, so its
 * event loop ran in between: had the reader taken more, the stream would have
 * written more), or until the app wrote everything (nothing held it up).
 * Calls `sample` at every look (to record memory while held).
 */
export function appHeldUp(address: Address, total: number, sample: () => void = () => {}): Promise<AppStats> {
  let previous = -1;
  return waitFor(async () => {
    sample();
    const now = await appStats(address);
    const stuck = now.waitingForDrain > 0 && now.streamedBytes === previous;
    previous = now.streamedBytes;
    return (stuck || now.streamedBytes >= total) && now;
  }, 'the app to be held up by backpressure (or to write the whole response)');
}

/**
 * One side of the client benchmark, run in its own process so the two
 * clients never share an event loop or a heap:
 *
 *   node bench/client-driver.mjs <gatehouse|gatehouse-defaults|gatehouse-close|fastcgi-client|fastcgi-client-16> <socket> <script> <in-flight> <seconds>
 *
 * Keeps <in-flight> hello.php requests outstanding for <seconds>, checks every
 * body, and prints one JSON line: requests, errors, requests/s, p50 and p99 ms.
 */
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const [implementation, socketPath, script, inFlightText, secondsText] = process.argv.slice(2);
const inFlight = Number(inFlightText);
const seconds = Number(secondsText);

const params = {
  GATEWAY_INTERFACE: 'CGI/1.1',
  SERVER_SOFTWARE: 'gatehouse-bench',
  SERVER_PROTOCOL: 'HTTP/1.1',
  SERVER_NAME: 'localhost',
  SERVER_ADDR: '127.0.0.1',
  SERVER_PORT: '80',
  REMOTE_ADDR: '127.0.0.1',
  REMOTE_PORT: '40000',
  REQUEST_METHOD: 'GET',
  REQUEST_URI: '/hello.php',
  SCRIPT_NAME: '/hello.php',
  SCRIPT_FILENAME: script,
  DOCUMENT_ROOT: '/',
  QUERY_STRING: '',
  CONTENT_TYPE: '',
  CONTENT_LENGTH: '',
  HTTP_HOST: 'localhost',
};

/** Each client as `send() -> Promise<Buffer>` (the whole STDOUT), plus close(). */
async function gatehouseClient(options) {
  const { FastCGIClient } = await import('../dist/src/fastcgi/client/index.js');
  const client = new FastCGIClient({ address: `unix:${socketPath}`, ...options });
  return {
    async send() {
      const response = client.request({ params });
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      const ended = new Promise((resolve, reject) => response.once('end', resolve).once('error', reject));
      await response.completion;
      await ended;
      return Buffer.concat(chunks);
    },
    close: () => client.close(),
  };
}

/**
 * npm fastcgi-client. By default it asks the application FCGI_GET_VALUES and
 * refuses requests beyond FCGI_MAX_CONNS (php-fpm says 4) with an error, so
 * requests past its limit wait in a queue here, as an application would have
 * to do. The "-16" variant skips the probe and allows 16 connections.
 */
async function npmFastcgiClient(sixteen) {
  const require = createRequire(import.meta.url);
  const connector = require('fastcgi-client');
  const client = connector(
    sixteen ? { sockFile: socketPath, skipCheckServer: true, maxConns: inFlight, maxReqs: inFlight } : { sockFile: socketPath },
  );
  await new Promise((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', reject);
  });
  const limit = sixteen ? inFlight : client._maxConns;
  let active = 0;
  const waiting = [];
  const acquire = () => {
    if (active >= limit) return new Promise((resolve) => waiting.push(resolve));
    active++;
    return Promise.resolve();
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };
  const once = () =>
    new Promise((resolve, reject) => {
      client.request(params, (error, request) => {
        if (error) return reject(error);
        const chunks = [];
        request.stdout.on('data', (chunk) => chunks.push(chunk));
        request.stdout.on('end', () => resolve(Buffer.concat(chunks)));
        request.stdout.on('error', reject);
        request.stderr.resume();
        request.stdin.end();
      });
    });
  return {
    limit,
    async send() {
      await acquire();
      try {
        return await once();
      } finally {
        release();
      }
    },
    close: async () => {},
  };
}

// php-fpm answers FCGI_GET_VALUES with FCGI_MPXS_CONNS only (no FCGI_MAX_CONNS), and each of its
// workers stays with a kept-alive connection until it closes: a keep-alive pool larger than
// pm.max_children leaves the extra connections waiting in the listen queue for ever. So the
// keep-alive client is given the pool size, as nginx's `keepalive` must be.
const poolSize = Number(process.env.BENCH_FPM_WORKERS ?? 4);
const client =
  implementation === 'gatehouse'
    ? await gatehouseClient({ maxConnections: poolSize })
    : implementation === 'gatehouse-defaults'
      ? await gatehouseClient({})
      : implementation === 'gatehouse-close'
        ? await gatehouseClient({ keepAlive: false })
        : implementation === 'fastcgi-client'
          ? await npmFastcgiClient(false)
          : implementation === 'fastcgi-client-16'
            ? await npmFastcgiClient(true)
            : (() => {
                throw new Error(`unknown client ${implementation}`);
              })();

const latencies = [];
let errors = 0;
let firstError = '';
let badBodies = 0;
let pending = 0;

async function loop(deadline) {
  while (performance.now() < deadline) {
    const start = performance.now();
    pending++;
    try {
      const body = await client.send();
      if (!body.toString('latin1').endsWith('\r\n\r\nhello\n')) {
        badBodies++;
        firstError ||= `unexpected body ${JSON.stringify(body.toString('latin1').slice(0, 200))}`;
      } else latencies.push(performance.now() - start);
    } catch (error) {
      errors++;
      firstError ||= String(error?.message ?? error);
    } finally {
      pending--;
    }
  }
}

/** Runs the loops until `deadline`; requests still unanswered 5 s later are reported as stalled, not waited for. */
async function phase(deadline) {
  const loops = Promise.all(Array.from({ length: inFlight }, () => loop(deadline)));
  const grace = new Promise((resolve) => setTimeout(resolve, deadline - performance.now() + 5000).unref());
  await Promise.race([loops, grace]);
  return pending;
}

// Warm-up: one second, not counted.
let stalled = await phase(performance.now() + 1000);
latencies.length = 0;
errors = 0;
badBodies = 0;

const start = performance.now();
const cpuBefore = process.cpuUsage();
if (stalled === 0) stalled = await phase(start + seconds * 1000);
const cpu = process.cpuUsage(cpuBefore);
const elapsed = Math.min((performance.now() - start) / 1000, seconds);
if (stalled === 0) await client.close();

latencies.sort((a, b) => a - b);
const percentile = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
process.stdout.write(
  `${JSON.stringify({
    implementation,
    requests: latencies.length,
    errors: errors + badBodies + stalled,
    firstError:
      stalled > 0
        ? `${stalled} of ${inFlight} requests in flight got no answer within 5 s after the end of the run${firstError ? `; ${firstError}` : ''}`
        : firstError,
    stalled,
    requestsPerSecond: latencies.length / elapsed,
    p50: percentile(50),
    p99: percentile(99),
    // CPU time of the client process per request (user + system): less sensitive to a busy machine than requests/s.
    cpuMicrosPerRequest: latencies.length > 0 ? (cpu.user + cpu.system) / latencies.length : NaN,
    clientConcurrency: client.limit ?? null,
  })}\n`,
);
process.exit(0);

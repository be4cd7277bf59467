/**
 * The FastCGI client against a C program built on libfcgi (Debian's
 * libfcgi-dev), compiled here with gcc and started by spawn-fcgi. libfcgi
 * answers a lone GET_VALUES only once another record follows, and states
 * FCGI_MAX_CONNS=1, FCGI_MAX_REQS=1, FCGI_MPXS_CONNS=0.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FastCGIClient, ErrorCode, type UpstreamError } from '../../src/fastcgi/client/index.js';
import { startSpawnFcgi } from '../kit/spawn-fcgi.js';
import type { Cleanup } from '../kit/process.js';

const repoRoot = new URL('../../../', import.meta.url).pathname;
const source = join(repoRoot, 'test/fixtures/fcgi-c/echo.c');
let program = '';

before(() => {
  // Built for this run: the program links against the machine's libfcgi, so a prebuilt binary would prove nothing.
  if (!existsSync('/usr/bin/gcc')) throw new Error('gcc is not installed; .ci/run installs it (apt-get install gcc)');
  if (!existsSync('/usr/include/fcgiapp.h'))
    throw new Error('libfcgi-dev is not installed (no /usr/include/fcgiapp.h); .ci/run installs it (apt-get install libfcgi-dev)');
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-fcgi-c-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  program = join(dir, 'fcgi-echo');
  try {
    execFileSync('gcc', ['-O2', '-Wall', '-o', program, source, '-lfcgi'], { stdio: 'pipe' });
  } catch (error) {
    throw new Error(`compiling ${source} with gcc -lfcgi failed: ${String((error as { stderr?: Buffer }).stderr ?? error)}`);
  }
});

function newClient(t: Cleanup, address: string, options: Partial<ConstructorParameters<typeof FastCGIClient>[0]> = {}): FastCGIClient {
  const client = new FastCGIClient({ address, ...options });
  t.after(() => client.close());
  return client;
}

function params(method: string, query = '', contentLength?: number): Record<string, string> {
  return {
    REQUEST_METHOD: method,
    QUERY_STRING: query,
    CONTENT_LENGTH: contentLength === undefined ? '' : String(contentLength),
    SCRIPT_NAME: '/echo',
  };
}

test('libfcgi: GET with a query, and the capability probe answered', async (t) => {
  const app = await startSpawnFcgi(t, { program });
  const client = newClient(t, app.addressString);
  assert.deepEqual(await client.capabilities(), { maxConns: 1, maxReqs: 1, multiplexes: false });
  const result = await client.fetchAll({ params: params('GET', 'a=1&b=2') });
  assert.equal(result.stdout.toString(), 'Content-Type: text/plain\r\n\r\nmethod=GET\nquery=a=1&b=2\nbody-length=0\n');
  assert.equal(result.appStatus, 0);
});

test('libfcgi: a 2 MB POST body comes back whole; stderr arrives as events', async (t) => {
  const app = await startSpawnFcgi(t, { program });
  const client = newClient(t, app.addressString);
  const body = Buffer.alloc(2 * 1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
  const response = client.request({ params: params('POST', 'stderr=look-here', body.length), body });
  const stderr: Buffer[] = [];
  response.on('stderr', (chunk: Buffer) => stderr.push(chunk));
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  await response.completion;
  const stdout = Buffer.concat(chunks);
  const prefix = `Content-Type: text/plain\r\n\r\nmethod=POST\nquery=stderr=look-here\nbody-length=${body.length}\n`;
  assert.equal(stdout.subarray(0, prefix.length).toString(), prefix);
  assert.ok(stdout.subarray(prefix.length).equals(body), 'the body came back different');
  assert.equal(Buffer.concat(stderr).toString(), 'look-here\n');
});

test('libfcgi: requests reuse the kept-alive connection; MAX_CONNS=1 is honoured', async (t) => {
  const app = await startSpawnFcgi(t, { program });
  const client = newClient(t, app.addressString);
  await client.capabilities();
  const results = await Promise.all(Array.from({ length: 8 }, (_, i) => client.fetchAll({ params: params('GET', `n=${i}`) })));
  for (const [i, result] of results.entries()) assert.match(result.stdout.toString(), new RegExp(`query=n=${i}\n`));
  assert.equal(client.stats.opened, 1, 'the application said FCGI_MAX_CONNS=1');
  assert.equal(client.stats.connectionCap, 1, 'the cap a status page shows is the one the pool applies');
});

test('libfcgi program killed mid-response: UPSTREAM_RESET', async (t) => {
  const app = await startSpawnFcgi(t, { program });
  const client = newClient(t, app.addressString, { probe: false });
  const response = client.request({ params: params('GET', 'big=100000000') });
  response.on('error', () => {});
  // Read one chunk, then stop reading: the program blocks on a full socket until it is killed.
  await new Promise((resolve) => response.once('data', resolve));
  response.pause();
  app.kill('SIGKILL');
  response.resume();
  await assert.rejects(response.completion, (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_RESET);
    assert.ok(error.message.startsWith(app.addressString), error.message);
    return true;
  });
});

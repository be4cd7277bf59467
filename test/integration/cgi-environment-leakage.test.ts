/**
 * Environment leakage and injection (issue 16 item 7). A CGI script sees the
 * meta-variables, PATH, and what PassEnv and SetEnv name: never the server's
 * own environment, where services keep their secrets (the test puts one
 * there). Shellshock-shaped values (CVE-2014-6271: `() { :; }; cmd` in any
 * variable, and a function exported as BASH_FUNC_name%%) pass through as
 * data, byte for byte, and no other variable appears: request data chooses no
 * variable name beyond HTTP_ and letters, digits and underscores. Whether a
 * script's interpreter then runs what a variable holds is the script's risk,
 * as in Apache (documented in the SECURITY sections of the manuals).
 *
 * Paths: `serve` with the cgid daemon, posix_spawn in the front and
 * child_process.spawn; the cgi() library; `gatehouse cgid --fastcgi`.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cgi } from '../../src/cgi/handler.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, startGatehouse } from '../kit/serve.js';

const fixtures = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));

const SECRET = 'server-secret-7f3a9c';
/** What a service's environment holds: a secret, and names a script must not see either. */
const SERVER_ENVIRONMENT = { GATEHOUSE_TEST_SECRET: SECRET, DATABASE_URL: `postgres://app:${SECRET}@db/app`, PASSED_VAR: 'passed' };

const SHELLSHOCK = '() { :; }; echo SHELLSHOCKED > /tmp/gatehouse-shellshock';
/** Request headers carrying Shellshock values, and names shaped like bash's exported functions. */
const HOSTILE_HEADERS =
  `X-Bash: ${SHELLSHOCK}\r\n` +
  `Cookie: x=${SHELLSHOCK}\r\n` +
  `BASH_FUNC_x%%: ${SHELLSHOCK}\r\n` +
  `BASH-FUNC-y%%: ${SHELLSHOCK}\r\n` +
  `X_Under: ${SHELLSHOCK}\r\n`;

/** The variables a script may have: RFC 3875 and Apache's meta-variables, PATH, PassEnv and SetEnv names. */
const ALLOWED = new Set([
  'AUTH_TYPE',
  'CONTENT_LENGTH',
  'CONTENT_TYPE',
  'CONTEXT_DOCUMENT_ROOT',
  'CONTEXT_PREFIX',
  'DOCUMENT_ROOT',
  'GATEWAY_INTERFACE',
  'HTTPS',
  'PATH',
  'PATH_INFO',
  'PATH_TRANSLATED',
  'QUERY_STRING',
  'REMOTE_ADDR',
  'REMOTE_HOST',
  'REMOTE_PORT',
  'REMOTE_USER',
  'REQUEST_METHOD',
  'REQUEST_SCHEME',
  'REQUEST_URI',
  'SCRIPT_FILENAME',
  'SCRIPT_NAME',
  'SERVER_ADDR',
  'SERVER_ADMIN',
  'SERVER_NAME',
  'SERVER_PORT',
  'SERVER_PROTOCOL',
  'SERVER_SIGNATURE',
  'SERVER_SOFTWARE',
  'PASSED_VAR',
  'SET_VAR',
]);

function hexDump(body: Buffer): Map<string, Buffer> {
  const variables = new Map<string, Buffer>();
  for (const line of body.toString('latin1').split('\n')) {
    const match = /^([^=]+)=([0-9a-f]*)$/.exec(line);
    if (match) variables.set(match[1]!, Buffer.from(match[2]!, 'hex'));
  }
  return variables;
}

async function get(port: number, path: string, extraHeaders: string): Promise<Map<string, Buffer>> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(`GET ${path} HTTP/1.1\r\nHost: leak.test\r\n${extraHeaders}Connection: close\r\n\r\n`);
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  const reply = Buffer.concat(chunks);
  const end = reply.indexOf('\r\n\r\n');
  assert.match(reply.subarray(0, end).toString('latin1'), /^HTTP\/1\.1 200 /);
  return hexDump(reply.subarray(end + 4));
}

/** The checks every path shares: only allowed names, the secret nowhere, Shellshock values as data, no extra variable. */
function assertEnvironment(where: string, plain: Map<string, Buffer>, hostile: Map<string, Buffer>, expectSetEnv = true): void {
  for (const variables of [plain, hostile]) {
    for (const [name, value] of variables) {
      assert.ok(ALLOWED.has(name) || /^HTTP_[A-Z0-9_]+$/.test(name), `${where}: unexpected variable ${name}`);
      assert.ok(!value.toString('latin1').includes(SECRET), `${where}: the server's secret reached ${name}`);
    }
    assert.equal(variables.has('GATEHOUSE_TEST_SECRET'), false, where);
    assert.equal(variables.has('DATABASE_URL'), false, where);
  }
  if (expectSetEnv) {
    assert.equal(plain.get('PASSED_VAR')?.toString(), 'passed', `${where}: PassEnv`);
    assert.equal(plain.get('SET_VAR')?.toString(), 'set', `${where}: SetEnv`);
  }
  // The Shellshock values arrive exactly as sent.
  assert.equal(hostile.get('HTTP_X_BASH')?.toString('latin1'), SHELLSHOCK, `${where}: HTTP_X_BASH`);
  assert.equal(hostile.get('HTTP_COOKIE')?.toString('latin1'), `x=${SHELLSHOCK}`, `${where}: HTTP_COOKIE`);
  // And nothing else appears: no BASH_FUNC_*, no name from X_Under (Apache drops names with '_').
  const added = [...hostile.keys()].filter((name) => !plain.has(name)).sort();
  assert.deepEqual(added, ['HTTP_COOKIE', 'HTTP_X_BASH'], `${where}: variables added by the hostile headers`);
}

function cgiBinIn(dir: string): string {
  const cgiBin = join(dir, 'cgi-bin');
  mkdirSync(cgiBin, { recursive: true });
  copyFileSync(join(fixtures, 'hexenv.pl'), join(cgiBin, 'hexenv.pl'));
  chmodSync(join(cgiBin, 'hexenv.pl'), 0o755);
  return cgiBin;
}

async function checkServe(t: TestContext, mode: string): Promise<void> {
  const dir = tempDir(t, `gatehouse-leak-${mode}-`);
  const cgiBin = cgiBinIn(dir);
  writeFileSync(
    join(dir, 'gatehouse.toml'),
    `cgi-bin = "${cgiBin}"
cgi-spawn = "${mode}"
runtime-dir = "${join(dir, 'run')}"
error-log = "error.log"
access-log = "off"
pass-env = ["PASSED_VAR", "GATEHOUSE_NOT_SET"]

[set-env]
SET_VAR = "set"
`,
  );
  const serve = await startGatehouse(t, 'serve', ['--config', join(dir, 'gatehouse.toml')], {
    cwd: dir,
    env: SERVER_ENVIRONMENT,
  });
  const plain = await get(serve.port, '/cgi-bin/hexenv.pl', '');
  const hostile = await get(serve.port, '/cgi-bin/hexenv.pl', HOSTILE_HEADERS);
  assertEnvironment(`serve ${mode}`, plain, hostile);
  assert.equal(plain.has('GATEHOUSE_NOT_SET'), false, 'a PassEnv name the server does not have is left out');
}

for (const mode of ['daemon', 'in-process', 'fork']) {
  test(`serve (cgi-spawn ${mode}): the script never sees the server's environment; Shellshock values pass as data, nothing else appears`, async (t) => {
    await checkServe(t, mode);
  });
}

test("the cgi() library: only PATH and PassEnv come from the process's environment", async (t) => {
  const dir = tempDir(t, 'gatehouse-leak-lib-');
  const cgiBin = cgiBinIn(dir);
  const saved = { ...process.env };
  Object.assign(process.env, SERVER_ENVIRONMENT);
  t.after(() => {
    for (const name of Object.keys(SERVER_ENVIRONMENT)) if (!(name in saved)) delete process.env[name];
  });
  const handler = cgi({
    documentRoot: dir,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: cgiBin }],
    passEnv: ['PASSED_VAR'],
    setEnv: { SET_VAR: 'set' },
    errorLog: () => {},
  });
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as net.AddressInfo).port;
  assertEnvironment('cgi()', await get(port, '/cgi-bin/hexenv.pl', ''), await get(port, '/cgi-bin/hexenv.pl', HOSTILE_HEADERS));
});

test("cgid --fastcgi: the script gets the web server's PARAMS and PATH, never the face's own environment; Shellshock values as data", async (t) => {
  const dir = tempDir(t, 'gatehouse-leak-face-');
  const cgiBin = cgiBinIn(dir);
  const socket = join(dir, 'face.sock');
  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`])], {
    env: { ...process.env, ...SERVER_ENVIRONMENT },
  });
  await waitForListener({ path: socket }, { process: face, timeoutMs: 20_000 });
  const peer = await RawFastCGIPeer.connect({ path: socket });
  t.after(() => peer.close());
  const base = { SCRIPT_FILENAME: join(cgiBin, 'hexenv.pl'), REQUEST_METHOD: 'GET', GATEWAY_INTERFACE: 'CGI/1.1' };
  peer.sendRequest(1, base, { keepConn: true });
  await peer.waitForEnd(1, { timeoutMs: 20_000 });
  peer.sendRequest(2, { ...base, HTTP_X_BASH: SHELLSHOCK, HTTP_COOKIE: `x=${SHELLSHOCK}` }, { keepConn: true });
  await peer.waitForEnd(2, { timeoutMs: 20_000 });
  const body = (id: number) => {
    const text = peer.stdout(id);
    return text.subarray(text.indexOf('\r\n\r\n') + 4);
  };
  const plain = hexDump(body(1));
  const hostile = hexDump(body(2));
  assert.deepEqual([...plain.keys()].sort(), ['GATEWAY_INTERFACE', 'PATH', 'REQUEST_METHOD', 'SCRIPT_FILENAME']);
  assertEnvironment('cgid --fastcgi', plain, hostile, false);
});

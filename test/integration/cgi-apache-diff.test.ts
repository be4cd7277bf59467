/**
 * Differential test: the same requests to Apache httpd 2.4 (event MPM +
 * mod_cgid, started here on loopback) and to cgi(options) behind node:http,
 * both running the same scripts from test/fixtures/cgi-bin. The scripts'
 * environments must match except for what must differ (software, ports,
 * process ids), and statuses and script headers must match.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cgi } from '../../src/cgi/handler.js';
import { waitForCgidDaemon } from '../kit/apache.js';
import { freePort, requireProgram, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { parseRawResponse, rawRequest } from '../kit/raw-http.js';

const fixtures = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url)).replace(/\/$/, '');

/** Variables that must differ between the two servers. */
const EXPECTED_TO_DIFFER = new Set([
  'SERVER_SOFTWARE',
  'SERVER_PORT',
  'REMOTE_PORT',
  'HTTP_HOST',
  'REDIRECT_SERVER_SOFTWARE',
  'REDIRECT_SERVER_PORT',
  'REDIRECT_REMOTE_PORT',
  'REDIRECT_HTTP_HOST',
]);

/**
 * Apache httpd with mod_cgid. (test/kit/apache.ts loads mod_unixd and
 * mod_log_config, which Debian's apache2 has built in, so it cannot start;
 * this local starter stands in until the kit is fixed.)
 */
async function startApacheCgid(t: TestContext, directives: string): Promise<number> {
  const binary = requireProgram('/usr/sbin/apache2');
  const root = tempDir(t, 'gatehouse-apache-');
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'run'));
  const port = await freePort();
  const modules = ['mpm_event', 'authz_core', 'alias', 'mime', 'cgid'];
  const config = `ServerRoot ${root}
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${root}/run/httpd.pid
DefaultRuntimeDir ${root}/run
Mutex file:${root}/run default
ErrorLog ${root}/error.log
LogLevel info
${process.getuid?.() === 0 ? 'User www-data\nGroup www-data' : ''}
${modules.map((name) => `LoadModule ${name}_module /usr/lib/apache2/modules/mod_${name}.so`).join('\n')}
TypesConfig /etc/mime.types
ScriptSock ${root}/run/cgisock
${directives}
`;
  writeFileSync(join(root, 'httpd.conf'), config);
  const running = startProcess(t, binary, ['-f', join(root, 'httpd.conf'), '-DFOREGROUND'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  await waitForListener({ host: '127.0.0.1', port }, { what: 'Apache httpd', process: running });
  await waitForCgidDaemon(join(root, 'run'), running);
  return port;
}

async function servers(t: TestContext) {
  const docroot = tempDir(t, 'gatehouse-diff-www-');
  chmodSync(docroot, 0o755);
  mkdirSync(join(docroot, 'sub'));
  writeFileSync(join(docroot, 'index.html'), 'hi');
  const apache = await startApacheCgid(
    t,
    `DocumentRoot ${docroot}
ScriptAlias /cgi-bin/ ${fixtures}/
<Directory ${fixtures}>
  Require all granted
</Directory>
<Directory ${docroot}>
  Require all granted
</Directory>`,
  );
  const handler = cgi({
    documentRoot: docroot,
    scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: `${fixtures}/` }],
    serverName: '127.0.0.1',
    errorLog: () => {},
  });
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { apache, ours: (server.address() as net.AddressInfo).port };
}

const envRequests: Array<[string, string]> = [
  [
    'GET with query and encoded PATH_INFO',
    'GET /cgi-bin/env.pl/a%20b/%C3%A9?x=1&y=%41 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n',
  ],
  ['search query as argv', 'GET /cgi-bin/env.pl?one+two%21 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n'],
  [
    'POST with a body',
    'POST /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2',
  ],
  [
    'underscores, duplicates, Proxy, Authorization, cookies',
    'GET /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nX_Under: 1\r\nX-Dup: a\r\nX-Dup: b\r\nProxy: http://evil:1\r\nAuthorization: Basic dTpw\r\nAccept: text/html\r\nConnection: close\r\n\r\n',
  ],
  ['two Cookie headers', 'GET /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n'],
  [
    'merged slashes and a trailing slash in PATH_INFO',
    'GET /cgi-bin//env.pl/x//y/ HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n',
  ],
  ['Host with upper case and no port', 'GET /cgi-bin/env.pl HTTP/1.1\r\nHost: LocalHost\r\nConnection: close\r\n\r\n'],
  [
    'raw UTF-8 and Latin-1 bytes in header values',
    'GET /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nX-Utf8: caf\u00c3\u00a9\r\nX-Latin1: caf\u00e9\r\nConnection: close\r\n\r\n',
  ],
  ['Latin-1 byte in PATH_INFO', 'GET /cgi-bin/env.pl/caf%E9 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n'],
  ['HTTP/1.0 without Host', 'GET /cgi-bin/env.pl HTTP/1.0\r\n\r\n'],
  ['local redirect', 'GET /cgi-bin/redirect.sh?orig=1 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n'],
];

test('the script environment matches Apache mod_cgid for the same requests', async (t) => {
  const { apache, ours } = await servers(t);
  const mismatches: string[] = [];
  for (const [label, request] of envRequests) {
    const [fromApache, fromUs] = await Promise.all([rawRequest(apache, request), rawRequest(ours, request)]);
    const a = parseRawResponse(fromApache);
    const b = parseRawResponse(fromUs);
    const context = `${label}\n--- apache:\n${fromApache.slice(0, 2000)}\n--- gatehouse:\n${fromUs.slice(0, 2000)}`;
    assert.equal(b.status.split(' ')[0], a.status.split(' ')[0], `status: ${context}`);
    let envA: { env: Record<string, string>; argv: string[] };
    let envB: { env: Record<string, string>; argv: string[] };
    try {
      envA = JSON.parse(a.body);
      envB = JSON.parse(b.body);
    } catch {
      assert.fail(`a body is not the env dump: ${context}`);
    }
    assert.deepEqual(envB.argv, envA.argv, `${label}: argv`);
    if (process.env.CGI_DIFF_DEBUG) console.log(label, JSON.stringify(envA), JSON.stringify(envB));
    for (const name of new Set([...Object.keys(envA.env), ...Object.keys(envB.env)])) {
      if (EXPECTED_TO_DIFFER.has(name)) continue;
      // Deliberate: RFC 6265 5.4 separates cookies with "; ". Apache's ", " makes the second header's first cookie part of the first header's last value.
      if (label === 'two Cookie headers' && name === 'HTTP_COOKIE') {
        assert.equal(envA.env[name], 'a=1, b=2');
        assert.equal(envB.env[name], 'a=1; b=2');
        continue;
      }
      if (envA.env[name] !== envB.env[name])
        mismatches.push(`${label}: ${name}: apache=${JSON.stringify(envA.env[name])} gatehouse=${JSON.stringify(envB.env[name])}`);
    }
  }
  assert.deepEqual(mismatches, []);
});

test('statuses and script headers match Apache for status, nph, malformed and redirect scripts', async (t) => {
  const { apache, ours } = await servers(t);
  for (const script of ['status.sh', 'client-redirect.sh', 'malformed.sh', 'nothing.sh', 'error-status.sh']) {
    const request = `GET /cgi-bin/${script} HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n`;
    const [fromApache, fromUs] = await Promise.all([rawRequest(apache, request), rawRequest(ours, request)]);
    const a = parseRawResponse(fromApache);
    const b = parseRawResponse(fromUs);
    assert.equal(b.status, a.status, `${script}: status line`);
    for (const name of ['set-cookie', 'location', 'content-type']) {
      assert.deepEqual(b.headers.get(name), a.headers.get(name), `${script}: ${name}`);
    }
    if (a.status.startsWith('2') || a.status.startsWith('404') || a.status.startsWith('503'))
      assert.equal(b.body, a.body, `${script}: body`);
  }
  const nph = 'GET /cgi-bin/nph-raw.sh HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n';
  const [nphApache, nphUs] = await Promise.all([rawRequest(apache, nph), rawRequest(ours, nph)]);
  assert.equal(nphUs, nphApache);
});

/**
 * The proof, at the command a user runs: the same requests to Apache
 * httpd 2.4 (event MPM + mod_cgid, started here on loopback) and to
 * `gatehouse serve` (the CLI, scripts through its cgid daemon), both running
 * the same env-dump script. Environments match except for what must differ
 * (software, ports, addresses); statuses and headers match.
 * (test/integration/cgi-apache-diff.test.ts compares the cgi() handler alone.)
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { startApache } from '../kit/apache.js';
import { parseRawResponse, rawRequest } from '../kit/raw-http.js';
import { CGI_FIXTURES } from '../kit/paths.js';
import { startGatehouse } from '../kit/serve.js';

const SCRIPTS = CGI_FIXTURES.replace(/\/$/, '');
const MUST_DIFFER = new Set(['SERVER_SOFTWARE', 'SERVER_PORT', 'REMOTE_PORT', 'HTTP_HOST', 'SERVER_SIGNATURE']);
const withRedirect = (names: Set<string>) => new Set([...names, ...[...names].map((name) => `REDIRECT_${name}`)]);
const IGNORED = withRedirect(MUST_DIFFER);

async function bothServers(t: TestContext): Promise<{ apache: number; gatehouse: number }> {
  const docroot = tempDir(t, 'gatehouse-serve-diff-');
  chmodSync(docroot, 0o755);
  mkdirSync(join(docroot, 'sub'));
  writeFileSync(join(docroot, 'index.html'), 'hi');
  const apache = await startApache(t, {
    modules: ['cgid'],
    config: `DocumentRoot ${docroot}
ScriptSock cgisock
ScriptAlias /cgi-bin/ ${SCRIPTS}/
<Directory ${SCRIPTS}>
  Require all granted
</Directory>
<Directory ${docroot}>
  Require all granted
</Directory>`,
  });
  const gatehouse = await startGatehouse(t, 'serve', [
    '--docroot',
    docroot,
    '--cgi-bin',
    SCRIPTS,
    '--server-name',
    '127.0.0.1',
    '--access-log',
    'off',
    '--error-log',
    join(docroot, '..', `${docroot.split('/').pop()}-error.log`),
  ]);
  return { apache: apache.port, gatehouse: gatehouse.port };
}

const ENV_REQUESTS: Array<[string, string]> = [
  [
    'GET with a query and encoded PATH_INFO',
    'GET /cgi-bin/env.pl/a%20b/%C3%A9/x%3Fy?x=1&y=%41 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n',
  ],
  [
    'POST with a body',
    'POST /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2',
  ],
  ['HEAD', 'HEAD /cgi-bin/env.pl/h HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n'],
  [
    'headers with underscores, duplicates and Proxy',
    'GET /cgi-bin/env.pl HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nX_Forwarded_For: 6.6.6.6\r\nRemote_User: admin\r\nX-Dup: a\r\nX-Dup: b\r\nAccept: text/html\r\nAccept: text/plain\r\nProxy: http://evil.example:3128\r\nConnection: close\r\n\r\n',
  ],
  ['a local redirect', 'GET /cgi-bin/redirect.sh?orig=1 HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n'],
  ['HTTP/1.0 without Host', 'GET /cgi-bin/env.pl HTTP/1.0\r\n\r\n'],
];

test('gatehouse serve gives scripts the environment Apache mod_cgid gives them', async (t) => {
  const { apache, gatehouse } = await bothServers(t);
  const mismatches: string[] = [];
  for (const [label, request] of ENV_REQUESTS) {
    const [fromApache, fromGatehouse] = await Promise.all([rawRequest(apache, request), rawRequest(gatehouse, request)]);
    const a = parseRawResponse(fromApache);
    const g = parseRawResponse(fromGatehouse);
    const context = `${label}\n--- apache:\n${fromApache.slice(0, 1500)}\n--- gatehouse serve:\n${fromGatehouse.slice(0, 1500)}`;
    assert.equal(g.status, a.status, `status line: ${context}`);
    assert.deepEqual(g.headers.get('content-type'), a.headers.get('content-type'), `Content-Type: ${context}`);
    if (label === 'HEAD') {
      assert.equal(g.body, '', 'HEAD: no body');
      assert.equal(a.body, '');
      continue;
    }
    const bodyA = a.body;
    const bodyG = g.body;
    let envA: Record<string, string>;
    let envG: Record<string, string>;
    try {
      envA = (JSON.parse(bodyA) as { env: Record<string, string> }).env;
      envG = (JSON.parse(bodyG) as { env: Record<string, string> }).env;
    } catch {
      assert.fail(`a body is not the env dump: ${context}`);
    }
    for (const name of new Set([...Object.keys(envA), ...Object.keys(envG)])) {
      if (IGNORED.has(name)) continue;
      if (envA[name] !== envG[name])
        mismatches.push(`${label}: ${name}: apache=${JSON.stringify(envA[name])} gatehouse=${JSON.stringify(envG[name])}`);
    }
  }
  assert.deepEqual(mismatches, []);
});

test('gatehouse serve answers status, redirect, NPH and malformed scripts as Apache does', async (t) => {
  const { apache, gatehouse } = await bothServers(t);
  for (const script of ['status.sh', 'client-redirect.sh', 'malformed.sh', 'nothing.sh', 'error-status.sh', 'no-such-script.sh']) {
    const request = `GET /cgi-bin/${script} HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n`;
    const [fromApache, fromGatehouse] = await Promise.all([rawRequest(apache, request), rawRequest(gatehouse, request)]);
    const a = parseRawResponse(fromApache);
    const g = parseRawResponse(fromGatehouse);
    const context = `${script}\n--- apache:\n${fromApache.slice(0, 1000)}\n--- gatehouse serve:\n${fromGatehouse.slice(0, 1000)}`;
    assert.equal(g.status, a.status, `status line: ${context}`);
    for (const name of ['set-cookie', 'location', 'content-type'])
      assert.deepEqual(g.headers.get(name), a.headers.get(name), `${name}: ${context}`);
    // Error pages are each server's own; what a script wrote must arrive unchanged.
    if (a.status.startsWith('2')) assert.equal(g.body, a.body, `body: ${context}`);
  }
  const nph = 'GET /cgi-bin/nph-raw.sh HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n';
  const [nphApache, nphGatehouse] = await Promise.all([rawRequest(apache, nph), rawRequest(gatehouse, nph)]);
  assert.equal(nphGatehouse, nphApache, "an nph- script's output passes through byte for byte");
});

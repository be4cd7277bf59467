/** The FastCGI client against fcgiwrap running a shell CGI script. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { startFcgiwrap } from '../kit/fcgiwrap.js';

const script = join(new URL('../../../', import.meta.url).pathname, 'test/fixtures/cgi-bin-client/echo.sh');

function params(query: string, contentLength?: number): Record<string, string> {
  return {
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_METHOD: contentLength === undefined ? 'GET' : 'POST',
    SCRIPT_FILENAME: script,
    SCRIPT_NAME: '/echo.sh',
    QUERY_STRING: query,
    CONTENT_LENGTH: contentLength === undefined ? '' : String(contentLength),
  };
}

test('fcgiwrap: a shell CGI script answers, with its stderr as events', async (t) => {
  const wrap = await startFcgiwrap(t);
  const client = new FastCGIClient({ address: wrap.addressString });
  t.after(() => client.close());
  const result = await client.fetchAll({ params: params('x=1') });
  assert.equal(result.stdout.toString(), 'Content-Type: text/plain\r\nX-Script: echo.sh\r\n\r\nmethod=GET\nquery=x=1\ncontent-length=\n');
  assert.match(result.stderr.toString(), /echo\.sh says hello on stderr/);
  assert.equal(result.protocolStatus, 0);
  const failed = await client.fetchAll({ params: params('exit=3') });
  // fcgiwrap ends every request with appStatus 0, whatever the script's exit code (checked with fcgiwrap 1.1.0).
  assert.equal(failed.appStatus, 0);
  assert.match(failed.stdout.toString(), /query=exit=3\n/);
});

test('fcgiwrap: a POST body reaches the script and comes back', async (t) => {
  const wrap = await startFcgiwrap(t);
  const client = new FastCGIClient({ address: wrap.addressString });
  t.after(() => client.close());
  const body = Buffer.from('line one\nline two\n'.repeat(5000));
  const result = await client.fetchAll({ params: params('', body.length), body });
  const text = result.stdout.toString();
  assert.ok(
    text.startsWith(`Content-Type: text/plain\r\nX-Script: echo.sh\r\n\r\nmethod=POST\nquery=\ncontent-length=${body.length}\n`),
    text.slice(0, 200),
  );
  assert.ok(result.stdout.subarray(result.stdout.length - body.length).equals(body));
});

test('fcgiwrap: several requests in a row over kept-alive connections', async (t) => {
  const wrap = await startFcgiwrap(t, { children: 2 });
  const client = new FastCGIClient({ address: wrap.addressString });
  t.after(() => client.close());
  for (let i = 0; i < 5; i++) {
    const result = await client.fetchAll({ params: params(`n=${i}`) });
    assert.match(result.stdout.toString(), new RegExp(`query=n=${i}\n`));
  }
  assert.equal(client.stats.opened, 1, 'fcgiwrap honours FCGI_KEEP_CONN: one connection for five requests');
});

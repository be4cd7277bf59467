import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  buildEnvironment,
  environmentBytes,
  environmentRecord,
  environmentValue,
  parseHostHeader,
  type CgiRequestDescription,
  type EnvironmentPolicy,
} from '../../src/cgi/environment.js';
import { requestFromEnvironment } from '../../src/cgi/request-from-env.js';
import { encodeNameValuePairs, decodeNameValuePairs } from '../../src/fastcgi/name-value.js';

function describe(overrides: Partial<CgiRequestDescription> = {}): CgiRequestDescription {
  return {
    method: 'GET',
    target: '/cgi-bin/env.cgi/a%20b?x=1&y=%41',
    httpVersion: '1.1',
    headers: [
      ['Host', 'Example.COM:8080'],
      ['User-Agent', 'test'],
    ],
    remoteAddress: '127.0.0.1',
    remotePort: 50000,
    localAddress: '127.0.0.1',
    localPort: 8080,
    tls: false,
    scriptName: '/cgi-bin/env.cgi',
    scriptFilename: '/srv/cgi-bin/env.cgi',
    pathInfo: '/a b',
    documentRoot: '/srv/www',
    contextPrefix: '/cgi-bin/',
    contextDocumentRoot: '/srv/cgi-bin/',
    ...overrides,
  };
}

const policy: EnvironmentPolicy = {
  serverName: 'configured.example',
  inheritedEnvironment: { PATH: '/usr/bin:/bin', SECRET: 'x', TZ: 'UTC' },
};

test('the RFC 3875 and Apache variables of a GET with PATH_INFO and a query', () => {
  const env = environmentRecord(buildEnvironment(describe(), policy));
  assert.deepEqual(
    { ...env },
    {
      HTTP_HOST: 'Example.COM:8080',
      HTTP_USER_AGENT: 'test',
      PATH: '/usr/bin:/bin',
      SERVER_SIGNATURE: '',
      SERVER_SOFTWARE: 'gatehouse',
      SERVER_NAME: 'example.com',
      SERVER_ADDR: '127.0.0.1',
      SERVER_PORT: '8080',
      REMOTE_ADDR: '127.0.0.1',
      DOCUMENT_ROOT: '/srv/www',
      REQUEST_SCHEME: 'http',
      CONTEXT_PREFIX: '/cgi-bin/',
      CONTEXT_DOCUMENT_ROOT: '/srv/cgi-bin/',
      SERVER_ADMIN: '[no address given]',
      SCRIPT_FILENAME: '/srv/cgi-bin/env.cgi',
      REMOTE_PORT: '50000',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: 'GET',
      QUERY_STRING: 'x=1&y=%41',
      REQUEST_URI: '/cgi-bin/env.cgi/a%20b?x=1&y=%41',
      SCRIPT_NAME: '/cgi-bin/env.cgi',
      PATH_INFO: '/a b',
      PATH_TRANSLATED: '/srv/www/a b',
    },
  );
  assert.equal(Object.getPrototypeOf(env), null);
});

test('the server environment is an allow-list: only PATH and PassEnv names reach the script', () => {
  const env = environmentRecord(buildEnvironment(describe(), { ...policy, passEnv: ['TZ', 'NOT_SET', 'bad name'] }));
  assert.equal(env.TZ, 'UTC');
  assert.equal(env.SECRET, undefined);
  assert.equal('NOT_SET' in env, false);
  const noPath = environmentRecord(buildEnvironment(describe(), { serverName: 'x' }));
  assert.equal(noPath.PATH, '/usr/local/bin:/usr/bin:/bin');
});

test('httpoxy: a Proxy header never becomes HTTP_PROXY', () => {
  const env = environmentRecord(
    buildEnvironment(
      describe({
        headers: [
          ['Proxy', 'http://evil:1'],
          ['proxy', 'x'],
        ],
      }),
      policy,
    ),
  );
  assert.equal(env.HTTP_PROXY, undefined);
});

test('header names with underscores or other characters are dropped, as Apache 2.4 does', () => {
  const env = environmentRecord(
    buildEnvironment(
      describe({
        headers: [
          ['X_Forwarded_For', '6.6.6.6'],
          ['Remote_User', 'admin'],
          ['X-Forwarded-For', '1.2.3.4'],
          ['X.Dot', 'a'],
          ['X-Ok-9', 'b'],
        ],
      }),
      policy,
    ),
  );
  assert.equal(env.HTTP_X_FORWARDED_FOR, '1.2.3.4');
  assert.equal(env.HTTP_X_OK_9, 'b');
  assert.equal(env.HTTP_REMOTE_USER, undefined);
  assert.equal(env.REMOTE_USER, undefined);
  assert.equal(Object.keys(env).filter((name) => name.includes('DOT')).length, 0);
});

test('Authorization reaches the script only with passAuthorization (CGIPassAuth)', () => {
  const request = describe({
    headers: [
      ['Authorization', 'Basic dTpw'],
      ['Proxy-Authorization', 'Basic eDp5'],
    ],
  });
  const hidden = environmentRecord(buildEnvironment(request, policy));
  assert.equal(hidden.HTTP_AUTHORIZATION, undefined);
  assert.equal(hidden.HTTP_PROXY_AUTHORIZATION, undefined);
  const passed = environmentRecord(buildEnvironment(request, { ...policy, passAuthorization: true }));
  assert.equal(passed.HTTP_AUTHORIZATION, 'Basic dTpw');
  assert.equal(passed.HTTP_PROXY_AUTHORIZATION, 'Basic eDp5');
});

test('repeated headers are joined with ", ", cookies with "; ", names case-insensitively', () => {
  const env = environmentRecord(
    buildEnvironment(
      describe({
        headers: [
          ['Accept', 'text/html'],
          ['Cookie', 'a=1'],
          ['accept', 'text/plain'],
          ['COOKIE', 'b=2; c=3'],
        ],
      }),
      policy,
    ),
  );
  assert.equal(env.HTTP_ACCEPT, 'text/html, text/plain');
  assert.equal(env.HTTP_COOKIE, 'a=1; b=2; c=3');
});

test('Content-Type and Content-Length become CONTENT_*, not HTTP_*; a spooled length overrides the header', () => {
  const request = describe({
    method: 'POST',
    headers: [
      ['Content-Type', 'text/plain'],
      ['Content-Length', '5'],
    ],
  });
  const env = environmentRecord(buildEnvironment(request, policy));
  assert.equal(env.CONTENT_TYPE, 'text/plain');
  assert.equal(env.CONTENT_LENGTH, '5');
  assert.equal(env.HTTP_CONTENT_TYPE, undefined);
  assert.equal(env.HTTP_CONTENT_LENGTH, undefined);
  const chunked = environmentRecord(
    buildEnvironment(describe({ method: 'POST', headers: [['Transfer-Encoding', 'chunked']], contentLength: 1234 }), policy),
  );
  assert.equal(chunked.CONTENT_LENGTH, '1234');
  assert.equal(chunked.HTTP_TRANSFER_ENCODING, undefined);
  const none = environmentRecord(buildEnvironment(describe(), policy));
  assert.equal('CONTENT_LENGTH' in none, false);
  assert.equal('CONTENT_TYPE' in none, false);
});

test('TLS sets HTTPS=on and REQUEST_SCHEME=https; no PATH_INFO means no PATH_TRANSLATED', () => {
  const env = environmentRecord(buildEnvironment(describe({ tls: true, pathInfo: '' }), policy));
  assert.equal(env.HTTPS, 'on');
  assert.equal(env.REQUEST_SCHEME, 'https');
  assert.equal('PATH_INFO' in env, false);
  assert.equal('PATH_TRANSLATED' in env, false);
  const plain = environmentRecord(buildEnvironment(describe(), policy));
  assert.equal('HTTPS' in plain, false);
});

test('SERVER_NAME/PORT: Host header (UseCanonicalName Off), the configured name without or with a bad Host', () => {
  const noPort = environmentRecord(buildEnvironment(describe({ headers: [['Host', 'www.example']] }), policy));
  assert.equal(noPort.SERVER_NAME, 'www.example');
  assert.equal(noPort.SERVER_PORT, '8080');
  const missing = environmentRecord(buildEnvironment(describe({ headers: [] }), policy));
  assert.equal(missing.SERVER_NAME, 'configured.example');
  const bad = environmentRecord(buildEnvironment(describe({ headers: [['Host', 'a b']] }), policy));
  assert.equal(bad.SERVER_NAME, 'configured.example');
  const canonical = environmentRecord(buildEnvironment(describe(), { ...policy, useCanonicalName: true, serverPort: 80 }));
  assert.equal(canonical.SERVER_NAME, 'configured.example');
  assert.equal(canonical.SERVER_PORT, '80');
  assert.deepEqual(parseHostHeader('[::1]:81'), { name: '[::1]', port: 81 });
  assert.equal(parseHostHeader('x:99999'), null);
});

test('SetEnv wins over request variables; values with NUL are left out', () => {
  const env = environmentRecord(
    buildEnvironment(describe({ headers: [['X-A', 'a\0b']] }), {
      ...policy,
      setEnv: { APP_MODE: 'prod', SERVER_ADMIN: 'ops@example', 'bad=': 'x' },
    }),
  );
  assert.equal(env.APP_MODE, 'prod');
  assert.equal(env.SERVER_ADMIN, 'ops@example');
  assert.equal(env.HTTP_X_A, undefined);
  assert.equal('bad=' in env, false);
});

test('a local redirect keeps REQUEST_URI and adds REDIRECT_* from the first request', () => {
  const first = buildEnvironment(describe(), policy);
  const second = buildEnvironment(
    describe({
      target: '/cgi-bin/other.cgi?q=2',
      scriptName: '/cgi-bin/other.cgi',
      scriptFilename: '/srv/cgi-bin/other.cgi',
      pathInfo: '',
      redirectedFrom: { environment: first, url: '/cgi-bin/env.cgi/a b', status: 200 },
    }),
    policy,
  );
  const env = environmentRecord(second);
  assert.equal(env.REQUEST_URI, '/cgi-bin/env.cgi/a%20b?x=1&y=%41');
  assert.equal(env.QUERY_STRING, 'q=2');
  assert.equal(env.SCRIPT_NAME, '/cgi-bin/other.cgi');
  assert.equal(env.REDIRECT_SCRIPT_NAME, '/cgi-bin/env.cgi');
  assert.equal(env.REDIRECT_QUERY_STRING, 'x=1&y=%41');
  assert.equal(env.REDIRECT_STATUS, '200');
  assert.equal(env.REDIRECT_URL, '/cgi-bin/env.cgi/a b');
  assert.equal(environmentValue(second, 'REDIRECT_HTTP_HOST'), 'Example.COM:8080');
});

test('property: names are unique, HTTP_* only from letter/digit/hyphen names, never HTTP_PROXY; requestFromEnvironment reads the headers back', () => {
  const headerName = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/);
  const headerValue = fc.stringMatching(/^[ -~]{0,20}$/);
  fc.assert(
    fc.property(fc.array(fc.tuple(headerName, headerValue), { maxLength: 12 }), (headers) => {
      const env = buildEnvironment(describe({ headers }), policy);
      const names = env.map(([name]) => name);
      assert.equal(new Set(names).size, names.length);
      assert.equal(names.includes('HTTP_PROXY'), false);
      for (const name of names) if (name.startsWith('HTTP_')) assert.match(name, /^HTTP_[A-Z0-9_]+$/);
      const back = requestFromEnvironment(environmentRecord(env));
      for (const [name, value] of headers) {
        const lower = name.toLowerCase();
        if (
          value === '' ||
          !/^[a-z0-9-]+$/.test(lower) ||
          ['proxy', 'authorization', 'proxy-authorization', 'content-length'].includes(lower)
        )
          continue;
        assert.ok(back.headers[lower]?.includes(value), `${name} did not come back`);
      }
      assert.equal(back.url, '/cgi-bin/env.cgi/a%20b?x=1&y=%41');
    }),
  );
});

test('the same environment is a FastCGI PARAMS block: encoded and decoded back unchanged, in order', () => {
  const env = buildEnvironment(
    describe({
      headers: [
        ['Host', 'h'],
        ['X-Caf\u00e9', 'no'],
        ['X-Utf8', 'caf\u00e9'],
      ],
    }),
    policy,
  );
  const decoded = decodeNameValuePairs(encodeNameValuePairs(env));
  assert.ok(Array.isArray(decoded));
  assert.deepEqual(
    decoded.map(([name, value]) => [name.toString('utf8'), value.toString('hex')]),
    env.map(([name, value]) => [name, environmentBytes(value).toString('hex')]),
  );
});

// Issue 15 item 3: Apache, nginx and fcgiwrap pass these bytes untouched; gatehouse used to re-encode them.
test('wire bytes reach the environment unchanged: headers, cookies, the query and REQUEST_URI, every byte 0x80-0xff', () => {
  const high = Buffer.from(Array.from({ length: 128 }, (_, index) => 0x80 + index));
  const wire = (bytes: Buffer) => bytes.toString('latin1'); // node:http's one character per byte
  const env = environmentRecord(
    buildEnvironment(
      describe({
        target: `/cgi-bin/env.cgi?q=${wire(high)}`,
        headers: [
          ['Host', 'h.example'],
          ['X-Raw', wire(Buffer.from('fffe80', 'hex'))],
          ['X-Mixed', wire(Buffer.from('c3a9e9', 'hex'))],
          ['X-High', wire(high)],
          ['Cookie', `a=${wire(high)}`],
          ['Cookie', `b=${wire(Buffer.from('ff', 'hex'))}`],
          ['Content-Type', `text/plain; x=${wire(Buffer.from('e9', 'hex'))}`],
        ],
      }),
      policy,
    ),
  );
  const hex = (name: string) => environmentBytes(env[name]!).toString('hex');
  assert.equal(hex('HTTP_X_RAW'), 'fffe80');
  assert.equal(hex('HTTP_X_MIXED'), 'c3a9e9');
  assert.equal(hex('HTTP_X_HIGH'), high.toString('hex'));
  assert.equal(hex('HTTP_COOKIE'), Buffer.concat([Buffer.from('a='), high, Buffer.from('; b=\xff', 'latin1')]).toString('hex'));
  assert.equal(hex('CONTENT_TYPE'), Buffer.from('text/plain; x=\xe9', 'latin1').toString('hex'));
  assert.equal(hex('QUERY_STRING'), Buffer.concat([Buffer.from('q='), high]).toString('hex'));
  assert.equal(hex('REQUEST_URI'), Buffer.concat([Buffer.from('/cgi-bin/env.cgi?q='), high]).toString('hex'));
  // ASCII from the wire stays a string (the same bytes, and the cheap case).
  assert.equal(env.HTTP_HOST, 'h.example');
});

test('configuration and file-system values are text: their UTF-8 bytes, whatever the wire carries', () => {
  const env = environmentRecord(
    buildEnvironment(describe({ scriptFilename: '/srv/caf\u00e9.cgi', pathInfo: '/\u20ac' }), {
      ...policy,
      setEnv: { GREETING: 'gr\u00fc\u00df' },
    }),
  );
  assert.equal(environmentBytes(env.SCRIPT_FILENAME!).toString('hex'), Buffer.from('/srv/caf\u00e9.cgi', 'utf8').toString('hex'));
  assert.equal(environmentBytes(env.PATH_INFO!).toString('hex'), Buffer.from('/\u20ac', 'utf8').toString('hex'));
  assert.equal(environmentBytes(env.GREETING!).toString('hex'), Buffer.from('gr\u00fc\u00df', 'utf8').toString('hex'));
});

test('read back, byte values become one character per byte again (node:http headers)', () => {
  const raw = Buffer.from('fffe80', 'hex').toString('latin1');
  const env = environmentRecord(buildEnvironment(describe({ headers: [['X-Raw', raw]] }), policy));
  assert.equal(requestFromEnvironment(env).headers['x-raw'], raw);
});

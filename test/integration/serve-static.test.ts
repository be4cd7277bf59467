/**
 * Static files through `gatehouse serve`: ranges, conditional requests, MIME
 * types, directory indexes, and the document root's walls (symlinks leading
 * out, `..` in every spelling, encoded slashes, NUL) with the outside file's
 * content never reaching the client.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { rawExchange, statusCodes } from '../kit/raw-http.js';
import { startGatehouse } from '../kit/serve.js';
import { waitForText } from '../kit/wait.js';

const SECRET = 'OUTSIDE-SECRET-7f3a';
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz';

test('static files from the document root', async (t) => {
  const dir = tempDir(t, 'gatehouse-serve-static-');
  const www = join(dir, 'www');
  const outside = join(dir, 'outside');
  mkdirSync(join(www, 'docs'), { recursive: true });
  mkdirSync(join(www, 'no-index'));
  mkdirSync(join(www, 'leaky-index'));
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret.txt'), `${SECRET}\n`);
  writeFileSync(join(outside, 'index.html'), `<p>${SECRET}</p>\n`);
  writeFileSync(join(www, 'index.html'), '<p>home</p>\n');
  writeFileSync(join(www, 'docs', 'index.html'), '<p>docs</p>\n');
  writeFileSync(join(www, 'alphabet.txt'), ALPHABET);
  for (const name of ['page.html', 'style.css', 'data.json', 'app.js', 'logo.svg', 'image.png', 'archive.unknownext'])
    writeFileSync(join(www, name), 'x');
  writeFileSync(join(www, '.env'), `${SECRET}\n`);
  mkdirSync(join(www, '.git'));
  writeFileSync(join(www, '.git', 'config'), `${SECRET}\n`);
  mkdirSync(join(www, '.well-known', 'acme-challenge'), { recursive: true });
  writeFileSync(join(www, '.well-known', 'acme-challenge', 'token123'), 'token123.thumbprint');
  writeFileSync(join(www, '.well-known', '.hidden'), `${SECRET}\n`);
  symlinkSync('.env', join(www, 'public-name.txt'));
  symlinkSync(join(outside, 'secret.txt'), join(www, 'link-out.txt'));
  symlinkSync(outside, join(www, 'dir-out'));
  symlinkSync('../../outside/index.html', join(www, 'leaky-index', 'index.html'));
  symlinkSync('alphabet.txt', join(www, 'link-in.txt'));
  const errorLog = join(dir, 'error.log');
  const server = await startGatehouse(t, 'serve', ['--docroot', www, '--error-log', errorLog, '--access-log', 'off']);
  const get = (path: string, headers: Record<string, string> = {}, method = 'GET') =>
    httpRequest(`${server.base}${path}`, { headers, method });

  await t.test('Range: 206 with exactly the bytes asked for; 416 past the end', async () => {
    const middle = await get('/alphabet.txt', { Range: 'bytes=2-5' });
    assert.equal(middle.status, 206);
    assert.equal(middle.body.toString(), 'cdef');
    assert.equal(middle.headers['content-range'], `bytes 2-5/${ALPHABET.length}`);
    assert.equal(middle.headers['content-length'], '4');
    const suffix = await get('/alphabet.txt', { Range: 'bytes=-3' });
    assert.equal(suffix.status, 206);
    assert.equal(suffix.body.toString(), 'xyz');
    const open = await get('/alphabet.txt', { Range: 'bytes=20-' });
    assert.equal(open.body.toString(), 'uvwxyz');
    const beyond = await get('/alphabet.txt', { Range: 'bytes=100-200' });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers['content-range'], `bytes */${ALPHABET.length}`);
  });

  await t.test('conditional requests: If-None-Match and If-Modified-Since answer 304; a stale validator gets the file', async () => {
    const first = await get('/alphabet.txt');
    assert.equal(first.status, 200);
    const etag = String(first.headers.etag);
    const modified = String(first.headers['last-modified']);
    assert.ok(etag && modified);
    const byTag = await get('/alphabet.txt', { 'If-None-Match': etag });
    assert.equal(byTag.status, 304);
    assert.equal(byTag.body.length, 0);
    const byDate = await get('/alphabet.txt', { 'If-Modified-Since': modified });
    assert.equal(byDate.status, 304);
    const otherTag = await get('/alphabet.txt', { 'If-None-Match': 'W/"something-else"' });
    assert.equal(otherTag.status, 200);
    assert.equal(otherTag.body.toString(), ALPHABET);
    const oldDate = await get('/alphabet.txt', { 'If-Modified-Since': 'Mon, 01 Jan 2001 00:00:00 GMT' });
    assert.equal(oldDate.status, 200);
    // If-Range with the current ETag honours the range; with a stale one the whole file comes back.
    assert.equal((await get('/alphabet.txt', { Range: 'bytes=0-1', 'If-Range': etag })).status, 206);
    const staleRange = await get('/alphabet.txt', { Range: 'bytes=0-1', 'If-Range': 'W/"stale"' });
    assert.equal(staleRange.status, 200);
    assert.equal(staleRange.body.toString(), ALPHABET);
  });

  await t.test('MIME types by file ending', async () => {
    const expected: Record<string, RegExp> = {
      '/page.html': /^text\/html/,
      '/style.css': /^text\/css/,
      '/data.json': /^application\/json/,
      '/app.js': /^(text|application)\/javascript/,
      '/logo.svg': /^image\/svg\+xml/,
      '/image.png': /^image\/png$/,
      '/alphabet.txt': /^text\/plain/,
      '/archive.unknownext': /^application\/octet-stream$/,
    };
    for (const [path, type] of Object.entries(expected)) {
      const response = await get(path);
      assert.equal(response.status, 200, path);
      assert.match(String(response.headers['content-type']), type, path);
    }
  });

  await t.test('directories: index.html on a trailing slash, 301 without it, 404 without an index', async () => {
    assert.equal((await get('/')).body.toString(), '<p>home</p>\n');
    assert.equal((await get('/docs/')).body.toString(), '<p>docs</p>\n');
    const bare = await get('/docs?x=1');
    assert.equal(bare.status, 301);
    assert.equal(bare.headers.location, '/docs/?x=1');
    assert.equal((await get('/no-index/')).status, 404);
  });

  await t.test('HEAD sends the length and no body; other methods get 405 with Allow', async () => {
    const head = await rawExchange(server.port, 'HEAD /alphabet.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    assert.match(head.text, /^HTTP\/1\.1 200 /);
    assert.match(head.text, new RegExp(`\\r\\nContent-Length: ${ALPHABET.length}\\r\\n`));
    assert.ok(head.text.endsWith('\r\n\r\n'), 'no body after the head');
    const post = await httpRequest(`${server.base}/alphabet.txt`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
  });

  await t.test('a symlink inside the root to a file inside it is served', async () => {
    assert.equal((await get('/link-in.txt')).body.toString(), ALPHABET);
  });

  await t.test('symlinks leading out of the root: 404, the outside content never sent', async () => {
    for (const path of ['/link-out.txt', '/dir-out/secret.txt', '/dir-out/', '/leaky-index/']) {
      const response = await get(path);
      assert.equal(response.status, 404, path);
      assert.ok(!response.body.toString().includes(SECRET), `${path} leaked the outside file`);
    }
  });

  await t.test('dot files are not served, also through a symlink with a public name', async () => {
    for (const path of ['/.env', '/.git/config', '/.well-known/.hidden', '/public-name.txt', '/docs/../.env']) {
      const response = await get(path);
      assert.equal(response.status, 404, path);
      assert.ok(!response.body.toString().includes(SECRET), `${path} leaked a dot file`);
    }
  });

  await t.test('/.well-known/ is served (ACME challenges, security.txt)', async () => {
    const response = await get('/.well-known/acme-challenge/token123');
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), 'token123.thumbprint');
  });

  await t.test('.. in every spelling, encoded slashes, backslashes and NUL: refused, nothing leaks', async () => {
    const attempts = [
      '/../outside/secret.txt',
      '/docs/../../outside/secret.txt',
      '/%2e%2e/outside/secret.txt',
      '/%2E%2E/outside/secret.txt',
      '/.%2e/outside/secret.txt',
      '/docs/%2e%2e%2f%2e%2e%2foutside%2fsecret.txt',
      '/..%2foutside%2fsecret.txt',
      '/..%5coutside%5csecret.txt',
      '/..\\outside\\secret.txt',
      '/alphabet.txt%00.html',
      '/%00/../outside/secret.txt',
      '/docs/%252e%252e/%252e%252e/outside/secret.txt',
    ];
    for (const path of attempts) {
      const result = await rawExchange(server.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const [status] = statusCodes(result.text);
      assert.ok(status === 400 || status === 404, `${path} answered ${status}: ${result.text.slice(0, 200)}`);
      assert.ok(!result.text.includes(SECRET), `${path} leaked the outside file`);
      assert.ok(!result.text.includes(ALPHABET), `${path} served a file through a NUL or encoded path`);
    }
  });

  await t.test('refusals are in the error log with the path they resolved to', async () => {
    const log = await waitForText(errorLog, 'leaky-index', 'the refused leaky-index/ in the error log');
    assert.match(log, /static: refused \/link-out\.txt: .*link-out\.txt resolves to .*\/outside\/secret\.txt, outside the document root/);
    assert.match(
      log,
      /static: refused \/leaky-index\/: .*leaky-index\/index\.html resolves to .*\/outside\/index\.html, outside the document root/,
    );
  });
});

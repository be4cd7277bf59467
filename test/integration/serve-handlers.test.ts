/**
 * The handler examples (examples/node-http.mjs, express.mjs, fastify.mjs) run
 * as their README comments say, each in its own process next to the example
 * FastCGI application, and really serve a CGI script (GET with PATH_INFO, a
 * POST with and without a length, a body type the framework would parse) and
 * the FastCGI route, and stop cleanly on SIGTERM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { freePort, startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { EXAMPLES_DIR, REPO_ROOT } from '../kit/paths.js';

for (const example of ['node-http', 'express', 'fastify']) {
  test(`examples/${example}.mjs serves CGI scripts and a FastCGI route`, async (t) => {
    const dir = tempDir(t, `gatehouse-${example}-`);
    const socket = join(dir, 'app.sock');
    const app = startProcess(t, process.execPath, [join(EXAMPLES_DIR, 'fastcgi-app.mjs'), socket], { cwd: REPO_ROOT });
    await waitForListener({ path: socket }, { what: 'examples/fastcgi-app.mjs', process: app });
    const port = await freePort();
    const server = startProcess(t, process.execPath, [join(EXAMPLES_DIR, `${example}.mjs`)], {
      cwd: dir,
      env: { ...process.env, PORT: String(port), FASTCGI_UPSTREAM: `unix:${socket}` },
    });
    await waitForListener({ host: '127.0.0.1', port }, { what: `examples/${example}.mjs`, process: server });
    const base = `http://127.0.0.1:${port}`;

    const env = await httpRequest(`${base}/cgi-bin/env.sh/extra/path?x=1`);
    assert.equal(env.status, 200, env.body.toString());
    const vars = env.body.toString();
    assert.match(vars, /^SCRIPT_NAME=\/cgi-bin\/env\.sh$/m);
    assert.match(vars, /^PATH_INFO=\/extra\/path$/m);
    assert.match(vars, /^QUERY_STRING=x=1$/m);
    assert.match(vars, /^REQUEST_URI=\/cgi-bin\/env\.sh\/extra\/path\?x=1$/m);

    // text/plain and application/json are bodies Express and Fastify parsers would eat; the script must get every byte.
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'application/json']) {
      const form = await httpRequest(`${base}/cgi-bin/form.pl`, {
        method: 'POST',
        headers: { 'Content-Type': type },
        body: 'name=Grace+Hopper',
      });
      assert.equal(form.status, 200, `${type}: ${form.body.toString()}`);
      assert.ok(form.body.toString().includes('You sent (17 bytes)'), `${type}: ${form.body.toString()}`);
      assert.ok(form.body.toString().includes('<li><b>name</b>: Grace Hopper</li>'), type);
    }
    async function* chunked() {
      yield Buffer.from('name=');
      yield Buffer.from('Chunked');
    }
    const chunkedForm = await httpRequest(`${base}/cgi-bin/form.pl`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: chunked(),
    });
    assert.equal(chunkedForm.status, 200);
    assert.ok(chunkedForm.body.toString().includes('You sent (12 bytes)'), 'a chunked body reaches the script with CONTENT_LENGTH set');

    const params = await httpRequest(`${base}/app/params?q=1`);
    assert.equal(params.status, 200, params.body.toString());
    const fcgi = JSON.parse(params.body.toString()) as { params: Record<string, string> };
    assert.equal(fcgi.params.SCRIPT_NAME, '/app');
    assert.equal(fcgi.params.PATH_INFO, '/params');
    assert.equal(fcgi.params.REQUEST_URI, '/app/params?q=1');
    assert.equal(fcgi.params.QUERY_STRING, 'q=1');
    const hello = await httpRequest(`${base}/app/hello`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: '{"a":1}',
    });
    assert.equal(hello.status, 200);
    assert.match(hello.body.toString(), /You asked for <code>\/app\/hello<\/code> with POST/);

    // A ScriptAlias owns its whole prefix, as in Apache: a missing script is the handler's own 404.
    const missing = await httpRequest(`${base}/cgi-bin/no-such-script.sh`);
    assert.equal(missing.status, 404);
    assert.match(missing.body.toString(), /<title>404 Not Found<\/title>/);
    const elsewhere = await httpRequest(`${base}/elsewhere`);
    assert.equal(elsewhere.status, 404);
    assert.match(elsewhere.body.toString(), /^nothing at \/elsewhere/);

    server.child.kill('SIGTERM');
    const exited = await server.exited;
    assert.deepEqual(exited, { code: 0, signal: null }, `${example}.mjs did not stop cleanly on SIGTERM:\n${server.output()}`);
  });
}

/**
 * The README's first command: `gatehouse example` serves the static page, the
 * shell and Perl CGI scripts, the streaming script and the FastCGI app; and
 * leaves nothing running when stopped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { httpRequest } from '../kit/http.js';
import { tempDir } from '../kit/process.js';
import { processExists } from '../kit/proc.js';
import { startGatehouse } from '../kit/serve.js';
import { waitFor } from '../kit/wait.js';

test('gatehouse example serves every part of the built-in example, and stops cleanly', async (t) => {
  // Started from an unrelated directory: the example must find its files by itself.
  const server = await startGatehouse(t, 'example', [], { cwd: tempDir(t) });

  await t.test('the static page links the scripts and the app', async () => {
    const page = await httpRequest(`${server.base}/`);
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    const html = page.body.toString();
    for (const link of ['/cgi-bin/env.sh', '/cgi-bin/form.pl', '/cgi-bin/stream.sh', '/app/hello'])
      assert.ok(html.includes(`href="${link}`), `the page links ${link}`);
  });

  await t.test('/cgi-bin/env.sh prints PATH_INFO and QUERY_STRING', async () => {
    const env = await httpRequest(`${server.base}/cgi-bin/env.sh/extra/path?name=value&x=1`);
    assert.equal(env.status, 200);
    const text = env.body.toString();
    assert.match(text, /^PATH_INFO=\/extra\/path$/m);
    assert.match(text, /^QUERY_STRING=name=value&x=1$/m);
    assert.match(text, /^SCRIPT_NAME=\/cgi-bin\/env\.sh$/m);
    assert.match(text, /^REQUEST_METHOD=GET$/m);
  });

  await t.test('the Perl form shows what was POSTed', async () => {
    const body = 'name=Ada+Lovelace&message=%3Cb%3Ehi%3C%2Fb%3E';
    const form = await httpRequest(`${server.base}/cgi-bin/form.pl`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body,
    });
    assert.equal(form.status, 200);
    const html = form.body.toString();
    assert.ok(html.includes(`You sent (${body.length} bytes)`), html);
    assert.ok(html.includes('<li><b>name</b>: Ada Lovelace</li>'), html);
    assert.ok(html.includes('<li><b>message</b>: &lt;b&gt;hi&lt;/b&gt;</li>'), 'the form escapes what it echoes');
    const empty = await httpRequest(`${server.base}/cgi-bin/form.pl`);
    assert.ok(empty.body.toString().includes('<form method="post" action="/cgi-bin/form.pl">'));
  });

  await t.test('the streaming script: the first line arrives while the script is still running', async () => {
    const seen = await new Promise<{ firstChunk: string; ended: boolean; full: string }>((resolve, reject) => {
      http
        .get(`${server.base}/cgi-bin/stream.sh`, { agent: false }, (res) => {
          let full = '';
          let firstChunk: string | undefined;
          let endedAtFirst = false;
          res.on('data', (chunk: Buffer) => {
            if (firstChunk === undefined) {
              firstChunk = chunk.toString();
              endedAtFirst = res.readableEnded;
            }
            full += chunk.toString();
          });
          res.on('end', () => resolve({ firstChunk: firstChunk ?? '', ended: endedAtFirst, full }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    assert.match(seen.firstChunk, /^line 1 of 5/);
    // The script sleeps a second between lines: a front that buffered the response would deliver all five at once.
    assert.ok(!seen.firstChunk.includes('line 5 of 5'), `the first chunk came after the script ended: ${JSON.stringify(seen.firstChunk)}`);
    assert.equal(seen.ended, false);
    assert.equal(seen.full.match(/^line \d of 5/gm)?.length, 5, seen.full);
  });

  let appPid = 0;
  await t.test('/app/ is the FastCGI application, with its params', async () => {
    const app = await httpRequest(`${server.base}/app/`);
    assert.equal(app.status, 200);
    const match = /Process (\d+) has served \d+ request\(s\)\. You asked for <code>\/app\/<\/code> with GET\./.exec(app.body.toString());
    assert.ok(match, app.body.toString());
    appPid = Number(match[1]);
    assert.notEqual(appPid, server.child.pid, 'the app is its own process');
    const params = await httpRequest(`${server.base}/app/params?q=1`);
    assert.equal(params.status, 200);
    const json = JSON.parse(params.body.toString()) as { params: Record<string, string> };
    assert.equal(json.params.REQUEST_URI, '/app/params?q=1');
    assert.equal(json.params.QUERY_STRING, 'q=1');
    assert.equal(json.params.SCRIPT_NAME, '/app');
    assert.equal(json.params.PATH_INFO, '/params');
  });

  await t.test('SIGTERM: exit 0 and the FastCGI app stopped with it', async () => {
    server.child.kill('SIGTERM');
    const { code } = await server.exited;
    assert.equal(code, 0, server.output());
    await waitFor(() => !processExists(appPid), `the example's FastCGI app (pid ${appPid}) to stop with gatehouse example`);
  });
});

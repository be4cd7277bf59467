/**
 * Sockets the web server can reach (issue 12, item 4): a unix socket made by
 * root for nginx running as www-data (--socket-user, --socket-group and
 * --socket-mode from the command line, the worker library's socketUser),
 * with its mode from bind on; and a socket left by a process
 * killed with SIGKILL, replaced by the next start in every command that binds
 * one, while a live server's socket is refused with one line.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { lookupUser } from '../../src/sys/index.js';
import { startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { waitForOutput } from '../kit/wait.js';
import { httpRequest } from '../kit/http.js';
import { startNginx } from '../kit/nginx.js';
import { waitUntil } from '../kit/deploy.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { asRootOnPurpose, runGatehouse } from '../kit/serve.js';

const LISTEN_APP = fileURLToPath(new URL('../fixtures/workers/listen-app.js', import.meta.url));
const asRoot = { skip: process.getuid?.() !== 0 ? 'making sockets for other users needs root (CI runs as root)' : false };
const WWW = lookupUser('www-data')!;
const NOBODY = lookupUser('nobody')!;

function site(t: TestContext): { dir: string; cgi: string; www: string } {
  const dir = tempDir(t, 'gatehouse-deploy-sock-');
  chmodSync(dir, 0o755);
  const cgi = join(dir, 'cgi-bin');
  const www = join(dir, 'www');
  mkdirSync(cgi, { mode: 0o755 });
  mkdirSync(www, { mode: 0o755 });
  writeFileSync(join(cgi, 'hello.sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\n\\nhello from $(id -un)\\n"\n', { mode: 0o755 });
  writeFileSync(join(www, 'a.txt'), 'file a\n');
  return { dir, cgi, www };
}

async function startFace(t: TestContext, socket: string, args: string[]): Promise<RunningProcess> {
  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'cgid', '--fastcgi', `unix:${socket}`, ...args]);
  await waitUntil(() => /^ready /m.test(face.output()) || face.child.exitCode !== null, 'cgid --fastcgi to be ready', 15_000, face.output);
  assert.equal(face.child.exitCode, null, face.output());
  return face;
}

test('nginx running as www-data reaches cgid --fastcgi through the socket root made with --socket-user www-data', asRoot, async (t) => {
  const { dir } = site(t);
  const socket = join(dir, 'cgi.sock');
  const nginx = await startNginx(t, {
    user: 'www-data',
    serverBlock: `location /cgi-bin/ {
      fastcgi_pass unix:${socket};
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME ${dir}$fastcgi_script_name;
    }`,
  });

  // The scripts run as nobody; the socket, by default, is nobody's too (mode 0660): www-data may not connect.
  const closed = await startFace(t, socket, ['--user', 'nobody']);
  assert.equal(statSync(socket).uid, NOBODY.uid);
  const refused = await httpRequest(`${nginx.url}/cgi-bin/hello.sh`);
  assert.equal(refused.status, 502);
  await closed.stop();

  // Given to www-data: nginx's workers connect, the script still runs as nobody.
  await startFace(t, socket, ['--user', 'nobody', '--socket-user', 'www-data']);
  const stat = statSync(socket);
  assert.equal(stat.uid, WWW.uid);
  assert.equal(stat.gid, WWW.gid);
  assert.equal(stat.mode & 0o777, 0o660);
  const answer = await httpRequest(`${nginx.url}/cgi-bin/hello.sh`);
  assert.equal(answer.status, 200, answer.body.toString());
  assert.equal(answer.body.toString(), 'hello from nobody\n');
});

test(
  "cgid --fastcgi --socket-group www-data --socket-mode 0660: the socket is the user's and the group's, and nginx as www-data connects through the group",
  asRoot,
  async (t) => {
    const { dir } = site(t);
    const socket = join(dir, 'cgi.sock');
    const wwwGroup = WWW.gid;
    assert.notEqual(NOBODY.gid, wwwGroup, "nobody's login group must differ from www-data's, or the group flag proves nothing");

    // Given a group: the owner stays the user cgid runs as (nobody), the group is the web server's.
    await t.test('--socket-group www-data --socket-mode 0660', async () => {
      const face = await startFace(t, socket, ['--user', 'nobody', '--socket-group', 'www-data', '--socket-mode', '0660']);
      const stat = statSync(socket);
      assert.equal(stat.uid, NOBODY.uid, 'owned by the user cgid runs as');
      assert.equal(stat.gid, wwwGroup, "the socket's group is www-data's");
      assert.equal(stat.mode & 0o777, 0o660);
      const nginx = await startNginx(t, {
        user: 'www-data',
        serverBlock: `location /cgi-bin/ {
        fastcgi_pass unix:${socket};
        include /etc/nginx/fastcgi_params;
        fastcgi_param SCRIPT_FILENAME ${dir}$fastcgi_script_name;
      }`,
      });
      const answer = await httpRequest(`${nginx.url}/cgi-bin/hello.sh`);
      assert.equal(answer.status, 200, answer.body.toString());
      assert.equal(answer.body.toString(), 'hello from nobody\n');
      await face.stop();
    });

    // A mode other than the default (0660), so a flag that is not applied cannot pass.
    await t.test('--socket-mode 0600', async () => {
      const face = await startFace(t, socket, ['--user', 'nobody', '--socket-group', 'www-data', '--socket-mode', '0600']);
      const stat = statSync(socket);
      assert.equal(stat.mode & 0o777, 0o600);
      assert.equal(stat.gid, wwwGroup);
      await face.stop();
    });
  },
);

test('the worker library: listen({ path, socketUser: "www-data" }) as root, reached by nginx running as www-data', asRoot, async (t) => {
  const { dir } = site(t);
  const socket = join(dir, 'app.sock');
  const app = startProcess(t, process.execPath, [LISTEN_APP, JSON.stringify({ path: socket, socketUser: 'www-data', socketMode: 0o600 })]);
  await waitForListener({ path: socket }, { process: app, timeoutMs: 15_000 });
  const stat = statSync(socket);
  assert.equal(stat.uid, WWW.uid);
  assert.equal(stat.mode & 0o777, 0o600, 'the mode asked for, from bind on');
  const nginx = await startNginx(t, {
    user: 'www-data',
    serverBlock: `location /app/ { fastcgi_pass unix:${socket}; include /etc/nginx/fastcgi_params; }`,
  });
  const answer = await httpRequest(`${nginx.url}/app/x`);
  assert.equal(answer.status, 200, answer.body.toString());
  assert.match(answer.body.toString(), /^listen-app \d+ uid 0\n$/);
  // On stop the library removes the socket it made.
  app.child.kill('SIGTERM');
  await app.exited;
  assert.throws(() => lstatSync(socket), /ENOENT/);
});

/** Starts `start()` on `socket`, kills it with SIGKILL (the socket file stays), starts again: served. A third start while it runs is refused. */
async function staleThenLive(
  t: TestContext,
  socket: string,
  start: () => Promise<RunningProcess>,
  request: () => Promise<string>,
  expected: RegExp,
  refusal: { args: string[]; line: RegExp },
): Promise<void> {
  const first = await start();
  assert.match(await request(), expected);
  first.child.kill('SIGKILL');
  await first.exited;
  assert.ok(lstatSync(socket).isSocket(), 'a killed process leaves its socket file behind');
  const second = await start();
  assert.match(await request(), expected, second.output());
  // Logged in a batch (cgid's after the ready line it writes to stdout at once) and read through a pipe: waited for.
  await waitForOutput(second, /stale socket/, 'the replacement logged');
  const third = startProcess(t, process.execPath, refusal.args);
  const { code } = await third.exited;
  await waitUntil(() => third.child.stderr!.readableEnded || third.child.stderr!.destroyed, 'the refused process output');
  assert.equal(code, 1);
  assert.match(third.output(), refusal.line);
  assert.equal(third.output().trim().split('\n').length, 1, `one line, no stack trace:\n${third.output()}`);
  assert.match(await request(), expected, 'the live server keeps its socket');
}

test('kill -9, then start again: serve, cgid --fastcgi and the worker library replace the stale socket; a live one is refused with one line', async (t) => {
  const { dir, cgi, www } = site(t);

  await t.test('gatehouse serve', async () => {
    const socket = join(dir, 'serve.sock');
    const args = [GATEHOUSE_MAIN, ...asRootOnPurpose(['serve', '--listen', `unix:${socket}`, '--docroot', www, '--access-log', 'off'])];
    await staleThenLive(
      t,
      socket,
      async () => {
        const serve = startProcess(t, process.execPath, args);
        await waitUntil(
          () => /listening on/.test(serve.output()) || serve.child.exitCode !== null,
          'serve to listen',
          15_000,
          serve.output,
        );
        return serve;
      },
      async () => (await httpRequest('http://localhost/a.txt', { socketPath: socket })).body.toString(),
      /^file a\n$/,
      {
        args,
        line: new RegExp(
          `^gatehouse serve: another server is accepting connections on ${socket}: stop it first, or choose another path\\n$`,
        ),
      },
    );
  });

  await t.test('gatehouse cgid --fastcgi', async () => {
    const socket = join(dir, 'face.sock');
    const args = [GATEHOUSE_MAIN, ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`])];
    await staleThenLive(
      t,
      socket,
      () => startFace(t, socket, asRootOnPurpose(['cgid', '--fastcgi']).slice(2)),
      async () => {
        const client = new FastCGIClient({ address: `unix:${socket}` });
        try {
          const answer = await client.fetchAll({
            params: {
              REQUEST_METHOD: 'GET',
              SCRIPT_FILENAME: join(cgi, 'hello.sh'),
              SCRIPT_NAME: '/hello.sh',
              GATEWAY_INTERFACE: 'CGI/1.1',
            },
          });
          return answer.stdout.toString();
        } finally {
          await client.close();
        }
      },
      /hello from root\n$/,
      {
        args,
        line: new RegExp(
          `^gatehouse cgid: another server is accepting connections on ${socket}: stop it first, or choose another path\\n$`,
        ),
      },
    );
  });

  await t.test('the worker library', async () => {
    const socket = join(dir, 'worker.sock');
    const args = [LISTEN_APP, JSON.stringify({ path: socket })];
    await staleThenLive(
      t,
      socket,
      async () => {
        const app = startProcess(t, process.execPath, args);
        await waitUntil(() => /listening/.test(app.output()) || app.child.exitCode !== null, 'the app to listen', 15_000, app.output);
        return app;
      },
      async () => {
        const client = new FastCGIClient({ address: `unix:${socket}` });
        try {
          return (await client.fetchAll({ params: { REQUEST_METHOD: 'GET', SCRIPT_NAME: '/x' } })).stdout.toString();
        } finally {
          await client.close();
        }
      },
      /listen-app \d+ uid/,
      {
        args,
        line: new RegExp(
          `^gatehouse worker \\d+: another server is accepting connections on ${socket}: stop it first, or choose another path\\n$`,
        ),
      },
    );
  });
});

test('a plain file in the way is refused and left alone, by serve and by cgid --fastcgi', async (t) => {
  const { dir, www } = site(t);
  const file = join(dir, 'precious');
  writeFileSync(file, 'keep me\n');
  const serve = await runGatehouse(['serve', '--listen', `unix:${file}`, '--docroot', www]);
  assert.equal(
    serve.stderr,
    `gatehouse serve: ${file} exists and is not a socket; it is left alone: move it away, or choose another path\n`,
  );
  const face = await runGatehouse(['cgid', '--fastcgi', `unix:${file}`]);
  assert.equal(face.code, 1);
  assert.equal(
    face.stderr.split('\n').filter(Boolean).at(-1),
    `gatehouse cgid: ${file} exists and is not a socket; it is left alone: move it away, or choose another path`,
  );
  assert.equal(statSync(file).size, 8);
});

/**
 * docs/deploy.md as written (issue 12, item 7): every code block is marked
 * `<!-- deploy-test: NAME -->` and run here; only paths and ports are
 * substituted, and each substitution is checked to be in the block first.
 * The unit files the page installs run through their own ExecStart= lines
 * on sockets made by the real systemd-socket-activate; what systemd as
 * process 1 would add is stood in for and said so (the [Socket] owner and
 * mode, User=, systemctl kill).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { lookupGroupId, lookupUser } from '../../src/sys/index.js';
import { freePort, requireProgram, startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { startNginx } from '../kit/nginx.js';
import { startPhpFpm } from '../kit/php-fpm.js';
import { credentialsFromText, credentialsOf, ID_SCRIPT, notifyListener, startActivated, waitUntil } from '../kit/deploy.js';
import { GATEHOUSE_MAIN, REPO_ROOT } from '../kit/paths.js';

const asRoot = { skip: process.getuid?.() !== 0 ? 'the deployment guide starts as root (CI runs as root)' : false };
const WWW = lookupUser('www-data')!;
const GUIDE = readFileSync(join(REPO_ROOT, 'docs/deploy.md'), 'utf8');
const UNITS = join(REPO_ROOT, 'contrib/systemd');

/** The guide's code blocks by marker name; a block without a marker fails the test that lists them. */
function snippets(): Map<string, string> {
  const blocks = new Map<string, string>();
  for (const match of GUIDE.matchAll(/(?:<!-- deploy-test: ([a-z0-9-]+) -->\n)?```[a-z]*\n([\s\S]*?)```/g)) {
    assert.ok(match[1], `a code block in docs/deploy.md has no deploy-test marker:\n${match[2]}`);
    assert.ok(!blocks.has(match[1]), `two blocks are named ${match[1]}`);
    blocks.set(match[1], match[2]!);
  }
  return blocks;
}

function snippet(name: string): string {
  const text = snippets().get(name);
  assert.ok(text !== undefined, `docs/deploy.md has no block named ${name}`);
  return text;
}

/** Replaces each path or port, after checking it is there (a renamed path in the guide must fail here, not pass untested). */
function substitute(text: string, pairs: ReadonlyArray<readonly [string, string]>): string {
  let result = text;
  for (const [from, to] of pairs) {
    assert.ok(result.includes(from), `expected ${JSON.stringify(from)} in:\n${text}`);
    result = result.replaceAll(from, to);
  }
  return result;
}

/** A directory with `gatehouse` (this checkout's command) to put first in PATH, as the installed package would be. */
function gatehouseOnPath(t: TestContext): { bin: string; command: string; env: NodeJS.ProcessEnv } {
  const bin = tempDir(t, 'gatehouse-deploy-bin-');
  chmodSync(bin, 0o755);
  const command = join(bin, 'gatehouse');
  writeFileSync(command, `#!/bin/sh\nexec ${process.execPath} ${GATEHOUSE_MAIN} "$@"\n`, { mode: 0o755 });
  return { bin, command, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } };
}

/** Runs a shell snippet to its end; its output and exit status. */
async function runShell(t: TestContext, script: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  const shell = startProcess(t, '/bin/sh', ['-e', '-c', script], { env });
  const { code } = await shell.exited;
  await waitUntil(() => shell.child.stdout!.readableEnded && shell.child.stderr!.readableEnded, 'the shell output');
  return { code, output: shell.output() };
}

/** `Key=value` lines of a unit section (the last one wins, except ExecStart*, which the tests read one by one). */
function unitValues(file: string, key: string): string[] {
  return [...readFileSync(join(UNITS, file), 'utf8').matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((match) => match[1]!);
}

function unitValue(file: string, key: string): string {
  const values = unitValues(file, key);
  assert.equal(values.length, 1, `${file}: one ${key}=`);
  return values[0]!;
}

/** An ExecStart= line as systemd runs it: words, $NAME replaced by the words of NAME's value (no shell). */
function execWords(line: string, environment: Record<string, string> = {}): string[] {
  return line
    .trim()
    .split(/\s+/)
    .flatMap((word) => (/^\$[A-Z_]+$/.test(word) ? (environment[word.slice(1)] ?? '').split(/\s+/).filter(Boolean) : [word]));
}

/** What systemd does for a .socket unit's SocketUser=, SocketGroup= and SocketMode= (systemd-socket-activate does not). */
function applySocketUnit(unit: string, socket: string): void {
  const user = lookupUser(unitValue(unit, 'SocketUser'))!;
  chownSync(socket, user.uid, lookupGroupId(unitValue(unit, 'SocketGroup'))!);
  chmodSync(socket, Number.parseInt(unitValue(unit, 'SocketMode'), 8));
}

/** A 0755 temp dir with a cgi-bin holding the id script, reachable by www-data. */
function publicDir(t: TestContext, prefix: string): string {
  const dir = tempDir(t, prefix);
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'cgi-bin'), { mode: 0o755 });
  writeFileSync(join(dir, 'cgi-bin', 'id.sh'), ID_SCRIPT, { mode: 0o755 });
  return dir;
}

const stateLines = (messages: string[]) =>
  messages.flatMap((message) => message.split('\n')).filter((line) => /^(READY|STOPPING|RELOADING)=1$/.test(line));

test('every code block of docs/deploy.md is marked, and each marker is run by a test in this file', () => {
  const names = [...snippets().keys()].sort();
  // The compiled test names every block it runs in quotes (snippet('serve-config'), rotationSetup(t, 'logrotate-usr1')).
  const source = readFileSync(new URL(import.meta.url), 'utf8');
  for (const name of names) assert.ok(source.includes(`'${name}'`), `block ${name} of docs/deploy.md is run by no test`);
  assert.ok(names.length >= 10, names.join(' '));
});

test('serve as a service, behind nothing: the configuration, the preparation, and the unit as systemd runs it', asRoot, async (t) => {
  const site = publicDir(t, 'gatehouse-deploy-serve-');
  const etc = join(site, 'etc');
  const html = join(site, 'html');
  const log = join(site, 'log');
  mkdirSync(etc);
  mkdirSync(html, { mode: 0o755 });
  writeFileSync(join(html, 'index.html'), '<h1>it works</h1>\n');
  const port = await freePort();
  writeFileSync(
    join(etc, 'serve.toml'),
    substitute(snippet('serve-config'), [
      ['*:80', `127.0.0.1:${port}`],
      ['/var/www/html', html],
      ['/usr/lib/cgi-bin', join(site, 'cgi-bin')],
      ['/var/log/gatehouse', log],
    ]),
  );
  const { command, env } = gatehouseOnPath(t);
  const prepared = await runShell(
    t,
    substitute(snippet('serve-prepare'), [
      ['/var/log/gatehouse', log],
      ['/etc/gatehouse', etc],
    ]),
    env,
  );
  assert.equal(prepared.code, 0, prepared.output);
  assert.match(prepared.output, /configuration OK/);
  assert.match(prepared.output, /user: www-data/);
  assert.equal(statSync(log).uid, WWW.uid);
  assert.equal(statSync(log).mode & 0o777, 0o750);

  // The unit: ExecStartPre, then ExecStart with NOTIFY_SOCKET (Type=notify), ExecReload, then a stop.
  const unit = 'gatehouse-serve.service';
  assert.equal(unitValue(unit, 'Type'), 'notify');
  const words = (line: string) =>
    execWords(
      substitute(line, [
        ['/usr/bin/gatehouse', command],
        ['/etc/gatehouse', etc],
      ]),
    );
  const [pre] = unitValues(unit, 'ExecStartPre').map(words);
  const check = await runShell(t, pre!.join(' '), env);
  assert.equal(check.code, 0, check.output);
  const notify = notifyListener(t, join(site, 'notify'));
  const [start] = unitValues(unit, 'ExecStart').map(words);
  const serve = startProcess(t, start![0]!, start!.slice(1), { env: { ...env, NOTIFY_SOCKET: notify.address } });
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1', 15_000, serve.output);
  const page = await httpRequest(`http://127.0.0.1:${port}/index.html`);
  assert.equal(page.body.toString(), '<h1>it works</h1>\n');
  const script = await httpRequest(`http://127.0.0.1:${port}/cgi-bin/id.sh`);
  assert.deepEqual(credentialsFromText(script.body.toString()).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
  assert.deepEqual(credentialsOf(serve.child.pid!).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
  await waitUntil(
    () => existsSync(join(log, 'access.log')) && readFileSync(join(log, 'access.log'), 'utf8').includes('/cgi-bin/id.sh'),
    'the access log line',
  );

  const reload = substitute(unitValue(unit, 'ExecReload'), [['$MAINPID', String(serve.child.pid)]]);
  assert.equal((await runShell(t, reload, env)).code, 0);
  await waitUntil(() => stateLines(notify.messages()).length >= 3, 'RELOADING=1 then READY=1');
  // Log lines are written asynchronously: READY=1 can come before the reload's line is out.
  await waitUntil(() => /SIGHUP: reloaded the configuration/.test(readFileSync(join(log, 'error.log'), 'utf8')), 'the reload logged');
  serve.child.kill('SIGTERM');
  assert.deepEqual(await serve.exited, { code: 0, signal: null });
  assert.deepEqual(stateLines(notify.messages()), ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1']);
});

/** nginx running as www-data with a server block from the guide (paths substituted); its base URL. */
async function nginxWith(t: TestContext, block: string): Promise<string> {
  const nginx = await startNginx(t, { user: 'www-data', serverBlock: block });
  return nginx.url;
}

test('nginx + gatehouse cgid --fastcgi in place of fcgiwrap: the socket and service units, and the nginx location', asRoot, async (t) => {
  const root = publicDir(t, 'gatehouse-deploy-cgid-');
  const socket = join(root, 'gatehouse-cgid.sock');
  const { command } = gatehouseOnPath(t);
  const socketUnit = 'gatehouse-cgid.socket';
  const serviceUnit = 'gatehouse-cgid.service';
  assert.equal(substitute(unitValue(socketUnit, 'ListenStream'), [['/run/gatehouse-cgid.sock', socket]]), socket);
  const notify = notifyListener(t, join(root, 'notify'));
  // User= and Group= of the service, as systemd applies them before exec (setpriv does the same).
  const asUser = [
    requireProgram('/usr/bin/setpriv'),
    `--reuid=${unitValue(serviceUnit, 'User')}`,
    `--regid=${unitValue(serviceUnit, 'Group')}`,
    '--init-groups',
    '--',
  ];
  const face = startActivated(
    t,
    socket,
    [...asUser, ...execWords(substitute(unitValue(serviceUnit, 'ExecStart'), [['/usr/bin/gatehouse', command]]))],
    {
      fdname: unitValue(socketUnit, 'FileDescriptorName'),
      env: { NOTIFY_SOCKET: notify.address, PATH: process.env.PATH! },
    },
  );
  await waitUntil(() => /Listening on .* as 3\./.test(face.output()), 'the socket', 15_000, face.output);
  applySocketUnit(socketUnit, socket);
  const url = await nginxWith(
    t,
    substitute(snippet('nginx-cgi'), [
      ['/usr/lib', root],
      ['/run/gatehouse-cgid.sock', socket],
      ['include fastcgi_params;', 'include /etc/nginx/fastcgi_params;'],
    ]),
  );
  const response = await httpRequest(`${url}/cgi-bin/id.sh`);
  assert.equal(response.status, 200, `${response.body.toString()}\n${face.output()}`);
  assert.deepEqual(credentialsFromText(response.body.toString()).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1');

  // Started by hand instead: it binds the socket as root, gives it to www-data, and runs the scripts as www-data.
  const byHand = join(root, 'by-hand.sock');
  const started = startProcess(t, '/bin/sh', ['-c', substitute(snippet('cgid-by-hand'), [['/run/gatehouse-cgid.sock', byHand]])], {
    env: gatehouseOnPath(t).env,
  });
  await waitForListener({ path: byHand }, { timeoutMs: 15_000 });
  assert.equal(statSync(byHand).uid, WWW.uid);
  assert.equal(statSync(byHand).mode & 0o777, 0o660);
  const url2 = await nginxWith(
    t,
    substitute(snippet('nginx-cgi'), [
      ['/usr/lib', root],
      ['/run/gatehouse-cgid.sock', byHand],
      ['include fastcgi_params;', 'include /etc/nginx/fastcgi_params;'],
    ]),
  );
  const second = await httpRequest(`${url2}/cgi-bin/id.sh`);
  assert.equal(second.status, 200, started.output());
  assert.deepEqual(credentialsFromText(second.body.toString()).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
});

test('serve in front of php-fpm: PHP goes to php-fpm, everything else is served by gatehouse', asRoot, async (t) => {
  const fpm = await startPhpFpm(t, {
    scripts: { 'index.php': '<?php echo "php says hi from ", $_SERVER["SCRIPT_NAME"], "\\n";' },
    // Debian's www pool gives its socket to www-data, as the guide says.
    poolConfig: 'listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660',
  });
  chmodSync(dirname(fpm.docRoot), 0o755);
  writeFileSync(join(fpm.docRoot, 'hello.txt'), 'static hello\n');
  const etc = tempDir(t, 'gatehouse-deploy-fpm-');
  const port = await freePort();
  writeFileSync(
    join(etc, 'serve.toml'),
    substitute(snippet('php-fpm-config'), [
      ['*:80', `127.0.0.1:${port}`],
      ['/var/www/html', fpm.docRoot],
      ['/run/php/php8.2-fpm.sock', (fpm.address as { path: string }).path],
    ]),
  );
  const serve = startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'serve', '--config', join(etc, 'serve.toml')]);
  await waitForListener({ host: '127.0.0.1', port }, { process: serve, timeoutMs: 15_000 }).catch((error: Error) => {
    throw new Error(`${error.message}\n${serve.output()}`);
  });
  assert.equal((await httpRequest(`http://127.0.0.1:${port}/index.php`)).body.toString(), 'php says hi from /index.php\n');
  assert.equal((await httpRequest(`http://127.0.0.1:${port}/`)).body.toString(), 'php says hi from /index.php\n');
  assert.equal((await httpRequest(`http://127.0.0.1:${port}/hello.txt`)).body.toString(), 'static hello\n');
  assert.deepEqual(credentialsOf(serve.child.pid!).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
});

test('a kfcgi pool under systemd: the worker, its settings, the socket and service units, and the nginx location', asRoot, async (t) => {
  // The worker imports the package by name: it lives inside this checkout (dist/), as an application inside an installation would.
  const app = mkdtempSync(join(REPO_ROOT, 'dist', 'deploy-docs-app-'));
  t.after(() => rmSync(app, { recursive: true, force: true }));
  chmodSync(app, 0o755);
  writeFileSync(join(app, 'worker.mjs'), snippet('kfcgi-worker'));
  const environment = Object.fromEntries(
    substitute(snippet('kfcgi-env'), [
      ['/srv/app', app],
      ['/usr/bin/node', process.execPath],
    ])
      .split('\n')
      .filter(Boolean)
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );
  const dir = tempDir(t, 'gatehouse-deploy-kfcgi-');
  chmodSync(dir, 0o755);
  const socketUnit = 'gatehouse-kfcgi@.socket';
  const socket = substitute(unitValue(socketUnit, 'ListenStream'), [
    ['/run/gatehouse-kfcgi', dir],
    ['%i', 'app'],
  ]);
  const { command } = gatehouseOnPath(t);
  const notify = notifyListener(t, join(dir, 'notify'));
  const words = execWords(substitute(unitValue('gatehouse-kfcgi@.service', 'ExecStart'), [['/usr/bin/gatehouse', command]]), environment);
  const pool: RunningProcess = startActivated(t, socket, words, { env: { NOTIFY_SOCKET: notify.address, PATH: process.env.PATH! } });
  await waitUntil(() => /Listening on .* as 3\./.test(pool.output()), 'the socket', 15_000, pool.output);
  applySocketUnit(socketUnit, socket);
  const url = await nginxWith(
    t,
    substitute(snippet('nginx-kfcgi'), [
      ['/run/gatehouse-kfcgi/app.sock', socket],
      ['include fastcgi_params;', 'include /etc/nginx/fastcgi_params;'],
    ]),
  );
  const response = await httpRequest(`${url}/app/hello`);
  assert.equal(response.status, 200, pool.output());
  const worker = Number(/^hello from worker (\d+)\n$/.exec(response.body.toString())?.[1]);
  assert.ok(worker > 0, response.body.toString());
  assert.deepEqual(credentialsOf(worker).uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid], 'the workers run as -U www-data');
  await waitUntil(() => stateLines(notify.messages()).includes('READY=1'), 'READY=1', 15_000, pool.output);
});

/** serve with its logs in `log`, as the guide's configuration has them; returns a function that makes one request. */
async function serveWithLogs(t: TestContext, log: string): Promise<{ serve: RunningProcess; request: (path: string) => Promise<number> }> {
  const site = publicDir(t, 'gatehouse-deploy-logs-');
  mkdirSync(join(site, 'html'), { mode: 0o755 });
  writeFileSync(join(site, 'html', 'index.html'), 'hi\n');
  const port = await freePort();
  writeFileSync(
    join(site, 'serve.toml'),
    substitute(snippet('serve-config'), [
      ['*:80', `127.0.0.1:${port}`],
      ['/var/www/html', join(site, 'html')],
      ['/usr/lib/cgi-bin', join(site, 'cgi-bin')],
      ['/var/log/gatehouse', log],
    ]),
  );
  const serve = startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'serve', '--config', join(site, 'serve.toml')]);
  await waitForListener({ host: '127.0.0.1', port }, { process: serve, timeoutMs: 15_000 });
  return { serve, request: async (path) => (await httpRequest(`http://127.0.0.1:${port}${path}`)).status };
}

/** A log directory as the guide's preparation makes it (www-data:adm, 0750), and a logrotate configuration from `name`. */
function rotationSetup(t: TestContext, name: string): { log: string; config: string; state: string } {
  const dir = tempDir(t, 'gatehouse-deploy-rotate-');
  chmodSync(dir, 0o755);
  const log = join(dir, 'log');
  mkdirSync(log);
  chownSync(log, WWW.uid, lookupGroupId('adm')!);
  chmodSync(log, 0o750);
  const config = join(dir, 'gatehouse.logrotate');
  writeFileSync(config, substitute(snippet(name), [['/var/log/gatehouse', log]]));
  chmodSync(config, 0o644);
  return { log, config, state: join(dir, 'state') };
}

const lines = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8') : '');

/** A logrotate configuration without its comments and blank lines: what logrotate reads. */
const logrotateDirectives = (text: string) =>
  text
    .split('\n')
    .filter((line) => line.trim() !== '' && !line.trim().startsWith('#'))
    .join('\n');

test('contrib/logrotate/gatehouse is the snippet the guide shows and tests, comments aside', () => {
  // The guide's block is what the rotation test below runs; the shipped file is what operators install.
  const shipped = readFileSync(join(REPO_ROOT, 'contrib/logrotate/gatehouse'), 'utf8');
  assert.equal(logrotateDirectives(shipped), logrotateDirectives(snippet('logrotate-usr1')));
});

test('log rotation with copytruncate: the old lines in access.log.1, the next ones in access.log', asRoot, async (t) => {
  const logrotate = requireProgram('/usr/sbin/logrotate');
  const { log, config, state } = rotationSetup(t, 'logrotate-copytruncate');
  const { request } = await serveWithLogs(t, log);
  assert.equal(await request('/index.html?before'), 200);
  await waitUntil(() => lines(join(log, 'access.log')).includes('?before'), 'the first line');
  const rotated = await runShell(t, `${logrotate} --force --state ${state} ${config}`, process.env);
  assert.equal(rotated.code, 0, rotated.output);
  assert.match(lines(join(log, 'access.log.1')), /\?before/);
  assert.equal(await request('/index.html?after'), 200);
  await waitUntil(
    () => lines(join(log, 'access.log')).includes('?after'),
    'the next line in access.log',
    15_000,
    () => lines(join(log, 'access.log')),
  );
  assert.doesNotMatch(lines(join(log, 'access.log')), /\?before/);
});

test('log rotation with mv and SIGUSR1: the next lines land in the new file', asRoot, async (t) => {
  const logrotate = requireProgram('/usr/sbin/logrotate');
  const { log, config, state } = rotationSetup(t, 'logrotate-usr1');
  const { serve, request } = await serveWithLogs(t, log);
  // systemctl stands in for systemd as process 1 (absent here): the postrotate command, checked word for word, signals serve.
  const bin = tempDir(t, 'gatehouse-deploy-systemctl-');
  writeFileSync(
    join(bin, 'systemctl'),
    `#!/bin/sh\n[ "$*" = "kill --kill-whom=main --signal=USR1 gatehouse-serve.service" ] || exit 64\nexec kill -USR1 ${serve.child.pid}\n`,
    { mode: 0o755 },
  );
  assert.equal(await request('/index.html?before'), 200);
  await waitUntil(() => lines(join(log, 'access.log')).includes('?before'), 'the first line');
  const rotated = await runShell(t, `${logrotate} --force --state ${state} ${config}`, {
    ...process.env,
    PATH: `${bin}:${process.env.PATH}`,
  });
  assert.equal(rotated.code, 0, rotated.output);
  assert.match(lines(join(log, 'access.log.1')), /\?before/);
  assert.equal(statSync(join(log, 'access.log')).uid, WWW.uid, 'logrotate made the new file for www-data');
  assert.equal(await request('/index.html?after'), 200);
  await waitUntil(
    () => lines(join(log, 'access.log')).includes('?after'),
    'the next line in the new access.log',
    15_000,
    () => lines(join(log, 'access.log')),
  );
  assert.equal(serve.child.exitCode, null);
});

test('upgrading: the installed command names its version and accepts the configuration', asRoot, async (t) => {
  const etc = tempDir(t, 'gatehouse-deploy-upgrade-');
  const site = publicDir(t, 'gatehouse-deploy-upgrade-site-');
  mkdirSync(join(site, 'html'));
  writeFileSync(
    join(etc, 'serve.toml'),
    substitute(snippet('serve-config'), [
      ['*:80', '127.0.0.1:8080'],
      ['/var/www/html', join(site, 'html')],
      ['/usr/lib/cgi-bin', join(site, 'cgi-bin')],
      ['/var/log/gatehouse', site],
    ]),
  );
  const result = await runShell(t, substitute(snippet('upgrade-check'), [['/etc/gatehouse', etc]]), gatehouseOnPath(t).env);
  assert.equal(result.code, 0, result.output);
  assert.match(result.output, /^gatehouse \d+\.\d+\.\d+/m);
  assert.match(result.output, /configuration OK/);
});

/**
 * Never root by accident (issue 12, item 2): started as root, `gatehouse
 * serve` and `gatehouse cgid --fastcgi` bind and open as root, then run the
 * front, the cgid daemon and the scripts as the configured user. What each
 * process runs as is read from /proc, not from what gatehouse says.
 * These tests need root (CI runs as root).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FastCGIClient } from '../../src/fastcgi/client/index.js';
import { groupList, lookupUser } from '../../src/sys/index.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { childrenOf, commandLine, credentialsFromText, credentialsOf, ID_SCRIPT, waitUntil } from '../kit/deploy.js';
import { GATEHOUSE_MAIN } from '../kit/paths.js';
import { waitForText } from '../kit/wait.js';
import { runGatehouse, startGatehouse } from '../kit/serve.js';

const asRoot = { skip: process.getuid?.() !== 0 ? 'switching users needs root (CI runs as root)' : false };
const WWW = lookupUser('www-data')!;
const NOBODY = lookupUser('nobody')!;

/** A site other users can read: a document root and a cgi-bin with the id script, in a 0755 temp dir. */
function site(t: TestContext): { dir: string; www: string; cgi: string; errorLog: string } {
  const dir = tempDir(t, 'gatehouse-deploy-priv-');
  chmodSync(dir, 0o755);
  const www = join(dir, 'www');
  const cgi = join(dir, 'cgi');
  mkdirSync(www, { mode: 0o755 });
  mkdirSync(cgi, { mode: 0o755 });
  writeFileSync(join(www, 'a.txt'), 'file a\n');
  writeFileSync(join(cgi, 'id.sh'), ID_SCRIPT, { mode: 0o755 });
  return { dir, www, cgi, errorLog: join(dir, 'error.log') };
}

/** All four uids and gids are the account's, and the groups are exactly its groups (never root's). */
function assertRunsAs(
  label: string,
  ids: { uids: number[]; gids: number[]; groups: number[] },
  uid: number,
  gid: number,
  name: string,
): void {
  assert.deepEqual(ids.uids, [uid, uid, uid, uid], `${label}: uids ${ids.uids.join(' ')}`);
  assert.deepEqual(ids.gids, [gid, gid, gid, gid], `${label}: gids ${ids.gids.join(' ')}`);
  assert.deepEqual([...ids.groups].sort(), groupList(name, gid).sort(), `${label}: groups ${ids.groups.join(' ')}`);
}

async function daemonPidFrom(errorLog: string): Promise<number> {
  const pid = await waitUntil(
    () => /CGI scripts through the cgid daemon \(pid (\d+)\)/.exec(readFileSync(errorLog, 'utf8'))?.[1],
    'the daemon named in the error log',
  );
  return Number(pid);
}

test('serve started as root without user refuses to start, with one line naming the option', asRoot, async (t) => {
  const { www } = site(t);
  const result = await runGatehouse(['serve', '--listen', '127.0.0.1:1', '--docroot', www], { asWritten: true });
  assert.equal(result.code, 1);
  assert.match(
    result.stderr,
    /^gatehouse serve: started as root without user: .*user = "www-data".*user = "root" to keep root on purpose\n$/,
  );
  const check = await runGatehouse(['serve', '--listen', '127.0.0.1:1', '--docroot', www, '--check'], { asWritten: true });
  assert.equal(check.code, 1, '--check refuses it too');
  assert.equal(check.stderr, result.stderr);
});

test('--check names a user or group that does not exist, in every account key; cgid --fastcgi refuses them at start', async (t) => {
  const { dir, www } = site(t);
  const config = join(dir, 'serve.toml');
  writeFileSync(
    config,
    'listen = ["127.0.0.1:1"]\nuser = "gh-no-such-user"\ngroup = "gh-no-such-group"\nsocket-user = "gh-no-such-sock-user"\nsocket-group = "gh-no-such-sock-group"\n' +
      `docroot = "${www}"\n`,
  );
  const check = await runGatehouse(['serve', '--config', config, '--check'], { asWritten: true });
  assert.equal(check.code, 1, check.stderr);
  for (const [key, what, name] of [
    ['user', 'user', 'gh-no-such-user'],
    ['group', 'group', 'gh-no-such-group'],
    ['socket-user', 'user', 'gh-no-such-sock-user'],
    ['socket-group', 'group', 'gh-no-such-sock-group'],
  ])
    assert.ok(check.stderr.includes(`${key}: there is no ${what} "${name}" on this system`), `${key} in:\n${check.stderr}`);
  assert.equal(check.stdout, '', 'nothing says "configuration OK"');

  const face = await runGatehouse(['cgid', '--fastcgi', `unix:${join(dir, 'face.sock')}`, '--user', 'gh-no-such-user'], {
    asWritten: true,
  });
  assert.equal(face.code, 1, face.stderr);
  assert.match(face.stderr, /^gatehouse cgid: --user: there is no user "gh-no-such-user" on this system/);
});

test(
  'serve --user www-data: the front, the cgid daemon and the scripts run as www-data; the daemon socket is theirs',
  asRoot,
  async (t) => {
    const { dir, www, cgi, errorLog } = site(t);
    const runtime = join(dir, 'run');
    const server = await startGatehouse(t, 'serve', [
      '--user',
      'www-data',
      '--docroot',
      www,
      '--cgi-bin',
      cgi,
      '--runtime-dir',
      runtime,
      '--error-log',
      errorLog,
      '--access-log',
      'off',
    ]);
    const script = await httpRequest(`${server.base}/cgi-bin/id.sh`);
    assert.equal(script.status, 200, script.body.toString());
    assertRunsAs('the script', credentialsFromText(script.body.toString()), WWW.uid, WWW.gid, 'www-data');
    assertRunsAs('the front', credentialsOf(server.child.pid!), WWW.uid, WWW.gid, 'www-data');
    const daemon = await daemonPidFrom(errorLog);
    assert.ok(commandLine(daemon).includes(' cgid '), commandLine(daemon));
    assertRunsAs('the cgid daemon', credentialsOf(daemon), WWW.uid, WWW.gid, 'www-data');
    assert.equal((await httpRequest(`${server.base}/a.txt`)).body.toString(), 'file a\n');
    // The runtime directory and the daemon's socket belong to www-data, private to it.
    const runtimeStat = statSync(runtime);
    assert.equal(runtimeStat.uid, WWW.uid);
    assert.equal(runtimeStat.mode & 0o777, 0o700);
    const socket = statSync(join(runtime, `cgisock.${server.child.pid}`));
    assert.equal(socket.uid, WWW.uid);
    assert.equal(socket.mode & 0o777, 0o600);
    assert.match(readFileSync(errorLog, 'utf8'), /running as www-data \(uid 33, gid 33 www-data\)/);
  },
);

test(
  'serve --user www-data with a suexec route: the daemon alone keeps root; other scripts run as www-data, the route as its user',
  asRoot,
  async (t) => {
    const { dir, www, cgi, errorLog } = site(t);
    // A suexec directory owned by nobody:nogroup (uid and gid 65534, above the minimums), writable by nobody else.
    const suexecDir = join(dir, 'as-nobody');
    mkdirSync(suexecDir, { mode: 0o755 });
    writeFileSync(join(suexecDir, 'id.sh'), ID_SCRIPT, { mode: 0o755 });
    chownSync(join(suexecDir, 'id.sh'), NOBODY.uid, NOBODY.gid);
    const config = join(dir, 'serve.toml');
    writeFileSync(
      config,
      `user = "www-data"\ndocroot = "${www}"\ncgi-bin = "${cgi}"\nruntime-dir = "${join(dir, 'run')}"\nerror-log = "${errorLog}"\naccess-log = "off"\n` +
        `[[script-alias]]\nurl = "/nobody/"\ndir = "${suexecDir}"\nuser = "nobody"\ngroup = "nogroup"\n`,
    );
    const server = await startGatehouse(t, 'serve', ['--config', config, '--user', 'www-data']);
    const plain = await httpRequest(`${server.base}/cgi-bin/id.sh`);
    assert.equal(plain.status, 200, plain.body.toString());
    assertRunsAs('a script of no suexec route', credentialsFromText(plain.body.toString()), WWW.uid, WWW.gid, 'www-data');
    const suexec = await httpRequest(`${server.base}/nobody/id.sh`);
    assert.equal(suexec.status, 200, `${suexec.body.toString()}\n${readFileSync(errorLog, 'utf8')}`);
    assertRunsAs('the suexec script', credentialsFromText(suexec.body.toString()), NOBODY.uid, NOBODY.gid, 'nobody');
    assertRunsAs('the front', credentialsOf(server.child.pid!), WWW.uid, WWW.gid, 'www-data');
    assert.deepEqual(credentialsOf(await daemonPidFrom(errorLog)).uids, [0, 0, 0, 0], 'the daemon keeps root for the suexec route');
    // A front that dropped root cannot signal the daemon that kept it, and the kernel does not deliver the parent-death
    // signal across that either: the daemon watches its lifeline, and goes with its front however the front ends.
    const daemon = await daemonPidFrom(errorLog);
    server.child.kill('SIGKILL');
    await server.exited;
    await waitUntil(() => !commandLine(daemon).includes(' cgid '), 'the root daemon to exit with its killed front');
  },
);

test('serve --user www-data --cgi-spawn in-process: the front starts the scripts, as www-data', asRoot, async (t) => {
  const { www, cgi, errorLog } = site(t);
  const server = await startGatehouse(t, 'serve', [
    '--user',
    'www-data',
    '--cgi-spawn',
    'in-process',
    '--docroot',
    www,
    '--cgi-bin',
    cgi,
    '--error-log',
    errorLog,
  ]);
  const script = await httpRequest(`${server.base}/cgi-bin/id.sh`);
  assertRunsAs('the script', credentialsFromText(script.body.toString()), WWW.uid, WWW.gid, 'www-data');
  assertRunsAs('the front', credentialsOf(server.child.pid!), WWW.uid, WWW.gid, 'www-data');
});

test('serve user = "root" on purpose: allowed, and logged as a warning', asRoot, async (t) => {
  const { www, cgi, errorLog } = site(t);
  const server = await startGatehouse(t, 'serve', ['--user', 'root', '--docroot', www, '--cgi-bin', cgi, '--error-log', errorLog]);
  const script = await httpRequest(`${server.base}/cgi-bin/id.sh`);
  assert.deepEqual(credentialsFromText(script.body.toString()).uids, [0, 0, 0, 0]);
  // Logged in a batch at the start, into a file the answer does not wait for: waited for.
  await waitForText(errorLog, / warn serve\[\d+\]: running as root on purpose \(user root\)/, 'the warning about root');
});

test('cgid --fastcgi: refused as root without --user; with --user www-data the face and its scripts run as www-data', asRoot, async (t) => {
  const { dir, cgi } = site(t);
  const socket = join(dir, 'face.sock');
  const refused = await runGatehouse(['cgid', '--fastcgi', `unix:${socket}`], { asWritten: true });
  assert.equal(refused.code, 1);
  assert.match(
    refused.stderr,
    /^gatehouse cgid: started as root without --user: every CGI script would run as root; give --user www-data .*--user root to keep root on purpose\n$/,
  );

  const face = startProcess(t, process.execPath, [GATEHOUSE_MAIN, 'cgid', '--fastcgi', `unix:${socket}`, '--user', 'www-data']);
  await waitForListener({ path: socket }, { process: face, timeoutMs: 15_000 });
  await waitUntil(() => /^ready /m.test(face.output()), 'the ready line', 15_000, face.output);
  const client = new FastCGIClient({ address: `unix:${socket}` });
  t.after(() => client.close());
  const answer = await client.fetchAll({
    params: { REQUEST_METHOD: 'GET', SCRIPT_FILENAME: join(cgi, 'id.sh'), SCRIPT_NAME: '/id.sh', GATEWAY_INTERFACE: 'CGI/1.1' },
  });
  assertRunsAs('the script', credentialsFromText(answer.stdout.toString()), WWW.uid, WWW.gid, 'www-data');
  assertRunsAs('the face', credentialsOf(face.child.pid!), WWW.uid, WWW.gid, 'www-data');
  // The socket was given to www-data (the default --socket-user is --user), mode 0660 from bind on.
  const stat = statSync(socket);
  assert.equal(stat.uid, WWW.uid);
  assert.equal(stat.mode & 0o777, 0o660);
});

test('gatehouse example started as root picks www-data for the front, the scripts and the FastCGI app, and says so', asRoot, async (t) => {
  const server = await startGatehouse(t, 'example', [], { cwd: tempDir(t) });
  await waitUntil(
    () => /run as www-data \(uid 33, gid 33 www-data\)/.test(server.output()),
    'the line naming the user',
    15_000,
    server.output,
  );
  const env = await httpRequest(`${server.base}/cgi-bin/env.sh`);
  assert.equal(env.status, 200);
  const app = await httpRequest(`${server.base}/app/hello`);
  assert.equal(app.status, 200, app.body.toString());
  const front = server.child.pid!;
  assertRunsAs('the example front', credentialsOf(front), WWW.uid, WWW.gid, 'www-data');
  const children = childrenOf(front);
  const appPid = children.find((pid) => commandLine(pid).includes('fastcgi-app.mjs'));
  const daemon = children.find((pid) => commandLine(pid).includes(' cgid '));
  assert.ok(appPid && daemon, children.map(commandLine).join('\n'));
  // Started with child_process.spawn's uid and gid: libuv drops every supplementary group, so none of root's remain.
  const appIds = credentialsOf(appPid);
  assert.deepEqual(appIds.uids, [WWW.uid, WWW.uid, WWW.uid, WWW.uid]);
  assert.deepEqual(appIds.gids, [WWW.gid, WWW.gid, WWW.gid, WWW.gid]);
  assert.ok(
    appIds.groups.every((gid) => groupList('www-data', WWW.gid).includes(gid)),
    `the app's groups: ${appIds.groups.join(' ')}`,
  );
  assertRunsAs('the cgid daemon', credentialsOf(daemon), WWW.uid, WWW.gid, 'www-data');
});

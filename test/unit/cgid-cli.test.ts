/**
 * `gatehouse cgid`: the option table against the manual (both ways), sizes,
 * ScriptSock paths and directory checks, suexec route matching.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CGID_OPTIONS, cgidUsage } from '../../src/cli/cgid.js';
import { runAsFor } from '../../src/spawn/posix-spawner.js';
import { checkSocketDirectory, scriptSockPath } from '../../src/cgid/socket-path.js';
import { parseSpawnMode } from '../../src/spawn/modes.js';
import { DAEMON_NODE_FLAGS } from '../../src/cgid/supervisor.js';
import { CGID_SUEXEC_MIN_GID, CGID_SUEXEC_MIN_UID } from '../../src/limits.js';
import { tempDir } from '../kit/process.js';

const manual = readFileSync(fileURLToPath(new URL('../../../man/gatehouse-cgid.8', import.meta.url)), 'utf8');

test('every option in the table is in the manual with its argument, and in --help', () => {
  for (const option of CGID_OPTIONS) {
    const item = `.It Fl -${option.name}${option.argument ? ` Ar ${option.argument}` : ''}`;
    assert.ok(manual.includes(item), `man/gatehouse-cgid.8 lacks "${item}"`);
    assert.ok(cgidUsage().includes(`--${option.name}`), `--help lacks --${option.name}`);
  }
});

test('every option the manual documents is in the table', () => {
  const known = new Set(CGID_OPTIONS.map((option) => option.name));
  for (const [, flag] of manual.matchAll(/^\.It Fl -([a-z-]+)/gm))
    assert.ok(known.has(flag!), `the manual documents --${flag}, which the table lacks`);
});

test('the Node flags serve gives its daemon are the ones the manual lists, and its example for running the daemon alone names them', () => {
  const section = manual.slice(manual.indexOf('.Ss Node flags of the daemon'), manual.indexOf('.Sh OPTIONS'));
  const documented = [...section.matchAll(/^\.It Cm (--\S+)$/gm)].map((match) => match[1]);
  assert.deepEqual(documented, [...DAEMON_NODE_FLAGS]);
  assert.ok(section.includes(`.Dl node ${DAEMON_NODE_FLAGS.join(' ')} /usr/bin/gatehouse cgid`));
});

test('the manual states the suexec defaults the code uses', () => {
  assert.ok(manual.includes(`lowest uid a route may run scripts as (default ${CGID_SUEXEC_MIN_UID})`));
  assert.ok(manual.includes(`lowest gid a route may run scripts as (default ${CGID_SUEXEC_MIN_GID})`));
});

test('ScriptSock: prefix + "." + pid, relative prefixes under the runtime directory', () => {
  assert.equal(scriptSockPath('cgisock', '/run/gatehouse', 1234), '/run/gatehouse/cgisock.1234');
  assert.equal(scriptSockPath('/var/run/cgid.sock', '/run/gatehouse', 99), '/var/run/cgid.sock.99');
  assert.equal(scriptSockPath('sub/cgisock', '/run/g', 7), '/run/g/sub/cgisock.7');
});

test('the socket directory must not be writable by group or others', (t) => {
  const base = tempDir(t, 'gatehouse-cgid-dir-');
  const dir = (name: string, mode: number) => {
    const path = join(base, name);
    mkdirSync(path);
    chmodSync(path, mode);
    return path;
  };
  assert.doesNotThrow(() => checkSocketDirectory(dir('private', 0o700)));
  assert.doesNotThrow(() => checkSocketDirectory(dir('readable', 0o755)));
  assert.throws(() => checkSocketDirectory(dir('world', 0o777)), /writable by every user \(mode 0777\)/);
  assert.throws(() => checkSocketDirectory(dir('sticky', 0o1777)), /writable by every user \(mode 1777\)/);
  assert.throws(() => checkSocketDirectory(dir('group', 0o770)), /writable by its group \(mode 0770\)/);
  assert.throws(() => checkSocketDirectory(join(base, 'missing')), /cannot be used/);
});

test('suexec routes: the longest directory containing the script wins; others run as the daemon', () => {
  const routes = [
    { directory: '/srv/www', user: 'www', group: 'www' },
    { directory: '/srv/www/alice/', user: 'alice', group: 'users' },
  ];
  assert.deepEqual(runAsFor('/srv/www/alice/cgi/x.cgi', routes), { user: 'alice', group: 'users', root: '/srv/www/alice/' });
  assert.deepEqual(runAsFor('/srv/www/index.cgi', routes), { user: 'www', group: 'www', root: '/srv/www' });
  assert.equal(runAsFor('/srv/wwwx/index.cgi', routes), null);
  assert.equal(runAsFor('/srv/www/x.cgi', undefined), null);
});

test('cgi-spawn accepts daemon, in-process and fork, and says what to write otherwise', () => {
  assert.equal(parseSpawnMode(undefined), 'daemon');
  assert.equal(parseSpawnMode('in-process'), 'in-process');
  assert.throws(() => parseSpawnMode('threads'), /cgi-spawn: "threads" is not a spawn mode; write one of daemon, in-process, fork/);
});

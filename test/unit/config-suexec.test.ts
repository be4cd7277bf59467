/**
 * [[script-alias]] user and group (suexec) reach the cgid daemon's spawn
 * policy; bad names, accounts that do not exist and ids below the suexec
 * minimum are refused at load (so --check reports them), each naming the key.
 * Uses accounts every Debian system has: root, daemon (1), www-data (33).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadServeConfig } from '../../src/config/load.js';
import { ErrorCode } from '../../src/errors.js';
import { frontSpawnSettings } from '../../src/config/spawn-settings.js';

function withConfig(t: { after(fn: () => void): void }, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-suexec-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'users'));
  mkdirSync(join(dir, 'shared'));
  const file = join(dir, 'gatehouse.toml');
  writeFileSync(file, text);
  return file;
}

test('a script alias with user and group becomes a suexec route of the spawn policy', (t) => {
  const file = withConfig(
    t,
    `suexec-min-uid = 1\nsuexec-min-gid = 1\n[[script-alias]]\nurl = "/u/"\ndir = "users"\nuser = "www-data"\ngroup = "daemon"\n\n[[script-alias]]\nurl = "/s/"\ndir = "shared"\nuser = "daemon"\n\n[[script-alias]]\nurl = "/plain/"\ndir = "shared"\n`,
  );
  const config = loadServeConfig({ file });
  const settings = frontSpawnSettings(config);
  assert.deepEqual(settings.suexec, [
    { directory: join(file, '..', 'users'), user: 'www-data', group: 'daemon' },
    { directory: join(file, '..', 'shared'), user: 'daemon', group: 'daemon' },
  ]);
});

test('bad suexec names and a group without a user are refused with the key named', (t) => {
  const file = withConfig(
    t,
    `[[script-alias]]\nurl = "/u/"\ndir = "users"\nuser = "al ice;rm"\n\n[[script-alias]]\nurl = "/v/"\ndir = "users"\ngroup = "staff"\n`,
  );
  assert.throws(
    () => loadServeConfig({ file }),
    (error: ConfigError) => {
      assert.ok(
        error.problems.some((problem) => /script-alias\[0\]\.user: expected a user name/.test(problem)),
        error.message,
      );
      assert.ok(
        error.problems.some((problem) => /script-alias\[1\]\.group: set user too/.test(problem)),
        error.message,
      );
      return true;
    },
  );
});

test('--check: a suexec account that does not exist, or sits below suexec-min-uid/gid, is named with what to write', (t) => {
  const file = withConfig(
    t,
    `suexec-min-gid = 1
[[script-alias]]
url = "/a/"
dir = "users"
user = "gh-no-such-user"
group = "daemon"

[[script-alias]]
url = "/b/"
dir = "users"
user = "root"
group = "gh-no-such-group"

[[script-alias]]
url = "/c/"
dir = "shared"
user = "www-data"
group = "root"
`,
  );
  assert.throws(
    () => loadServeConfig({ file }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.equal(error.code, ErrorCode.CONFIG_INVALID);
      const expected = [
        /^script-alias\[0\]\.user: there is no user "gh-no-such-user" on this system; create it \(useradd\), or name an existing user$/,
        /^script-alias\[1\]\.user: root has uid 0, below suexec-min-uid \(1000\), so its scripts would all be refused; name a user with a uid of at least 1000, or lower suexec-min-uid$/,
        /^script-alias\[1\]\.group: there is no group "gh-no-such-group" on this system; create it \(groupadd\), or name an existing group$/,
        /^script-alias\[2\]\.user: www-data has uid 33, below suexec-min-uid \(1000\)/,
        /^script-alias\[2\]\.group: root has gid 0, below suexec-min-gid \(1\), so its scripts would all be refused; name a group with a gid of at least 1, or lower suexec-min-gid$/,
      ];
      assert.equal(error.problems.length, expected.length, error.message);
      for (const [index, pattern] of expected.entries()) assert.match(error.problems[index]!, pattern);
      return true;
    },
  );
});

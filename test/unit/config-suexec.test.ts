/** [[script-alias]] user and group (suexec) reach the cgid daemon's spawn policy; bad names are refused at load. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConfigError, loadServeConfig } from '../../src/config/load.js';
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
    `[[script-alias]]\nurl = "/u/"\ndir = "users"\nuser = "alice"\ngroup = "staff"\n\n[[script-alias]]\nurl = "/s/"\ndir = "shared"\nuser = "bob"\n\n[[script-alias]]\nurl = "/plain/"\ndir = "shared"\n`,
  );
  const config = loadServeConfig({ file });
  const settings = frontSpawnSettings(config);
  assert.deepEqual(settings.suexec, [
    { directory: join(file, '..', 'users'), user: 'alice', group: 'staff' },
    { directory: join(file, '..', 'shared'), user: 'bob', group: 'bob' },
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

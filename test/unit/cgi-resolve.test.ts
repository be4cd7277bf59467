import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, symlinkSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { normaliseUrlPath, resolveScript, resolveInRoutes, type ScriptRoute } from '../../src/cgi/resolve.js';
import { tempDir } from '../kit/process.js';

function layout(t: { after(fn: () => unknown): void }) {
  const root = tempDir(t, 'gatehouse-resolve-');
  const cgiBin = join(root, 'cgi-bin');
  const www = join(root, 'www');
  const outside = join(root, 'outside');
  for (const dir of [cgiBin, join(cgiBin, 'sub'), www, join(www, 'app'), outside]) mkdirSync(dir, { recursive: true });
  const script = (file: string, mode = 0o755) => {
    writeFileSync(file, '#!/bin/sh\necho\n');
    chmodSync(file, mode);
  };
  script(join(cgiBin, 'env.cgi'));
  script(join(cgiBin, 'nph-raw'));
  script(join(cgiBin, 'sub', 'deep.pl'));
  script(join(cgiBin, 'plain.txt'), 0o644);
  script(join(www, 'app', 'run.cgi'));
  writeFileSync(join(www, 'index.html'), 'hi');
  script(join(outside, 'evil.cgi'));
  writeFileSync(join(outside, 'secret'), 'secret');
  symlinkSync(join(outside, 'evil.cgi'), join(cgiBin, 'link.cgi'));
  symlinkSync(outside, join(www, 'out'));
  symlinkSync(join(cgiBin, 'env.cgi'), join(cgiBin, 'inside-link.cgi'));
  const alias: ScriptRoute = { kind: 'script-alias', urlPrefix: '/cgi-bin/', directory: cgiBin };
  const site: ScriptRoute = { kind: 'extensions', documentRoot: www, extensions: ['.cgi'] };
  return { cgiBin, www, alias, site };
}

test('normalising: segments decoded, dot segments resolved, refusals typed', () => {
  assert.deepEqual(normaliseUrlPath('/a//b/./c/../d%20e/'), {
    segments: ['a', 'b', 'd e'],
    bytewise: [false, false, false],
    trailingSlash: true,
  });
  assert.deepEqual(normaliseUrlPath('/a/%2e%2e/b'), { segments: ['b'], bytewise: [false], trailingSlash: false });
  // UTF-8 escapes decode to text; other bytes (Latin-1) are kept one character per byte, not refused (Apache accepts them).
  // Both read 'café'; `bytewise` tells them apart, so PATH_INFO can carry the byte e9 itself.
  assert.deepEqual(normaliseUrlPath('/caf%C3%A9/caf%E9'), {
    segments: ['caf\u00e9', 'caf\u00e9'],
    bytewise: [false, true],
    trailingSlash: false,
  });
  assert.deepEqual(normaliseUrlPath('/%e0%80'), { segments: ['\u00e0\u0080'], bytewise: [true], trailingSlash: false });
  const cases: Array<[string, number]> = [
    ['/../etc/passwd', 400],
    ['/a/../../etc', 400],
    ['/%2e%2e/etc', 400],
    ['/cgi-bin/a%2Fb', 404],
    ['/cgi-bin/a%00b', 404],
    ['/cgi-bin/a%5cb', 400],
    ['/cgi-bin/a\\b', 400],
    ['/cgi-bin/%zz', 400],
    ['/cgi-bin/a%4', 400],
    ['/cgi-bin/%', 400],
    ['relative', 400],
  ];
  for (const [raw, status] of cases) {
    const result = normaliseUrlPath(raw);
    assert.ok('kind' in result && result.kind === 'refused', raw);
    assert.equal(result.status, status, raw);
  }
});

test('ScriptAlias: SCRIPT_NAME and PATH_INFO split at the script; SCRIPT_FILENAME never holds PATH_INFO', async (t) => {
  const { cgiBin, alias } = layout(t);
  assert.deepEqual(await resolveScript('/cgi-bin/env.cgi/a%20b/c/', alias), {
    kind: 'script',
    scriptName: '/cgi-bin/env.cgi',
    scriptFilename: join(cgiBin, 'env.cgi'),
    pathInfo: '/a b/c/',
    contextPrefix: '/cgi-bin/',
    contextDocumentRoot: `${cgiBin}/`,
    nph: false,
  });
  const plain = await resolveScript('/cgi-bin//sub/./deep.pl', alias);
  assert.equal(
    plain.kind === 'script' && `${plain.scriptName}|${plain.pathInfo}|${plain.scriptFilename}`,
    `/cgi-bin/sub/deep.pl||${join(cgiBin, 'sub/deep.pl')}`,
  );
  const slash = await resolveScript('/cgi-bin/env.cgi/', alias);
  assert.equal(slash.kind === 'script' && slash.pathInfo, '/');
  // PATH_INFO whose decoded bytes are not UTF-8 is those bytes (Apache passes e9; text would make it c3 a9).
  const latin1 = await resolveScript('/cgi-bin/env.cgi/caf%E9/%C3%A9/', alias);
  assert.ok(latin1.kind === 'script' && Buffer.isBuffer(latin1.pathInfo));
  assert.equal(latin1.pathInfo.toString('hex'), Buffer.from('/caf\xe9/\xc3\xa9/', 'latin1').toString('hex'));
  const nph = await resolveScript('/cgi-bin/nph-raw', alias);
  assert.equal(nph.kind === 'script' && nph.nph, true);
  const inside = await resolveScript('/cgi-bin/inside-link.cgi', alias);
  assert.equal(inside.kind, 'script');
  assert.deepEqual(await resolveScript('/other/env.cgi', alias), { kind: 'no-match' });
});

test('ScriptAlias refuses directories, non-executables, missing files, symlinks out of the root, traversal', async (t) => {
  const { alias } = layout(t);
  const expectations: Array<[string, number]> = [
    ['/cgi-bin/sub', 403],
    ['/cgi-bin/sub/', 403],
    ['/cgi-bin/plain.txt', 403],
    ['/cgi-bin/missing.cgi', 404],
    ['/cgi-bin/link.cgi', 404],
    ['/cgi-bin/../outside/evil.cgi', -1],
    ['/cgi-bin/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd', 400],
    ['/cgi-bin/sub%2f..%2f..%2fenv.cgi', 404],
    ['/cgi-bin/env.cgi%00.txt', 404],
  ];
  for (const [raw, status] of expectations) {
    const result = await resolveScript(raw, alias);
    if (status === -1) assert.equal(result.kind, 'no-match', raw);
    else {
      assert.equal(result.kind, 'refused', raw);
      assert.equal(result.kind === 'refused' && result.status, status, raw);
    }
  }
});

test('extension handler: .cgi runs, other files are static, symlinked directories out of the root refused', async (t) => {
  const { www, site } = layout(t);
  const script = await resolveScript('/app/run.cgi/x', site);
  assert.equal(
    script.kind === 'script' && `${script.scriptName}|${script.pathInfo}|${script.contextPrefix}|${script.contextDocumentRoot}`,
    `/app/run.cgi|/x||${www}`,
  );
  assert.deepEqual(await resolveScript('/index.html', site), { kind: 'static', filename: join(www, 'index.html'), directory: false });
  assert.equal((await resolveScript('/index.html/extra', site)).kind, 'refused');
  const directory = await resolveScript('/app/', site);
  assert.equal(directory.kind === 'static' && directory.directory, true);
  for (const raw of ['/out/evil.cgi', '/out/secret']) {
    const result = await resolveScript(raw, site);
    assert.equal(result.kind === 'refused' && result.status, 404, raw);
  }
  const both = await resolveInRoutes('/cgi-bin/env.cgi', [layout(t).alias, site]);
  assert.equal(both.kind, 'script');
});

test('property: a resolved script never escapes its root and SCRIPT_NAME + PATH_INFO rebuild the normalised path', async (t) => {
  const { cgiBin, alias } = layout(t);
  const segment = fc.constantFrom('env.cgi', 'sub', 'deep.pl', '..', '.', '', '%2e%2e', '%2E.', 'a%20b', 'link.cgi', 'x');
  await fc.assert(
    fc.asyncProperty(fc.array(segment, { maxLength: 6 }), async (segments) => {
      const raw = `/cgi-bin/${segments.join('/')}`;
      const result = await resolveScript(raw, alias);
      if (result.kind !== 'script') return;
      assert.ok(result.scriptFilename.startsWith(`${cgiBin}/`), raw);
      assert.ok(result.scriptName === '' || result.scriptName.startsWith('/'));
      assert.ok(typeof result.pathInfo === 'string', 'these segments are all UTF-8');
      assert.ok(result.pathInfo === '' || result.pathInfo.startsWith('/'));
      const normalised = normaliseUrlPath(raw);
      assert.ok(!('kind' in normalised));
      const rebuilt = `/${normalised.segments.join('/')}${normalised.trailingSlash && normalised.segments.length > 0 ? '/' : ''}`;
      assert.equal(result.scriptName + result.pathInfo, rebuilt, raw);
    }),
    { numRuns: 300 },
  );
});

/**
 * Route selection of `gatehouse serve` (src/config/routes.ts), as a table:
 * patterns and endings first in the order written, then the longest prefix
 * among FastCGI routes and CGI directories, then the document root; and the
 * routes --check reports as never used.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteTable, scriptPart, type RouteTarget } from '../../src/config/routes.js';
import type { FastCGIRouteConfig, ServeConfig } from '../../src/config/schema.js';

type RouteConfig = Pick<ServeConfig, 'fastcgi' | 'cgiBin' | 'scriptAlias' | 'cgiExt'>;

function config(fastcgi: Array<Partial<FastCGIRouteConfig>>, more: Partial<RouteConfig> = {}): RouteConfig {
  return {
    fastcgi: fastcgi.map((route) => ({ url: '/', upstreams: ['127.0.0.1:9000'], ...route })),
    scriptAlias: [],
    cgiExt: [],
    ...more,
  };
}

const fastcgi = (index: number): RouteTarget => ({ kind: 'fastcgi', index });
const CGI: RouteTarget = { kind: 'cgi' };
const FILES: RouteTarget = { kind: 'document-root' };

function expectRoutes(routes: RouteConfig, cases: Array<[string, RouteTarget]>): void {
  const table = new RouteTable(routes);
  for (const [path, target] of cases) assert.deepEqual(table.select(path), target, path);
}

test('the php-fpm example: only PHP goes to php-fpm, static files and cgi-bin keep working', () => {
  const php = { extensions: ['.php'], splitPath: '.php', index: 'index.php' };
  expectRoutes(config([php], { cgiBin: '/srv/cgi-bin' }), [
    ['/index.php', fastcgi(0)],
    ['/dir/info.php', fastcgi(0)],
    ['/index.php/extra/path', fastcgi(0)],
    ['/', fastcgi(0)],
    ['/dir/', fastcgi(0)],
    ['/hello.txt', FILES],
    ['/php.txt', FILES],
    ['/.php', FILES],
    ['/cgi-bin/env.sh', CGI],
    // As nginx's regular expressions win over its prefixes: a PHP file under /cgi-bin/ is PHP.
    ['/cgi-bin/x.php', fastcgi(0)],
  ]);
  // The same with a regular expression, nginx's `location ~ \.php$`.
  expectRoutes(config([{ match: '\\.php$' }], { cgiBin: '/srv/cgi-bin' }), [
    ['/index.php', fastcgi(0)],
    ['/index.php/extra', FILES],
    ['/', FILES],
    ['/hello.txt', FILES],
    ['/cgi-bin/env.sh', CGI],
  ]);
  expectRoutes(config([{ match: '\\.php$', index: 'index.php' }]), [['/', fastcgi(0)]]);
});

test('before: a url = "/" route took every request, cgi-bin included; now the longest prefix wins', () => {
  expectRoutes(config([{ url: '/' }], { cgiBin: '/srv/cgi-bin' }), [
    ['/hello.txt', fastcgi(0)],
    ['/cgi-bin/env.sh', CGI],
    ['/cgi-bin', CGI],
    ['/cgi-binary', fastcgi(0)],
  ]);
});

test('prefixes: the longest wins across FastCGI routes and CGI directories, whatever the order', () => {
  const routes = config([{ url: '/app/' }, { url: '/app/api/' }, { url: '/tools/admin/' }], {
    scriptAlias: [{ url: '/tools/', dir: '/srv/tools' }],
  });
  expectRoutes(routes, [
    ['/app/x', fastcgi(0)],
    ['/app', fastcgi(0)],
    ['/app/api/v1', fastcgi(1)],
    ['/tools/run.sh', CGI],
    ['/tools/admin/x', fastcgi(2)],
    ['/apple', FILES],
    ['/other', FILES],
  ]);
});

test('patterns and endings: tried in the order written, the url prefix applies too, the first that fits wins', () => {
  const routes = config([
    { url: '/legacy/', extensions: ['.php'] },
    { extensions: ['.php', '.phtml'] },
    { match: '^/api/v[0-9]+/' },
    { url: '/api/' },
  ]);
  expectRoutes(routes, [
    ['/legacy/a.php', fastcgi(0)],
    ['/a.php', fastcgi(1)],
    ['/a.phtml', fastcgi(1)],
    ['/legacy/a.phtml', fastcgi(1)],
    ['/api/v2/users', fastcgi(2)],
    ['/api/users', fastcgi(3)],
    ['/a.PHP', FILES],
  ]);
});

test('the script part an ending is tested on is the one the FastCGI handler computes', () => {
  assert.equal(scriptPart('/a/b.php/c/d', { splitPath: '.php' }), '/a/b.php');
  assert.equal(scriptPart('/a/b.php/c/d', {}), '/a/b.php/c/d');
  assert.equal(scriptPart('/a/', { index: 'index.php' }), '/a/index.php');
  assert.equal(scriptPart('/a/', {}), '/a/');
  assert.equal(scriptPart('/x.php.d/y', { splitPath: '.php' }), '/x.php.d/y');
});

test('shadowed routes are named with the route that takes their paths and what to write instead', () => {
  const problems = new RouteTable(
    config(
      [
        { extensions: ['.php', '.phtml'] },
        { url: '/app/', extensions: ['.php'] },
        { match: '\\.cgi$' },
        { match: '\\.cgi$' },
        { url: '/same/' },
        { url: '/' },
        { url: '/app/', extensions: ['.php'], index: 'index.php' },
      ],
      {
        cgiBin: '/srv/cgi-bin',
        cgiExt: ['.cgi'],
        scriptAlias: [
          { url: '/same/', dir: '/x' },
          { url: '/cgi-bin/admin/', dir: '/y' },
          { url: '/tools/', dir: '/z' },
        ],
      },
    ),
  ).shadowed({ cgiExt: ['.cgi'] });
  assert.deepEqual(problems, [
    'fastcgi[1] (url = "/app/", extensions = [".php"]): never used: fastcgi[0] (url = "/", extensions = [".php", ".phtml"]) comes first and takes every path it would; remove it, or give it another url, match or extensions',
    'fastcgi[3] (url = "/", match = \'\\.cgi$\'): never used: fastcgi[2] (url = "/", match = \'\\.cgi$\') comes first and takes every path it would; remove it, or give it another url, match or extensions',
    'script-alias[0] (url = "/same/"): never used: fastcgi[4] (url = "/same/") has the same url and comes first; remove one, or change its url',
    'script-alias[1] (url = "/cgi-bin/admin/"): never used: cgi-bin (url = "/cgi-bin/") comes first and takes its paths (CGI directories are tried in order, cgi-bin first); list the longer url first, or choose another url',
    'cgi-ext: never used: fastcgi[5] (url = "/") takes every path no other route takes, so no .cgi file runs as CGI; give that route match or extensions instead of url = "/", or drop cgi-ext',
  ]);
  // fastcgi[6] differs from fastcgi[0] by its index: "/app/" reaches it as /app/index.php, which fastcgi[0] does not test.
  assert.ok(!problems.some((problem) => problem.startsWith('fastcgi[6]')));
});

test('a configuration without overlaps has nothing to report', () => {
  const routes = config([{ extensions: ['.php'], index: 'index.php', splitPath: '.php' }, { url: '/app/' }], {
    cgiBin: '/srv/cgi-bin',
    cgiExt: ['.cgi'],
    scriptAlias: [{ url: '/cgi-bin/admin/', dir: '/y' }],
  });
  // cgi-bin is tried first, so a longer alias under it is never reached: the one overlap here.
  assert.equal(new RouteTable(routes).shadowed(routes).length, 1);
  const clean = config([{ extensions: ['.php'] }, { url: '/app/' }], { cgiBin: '/srv/cgi-bin', cgiExt: ['.cgi'] });
  assert.deepEqual(new RouteTable(clean).shadowed(clean), []);
});

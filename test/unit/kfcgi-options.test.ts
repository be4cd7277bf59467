/**
 * kfcgi's option table: parsing (getopt-style, stopping at prog), validation
 * messages, and the table checked against man/gatehouse-kfcgi.8 both ways.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { OPTIONS, helpText, parseCommandLine, validateOptions, UsageError } from '../../src/kfcgi/options.js';
import { KFCGI_DEFAULT_IDLE_SECONDS, KFCGI_DEFAULT_JAIL, KFCGI_DEFAULT_SOCKET_PATH, KFCGI_DEFAULT_WORKERS } from '../../src/limits.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const manual = readFileSync(join(repoRoot, 'man/gatehouse-kfcgi.8'), 'utf8');

test('every option in the table is documented in the manual, with its value name and long form', () => {
  for (const spec of OPTIONS) {
    const metavar = 'metavar' in spec ? ` Ar ${spec.metavar}` : '';
    const item = `.It Fl ${spec.short}${metavar} Pq Fl -${spec.long}`;
    assert.ok(manual.includes(item), `man/gatehouse-kfcgi.8 lacks "${item}"`);
    if (spec.short !== 'h') {
      const synopsis =
        spec.kind === 'flag'
          ? new RegExp(`^\\.Op Fl [a-zA-Z]*${spec.short}[a-zA-Z]*$`, 'm')
          : new RegExp(`^\\.Op Fl ${spec.short} Ar ${'metavar' in spec ? spec.metavar : ''}$`, 'm');
      assert.match(manual, synopsis, `the SYNOPSIS lacks -${spec.short}`);
    }
  }
});

test('every option the manual documents is in the table', () => {
  const documented = [...manual.matchAll(/^\.It Fl ([a-zA-Z])\b/gm)].map((match) => match[1]!);
  assert.ok(documented.length >= OPTIONS.length);
  const known = new Set<string>(OPTIONS.map((spec) => spec.short));
  for (const short of documented) assert.ok(known.has(short), `the manual documents -${short}, which the option table lacks`);
});

test('the manual states the defaults the code uses', () => {
  assert.ok(manual.includes(`(default ${KFCGI_DEFAULT_WORKERS})`), 'default workers');
  assert.ok(manual.includes(`(default ${KFCGI_DEFAULT_IDLE_SECONDS})`), 'default waittime');
  assert.ok(manual.includes(`.Pa ${KFCGI_DEFAULT_SOCKET_PATH}`), 'default socket');
  assert.ok(manual.includes(`.Pa ${KFCGI_DEFAULT_JAIL}`), 'default jail');
  assert.ok(manual.includes('somaxconn'), 'default backlog');
});

test('--help lists every option with its default', () => {
  const help = helpText();
  for (const spec of OPTIONS) {
    assert.ok(help.includes(`-${spec.short}`) && help.includes(`--${spec.long}`), `--help lacks -${spec.short}`);
    if ('defaultText' in spec) assert.ok(help.includes(`(default: ${spec.defaultText})`));
  }
});

test('options stop at prog: its own arguments are never read as ours', () => {
  const parsed = parseCommandLine(['-d', '-n', '4', '/usr/bin/php-cgi', '-c', '/etc/php.ini', '-n', '9']);
  assert.deepEqual(parsed.options, { foreground: true, workers: 4 });
  assert.deepEqual(parsed.program, ['/usr/bin/php-cgi', '-c', '/etc/php.ini', '-n', '9']);
});

test('bundled flags, attached values, long options and --', () => {
  assert.deepEqual(parseCommandLine(['-drv', '-n4', '-N', '8', 'prog']).options, {
    foreground: true,
    variable: true,
    verbose: true,
    workers: 4,
    'max-workers': 8,
  });
  assert.deepEqual(parseCommandLine(['-dn', '2', 'prog']).options, { foreground: true, workers: 2 });
  assert.deepEqual(parseCommandLine(['--workers=5', '--jail', '/', '--', '-prog-with-dash']), {
    options: { workers: 5, jail: '/' },
    program: ['-prog-with-dash'],
  });
});

test('bad values say which option and what is allowed', () => {
  assert.throws(
    () => parseCommandLine(['-n', '0', 'prog']),
    (error: UsageError) => /^-n workers: expected a whole number from 1 to \d+, got "0"$/.test(error.message),
  );
  assert.throws(() => parseCommandLine(['-n', 'three', 'prog']), /-n workers: expected a whole number from 1 to \d+, got "three"/);
  assert.throws(() => parseCommandLine(['-l', '-5', 'prog']), /-l backlog: expected a whole number from 1 to \d+, got "-5"/);
  assert.throws(() => parseCommandLine(['-x', 'prog']), /unknown option -x/);
  assert.throws(() => parseCommandLine(['--nope', 'prog']), /unknown option --nope/);
  assert.throws(() => parseCommandLine(['-s']), /-s needs a value \(sockpath\)/);
  assert.throws(() => parseCommandLine(['--foreground=1', 'prog']), /--foreground takes no value/);
});

test('-s: paths, host:port and [v6]:port, read by the address grammar every command shares', (t) => {
  const { dir, program } = scratch(t);
  const listen = (socket: string) => validateOptions(parseCommandLine(['-p', '/', '-s', socket, program]), {}).listen;
  assert.deepEqual(listen('127.0.0.1:9000'), { kind: 'tcp', host: '127.0.0.1', port: 9000 });
  assert.deepEqual(listen('[::1]:9001'), { kind: 'tcp', host: '::1', port: 9001 });
  assert.deepEqual(listen(join(dir, 'app.sock')), { kind: 'unix', path: join(dir, 'app.sock') });
  assert.match(problems(['-p', '/', '-s', '127.0.0.1:0', program]), /^-s "127\.0\.0\.1:0": the port must be from 1 to 65535/);
  assert.match(problems(['-p', '/', '-s', '300.1.1.1:80', program]), /^-s "300\.1\.1\.1:80": 300\.1\.1\.1 is not an IP address/);
  assert.match(problems(['-p', '/', '-s', '[::1g]:80', program]), /::1g is not an IPv6 address/);
});

function scratch(t: { after(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-kfcgi-unit-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const program = join(dir, 'prog');
  writeFileSync(program, '#!/bin/sh\n');
  chmodSync(program, 0o755);
  return { dir, program };
}

function problems(argv: string[]): string {
  try {
    validateOptions(parseCommandLine(argv), {});
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    return error.message;
  }
  assert.fail(`no error for ${argv.join(' ')}`);
}

test('validation: impossible combinations fail with what to change', (t) => {
  const { dir, program } = scratch(t);
  const socket = join(dir, 's.sock');
  assert.match(
    problems(['-r', '-n', '4', '-N', '2', '-p', '/', '-s', socket, program]),
    /-N 2 is below -n 4: .*raise -N to at least 4 or lower -n/,
  );
  assert.match(
    problems(['-p', join(dir, 'nowhere'), '-s', socket, program]),
    /the jail .*nowhere does not exist: create it, or pass -p DIR/,
  );
  assert.match(problems(['-U', 'no-such-user-kfcgi', '-p', '/', '-s', socket, program]), /-U no-such-user-kfcgi: no such user/);
  assert.match(problems(['-u', 'no-such-user-kfcgi', '-p', '/', '-s', socket, program]), /-u no-such-user-kfcgi: no such user/);
  assert.match(problems(['-R', '10', '-p', '/', '-s', socket, program]), /-R counts connections .* add -r/);
  assert.match(problems(['-p', '/', '-s', socket]), /no prog given/);
  assert.match(problems(['-p', '/', '-s', join(dir, 'missing-dir/s.sock'), program]), /the socket's directory .* does not exist/);
  assert.match(problems(['-p', '/', '-s', socket, join(dir, 'absent')]), /prog .*absent does not exist/);
  assert.match(problems(['-r', '-p', '/', '-s', socket, '/usr/bin/php-cgi']), /php-cgi does not implement the FastCGI Extensions/);
  assert.match(problems(['-a', 'example.com', '-p', '/', '-s', '127.0.0.1:9000', program]), /-a: example\.com is not an IP address/);
  assert.match(problems(['-a', 'fe80::1%eth0', '-p', '/', '-s', '127.0.0.1:9000', program]), /-a: fe80::1%eth0 is not an IP address/);
  // Several problems are reported together.
  const many = problems(['-r', '-n', '4', '-N', '2', '-U', 'no-such-user-kfcgi', '-p', '/', '-s', socket]).split('\n');
  assert.equal(many.length, 3);
});

test('validation: prog is looked up inside the jail', (t) => {
  const { dir } = scratch(t);
  mkdirSync(join(dir, 'fcgi-bin'));
  const message = process.getuid?.() === 0 ? problems(['-p', dir, '-s', join(dir, 's.sock'), '/fcgi-bin/app']) : '';
  if (process.getuid?.() === 0)
    assert.match(message, /prog \/fcgi-bin\/app was not found inside the jail .* \(looked for .*fcgi-bin\/app\)/);
  writeFileSync(join(dir, 'fcgi-bin/app'), '#!/bin/sh\n');
  chmodSync(join(dir, 'fcgi-bin/app'), 0o755);
  if (process.getuid?.() === 0) {
    const config = validateOptions(parseCommandLine(['-p', dir, '-s', join(dir, 's.sock'), '/fcgi-bin/app', 'one']), {});
    assert.equal(config.program, '/fcgi-bin/app');
    assert.equal(config.programOutsideJail, join(dir, 'fcgi-bin/app'));
    assert.deepEqual(config.args, ['one']);
  }
});

test("defaults: kfcgi(8)'s, except the backlog (the system maximum), and -N is 2 x -n", (t) => {
  const { dir, program } = scratch(t);
  const config = validateOptions(parseCommandLine(['-r', '-p', '/', '-s', join(dir, 's.sock'), program]), {});
  assert.equal(config.workers, KFCGI_DEFAULT_WORKERS);
  assert.equal(config.maxWorkers, KFCGI_DEFAULT_WORKERS * 2);
  assert.equal(config.idleSeconds, KFCGI_DEFAULT_IDLE_SECONDS);
  assert.equal(config.backlog, null);
  assert.equal(config.foreground, false);
  const fixed = validateOptions(parseCommandLine(['-N', '9', '-p', '/', '-s', join(dir, 's.sock'), program]), {});
  assert.equal(fixed.maxWorkers, KFCGI_DEFAULT_WORKERS, 'a fixed pool ignores -N');
  assert.match(fixed.warnings.join('\n'), /-N 9 applies only to variable \(-r\) and dynamic \(-D\) pools/);
});

test('-D: a dynamic pool takes -n, -N and -w without a warning, runs any program, and excludes -r, -R and -C', (t) => {
  const { dir, program } = scratch(t);
  const socket = join(dir, 's.sock');
  assert.deepEqual(parseCommandLine(['-dD', '-n', '2', 'prog']).options, { foreground: true, dynamic: true, workers: 2 });
  assert.deepEqual(parseCommandLine(['--dynamic', 'prog']).options, { dynamic: true });
  const config = validateOptions(parseCommandLine(['-D', '-n', '2', '-N', '8', '-w', '5', '-p', '/', '-s', socket, program]), {});
  assert.equal(config.dynamic, true);
  assert.equal(config.variable, false);
  assert.equal(config.workers, 2);
  assert.equal(config.maxWorkers, 8);
  assert.equal(config.idleSeconds, 5);
  assert.deepEqual(config.warnings, []);
  assert.equal(validateOptions(parseCommandLine(['-D', '-p', '/', '-s', socket, program]), {}).maxWorkers, KFCGI_DEFAULT_WORKERS * 2);
  assert.equal(validateOptions(parseCommandLine(['-p', '/', '-s', socket, program]), {}).dynamic, false);
  assert.match(problems(['-D', '-r', '-p', '/', '-s', socket, program]), /-r and -D are two kinds of pool/);
  assert.match(problems(['-D', '-n', '4', '-N', '2', '-p', '/', '-s', socket, program]), /-N 2 is below -n 4/);
  assert.match(problems(['-D', '-R', '10', '-p', '/', '-s', socket, program]), /-R counts connections/);
  assert.match(problems(['-D', '-C', '2', '-p', '/', '-s', socket, program]), /-C sets how many connections/);
  // php-cgi is what -D is for (only -r refuses it).
  assert.equal(validateOptions(parseCommandLine(['-D', '-p', '/', '-s', socket, '/usr/bin/php-cgi']), {}).dynamic, true);
});

/**
 * The serve key table, --help and the manual page must agree (kcgi's man page
 * drifted from its code; ours is checked): every flag is documented, every
 * documented flag exists, and every Apache alias is named in the manual.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SERVE_KEYS } from '../../src/config/schema.js';
import { FASTCGI_ROUTE_KEYS } from '../../src/config/load.js';
import { serveUsage } from '../../src/cli/serve.js';
import { SERVE_WORKER_METRICS_TIMEOUT_MS } from '../../src/limits.js';

const manual = readFileSync(new URL('../../../man/gatehouse-serve.8', import.meta.url), 'utf8');
const COMMAND_ONLY = ['config', 'check', 'help'];

test('every flag in the key table is in the manual and in --help', () => {
  const help = serveUsage();
  for (const key of SERVE_KEYS) {
    if (key.flag) {
      assert.match(manual, new RegExp(`^\\.It Fl -${key.name}\\b`, 'm'), `man/gatehouse-serve.8 does not document --${key.name}`);
      assert.ok(help.includes(`--${key.name}`), `--help does not list --${key.name}`);
    } else {
      assert.match(manual, new RegExp(`^\\.It Cm ${key.name}\\b`, 'm'), `man/gatehouse-serve.8 does not document the key ${key.name}`);
    }
    for (const alias of key.aliases ?? [])
      assert.ok(manual.includes(`Cm ${alias}`), `the manual does not name the alias ${alias} of ${key.name}`);
  }
});

test('every key of a [[fastcgi]] route is in the manual', () => {
  const section = manual.slice(manual.indexOf('.It Cm fastcgi'));
  for (const key of FASTCGI_ROUTE_KEYS) {
    // One .It may name several keys: ".It Cm connect-timeout , Cm read-timeout".
    assert.match(
      section,
      new RegExp(`^\\.It Cm (?:[a-z-]+ , Cm )*${key}\\b`, 'm'),
      `man/gatehouse-serve.8 does not document the [[fastcgi]] key ${key}`,
    );
  }
});

test('every flag the manual documents exists', () => {
  const known = new Set([...SERVE_KEYS.filter((key) => key.flag).map((key) => key.name), ...COMMAND_ONLY]);
  const documented = [...manual.matchAll(/^\.It Fl -([a-z-]+)/gm)].map((match) => match[1]!);
  assert.ok(documented.length > 20);
  for (const flag of documented) assert.ok(known.has(flag), `the manual documents --${flag}, which gatehouse serve does not have`);
});

test('defaults in the manual match the key table', () => {
  for (const key of SERVE_KEYS) {
    if (!key.defaultText || !/^\d/.test(key.defaultText)) continue;
    const section = manual.slice(manual.search(new RegExp(`^\\.It Fl -${key.name}\\b`, 'm')));
    const next = section.indexOf('\n.It ', 5);
    // Macros split text over lines ("Default\n.Li 127.0.0.1:8080 ."): read it as prose.
    const text = section.slice(0, next === -1 ? undefined : next).replace(/\n\.(Li|Ar) /g, ' ');
    const expected = key.defaultText.replace(/s$/, '');
    assert.ok(
      text.includes(`Default ${key.defaultText}`) || text.includes(`Default ${expected}`),
      `the manual's default for --${key.name} is not ${key.defaultText}: ${text}`,
    );
  }
});

test("the manual's wait for a worker's metrics is SERVE_WORKER_METRICS_TIMEOUT_MS", () => {
  const section = manual.slice(manual.indexOf('\n.Ss With workers\n'), manual.indexOf('\n.Ss After a reload\n'));
  const stated = [...section.matchAll(/(\d+) ms/g)].map((match) => Number(match[1]));
  assert.ok(stated.length >= 2, 'the section states the wait');
  for (const value of stated) assert.equal(value, SERVE_WORKER_METRICS_TIMEOUT_MS);
  const status = readFileSync(new URL('../../../man/gatehouse-status.8', import.meta.url), 'utf8');
  assert.ok(status.includes(`within ${SERVE_WORKER_METRICS_TIMEOUT_MS} ms`), 'gatehouse-status(8) states the wait');
});

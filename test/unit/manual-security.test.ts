/**
 * Issue 16 asks for one SECURITY entry per attack class in both
 * gatehouse-serve(8) and gatehouse-cgid(8). An audit found cgid's manual one
 * entry short (Streaming on request): the two sections' entries are checked
 * against each other and against the nine classes, so a class written in one
 * manual and forgotten in the other fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CGID_FASTCGI_HOLD_BYTES } from '../../src/limits.js';

/** The nine classes, each by a word its entry's title holds. */
const CLASSES = [
  'Query as arguments',
  'PATH_INFO split',
  'FastCGI name-value lengths',
  'Response splitting',
  'Content-Type guessing',
  'State between requests',
  'Environment leakage',
  'A script that never reads its body',
  'Streaming on request',
];

/** The .Ss titles of a manual's SECURITY section, with the text of each entry. */
function securityEntries(manual: string): Map<string, string> {
  const text = readFileSync(new URL(`../../../man/${manual}`, import.meta.url), 'utf8');
  const start = text.indexOf('\n.Sh SECURITY\n');
  assert.notEqual(start, -1, `${manual} has no SECURITY section`);
  const next = text.indexOf('\n.Sh ', start + 1);
  const section = text.slice(start, next === -1 ? undefined : next);
  const entries = new Map<string, string>();
  for (const part of section.split('\n.Ss ').slice(1)) {
    const newline = part.indexOf('\n');
    entries.set(part.slice(0, newline), part.slice(newline + 1));
  }
  return entries;
}

test('gatehouse-serve(8) and gatehouse-cgid(8) have the same SECURITY entries: one per attack class of issue 16', () => {
  const serve = securityEntries('gatehouse-serve.8');
  const cgid = securityEntries('gatehouse-cgid.8');
  assert.deepEqual([...cgid.keys()].sort(), [...serve.keys()].sort(), 'the two manuals name different entries');
  for (const entries of [serve, cgid]) {
    assert.equal(entries.size, CLASSES.length);
    for (const name of CLASSES)
      assert.ok(
        [...entries.keys()].some((title) => title.startsWith(name)),
        `no SECURITY entry for "${name}" (entries: ${[...entries.keys()].join('; ')})`,
      );
    for (const [title, body] of entries) assert.ok(body.trim().length > 0, `the entry "${title}" is empty`);
  }
});

test("gatehouse-cgid(8)'s streaming entry says what the FastCGI face does with X-Accel-Buffering", () => {
  const entry = securityEntries('gatehouse-cgid.8').get('Streaming on request (X-Accel-Buffering)') ?? '';
  const text = entry.replace(/\n/g, ' ');
  assert.match(text, /buffers no response of its own/);
  assert.match(text, /header is passed on unchanged/);
  // The output held while the request body arrives is the face's only hold (src/limits.ts).
  assert.ok(text.includes(`${CGID_FASTCGI_HOLD_BYTES / 1024 / 1024} MiB of output`), 'the manual states the hold');
});

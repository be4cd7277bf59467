import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ResponseHeadParser, parseResponseHead, type HeadStep, type HeadLimits } from '../../src/cgi/response-head.js';
import { ErrorCode } from '../../src/errors.js';

function parse(text: string, limits?: HeadLimits): HeadStep {
  return parseResponseHead(Buffer.from(text, 'latin1'), limits);
}

function complete(step: HeadStep) {
  assert.equal(step.state, 'complete', step.state === 'error' ? step.error.message : 'incomplete');
  if (step.state !== 'complete') throw new Error('unreachable');
  return step;
}

function failed(step: HeadStep, code: ErrorCode) {
  assert.equal(step.state, 'error');
  if (step.state !== 'error') throw new Error('unreachable');
  assert.equal(step.error.code, code, step.error.message);
  return step.error;
}

test('a document with LF or CRLF line ends, the body bytes after the blank line kept', () => {
  for (const eol of ['\n', '\r\n']) {
    const { head, rest } = complete(parse(`Content-Type: text/plain${eol}X-A:b  ${eol}${eol}body${eol}more`));
    assert.deepEqual(head, {
      kind: 'document',
      status: 200,
      headers: [
        ['Content-Type', 'text/plain'],
        ['X-A', 'b'],
      ],
    });
    assert.equal(rest.toString(), `body${eol}more`);
  }
});

test('Status: "404" and "404 Gone" set the status and reason; invalid ones are errors', () => {
  assert.equal(complete(parse('Status: 404\n\n')).head.status, 404);
  const { head } = complete(parse('Status: 410 Gone Away\nContent-Type: text/plain\n\n'));
  assert.equal(head.status, 410);
  assert.equal(head.reason, 'Gone Away');
  assert.deepEqual(head.headers, [['Content-Type', 'text/plain']]);
  for (const bad of ['Status: 99', 'Status: 600', 'Status: abc', 'Status: 2000', 'Status:', 'Status: 200\nStatus: 201']) {
    const error = failed(parse(`${bad}\n\n`), ErrorCode.CGI_HEAD_BAD_STATUS);
    assert.ok(error.lineNumber >= 1);
  }
});

test('Location: an absolute URL is a 302 client redirect, /path without Status a local redirect', () => {
  const client = complete(parse('Location: http://example.com/x\n\n')).head;
  assert.equal(client.kind, 'client-redirect');
  assert.equal(client.status, 302);
  assert.deepEqual(client.headers, [['Location', 'http://example.com/x']]);
  const local = complete(parse('Location: /cgi-bin/other.cgi?a=1\n\nignored')).head;
  assert.equal(local.kind, 'local-redirect');
  assert.equal(local.location, '/cgi-bin/other.cgi?a=1');
  assert.deepEqual(local.headers, []);
  const withStatus = complete(parse('Status: 301 Moved\nLocation: /new\n\n')).head;
  assert.equal(withStatus.kind, 'document');
  assert.equal(withStatus.status, 301);
  const schemeRelative = complete(parse('Location: //evil.example/\n\n')).head;
  assert.equal(schemeRelative.kind, 'client-redirect');
});

test('names must be tokens; lines without a colon, status lines and folded lines are malformed', () => {
  for (const bad of ['HTTP/1.1 200 OK', 'no colon here', 'Bad Name: x', ': empty', ' folded: x', 'Content-Type: a\n continued']) {
    const error = failed(parse(`${bad}\n\n`), ErrorCode.CGI_HEAD_MALFORMED);
    assert.ok(error.line !== undefined && error.line.length > 0);
  }
  assert.equal(failed(parse('A: 1\nB: 2\nbad line\n\n'), ErrorCode.CGI_HEAD_MALFORMED).lineNumber, 3);
});

test('CR, NUL and other control characters in a value are refused', () => {
  for (const bad of ['X: a\rb', 'X: a\0b', 'X: a\x01', 'X: \x7f']) {
    const error = failed(parse(`${bad}\n\n`), ErrorCode.CGI_HEAD_BAD_VALUE);
    assert.match(error.line!, /\\x/);
  }
  assert.deepEqual(complete(parse('X: caf\xe9\ttab\n\n')).head.headers, [['X', 'caf\xe9\ttab']]);
});

test('Transfer-Encoding from a script is refused; Content-Length is kept, checked and deduplicated', () => {
  failed(parse('Transfer-Encoding: chunked\n\n'), ErrorCode.CGI_HEAD_TRANSFER_ENCODING);
  const { head } = complete(parse('Content-Length: 12\nContent-Length: 12\n\n'));
  assert.equal(head.contentLength, 12);
  assert.deepEqual(head.headers, [['Content-Length', '12']]);
  failed(parse('Content-Length: 12\nContent-Length: 13\n\n'), ErrorCode.CGI_HEAD_BAD_CONTENT_LENGTH);
  failed(parse('Content-Length: -1\n\n'), ErrorCode.CGI_HEAD_BAD_CONTENT_LENGTH);
  failed(parse('Content-Length: 1e3\n\n'), ErrorCode.CGI_HEAD_BAD_CONTENT_LENGTH);
});

test('repeated headers (Set-Cookie) are all kept in order', () => {
  const { head } = complete(parse('Set-Cookie: a=1\nSet-Cookie: b=2\n\n'));
  assert.deepEqual(head.headers, [
    ['Set-Cookie', 'a=1'],
    ['Set-Cookie', 'b=2'],
  ]);
});

test('an empty head is a 200 document; missing or unfinished heads are errors', () => {
  assert.deepEqual(complete(parse('\nbody')).head, { kind: 'document', status: 200, headers: [] });
  assert.equal(failed(parse(''), ErrorCode.CGI_HEAD_INCOMPLETE).lineNumber, 0);
  assert.equal(failed(parse('Content-Type: text/plain\n'), ErrorCode.CGI_HEAD_INCOMPLETE).lineNumber, 1);
  assert.equal(failed(parse('Content-Type: text/plain\nX: y'), ErrorCode.CGI_HEAD_INCOMPLETE).line, 'X: y');
});

test('bounds: line length, line count and head size', () => {
  failed(parse(`X: ${'a'.repeat(100)}\n\n`, { maxLineBytes: 50 }), ErrorCode.CGI_HEAD_TOO_LARGE);
  failed(parse(`${'X: y\n'.repeat(11)}\n`, { maxLines: 10 }), ErrorCode.CGI_HEAD_TOO_LARGE);
  failed(parse(`${'X: y\n'.repeat(30)}\n`, { maxBytes: 100 }), ErrorCode.CGI_HEAD_TOO_LARGE);
  complete(parse(`${'X: y\n'.repeat(10)}\n`, { maxLines: 10, maxBytes: 51 }));
  // An endless line with no newline fails as soon as the bound is crossed, before the output ends.
  const parser = new ResponseHeadParser({ maxLineBytes: 1000 });
  let step: HeadStep = { state: 'incomplete' };
  for (let i = 0; i < 20 && step.state === 'incomplete'; i++) step = parser.push(Buffer.alloc(100, 0x61));
  assert.equal(step.state, 'error');
});

test('later pushes return the settled result; the body after the head is not parsed', () => {
  const parser = new ResponseHeadParser();
  assert.equal(parser.push(Buffer.from('Content-Type: text/plain\r')).state, 'incomplete');
  const step = parser.push(Buffer.from('\n\r\nnot: a header\n'));
  assert.equal(step.state, 'complete');
  assert.equal(parser.push(Buffer.from('garbage\0\n')), step);
  assert.equal(parser.end(), step);
});

const limits: HeadLimits = { maxBytes: 120, maxLineBytes: 40, maxLines: 6 };

function parseInChunks(input: Buffer, cuts: number[]): HeadStep {
  const parser = new ResponseHeadParser(limits);
  const points = [...new Set(cuts.map((cut) => cut % (input.length + 1)))].sort((a, b) => a - b);
  let previous = 0;
  let step: HeadStep = { state: 'incomplete' };
  for (const point of [...points, input.length]) {
    step = parser.push(input.subarray(previous, point));
    previous = point;
    // The rest of the output after the head is the body, whichever chunk it arrived in.
    if (step.state === 'complete') return { ...step, rest: Buffer.concat([step.rest, input.subarray(point)]) };
    if (step.state === 'error') break;
  }
  if (step.state === 'incomplete') step = parser.end();
  return step;
}

/** Outputs that look like CGI heads, with the mistakes scripts make mixed in. */
const headLike = fc
  .array(
    fc.oneof(
      fc.constantFrom(
        'Content-Type: text/html',
        'Status: 404 Not Found',
        'Status: 2x',
        'Location: /x',
        'Location: http://h/',
        'X-A: b',
        'Content-Length: 3',
        'Transfer-Encoding: chunked',
        'bad line',
        'X: a\rb',
        '',
      ),
      fc.string({ maxLength: 50 }),
    ),
    { maxLength: 10 },
  )
  .chain((lines) =>
    fc.tuple(fc.constant(lines), fc.array(fc.constantFrom('\n', '\r\n'), { minLength: lines.length, maxLength: lines.length })),
  )
  .map(([lines, ends]) => Buffer.from(lines.map((line, i) => line + ends[i]).join(''), 'latin1'));

test('property: any chunking of the output parses to the same result', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        headLike,
        fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes)),
      ),
      fc.array(fc.nat(400), { maxLength: 12 }),
      (input, cuts) => {
        const whole = parseInChunks(input, []);
        const chunked = parseInChunks(input, cuts);
        assert.deepEqual(chunked, whole);
      },
    ),
    { numRuns: 2000 },
  );
});

test('property: garbage never throws, and an accepted head never carries CR, LF or NUL in a name or value', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (bytes) => {
      const step = parseResponseHead(Buffer.from(bytes));
      if (step.state === 'complete') {
        for (const [name, value] of step.head.headers) {
          assert.doesNotMatch(name, /[\r\n\0:]/);
          assert.doesNotMatch(value, /[\r\n\0]/);
        }
      }
    }),
    { numRuns: 3000 },
  );
});

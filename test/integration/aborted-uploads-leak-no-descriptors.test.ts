/**
 * Regression (issue 15, item 2): an aborted upload leaked a descriptor in
 * the front every time (POST with Content-Length 1000000, 1000 bytes, then
 * the connection closed: +1 unix socket per request, until every CGI request
 * answered 500 with EMFILE); with --script-log any disconnect during the
 * body leaked; the cgid FastCGI face leaked when FCGI_ABORT_REQUEST came in
 * the same write as BEGIN_REQUEST, PARAMS and part of STDIN, and with
 * --script-log when the connection closed during STDIN. The script's stdin
 * socket was never closed when the request was already aborted, or when the
 * script-log tap never ended.
 *
 * Each abort pattern (before the script starts, during the body, after the
 * head, during the response; with and without the script log; on the HTTP
 * front and on the FastCGI face) runs as a bounded batch against the real
 * server, whose open descriptors are counted from /proc before and after:
 * the count must come back (waited for with a bounded poll, then asserted).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { chmodSync, cpSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeBeginRequest, encodeParamsRecords, encodeRecord } from '../../src/fastcgi/records.js';
import { RecordType, Role } from '../../src/fastcgi/protocol.js';
import { startProcess, tempDir, waitForListener } from '../kit/process.js';
import { httpRequest } from '../kit/http.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { asRootOnPurpose, startGatehouse } from '../kit/serve.js';
import { waitFor } from '../kit/wait.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/cgi-bin/', import.meta.url));
/** Requests per abort pattern: enough that a leak of one descriptor each stands out, few enough to stay quick. */
const BATCH = 6;
/** The longest any wait here may take before the test fails (never reached when things work: a failure bound, not a timing). */
const BOUND_MS = 20_000;

function openDescriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What the process has open, for a failure message. */
function describeDescriptors(pid: number): string {
  const kinds = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target = '?';
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      /* closed meanwhile */
    }
    const kind = target.replace(/\[\d+\]$/, '[]');
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return [...kinds].map(([kind, count]) => `${count} x ${kind}`).join(', ');
}

/**
 * The baseline: the count once it has stopped moving (the warm-up's scripts
 * reaped and their pipes closed), read as the same value several times in a row.
 */
async function settledCount(pid: number): Promise<number> {
  let last: number | null = null;
  let same = 0;
  return waitFor(
    () => {
      const now = openDescriptors(pid);
      same = now === last ? same + 1 : 0;
      last = now;
      // The first read, then four more (the kit's polls) that found the same count.
      return same >= 4 && { count: now };
    },
    `the descriptor count of pid ${pid} to settle`,
    { timeoutMs: BOUND_MS, context: () => `last count ${last} (${describeDescriptors(pid)})` },
  ).then(({ count }) => count);
}

/** Waits (bounded) for the count to come back to `before`; fails naming what is still open when it does not. */
async function assertDescriptorsBack(pid: number, before: number, pattern: string): Promise<void> {
  await waitFor(() => openDescriptors(pid) <= before, `${pattern}: the descriptor count back to ${before}`, {
    timeoutMs: BOUND_MS,
    context: () =>
      `${pattern}: ${openDescriptors(pid) - before} descriptor(s) still open after ${BATCH} requests (${describeDescriptors(pid)})`,
  });
}

/** A raw client connection: bytes out, everything received kept, waits on what arrived. */
class RawClient {
  readonly socket: net.Socket;
  received = Buffer.alloc(0);
  closed = false;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
      socket.emit('progress');
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      socket.emit('progress');
    });
  }

  static async open(port: number): Promise<RawClient> {
    const socket = net.connect(port, '127.0.0.1');
    await once(socket, 'connect');
    return new RawClient(socket);
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  /** Waits until what was received satisfies `ready`; fails if the server closes first or nothing comes in time. */
  async waitFor(ready: (received: Buffer) => boolean, what: string): Promise<void> {
    await waitFor(() => ready(this.received), what, {
      timeoutMs: BOUND_MS,
      wakeOn: { emitter: this.socket, events: ['progress'] },
      giveUpIf: () => this.closed && 'the server closed the connection',
      context: () => `got ${JSON.stringify(this.text().slice(0, 300))}`,
    });
  }

  text(): string {
    return this.received.toString('latin1');
  }

  /** Closes our side at once (the abort being tested) and waits until the socket is gone. */
  async abort(): Promise<void> {
    if (!this.closed) {
      const closed = once(this.socket, 'close');
      this.socket.destroy();
      await closed;
    }
  }
}

const includes = (text: string) => (received: Buffer) => received.includes(text);
const upload = (path: string, extra = '') => `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n${extra}\r\n`;
const PART = 'a'.repeat(1000);

interface HttpPattern {
  name: string;
  /** One request of the pattern; `port` is the front's. */
  run(port: number): Promise<void>;
  /** Run once around the batch: a script holding the only slot, so the batch waits in the queue. */
  hold?: boolean;
}

const httpPatterns: HttpPattern[] = [
  {
    name: 'before the script starts: queued behind a busy slot, the body cut',
    hold: true,
    async run(port) {
      const client = await RawClient.open(port);
      client.write(upload('/cgi-bin/echo.sh', 'Expect: 100-continue\r\n'));
      // The 100 comes from the body policy: the request got that far, and waits for a slot now.
      await client.waitFor(includes('100 Continue'), '100 Continue');
      client.write(PART);
      await client.abort();
    },
  },
  {
    name: 'before the script starts: a chunked body cut while it is spooled',
    async run(port) {
      const client = await RawClient.open(port);
      client.write('POST /cgi-bin/echo.sh HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n');
      await client.waitFor(includes('100 Continue'), '100 Continue');
      client.write(`3e8\r\n${PART}\r\n3e8\r\n${PART.slice(0, 10)}`);
      await client.abort();
    },
  },
  {
    name: "during the body: the issue's upload (1000 of 1000000 bytes, then closed at once)",
    async run(port) {
      const client = await RawClient.open(port);
      client.write(upload('/cgi-bin/echo.sh') + PART);
      await client.abort();
    },
  },
  {
    name: 'during the body: the script has read the first part (echoed back) when the connection closes',
    async run(port) {
      const client = await RawClient.open(port);
      client.write(upload('/cgi-bin/echo.sh') + PART);
      await client.waitFor(includes(PART), 'the echoed body');
      await client.abort();
    },
  },
  {
    name: 'after the head',
    async run(port) {
      const client = await RawClient.open(port);
      client.write('GET /cgi-bin/hang-after-head.sh HTTP/1.1\r\nHost: x\r\n\r\n');
      await client.waitFor(includes('started'), 'the head');
      await client.abort();
    },
  },
  {
    name: 'during the response',
    async run(port) {
      const client = await RawClient.open(port);
      client.write('GET /cgi-bin/big.sh HTTP/1.1\r\nHost: x\r\n\r\n');
      await client.waitFor((received) => received.length > 256 * 1024, '256 KiB of the body');
      await client.abort();
    },
  },
];

/** The abort patterns against `gatehouse serve`, counting the front's descriptors. */
async function checkFront(t: TestContext, scriptLog: boolean): Promise<void> {
  const dir = tempDir(t, 'gatehouse-leaks-serve-');
  // One script slot: the queued pattern waits behind a held script; the others run one at a time.
  const server = await startGatehouse(t, 'serve', [
    '--cgi-bin',
    FIXTURES,
    '--max-scripts',
    '1',
    '--access-log',
    'off',
    '--error-log',
    join(dir, 'error.log'),
    ...(scriptLog ? ['--script-log', join(dir, 'script.log')] : []),
  ]);
  const pid = server.child.pid!;
  // Warm-up: what the front opens once and keeps (/dev/null for scripts without a body, the script log).
  assert.equal((await httpRequest(`${server.base}/cgi-bin/env.sh`)).status, 200);
  assert.equal((await httpRequest(`${server.base}/cgi-bin/malformed.sh`)).status, 500);
  for (const pattern of httpPatterns) {
    await t.test(pattern.name, async () => {
      const before = await settledCount(pid);
      let holder: RawClient | undefined;
      if (pattern.hold) {
        holder = await RawClient.open(server.port);
        holder.write('GET /cgi-bin/hang-after-head.sh HTTP/1.1\r\nHost: x\r\n\r\n');
        await holder.waitFor(includes('started'), 'the holding script');
      }
      for (let i = 0; i < BATCH; i++) await pattern.run(server.port);
      await holder?.abort();
      await assertDescriptorsBack(pid, before, pattern.name);
      // And the front still serves (no EMFILE, no stuck slot).
      assert.equal((await httpRequest(`${server.base}/cgi-bin/env.sh`)).status, 200);
    });
  }
}

interface FacePattern {
  name: string;
  run(face: { socket: string; root: string }): Promise<void>;
}

function params(root: string, script: string, contentLength?: number): Array<[string, string]> {
  return [
    ['SCRIPT_FILENAME', join(root, script)],
    ['REQUEST_METHOD', contentLength === undefined ? 'GET' : 'POST'],
    ['SERVER_PROTOCOL', 'HTTP/1.1'],
    ['REQUEST_URI', `/${script}`],
    ['QUERY_STRING', ''],
    ...(contentLength === undefined ? [] : ([['CONTENT_LENGTH', String(contentLength)]] as Array<[string, string]>)),
  ];
}

/** BEGIN_REQUEST and the whole PARAMS stream of request 1. */
function requestHead(root: string, script: string, contentLength?: number): Buffer {
  return Buffer.concat([
    encodeBeginRequest(1, Role.RESPONDER, false),
    encodeParamsRecords(RecordType.PARAMS, 1, params(root, script, contentLength)),
    encodeRecord(RecordType.PARAMS, 1),
  ]);
}

const stdinPart = () => encodeRecord(RecordType.STDIN, 1, Buffer.from(PART));
const hasStream = (type: number, needle: string) => (peer: RawFastCGIPeer) =>
  (type === RecordType.STDOUT ? peer.stdout(1) : peer.stderr(1)).includes(needle);

async function closePeer(peer: RawFastCGIPeer): Promise<void> {
  if (peer.closed) return;
  const closed = once(peer.socket, 'close');
  peer.close();
  await closed;
}

const facePatterns: FacePattern[] = [
  {
    name: "before the script starts: ABORT_REQUEST in the same write as BEGIN_REQUEST, PARAMS and part of STDIN (the issue's)",
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(
        Buffer.concat([requestHead(face.root, 'reader.sh', 1_000_000), stdinPart(), encodeRecord(RecordType.ABORT_REQUEST, 1)]),
      );
      await peer.waitForEnd(1, { timeoutMs: BOUND_MS });
      await closePeer(peer);
    },
  },
  {
    name: 'during the body: the connection closed during STDIN',
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(Buffer.concat([requestHead(face.root, 'reader.sh', 1_000_000), stdinPart()]));
      await closePeer(peer);
    },
  },
  {
    name: 'during the body: the script reads it (it said so on stderr) when ABORT_REQUEST comes',
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(Buffer.concat([requestHead(face.root, 'reader.sh', 1_000_000), stdinPart()]));
      await peer.waitForRecords(() => hasStream(RecordType.STDERR, 'reading')(peer), 'the records expected', { timeoutMs: BOUND_MS });
      peer.write(encodeRecord(RecordType.ABORT_REQUEST, 1));
      await peer.waitForEnd(1, { timeoutMs: BOUND_MS });
      await closePeer(peer);
    },
  },
  {
    name: 'during the body: the script reads it when the connection closes',
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(Buffer.concat([requestHead(face.root, 'reader.sh', 1_000_000), stdinPart()]));
      await peer.waitForRecords(() => hasStream(RecordType.STDERR, 'reading')(peer), 'the records expected', { timeoutMs: BOUND_MS });
      await closePeer(peer);
    },
  },
  {
    name: 'after the head',
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(Buffer.concat([requestHead(face.root, 'hang-after-head.sh'), encodeRecord(RecordType.STDIN, 1)]));
      await peer.waitForRecords(() => hasStream(RecordType.STDOUT, 'started')(peer), 'the records expected', { timeoutMs: BOUND_MS });
      await closePeer(peer);
    },
  },
  {
    name: 'during the response',
    async run(face) {
      const peer = await RawFastCGIPeer.connect({ path: face.socket });
      peer.socket.write(Buffer.concat([requestHead(face.root, 'big.sh'), encodeRecord(RecordType.STDIN, 1)]));
      await peer.waitForRecords(() => peer.stdout(1).length > 256 * 1024, 'the records expected', { timeoutMs: BOUND_MS });
      await closePeer(peer);
    },
  },
];

async function startFace(t: TestContext, scriptLog: boolean): Promise<{ socket: string; root: string; pid: number }> {
  const dir = tempDir(t, 'gatehouse-leaks-face-');
  const root = join(dir, 'cgi-bin');
  cpSync(FIXTURES, root, { recursive: true });
  // Says on stderr (sent at once as FCGI_STDERR) that it runs, then reads its body.
  writeFileSync(join(root, 'reader.sh'), '#!/bin/sh\necho reading >&2\nprintf "Content-Type: text/plain\\n\\n"\nexec cat\n');
  chmodSync(join(root, 'reader.sh'), 0o755);
  const socket = join(dir, 'face.sock');
  const args = [
    MAIN,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`, ...(scriptLog ? ['--script-log', join(dir, 'script.log')] : [])]),
  ];
  const face = startProcess(t, process.execPath, args);
  await waitForListener({ path: socket }, { process: face, timeoutMs: BOUND_MS }).catch((error: Error) => {
    throw new Error(`gatehouse cgid --fastcgi did not start: ${error.message}\n${face.output()}`);
  });
  return { socket, root, pid: face.child.pid! };
}

/** The abort patterns against `gatehouse cgid --fastcgi`, counting the face's descriptors. */
async function checkFace(t: TestContext, scriptLog: boolean): Promise<void> {
  const face = await startFace(t, scriptLog);
  // Warm-up: a script without a body (/dev/null) and a failing one (the script log).
  for (const script of ['env.sh', 'malformed.sh']) {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    peer.socket.write(Buffer.concat([requestHead(face.root, script), encodeRecord(RecordType.STDIN, 1)]));
    await peer.waitForEnd(1, { timeoutMs: BOUND_MS });
    await closePeer(peer);
  }
  for (const pattern of facePatterns) {
    await t.test(pattern.name, async () => {
      const before = await settledCount(face.pid);
      for (let i = 0; i < BATCH; i++) await pattern.run(face);
      await assertDescriptorsBack(face.pid, before, pattern.name);
    });
  }
}

// Four servers, each counted on its own: they run side by side (most of the time goes to waiting on them).
test('aborted uploads and requests leave no descriptor open', { concurrency: 4 }, async (t) => {
  await Promise.all([
    t.test('gatehouse serve, without --script-log', (t) => checkFront(t, false)),
    t.test('gatehouse serve, with --script-log', (t) => checkFront(t, true)),
    t.test('gatehouse cgid --fastcgi, without --script-log', (t) => checkFace(t, false)),
    t.test('gatehouse cgid --fastcgi, with --script-log', (t) => checkFace(t, true)),
  ]);
});

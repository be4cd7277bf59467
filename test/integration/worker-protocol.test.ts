/**
 * The worker library on the wire: exact records in, records out, through a
 * raw peer (not gatehouse's own client, so both sides are not wrong together).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../src/errors.js';
import { join } from 'node:path';
import { once } from 'node:events';
import { createServer, type FastCGIRequest, type FastCGIResponse, type RequestHandler } from '../../src/fastcgi/index.js';
import { decodeNameValuePairs } from '../../src/fastcgi/name-value.js';
import { encodeBeginRequest, encodeEndRequest, encodeParamsRecords, encodeRecord, encodeAbortRequest } from '../../src/fastcgi/records.js';
import { ProtocolStatus, RecordType, Role } from '../../src/fastcgi/protocol.js';
import { DEFAULT_MAX_PARAMS_BYTES } from '../../src/limits.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { tempDir, type Cleanup } from '../kit/process.js';
import { waitFor } from '../kit/wait.js';

async function serve(t: Cleanup, handler: RequestHandler, options = {}) {
  const path = join(tempDir(t), 'worker.sock');
  const server = createServer(handler, { handleSignals: false, ...options });
  server.listen(path);
  await once(server, 'listening');
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const errors: Error[] = [];
  server.on('connectionError', (error: Error) => errors.push(error));
  const connect = async () => {
    const peer = await RawFastCGIPeer.connect({ path });
    t.after(() => peer.close());
    return peer;
  };
  return { server, path, connect, errors };
}

const hello: RequestHandler = (req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end(`hello ${req.method} ${req.url}`);
};

function endRequestBody(content: Buffer) {
  return { appStatus: content.readInt32BE(0), protocolStatus: content[4] };
}

test('GET_VALUES is answered truthfully, only with the names asked', async (t) => {
  const { connect } = await serve(t, hello, { maxConnections: 7, maxRequestsPerConnection: 3 });
  const peer = await connect();
  peer.write(
    encodeParamsRecords(RecordType.GET_VALUES, 0, [
      ['FCGI_MPXS_CONNS', ''],
      ['FCGI_MAX_CONNS', ''],
      ['FCGI_MAX_REQS', ''],
      ['SOMETHING_ELSE', ''],
    ]),
  );
  const records = await peer.waitForRecords((rs) => rs.some((r) => r.type === RecordType.GET_VALUES_RESULT), 'GET_VALUES_RESULT');
  const result = records.find((r) => r.type === RecordType.GET_VALUES_RESULT)!;
  assert.equal(result.requestId, 0);
  const pairs = decodeNameValuePairs(result.content);
  assert.ok(Array.isArray(pairs));
  assert.deepEqual(Object.fromEntries(pairs.map(([n, v]) => [n.toString(), v.toString()])), {
    FCGI_MPXS_CONNS: '1',
    FCGI_MAX_CONNS: '7',
    FCGI_MAX_REQS: '21',
  });
});

test('an unknown management record type gets FCGI_UNKNOWN_TYPE naming it', async (t) => {
  const { connect } = await serve(t, hello);
  const peer = await connect();
  peer.write(encodeRecord(42, 0, Buffer.from('whatever')));
  const records = await peer.waitForRecords((rs) => rs.some((r) => r.type === RecordType.UNKNOWN_TYPE), 'UNKNOWN_TYPE');
  const reply = records.find((r) => r.type === RecordType.UNKNOWN_TYPE)!;
  assert.equal(reply.requestId, 0);
  assert.equal(reply.content.length, 8);
  assert.equal(reply.content[0], 42);
  // The connection still works afterwards.
  peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/after' });
  await peer.waitForEnd(1);
  assert.match(peer.stdout(1).toString(), /hello GET \/after/);
});

test('an unknown role is refused with FCGI_UNKNOWN_ROLE and the handler never runs', async (t) => {
  let calls = 0;
  const { connect } = await serve(t, (_req, res) => {
    calls++;
    res.end();
  });
  const peer = await connect();
  peer.write(encodeBeginRequest(1, 9 as Role, true));
  const end = await peer.waitForEnd(1);
  assert.equal(endRequestBody(end.content).protocolStatus, ProtocolStatus.UNKNOWN_ROLE);
  assert.equal(calls, 0);
});

test('responder: head CGI-style, body as STDOUT, empty STDOUT, END_REQUEST with appStatus', async (t) => {
  const { connect } = await serve(t, (_req, res) => {
    res.statusCode = 201;
    res.setHeader('X-Thing', ['a', 'b']);
    res.appStatus = 3;
    res.end('made');
  });
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_METHOD: 'POST', REQUEST_URI: '/x' });
  const end = await peer.waitForEnd(1);
  assert.deepEqual(endRequestBody(end.content), { appStatus: 3, protocolStatus: 0 });
  assert.equal(peer.stdout(1).toString(), 'Status: 201 Created\r\nX-Thing: a\r\nX-Thing: b\r\n\r\nmade');
  const stdoutRecords = peer.records.filter((r) => r.type === RecordType.STDOUT);
  assert.equal(stdoutRecords.at(-1)!.content.length, 0, 'the stream ends with an empty STDOUT record');
  await peer.waitForClose();
});

test('FCGI_KEEP_CONN: several requests in turn on one connection, which stays open', async (t) => {
  const { connect } = await serve(t, hello);
  const peer = await connect();
  for (let id = 1; id <= 5; id++) {
    peer.sendRequest(id, { REQUEST_METHOD: 'GET', REQUEST_URI: `/n${id}` }, { keepConn: true });
    await peer.waitForEnd(id);
    assert.match(peer.stdout(id).toString(), new RegExp(`hello GET /n${id}$`));
  }
  assert.equal(peer.closed, false);
});

test('without FCGI_KEEP_CONN the worker closes the connection after the request', async (t) => {
  const { connect } = await serve(t, hello);
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_METHOD: 'GET', REQUEST_URI: '/' });
  await peer.waitForEnd(1);
  await peer.waitForClose();
});

test('multiplexed requests on one connection interleave and each gets its own answer', async (t) => {
  const pending: Array<() => void> = [];
  const { connect } = await serve(t, (req: FastCGIRequest, res: FastCGIResponse) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      // Answer in reverse order of arrival once all three have arrived.
      pending.push(() => res.end(`${req.url}:${body}`));
      if (pending.length === 3) for (const answer of pending.reverse()) answer();
    });
  });
  const peer = await connect();
  peer.write(
    encodeBeginRequest(1, Role.RESPONDER, true),
    encodeBeginRequest(2, Role.RESPONDER, true),
    encodeBeginRequest(3, Role.RESPONDER, true),
  );
  for (const id of [3, 1, 2]) {
    peer.write(encodeParamsRecords(RecordType.PARAMS, id, [['REQUEST_URI', `/r${id}`]]), encodeRecord(RecordType.PARAMS, id));
  }
  for (const id of [2, 3, 1]) peer.write(encodeRecord(RecordType.STDIN, id, Buffer.from(`body${id}`)), encodeRecord(RecordType.STDIN, id));
  for (const id of [1, 2, 3]) {
    await peer.waitForEnd(id);
    assert.match(peer.stdout(id).toString(), new RegExp(`/r${id}:body${id}$`));
  }
});

test('FCGI_ABORT_REQUEST aborts req and res and ends the request; other requests go on', async (t) => {
  const seen: string[] = [];
  const { connect } = await serve(t, (req, res) => {
    if (req.url === '/slow') {
      req.on('aborted', () => seen.push('req aborted'));
      res.on('close', () => seen.push(`res close finished=${res.writableFinished}`));
      res.write('partial');
      return;
    }
    res.end('quick');
  });
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_URI: '/slow' }, { keepConn: true, endStdin: false });
  await peer.waitForRecords((rs) => rs.some((r) => r.type === RecordType.STDOUT && r.requestId === 1), 'the STDOUT of request 1');
  peer.write(encodeAbortRequest(1));
  const end = await peer.waitForEnd(1);
  assert.equal(endRequestBody(end.content).protocolStatus, ProtocolStatus.REQUEST_COMPLETE);
  peer.sendRequest(2, { REQUEST_URI: '/quick' }, { keepConn: true });
  await peer.waitForEnd(2);
  assert.match(peer.stdout(2).toString(), /quick$/);
  assert.deepEqual(seen, ['req aborted', 'res close finished=false']);
});

test('filter role: STDIN then the DATA stream readable as req.data', async (t) => {
  const { connect } = await serve(t, async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const data: Buffer[] = [];
    for await (const chunk of req.data!) data.push(chunk as Buffer);
    res.end(`stdin=${Buffer.concat(chunks)} data=${Buffer.concat(data).toString().toUpperCase()} len=${req.params.FCGI_DATA_LENGTH}`);
  });
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_URI: '/f', FCGI_DATA_LENGTH: '11' }, { role: Role.FILTER, body: Buffer.from('in') });
  peer.write(encodeRecord(RecordType.DATA, 1, Buffer.from('hello world')), encodeRecord(RecordType.DATA, 1));
  await peer.waitForEnd(1);
  assert.match(peer.stdout(1).toString(), /stdin=in data=HELLO WORLD len=11$/);
});

test('authorizer role: runs without waiting for STDIN, Variable- headers pass through', async (t) => {
  const { connect } = await serve(t, (req, res) => {
    res.statusCode = req.headers.authorization === 'Bearer good' ? 200 : 403;
    if (res.statusCode === 200) res.setHeader('Variable-USER', 'alice');
    res.end();
  });
  const peer = await connect();
  peer.write(encodeBeginRequest(1, Role.AUTHORIZER, true));
  peer.write(encodeParamsRecords(RecordType.PARAMS, 1, [['HTTP_AUTHORIZATION', 'Bearer good']]), encodeRecord(RecordType.PARAMS, 1));
  await peer.waitForEnd(1);
  assert.equal(peer.stdout(1).toString(), 'Status: 200 OK\r\nVariable-USER: alice\r\n\r\n');
});

test('params are lossless: non-UTF-8 bytes survive in rawParams, UTF-8 decodes in params', async (t) => {
  let captured: FastCGIRequest | undefined;
  const { connect } = await serve(t, (req, res) => {
    captured = req;
    res.end();
  });
  const peer = await connect();
  peer.write(encodeBeginRequest(1, Role.RESPONDER, false));
  peer.write(
    encodeParamsRecords(RecordType.PARAMS, 1, [
      [Buffer.from('PATH_INFO'), Buffer.from([0x2f, 0xff, 0xfe])],
      ['SCRIPT_NAME', '/é'],
    ]),
    encodeRecord(RecordType.PARAMS, 1),
  );
  peer.write(encodeRecord(RecordType.STDIN, 1));
  await peer.waitForEnd(1);
  const raw = captured!.rawParams.find(([name]) => name.toString() === 'PATH_INFO')!;
  assert.deepEqual([...raw[1]], [0x2f, 0xff, 0xfe]);
  assert.equal(captured!.params.SCRIPT_NAME, '/é');
  assert.equal(captured!.params.PATH_INFO, '/\u00ff\u00fe');
});

test('params over the limit: that request gets a 431, the connection serves the next one', async (t) => {
  const { connect, errors } = await serve(t, hello, { maxParamsBytes: 1000 });
  const peer = await connect();
  peer.sendRequest(1, { HTTP_COOKIE: 'x'.repeat(2000) }, { keepConn: true });
  await peer.waitForEnd(1);
  assert.match(peer.stdout(1).toString(), /^Status: 431 /);
  peer.sendRequest(2, { REQUEST_URI: '/ok' }, { keepConn: true });
  await peer.waitForEnd(2);
  assert.match(peer.stdout(2).toString(), /hello GET \/ok/);
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /params exceed 1000 bytes/);
  assert.ok(DEFAULT_MAX_PARAMS_BYTES >= 64 * 1024, 'the default leaves room for real headers');
});

test('too many requests multiplexed on one connection: the extra one gets FCGI_OVERLOADED', async (t) => {
  const { connect } = await serve(t, () => {}, { maxRequestsPerConnection: 2 });
  const peer = await connect();
  for (const id of [1, 2, 3]) peer.sendRequest(id, { REQUEST_URI: '/' }, { keepConn: true, endStdin: false });
  const end = await peer.waitForEnd(3);
  assert.equal(endRequestBody(end.content).protocolStatus, ProtocolStatus.OVERLOADED);
});

test('a bad version closes that connection with a log line; the next connection is served', async (t) => {
  const { connect, errors } = await serve(t, hello);
  const bad = await connect();
  bad.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await bad.waitForClose();
  assert.equal(errors.length, 1);
  assert.match(errors[0]!.message, /version 71/);
  const good = await connect();
  good.sendRequest(1, { REQUEST_URI: '/fine' });
  await good.waitForEnd(1);
  assert.match(good.stdout(1).toString(), /hello GET \/fine/);
});

test('BEGIN_REQUEST for an id already in progress closes the connection', async (t) => {
  const { connect, errors } = await serve(t, () => {});
  const peer = await connect();
  peer.sendRequest(1, {}, { keepConn: true, endStdin: false });
  peer.write(encodeBeginRequest(1, Role.RESPONDER, true));
  await peer.waitForClose();
  assert.match(errors[0]!.message, /still in progress/);
});

test('a handler that throws after the head was sent ends the response; before, it becomes a 500', async (t) => {
  const { connect } = await serve(t, (req, res) => {
    if (req.url === '/late') res.write('started');
    throw new Error('boom');
  });
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_URI: '/early' }, { keepConn: true });
  await peer.waitForEnd(1);
  assert.match(peer.stdout(1).toString(), /^Status: 500 /);
  assert.match(peer.stderr(1).toString(), /boom/);
  peer.sendRequest(2, { REQUEST_URI: '/late' }, { keepConn: true });
  const end = await peer.waitForEnd(2);
  assert.match(peer.stdout(2).toString(), /^Status: 200 OK\r\n\r\nstarted$/);
  assert.equal(endRequestBody(end.content).appStatus, 1);
});

test('HEAD: the head goes out, body writes are dropped', async (t) => {
  const { connect } = await serve(t, (_req, res) => {
    res.end('a body nobody asked for');
  });
  const peer = await connect();
  peer.sendRequest(1, { REQUEST_METHOD: 'HEAD', REQUEST_URI: '/' });
  await peer.waitForEnd(1);
  assert.equal(peer.stdout(1).toString(), 'Status: 200 OK\r\n\r\n');
});

test('headers with CR/LF are refused at setHeader (no response splitting)', async (t) => {
  let thrown: unknown;
  const { connect } = await serve(t, (_req, res) => {
    try {
      res.setHeader('X-Evil', 'a\r\nSet-Cookie: x=y');
    } catch (error) {
      thrown = error;
    }
    res.end();
  });
  const peer = await connect();
  peer.sendRequest(1, {});
  await peer.waitForEnd(1);
  assert.ok(thrown instanceof InvalidArgumentError, String(thrown));
  assert.doesNotMatch(peer.stdout(1).toString(), /Set-Cookie/);
});

test('STDIN backpressure: a handler that does not read stops the worker reading the socket', async (t) => {
  let req1: FastCGIRequest | undefined;
  const { connect } = await serve(t, (req, res) => {
    req1 = req;
    req.pause();
    res.on('finish', () => {});
  });
  const peer = await connect();
  peer.sendRequest(1, {}, { keepConn: true, endStdin: false });
  // Write 8 MiB of STDIN: the worker must stop reading well before it has all of it.
  const chunk = encodeRecord(RecordType.STDIN, 1, Buffer.alloc(65528));
  let written = 0;
  while (written < 8 * 1024 * 1024) {
    peer.socket.write(chunk);
    written += chunk.length;
  }
  // Each look is a round trip on a second connection to the same worker, so the worker's event loop ran in
  // between: a worker that still read the first connection would have taken more of the peer's buffer by then.
  const prober = await connect();
  let probes = 0;
  const roundTrip = async () => {
    probes += 1;
    prober.write(encodeParamsRecords(RecordType.GET_VALUES, 0, [['FCGI_MPXS_CONNS', '']]));
    await prober.waitForRecords((rs) => rs.filter((r) => r.type === RecordType.GET_VALUES_RESULT).length === probes, 'GET_VALUES_RESULT');
  };
  let previous = -1;
  await waitFor(
    async () => {
      await roundTrip();
      const unread = peer.socket.writableLength;
      const stalled = req1 !== undefined && unread === previous;
      previous = unread;
      return stalled;
    },
    'the peer to stop draining into the worker',
    { context: () => `peer buffer ${peer.socket.writableLength}, request buffer ${req1?.readableLength}` },
  );
  const buffered = req1!.readableLength;
  assert.ok(buffered < 1024 * 1024, `the request buffered ${buffered} bytes`);
  assert.ok(
    peer.socket.writableLength > 4 * 1024 * 1024,
    `the peer's write buffer holds ${peer.socket.writableLength} bytes: it was not read`,
  );
  // Reading resumes the flow.
  let total = buffered;
  req1!.on('data', (c: Buffer) => (total += c.length));
  req1!.resume();
  await waitFor(() => total >= written - 65528 * 2, 'the rest of the body once the handler reads');
  void encodeEndRequest;
});

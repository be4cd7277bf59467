/**
 * The FastCGI client against a scripted application: a unix-socket server in
 * this process that answers with exact bytes. It produces what the real
 * programs do only now and then (a stale kept-alive connection, CANT_MPX_CONN,
 * OVERLOADED, records for ids nobody asked about, garbage in END_REQUEST's
 * reserved bytes) so each reaction is pinned.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { FastCGIClient, ErrorCode, type UpstreamError } from '../../src/fastcgi/client/index.js';
import { RecordDecoder, type FastCGIRecord } from '../../src/fastcgi/decoder.js';
import { encodeRecord, encodeEndRequest } from '../../src/fastcgi/records.js';
import { ProtocolStatus, RecordType } from '../../src/fastcgi/protocol.js';
import { tempDir, type Cleanup } from '../kit/process.js';
import { waitFor } from '../kit/wait.js';

interface ScriptedConnection {
  /** 0-based: which connection the server accepted. */
  index: number;
  socket: net.Socket;
  /** Resolves with the next request's id once its STDIN stream ended (or with the record that ended the wait). */
  nextRequest(): Promise<{ requestId: number; stdin: Buffer; keepConn: boolean }>;
  records: FastCGIRecord[];
}

async function scriptedServer(t: Cleanup, onConnection: (connection: ScriptedConnection) => void | Promise<void>): Promise<string> {
  const path = join(tempDir(t), 'app.sock');
  let index = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    const decoder = new RecordDecoder();
    const records: FastCGIRecord[] = [];
    let wake: (() => void) | null = null;
    socket.on('data', (chunk: Buffer) => {
      decoder.push(chunk, (record) => records.push({ ...record, content: Buffer.from(record.content) }));
      wake?.();
    });
    let consumed = 0;
    const nextRequest = async () => {
      let begin: FastCGIRecord | undefined;
      const stdin: Buffer[] = [];
      for (;;) {
        while (consumed < records.length) {
          const record = records[consumed++]!;
          if (record.type === RecordType.BEGIN_REQUEST) begin = record;
          if (record.type === RecordType.STDIN && begin && record.requestId === begin.requestId) {
            if (record.content.length === 0)
              return { requestId: begin.requestId, stdin: Buffer.concat(stdin), keepConn: (begin.content[2]! & 1) === 1 };
            stdin.push(record.content);
          }
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    };
    void onConnection({ index: index++, socket, nextRequest, records });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `unix:${path}`;
}

function answer(
  socket: net.Socket,
  requestId: number,
  body: string,
  endRequest = encodeEndRequest(requestId, 0, ProtocolStatus.REQUEST_COMPLETE),
): void {
  socket.write(Buffer.concat([encodeRecord(RecordType.STDOUT, requestId, Buffer.from(body)), endRequest]));
}

function newClient(t: Cleanup, address: string, options: Partial<ConstructorParameters<typeof FastCGIClient>[0]> = {}): FastCGIClient {
  const client = new FastCGIClient({ address, probe: false, ...options });
  t.after(() => client.close());
  return client;
}

test('no empty STDOUT before END_REQUEST, garbage in its reserved bytes, records for unknown ids: all tolerated', async (t) => {
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    const { requestId } = await nextRequest();
    const end = encodeEndRequest(requestId, 7, ProtocolStatus.REQUEST_COMPLETE);
    end.fill(0xa5, 8 + 5, 8 + 8); // reserved bytes, as php-fpm leaves them
    socket.write(encodeRecord(RecordType.STDOUT, requestId + 40, Buffer.from('not yours')));
    socket.write(encodeRecord(RecordType.END_REQUEST, requestId + 40, Buffer.alloc(8)));
    socket.write(encodeRecord(RecordType.GET_VALUES_RESULT, 0));
    answer(socket, requestId, 'Status: 200 OK\r\n\r\nbody', end);
  });
  const client = newClient(t, address);
  const result = await client.fetchAll({ params: { REQUEST_METHOD: 'GET' } });
  assert.equal(result.stdout.toString(), 'Status: 200 OK\r\n\r\nbody');
  assert.equal(result.appStatus, 7);
});

test('every PARAMS record carries the request id (the params are encoded before the id is known)', async (t) => {
  const seen: Array<{ type: number; requestId: number }> = [];
  const address = await scriptedServer(t, async ({ socket, nextRequest, records }) => {
    for (let n = 0; n < 2; n++) {
      const { requestId } = await nextRequest();
      answer(socket, requestId, 'ok');
    }
    seen.push(...records.map(({ type, requestId }) => ({ type, requestId })));
  });
  const client = newClient(t, address);
  // Large enough for several PARAMS records.
  const params = Object.fromEntries(Array.from({ length: 8 }, (_, i) => [`HTTP_X_${i}`, 'v'.repeat(20_000)]));
  await client.fetchAll({ params });
  await client.fetchAll({ params });
  await client.close();
  const paramsRecords = seen.filter((record) => record.type === RecordType.PARAMS);
  assert.ok(paramsRecords.length >= 6, `expected several PARAMS records, got ${paramsRecords.length}`);
  for (const record of seen) assert.equal(record.requestId, 1);
});

test('a kept-alive connection the application closed is retried once on a fresh one when no body was sent', async (t) => {
  const address = await scriptedServer(t, async ({ index, socket, nextRequest }) => {
    const first = await nextRequest();
    if (index === 0) {
      answer(socket, first.requestId, `first on connection ${index}`);
      await nextRequest();
      socket.destroy(); // the application went away between requests (pm.max_requests, a restart)
      return;
    }
    answer(socket, first.requestId, `on connection ${index}`);
  });
  const client = newClient(t, address);
  assert.equal((await client.fetchAll({ params: { N: '1' } })).stdout.toString(), 'first on connection 0');
  assert.equal((await client.fetchAll({ params: { N: '2' } })).stdout.toString(), 'on connection 1');
  assert.equal(client.stats.opened, 2);
});

test('no retry when part of the body had been sent: UPSTREAM_RESET', async (t) => {
  const address = await scriptedServer(t, async ({ index, socket, nextRequest }) => {
    const first = await nextRequest();
    answer(socket, first.requestId, `connection ${index}`);
    await nextRequest();
    socket.destroy();
  });
  const client = newClient(t, address);
  await client.fetchAll({ params: {} });
  await assert.rejects(client.fetchAll({ params: { CONTENT_LENGTH: '4' }, body: 'data' }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_RESET);
    return true;
  });
  assert.equal(client.stats.opened, 1);
});

test('END_REQUEST protocol statuses map to codes: OVERLOADED, UNKNOWN_ROLE, and CANT_MPX_CONN retried once', async (t) => {
  const statuses = [ProtocolStatus.OVERLOADED, ProtocolStatus.UNKNOWN_ROLE, ProtocolStatus.CANT_MPX_CONN, ProtocolStatus.CANT_MPX_CONN];
  let served = 0;
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    for (;;) {
      const { requestId } = await nextRequest();
      const status = statuses[served++];
      if (status === undefined) answer(socket, requestId, 'finally');
      else socket.write(encodeEndRequest(requestId, 0, status));
    }
  });
  const client = newClient(t, address);
  await assert.rejects(
    client.fetchAll({ params: {} }),
    (error: UpstreamError) => error.code === ErrorCode.UPSTREAM_OVERLOADED && error.retryable,
  );
  await assert.rejects(client.fetchAll({ params: {} }), (error: UpstreamError) => error.code === ErrorCode.UPSTREAM_UNKNOWN_ROLE);
  // CANT_MPX_CONN: one retry on a fresh connection, then the error.
  await assert.rejects(client.fetchAll({ params: {} }), (error: UpstreamError) => error.code === ErrorCode.UPSTREAM_CANT_MPX);
  assert.equal((await client.fetchAll({ params: {} })).stdout.toString(), 'finally');
});

test('bytes that are not FastCGI are UPSTREAM_PROTOCOL', async (t) => {
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    await nextRequest();
    socket.write('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  const client = newClient(t, address);
  await assert.rejects(client.fetchAll({ params: {} }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_PROTOCOL);
    assert.match(error.message, /not FastCGI/);
    return true;
  });
});

test('an application that ignores ABORT_REQUEST loses its connection after the grace period', async (t) => {
  let closed!: () => void;
  const connectionClosed = new Promise<void>((resolve) => (closed = resolve));
  let sawAbort = false;
  const address = await scriptedServer(t, async ({ socket, nextRequest, records }) => {
    socket.on('close', () => closed());
    const { requestId } = await nextRequest();
    socket.write(encodeRecord(RecordType.STDOUT, requestId, Buffer.from('partial')));
    socket.on('data', () => (sawAbort ||= records.some((record) => record.type === RecordType.ABORT_REQUEST)));
  });
  const client = newClient(t, address, { abortGraceMs: 100 });
  const controller = new AbortController();
  const response = client.request({ params: {}, signal: controller.signal });
  response.on('error', () => {});
  await new Promise((resolve) => response.once('data', resolve));
  controller.abort();
  await assert.rejects(response.completion, (error: UpstreamError) => error.code === ErrorCode.REQUEST_ABORTED);
  await connectionClosed;
  assert.ok(sawAbort, 'ABORT_REQUEST was sent first');
});

test('an abort while waiting in the queue never reaches the application', async (t) => {
  let requests = 0;
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    for (;;) {
      const { requestId } = await nextRequest();
      requests++;
      setTimeout(() => answer(socket, requestId, 'ok'), 100);
    }
  });
  const client = newClient(t, address, { maxConnections: 1 });
  const first = client.fetchAll({ params: {} });
  const controller = new AbortController();
  const queued = client.fetchAll({ params: {}, signal: controller.signal });
  controller.abort();
  await assert.rejects(queued, (error: UpstreamError) => error.code === ErrorCode.REQUEST_ABORTED);
  await first;
  // Queued behind the aborted one: once it is served, an aborted request that was still sent would have come first.
  await client.fetchAll({ params: {} });
  assert.equal(requests, 2);
});

test('an application that never answers GET_VALUES: the probe gives up (null) and requests never wait for it', async (t) => {
  let probeConnections = 0;
  const address = await scriptedServer(t, async ({ socket, nextRequest, records }) => {
    socket.once('data', () => {
      if (records[0]?.type === RecordType.GET_VALUES) probeConnections++;
    });
    const { requestId } = await nextRequest();
    answer(socket, requestId, 'served');
  });
  const client = newClient(t, address, { probe: true, probeTimeoutMs: 200 });
  const capabilities = client.capabilities();
  const result = await client.fetchAll({ params: {} });
  assert.equal(result.stdout.toString(), 'served');
  assert.equal(await capabilities, null);
  assert.equal(probeConnections, 1);
});

test('fetchAll past maxBytes is UPSTREAM_RESPONSE_TOO_LARGE; a queue wait past idleTimeoutMs is UPSTREAM_TIMEOUT', async (t) => {
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    for (;;) {
      const { requestId } = await nextRequest();
      setTimeout(() => answer(socket, requestId, 'z'.repeat(5000)), 300);
    }
  });
  const client = newClient(t, address, { maxConnections: 1, idleTimeoutMs: 1000 });
  await assert.rejects(
    client.fetchAll({ params: {}, maxBytes: 1000 }),
    (error: UpstreamError) => error.code === ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE,
  );
  const busy = client.fetchAll({ params: {} });
  await assert.rejects(client.fetchAll({ params: {}, idleTimeoutMs: 100 }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_TIMEOUT);
    assert.match(error.message, /no connection became free within 100 ms/);
    return true;
  });
  assert.equal((await busy).stdout.length, 5000);
});

test('one AbortSignal shared by many requests keeps no listener per finished request', async (t) => {
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    for (;;) answer(socket, (await nextRequest()).requestId, 'ok');
  });
  const client = newClient(t, address);
  const controller = new AbortController();
  for (let i = 0; i < 20; i++) await client.fetchAll({ params: {}, signal: controller.signal });
  assert.equal(EventEmitter.getEventListeners(controller.signal, 'abort').length, 0);
});

test('the request body is read no faster than the application reads it (STDIN backpressure)', async (t) => {
  let resumeServer!: () => void;
  const serverMayRead = new Promise<void>((resolve) => (resumeServer = resolve));
  const address = await scriptedServer(t, async ({ socket, nextRequest }) => {
    socket.pause();
    await serverMayRead;
    socket.resume();
    const { requestId, stdin } = await nextRequest();
    answer(socket, requestId, `got ${stdin.length}`);
  });
  const client = newClient(t, address);
  const chunk = Buffer.alloc(64 * 1024, 'b');
  const total = 64 * 1024 * 1024;
  let pulled = 0;
  async function* body() {
    while (pulled < total) {
      pulled += chunk.length;
      yield chunk;
    }
  }
  const result = client.fetchAll({ params: { CONTENT_LENGTH: String(total) }, body: body() });
  // Until the client stops pulling: it started, and pulled nothing more between two looks (the event loop ran in
  // between, and the body is pulled whenever the socket can take more); or it pulled everything, which only a client
  // without backpressure does.
  let previous = -1;
  await waitFor(() => {
    const stopped = pulled > 0 && pulled === previous;
    previous = pulled;
    return stopped || pulled >= total;
  }, 'the client to stop pulling the body');
  // Socket buffers on both sides hold a few hundred KiB.
  assert.ok(pulled < 8 * 1024 * 1024, `pulled ${pulled} bytes of the body while the application read nothing`);
  resumeServer();
  assert.equal((await result).stdout.toString(), `got ${total}`);
});

test('options are validated up front', () => {
  assert.throws(() => new FastCGIClient({ address: 'localhost' }), /FastCGI address "localhost" is not an address; write HOST:PORT/);
  assert.throws(() => new FastCGIClient({ address: '127.0.0.1:0' }), /FastCGI address "127\.0\.0\.1:0": the port must be from 1 to 65535/);
  assert.throws(() => new FastCGIClient({ address: { host: '127.0.0.1', port: 0 } }), /no valid port/);
  assert.throws(() => new FastCGIClient({ address: 'unix:/x', maxConnections: 0 }), /maxConnections must be a positive integer/);
  assert.throws(() => new FastCGIClient({ address: 'unix:/x', idleTimeoutMs: 1.5 }), /idleTimeoutMs/);
  const client = new FastCGIClient({ address: 'unix:/x', probe: false });
  assert.throws(() => client.request({ params: {}, data: 'x' }), /filter/);
  assert.equal(new FastCGIClient({ address: '[::1]:9000' }).upstream, '[::1]:9000');
  assert.equal(new FastCGIClient({ address: { host: '127.0.0.1', port: 9000 } }).upstream, '127.0.0.1:9000');
  assert.equal(new FastCGIClient({ address: '/run/app.sock' }).upstream, 'unix:/run/app.sock');
});

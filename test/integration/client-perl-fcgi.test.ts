/**
 * The FastCGI client against Perl's FCGI module (libfcgi-perl 0.82) under
 * spawn-fcgi. Checked here: like libfcgi, whose code it carries, it does not
 * answer the probe's FCGI_GET_VALUES until another record follows it; the
 * probe sends a second, empty GET_VALUES for that reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { FastCGIClient, ErrorCode, type UpstreamError } from '../../src/fastcgi/client/index.js';
import { encodeParamsRecords } from '../../src/fastcgi/records.js';
import { RecordType } from '../../src/fastcgi/protocol.js';
import { startSpawnFcgi } from '../kit/spawn-fcgi.js';
import { wchan } from '../kit/proc.js';
import { requireProgram, startProcess, tempDir } from '../kit/process.js';
import { waitFor } from '../kit/wait.js';

const script = join(new URL('../../../', import.meta.url).pathname, 'test/fixtures/cgi-bin-client/perl-fcgi.pl');

test('perl FCGI: requests served, and the probe answered thanks to its trailing record', async (t) => {
  const app = await startSpawnFcgi(t, { program: requireProgram('/usr/bin/perl'), args: [script], children: 2 });
  const client = new FastCGIClient({ address: app.addressString });
  t.after(() => client.close());
  const result = await client.fetchAll({ params: { REQUEST_METHOD: 'GET' } });
  assert.equal(result.stdout.toString(), 'Content-Type: text/plain\r\n\r\nperl says hello to GET\n');
  assert.deepEqual(await client.capabilities(), { maxConns: 1, maxReqs: 1, multiplexes: false });
  const again = await client.fetchAll({ params: { REQUEST_METHOD: 'POST', CONTENT_LENGTH: '0' } });
  assert.match(again.stdout.toString(), /hello to POST/);
});

test('perl FCGI leaves the probe`s GET_VALUES unanswered until another record follows (why the probe sends two)', async (t) => {
  const app = await startSpawnFcgi(t, { program: requireProgram('/usr/bin/perl'), args: [script] });
  const socket = net.connect((app.address as { path: string }).path);
  t.after(() => socket.destroy());
  let received = 0;
  socket.on('data', (chunk: Buffer) => (received += chunk.length));
  // The probe's own query: three names, 48 bytes, so a record with no padding. (A one-name query, padded, does get an
  // answer: the library seems to act once it reads past the record's end.)
  const query = encodeParamsRecords(RecordType.GET_VALUES, 0, [
    ['FCGI_MAX_CONNS', ''],
    ['FCGI_MAX_REQS', ''],
    ['FCGI_MPXS_CONNS', ''],
  ]);
  assert.equal(query[6], 0, 'the query record has no padding');
  await new Promise<void>((resolve, reject) => socket.write(query, (error) => (error ? reject(error) : resolve())));
  // The query is in Perl's receive queue. Perl waited in poll(2) for it; once it has read the query and waits in
  // read(2) for more, it has taken its decision: no answer.
  const [perl] = app.pids();
  await waitFor(() => /unix_stream_(read|data_wait)/.test(wchan(perl!)), 'Perl to read the query and wait for more', {
    context: () => `wchan: ${wchan(perl!)}`,
  });
  assert.equal(received, 0);
  socket.write(encodeParamsRecords(RecordType.GET_VALUES, 0, [['FCGI_MPXS_CONNS', '']]));
  await waitFor(() => received > 0, 'the answer to the first query, released by the second record');
});

test('a full listen queue (a listener that never accepts) is UPSTREAM_REFUSED with EAGAIN, at once', async (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'full.sock');
  // Perl, because a node:net server always accepts. Listen => 0: Linux then queues only a few connections.
  const listener = startProcess(t, requireProgram('/usr/bin/perl'), [
    '-MIO::Socket::UNIX',
    '-e',
    '$| = 1; my $s = IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 0) or die "listen: $!"; print "ready\\n"; sleep 60',
    path,
  ]);
  await waitFor(() => listener.output().includes('ready'), 'the listener to be ready', { context: listener.output });
  const fillers: net.Socket[] = [];
  t.after(() => {
    for (const socket of fillers) socket.destroy();
  });
  for (let i = 0; i < 16; i++) fillers.push(net.connect(path).on('error', () => {}));
  // Each filler is queued (connected) or refused (the queue is full) before the client tries.
  await Promise.all(fillers.map((socket) => new Promise((resolve) => socket.once('connect', resolve).once('error', resolve))));
  const client = new FastCGIClient({ address: `unix:${path}`, probe: false });
  t.after(() => client.close());
  await assert.rejects(client.fetchAll({ params: {} }), (error: UpstreamError) => {
    assert.equal(error.code, ErrorCode.UPSTREAM_REFUSED);
    assert.match(error.message, /EAGAIN\): its listen queue is full/);
    return true;
  });
});

/**
 * serve's metrics from node:diagnostics_channel alone: HTTP requests by
 * route (marked by the handlers' create events) and status class, aborted
 * ones, durations, connections and bytes of the front's own servers only;
 * FastCGI upstream requests, errors and timeouts from the client's events;
 * nothing counted once detached.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { cgiChannels, clientChannels, fastcgiChannels } from '../../src/diagnostics.js';
import { ErrorCode, UpstreamError } from '../../src/errors.js';
import { MetricsRegistry } from '../../src/metrics/registry.js';
import { ServeMetrics } from '../../src/metrics/serve.js';
import type { PoolStats } from '../../src/fastcgi/client/pool.js';
import { parseExposition, promtoolCheck, sampleValue } from '../kit/metrics.js';
import { waitFor } from '../kit/wait.js';

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

test('requests by route and status class, aborted ones, connections and bytes, of the front only', async (t) => {
  const front = http.createServer((req, res) => {
    const request = { handler: 'cgi' as const, method: req.method ?? 'GET', url: req.url ?? '/', req, res };
    if (req.url === '/cgi') cgiChannels.create.publish({ request });
    if (req.url === '/php') fastcgiChannels.create.publish({ request: { ...request, handler: 'fastcgi' } });
    if (req.url === '/hang') return; // the client gives up
    res.statusCode = req.url === '/missing' ? 404 : 200;
    res.end('body\n');
  });
  const other = http.createServer((_req, res) => res.end('not the front'));
  t.after(() => {
    front.closeAllConnections();
    front.close();
    other.close();
  });
  const port = await listen(front);
  const otherPort = await listen(other);
  const registry = await MetricsRegistry.create('serve');
  const metrics = new ServeMetrics(registry);
  metrics.attach({ servers: [front], limiter: null, fastcgiClients: [], daemon: null });
  t.after(() => metrics.detach());

  assert.equal(await get(port, '/cgi'), 200);
  assert.equal(await get(port, '/cgi'), 200);
  assert.equal(await get(port, '/php'), 200);
  assert.equal(await get(port, '/missing'), 404);
  assert.equal(await get(otherPort, '/cgi'), 200);
  await new Promise<void>((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /hang HTTP/1.1\r\nHost: x\r\n\r\n'));
    // Closed once the server has the request (it reads it before the handler runs).
    front.once('request', () => setImmediate(() => socket.destroy()));
    socket.on('close', () => resolve());
  });
  // The server sees the close on its next turn.
  let exposition = '';
  await waitFor(
    async () => {
      exposition = await registry.metrics();
      return sampleValue(parseExposition(exposition), 'gatehouse_http_connections') === 0;
    },
    'the aborted connection counted as closed (gatehouse_http_connections 0)',
    { context: () => `last exposition:\n${exposition}` },
  );

  const text = await registry.metrics();
  const samples = parseExposition(text);
  assert.equal(sampleValue(samples, 'gatehouse_http_requests_total', { route: 'cgi', status_class: '2xx' }), 2);
  assert.equal(sampleValue(samples, 'gatehouse_http_requests_total', { route: 'fastcgi', status_class: '2xx' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_http_requests_total', { route: 'static', status_class: '4xx' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_http_requests_total', { route: 'static', status_class: 'aborted' }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_http_request_duration_seconds_count', { route: 'cgi' }), 2);
  assert.equal(sampleValue(samples, 'gatehouse_http_requests_in_flight'), 0);
  assert.equal(
    sampleValue(samples, 'gatehouse_http_connections_total'),
    5,
    "four requests and the aborted one; the other server's are not counted",
  );
  assert.equal(sampleValue(samples, 'gatehouse_http_connections'), 0);
  assert.ok((sampleValue(samples, 'gatehouse_http_received_bytes_total') ?? 0) > 5 * 'GET / HTTP/1.1\r\n'.length);
  assert.ok((sampleValue(samples, 'gatehouse_http_sent_bytes_total') ?? 0) > 4 * 'HTTP/1.1 200 OK\r\n'.length);
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);

  metrics.detach();
  assert.equal(await get(port, '/cgi'), 200);
  const after = parseExposition(await registry.metrics());
  assert.equal(sampleValue(after, 'gatehouse_http_requests_total', { route: 'cgi', status_class: '2xx' }), 2, 'detached: not counted');
});

test('FastCGI upstreams: requests, errors by code, timeouts from the client events; pool state read at each scrape', async (t) => {
  const registry = await MetricsRegistry.create('serve');
  const metrics = new ServeMetrics(registry);
  const stats: PoolStats = { connections: 3, idle: 1, queued: 2, opened: 9, waited: 4, starved: 1, connectionCap: 5 };
  metrics.attach({
    servers: [],
    limiter: null,
    fastcgiClients: [
      { upstream: 'unix:/run/php.sock', stats },
      { upstream: 'unix:/run/php.sock', stats },
      { upstream: '127.0.0.1:9000', stats },
    ],
    daemon: { available: true, starts: 3, daemonPid: undefined },
  });
  t.after(() => metrics.detach());
  const request = { upstream: 'unix:/run/php.sock', role: 'responder' as const };
  for (let count = 0; count < 3; count += 1) clientChannels.create.publish({ request });
  clientChannels.error.publish({ request, error: new UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, request.upstream, 'no data') });
  clientChannels.error.publish({ request, error: new UpstreamError(ErrorCode.UPSTREAM_REFUSED, request.upstream, 'refused') });
  const samples = parseExposition(await registry.metrics());
  const php = { upstream: 'unix:/run/php.sock' };
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', php), 3);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', { upstream: '127.0.0.1:9000' }), 0);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_errors_total', { ...php, code: ErrorCode.UPSTREAM_TIMEOUT }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_errors_total', { ...php, code: ErrorCode.UPSTREAM_REFUSED }), 1);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_timeouts_total', php), 1);
  // Two routes to the same application: their pools add up.
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', php), 6);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_pool_full_total', php), 8);
  assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_up'), 1);
  assert.equal(sampleValue(samples, 'gatehouse_cgid_daemon_restarts_total'), 2);
  assert.deepEqual(metrics.statusPools(), [
    // max: each pool's connection cap, added up like its connections.
    { name: 'fastcgi unix:/run/php.sock', active: 4, idle: 2, queue: 4, max: 10, maxReached: 8 },
    { name: 'fastcgi 127.0.0.1:9000', active: 2, idle: 1, queue: 2, max: 5, maxReached: 4 },
  ]);
});

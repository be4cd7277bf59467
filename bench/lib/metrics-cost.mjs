/**
 * What serve's metrics add to one request, measured in-process and without
 * the network: the events one CGI request and one FastCGI request publish
 * (Node's http.server.request.start, the handler's create and headers, the
 * response's close, the FastCGI client's create, headers and trailers, a
 * metered spawn and its exit), replayed N times with nobody subscribed and
 * with ServeMetrics subscribed. The difference per request is the metrics'
 * CPU cost, free of the machine's load, which on a shared machine moves
 * requests/s far more than a few microseconds do.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';

const ITERATIONS = 100_000;

export async function metricsCostPerRequest(dist) {
  const { MetricsRegistry } = await import(`${dist}/src/metrics/registry.js`);
  const { ServeMetrics } = await import(`${dist}/src/metrics/serve.js`);
  const { cgiChannels, clientChannels, fastcgiChannels, reportHandlerRequest } = await import(`${dist}/src/diagnostics.js`);
  const { ScriptLimiter } = await import(`${dist}/src/cgi/limiter.js`);
  const requestStart = diagnosticsChannel.channel('http.server.request.start');
  const server = new EventEmitter();
  const exited = Promise.resolve({ code: 0, signal: null });
  const innerSpawner = { spawn: async () => ({ pid: 1, exited }) };
  const fastcgiInfo = { upstream: 'unix:/run/php.sock', role: 'responder' };

  /** One request's events, as the front publishes them (each publisher checks hasSubscribers first). */
  async function oneRequest(kind, spawner) {
    const req = { method: 'GET', url: '/x' };
    const res = new EventEmitter();
    res.statusCode = 200;
    res.writableFinished = true;
    if (requestStart.hasSubscribers) requestStart.publish({ request: req, response: res, socket: null, server });
    const report = reportHandlerRequest(kind === 'cgi' ? cgiChannels : fastcgiChannels, kind, req, res, '/x');
    if (kind === 'cgi') await (await spawner.spawn({ file: '/x', argv: [], cwd: '/', env: {} })).exited;
    else {
      const info = clientChannels.create.hasSubscribers ? { ...fastcgiInfo } : null;
      if (clientChannels.create.hasSubscribers) clientChannels.create.publish({ request: info });
      if (clientChannels.headers.hasSubscribers) clientChannels.headers.publish({ request: info });
      if (clientChannels.trailers.hasSubscribers) clientChannels.trailers.publish({ request: info, trailers: [], appStatus: 0 });
    }
    report?.headers();
    res.emit('close');
  }

  async function timeLoop(kind, spawner) {
    for (let i = 0; i < 2000; i += 1) await oneRequest(kind, spawner);
    const before = process.cpuUsage();
    for (let i = 0; i < ITERATIONS; i += 1) await oneRequest(kind, spawner);
    const used = process.cpuUsage(before);
    return (used.user + used.system) / ITERATIONS;
  }

  const result = {};
  for (const kind of ['cgi', 'fastcgi']) {
    const off = await timeLoop(kind, innerSpawner);
    const registry = await MetricsRegistry.create('serve');
    const metrics = new ServeMetrics(registry);
    const spawner = metrics.meter(innerSpawner);
    metrics.attach({
      servers: [server],
      limiter: new ScriptLimiter(16, 16),
      fastcgiClients: [{ upstream: fastcgiInfo.upstream, stats: { connections: 0, idle: 0, queued: 0, opened: 0, waited: 0, starved: 0 } }],
      daemon: { available: true, starts: 1 },
    });
    const on = await timeLoop(kind, spawner);
    metrics.detach();
    result[kind] = { off, on, cost: on - off };
  }
  return result;
}

/**
 * Pins: after a SIGHUP reload, serve's metrics kept reading the script
 * limiter and the FastCGI clients of the configuration it started with
 * (src/metrics/serve.ts took them once, at attach). A reload that changes
 * max-scripts and moves a FastCGI route to another upstream must show in
 * /metrics and /status: the new max-scripts, the new upstream's counters
 * from 0 and its requests counted, the old upstream's gauges gone, its
 * connection cap (max) the reloaded max-connections.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { httpRequest } from '../kit/http.js';
import { httpGet, promtoolCheck, sampleValue, scrape, type Sample } from '../kit/metrics.js';
import { freePort, tempDir, waitForListener } from '../kit/process.js';
import { startGatehouse } from '../kit/serve.js';
import { waitFor } from '../kit/wait.js';

function config(dir: string, maxScripts: number, upstream: string, maxConnections: number): string {
  return `cgi-bin = "${join(dir, 'cgi')}"
max-scripts = ${maxScripts}
access-log = "off"

[[fastcgi]]
url = "/app/"
upstreams = ["unix:${upstream}"]
root = "${join(dir, 'cgi')}"
check-script = false
max-connections = ${maxConnections}
`;
}

test('serve --metrics after SIGHUP: max-scripts and the FastCGI upstream are the reloaded ones', async (t) => {
  const dir = tempDir(t, 'gatehouse-metrics-reload-');
  mkdirSync(join(dir, 'cgi'));
  // Nothing listens on either socket: a request to the route is refused (503) and counted by upstream.
  const before = join(dir, 'before.sock');
  const after = join(dir, 'after.sock');
  const file = join(dir, 'serve.toml');
  writeFileSync(file, config(dir, 2, before, 3));
  const metricsPort = await freePort();
  const serve = await startGatehouse(t, 'serve', ['--config', file, '--metrics', `127.0.0.1:${metricsPort}`]);
  await waitForListener({ host: '127.0.0.1', port: metricsPort }, { what: "serve's metrics", process: serve, timeoutMs: 15_000 });
  assert.equal((await httpRequest(`${serve.base}/app/x`)).status, 503);
  let samples = (await scrape({ port: metricsPort })).samples;
  assert.equal(sampleValue(samples, 'gatehouse_cgi_scripts_max'), 2);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', { upstream: `unix:${before}` }), 1);

  writeFileSync(file, config(dir, 5, after, 7));
  process.kill(serve.child.pid!, 'SIGHUP');
  let last = '';
  samples = await waitFor(
    async () => {
      const scraped = await scrape({ port: metricsPort });
      last = scraped.text;
      return sampleValue(scraped.samples, 'gatehouse_cgi_scripts_max') === 5 ? scraped.samples : null;
    },
    'gatehouse_cgi_scripts_max 5 after the reload',
    { context: () => `${serve.output()}\nlast scrape:\n${last}` },
  );
  const upstream = (which: string) => ({ upstream: `unix:${which}` });
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', upstream(after)), 0, 'the new upstream from 0');
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', upstream(after)), 0);
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_connections', upstream(before)), undefined, 'the old one gone');
  assert.equal(sampleValue(samples, 'gatehouse_fastcgi_upstream_requests_total', upstream(before)), 1, 'its count kept');

  assert.equal((await httpRequest(`${serve.base}/app/x`)).status, 503);
  const counted = (found: Sample[]) =>
    sampleValue(found, 'gatehouse_fastcgi_upstream_errors_total', { ...upstream(after), code: 'GH_UPSTREAM_REFUSED' }) === 1;
  const { text } = await waitFor(async () => {
    const scraped = await scrape({ port: metricsPort });
    return counted(scraped.samples) ? scraped : null;
  }, 'the refused request counted against the new upstream');
  const verdict = await promtoolCheck(text);
  assert.equal(verdict.code, 0, verdict.output);
  const status = JSON.parse((await httpGet({ port: metricsPort }, '/status')).body) as {
    pools: Array<{ name: string; max: number | null }>;
  };
  assert.deepEqual(
    status.pools.map((pool) => [pool.name, pool.max]),
    [
      ['cgi scripts', 5],
      [`fastcgi unix:${after}`, 7],
    ],
  );
});

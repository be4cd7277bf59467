/**
 * Regression guard: a variable pool (`gatehouse kfcgi -r`) of gatehouse Node
 * workers behind nginx with upstream keep-alive was reported to stall
 * requests while the pool grew (wrk: 12 of 16 connections past its 2 s
 * timeout). The cause was not a lost wake-up: each slow request was the
 * first one on a connection handed to a worker that had only just been
 * spawned, waiting for Node to start (0.2-0.3 s alone, over 2 s when twelve
 * start at once on two busy cores); the C extension worker starts in
 * milliseconds. This test pins what must hold whatever the start-up costs:
 * while the pool grows and nginx keeps replacing its kept-alive connections
 * (keepalive_requests 5, so the manager hands connections over and reads
 * cookies back from grown workers throughout), every request is answered.
 * It fails (a request times out) when the manager does not watch a grown
 * worker's control socket, or when a worker never writes its cookies back:
 * both were tried.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startNginx, NGINX_FASTCGI_PARAMS } from '../kit/nginx.js';
import { tempDir } from '../kit/process.js';
import { readStatus } from '../../src/kfcgi/status.js';
import { nodeWorker, startKfcgi } from '../kit/kfcgi.js';

const CLIENTS = 4;
const REQUESTS_PER_CLIENT = 50;
/** A bound, not a timing assertion: a request left unread or a worker never freed waits forever without it. */
const REQUEST_TIMEOUT_MS = 20_000;

/** One GET over the client's kept-alive connection to nginx; rejects past REQUEST_TIMEOUT_MS. */
function get(agent: http.Agent, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to GET ${url} within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

test('kfcgi -r with the Node worker behind nginx upstream keep-alive: every request is answered while the pool grows', async (t) => {
  const dir = tempDir(t, 'gatehouse-regress-kfcgi-keepalive-');
  const socket = join(dir, 'app.sock');
  const status = join(dir, 'status.sock');
  const kfcgi = await startKfcgi(t, ['-r', '-p', '/', '-n', '1', '-N', '4', '-s', socket, '-S', status, process.execPath, nodeWorker], {
    socket,
    expectWorkers: 1,
  });
  const nginx = await startNginx(t, {
    httpBlock: `upstream pool { server unix:${socket}; keepalive ${CLIENTS}; keepalive_requests 5; }`,
    serverBlock: `location / { ${NGINX_FASTCGI_PARAMS} fastcgi_pass pool; fastcgi_keep_conn on; }`,
  });
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  t.after(() => agent.destroy());
  const failures: string[] = [];
  const pids = new Set<string>();
  const client = async (index: number) => {
    for (let request = 0; request < REQUESTS_PER_CLIENT; request += 1) {
      // The first requests overlap (held 500 ms) so that nginx needs a connection per client: the pool must grow.
      const url = `${nginx.url}/?client=${index}&request=${request}${request === 0 ? '&sleep=500' : ''}`;
      try {
        const response = await get(agent, url);
        const pid = /hello from node pid (\d+)/.exec(response.body)?.[1];
        if (response.status !== 200 || !pid) failures.push(`${url}: ${response.status} ${response.body.slice(0, 200)}`);
        else pids.add(pid);
      } catch (error) {
        // A pool that stopped serving would make each later request wait out its own bound: one is proof enough.
        failures.push(`${url}: ${(error as Error).message}`);
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, index) => client(index)));
  const after = await readStatus(status);
  const context = () =>
    `status: ${JSON.stringify(after)}\nnginx: ${readFileSync(nginx.errorLog, 'utf8').slice(-2000)}\nkfcgi: ${kfcgi.output().slice(-4000)}`;
  assert.deepEqual(failures, [], `${failures.length} of ${CLIENTS * REQUESTS_PER_CLIENT} requests failed\n${context()}`);
  assert.ok(after.workers > 1, `the pool did not grow past -n 1\n${context()}`);
  assert.ok(pids.size > 1, `every request went to one worker: ${[...pids].join(', ')}`);
  // nginx replaced its connections as it went: grown workers gave theirs back and took new ones.
  assert.ok(after.handedOver! > CLIENTS, `only ${after.handedOver} connections handed over\n${context()}`);
  assert.equal(after.handedOver, after.accepted, 'every accepted connection was handed to a worker');
});

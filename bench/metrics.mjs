/**
 * Issue 13's benchmark: metrics must not cost what they measure. Three
 * `gatehouse serve` processes configured alike, one with --metrics and two
 * without (the second a control: the spread between the two that do the
 * same work is the run's noise), each with its own cgid daemon and its own
 * php-fpm pool (4 workers, pm static), measured in the same run, in turns
 * (the order reversed every round so drift hits all): a C hello CGI script
 * and hello.php through a FastCGI route, 16 connections. While the metrics
 * one is measured, its /metrics is scraped at the start and every 5 s
 * (three times as often as Prometheus's usual 15 s). Reported: requests/s,
 * p99, the front process's CPU time per request from /proc (user + system
 * of the serve process; the daemon and php-fpm do the same work in all),
 * the median of each round's on/off ratios, what one scrape costs, and what
 * the metrics' subscribers cost per request measured in-process
 * (bench/lib/metrics-cost.mjs), which the machine's load does not blur.
 */
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpuMicros, expectBody, freePort, startPhpFpm, waitForListener, wrk } from './lib/peers.mjs';
import { makeHelloCgiBin, startGatehouseServe } from './lib/cgi-peers.mjs';
import { metricsCostPerRequest } from './lib/metrics-cost.mjs';

const DIST = new URL('../dist', import.meta.url).href;

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

const SCRAPE_INTERVAL_MS = 5000;

function scrapeOnce(port) {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: 5000 }, (res) => {
        res.resume();
        res.on('end', resolve);
      })
      .on('error', resolve);
  });
}

/** GETs /metrics every SCRAPE_INTERVAL_MS (the first at once) until stopped; returns the number of scrapes. */
function scrapeEvery(port) {
  let scrapes = 0;
  const scrape = () => void scrapeOnce(port).then(() => (scrapes += 1));
  scrape();
  const timer = setInterval(scrape, SCRAPE_INTERVAL_MS);
  return () => {
    clearInterval(timer);
    return scrapes;
  };
}

export async function runMetricsBench({ duration = 6, repeats = 3, connections = 16 } = {}) {
  // First, alone: what the metrics' subscribers cost per request, in-process.
  const cost = await metricsCostPerRequest(DIST);
  const { cgiBin } = makeHelloCgiBin();
  const start = async (metricsPort) => {
    const fpm = await startPhpFpm({ workers: 4 });
    const config = join(fpm.dir, 'gatehouse-bench-metrics.toml');
    writeFileSync(
      config,
      `cgi-bin = "${cgiBin}"\n\n[[fastcgi]]\nurl = "/php/"\nupstreams = ["unix:${fpm.socketPath}"]\nscript-filename = "${fpm.script}"\nmax-connections = 4\n`,
    );
    const serve = await startGatehouseServe({
      args: ['--config', config, ...(metricsPort ? ['--metrics', `127.0.0.1:${metricsPort}`] : [])],
    });
    if (metricsPort) await waitForListener({ host: '127.0.0.1', port: metricsPort }, 10_000, serve.alive, 'the metrics listener');
    return serve;
  };
  const metricsPort = await freePort();
  // A second serve without metrics is the control: the spread between the two that do the same work is the noise.
  const variants = [
    ['metrics off', await start(null), null],
    ['metrics on', await start(metricsPort), metricsPort],
    ['metrics off (control)', await start(null), null],
  ];
  const routes = [
    ['CGI (C hello)', '/cgi-bin/hello-c', 'cgi'],
    ['php-fpm (hello.php)', '/php/', 'fastcgi'],
  ];
  for (const [, serve] of variants) for (const [, path] of routes) await expectBody(`${serve.url}${path}`, 'hello\n');
  // Warm-up: the JIT and the connection pools of both, off the record.
  for (const [, serve] of variants) for (const [, path] of routes) await wrk({ url: `${serve.url}${path}`, connections, seconds: 2 });

  const measured = {};
  const rows = [];
  let scrapes = 0;
  for (let round = 1; round <= repeats; round += 1) {
    const order = round % 2 === 1 ? variants : [...variants].reverse();
    for (const [route, path] of routes) {
      for (const [variant, serve, port] of order) {
        process.stdout.write(`  round ${round} ${route} ${variant}... `);
        const stopScraping = port ? scrapeEvery(port) : () => 0;
        const cpuBefore = cpuMicros([serve.child.pid]);
        const result = await wrk({ url: `${serve.url}${path}`, connections, seconds: duration });
        const cpu = cpuMicros([serve.child.pid]) - cpuBefore;
        scrapes += stopScraping();
        const cpuPerRequest = cpu / result.requests;
        console.log(`${fmt(result.requestsPerSecond)} req/s, ${fmt(cpuPerRequest)} µs CPU/request`);
        const entry = (measured[`${route} ${variant}`] ??= { rps: [], cpu: [] });
        entry.rps.push(result.requestsPerSecond);
        entry.cpu.push(cpuPerRequest);
        rows.push({
          round,
          route,
          serve: variant,
          'req/s': fmt(result.requestsPerSecond),
          'p99 ms': fmt(result.p99, 1),
          'front CPU µs/req': fmt(cpuPerRequest),
          errors: result.non2xx || result.socketErrors ? `${result.non2xx} non-2xx ${result.socketErrors}` : '',
        });
      }
    }
  }
  // What one scrape costs the front, measured alone (50 in a row, no traffic).
  const [, metered] = variants[1];
  const scrapeCpuBefore = cpuMicros([metered.child.pid]);
  for (let count = 0; count < 50; count += 1) await scrapeOnce(metricsPort);
  const scrapeCpu = (cpuMicros([metered.child.pid]) - scrapeCpuBefore) / 50;
  for (const [, serve] of variants) await serve.stop();
  // The machine's load moves between rounds more than metrics could: each round's on/off pair ran back to back,
  // so the median of the rounds' ratios is the estimate, and the ratio of the means is shown beside it.
  const verdicts = routes.flatMap(([route, , kind]) => {
    const on = measured[`${route} metrics on`];
    const off = measured[`${route} metrics off`];
    const control = measured[`${route} metrics off (control)`];
    const ratios = (a, b, key) => median(a[key].map((value, round) => value / b[key][round]));
    return [
      `${route}, ${connections} conn: metrics on / off = ${fmt(ratios(on, off, 'rps'), 3)}x requests/s (median of the rounds' ratios; ratio of the means ${fmt(mean(on.rps) / mean(off.rps), 3)}x; target >= 0.97x); front CPU per request ${fmt(ratios(on, off, 'cpu'), 3)}x (${fmt(mean(on.cpu))} vs ${fmt(mean(off.cpu))} µs/request)`,
      `${route}: control (off) / off = ${fmt(ratios(control, off, 'rps'), 3)}x requests/s, CPU per request ${fmt(ratios(control, off, 'cpu'), 3)}x: the noise of this run`,
      `${route}: in-process, the metrics add ${fmt(cost[kind].cost, 1)} µs of CPU per request (${fmt(cost[kind].off, 2)} -> ${fmt(cost[kind].on, 2)} µs for its events), ${fmt((cost[kind].cost / mean(off.cpu)) * 100, 2)}% of the front's ${fmt(mean(off.cpu))} µs per request measured here without metrics`,
    ];
  });
  return {
    title: 'gatehouse serve with metrics on vs off (CGI and php-fpm routes)',
    rows,
    verdicts,
    notes: [
      `${repeats} rounds of ${duration} s per point, in turns, order swapped each round; /metrics scraped at the start of each metrics-on run and every ${SCRAPE_INTERVAL_MS / 1000} s (${scrapes} scrapes in all)`,
      `one scrape costs the front ${fmt(scrapeCpu / 1000, 1)} ms of CPU (mean of 50, no traffic): at Prometheus's usual 15 s interval, ${fmt((scrapeCpu / 15_000_000) * 100, 3)}% of one core`,
    ],
  };
}

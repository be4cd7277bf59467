/**
 * The gatehouse FastCGI client vs npm fastcgi-client against the same
 * php-fpm pool (pm = static, 4 workers, hello.php), 16 requests in flight.
 * Each client runs in its own process (bench/client-driver.mjs); they take
 * turns, twice each.
 */
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess, startPhpFpm } from './lib/peers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const GATEHOUSE_CLIENT = join(here, '../dist/src/fastcgi/client/index.js');
const GATEHOUSE_LIMITS = join(here, '../dist/src/limits.js');
const DRIVER = join(here, 'client-driver.mjs');

async function drive(implementation, fpm, inFlight, seconds) {
  const run = startProcess(process.execPath, [DRIVER, implementation, fpm.socketPath, fpm.script, String(inFlight), String(seconds)], {
    env: { ...process.env, BENCH_FPM_WORKERS: String(fpm.workers) },
  });
  const watchdog = setTimeout(() => run.stop(), (seconds + 30) * 1000);
  const { code } = await run.exited;
  clearTimeout(watchdog);
  const line = run.output().trim().split('\n').at(-1);
  if (code !== 0) throw new Error(`client driver ${implementation} exited ${code}: ${run.output()}`);
  return JSON.parse(line);
}

const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export async function runClientBench({ duration = 6, repeats = 2, inFlight = 16 } = {}) {
  const implementations = ['fastcgi-client'];
  const notes = [];
  if (existsSync(GATEHOUSE_CLIENT)) implementations.unshift('gatehouse', 'gatehouse-defaults', 'gatehouse-close');
  else notes.push(`gatehouse client not built (${GATEHOUSE_CLIENT} missing): only fastcgi-client measured`);
  const fpm = await startPhpFpm({ workers: 4 });
  const runs = Object.fromEntries(implementations.map((name) => [name, []]));
  for (let repeat = 0; repeat < repeats; repeat++) {
    const order = repeat % 2 ? [...implementations].reverse() : implementations;
    for (const name of order) {
      process.stdout.write(`  ${name}, ${inFlight} in flight, run ${repeat + 1}... `);
      try {
        const result = await drive(name, fpm, inFlight, duration);
        runs[name].push(result);
        console.log(
          `${fmt(result.requestsPerSecond)} req/s, p99 ${fmt(result.p99, 2)} ms, ${result.errors} errors${result.firstError ? ` (${result.firstError})` : ''}`,
        );
      } catch (error) {
        if (!name.startsWith('gatehouse')) throw error;
        console.log(`failed: ${error.message}`);
        notes.push(`gatehouse client run ${repeat + 1} failed: ${String(error.message).split('\n').slice(0, 3).join(' ')}`);
      }
    }
  }
  // null (no request answered) counts as missing, not as zero.
  const mean = (list, key) => {
    const values = list.map((result) => result[key]).filter((value) => typeof value === 'number' && Number.isFinite(value));
    return values.length === 0 ? NaN : values.reduce((sum, value) => sum + value, 0) / values.length;
  };
  const summary = Object.fromEntries(
    Object.entries(runs).map(([name, list]) => [
      name,
      list.length === 0
        ? null
        : {
            requestsPerSecond: mean(list, 'requestsPerSecond'),
            p50: mean(list, 'p50'),
            p99: mean(list, 'p99'),
            cpuMicrosPerRequest: mean(list, 'cpuMicrosPerRequest'),
            errors: list.reduce((sum, result) => sum + result.errors, 0),
            requests: list.reduce((sum, result) => sum + result.requests, 0),
            firstError: list.map((result) => result.firstError).find(Boolean) ?? '',
            runs: list.map((result) => result.requestsPerSecond.toFixed(0)).join(' / '),
            clientConcurrency: list[0].clientConcurrency,
          },
    ]),
  );
  // The label states the default from src/limits.ts, so the README it lands in cannot drift from the code.
  const defaultConnections = existsSync(GATEHOUSE_LIMITS) ? (await import(GATEHOUSE_LIMITS)).CLIENT_MAX_CONNECTIONS : '?';
  const descriptions = {
    gatehouse: 'gatehouse FastCGIClient (keep-alive, maxConnections 4 = pm.max_children)',
    'gatehouse-defaults': `gatehouse FastCGIClient (defaults: keep-alive, maxConnections ${defaultConnections})`,
    'gatehouse-close': 'gatehouse FastCGIClient (keepAlive: false: one connection per request)',
    'fastcgi-client': 'npm fastcgi-client 0.2 (defaults; php-fpm states no FCGI_MAX_CONNS, so one connection per request)',
  };
  const best = summary['fastcgi-client'].requestsPerSecond;
  const rows = implementations.map((name) => {
    const result = summary[name];
    return {
      client: descriptions[name],
      'req/s (mean)': fmt(result?.requestsPerSecond),
      runs: result?.runs ?? '-',
      'p50 ms': fmt(result?.p50, 2),
      'p99 ms': fmt(result?.p99, 2),
      'client CPU µs/req': fmt(result?.cpuMicrosPerRequest),
      'x fastcgi-client': result ? `${(result.requestsPerSecond / best).toFixed(2)}x` : '-',
      errors: result ? `${result.errors}${result.firstError ? ` (${result.firstError.slice(0, 80)})` : ''}` : '-',
    };
  });
  const verdicts = [];
  for (const name of ['gatehouse', 'gatehouse-defaults', 'gatehouse-close']) {
    if (!implementations.includes(name)) continue;
    const result = summary[name];
    if (!result) {
      verdicts.push(`${name}: not measured (failed, see below)`);
      continue;
    }
    const ratio = result.requestsPerSecond / best;
    const cpuRatio = summary['fastcgi-client'].cpuMicrosPerRequest / result.cpuMicrosPerRequest;
    if (Number.isFinite(cpuRatio) && cpuRatio > 0) {
      verdicts.push(`client CPU per request, fastcgi-client / ${name} = ${cpuRatio.toFixed(2)}x (above 1: gatehouse spends less)`);
    }
    verdicts.push(`${descriptions[name]} / fastcgi-client = ${ratio.toFixed(2)}x (target >= 1.5x): ${ratio >= 1.5 ? 'MET' : 'MISSED'}`);
    if (result.errors > 0) verdicts.push(`${name} had ${result.errors} failed requests: ${result.firstError}`);
  }
  notes.push(
    `php-fpm 8.2 -n (no php.ini), pm = static, 4 workers, hello.php echoing "hello\\n"; ${inFlight} requests in flight from one Node process per client, ${duration} s per run after 1 s of warm-up, ${repeats} runs each taking turns; every body checked; latency measured per request in the driver; client CPU is the driver process's user + system time over the timed run divided by the requests answered.`,
  );
  return { title: `FastCGI client vs npm fastcgi-client against php-fpm (${inFlight} in flight)`, rows, verdicts, notes };
}

/**
 * A real Prometheus server (Debian's prometheus package) for the metrics
 * tests: started on 127.0.0.1 with a private configuration and storage
 * directory, scraping the given targets every second, and stopped after the
 * test. Queries go through its HTTP API (/api/v1/query, /api/v1/targets).
 */
import { waitFor } from './wait.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireProgram, startProcess, tempDir, waitForListener, type Cleanup, type RunningProcess } from './process.js';

export interface ScrapeTarget {
  job: string;
  /** host:port of a metrics listener. */
  address: string;
}

export interface RunningPrometheus extends RunningProcess {
  base: string;
  /** An instant query: each result's labels and value. */
  query(promql: string): Promise<Array<{ metric: Record<string, string>; value: number }>>;
  /** Waits until every target was scraped successfully at least once. */
  waitForTargets(timeoutMs?: number): Promise<void>;
  /**
   * Waits until `promql` has one result equal to `expected` (Prometheus sees
   * a counter only at its next scrape), and returns the last value seen.
   */
  valueWhen(promql: string, expected: number, timeoutMs?: number): Promise<number | undefined>;
}

export async function startPrometheus(t: Cleanup, targets: ScrapeTarget[]): Promise<RunningPrometheus> {
  const binary = requireProgram('/usr/bin/prometheus');
  const dir = tempDir(t, 'gatehouse-prometheus-');
  const port = await freePort();
  const jobs = new Map<string, string[]>();
  for (const target of targets) jobs.set(target.job, [...(jobs.get(target.job) ?? []), target.address]);
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    ...[...jobs].flatMap(([job, addresses]) => [
      `  - job_name: ${job}`,
      '    static_configs:',
      `      - targets: [${addresses.map((address) => `'${address}'`).join(', ')}]`,
    ]),
  ].join('\n');
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(configFile, `${config}\n`);
  const running = startProcess(t, binary, [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ]);
  const base = `http://127.0.0.1:${port}`;
  await waitForListener({ host: '127.0.0.1', port }, { what: 'prometheus', process: running, timeoutMs: 30_000 });
  // Prometheus listens before it is ready (its API answers 503 while the storage opens): /-/ready says when.
  await waitFor(
    async () => {
      const response = await fetch(`http://127.0.0.1:${port}/-/ready`).catch(() => null);
      await response?.body?.cancel();
      return response?.status === 200;
    },
    'prometheus ready (/-/ready answers 200)',
    { timeoutMs: 30_000, context: () => running.output() },
  );
  const api = async (path: string): Promise<unknown> => {
    const response = await fetch(`${base}${path}`);
    const body = (await response.json()) as { status: string; data: unknown; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus ${path}: ${body.error ?? response.status}`);
    return body.data;
  };
  const query = async (promql: string) => {
    const data = (await api(`/api/v1/query?query=${encodeURIComponent(promql)}`)) as {
      resultType: string;
      result: Array<{ metric: Record<string, string>; value: [number, string] }>;
    };
    return data.result.map((item) => ({ metric: item.metric, value: Number(item.value[1]) }));
  };
  return {
    ...running,
    base,
    query,
    async waitForTargets(timeoutMs = 30_000) {
      let last = '';
      await waitFor(
        async () => {
          const data = (await api('/api/v1/targets')) as {
            activeTargets: Array<{ scrapeUrl: string; health: string; lastError: string }>;
          };
          last = data.activeTargets.map((target) => `${target.scrapeUrl}: ${target.health} ${target.lastError}`).join('\n');
          return data.activeTargets.length === targets.length && data.activeTargets.every((target) => target.health === 'up');
        },
        'prometheus to scrape every target',
        { timeoutMs, context: () => `targets:\n${last}\n${running.output()}` },
      );
    },
    async valueWhen(promql: string, expected: number, timeoutMs = 20_000) {
      let value: number | undefined;
      let failure: unknown = null;
      // A query that fails ends the wait and is thrown; past the deadline the caller gets the last value
      // seen, not the wait's error, so that it can report every value that differs in one assertion.
      await waitFor(
        () =>
          query(promql).then(
            (result) => {
              value = result.length === 1 ? result[0]!.value : undefined;
              return value === expected;
            },
            (error: unknown) => {
              failure = error;
              return true;
            },
          ),
        `prometheus to give ${promql} = ${expected}`,
        { timeoutMs },
      ).catch(() => {});
      if (failure) throw failure;
      return value;
    },
  };
}

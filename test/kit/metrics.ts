/**
 * Helpers for the metrics tests: the metrics a manual documents (its METRICS
 * section), Prometheus text read into samples, promtool's verdict on an
 * exposition, and a scrape over HTTP or a unix socket.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import { requireProgram } from './process.js';
import { waitFor } from './wait.js';

export interface DocumentedMetric {
  name: string;
  type: string;
  labels: string[];
}

/** `.It Li NAME [Li {a,b}] Pq TYPE` entries of the manual's METRICS section. */
export function documentedMetrics(manual: string): DocumentedMetric[] {
  const start = manual.indexOf('\n.Sh METRICS\n');
  if (start === -1) return [];
  const end = manual.indexOf('\n.Sh ', start + 1);
  const section = manual.slice(start, end === -1 ? undefined : end);
  return [...section.matchAll(/^\.It Li (\w+)(?: Li \\?\{([\w,]*)\\?\})? Pq (counter|gauge|histogram)$/gm)].map((match) => ({
    name: match[1]!,
    type: match[3]!,
    labels: match[2] ? match[2].split(',') : [],
  }));
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a Prometheus text exposition (enough of the format for prom-client's output). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, '$1');
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when there is none. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter(
    (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
  );
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} match ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

/** `promtool check metrics` on `text`: its exit status and what it printed. */
export function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  const promtool = requireProgram('/usr/bin/promtool');
  return new Promise((resolve) => {
    const child = spawn(promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

/** GET `path` from a metrics address (`{ port }` on 127.0.0.1, or `{ socketPath }`). */
export function httpGet(
  where: { port: number } | { socketPath: string },
  path: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ ...('port' in where ? { host: '127.0.0.1', port: where.port } : where), path, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }));
    });
    request.on('error', reject);
    request.setTimeout(10_000, () => request.destroy(new Error(`GET ${path}: no answer within 10 s`)));
  });
}

/** Scrapes /metrics and checks it with promtool; returns the samples. */
export async function scrape(where: { port: number } | { socketPath: string }): Promise<{ text: string; samples: Sample[] }> {
  const response = await httpGet(where, '/metrics');
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}: ${response.body}`);
  return { text: response.body, samples: parseExposition(response.body) };
}

/**
 * Scrapes until `check` holds on the samples, then returns that scrape. Each look is a scrape, woken by its
 * answer, never a pause. A scrape that is not answered 200 ends the wait with that error. On a timeout, the
 * failure shows the last scrape, cut to the lines that start with `contextPrefix` where one is given.
 */
export async function scrapeUntil(
  port: number,
  check: (samples: Sample[]) => boolean,
  what: string,
  options: { timeoutMs?: number; contextPrefix?: string } = {},
): Promise<{ text: string; samples: Sample[] }> {
  let last: { text: string; samples: Sample[] } | undefined;
  const shown = () => {
    if (!last) return '(none answered)';
    const prefix = options.contextPrefix;
    return prefix === undefined
      ? last.text
      : last.text
          .split('\n')
          .filter((line) => line.startsWith(prefix))
          .join('\n');
  };
  return waitFor(
    async () => {
      last = await scrape({ port });
      return check(last.samples) ? last : null;
    },
    what,
    { ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }), context: () => `last scrape:\n${shown()}` },
  );
}

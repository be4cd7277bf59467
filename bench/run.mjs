#!/usr/bin/env node
/**
 * Side-by-side benchmarks of gatehouse against its peers (issue 3).
 *
 *   npm run bench -- <name> [--duration SECONDS] [--repeats N] [--no-write]
 *   node bench/run.mjs <name> ...        (after `npx tsc -p .`)
 *
 * Names: codec, worker, client, context, serve, cgid, metrics, all (kfcgi: node bench/kfcgi.mjs). Each prints a table with the
 * ratios, and (unless --no-write) replaces its section of bench/README.md with
 * the numbers and the command that made them. Every peer runs on loopback or
 * a unix socket in a temp dir and is stopped when the run ends.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { markdownTable, renderSection, writeSection } from './lib/report.mjs';
import { stopAll } from './lib/peers.mjs';

const here = dirname(fileURLToPath(import.meta.url));

const BENCHMARKS = {
  codec: async (options) => (await import('./codec.mjs')).runCodecBench(options.repeats ? { repeats: options.repeats } : {}),
  worker: async (options) => (await import('./worker.mjs')).runWorkerBench(options),
  client: async (options) => (await import('./client.mjs')).runClientBench(options),
  context: async (options) => (await import('./context.mjs')).runContextBench(options),
  serve: async (options) => (await import('./serve.mjs')).runServeBench(options),
  cgid: async (options) => (await import('./cgid.mjs')).runCgidBench(options),
  metrics: async (options) => (await import('./metrics.mjs')).runMetricsBench(options),
};

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    duration: { type: 'string', default: '6' },
    repeats: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (values.help || positionals.length === 0) {
  console.log(`usage: npm run bench -- <${Object.keys(BENCHMARKS).join('|')}|all> [--duration SECONDS] [--repeats N] [--no-write]`);
  process.exit(values.help ? 0 : 2);
}

const names = positionals.includes('all') ? Object.keys(BENCHMARKS) : positionals;
for (const name of names) {
  if (!BENCHMARKS[name]) {
    console.error(`unknown benchmark "${name}"; choose one of: ${Object.keys(BENCHMARKS).join(', ')}, all`);
    process.exit(2);
  }
}
const duration = Number(values.duration);
if (!Number.isFinite(duration) || duration < 1 || duration > 60) {
  console.error(`--duration ${values.duration}: give the seconds per measured point, 1 to 60`);
  process.exit(2);
}

const repeats = values.repeats === undefined ? undefined : Number(values.repeats);
if (repeats !== undefined && (!Number.isInteger(repeats) || repeats < 1 || repeats > 20)) {
  console.error(`--repeats ${values.repeats}: give how many runs per point, 1 to 20`);
  process.exit(2);
}

// Peers are stopped on every way out, including Ctrl-C.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    stopAll().finally(() => process.exit(130));
  });
}

let failed = false;
try {
  for (const name of names) {
    console.log(`\n== ${name} ==`);
    const result = await BENCHMARKS[name](repeats === undefined ? { duration } : { duration, repeats });
    console.log(`\n${result.title}\n`);
    console.log(markdownTable(result.rows));
    for (const verdict of result.verdicts ?? []) console.log(`- ${verdict}`);
    for (const note of result.notes ?? []) console.log(`- ${note}`);
    if (!values['no-write']) {
      const command = `npm run bench -- ${name}${values.duration === '6' ? '' : ` --duration ${values.duration}`}${repeats === undefined ? '' : ` --repeats ${repeats}`}`;
      // metrics keeps its results in a file of its own, as cgid and kfcgi do.
      const file = name === 'metrics' ? 'METRICS.md' : 'README.md';
      writeSection(join(here, file), name, renderSection(name, result, command));
      console.log(`\n(bench/${file} updated: section ${name})`);
    }
    await stopAll();
  }
} catch (error) {
  failed = true;
  console.error(`benchmark failed: ${error?.stack ?? error}`);
} finally {
  await stopAll();
}
process.exit(failed ? 1 : 0);

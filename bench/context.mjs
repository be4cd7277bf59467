/**
 * For scale (issue 3 quotes these): nginx -> php-fpm (4 workers) and
 * nginx -> a libfcgi C hello (4 processes under spawn-fcgi), 16 connections.
 */
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileLibfcgiHello, expectBody, spawnFcgi, startNginx, startPhpFpm, tempDir, wrk } from './lib/peers.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const fmt = (value, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');

export async function runContextBench({ duration = 6, connections = 16 } = {}) {
  const fpm = await startPhpFpm({ workers: 4 });
  const fpmNginx = await startNginx({ fastcgiPass: `unix:${fpm.socketPath}`, scriptFilename: fpm.script });
  await expectBody(fpmNginx.url, 'hello\n');

  const dir = tempDir('gatehouse-bench-libfcgi-');
  const program = compileLibfcgiHello(join(here, 'apps/hello-libfcgi.c'), dir);
  const socketPath = join(dir, 'hello.sock');
  await spawnFcgi({ socketPath, children: 4, command: program });
  const cNginx = await startNginx({ fastcgiPass: `unix:${socketPath}` });
  await expectBody(cNginx.url, 'hello\n');

  const rows = [];
  for (const [name, url] of [
    ['nginx -> php-fpm 8.2 (pm static, 4 workers), hello.php', fpmNginx.url],
    ['nginx -> libfcgi C hello (4 processes, spawn-fcgi)', cNginx.url],
  ]) {
    process.stdout.write(`  ${name}... `);
    const result = await wrk({ url, connections, seconds: duration });
    console.log(`${fmt(result.requestsPerSecond)} req/s`);
    rows.push({
      stack: name,
      connections,
      'req/s': fmt(result.requestsPerSecond),
      'p50 ms': fmt(result.p50, 2),
      'p99 ms': fmt(result.p99, 2),
      errors: result.non2xx || result.socketErrors ? `${result.non2xx} non-2xx ${result.socketErrors}` : '',
    });
  }
  return {
    title: 'Context: nginx in front of php-fpm and of a libfcgi C program',
    rows,
    notes: [`wrk -t2 -c${connections} -d${duration}s --latency; nginx 1 worker process, fastcgi_pass to a unix socket.`],
  };
}

/**
 * Peers for the benchmarks: nginx, php-fpm, spawn-fcgi children, Node apps,
 * and wrk. Like test/kit, but with no node:test: everything started here is
 * registered and stopped by stopAll() (run.mjs calls it on every way out).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, mkdirSync, writeFileSync, existsSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

const cleanups = [];

/** Runs every registered cleanup, newest first. */
export async function stopAll() {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop();
    try {
      await cleanup();
    } catch (error) {
      console.error(`cleanup failed: ${error?.message ?? error}`);
    }
  }
}

export function tempDir(prefix = 'gatehouse-bench-') {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function requireProgram(path) {
  if (!existsSync(path)) throw new Error(`${path} is not installed; .ci/run installs it (apt-get)`);
  return path;
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function waitForListener(address, timeoutMs = 10_000, isAlive = () => true, describe = JSON.stringify(address)) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  while (Date.now() < deadline) {
    if (!isAlive()) throw new Error(`process exited before listening on ${describe}`);
    try {
      await new Promise((resolve, reject) => {
        const socket = net.connect(address);
        socket.once('connect', () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
      return;
    } catch (error) {
      lastError = error;
      await sleep(25);
    }
  }
  throw new Error(`nothing listened on ${describe} within ${timeoutMs} ms: ${lastError}`);
}

/** Starts a process that is stopped (SIGTERM, then SIGKILL after 5 s) by stopAll(). */
export function startProcess(command, args, options = {}) {
  // Its own process group, so stopping it stops what it forked too (fcgiwrap -c, Apache's children).
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options });
  let output = '';
  const collect = (chunk) => {
    if (output.length < 64 * 1024) output += chunk.toString('utf8');
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      output += `\nspawn error: ${error.message}`;
      resolve({ code: -1, signal: null });
    });
  });
  const alive = () => child.exitCode === null && child.signalCode === null;
  const stop = async () => {
    if (alive()) {
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!done) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* the group is gone */
    }
  };
  cleanups.push(stop);
  return { child, output: () => output, stop, exited, alive };
}

/** Signals pids we were told about (spawn-fcgi's detached children), then SIGKILLs what is left. */
function registerPids(pids) {
  cleanups.push(async () => {
    const living = () =>
      pids.filter((pid) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      });
    for (const pid of living()) process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 5000;
    while (living().length > 0 && Date.now() < deadline) await sleep(50);
    for (const pid of living()) process.kill(pid, 'SIGKILL');
  });
}

/**
 * spawn-fcgi: binds the unix socket and forks `children` copies of the app
 * with it as fd 0 (FCGI_LISTENSOCK_FILENO). The children outlive spawn-fcgi,
 * so their pids (from its messages) are registered for stopAll().
 */
export async function spawnFcgi({ socketPath, children, command, args = [], env = process.env }) {
  const binary = requireProgram('/usr/bin/spawn-fcgi');
  const result = spawnSync(binary, ['-s', socketPath, '-M', '0600', '-F', String(children), '--', command, ...args], {
    env,
    encoding: 'utf8',
    timeout: 10_000,
  });
  const text = `${result.stdout}${result.stderr}`;
  const pids = [...text.matchAll(/PID: (\d+)/g)].map((match) => Number(match[1]));
  registerPids(pids);
  if (result.status !== 0 || pids.length !== children) {
    throw new Error(`spawn-fcgi did not start ${children} x ${command} ${args.join(' ')} (exit ${result.status}): ${text}`);
  }
  await waitForListener({ path: socketPath }, 10_000, () => true, `unix:${socketPath}`);
  return { pids };
}

/** nginx with one worker process in front of `fastcgiPass` (e.g. "unix:/tmp/x.sock"). */
/**
 * nginx (1 worker process by default) passing `location` to FastCGI at `fastcgiPass`.
 * `location` is nginx's location argument ("/" or a regex such as "~ ^/cgi-bin/(.*)$",
 * whose captures `scriptFilename` may use).
 */
/**
 * nginx in front of `fastcgiPass`. `upstreamKeepalive` N: the FastCGI connections are kept alive and reused
 * (an upstream block with `keepalive N` and `fastcgi_keep_conn on`), as nginx users set it up for pools.
 */
export async function startNginx({
  fastcgiPass,
  scriptFilename = '',
  workerProcesses = 1,
  location = '/',
  extraLocation = '',
  upstreamKeepalive = 0,
}) {
  const binary = requireProgram('/usr/sbin/nginx');
  const prefix = tempDir('gatehouse-bench-nginx-');
  for (const dir of ['logs', 'tmp/body', 'tmp/fastcgi', 'tmp/proxy', 'tmp/uwsgi', 'tmp/scgi'])
    mkdirSync(join(prefix, dir), { recursive: true });
  const port = await freePort();
  const errorLog = join(prefix, 'logs/error.log');
  // As root, workers would drop to "nobody" and could not reach sockets in private (0700) temp dirs.
  const user = process.getuid?.() === 0 ? 'user root root;' : '';
  const config = `
${user}
daemon off;
master_process on;
worker_processes ${workerProcesses};
pid ${prefix}/logs/nginx.pid;
error_log ${errorLog} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  proxy_temp_path ${prefix}/tmp/proxy;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  keepalive_requests 1000000;
  ${upstreamKeepalive > 0 ? `upstream fastcgi_pool { server ${fastcgiPass}; keepalive ${upstreamKeepalive}; }` : ''}
  server {
    listen 127.0.0.1:${port} backlog=4096;
    server_name localhost;
    location ${location} {
      include /etc/nginx/fastcgi_params;
      ${scriptFilename ? `fastcgi_param SCRIPT_FILENAME ${scriptFilename};` : ''}
      ${upstreamKeepalive > 0 ? 'fastcgi_pass fastcgi_pool;\n      fastcgi_keep_conn on;' : `fastcgi_pass ${fastcgiPass};`}
      ${extraLocation}
    }
  }
}
`;
  const configPath = join(prefix, 'nginx.conf');
  writeFileSync(configPath, config);
  const running = startProcess(binary, ['-p', prefix, '-c', configPath, '-e', errorLog]);
  await waitForListener({ host: '127.0.0.1', port }, 10_000, running.alive, `nginx 127.0.0.1:${port}`).catch((error) => {
    throw new Error(`nginx did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, port, url: `http://127.0.0.1:${port}/`, errorLog };
}

/** php-fpm 8.2 with one static pool of `workers` on a unix socket, and a hello.php. */
export async function startPhpFpm({ workers = 4 } = {}) {
  const binary = requireProgram('/usr/sbin/php-fpm8.2');
  const dir = tempDir('gatehouse-bench-fpm-');
  const socketPath = join(dir, 'fpm.sock');
  const script = join(dir, 'hello.php');
  writeFileSync(script, '<?php\nheader(\'Content-Type: text/plain\');\necho "hello\\n";\n');
  const configPath = join(dir, 'php-fpm.conf');
  writeFileSync(
    configPath,
    `[global]
pid = ${dir}/php-fpm.pid
error_log = ${dir}/php-fpm.log
daemonize = no

[bench]
user = root
group = root
listen = ${socketPath}
listen.backlog = 4096
pm = static
pm.max_children = ${workers}
pm.max_requests = 0
catch_workers_output = yes
`,
  );
  // -n: no php.ini, so the machine's settings do not change the numbers; -R: allowed to run as root.
  const running = startProcess(binary, ['-n', '-R', '-F', '-y', configPath]);
  await waitForListener({ path: socketPath }, 10_000, running.alive, `php-fpm unix:${socketPath}`).catch((error) => {
    throw new Error(`php-fpm did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, socketPath, script, dir, workers };
}

/** GET `url` once and check the body, so a benchmark never measures error pages. */
export async function expectBody(url, expected) {
  const body = await new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 10_000 }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve(`${res.statusCode} ${Buffer.concat(chunks).toString()}`));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
  if (body !== `200 ${expected}`) throw new Error(`GET ${url} answered ${JSON.stringify(body)}, expected 200 ${JSON.stringify(expected)}`);
}

function parseDuration(text) {
  const match = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!match) return NaN;
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[match[2]];
  return Number(match[1]) * scale;
}

/** Runs wrk for `seconds` and returns requests/s, p50/p99 latency (ms) and error counts. */
export async function wrk({ url, connections, seconds, threads = Math.min(2, connections), timeoutSeconds = 10, headers = [] }) {
  const binary = requireProgram('/usr/bin/wrk');
  const args = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '--timeout',
    `${timeoutSeconds}s`,
    ...headers.flatMap((h) => ['-H', h]),
    url,
  ];
  const run = startProcess(binary, args);
  const { code } = await run.exited;
  const text = run.output();
  if (code !== 0) throw new Error(`wrk ${args.join(' ')} exited ${code}: ${text}`);
  const requestsPerSecond = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const p50 = parseDuration(/^\s+50%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const p99 = parseDuration(/^\s+99%\s+(\S+)/m.exec(text)?.[1] ?? '');
  const requests = Number(/(\d+) requests in/.exec(text)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const socketErrors = /Socket errors: (.*)/.exec(text)?.[1] ?? '';
  const timeouts = Number(/Socket errors:.*timeout (\d+)/.exec(text)?.[1] ?? 0);
  const max = parseDuration(/^\s+Latency\s+\S+\s+\S+\s+(\S+)/m.exec(text)?.[1] ?? '');
  if (!Number.isFinite(requestsPerSecond)) throw new Error(`could not read wrk's output: ${text}`);
  return { requestsPerSecond, p50, p99, max, requests, non2xx, socketErrors, timeouts, command: `wrk ${args.join(' ')}` };
}

/** Compiles bench/apps/hello-libfcgi.c once per run. */
export function compileLibfcgiHello(source, dir) {
  requireProgram('/usr/bin/gcc');
  const output = join(dir, 'hello-libfcgi');
  const result = spawnSync('gcc', ['-O2', '-o', output, source, '-lfcgi'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`gcc failed (is libfcgi-dev installed?): ${result.stderr}`);
  return output;
}

const CLOCK_TICKS_PER_SECOND = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** CPU time (user + system, in microseconds) used so far by these processes, from /proc/PID/stat. */
export function cpuMicros(pids) {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readText(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start after the last ')'; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return (ticks * 1_000_000) / CLOCK_TICKS_PER_SECOND;
}

/** The pids of `pid`'s children (every thread's), from /proc. */
export function childrenOf(pid) {
  const children = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (text) children.push(...text.split(/\s+/).map(Number));
  }
  return children;
}

/** The process and everything below it. */
export function tree(pid) {
  const all = [pid];
  for (let index = 0; index < all.length; index++) all.push(...childrenOf(all[index]));
  return all;
}

/** RSS and PSS in MB of these processes, from /proc/PID/smaps_rollup. */
export function memory(pids) {
  let rss = 0;
  let pss = 0;
  for (const pid of pids) {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    rss += Number(/^Rss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
    pss += Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0);
  }
  return { rss: rss / 1024, pss: pss / 1024 };
}

export function readText(path) {
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

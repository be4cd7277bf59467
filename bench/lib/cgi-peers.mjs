/**
 * CGI peers for the benchmarks, each on loopback with a private config:
 * Apache httpd 2.4 (event MPM + mod_cgid), lighttpd (mod_cgi), nginx in front
 * of fcgiwrap, and `gatehouse serve`. All serve the same cgi-bin directory at
 * /cgi-bin/. Everything started here is stopped by stopAll().
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, requireProgram, startNginx, startProcess, tempDir, waitForListener } from './peers.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** A cgi-bin with a C hello (compiled here) and a /bin/sh hello, both printing "hello\n". */
export function makeHelloCgiBin() {
  requireProgram('/usr/bin/gcc');
  const dir = tempDir('gatehouse-bench-cgi-');
  // Apache's children (www-data) must be able to read and run them.
  chmodSync(dir, 0o755);
  const cgiBin = join(dir, 'cgi-bin');
  mkdirSync(cgiBin);
  chmodSync(cgiBin, 0o755);
  const source = join(dir, 'hello.c');
  writeFileSync(
    source,
    '#include <stdio.h>\nint main(void) { fputs("Content-Type: text/plain\\r\\n\\r\\nhello\\n", stdout); return 0; }\n',
  );
  const result = spawnSync('gcc', ['-O2', '-o', join(cgiBin, 'hello-c'), source], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`gcc failed: ${result.stderr}`);
  writeFileSync(join(cgiBin, 'hello-sh'), '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\nhello\\n"\n');
  chmodSync(join(cgiBin, 'hello-sh'), 0o755);
  return { dir, cgiBin };
}

export async function startApacheCgid({ cgiBin }) {
  const binary = requireProgram('/usr/sbin/apache2');
  const root = tempDir('gatehouse-bench-apache-');
  chmodSync(root, 0o755);
  for (const sub of ['logs', 'run']) mkdirSync(join(root, sub));
  const port = await freePort();
  const user = process.getuid?.() === 0 ? 'User www-data\nGroup www-data' : '';
  const modules = ['mpm_event', 'authz_core', 'alias', 'mime', 'cgid'];
  writeFileSync(
    join(root, 'httpd.conf'),
    `ServerRoot ${root}
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${root}/run/httpd.pid
DefaultRuntimeDir ${root}/run
Mutex file:${root}/run default
ErrorLog ${root}/logs/error.log
LogLevel warn
${user}
${modules.map((name) => `LoadModule ${name}_module /usr/lib/apache2/modules/mod_${name}.so`).join('\n')}
TypesConfig /etc/mime.types
ScriptSock ${root}/run/cgisock
StartServers 2
ServerLimit 16
ThreadsPerChild 25
MaxRequestWorkers 400
KeepAlive On
MaxKeepAliveRequests 0
ScriptAlias /cgi-bin/ ${cgiBin}/
<Directory ${cgiBin}>
  Require all granted
</Directory>
`,
  );
  const running = startProcess(binary, ['-f', join(root, 'httpd.conf'), '-DFOREGROUND']);
  await waitForListener({ host: '127.0.0.1', port }, 10_000, running.alive, 'apache').catch((error) => {
    throw new Error(`Apache did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, url: `http://127.0.0.1:${port}` };
}

export async function startLighttpdCgi({ cgiBin }) {
  const binary = requireProgram('/usr/sbin/lighttpd');
  const root = tempDir('gatehouse-bench-lighttpd-');
  const port = await freePort();
  writeFileSync(
    join(root, 'lighttpd.conf'),
    `server.document-root = "${root}"
server.bind = "127.0.0.1"
server.port = ${port}
server.errorlog = "${root}/error.log"
server.modules = ("mod_alias", "mod_cgi")
server.max-keep-alive-requests = 100000
alias.url = ("/cgi-bin/" => "${cgiBin}/")
$HTTP["url"] =~ "^/cgi-bin/" { cgi.assign = ("" => "") }
`,
  );
  const running = startProcess(binary, ['-D', '-f', join(root, 'lighttpd.conf')]);
  await waitForListener({ host: '127.0.0.1', port }, 10_000, running.alive, 'lighttpd').catch((error) => {
    throw new Error(`lighttpd did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, url: `http://127.0.0.1:${port}` };
}

/** nginx (one worker, like the other fronts here: one process on the request path) in front of fcgiwrap. */
export async function startNginxFcgiwrap({ cgiBin, workers = 1, fcgiwrapChildren = 4 }) {
  const fcgiwrap = requireProgram('/usr/sbin/fcgiwrap');
  const socketPath = join(tempDir('gatehouse-bench-fcgiwrap-'), 'fcgiwrap.sock');
  const wrap = startProcess(fcgiwrap, ['-s', `unix:${socketPath}`, '-c', String(fcgiwrapChildren)]);
  await waitForListener({ path: socketPath }, 10_000, wrap.alive, 'fcgiwrap');
  const nginx = await startNginx({
    fastcgiPass: `unix:${socketPath}`,
    location: '~ ^/cgi-bin/(.*)$',
    scriptFilename: `${cgiBin}/$1`,
    workerProcesses: workers,
  });
  return { ...nginx, url: `http://127.0.0.1:${nginx.port}` };
}

/**
 * Node flags the manual recommends for a busy front (gatehouse-serve(8),
 * PERFORMANCE): a larger young generation, 8-40% less CPU per proxied
 * request here. Benchmarks run gatehouse with them and say so.
 */
export const RECOMMENDED_NODE_FLAGS = ['--max-semi-space-size=64'];

/**
 * The benchmarks run as root, as the peers' masters do; serve refuses root without a user, and every
 * recorded number was taken with the front and scripts as root (`--user root`, on purpose).
 */
export const SERVE_USER_ARGS = process.getuid?.() === 0 ? ['--user', 'root'] : [];

/** `gatehouse serve` from this checkout's build, with extra flags. */
export async function startGatehouseServe({ args = [], nodeArgs = RECOMMENDED_NODE_FLAGS } = {}) {
  const port = await freePort();
  const running = startProcess(process.execPath, [
    ...nodeArgs,
    join(repo, 'dist/src/cli/main.js'),
    'serve',
    ...SERVE_USER_ARGS,
    '--listen',
    `127.0.0.1:${port}`,
    '--access-log',
    'off',
    ...args,
  ]);
  await waitForListener({ host: '127.0.0.1', port }, 15_000, running.alive, 'gatehouse serve').catch((error) => {
    throw new Error(`gatehouse serve did not start: ${error.message}\n${running.output()}`);
  });
  return { ...running, url: `http://127.0.0.1:${port}` };
}

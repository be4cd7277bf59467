/** nginx on loopback with a private prefix, config and temp dirs; stopped after the test. */
import { chmodSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireProgram, startProcess, tempDir, waitForListener, type Cleanup, type RunningProcess } from './process.js';

export interface NginxOptions {
  /** The body of the `server { ... }` block after `listen`; use `fastcgi_pass unix:/path;` etc. */
  serverBlock: string;
  /** Extra directives for the http block (upstreams, ...). */
  httpBlock?: string;
  workerProcesses?: number;
  workerConnections?: number;
  /** The user nginx's workers run as (its `user` directive), as a packaged nginx runs them; default root when the tests run as root. */
  user?: string;
}

export interface RunningNginx extends RunningProcess {
  port: number;
  url: string;
  prefix: string;
  errorLog: string;
}

export async function startNginx(t: Cleanup, options: NginxOptions): Promise<RunningNginx> {
  const binary = requireProgram('/usr/sbin/nginx');
  const prefix = tempDir(t, 'gatehouse-nginx-');
  for (const dir of ['logs', 'tmp/body', 'tmp/fastcgi', 'tmp/proxy', 'tmp/uwsgi', 'tmp/scgi'])
    mkdirSync(join(prefix, dir), { recursive: true });
  const port = await freePort();
  const errorLog = join(prefix, 'logs/error.log');
  // As root, nginx workers would drop to "nobody" and could not reach sockets in the test's private (0700) temp dirs.
  const user = process.getuid?.() !== 0 ? '' : options.user ? `user ${options.user};` : 'user root root;';
  // Workers running as another user reach their temp directories through the prefix (nginx gives them the directories).
  if (options.user) chmodSync(prefix, 0o755);
  const config = `
${user}
daemon off;
master_process on;
worker_processes ${options.workerProcesses ?? 1};
pid ${prefix}/logs/nginx.pid;
error_log ${errorLog} info;
events { worker_connections ${options.workerConnections ?? 1024}; }
http {
  access_log off;
  client_body_temp_path ${prefix}/tmp/body;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  proxy_temp_path ${prefix}/tmp/proxy;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  client_max_body_size 0;
  ${options.httpBlock ?? ''}
  server {
    listen 127.0.0.1:${port};
    server_name localhost;
    ${options.serverBlock}
  }
}
`;
  const configPath = join(prefix, 'nginx.conf');
  writeFileSync(configPath, config);
  const running = startProcess(t, binary, ['-p', prefix, '-c', configPath, '-e', errorLog]);
  await waitForListener({ host: '127.0.0.1', port }, { what: 'nginx', process: running });
  return { ...running, port, url: `http://127.0.0.1:${port}`, prefix, errorLog };
}

/** The fastcgi_param lines Debian ships in /etc/nginx/fastcgi_params, plus SCRIPT_FILENAME. */
export const NGINX_FASTCGI_PARAMS = 'include /etc/nginx/fastcgi_params;';

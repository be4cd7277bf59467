/**
 * php-fpm (Debian's php-fpm8.2) on a private unix socket or loopback port,
 * with its own config, no system php.ini, and a document root of scripts
 * written by the test; stopped after the test.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { requireProgram, startProcess, tempDir, waitForListener, type Address, type Cleanup, type RunningProcess } from './process.js';

export interface PhpFpmOptions {
  /** Scripts to create in the document root: file name -> PHP source. */
  scripts: Record<string, string>;
  /** Listen on this TCP port on 127.0.0.1 instead of a unix socket. */
  port?: number;
  /** pm = static with this many children (default 2). */
  children?: number;
  /** Extra lines for the [www] pool section. */
  poolConfig?: string;
  /** php.ini settings passed with -d. */
  ini?: Record<string, string>;
}

export interface RunningPhpFpm extends RunningProcess {
  address: Address;
  /** `unix:/path` or `127.0.0.1:port`, as the client takes it. */
  addressString: string;
  docRoot: string;
  /** php-fpm's own log (its workers' captured output lands here too). */
  errorLog: string;
  /** Absolute path of a script in the document root. */
  script(name: string): string;
}

export async function startPhpFpm(t: Cleanup, options: PhpFpmOptions): Promise<RunningPhpFpm> {
  const binary = requireProgram('/usr/sbin/php-fpm8.2');
  const dir = tempDir(t, 'gatehouse-php-fpm-');
  const docRoot = join(dir, 'www');
  mkdirSync(docRoot);
  for (const [name, source] of Object.entries(options.scripts)) writeFileSync(join(docRoot, name), source);
  const address: Address = options.port ? { host: '127.0.0.1', port: options.port } : { path: join(dir, 'php-fpm.sock') };
  const listen = 'path' in address ? address.path : `127.0.0.1:${address.port}`;
  const errorLog = join(dir, 'php-fpm.log');
  // As root (tests and CI), php-fpm refuses to run workers as root unless started with -R and told user = root.
  const asRoot = process.getuid?.() === 0;
  const config = `
[global]
pid = ${join(dir, 'php-fpm.pid')}
error_log = ${errorLog}
daemonize = no
log_level = notice

[www]
${asRoot ? 'user = root\ngroup = root' : ''}
listen = ${listen}
pm = static
pm.max_children = ${options.children ?? 2}
pm.status_path = /fpm-status
catch_workers_output = yes
decorate_workers_output = no
clear_env = yes
${options.poolConfig ?? ''}
`;
  const configPath = join(dir, 'php-fpm.conf');
  writeFileSync(configPath, config);
  // -n: no system php.ini, so Debian's settings (and their changes) do not leak into tests. fastcgi.logging=1 (the
  // built-in default, spelled out) sends error_log() output to the web server as FCGI_STDERR.
  const ini = { 'fastcgi.logging': '1', log_errors: '1', display_errors: '0', ...options.ini };
  const args = [
    ...(asRoot ? ['-R'] : []),
    '-F',
    '-n',
    '-y',
    configPath,
    ...Object.entries(ini).flatMap(([key, value]) => ['-d', `${key}=${value}`]),
  ];
  const running = startProcess(t, binary, args);
  await waitForListener(address, { what: 'php-fpm', process: running });
  return {
    ...running,
    address,
    addressString: 'path' in address ? `unix:${address.path}` : `127.0.0.1:${address.port}`,
    docRoot,
    errorLog,
    script: (name) => join(docRoot, name),
  };
}

/** Apache httpd 2.4 on loopback with a private ServerRoot and config; stopped after the test. */
import { writeFileSync, mkdirSync, chmodSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, requireProgram, startProcess, tempDir, waitForListener, type Cleanup, type RunningProcess } from './process.js';
import { waitFor } from './wait.js';

export interface ApacheOptions {
  /** Module names as in /usr/lib/apache2/modules/mod_NAME.so, besides the base set. */
  modules?: string[];
  /** Directives appended to the main config (VirtualHost-free: one server). */
  config: string;
  mpm?: 'event' | 'prefork' | 'worker';
}

export interface RunningApache extends RunningProcess {
  port: number;
  url: string;
  root: string;
  errorLog: string;
}

const BASE_MODULES = ['authz_core', 'mime', 'dir', 'alias', 'env', 'setenvif', 'headers'];

export async function startApache(t: Cleanup, options: ApacheOptions): Promise<RunningApache> {
  const binary = requireProgram('/usr/sbin/apache2');
  const root = tempDir(t, 'gatehouse-apache-');
  // Apache's children run as www-data when started as root; they must be able to read the config tree.
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'logs'), { recursive: true });
  mkdirSync(join(root, 'run'), { recursive: true });
  const port = await freePort();
  const errorLog = join(root, 'logs/error.log');
  const modules = [`mpm_${options.mpm ?? 'event'}`, ...BASE_MODULES, ...(options.modules ?? [])];
  const user = process.getuid?.() === 0 ? 'User www-data\nGroup www-data' : '';
  const config = `
ServerRoot ${root}
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${root}/run/httpd.pid
DefaultRuntimeDir ${root}/run
Mutex file:${root}/run default
ErrorLog ${errorLog}
LogLevel info
${user}
${[...new Set(modules)].map((name) => `LoadModule ${name}_module /usr/lib/apache2/modules/mod_${name}.so`).join('\n')}
TypesConfig /etc/mime.types
${options.config}
`;
  const configPath = join(root, 'httpd.conf');
  writeFileSync(configPath, config);
  const running = startProcess(t, binary, ['-f', configPath, '-DFOREGROUND'], {
    env: { ...process.env, APACHE_RUN_DIR: join(root, 'run'), APACHE_LOG_DIR: join(root, 'logs'), APACHE_LOCK_DIR: join(root, 'run') },
  });
  await waitForListener({ host: '127.0.0.1', port }, { what: 'Apache httpd', process: running });
  if (modules.includes('cgid')) await waitForCgidDaemon(join(root, 'run'), running);
  return { ...running, port, url: `http://127.0.0.1:${port}`, root, errorLog };
}

/**
 * mod_cgid's daemon binds its ScriptSock (the server's pid appended: cgisock.PID, relative names in the runtime
 * directory) a moment after httpd listens; a CGI request before that is answered 503.
 */
export async function waitForCgidDaemon(runtimeDir: string, httpd: RunningProcess): Promise<void> {
  await waitFor(() => readdirSync(runtimeDir).some((name) => name.startsWith('cgisock.')), "mod_cgid's daemon socket", {
    giveUpIf: () => httpd.child.exitCode !== null && 'httpd exited',
    context: httpd.output,
  });
}

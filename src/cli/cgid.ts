/**
 * `gatehouse cgid`: the CGI daemon on ScriptSock (what `gatehouse serve`
 * starts as its child), or, with --fastcgi, a FastCGI responder that runs CGI
 * scripts for nginx (fcgiwrap's place). See man/gatehouse-cgid.8.
 *
 * main() reads as a straight line: parse and check every flag, then either
 * the FastCGI face or the daemon: runtime directory, token, socket, ready.
 */
import { readFileSync, statSync, writeFileSync, unlinkSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { CgidDaemon, newInstanceToken } from '../cgid/daemon.js';
import { createFastCGIFace } from '../cgid/fastcgi-face.js';
import { PosixSpawnSpawner } from '../cgid/posix-spawner.js';
import type { ScriptLimits } from '../cgid/protocol.js';
import { defaultRuntimeDirectory, ensureRuntimeDirectory, scriptSockPath } from '../cgid/socket-path.js';
import { ScriptLog } from '../cgi/script-log.js';
import { parseDuration } from '../config/duration.js';
import { parseListenAddress } from '../config/listen.js';
import {
  CGID_FASTCGI_STOP_GRACE_MS,
  CGID_SCRIPT_SOCK,
  CGID_SUEXEC_MIN_GID,
  CGID_SUEXEC_MIN_UID,
  CGID_TOKEN_BYTES,
  CGI_SCRIPT_LOG_BUFFER,
  CGI_SCRIPT_LOG_LENGTH,
  CGI_SCRIPT_TIMEOUT_MS,
} from '../limits.js';
import { dieWithParent } from '../sys/posix-spawn.js';

type Kind = 'string' | 'boolean' | 'duration' | 'count' | 'bytes';

export interface CgidOption {
  flag: string;
  kind: Kind;
  argument?: string;
  summary: string;
  defaultText?: string;
}

/** Every flag, for parsing, --help and the manual page (a test keeps man/gatehouse-cgid.8 in step). */
export const CGID_OPTIONS: readonly CgidOption[] = [
  {
    flag: 'script-sock',
    kind: 'string',
    argument: 'PREFIX',
    summary: "ScriptSock: socket path prefix; the daemon's pid is appended; relative to --runtime-dir",
    defaultText: CGID_SCRIPT_SOCK,
  },
  {
    flag: 'runtime-dir',
    kind: 'string',
    argument: 'DIR',
    summary: 'DefaultRuntimeDir: where a relative ScriptSock lives (created 0700; refused when others can write it)',
    defaultText: '/run/gatehouse as root, else $XDG_RUNTIME_DIR/gatehouse or $TMPDIR/gatehouse-UID',
  },
  { flag: 'socket', kind: 'string', argument: 'PATH', summary: 'the exact socket path (no pid appended); what gatehouse serve passes' },
  {
    flag: 'token-file',
    kind: 'string',
    argument: 'FILE',
    summary: 'read the instance token from FILE (mode 0600); default $GATEHOUSE_CGID_TOKEN, else a new one written to SOCKET.token',
  },
  {
    flag: 'parent-pid',
    kind: 'count',
    argument: 'PID',
    summary: 'exit (terminating scripts) when this process, the front that started the daemon, dies',
  },
  {
    flag: 'fastcgi',
    kind: 'string',
    argument: 'ADDR',
    summary: 'run the FastCGI face instead: listen as a FastCGI responder on unix:PATH or HOST:PORT (for nginx, like fcgiwrap)',
  },
  {
    flag: 'script-timeout',
    kind: 'duration',
    argument: 'TIME',
    summary: 'FastCGI face: kill a script that writes nothing for this long (CGIDScriptTimeout): 20, 20s, 500ms',
    defaultText: `${CGI_SCRIPT_TIMEOUT_MS / 1000}s`,
  },
  { flag: 'script-log', kind: 'string', argument: 'FILE', summary: "FastCGI face: ScriptLog, failed runs in mod_cgi's format" },
  { flag: 'script-log-length', kind: 'bytes', argument: 'BYTES', summary: 'ScriptLogLength', defaultText: String(CGI_SCRIPT_LOG_LENGTH) },
  { flag: 'script-log-buffer', kind: 'bytes', argument: 'BYTES', summary: 'ScriptLogBuffer', defaultText: String(CGI_SCRIPT_LOG_BUFFER) },
  { flag: 'rlimit-cpu', kind: 'count', argument: 'SECONDS', summary: 'RLimitCPU: CPU seconds per script (0: none)', defaultText: '0' },
  {
    flag: 'rlimit-mem',
    kind: 'bytes',
    argument: 'BYTES',
    summary: 'RLimitMEM: address space per script, e.g. 512M (0: none)',
    defaultText: '0',
  },
  {
    flag: 'rlimit-nproc',
    kind: 'count',
    argument: 'N',
    summary: "RLimitNPROC: processes of the script's user (not enforced for root) (0: none)",
    defaultText: '0',
  },
  { flag: 'rlimit-nofile', kind: 'count', argument: 'N', summary: 'open files per script (0: none)', defaultText: '0' },
  {
    flag: 'max-output',
    kind: 'bytes',
    argument: 'BYTES',
    summary: "FastCGI face: a script's output cap; past it the script is killed and its output cut (0: none)",
    defaultText: '0',
  },
  {
    flag: 'suexec-min-uid',
    kind: 'count',
    argument: 'UID',
    summary: 'suexec: lowest uid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_UID),
  },
  {
    flag: 'suexec-min-gid',
    kind: 'count',
    argument: 'GID',
    summary: 'suexec: lowest gid a script may run as',
    defaultText: String(CGID_SUEXEC_MIN_GID),
  },
  { flag: 'help', kind: 'boolean', summary: 'print this help' },
];

export function cgidUsage(): string {
  const rows = CGID_OPTIONS.map(
    (option) =>
      [
        `--${option.flag}${option.argument ? ` ${option.argument}` : ''}`,
        `${option.summary}${option.defaultText ? ` (default: ${option.defaultText})` : ''}`,
      ] as const,
  );
  const width = Math.max(...rows.map(([left]) => left.length));
  return [
    'usage: gatehouse cgid [options]            the CGI daemon on ScriptSock',
    '       gatehouse cgid --fastcgi ADDR [options]   CGI scripts as a FastCGI responder (for nginx)',
    '',
    'options:',
    ...rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`),
  ].join('\n');
}

class UsageError extends Error {}

/** "512M", "2G", "1048576" -> bytes. */
export function parseBytes(text: string): number | null {
  const match = /^(\d+)([KMG]?)$/i.exec(text.trim());
  if (!match) return null;
  const factor = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[match[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(match[1]) * factor;
}

interface Settings {
  values: Record<string, string | boolean | number | undefined>;
}

function parse(argv: string[]): Settings {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const option of CGID_OPTIONS) options[option.flag] = option.kind === 'boolean' ? { type: 'boolean' } : { type: 'string' };
  options.help!.short = 'h';
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const values: Settings['values'] = {};
  for (const option of CGID_OPTIONS) {
    const raw = (parsed.values as Record<string, string | boolean | undefined>)[option.flag];
    if (raw === undefined) continue;
    if (option.kind === 'boolean' || option.kind === 'string') {
      values[option.flag] = raw;
      continue;
    }
    const text = String(raw);
    if (option.kind === 'duration') {
      const ms = parseDuration(text);
      if (typeof ms === 'string' || ms <= 0)
        throw new UsageError(`--${option.flag}: ${typeof ms === 'string' ? ms : 'must be more than 0'}`);
      values[option.flag] = ms;
    } else if (option.kind === 'count') {
      if (!/^\d+$/.test(text)) throw new UsageError(`--${option.flag}: expected a whole number, got "${text}"`);
      values[option.flag] = Number(text);
    } else {
      const bytes = parseBytes(text);
      if (bytes === null) throw new UsageError(`--${option.flag}: expected a size like 1048576, 512K, 64M or 2G, got "${text}"`);
      values[option.flag] = bytes;
    }
  }
  return { values };
}

export async function main(argv: string[]): Promise<number> {
  let settings: Settings;
  try {
    settings = parse(argv);
  } catch (error) {
    process.stderr.write(`gatehouse cgid: ${(error as Error).message}\nRun 'gatehouse cgid --help' for the options.\n`);
    return 2;
  }
  const v = settings.values;
  if (v.help) {
    process.stdout.write(`${cgidUsage()}\n`);
    return 0;
  }
  const log = (line: string) => process.stderr.write(`[${new Date().toISOString()}] [cgid:error] [pid ${process.pid}] ${line}\n`);
  const limits: ScriptLimits = {
    cpuSeconds: (v['rlimit-cpu'] as number) ?? 0,
    memoryBytes: (v['rlimit-mem'] as number) ?? 0,
    processes: (v['rlimit-nproc'] as number) ?? 0,
    openFiles: (v['rlimit-nofile'] as number) ?? 0,
    outputBytes: (v['max-output'] as number) ?? 0,
  };
  const launch = {
    minUid: (v['suexec-min-uid'] as number) ?? CGID_SUEXEC_MIN_UID,
    minGid: (v['suexec-min-gid'] as number) ?? CGID_SUEXEC_MIN_GID,
    log,
  };

  if (typeof v.fastcgi === 'string') return runFastCGIFace(v.fastcgi, v, limits, launch, log);

  if (typeof v['parent-pid'] === 'number' && !dieWithParent('SIGTERM', v['parent-pid'])) {
    log(`the front (pid ${v['parent-pid']}) is already gone: not starting`);
    return 1;
  }
  let socketPath: string;
  let token: Buffer;
  try {
    if (typeof v.socket === 'string') socketPath = v.socket;
    else {
      const runtimeDir = typeof v['runtime-dir'] === 'string' ? v['runtime-dir'] : defaultRuntimeDirectory();
      ensureRuntimeDirectory(runtimeDir);
      socketPath = scriptSockPath(typeof v['script-sock'] === 'string' ? v['script-sock'] : CGID_SCRIPT_SOCK, runtimeDir);
    }
    token = readToken(v['token-file'] as string | undefined, socketPath);
  } catch (error) {
    process.stderr.write(`gatehouse cgid: ${(error as Error).message}\n`);
    return 1;
  }
  const daemon = new CgidDaemon({ socketPath, token, log, launch, limits });
  try {
    daemon.start();
  } catch (error) {
    process.stderr.write(`gatehouse cgid: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`ready ${process.pid} ${socketPath}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log(`${signal}: terminating ${daemon.running} script(s) and exiting`);
      void daemon.stop().then(() => {
        if (generatedTokenFile) {
          try {
            unlinkSync(generatedTokenFile);
          } catch {
            /* already gone */
          }
        }
        resolve(0);
        setTimeout(() => process.exit(0), 100).unref();
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

let generatedTokenFile: string | null = null;

/** The instance token: $GATEHOUSE_CGID_TOKEN (hex, removed from the environment), a token file, or a new one written 0600 next to the socket. */
function readToken(tokenFile: string | undefined, socketPath: string): Buffer {
  const fromEnvironment = process.env.GATEHOUSE_CGID_TOKEN;
  delete process.env.GATEHOUSE_CGID_TOKEN;
  if (fromEnvironment) {
    if (!/^([0-9a-f]{2}){16,}$/i.test(fromEnvironment)) throw new Error('GATEHOUSE_CGID_TOKEN must be at least 32 hex digits');
    return Buffer.from(fromEnvironment, 'hex');
  }
  if (tokenFile) {
    const stat = statSync(tokenFile);
    if ((stat.mode & 0o077) !== 0)
      throw new Error(
        `the token file ${tokenFile} is readable or writable by others (mode ${(stat.mode & 0o777).toString(8)}): run 'chmod 600 ${tokenFile}'`,
      );
    const text = readFileSync(tokenFile, 'utf8').trim();
    if (!/^([0-9a-f]{2}){16,}$/i.test(text)) throw new Error(`the token file ${tokenFile} must hold at least 32 hex digits`);
    return Buffer.from(text, 'hex');
  }
  const token = newInstanceToken(CGID_TOKEN_BYTES);
  const file = `${socketPath}.token`;
  try {
    unlinkSync(file);
  } catch {
    /* none left over */
  }
  writeFileSync(file, `${token.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
  generatedTokenFile = file;
  return token;
}

async function runFastCGIFace(
  address: string,
  v: Settings['values'],
  limits: ScriptLimits,
  launch: { minUid: number; minGid: number; log: (line: string) => void },
  log: (line: string) => void,
): Promise<number> {
  const parsed = parseListenAddress(address);
  if (typeof parsed === 'string') {
    process.stderr.write(`gatehouse cgid: --fastcgi: ${parsed}\n`);
    return 2;
  }
  const scriptLog =
    typeof v['script-log'] === 'string'
      ? new ScriptLog({
          path: v['script-log'],
          maxLength: (v['script-log-length'] as number) ?? CGI_SCRIPT_LOG_LENGTH,
          bodyBytes: (v['script-log-buffer'] as number) ?? CGI_SCRIPT_LOG_BUFFER,
          onError: (error) => log(`cannot write the script log ${String(v['script-log'])}: ${error.message}`),
        })
      : undefined;
  const server = createFastCGIFace({
    spawner: new PosixSpawnSpawner({ limits }, launch),
    timeoutMs: (v['script-timeout'] as number) ?? CGI_SCRIPT_TIMEOUT_MS,
    ...(scriptLog ? { scriptLog } : {}),
    log,
  });
  server.on('connectionError', (error: Error) => log(`fastcgi: ${error.message}`));
  const previousUmask = 'path' in parsed ? process.umask(0o117) : null;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if ('path' in parsed) server.listen(parsed.path, () => resolve());
      else server.listen(parsed.port, parsed.host, () => resolve());
    });
  } catch (error) {
    process.stderr.write(`gatehouse cgid: cannot listen on ${address}: ${(error as Error).message}\n`);
    return 1;
  } finally {
    if (previousUmask !== null) process.umask(previousUmask);
  }
  process.stdout.write(`ready ${process.pid} ${address}\n`);
  return new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log(`${signal}: finishing ${server.activeRequests} request(s), then exiting`);
      server.close();
      const exit = () => {
        resolve(0);
        setTimeout(() => process.exit(0), 100).unref();
      };
      if (server.activeRequests === 0) exit();
      else {
        server.once('drained', exit);
        setTimeout(() => {
          server.closeAllConnections();
          exit();
        }, CGID_FASTCGI_STOP_GRACE_MS).unref();
      }
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

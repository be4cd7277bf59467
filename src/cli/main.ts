#!/usr/bin/env node
/**
 * The `gatehouse` command: one subcommand per part of gatehouse. Each
 * subcommand lives in its own module (src/cli/NAME.ts) exporting
 * `main(argv): Promise<number>` (the exit status), loaded only when used so
 * that `gatehouse kfcgi` does not pay for the HTTP front.
 */
import { readFileSync } from 'node:fs';

interface Command {
  module: string;
  summary: string;
}

const COMMANDS: Record<string, Command> = {
  example: { module: './example.js', summary: 'serve the built-in example (CGI scripts, a FastCGI app) on 127.0.0.1' },
  serve: { module: './serve.js', summary: 'the HTTP front: static files, CGI scripts and FastCGI upstreams from one config' },
  cgid: { module: './cgid.js', summary: 'the CGI daemon on ScriptSock, and its FastCGI face for nginx' },
  kfcgi: {
    module: './kfcgi.js',
    summary: 'a FastCGI process manager (kfcgi(8) compatible): fixed and variable pools; `gatehouse kfcgi status SOCKET` reads a pool',
  },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const OPTIONS: Array<[string, string]> = [
  ['-V, --version', 'print the version of this installation (from its package.json) and exit'],
  ['-h, --help', 'print this help and exit'],
];

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length), ...OPTIONS.map(([flags]) => flags.length));
  return [
    'usage: gatehouse <command> [options]',
    '       gatehouse --version | --help',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, command]) => `  ${name.padEnd(width)}  ${command.summary}`),
    '',
    'options:',
    ...OPTIONS.map(([flags, summary]) => `  ${flags.padEnd(width)}  ${summary}`),
    '',
    "Run 'gatehouse <command> --help' for a command's options; manual pages are in man/.",
  ].join('\n');
}

/**
 * Node opens its inspector (a debugger anyone on the machine can drive, on
 * 127.0.0.1:9229) when a process gets SIGUSR1 and no listener is installed.
 * No gatehouse process may do that: this listener is installed before any
 * command runs. Commands add their own SIGUSR1 meaning (reopening the logs,
 * as nginx and php-fpm do); this one only keeps the inspector closed.
 */
function keepInspectorClosed(): void {
  process.on('SIGUSR1', () => {});
}

async function run(argv: string[]): Promise<number> {
  keepInspectorClosed();
  const [name, ...rest] = argv;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`gatehouse ${version()}\n`);
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`gatehouse: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  const module = (await import(command.module)) as { main(argv: string[]): Promise<number> };
  return module.main(rest);
}

run(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error: unknown) => {
    process.stderr.write(`gatehouse: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  },
);

/**
 * Starting a script, behind a small interface: run-script.ts only needs three
 * pipes, a way to signal the script's process group, and its reaping. The
 * default uses child_process.spawn; a faster spawner (posix_spawn through
 * src/sys) or the cgid daemon's client can replace it without touching the
 * CGI logic.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { ErrorCode, GatehouseError } from '../errors.js';
import type { EnvironmentValue } from './order.js';

export interface SpawnRequest {
  /** Absolute path of the program: executed directly (execve), never through a shell. */
  file: string;
  /** Full argv, argv[0] included (RFC 3875 4.4: the script's path, then the search words). */
  argv: readonly string[];
  cwd: string;
  /**
   * The complete environment: nothing is inherited from the server. A string
   * value is text (passed as its UTF-8 bytes), a Buffer is passed byte for
   * byte (request bytes that are not ASCII).
   */
  env: Readonly<Record<string, EnvironmentValue>>;
  /**
   * True when the script gets no request body: a spawner may then give it
   * /dev/null as stdin and return a stdin that only needs end() (saves a
   * pipe per request); it must still return a usable Writable.
   */
  stdinEmpty?: boolean;
}

export interface ScriptExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /**
   * The process that started the script (the cgid daemon) went away before
   * reporting this exit; the script was killed. The handler answers 503, as
   * for a request that arrives while the daemon restarts.
   */
  lost?: boolean;
}

export interface SpawnedScript {
  /** Also the id of the script's own process group. */
  readonly pid: number;
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Resolves once the script has been reaped (never rejects). */
  readonly exited: Promise<ScriptExit>;
  /**
   * Sends a signal to the script's whole process group (the script and
   * whatever it started). Errors (the group is gone) are ignored.
   */
  signalGroup(signal: NodeJS.Signals): void;
}

export interface ScriptSpawner {
  /** Starts the script in a new process group; rejects with GatehouseError CGI_SPAWN_FAILED (errno in `cause`). */
  spawn(request: SpawnRequest): Promise<SpawnedScript>;
}

/**
 * A script that did not start. `errno` names the failed system call's error
 * (the handler maps EACCES -> 403, ENOENT -> 404, others -> 500); it is null
 * when no system call failed because the order never reached a spawner: the
 * cgid daemon is down or being replaced (code CGID_UNAVAILABLE, answered 503).
 */
export class SpawnError extends GatehouseError {
  readonly errno: string | null;
  /** What went wrong, without the file name (the cgid daemon sends this part back to the front). */
  readonly detail: string;
  constructor(file: string, errno: string | null, detail: string, code: ErrorCode = ErrorCode.CGI_SPAWN_FAILED) {
    super(code, `cannot run ${file}: ${detail}${errno ? ` (${errno})` : ''}`);
    this.name = 'SpawnError';
    this.errno = errno;
    this.detail = detail;
  }

  /** The cgid daemon could not take the order (down, restarting, wedged): worth a retry in a moment. */
  static daemonUnavailable(file: string, detail: string): SpawnError {
    return new SpawnError(file, null, detail, ErrorCode.CGID_UNAVAILABLE);
  }
}

/**
 * execve answers ENOEXEC for a file that is neither a binary nor a `#!`
 * script; libuv then retries through /bin/sh (execvp's fallback). A CGI
 * server must not turn an arbitrary executable text file into a shell script,
 * so the spawner refuses what execve would. Costs one 4-byte read.
 */
export function refuseShellFallback(file: string): void {
  const magic = Buffer.alloc(4);
  let length = 0;
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    length = readSync(fd, magic, 0, 4, 0);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    // Node's text repeats the code and the path ("ENOENT: no such file or directory, open '/x'"): SpawnError names both.
    const why = (error as Error).message.replace(/^[A-Z0-9_]+: /, '').replace(/, \w+ '.*'$/s, '');
    throw new SpawnError(file, code, why);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const isInterpreted = length >= 2 && magic[0] === 0x23 && magic[1] === 0x21; // "#!"
  const isElf = length === 4 && magic[0] === 0x7f && magic[1] === 0x45 && magic[2] === 0x4c && magic[3] === 0x46;
  if (!isInterpreted && !isElf) {
    throw new SpawnError(file, 'ENOEXEC', 'exec format error: the file is neither a binary nor starts with a #! line');
  }
}

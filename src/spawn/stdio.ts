/**
 * A script's three stdio channels, made by whoever will read and write them
 * (the HTTP front, or the FastCGI face): a socket pair for stdin (or
 * /dev/null when there is no body) and pipes for stdout and stderr, our ends wrapped
 * by libuv, the script's ends handed to posix_spawn in-process or passed to
 * the daemon over SCM_RIGHTS. Request and response bytes therefore flow
 * between the front and the script directly; the daemon only starts it.
 */
import net from 'node:net';
import { openSync } from 'node:fs';
import { Transform, Writable, type Readable } from 'node:stream';
import { closeDescriptor, socketPair } from '../sys/index.js';
import { makePipe } from '../sys/index.js';

export interface ScriptStdio {
  /** The script's ends, in order stdin, stdout, stderr. Close them (closeScriptEnds) once handed over. */
  readonly scriptEnds: [number, number, number];
  readonly stdin: Writable;
  readonly stdout: net.Socket;
  readonly stderr: net.Socket;
  closeScriptEnds(): void;
  /** Closes everything (a spawn that failed). */
  destroy(): void;
}

/** /dev/null, opened once (close-on-exec), the stdin of every script that gets no request body. */
let devNull: number | null = null;

/** A stdin for a script reading /dev/null: writes are dropped, end() just finishes. */
function nullStdin(): Writable {
  return new Writable({ write: (_chunk, _encoding, callback) => callback() });
}

/**
 * `emptyStdin`: the script reads /dev/null and `stdin` is a Writable that
 * only needs end() (one socket pair fewer per request without a body).
 */
export function createScriptStdio(emptyStdin = false): ScriptStdio {
  const made: number[] = [];
  try {
    let stdinOurs = -1;
    let stdinTheirs: number;
    if (emptyStdin) {
      devNull ??= openSync('/dev/null', 'r');
      stdinTheirs = devNull;
    } else {
      [stdinOurs, stdinTheirs] = socketPair({ blocking: true });
      made.push(stdinOurs, stdinTheirs);
    }
    // stdout and stderr flow one way: pipes, as most CGI servers give scripts.
    const [stdoutOurs, stdoutTheirs] = makePipe();
    made.push(stdoutOurs, stdoutTheirs);
    const [stderrOurs, stderrTheirs] = makePipe();
    made.push(stderrOurs, stderrTheirs);
    const scriptEnds: [number, number, number] = [stdinTheirs, stdoutTheirs, stderrTheirs];
    const stdin = emptyStdin ? nullStdin() : new net.Socket({ fd: stdinOurs, readable: false, writable: true });
    const stdout = new net.Socket({ fd: stdoutOurs, readable: true, writable: false });
    const stderr = new net.Socket({ fd: stderrOurs, readable: true, writable: false });
    let theirsOpen = true;
    const closeScriptEnds = () => {
      if (!theirsOpen) return;
      theirsOpen = false;
      for (const fd of scriptEnds) if (fd !== devNull) closeDescriptor(fd);
    };
    return {
      scriptEnds,
      stdin,
      stdout,
      stderr,
      closeScriptEnds,
      destroy() {
        closeScriptEnds();
        stdin.destroy();
        stdout.destroy();
        stderr.destroy();
      },
    };
  } catch (error) {
    for (const fd of made) closeDescriptor(fd);
    throw error;
  }
}

/**
 * Passes a script's stdout through while counting it; past `maxBytes` the
 * output is cut there and `onExceeded` runs once (it kills the script's
 * group). 0 means no cap, and the stream itself is returned.
 */
export function capOutput(stdout: Readable, maxBytes: number, onExceeded: () => void): Readable {
  if (maxBytes <= 0) return stdout;
  let seen = 0;
  let exceeded = false;
  const capped = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (exceeded) return callback();
      const room = maxBytes - seen;
      seen += chunk.length;
      if (chunk.length <= room) return callback(null, chunk);
      exceeded = true;
      onExceeded();
      callback(null, chunk.subarray(0, room));
    },
  });
  stdout.on('error', (error) => capped.destroy(error));
  capped.once('close', () => {
    if (!stdout.destroyed) stdout.destroy();
  });
  return stdout.pipe(capped);
}

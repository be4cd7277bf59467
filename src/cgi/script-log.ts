/**
 * ScriptLog, ScriptLogLength and ScriptLogBuffer, as Apache's mod_cgi writes
 * them: one entry per failed script request (malformed head, timeout, spawn
 * failure, error status), in mod_cgi's sections:
 *
 *   %% [Wed Jun 19 10:53:21 1996] GET /cgi-bin/printenv HTTP/1.1
 *   %% 500 /usr/lib/cgi-bin/printenv
 *   %request
 *   Host: example.com
 *   (blank line, then up to ScriptLogBuffer bytes of a POST/PUT body)
 *   %response
 *   (response headers, then the offending header line)
 *   %stdout
 *   %stderr
 *
 * Unlike mod_cgi, Authorization, Proxy-Authorization, Cookie and Set-Cookie
 * values are redacted unless the operator asks otherwise, in every section a
 * header can appear in: the request headers, the response headers, the
 * script's own header block under %stdout, and the offending line quoted in
 * the error. The file stops
 * growing at ScriptLogLength (mod_cgi only checks before each entry), and
 * writing never holds up a request: entries are queued and appended in order.
 */
import { promises as fs } from 'node:fs';
import { CGI_SCRIPT_LOG_BUFFER, CGI_SCRIPT_LOG_LENGTH, CGI_SCRIPT_LOG_QUEUE } from '../limits.js';

export interface ScriptLogOptions {
  path: string;
  /** ScriptLogLength: no more is written once the file is this large. */
  maxLength?: number;
  /** ScriptLogBuffer: request body bytes recorded per entry. */
  bodyBytes?: number;
  /** Header names (any case) whose values are written as "[redacted]"; default Authorization, Proxy-Authorization, Cookie, Set-Cookie. */
  redactHeaders?: readonly string[];
  /** Told about write failures (once per failure); the log never throws into a request. */
  onError?: (error: Error) => void;
}

export interface ScriptLogEntry {
  date?: Date;
  /** The request line as the client sent it: method, target, protocol. */
  method: string;
  target: string;
  protocol: string;
  status: number;
  scriptPath: string;
  requestHeaders: ReadonlyArray<readonly [string, string]>;
  /** The first bytes of the request body (only POST and PUT bodies are written, as mod_cgi does). */
  requestBody?: Buffer;
  responseHeaders?: ReadonlyArray<readonly [string, string]>;
  /** What went wrong, e.g. the malformed header line or "timeout". */
  error?: string;
  stdout?: Buffer | string;
  stderr?: string;
}

/** A header name at the start of a line, then whatever separates it from the value (colon, spaces, '='). */
const HEADER_NAME_AT_START = /^([ \t]*)([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?=[^!#$%&'*+.^_`|~0-9A-Za-z-]|$)[ \t]*[:=]?[ \t]*/;
/** "Name:" anywhere in a line, the name not glued to a preceding token character. */
const HEADER_NAME_WITH_COLON = /(^|[^!#$%&'*+.^_`|~0-9A-Za-z-])([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:/g;
/** Where the handler and the FastCGI face quote a script's bad header line. */
const BAD_HEADER_QUOTE = /Bad header: /;

export const DEFAULT_REDACTED_HEADERS: readonly string[] = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'];

export class ScriptLog {
  readonly path: string;
  readonly maxLength: number;
  readonly bodyBytes: number;
  readonly #redact: Set<string>;
  readonly #onError: ((error: Error) => void) | undefined;
  #queue: string[] = [];
  #writing = false;
  #idle: Promise<void> = Promise.resolve();
  #resolveIdle: (() => void) | undefined;
  /** Entries dropped because the queue was full (the disk could not keep up). */
  dropped = 0;

  constructor(options: ScriptLogOptions) {
    this.path = options.path;
    this.maxLength = options.maxLength ?? CGI_SCRIPT_LOG_LENGTH;
    this.bodyBytes = options.bodyBytes ?? CGI_SCRIPT_LOG_BUFFER;
    this.#redact = new Set((options.redactHeaders ?? DEFAULT_REDACTED_HEADERS).map((name) => name.toLowerCase()));
    this.#onError = options.onError;
  }

  /** Queues one entry; returns at once. */
  record(entry: ScriptLogEntry): void {
    if (this.#queue.length >= CGI_SCRIPT_LOG_QUEUE) {
      this.dropped++;
      return;
    }
    this.#queue.push(this.format(entry));
    if (!this.#writing) {
      this.#writing = true;
      this.#idle = new Promise((resolve) => (this.#resolveIdle = resolve));
      void this.#drain();
    }
  }

  /** Resolves when every queued entry has been written (tests, shutdown). */
  flushed(): Promise<void> {
    return this.#idle;
  }

  /** One entry as text, in mod_cgi's layout. */
  format(entry: ScriptLogEntry): string {
    const lines: string[] = [];
    lines.push(`%% [${apacheCtime(entry.date ?? new Date())}] ${entry.method} ${entry.target} ${entry.protocol}`);
    lines.push(`%% ${entry.status} ${entry.scriptPath}`);
    lines.push('%request');
    for (const [name, value] of entry.requestHeaders) lines.push(`${name}: ${this.#value(name, value)}`);
    const method = entry.method.toUpperCase();
    if ((method === 'POST' || method === 'PUT') && entry.requestBody && entry.requestBody.length > 0) {
      lines.push('', entry.requestBody.subarray(0, this.bodyBytes).toString('utf8'));
    }
    lines.push('%response');
    for (const [name, value] of entry.responseHeaders ?? []) lines.push(`${name}: ${this.#value(name, value)}`);
    if (entry.error) lines.push(this.#redactError(entry.error));
    lines.push('%stdout');
    const stdout = this.#redactHead(typeof entry.stdout === 'string' ? entry.stdout : (entry.stdout?.toString('utf8') ?? ''));
    if (stdout !== '') lines.push(stdout.endsWith('\n') ? stdout.slice(0, -1) : stdout);
    lines.push('%stderr');
    const stderr = entry.stderr ?? '';
    if (stderr !== '') lines.push(stderr.endsWith('\n') ? stderr.slice(0, -1) : stderr);
    return `${lines.join('\n')}\n`;
  }

  #value(name: string, value: string): string {
    return this.#redact.has(name.toLowerCase()) ? '[redacted]' : value;
  }

  /**
   * A line of a header block with a redacted header's value replaced: the
   * name and its separator are kept, everything after them goes. Generous on
   * purpose: a malformed line (`Set-Cookie session=x`, `set-cookie : x`) is
   * what a failing script prints, and it is redacted too.
   */
  #redactLine(line: string): { line: string; redacted: boolean } {
    const match = HEADER_NAME_AT_START.exec(line);
    if (!match || !this.#redact.has(match[2]!.toLowerCase())) return { line, redacted: false };
    const carriageReturn = line.endsWith('\r') ? '\r' : '';
    return { line: `${match[0]}[redacted]${carriageReturn}`, redacted: true };
  }

  /** The script's output with its header block (up to the first empty line) redacted; continuation lines of a redacted header too. */
  #redactHead(stdout: string): string {
    if (this.#redact.size === 0 || stdout === '') return stdout;
    const lines = stdout.split('\n');
    let previousRedacted = false;
    for (let index = 0; index < lines.length; index++) {
      const line = lines[index]!;
      if (line === '' || line === '\r') break;
      if (previousRedacted && /^[ \t]/.test(line)) {
        lines[index] = `${line.startsWith('\t') ? '\t' : ' '}[redacted]${line.endsWith('\r') ? '\r' : ''}`;
        continue;
      }
      const result = this.#redactLine(line);
      lines[index] = result.line;
      previousRedacted = result.redacted;
    }
    return lines.join('\n');
  }

  /**
   * The error text quotes the offending header line ("Bad header: LINE"): a
   * redacted header's value there is cut, and so is one quoted anywhere else
   * as "Name: value".
   */
  #redactError(error: string): string {
    if (this.#redact.size === 0) return error;
    return error
      .split('\n')
      .map((line) => {
        const quoted = BAD_HEADER_QUOTE.exec(line);
        if (quoted) {
          const result = this.#redactLine(line.slice(quoted.index + quoted[0].length));
          if (result.redacted) return line.slice(0, quoted.index + quoted[0].length) + result.line;
        }
        for (const match of line.matchAll(HEADER_NAME_WITH_COLON)) {
          if (this.#redact.has(match[2]!.toLowerCase())) return `${line.slice(0, match.index + match[0].length)} [redacted]`;
        }
        return line;
      })
      .join('\n');
  }

  async #drain(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const text = this.#queue.shift()!;
        try {
          // Read for every entry (entries are rare: failed requests): after logrotate moves the file away, the next
          // entry starts a new one with the whole ScriptLogLength, and no reopen signal is needed (opened per entry).
          const room = this.maxLength - (await currentSize(this.path));
          if (room <= 0) continue;
          const bytes = Buffer.from(text, 'utf8');
          const written = bytes.length <= room ? bytes : bytes.subarray(0, room);
          await fs.appendFile(this.path, written, { mode: 0o640 });
        } catch (error) {
          this.#onError?.(error as Error);
        }
      }
    } finally {
      this.#writing = false;
      this.#resolveIdle?.();
    }
  }
}

async function currentSize(path: string): Promise<number> {
  try {
    return (await fs.stat(path)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** apr_ctime's format, in local time as Apache writes it: "Wed Jun 19 10:53:21 1996". */
export function apacheCtime(date: Date): string {
  const two = (n: number) => String(n).padStart(2, '0');
  return `${DAYS[date.getDay()]} ${MONTHS[date.getMonth()]} ${two(date.getDate())} ${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${date.getFullYear()}`;
}

/**
 * The access log's line: a subset of Apache's LogFormat, compiled once into a
 * function, so parsers written for Apache's logs (GoAccess, AWStats, fail2ban,
 * a shipper's grok pattern) read gatehouse's. Pure: no I/O.
 *
 *   %h          the client's address (no host name lookups)
 *   %l          the remote logname: always "-" (identd is not asked)
 *   %u          the authenticated user, "-" when none
 *   %t          the time the request arrived: [02/Dec/2026:09:23:58 +0000]
 *   %r          the request line: GET /path?query HTTP/1.1
 *   %>s         the final status
 *   %b          response body bytes, "-" when none
 *   %{Name}i    a request header (Referer, User-Agent, ...), "-" when absent
 *   %D          time taken to serve the request, in microseconds
 *   %T          time taken, in whole seconds
 *   %P          the process id of the front that served the request (with --workers, which worker)
 *   %%          a percent sign
 *
 * "combined" (the default) and "common" name Apache's two standard formats.
 * As Apache does, quotes, backslashes and control bytes in what the client
 * sent (%r, %u, %{...}i) are escaped, so a request cannot forge a line.
 * It lives with the logs, below both the configuration (which checks a
 * format when it is read) and the front (src/http/logs.ts, which writes it).
 */

export interface AccessEntry {
  remoteAddress: string | undefined;
  remoteUser?: string | undefined;
  /** When the request arrived. */
  time: Date;
  /** "GET /path HTTP/1.1", or null for a request that could not be read (logged as "-"). */
  requestLine: string | null;
  /** 0 when no response was sent (logged as "-"). */
  status: number;
  bodyBytes: number;
  /** Request headers, names in lower case (node:http's req.headers). */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Time taken, in microseconds. */
  durationMicros: number;
}

export type AccessLineFormatter = (entry: AccessEntry) => string;

export const ACCESS_LOG_NAMED_FORMATS: Readonly<Record<string, string>> = {
  combined: '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
  common: '%h %l %u %t "%r" %>s %b',
};

export const DEFAULT_ACCESS_LOG_FORMAT = 'combined';

/** What a format may contain, for the error that refuses the rest. */
export const ACCESS_LOG_DIRECTIVES = ['%h', '%l', '%u', '%t', '%r', '%>s', '%b', '%{Name}i', '%D', '%T', '%P', '%%'] as const;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** Apache's %t: [23/Nov/2026:17:40:00 +0000], in local time with its offset. */
export function apacheTime(date: Date): string {
  const offset = -date.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  const zone = `${sign}${two(Math.floor(Math.abs(offset) / 60))}${two(Math.abs(offset) % 60)}`;
  return `[${two(date.getDate())}/${MONTHS[date.getMonth()]}/${date.getFullYear()}:${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())} ${zone}]`;
}

/** Escapes what Apache escapes in log fields: quotes, backslashes and control bytes (and bytes above 0x7e). */
export function escapeField(value: string): string {
  return value.replace(/[\\"\x00-\x1f\x7f-\xff]/g, (char) =>
    char === '"' ? '\\"' : char === '\\' ? '\\\\' : `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

type Piece = string | AccessLineFormatter;

function header(name: string): AccessLineFormatter {
  const key = name.toLowerCase();
  return (entry) => {
    const value = entry.headers[key];
    if (value === undefined || value === '') return '-';
    return escapeField(Array.isArray(value) ? value.join(', ') : value);
  };
}

const DIRECTIVES: Readonly<Record<string, AccessLineFormatter>> = {
  h: (entry) => entry.remoteAddress ?? '-',
  l: () => '-',
  u: (entry) => (entry.remoteUser ? escapeField(entry.remoteUser) : '-'),
  t: (entry) => apacheTime(entry.time),
  r: (entry) => (entry.requestLine === null ? '-' : escapeField(entry.requestLine)),
  '>s': (entry) => (entry.status > 0 ? String(entry.status) : '-'),
  b: (entry) => (entry.bodyBytes > 0 ? String(entry.bodyBytes) : '-'),
  D: (entry) => String(Math.max(0, Math.round(entry.durationMicros))),
  T: (entry) => String(Math.max(0, Math.floor(entry.durationMicros / 1_000_000))),
  P: () => String(process.pid),
};

/**
 * Compiles a format (or the name of one); a directive outside the subset is
 * refused with the list of those supported, for --check and the start.
 */
export function compileAccessLogFormat(format: string): AccessLineFormatter | { problem: string } {
  const text = ACCESS_LOG_NAMED_FORMATS[format] ?? format;
  const pieces: Piece[] = [];
  let literal = '';
  const refuse = (what: string) => ({
    problem: `${what} is not supported; write combined, common, or a format made of ${ACCESS_LOG_DIRECTIVES.join(' ')} and other text`,
  });
  for (let index = 0; index < text.length; index++) {
    const char = text[index]!;
    if (char !== '%') {
      literal += char;
      continue;
    }
    const rest = text.slice(index + 1);
    if (rest.startsWith('%')) {
      literal += '%';
      index += 1;
      continue;
    }
    let directive: AccessLineFormatter | undefined;
    let length = 0;
    const headerMatch = /^\{([!#$%&'*+.^_`|~0-9A-Za-z-]+)\}i/.exec(rest);
    if (headerMatch) {
      directive = header(headerMatch[1]!);
      length = headerMatch[0].length;
    } else if (rest.startsWith('>s')) {
      directive = DIRECTIVES['>s'];
      length = 2;
    } else if (rest.length > 0 && rest[0] !== '>' && rest[0] !== '{' && rest[0] !== '<') {
      directive = DIRECTIVES[rest[0]!];
      length = 1;
    }
    if (!directive) {
      const shown = /^(\{[^}]*\}?.?|<?>?.?)/.exec(rest)?.[0] ?? '';
      return refuse(`%${shown}`.trim() === '%' ? 'a % at the end' : `%${shown}`);
    }
    if (literal) pieces.push(literal);
    literal = '';
    pieces.push(directive);
    index += length;
  }
  if (literal) pieces.push(literal);
  return (entry) => {
    let line = '';
    for (const piece of pieces) line += typeof piece === 'string' ? piece : piece(entry);
    return line;
  };
}

/**
 * One CGI variable model, read back: turns CGI/1.1 meta-variables (a script's
 * environment or a FastCGI PARAMS block) into the method, URL and headers a
 * Node handler expects. Go's cgi.RequestFromMap is the model; the FastCGI
 * worker library uses this so CGI and FastCGI never disagree on what a
 * variable means.
 */

export interface RequestHead {
  method: string;
  /** The request target as the client sent it (REQUEST_URI), else rebuilt from SCRIPT_NAME, PATH_INFO and QUERY_STRING. */
  url: string;
  /** Lower-case header names, as node:http gives them. */
  headers: Record<string, string>;
  httpVersion: string;
}

/** Variables that carry request headers without the HTTP_ prefix (RFC 3875 4.1.2, 4.1.3). */
const UNPREFIXED_HEADERS: ReadonlyArray<readonly [variable: string, header: string]> = [
  ['CONTENT_TYPE', 'content-type'],
  ['CONTENT_LENGTH', 'content-length'],
];

/**
 * Reads a request back from its variables. Text values are taken as they are;
 * byte values (an environment built from the wire: environment.ts) are read
 * one character per byte, as node:http gives header values, so a request
 * described, built and read back has the headers it started with.
 */
export function requestFromEnvironment(variables: Readonly<Record<string, string | Buffer | undefined>>): RequestHead {
  const env = (name: string): string | undefined => {
    const value = variables[name];
    return typeof value === 'string' || value === undefined ? value : value.toString('latin1');
  };
  const method = env('REQUEST_METHOD') || 'GET';
  let url = env('REQUEST_URI');
  if (!url) {
    const queryString = env('QUERY_STRING');
    const query = queryString ? `?${queryString}` : '';
    url = `${env('SCRIPT_NAME') ?? ''}${env('PATH_INFO') ?? ''}${query}` || '/';
  }
  const headers: Record<string, string> = {};
  for (const name in variables) {
    if (!name.startsWith('HTTP_')) continue;
    const value = env(name);
    if (value === undefined) continue;
    headers[name.slice(5).toLowerCase().replaceAll('_', '-')] = value;
  }
  for (const [variable, header] of UNPREFIXED_HEADERS) {
    const value = env(variable);
    if (value) headers[header] = value;
  }
  const protocol = /^HTTP\/(\d+\.\d+)$/.exec(env('SERVER_PROTOCOL') ?? '');
  return { method, url, headers, httpVersion: protocol ? protocol[1]! : '1.1' };
}

/**
 * Static files from the document root, through `send` (ranges, conditional
 * requests, ETags, MIME types). Before `send` sees a path it goes through the
 * same normalisation as scripts (no '..' above the root, no encoded slashes,
 * no NUL) and its real path must lie inside the root, so a symlink cannot
 * leak a file from outside it.
 */
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import send from 'send';
import { normaliseUrlPath } from '../cgi/resolve.js';
import { NOSNIFF, sendErrorPage } from '../cgi/http-response.js';
import { plainAddress } from '../cgi/http-request.js';

export interface StaticOptions {
  documentRoot: string;
  errorLog: (line: string) => void;
  index?: string[];
}

export function serveStatic(options: StaticOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const index = options.index ?? ['index.html'];
  let rootReal: Promise<string> | null = null;
  return (req, res) => {
    void (async () => {
      const method = req.method ?? 'GET';
      if (method !== 'GET' && method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return sendErrorPage(res, 405);
      }
      const target = req.url ?? '/';
      const question = target.indexOf('?');
      const rawPath = question === -1 ? target : target.slice(0, question);
      const normalised = normaliseUrlPath(rawPath);
      if ('kind' in normalised) {
        options.errorLog(`static: refused ${method} ${target} from ${plainAddress(req.socket.remoteAddress)}: ${normalised.reason}`);
        return sendErrorPage(res, normalised.status);
      }
      rootReal ??= realpath(options.documentRoot);
      const root = await rootReal;
      const candidate = path.join(root, ...normalised.segments);
      let real: string;
      try {
        real = await realpath(candidate);
      } catch {
        return sendErrorPage(res, 404);
      }
      if (!isInside(real, root)) {
        options.errorLog(`static: refused ${target}: ${candidate} resolves to ${real}, outside the document root ${root}`);
        return sendErrorPage(res, 404);
      }
      const info = await stat(real).catch(() => null);
      if (!info) return sendErrorPage(res, 404);
      let file = real;
      if (info.isDirectory()) {
        if (!normalised.trailingSlash && normalised.segments.length > 0) {
          res.statusCode = 301;
          // Leading slashes collapsed: "//host" in a Location would send the client to another site.
          res.setHeader('Location', `${rawPath.replace(/^\/+/, '/')}/${question === -1 ? '' : target.slice(question)}`);
          return res.end();
        }
        // The index is found here, not by `send`: an index.html that is a symlink must pass the same containment check.
        const found = await findIndex(real, index, root, (line) => options.errorLog(`static: refused ${target}: ${line}`));
        if (!found) return sendErrorPage(res, 404);
        file = found;
      }
      const relativeSegments = path.relative(root, file).split(path.sep);
      // Dot files (.env, .git, .htpasswd) are never served, by the name asked for or the one a symlink leads to;
      // /.well-known/ is, because ACME (RFC 8555) and security.txt (RFC 9116) live there.
      if (!publicDotNames(normalised.segments) || !publicDotNames(relativeSegments)) return sendErrorPage(res, 404);
      // The type comes from the file's name, not from its owner: browsers must not guess another (CVE-2020-24553).
      res.setHeader(...NOSNIFF);
      send(req, `/${relativeSegments.map(encodeURIComponent).join('/')}`, { root, index: false, dotfiles: 'allow' })
        .on('error', (error: { status?: number; headers?: Record<string, string>; message: string }) => {
          const contentRange = error.headers?.['Content-Range'];
          // RFC 9110 15.5.17: a 416 says how long the file is, so the client can ask again.
          if (error.status === 416 && contentRange && !res.headersSent) {
            for (const name of res.getHeaderNames()) res.removeHeader(name);
            res.statusCode = 416;
            res.setHeader('Content-Range', contentRange);
            res.setHeader('Content-Length', 0);
            return res.end();
          }
          sendErrorPage(res, error.status ?? 500);
        })
        .pipe(res);
    })().catch((error: unknown) => {
      options.errorLog(`static: ${(error as Error).message}`);
      sendErrorPage(res, 500);
    });
  };
}

/** The first index file of `directory` that is a regular file whose real path lies inside `root`. */
async function findIndex(
  directory: string,
  names: readonly string[],
  root: string,
  refuse: (line: string) => void,
): Promise<string | null> {
  for (const name of names) {
    const candidate = path.join(directory, name);
    const real = await realpath(candidate).catch(() => null);
    if (real === null) continue;
    if (!isInside(real, root) || real === root) {
      refuse(`${candidate} resolves to ${real}, outside the document root ${root}`);
      continue;
    }
    if ((await stat(real).catch(() => null))?.isFile()) return real;
  }
  return null;
}

function isInside(file: string, root: string): boolean {
  return file === root || file.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function publicDotNames(segments: readonly string[]): boolean {
  return segments.every((segment, index) => !segment.startsWith('.') || (index === 0 && segment === '.well-known'));
}

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
import { sendErrorPage } from '../cgi/http-response.js';

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
        options.errorLog(`static: refused ${method} ${target} from ${req.socket.remoteAddress}: ${normalised.reason}`);
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
      if (real !== root && !real.startsWith(root + path.sep)) {
        options.errorLog(`static: refused ${target}: ${candidate} resolves to ${real}, outside the document root ${root}`);
        return sendErrorPage(res, 404);
      }
      const info = await stat(real).catch(() => null);
      if (!info) return sendErrorPage(res, 404);
      if (info.isDirectory() && !normalised.trailingSlash && normalised.segments.length > 0) {
        res.statusCode = 301;
        res.setHeader('Location', `${rawPath}/${question === -1 ? '' : target.slice(question)}`);
        return res.end();
      }
      const relative = path.relative(root, real).split(path.sep).map(encodeURIComponent).join('/');
      send(req, '/' + relative + (info.isDirectory() ? '/' : ''), { root, index, dotfiles: 'ignore' })
        .on('error', (error: { status?: number; message: string }) => sendErrorPage(res, error.status ?? 500))
        .pipe(res);
    })().catch((error: unknown) => {
      options.errorLog(`static: ${(error as Error).message}`);
      sendErrorPage(res, 500);
    });
  };
}

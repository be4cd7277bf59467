// cgi() and fastcgi() mounted in a plain node:http server.
//
//   node examples/fastcgi-app.mjs /tmp/gatehouse-app.sock &   # the FastCGI application
//   node examples/node-http.mjs                                # http://127.0.0.1:3000/
//   curl 'http://127.0.0.1:3000/cgi-bin/env.sh/extra?x=1'      # a shell CGI script
//   curl http://127.0.0.1:3000/app/params                      # the FastCGI application
//
// Environment: PORT (default 3000), FASTCGI_UPSTREAM (default unix:/tmp/gatehouse-app.sock).
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { cgi, fastcgi } from 'gatehouse-server';

const site = fileURLToPath(new URL('./site/', import.meta.url));

// Every file in site/cgi-bin is a script, at /cgi-bin/ (Apache's ScriptAlias).
const scripts = cgi({
  documentRoot: `${site}public`,
  scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: `${site}cgi-bin` }],
  scriptTimeout: '10s',
});

// Everything under /app/ goes to one FastCGI application (a front controller):
// SCRIPT_NAME is /app and PATH_INFO the rest of the path.
const app = fastcgi({
  urlPrefix: '/app/',
  upstreams: [process.env.FASTCGI_UPSTREAM ?? 'unix:/tmp/gatehouse-app.sock'],
  documentRoot: `${site}public`,
  scriptFilename: fileURLToPath(new URL('./fastcgi-app.mjs', import.meta.url)),
});

function notFound(req, res) {
  res.statusCode = 404;
  res.setHeader('Content-Type', 'text/plain');
  res.end(`nothing at ${req.url}\n`);
}

const server = http.createServer((req, res) => {
  // The handlers read the request body themselves: nothing may consume it before them.
  if (req.url.startsWith('/app/')) return app(req, res, () => notFound(req, res));
  if (req.url.startsWith('/cgi-bin/')) return scripts(req, res, () => notFound(req, res));
  if (req.url === '/') {
    res.setHeader('Content-Type', 'text/plain');
    return res.end('node:http with gatehouse: try /cgi-bin/env.sh, /cgi-bin/form.pl, /app/hello\n');
  }
  notFound(req, res);
});

const port = Number(process.env.PORT ?? 3000);
server.listen(port, '127.0.0.1', () => console.log(`node:http example on http://127.0.0.1:${port}/`));

// Stop: no new connections, scripts get 5 s to finish, then the FastCGI connections close.
process.once('SIGTERM', async () => {
  server.close();
  server.closeIdleConnections();
  await scripts.shutdown(5000);
  await app.close();
});

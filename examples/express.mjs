// cgi() and fastcgi() mounted in an Express 5 application.
//
//   node examples/fastcgi-app.mjs /tmp/gatehouse-app.sock &   # the FastCGI application
//   node examples/express.mjs                                  # http://127.0.0.1:3000/
//   curl 'http://127.0.0.1:3000/cgi-bin/env.sh/extra?x=1'
//   curl http://127.0.0.1:3000/app/params
//
// Environment: PORT (default 3000), FASTCGI_UPSTREAM (default unix:/tmp/gatehouse-app.sock).
import express from 'express';
import { fileURLToPath } from 'node:url';
import { cgi, fastcgi } from 'gatehouse-server';

const site = fileURLToPath(new URL('./site/', import.meta.url));
const scripts = cgi({
  documentRoot: `${site}public`,
  // Mounted with app.use('/cgi-bin', ...): Express strips the mount point from req.url, so the
  // scripts are at "/" of the mount; SCRIPT_NAME still comes out as /cgi-bin/NAME (from req.originalUrl).
  scriptAliases: [{ urlPrefix: '/', directory: `${site}cgi-bin` }],
  scriptTimeout: '10s',
});
const app = fastcgi({
  // fastcgi() works on the whole path (req.originalUrl), so urlPrefix is the site's prefix.
  urlPrefix: '/app/',
  upstreams: [process.env.FASTCGI_UPSTREAM ?? 'unix:/tmp/gatehouse-app.sock'],
  documentRoot: `${site}public`,
  scriptFilename: fileURLToPath(new URL('./fastcgi-app.mjs', import.meta.url)),
});

const server = express();
// Mount the handlers before any body parser (express.json(), express.urlencoded()):
// they stream the request body to the script or application themselves.
server.use('/cgi-bin', scripts);
server.use('/app', app);
server.get('/', (_req, res) => res.type('text/plain').send('Express with gatehouse: try /cgi-bin/env.sh, /cgi-bin/form.pl, /app/hello\n'));
// Paths outside the mounts end here (a missing script under /cgi-bin is the cgi handler's own 404, as in Apache).
server.use((req, res) => res.status(404).type('text/plain').send(`nothing at ${req.originalUrl}\n`));

const port = Number(process.env.PORT ?? 3000);
const listener = server.listen(port, '127.0.0.1', () => console.log(`Express example on http://127.0.0.1:${port}/`));

process.once('SIGTERM', async () => {
  listener.close();
  listener.closeIdleConnections();
  await scripts.shutdown(5000);
  await app.close();
});

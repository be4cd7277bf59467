// cgi() and fastcgi() mounted in a Fastify 5 application.
//
//   node examples/fastcgi-app.mjs /tmp/gatehouse-app.sock &   # the FastCGI application
//   node examples/fastify.mjs                                  # http://127.0.0.1:3000/
//   curl 'http://127.0.0.1:3000/cgi-bin/env.sh/extra?x=1'
//   curl http://127.0.0.1:3000/app/params
//
// Environment: PORT (default 3000), FASTCGI_UPSTREAM (default unix:/tmp/gatehouse-app.sock).
import Fastify from 'fastify';
import { fileURLToPath } from 'node:url';
import { cgi, fastcgi } from 'gatehouse-server';

const site = fileURLToPath(new URL('./site/', import.meta.url));
const scripts = cgi({
  documentRoot: `${site}public`,
  scriptAliases: [{ urlPrefix: '/cgi-bin/', directory: `${site}cgi-bin` }],
  scriptTimeout: '10s',
});
const app = fastcgi({
  urlPrefix: '/app/',
  upstreams: [process.env.FASTCGI_UPSTREAM ?? 'unix:/tmp/gatehouse-app.sock'],
  documentRoot: `${site}public`,
  scriptFilename: fileURLToPath(new URL('./fastcgi-app.mjs', import.meta.url)),
});

/** A Fastify route handler that gives the raw request and response to a gatehouse handler. */
function mount(handler) {
  return (request, reply) => {
    // From here on the handler owns the response: Fastify must not send one too.
    reply.hijack();
    handler(request.raw, reply.raw, () => {
      reply.raw.statusCode = 404;
      reply.raw.setHeader('Content-Type', 'text/plain');
      reply.raw.end(`nothing at ${request.url}\n`);
    });
  };
}

const server = Fastify();
// Fastify reads and parses the body before a route handler runs. In this scope nothing is parsed:
// the catch-all parser leaves the body unread, so the handler can stream it to the script or app.
await server.register(async (scope) => {
  scope.removeAllContentTypeParsers();
  scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
  scope.all('/cgi-bin/*', mount(scripts));
  scope.all('/app/*', mount(app));
});
server.get('/', async (_request, reply) =>
  reply.type('text/plain').send('Fastify with gatehouse: try /cgi-bin/env.sh, /cgi-bin/form.pl, /app/hello\n'),
);
server.setNotFoundHandler((request, reply) => reply.code(404).type('text/plain').send(`nothing at ${request.url}\n`));

const port = Number(process.env.PORT ?? 3000);
await server.listen({ port, host: '127.0.0.1' });
console.log(`Fastify example on http://127.0.0.1:${port}/`);

process.once('SIGTERM', async () => {
  await Promise.all([server.close(), scripts.shutdown(5000)]);
  await app.close();
});

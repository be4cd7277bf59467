// The hello app on npm node-fastcgi, listening on fd 0 (spawn-fcgi) or on the path in argv[2].
const fcgi = require('node-fastcgi');

const server = fcgi.createServer((_req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end('hello\n');
});
if (process.argv[2]) server.listen(process.argv[2]);
else server.listen();

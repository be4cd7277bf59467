// The hello app on the gatehouse worker library, listening on fd 0 (spawn-fcgi) or on the path in argv[2].
import { createServer } from '../../dist/src/fastcgi/index.js';

const server = createServer((_req, res) => {
  res.setHeader('Content-Type', 'text/plain');
  res.end('hello\n');
});
if (process.argv[2]) server.listen(process.argv[2]);
else server.listen();

// A Node.js application run as a FastCGI responder with gatehouse's worker
// library. Run it under gatehouse serve (the built-in example does), nginx,
// Apache mod_proxy_fcgi, spawn-fcgi or gatehouse kfcgi:
//   node examples/fastcgi-app.mjs /tmp/app.sock      (a unix socket)
//   node examples/fastcgi-app.mjs 127.0.0.1:9000     (TCP)
//   spawn-fcgi -s /tmp/app.sock -- node examples/fastcgi-app.mjs   (fd 0)
import { createServer } from 'gatehouse-server/fastcgi';

let served = 0;
const server = createServer((req, res) => {
  served++;
  const path = (req.params.PATH_INFO || new URL(req.url, 'http://x').pathname).replace(/^\/app/, '');
  if (path === '/params') {
    res.setHeader('Content-Type', 'application/json');
    res.end(`${JSON.stringify({ method: req.method, url: req.url, headers: req.headers, params: req.params }, null, 2)}\n`);
    return;
  }
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.end(`<!DOCTYPE html><html><head><title>FastCGI</title></head><body>
<h1>Hello from a FastCGI application</h1>
<p>Process ${process.pid} has served ${served} request(s). You asked for <code>${escapeHtml(req.url)}</code> with ${escapeHtml(req.method)}.</p>
<p><a href="/">back</a></p></body></html>\n`);
});

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

const target = process.argv[2];
if (!target) server.listen();
else if (/^[\d.]+:\d+$/.test(target)) server.listen(Number(target.split(':')[1]), target.split(':')[0]);
else server.listen(target);

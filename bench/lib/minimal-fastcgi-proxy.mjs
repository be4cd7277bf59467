#!/usr/bin/env node
/**
 * A yardstick, not a product: the least a FastCGI proxy on node:http can do
 * per request, so the serve benchmark can show how much of the gap to nginx
 * is Node's own (node:http, net, V8) and how much is gatehouse's.
 *
 *   node minimal-fastcgi-proxy.mjs [--net] PORT UNIX-SOCKET SCRIPT-FILENAME
 *
 * With --net it skips node:http too: a node:net server that splits requests
 * at the blank line, reads the request line and header lines with no checks
 * at all (GET without a body only, no chunked, no limits), and writes the
 * status line, headers and body in one socket.write: about the least any
 * front built on Node's net sockets can do, whatever its HTTP layer.
 *
 * It keeps 4 connections to the application open (FCGI_KEEP_CONN), sends
 * BEGIN_REQUEST, a CGI environment of the usual size (the fixed variables
 * plus one HTTP_* per request header) and an empty STDIN in one write,
 * collects STDOUT until END_REQUEST and answers with one res.end(). It has
 * none of what makes a proxy safe to run: no request bodies, no path
 * checks, no header validation, no timeouts, no streaming, no error pages.
 * Only hello.php through it is meaningful.
 */
import http from 'node:http';
import net from 'node:net';

const rawNet = process.argv[2] === '--net';
const [port, socketPath, scriptFilename] = process.argv.slice(rawNet ? 3 : 2);
const CONNECTIONS = 4;
const idle = [];
const waiting = [];
let opened = 0;

function record(type, content) {
  const padding = -content.length & 7;
  const out = Buffer.alloc(8 + content.length + padding);
  out[0] = 1;
  out[1] = type;
  out.writeUInt16BE(1, 2);
  out.writeUInt16BE(content.length, 4);
  out[6] = padding;
  content.copy(out, 8);
  return out;
}

function nameValue(name, value) {
  const lengths = [name.length, value.length].map((length) => {
    if (length < 128) return Buffer.from([length]);
    const four = Buffer.alloc(4);
    four.writeUInt32BE((length | 0x80000000) >>> 0);
    return four;
  });
  return Buffer.concat([...lengths, Buffer.from(name + value, 'latin1')]);
}

const BEGIN = record(1, Buffer.from([0, 1, 1, 0, 0, 0, 0, 0]));
const END_OF_PARAMS_AND_STDIN = Buffer.concat([record(4, Buffer.alloc(0)), record(5, Buffer.alloc(0))]);

function openConnection() {
  const socket = net.connect(socketPath);
  socket.unparsed = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    socket.unparsed = socket.unparsed.length ? Buffer.concat([socket.unparsed, chunk]) : chunk;
    while (socket.unparsed.length >= 8) {
      const length = socket.unparsed.readUInt16BE(4);
      const total = 8 + length + socket.unparsed[6];
      if (socket.unparsed.length < total) return;
      const type = socket.unparsed[1];
      if (type === 6 && length > 0) socket.stdout.push(socket.unparsed.subarray(8, 8 + length));
      socket.unparsed = socket.unparsed.subarray(total);
      if (type === 3) {
        const res = socket.res;
        socket.res = null;
        answer(res, Buffer.concat(socket.stdout));
        release(socket);
      }
    }
  });
  socket.on('error', (error) => console.error(`minimal proxy: ${error.message}`));
  return socket;
}

function answer(res, stdout) {
  const end = stdout.indexOf('\r\n\r\n');
  const body = stdout.subarray(end + 4);
  if (rawNet) {
    // res is the client's net.Socket here.
    let status = '200 OK';
    let head = '';
    for (const line of stdout.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon);
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === 'status') status = value;
      else head += `${name}: ${value}\r\n`;
    }
    res.write(
      `HTTP/1.1 ${status}\r\n${head}Content-Length: ${body.length}\r\nDate: ${new Date().toUTCString()}\r\n\r\n${body.toString('latin1')}`,
      'latin1',
    );
    return;
  }
  for (const line of stdout.subarray(0, end).toString('latin1').split('\r\n')) {
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === 'status') res.statusCode = parseInt(value, 10);
    else res.setHeader(name, value);
  }
  res.end(body);
}

function release(socket) {
  const next = waiting.shift();
  if (next) next(socket);
  else idle.push(socket);
}

function acquire(use) {
  const socket = idle.pop();
  if (socket) return use(socket);
  if (opened < CONNECTIONS) {
    opened++;
    return use(openConnection());
  }
  waiting.push(use);
}

/** Sends one request's BEGIN_REQUEST, PARAMS and empty STDIN; `res` gets the answer. */
function forward(res, { method, url, version, rawHeaders, local }) {
  acquire((socket) => {
    socket.res = res;
    socket.stdout = [];
    const pairs = [
      ['GATEWAY_INTERFACE', 'CGI/1.1'],
      ['SERVER_SOFTWARE', 'minimal'],
      ['SERVER_NAME', 'localhost'],
      ['SERVER_PROTOCOL', `HTTP/${version}`],
      ['SERVER_PORT', String(local.localPort)],
      ['SERVER_ADDR', local.localAddress],
      ['REMOTE_ADDR', local.remoteAddress],
      ['REMOTE_PORT', String(local.remotePort)],
      ['REQUEST_METHOD', method],
      ['REQUEST_URI', url],
      ['QUERY_STRING', ''],
      ['SCRIPT_NAME', '/hello.php'],
      ['SCRIPT_FILENAME', scriptFilename],
      ['DOCUMENT_ROOT', '/'],
      ['REQUEST_SCHEME', 'http'],
      ['PATH', '/usr/bin:/bin'],
    ];
    for (let index = 0; index < rawHeaders.length; index += 2) {
      pairs.push([`HTTP_${rawHeaders[index].toUpperCase().replaceAll('-', '_')}`, rawHeaders[index + 1]]);
    }
    const params = record(4, Buffer.concat(pairs.map(([name, value]) => nameValue(name, value))));
    socket.write(Buffer.concat([BEGIN, params, END_OF_PARAMS_AND_STDIN]));
  });
}

if (rawNet) {
  net
    .createServer((client) => {
      let unparsed = '';
      client.on('error', () => client.destroy());
      client.on('data', (chunk) => {
        unparsed += chunk.toString('latin1');
        let endOfHead;
        while ((endOfHead = unparsed.indexOf('\r\n\r\n')) !== -1) {
          const lines = unparsed.slice(0, endOfHead).split('\r\n');
          unparsed = unparsed.slice(endOfHead + 4);
          const [method, url, protocol] = lines[0].split(' ');
          const rawHeaders = [];
          for (const line of lines.slice(1)) {
            const colon = line.indexOf(':');
            rawHeaders.push(line.slice(0, colon), line.slice(colon + 1).trim());
          }
          forward(client, { method, url, version: protocol.slice('HTTP/'.length), rawHeaders, local: client });
        }
      });
    })
    .listen(Number(port), '127.0.0.1');
} else {
  http
    .createServer((req, res) =>
      forward(res, { method: req.method, url: req.url, version: req.httpVersion, rawHeaders: req.rawHeaders, local: req.socket }),
    )
    .listen(Number(port), '127.0.0.1');
}

process.on('SIGTERM', () => process.exit(0));

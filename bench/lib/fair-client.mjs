#!/usr/bin/env node
/**
 * A load client that also counts what wrk cannot see: requests still
 * unanswered when the run ends. wrk's latency figures (and its "timeout"
 * count) cover completed responses only, so a server that serves a few
 * connections quickly and leaves the others waiting looks good. This one
 * opens N kept-alive connections, each sending its next GET as soon as the
 * previous answer ends, for D seconds, then reports answered requests with
 * p50/p99/max, those that took longer than the limit, the connections that
 * got no answer at all, and the oldest request still waiting.
 *
 *   node bench/lib/fair-client.mjs URL CONNECTIONS SECONDS [LIMIT_MS=2000]   (prints one JSON line)
 */
import net from 'node:net';

const [url, connectionsText, secondsText, limitText = '2000'] = process.argv.slice(2);
const target = new URL(url);
const connections = Number(connectionsText);
const seconds = Number(secondsText);
const limitMs = Number(limitText);
const request = `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n\r\n`;
const latencies = [];
const waiting = new Set();
let answeredConnections = 0;
const ends = [];

for (let index = 0; index < connections; index++) {
  const socket = net.connect(Number(target.port), target.hostname);
  let sentAt = 0;
  let buffer = '';
  let answered = false;
  const send = () => {
    sentAt = performance.now();
    waiting.add(entry);
    socket.write(request);
  };
  const entry = { since: () => sentAt };
  socket.on('connect', send);
  socket.on('data', (chunk) => {
    buffer += chunk.toString('latin1');
    // The hello responses are small: a complete response is a head with Content-Length or a chunked body's end.
    for (;;) {
      const headEnd = buffer.indexOf('\r\n\r\n');
      if (headEnd === -1) return;
      const head = buffer.slice(0, headEnd);
      const length = /content-length: *(\d+)/i.exec(head);
      let end;
      if (length) end = headEnd + 4 + Number(length[1]);
      else {
        const last = buffer.indexOf('\r\n0\r\n\r\n', headEnd);
        if (last === -1) return;
        end = last + 7;
      }
      if (buffer.length < end) return;
      buffer = buffer.slice(end);
      latencies.push(performance.now() - sentAt);
      waiting.delete(entry);
      if (!answered) {
        answered = true;
        answeredConnections++;
      }
      if (!stopped) send();
    }
  });
  socket.on('error', () => waiting.delete(entry));
  ends.push(() => socket.destroy());
}

let stopped = false;
setTimeout(() => {
  stopped = true;
  const now = performance.now();
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
  let oldest = 0;
  let stillWaitingPastLimit = 0;
  for (const entry of waiting) {
    const age = now - entry.since();
    oldest = Math.max(oldest, age);
    if (age > limitMs) stillWaitingPastLimit++;
  }
  console.log(
    JSON.stringify({
      answered: sorted.length,
      perSecond: sorted.length / seconds,
      p50: at(0.5),
      p99: at(0.99),
      max: sorted.at(-1) ?? NaN,
      answeredPastLimit: sorted.filter((value) => value > limitMs).length,
      stillWaitingPastLimit,
      oldestWaiting: oldest,
      connectionsNeverAnswered: connections - answeredConnections,
    }),
  );
  for (const end of ends) end();
  process.exit(0);
}, seconds * 1000);

/**
 * The capability probe: FCGI_GET_VALUES on a connection of its own.
 *
 * Real applications answer it in different ways (checked against the Debian
 * programs): php-fpm 8.2 answers only FCGI_MPXS_CONNS=0 and leaves the
 * connection open; libfcgi programs and perl's FCGI module (which carries
 * libfcgi's code) leave this query (48 bytes, so no padding) unanswered until
 * another record follows it, so the probe sends a second, empty GET_VALUES
 * right behind the first; they report FCGI_MAX_CONNS=1 / FCGI_MAX_REQS=1 per
 * process. Other applications may never answer. So the probe runs beside the
 * first requests, never in front of them, gives up after a timeout, and no
 * answer means "one request per connection, no stated limits".
 */
import { RecordDecoder } from '../decoder.js';
import { decodeNameValuePairs } from '../name-value.js';
import { FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, RecordType } from '../protocol.js';
import { encodeParamsRecords, encodeRecord } from '../records.js';
import type { ResolvedAddress } from './address.js';
import net from 'node:net';

export interface UpstreamCapabilities {
  /** FCGI_MAX_CONNS, when the application stated it. */
  maxConns?: number;
  /** FCGI_MAX_REQS, when the application stated it. */
  maxReqs?: number;
  /** FCGI_MPXS_CONNS=1: several requests may share one connection. */
  multiplexes: boolean;
}

export interface Probe {
  /** The answer; null when the application did not answer within the timeout (or could not be reached). */
  result: Promise<UpstreamCapabilities | null>;
  /** Gives up at once (the client is closing): result resolves null. */
  cancel(): void;
}

/** Asks the application what it supports, on a connection of its own. */
export function probeCapabilities(address: ResolvedAddress, timeoutMs: number): Probe {
  let cancel = () => {};
  const result = new Promise<UpstreamCapabilities | null>((resolve) => {
    const socket = net.connect(address.connectOptions);
    const decoder = new RecordDecoder();
    let settled = false;
    const finish = (result: UpstreamCapabilities | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // Closing at once frees the application process that accepted us (php-fpm and libfcgi serve one connection at a time).
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish(null), timeoutMs);
    timer.unref();
    cancel = () => finish(null);
    socket.on('error', () => finish(null));
    socket.on('close', () => finish(null));
    socket.on('connect', () => {
      const query = encodeParamsRecords(RecordType.GET_VALUES, 0, [
        [FCGI_MAX_CONNS, ''],
        [FCGI_MAX_REQS, ''],
        [FCGI_MPXS_CONNS, ''],
      ]);
      socket.write(Buffer.concat([query, encodeRecord(RecordType.GET_VALUES, 0)]));
    });
    socket.on('data', (chunk: Buffer) => {
      const error = decoder.push(chunk, (record) => {
        if (record.requestId !== 0 || record.type !== RecordType.GET_VALUES_RESULT) return;
        const pairs = decodeNameValuePairs(record.content);
        if (pairs instanceof Error) return finish(null);
        finish(parseCapabilities(pairs.map(([name, value]) => [name.toString('latin1'), value.toString('latin1')])));
      });
      if (error) finish(null);
    });
  });
  return { result, cancel: () => cancel() };
}

export function parseCapabilities(pairs: Array<[string, string]>): UpstreamCapabilities {
  const result: UpstreamCapabilities = { multiplexes: false };
  for (const [name, value] of pairs) {
    const number = /^\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
    if (name === FCGI_MPXS_CONNS) result.multiplexes = number === 1;
    // Zero or garbage is no usable limit: ignore it rather than stop talking to the application.
    else if (name === FCGI_MAX_CONNS && number > 0) result.maxConns = number;
    else if (name === FCGI_MAX_REQS && number > 0) result.maxReqs = number;
  }
  return result;
}

/**
 * IP addresses to bytes for the sockets kfcgi binds itself: libc's
 * inet_pton(3) through src/sys, never a hand-written expander (the one it
 * replaces encoded ::ffff:127.0.0.1 as ::ffff:127 and took ::1g for ::1).
 * Checked against two parsers that are not glibc's: Node's net.isIP (libuv)
 * and the WHATWG URL parser's IPv6 serialisation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import { createListener, ipAddressBytes, normalizeAddress } from '../../src/sys/index.js';
import { ErrorCode, GatehouseError } from '../../src/errors.js';

const hex = (bytes: Uint8Array | undefined) => Buffer.from(bytes ?? []).toString('hex');
/** The eight groups of 16 bytes, uncompressed: trivially right, so a fair oracle. */
const fullForm = (bytes: Uint8Array) =>
  Array.from({ length: 8 }, (_, index) => ((bytes[index * 2]! << 8) | bytes[index * 2 + 1]!).toString(16)).join(':');

test('the IPv4-mapped form and the forms the old expander got wrong', () => {
  assert.equal(hex(ipAddressBytes('::ffff:127.0.0.1')?.bytes), '00000000000000000000ffff7f000001');
  assert.equal(hex(ipAddressBytes('::1')?.bytes), '00000000000000000000000000000001');
  assert.equal(hex(ipAddressBytes('::')?.bytes), '00000000000000000000000000000000');
  assert.equal(hex(ipAddressBytes('2001:db8::8:800:200c:417a')?.bytes), '20010db80000000000080800200c417a');
  assert.equal(hex(ipAddressBytes('127.0.0.1')?.bytes), '7f000001');
  for (const bad of ['::1g', '1::2::3', '1:2:3:4:5:6:7:8:9', ':::', '::ffff:1.2.3', 'fe80::1%eth0', '1.2.3', '0x7f.0.0.1', '256.0.0.1', ''])
    assert.equal(ipAddressBytes(bad), null, bad);
});

test('every IPv6 text form fast-check writes reads as the bytes its canonical and full forms read as', () => {
  fc.assert(
    fc.property(fc.ipV6(), (text) => {
      const parsed = ipAddressBytes(text);
      assert.ok(parsed, text);
      assert.equal(parsed.bytes.length, 16);
      const canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
      assert.equal(hex(ipAddressBytes(canonical)?.bytes), hex(parsed.bytes), `${text} vs URL's ${canonical}`);
      assert.equal(hex(ipAddressBytes(fullForm(parsed.bytes))?.bytes), hex(parsed.bytes), text);
    }),
    { numRuns: 500 },
  );
});

test('16 random bytes written out read back as themselves; normalizeAddress agrees with the peer format', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
      assert.equal(hex(ipAddressBytes(fullForm(bytes))?.bytes), hex(bytes));
      const mapped = bytes.subarray(0, 10).every((byte) => byte === 0) && bytes[10] === 0xff && bytes[11] === 0xff;
      assert.equal(normalizeAddress(fullForm(bytes)), mapped ? `::ffff:${[...bytes.subarray(12)].join('.')}` : fullForm(bytes));
    }),
    { numRuns: 500 },
  );
  assert.equal(normalizeAddress('::ffff:7f00:1'), '::ffff:127.0.0.1');
  assert.equal(normalizeAddress('::FFFF:127.0.0.1'), '::ffff:127.0.0.1');
  assert.equal(normalizeAddress('2001:DB8::1'), '2001:db8:0:0:0:0:0:1');
});

test('libc and Node agree on what is an address (Node also takes a zone index, which is not part of the address)', () => {
  const addressLike = fc.stringOf(fc.constantFrom(...'0123456789abcdefABCDEFg:.'), { maxLength: 45 });
  fc.assert(
    fc.property(fc.oneof(addressLike, fc.ipV6(), fc.ipV4(), fc.ipV4Extended()), (text) => {
      assert.equal(ipAddressBytes(text) !== null, net.isIP(text) !== 0, text);
    }),
    { numRuns: 2000 },
  );
});

test('a socket bound to ::ffff:127.0.0.1 accepts connections to 127.0.0.1; a bad host is an address error, not a system call failure', async () => {
  const fd = createListener({ kind: 'tcp', host: '::ffff:127.0.0.1', port: 0 }, { backlog: 8 });
  const server = net.createServer((socket) => socket.end('mapped\n'));
  try {
    await new Promise<void>((resolve) => server.listen({ fd }, resolve));
    const { port } = server.address() as net.AddressInfo;
    const reply = await new Promise<string>((resolve, reject) => {
      const client = net.connect(port, '127.0.0.1');
      let text = '';
      client.on('data', (chunk) => (text += chunk));
      client.on('end', () => resolve(text));
      client.on('error', reject);
    });
    assert.equal(reply, 'mapped\n');
  } finally {
    // The server owns the descriptor now: closing it closes the socket.
    await new Promise((resolve) => server.close(resolve));
  }
  for (const host of ['::1g', '1.2.3', 'fe80::1%eth0']) {
    assert.throws(
      () => createListener({ kind: 'tcp', host, port: 9 }, { backlog: 1 }),
      (error: unknown) => error instanceof GatehouseError && error.code === ErrorCode.ADDRESS_INVALID && error.message.includes(host),
      host,
    );
  }
  assert.throws(
    () => createListener({ kind: 'unix', path: `/tmp/${'x'.repeat(120)}` }, { backlog: 1 }),
    (error: unknown) => error instanceof GatehouseError && error.code === ErrorCode.ADDRESS_INVALID,
  );
});

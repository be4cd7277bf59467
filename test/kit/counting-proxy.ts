/** A unix-socket proxy in front of a FastCGI application that counts the connections it accepts (to prove reuse). */
import net from 'node:net';
import { join } from 'node:path';
import { tempDir, type Cleanup } from './process.js';

export async function countingProxy(t: Cleanup, target: string): Promise<{ path: string; address: string; accepted: () => number }> {
  const path = join(tempDir(t), 'proxy.sock');
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((downstream) => {
    accepted++;
    const upstream = net.connect(target);
    sockets.add(downstream).add(upstream);
    downstream.pipe(upstream).pipe(downstream);
    const close = () => {
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return { path, address: `unix:${path}`, accepted: () => accepted };
}

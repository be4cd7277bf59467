/**
 * A client that sends one request and then never reads the answer, with a
 * 4 KiB receive buffer (as issue 15's reproduction): the server's writes stop
 * after a few kilobytes, as they do for a stalled or hostile client on a real
 * network. Node cannot set SO_RCVBUF before connecting, so the client is a
 * small Perl program (Perl is one of the test dependencies); the test tells it
 * when to start reading at last (`drain`), which reads to the end and reports
 * how many bytes came before the server closed or reset the connection.
 */
import { createInterface } from 'node:readline';
import { requireProgram, startProcess, type Cleanup, type RunningProcess } from './process.js';

const PROGRAM = String.raw`
use strict; use warnings; use Socket;
$| = 1;
my ($port) = @ARGV;
socket(my $s, PF_INET, SOCK_STREAM, getprotobyname('tcp')) or die "socket: $!";
setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', 4096)) or die "setsockopt: $!";
connect($s, sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
my $request = $ENV{NON_READER_REQUEST};
defined(syswrite($s, $request)) or die "write: $!";
print "sent\n";
while (my $line = <STDIN>) {
  next unless $line =~ /^drain/;
  my ($total, $head, $tail, $buffer) = (0, '', '');
  while (1) {
    my $n = sysread($s, $buffer, 65536);
    last if !defined $n || $n == 0;
    $head .= substr($buffer, 0, 200) if length($head) < 200;
    $tail = substr($tail . $buffer, -16);
    $total += $n;
  }
  my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
  print "drained $total ", ($status // 0), " ", unpack('H*', $tail), "\n";
}
`;

export interface NonReader {
  process: RunningProcess;
  /**
   * Starts reading at last: resolves once the server closed, with the bytes received (head included), the
   * status, and the last 16 bytes (a chunked body ends in 0 CR LF CR LF).
   */
  drain(): Promise<{ bytes: number; status: number; tail: Buffer }>;
}

/** Opens the connection, sends `request` (a whole HTTP request) and resolves once it is written. */
export async function openNonReader(t: Cleanup, port: number, request: string): Promise<NonReader> {
  const perl = requireProgram('/usr/bin/perl');
  const running = startProcess(t, perl, ['-e', PROGRAM, String(port)], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, NON_READER_REQUEST: request },
  });
  const lines = createInterface({ input: running.child.stdout! });
  const queue: string[] = [];
  const waiters: Array<(line: string) => void> = [];
  lines.on('line', (line) => {
    const waiter = waiters.shift();
    if (waiter) waiter(line);
    else queue.push(line);
  });
  const nextLine = () =>
    new Promise<string>((resolve, reject) => {
      const queued = queue.shift();
      if (queued !== undefined) return resolve(queued);
      waiters.push(resolve);
      void running.exited.then(() => reject(new Error(`the non-reading client exited: ${running.output()}`)));
    });
  const first = await nextLine();
  if (first !== 'sent') throw new Error(`the non-reading client said ${first}: ${running.output()}`);
  return {
    process: running,
    async drain() {
      running.child.stdin!.write('drain\n');
      const line = await nextLine();
      const match = /^drained (\d+) (\d+) ([0-9a-f]*)$/.exec(line);
      if (!match) throw new Error(`the non-reading client said ${line}`);
      return { bytes: Number(match[1]), status: Number(match[2]), tail: Buffer.from(match[3]!, 'hex') };
    },
  };
}

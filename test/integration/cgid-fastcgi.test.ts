/**
 * `gatehouse cgid --fastcgi`: nginx runs CGI scripts through it with an
 * fcgiwrap configuration (shell and Perl, a POST body, a timeout, a 50 MB
 * response, stderr), and the FastCGI protocol side holds against a raw peer
 * (GET_VALUES, UNKNOWN_TYPE, keep-conn, ABORT_REQUEST killing the script,
 * malformed records survived).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeNameValuePairs } from '../../src/fastcgi/name-value.js';
import { encodeRecord } from '../../src/fastcgi/records.js';
import { RecordType } from '../../src/fastcgi/protocol.js';
import { startProcess, tempDir, waitForListener, type RunningProcess } from '../kit/process.js';
import { startNginx, type RunningNginx } from '../kit/nginx.js';
import { httpRequest } from '../kit/http.js';
import { CGI_FIXTURES, GATEHOUSE_MAIN } from '../kit/paths.js';
import { processExists } from '../kit/proc.js';
import { asRootOnPurpose } from '../kit/serve.js';
import { RawFastCGIPeer } from '../kit/raw-fastcgi.js';
import { CgidSupervisor } from '../../src/cgid/supervisor.js';
import { createFastCGIFace } from '../../src/cgid/fastcgi-face.js';
import { waitFor, waitForText, waitForValue } from '../kit/wait.js';

/** Waits on the raw peer: generous, since CI and this machine are shared (never a timing assertion). */
const SLOW_MACHINE = { timeoutMs: 20_000 };

interface Face {
  socket: string;
  root: string;
  process: RunningProcess;
  scriptLog: string;
}

async function startFace(t: TestContext, args: string[] = []): Promise<Face> {
  const dir = tempDir(t, 'gatehouse-cgid-fcgi-');
  const root = join(dir, 'www');
  cpSync(CGI_FIXTURES, join(root, 'cgi-bin'), { recursive: true });
  writeFileSync(
    join(root, 'cgi-bin', 'pid.sh'),
    '#!/bin/sh\necho "started $$" >&2\nprintf "Content-Type: text/plain\\n\\npid %s\\n" "$$"\nsleep 30\n',
  );
  chmodSync(join(root, 'cgi-bin', 'pid.sh'), 0o755);
  const socket = join(dir, 'cgid.sock');
  const scriptLog = join(dir, 'script.log');
  const proc = startProcess(t, process.execPath, [
    GATEHOUSE_MAIN,
    ...asRootOnPurpose(['cgid', '--fastcgi', `unix:${socket}`, '--script-log', scriptLog, ...args]),
  ]);
  await waitForListener({ path: socket }, { what: 'gatehouse cgid --fastcgi', process: proc, timeoutMs: 20_000 });
  return { socket, root, process: proc, scriptLog };
}

/** The location block from fcgiwrap's documentation, pointed at gatehouse. */
async function nginxFor(t: TestContext, face: Face): Promise<RunningNginx> {
  return startNginx(t, {
    serverBlock: `
      location /cgi-bin/ {
        root ${face.root};
        fastcgi_pass unix:${face.socket};
        include /etc/nginx/fastcgi_params;
        fastcgi_param SCRIPT_FILENAME ${face.root}$fastcgi_script_name;
        fastcgi_read_timeout 30s;
        fastcgi_buffering off;
      }
      # No SCRIPT_FILENAME here: DOCUMENT_ROOT + SCRIPT_NAME name the script.
      location /plain/ {
        root ${face.root};
        rewrite ^/plain/(.*)$ /cgi-bin/$1 break;
        fastcgi_pass unix:${face.socket};
        include /etc/nginx/fastcgi_params;
      }
    `,
  });
}

test('nginx runs CGI scripts through gatehouse cgid --fastcgi with an fcgiwrap configuration', async (t) => {
  const face = await startFace(t, ['--script-timeout', '1s']);
  const nginx = await nginxFor(t, face);

  await t.test('the socket is not open to other users (fcgiwrap defaults to 0666)', () => {
    assert.equal(statSync(face.socket).mode & 0o007, 0);
  });

  await t.test('a shell script sees the request in its environment', async () => {
    const response = await httpRequest(`${nginx.url}/cgi-bin/env.sh?x=1`, { headers: { 'X-Probe': 'nginx' } });
    assert.equal(response.status, 200);
    const body = response.body.toString();
    assert.match(body, /^QUERY_STRING=x=1$/m);
    assert.match(body, /^HTTP_X_PROBE=nginx$/m);
    assert.match(body, new RegExp(`^SCRIPT_FILENAME=${face.root}/cgi-bin/env.sh$`, 'm'));
  });

  await t.test('a Perl script', async () => {
    const response = await httpRequest(`${nginx.url}/cgi-bin/env.pl`);
    assert.equal(response.status, 200);
    assert.match(response.body.toString(), /REQUEST_METHOD/);
  });

  await t.test('without SCRIPT_FILENAME the script is DOCUMENT_ROOT + SCRIPT_NAME', async () => {
    const response = await httpRequest(`${nginx.url}/plain/env.sh`);
    assert.equal(response.status, 200);
    assert.match(response.body.toString(), /^SCRIPT_NAME=\/cgi-bin\/env.sh$/m);
  });

  await t.test('a POST body reaches the script whole', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const response = await httpRequest(`${nginx.url}/cgi-bin/echo.sh`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers['x-content-length'], String(body.length));
    assert.ok(response.body.equals(body));
  });

  await t.test('a 50 MB response', async () => {
    const response = await httpRequest(`${nginx.url}/cgi-bin/big.sh`);
    assert.equal(response.status, 200);
    assert.equal(response.body.length, 52_428_800);
  });

  await t.test('a script silent past the timeout is killed and answered 504', async () => {
    const response = await httpRequest(`${nginx.url}/cgi-bin/hang.sh`);
    assert.equal(response.status, 504);
    // hang.sh's stderr reaches nginx as FCGI_STDERR.
    const log = await waitForText(nginx.errorLog, /script \d+ grandchild \d+/, "hang.sh's pids in nginx's error log");
    const match = /script (\d+) grandchild (\d+)/.exec(log)!;
    const [script, grandchild] = [Number(match[1]), Number(match[2])];
    await waitFor(() => !processExists(script) && !processExists(grandchild), 'the script and its grandchild to be killed with the group');
    await waitForText(face.scriptLog, /%% 504 .*hang\.sh/, 'the 504 in the script log');
  });

  await t.test('stderr goes to nginx as FCGI_STDERR', async () => {
    const response = await httpRequest(`${nginx.url}/cgi-bin/error-status.sh`);
    assert.equal(response.status, 503);
    await waitForText(
      nginx.errorLog,
      /FastCGI sent in stderr: "error-status\.sh: database unreachable/,
      "the script's stderr in nginx's error log",
    );
  });

  await t.test('a missing script is 404, a non-executable one 403', async () => {
    assert.equal((await httpRequest(`${nginx.url}/cgi-bin/none.sh`)).status, 404);
    assert.equal((await httpRequest(`${nginx.url}/cgi-bin/not-executable.sh`)).status, 403);
  });
});

function params(face: Face, script: string): Record<string, string> {
  return {
    SCRIPT_FILENAME: join(face.root, 'cgi-bin', script),
    REQUEST_METHOD: 'GET',
    SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_URI: `/cgi-bin/${script}`,
    QUERY_STRING: '',
  };
}

test('the FastCGI protocol side: GET_VALUES, UNKNOWN_TYPE, keep-conn, ABORT_REQUEST, malformed records', async (t) => {
  const face = await startFace(t);

  await t.test('GET_VALUES is answered and an unknown type gets UNKNOWN_TYPE', async () => {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.write(encodeRecord(RecordType.GET_VALUES, 0, encodeNameValuePairs([[Buffer.from('FCGI_MPXS_CONNS'), Buffer.alloc(0)]])));
    peer.write(encodeRecord(42, 0, Buffer.alloc(0)));
    const records = await peer.waitForRecords(
      (all) => all.some((r) => r.type === RecordType.GET_VALUES_RESULT) && all.some((r) => r.type === RecordType.UNKNOWN_TYPE),
      'GET_VALUES_RESULT and UNKNOWN_TYPE',
      SLOW_MACHINE,
    );
    const unknown = records.find((r) => r.type === RecordType.UNKNOWN_TYPE)!;
    assert.equal(unknown.content[0], 42);
  });

  await t.test('two requests on one kept connection', async () => {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.sendRequest(1, params(face, 'env.sh'), { keepConn: true });
    await peer.waitForEnd(1, SLOW_MACHINE);
    peer.sendRequest(2, params(face, 'env.sh'), { keepConn: true });
    await peer.waitForEnd(2, SLOW_MACHINE);
    assert.match(peer.stdout(2).toString(), /SCRIPT_FILENAME=/);
    assert.equal(peer.closed, false);
  });

  await t.test('ABORT_REQUEST kills the script group', async () => {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.sendRequest(1, params(face, 'pid.sh'), { keepConn: true });
    await peer.waitForRecords(() => /pid \d+/.test(peer.stdout(1).toString()), "the script's pid on STDOUT", SLOW_MACHINE);
    const pid = Number(/pid (\d+)/.exec(peer.stdout(1).toString())![1]);
    assert.ok(existsSync(`/proc/${pid}`));
    peer.write(encodeRecord(RecordType.ABORT_REQUEST, 1, Buffer.alloc(0)));
    await peer.waitForEnd(1, SLOW_MACHINE);
    await waitFor(() => !processExists(pid), 'the aborted script to be killed');
  });

  await t.test('a malformed record closes that connection only; the face keeps serving', async () => {
    const bad = await RawFastCGIPeer.connect({ path: face.socket });
    bad.write(Buffer.from([9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]));
    await bad.waitForClose(SLOW_MACHINE);
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.sendRequest(1, params(face, 'env.sh'));
    const end = await peer.waitForEnd(1, SLOW_MACHINE);
    assert.equal(end.content.readUInt32BE(0), 0);
  });
});

test('errors are bare status pages, as fcgiwrap answers: no path or parser detail reaches the client (the log has them)', async (t) => {
  const face = await startFace(t);
  const pages: Array<[string, number]> = [
    ['none.sh', 404],
    ['not-executable.sh', 403],
    ['malformed.sh', 500],
  ];
  for (const [script, status] of pages) {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.sendRequest(1, params(face, script));
    await peer.waitForEnd(1, SLOW_MACHINE);
    const answer = peer.stdout(1).toString('latin1');
    assert.match(answer, new RegExp(`^Status: ${status} `), script);
    assert.match(answer, new RegExp(`\r\n\r\n${status} [A-Za-z ]+\n$`), `${script}: ${JSON.stringify(answer)}`);
    assert.ok(!answer.includes(face.root) && !answer.includes('Bad header') && !answer.includes('not a header'), `${script}: ${answer}`);
  }
  // The details went to the log instead.
  const log = await waitForValue(
    () => face.process.output(),
    (text) => /malformed header from script .*malformed\.sh/.test(text),
    'the malformed head logged',
  );
  assert.match(log, /refused GET \/cgi-bin\/none\.sh: script .*none\.sh not found/);
  // The script log entry of the malformed head is the last thing the face writes for these requests.
  await waitFor(
    () => existsSync(face.scriptLog) && readFileSync(face.scriptLog, 'utf8').includes('malformed.sh'),
    "malformed.sh's script-log entry",
  );
});

test('regression: a cgid daemon that is down is answered 503 with Retry-After by the FastCGI face too (it answered 500)', async (t) => {
  const dir = tempDir(t, 'gatehouse-face-daemon-down-');
  const lines: string[] = [];
  const supervisor = new CgidSupervisor({ socketPath: join(dir, 'cgisock'), log: (line) => lines.push(line) });
  await supervisor.start();
  // Stopped: orders cannot reach a daemon (what requests meet while one is being restarted).
  await supervisor.stop();
  const server = createFastCGIFace({ spawner: supervisor, log: (line) => lines.push(line) });
  const socket = join(dir, 'face.sock');
  await new Promise<void>((resolve) => server.listen(socket, () => resolve()));
  t.after(() => server.close());
  const peer = await RawFastCGIPeer.connect({ path: socket });
  t.after(() => peer.close());
  peer.sendRequest(1, {
    SCRIPT_FILENAME: join(CGI_FIXTURES, 'env.sh'),
    REQUEST_METHOD: 'GET',
    SERVER_PROTOCOL: 'HTTP/1.1',
    REQUEST_URI: '/cgi-bin/env.sh',
  });
  await peer.waitForEnd(1, SLOW_MACHINE);
  const answer = peer.stdout(1).toString('latin1');
  assert.match(answer, /^Status: 503 /);
  assert.match(answer, /\r\nRetry-After: 1\r\n/i);
  assert.ok(
    lines.some((line) => /cgid daemon is not running/.test(line)),
    lines.join('\n'),
  );
});

test('output streams to nginx as the script writes it', async (t) => {
  const face = await startFace(t);
  const nginx = await nginxFor(t, face);
  const lines: number[] = [];
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    import('node:http').then(({ default: http }) => {
      http
        .get(`${nginx.url}/cgi-bin/stream.sh`, { agent: false }, (res) => {
          res.on('data', () => lines.push(Date.now() - started));
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    }, reject);
  });
  // stream.sh writes a line every 100 ms: the body arrives in more than one piece, not all at the end.
  assert.ok(lines.length >= 2, `the body came in ${lines.length} piece(s)`);
});

test('X-Accel-Buffering: no from a script is passed on, so nginx streams it where it buffers FastCGI responses', async (t) => {
  const face = await startFace(t);
  const go = join(face.root, 'go');
  // An event stream: the first event, then nothing until the test has seen it (bounded: 20 s, then it ends anyway).
  const script = join(face.root, 'cgi-bin', 'events.sh');
  writeFileSync(
    script,
    `#!/bin/sh
printf 'Content-Type: text/event-stream\\nX-Accel-Buffering: no\\n\\n'
printf 'data: first\\n\\n'
i=0
while [ ! -e ${go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
printf 'data: last\\n\\n'
`,
  );
  chmodSync(script, 0o755);

  await t.test('the face passes the header on to the web server, and the first event before the script ends', async () => {
    const peer = await RawFastCGIPeer.connect({ path: face.socket });
    t.after(() => peer.close());
    peer.sendRequest(1, params(face, 'events.sh'));
    await peer.waitForRecords(() => /data: first/.test(peer.stdout(1).toString()), 'the first event on STDOUT', SLOW_MACHINE);
    const sofar = peer.stdout(1).toString('latin1');
    assert.match(sofar, /\r\nX-Accel-Buffering: no\r\n/i, sofar);
    assert.doesNotMatch(sofar, /data: last/);
    writeFileSync(go, '');
    await peer.waitForEnd(1, SLOW_MACHINE);
    assert.match(peer.stdout(1).toString(), /data: last/);
  });
  rmSync(go, { force: true });

  await t.test('nginx with its default fastcgi_buffering streams it, and does not pass the header on', async () => {
    const nginx = await startNginx(t, {
      serverBlock: `
        location /cgi-bin/ {
          root ${face.root};
          fastcgi_pass unix:${face.socket};
          include /etc/nginx/fastcgi_params;
          fastcgi_param SCRIPT_FILENAME ${face.root}$fastcgi_script_name;
        }
      `,
    });
    const { default: http } = await import('node:http');
    const chunks: Buffer[] = [];
    let headers: Record<string, unknown> = {};
    const ended = new Promise<void>((resolve, reject) => {
      http
        .get(`${nginx.url}/cgi-bin/events.sh`, { agent: false }, (res) => {
          headers = res.headers;
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', resolve);
          res.on('error', reject);
        })
        .on('error', reject);
    });
    // Buffered, the first event would come only with the last one, when the script gives up waiting.
    const first = await waitForValue(
      () => Buffer.concat(chunks).toString(),
      (text) => text.length > 0,
      'the first event through nginx',
      SLOW_MACHINE,
    );
    assert.match(first, /^data: first\n\n$/);
    writeFileSync(go, '');
    await ended;
    assert.equal(Buffer.concat(chunks).toString(), 'data: first\n\ndata: last\n\n');
    assert.equal(headers['content-type'], 'text/event-stream');
    assert.equal(headers['x-accel-buffering'], undefined);
  });
});

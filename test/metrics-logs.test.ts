// Logs (JSON lines on stdout, pino): the access log (log.access = true: one flat line per HTTP request /
// TCP connection), the daemon's lifecycle lines, and admin actions with who sent them (the admin socket
// peer's uid and pid, src/admin/peer.ts).

import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import { admin, backends, cli, freePort, get, startLb, startUpstream, waitFor, withStateFile } from './helpers/lb.js';
import { pino } from 'pino';
import { parsePeer, peerOf } from '../src/admin/peer.js';
import { accessLog, BATCH_BYTES, flushAccess } from '../src/log.js';
import type { RequestRecord } from '../src/dataplane/events.js';

function config(port: number, tcpPort: number, ups: Array<{ name: string; port: number }>, deadPort: number, extra = ''): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
access = true
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[[listeners.web.routes]]
path_prefix = "/dead/"
pool = "dead"
[listeners.raw]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "app"
[pools.app]
algorithm = "round-robin"
retries = 0
backends = ${backends(ups)}
[pools.dead]
retries = 0
backends = ${backends([{ name: 'gone', port: deadPort }])}
${extra}`;
}

t.test('log.access = true: N requests give N flat access lines with the right fields', async (t) => {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const [port, tcpPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  // Only the http port is probed for readiness: a probe connection to the tcp listener is a proxied
  // connection with its own access line. Both listeners open in the same config apply.
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: a.port }, { name: 'b', port: b.port }], deadPort), [port]);
  t.teardown(() => lb.stop());

  const N = 40;
  for (let i = 0; i < N; i++) {
    const r = await get(port, `/item/${i}?q=${i}`);
    if (r.status !== 200) t.fail(`request ${i}: ${r.status}`);
  }
  t.pass(`${N} requests answered 200`);
  const dead = await get(port, '/dead/x');
  t.equal(dead.status, 502, 'a request to a backend that refuses connections');
  // Two TCP connections through the tcp listener (the upstream speaks HTTP; any bytes will do).
  for (let i = 0; i < 2; i++) {
    const got = await new Promise<number>((resolve, reject) => {
      let n = 0;
      const c = net.connect(tcpPort, '127.0.0.1', () => c.end('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      c.on('data', (d: Buffer) => (n += d.length));
      c.once('close', () => resolve(n));
      c.once('error', reject);
    });
    t.ok(got > 0, `tcp connection ${i + 1} got an answer (${got} bytes)`);
  }
  const lines = (): Array<Record<string, unknown>> => lb.logs().filter((l) => l.msg === 'access');
  const deadline = Date.now() + 5_000;
  while (lines().length < N + 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const all = lines();
  const http = all.filter((l) => l.kind === 'http' && l.pool === 'app');
  t.equal(http.length, N, `${N} http access lines for ${N} requests`);
  t.equal(all.length, N + 3, 'plus one for the 502 and one per tcp connection, nothing else');

  const first = http.find((l) => l.path === '/item/1?q=1')!;
  t.ok(first, 'the line for GET /item/1?q=1');
  t.match(first, {
    level: 'info',
    pid: Number,
    role: 'worker',
    kind: 'http',
    listener: 'web',
    pool: 'app',
    backend: /^(a|b)$/,
    status: 200,
    method: 'GET',
    path: '/item/1?q=1',
    client: '127.0.0.1',
    bytes_in: 0,
    bytes_out: 1,
    retries: 0,
  });
  t.type(first.duration_ms, 'number');
  t.ok((first.duration_ms as number) >= 0 && (first.duration_ms as number) < 5_000, `duration_ms ${first.duration_ms}`);
  t.type(first.worker, 'number', 'which worker served it');
  t.notOk('error' in first, 'no error field on success');
  t.notOk('access' in first, 'flat: no nested object');
  t.same(
    http.map((l) => l.path).sort(),
    Array.from({ length: N }, (_, i) => `/item/${i}?q=${i}`).sort(),
    'one line per request, each with its own path',
  );
  const e = all.find((l) => l.pool === 'dead')!;
  t.match(e, { kind: 'http', listener: 'web', status: 502, backend: 'gone', error: /ECONNREFUSED|refused|failed/ }, `the 502 line carries the error (${e?.error})`);
  const tcp = all.filter((l) => l.kind === 'tcp');
  t.equal(tcp.length, 2, `one line per tcp connection (${JSON.stringify(all.filter((l) => l.kind !== 'http'))})`);
  t.match(tcp[0], { listener: 'raw', pool: 'app', backend: /^(a|b)$/, status: 0, client: '127.0.0.1', retries: 0 });
  t.ok(tcp.every((l) => (l.bytes_in as number) > 0 && (l.bytes_out as number) > 0), `tcp bytes both ways (${JSON.stringify(tcp)})`);
  t.notOk('method' in tcp[0]! || 'path' in tcp[0]!, 'no method/path on tcp lines');
});

t.test('requests with a body get their access line and are counted', async (t) => {
  const a = await startUpstream('a');
  t.teardown(() => a.close());
  const [port, tcpPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: a.port }], deadPort), [port]);
  t.teardown(() => lb.stop());
  const r = await get(port, '/post', { method: 'POST', body: 'x'.repeat(9) });
  t.equal(r.status, 200);
  const deadline = Date.now() + 2_000;
  let line: Record<string, unknown> | undefined;
  while (!line && Date.now() < deadline) {
    line = lb.logs().find((l) => l.msg === 'access' && l.path === '/post');
    await new Promise((res) => setTimeout(res, 20));
  }
  t.match(line, { method: 'POST', status: 200 }, 'a POST has its access line');
  t.match(line, { bytes_in: 9 }, 'with its body bytes in bytes_in');
});

t.test('lifecycle and admin lines: start, listeners, workers, reload changes, drain/ready/weight with the peer uid and pid', async (t) => {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const [port, tcpPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  const ups = [{ name: 'a', port: a.port }, { name: 'b', port: b.port }];
  const lb = await startLb(config(port, tcpPort, ups, deadPort), [port, tcpPort]);
  let stopped = false;
  t.teardown(() => (stopped ? undefined : lb.stop()));
  const logs = (msg: string): Array<Record<string, unknown>> => lb.logs().filter((l) => l.msg === msg);
  // stdout and the admin socket are different pipes: a line can arrive just after the answer.
  const line = (msg: string, n = 1): Promise<Record<string, unknown>> => waitFor(() => logs(msg)[n - 1], 3_000, `log line ${JSON.stringify(msg)} #${n}`);

  const started = logs('lb started')[0]!;
  t.match(started, { role: 'primary', workers: 2, listeners: [{ name: 'web', protocol: 'http', listen: `127.0.0.1:${port}` }, { name: 'raw', protocol: 'tcp' }] }, 'lb started names the listeners');
  t.equal(logs('worker started').length, 2, 'a line per worker spawned');
  t.ok(logs('worker started').every((l) => typeof l.workerPid === 'number'), 'with its pid');

  const me = { uid: process.getuid!(), pid: process.pid };
  // From this process over the admin socket: the daemon must name us.
  t.equal((await admin(lb.socket, { cmd: 'drain', pool: 'app', backend: 'a' })).ok, true);
  t.equal((await admin(lb.socket, { cmd: 'weight', pool: 'app', backend: 'b', weight: 0 })).ok, true, 'weight 0: valid under round-robin');
  t.match(await line('admin: drain'), { pool: 'app', backend: 'a', admin: 'drain', by: me }, 'drain logged with our uid and pid');
  t.match(await line('admin: weight'), { pool: 'app', backend: 'b', weight: 0, before: 1, by: me }, 'weight logged with our uid and pid');
  // Through the CLI (another process): its uid, and a pid that is neither ours nor the daemon's.
  const r = await cli(['ready', 'app/a', '-s', lb.socket]);
  t.equal(r.code, 0, r.stderr);
  const ready = await line('admin: ready');
  const by = ready.by as { uid: number; pid: number };
  t.equal(by.uid, me.uid, 'ready: the CLI process uid');
  t.ok(typeof by.pid === 'number' && by.pid !== process.pid && by.pid !== lb.proc.pid, `ready: the CLI process pid (${by.pid})`);
  // Reads are not attributed (no lookup on status).
  t.equal((await admin(lb.socket, { cmd: 'status' })).ok, true);

  // Reload: what changed and who asked.
  fs.writeFileSync(lb.configFile, withStateFile(config(port, tcpPort, [...ups.slice(0, 1), { name: 'b', port: b.port }], deadPort).replace('algorithm = "round-robin"', 'algorithm = "least-connections"').replaceAll('{{socket}}', lb.socket), lb.dir));
  t.equal((await admin(lb.socket, { cmd: 'reload' })).ok, true);
  t.match(await line('config reloaded'), { source: 'admin', by: me, changes: ['pool app: algorithm round-robin -> least-connections'] }, 'reload logged with what changed and who');
  fs.writeFileSync(lb.configFile, 'this is = = not toml');
  t.equal((await admin(lb.socket, { cmd: 'reload' })).ok, false);
  const refused = await waitFor(() => lb.logs().find((l) => typeof l.msg === 'string' && (l.msg as string).startsWith('reload refused')), 3_000, 'reload refused line');
  t.match(refused, { level: 'warn', source: 'admin', by: me }, 'a refused reload is logged with who');
  t.ok(Array.isArray(refused.issues) && (refused.issues as string[]).length > 0, 'and why');

  stopped = true;
  t.equal(await lb.stop(), 0);
  t.ok(logs('stopping: no new connections; in-flight work finishes').length === 1, 'stop begins');
  t.equal(logs('worker exited').length, 2, 'each worker exit logged');
  t.equal(logs('lb stopped').length, 1, 'lb stopped');
  // Every stdout line is JSON with level, time and msg.
  const raw = lb.stdout().split('\n').filter((l) => l !== '');
  t.ok(raw.every((l) => l.startsWith('{')), 'stdout is JSON lines only');
  t.ok(lb.logs().every((l) => typeof l.level === 'string' && typeof l.time === 'string' && typeof l.msg === 'string'), 'each with level, time, msg');
});

t.test('admin peer lookup: parsing ss output, and the peer of a local connection', async (t) => {
  const ss = [
    'u_str ESTAB 0      0      /run/lb/admin.sock 202609 * 202608',
    'u_str ESTAB 0      0      /tmp/with space/admin.sock 202611 * 202610',
    'u_str LISTEN 0      128    /run/lb/admin.sock 202607 * 0',
  ].join('\n');
  t.equal(parsePeer(ss, 202609), 202608);
  t.equal(parsePeer(ss, 202611), 202610, 'a path with a space');
  t.equal(parsePeer(ss, 202607), undefined, 'a listening socket has no peer');
  t.equal(parsePeer('', 1), undefined);

  // A server in this process, a client in a child process: the lookup must name the child.
  const dir = fs.mkdtempSync('/tmp/lb-peer-');
  const path = `${dir}/s.sock`;
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const { spawn } = await import('node:child_process');
  const child = spawn(process.execPath, ['-e', `const c=require('net').connect(${JSON.stringify(path)});setTimeout(()=>c.end(),5000)`], { stdio: 'ignore' });
  t.teardown(() => child.kill());
  const sock = await accepted;
  const t0 = performance.now();
  const peer = await peerOf(sock, path);
  const ms = performance.now() - t0;
  t.same(peer, { pid: child.pid, uid: process.getuid!() }, `peer of the accepted connection is the child (${Math.round(ms)}ms)`);
  t.ok(ms < 600, 'bounded');
  sock.destroy();
});

t.test('accessLog builds valid JSON lines equal to what pino would write, whatever the strings hold', async (t) => {
  const lines: string[] = [];
  const opts = { level: 'info', base: { pid: 42, role: 'worker', worker: 3 }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label: string) => ({ level: label }) } };
  const logger = pino(opts, { write: (s: string) => void lines.push(s) });
  const base: RequestRecord = { kind: 'http', listener: 'web', pool: 'app', backend: 'a', status: 200, method: 'GET', path: '/', client: '127.0.0.1', bytesIn: 0, bytesOut: 5, seconds: 0.0012345, retries: 0 };
  const records: RequestRecord[] = [
    base,
    { ...base, path: '/q?a="x"&b=\\back\\slash', error: 'connect: ECONNREFUSED' },
    { ...base, path: '/caf\u00e9/\u{1F600}/\u2028', method: 'PATCH', client: '::ffff:10.0.0.1' },
    { ...base, path: '/ctl\u0001\u001f\t\n', backend: '', status: 503, error: 'no usable backend' },
    { ...base, path: '/lone\ud800surrogate' },
    { ...base, path: '/' + 'x'.repeat(5000) },
    { ...base, kind: 'tcp', method: '', path: '', status: 0, bytesIn: 100, bytesOut: 2000, seconds: 12.5, retries: 2 },
    { ...base, kind: 'websocket', status: 101, seconds: 0 },
  ];
  for (const r of records) accessLog(logger, r);
  flushAccess();
  // Lines are written in batches of whole lines, each batch under BATCH_BYTES unless one line is longer.
  t.ok(lines.every((b) => b.endsWith('\n') && (b.length <= BATCH_BYTES || b.split('\n').length === 2)), 'batches of whole lines within the batch size');
  t.ok(lines.length < records.length, `${records.length} lines in ${lines.length} writes`);
  const all = lines.join('').split('\n').slice(0, -1).map((l) => l + '\n');
  t.equal(all.length, records.length, 'one line each');
  records.forEach((r, i) => {
    const line = all[i]!;
    t.ok(line.endsWith('}\n') && /^[\x20-\x7e]*\n$/.test(line), `line ${i} is one line of printable ASCII`);
    const got = JSON.parse(line) as Record<string, unknown>;
    const want: Record<string, unknown> = {
      level: 'info',
      pid: 42,
      role: 'worker',
      worker: 3,
      kind: r.kind,
      listener: r.listener,
      pool: r.pool,
      backend: r.backend,
      status: r.status,
      ...(r.kind === 'tcp' ? {} : { method: r.method, path: r.path }),
      client: r.client,
      bytes_in: r.bytesIn,
      bytes_out: r.bytesOut,
      duration_ms: Math.round(r.seconds * 1e6) / 1e3,
      retries: r.retries,
      ...(r.error !== undefined ? { error: r.error } : {}),
      msg: 'access',
    };
    t.match(got.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'ISO time');
    delete got.time;
    t.same(got, want, `record ${i} round-trips (${JSON.stringify(r.path.slice(0, 30)).replace(/[^\x20-\x7e]/g, "?")})`);
    t.same(Object.keys(got), Object.keys(want), 'fields in the documented order');
  });
  const writes = lines.length;
  const quiet = pino({ ...opts, level: 'warn' }, { write: (s: string) => void lines.push(s) });
  accessLog(quiet, base);
  flushAccess();
  t.equal(lines.length, writes, 'a logger above info drops access lines');

  // Unflushed lines go out within FLUSH_MS on their own.
  lines.length = 0;
  accessLog(logger, base);
  t.equal(lines.length, 0, 'buffered');
  await new Promise((r) => setTimeout(r, 250));
  t.equal(lines.length, 1, 'written by the flush timer');
});

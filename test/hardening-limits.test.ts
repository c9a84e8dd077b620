// Limits and slow clients on an http listener: client_header_timeout, client_body_timeout, idle_timeout,
// max_connections, max_header_size and the header-field count, and 1000 slowloris connections that must neither starve a
// normal client nor outlive client_header_timeout; and a backend's max_connections (http and tcp).

import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { lbConfig, rawExchange, startRecordingUpstream, timedGet } from './helpers/hardening.js';
import { admin, freePort, httpConfig, startLb, startUpstream, waitFor } from './helpers/lb.js';

/** The soft RLIMIT_NOFILE of this process (the lb daemon inherits it). */
function fdLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

interface Held {
  socket: net.Socket;
  opened: number;
  closedAt?: number;
  got: string;
}

/** Opens a connection that sends `first` and keeps it open; records when and how the server closes it. */
function hold(port: number, first: string): Promise<Held> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const h: Held = { socket, opened: 0, got: '' };
    socket.on('data', (d: Buffer) => (h.got += d.toString('latin1')));
    socket.on('error', () => {});
    socket.once('close', () => (h.closedAt = performance.now()));
    socket.once('connect', () => {
      h.opened = performance.now();
      if (first) socket.write(first);
      resolve(h);
    });
    socket.once('error', reject);
  });
}

t.test('client_header_timeout: a slow or silent client gets 408 and is closed on time', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'client_header_timeout = "1s"' }), [port]);
  t.teardown(() => lb.stop());
  const partial = await hold(port, 'GET /slow HTTP/1.1\r\nHost: h\r\n');
  const silent = await hold(port, '');
  // Keep the partial one trickling, as slowloris does: bytes arriving must not extend the deadline.
  const trickle = setInterval(() => partial.socket.writable && partial.socket.write('X-A: b\r\n'), 200);
  await waitFor(() => partial.closedAt && silent.closedAt, 6000, 'both connections to be closed');
  clearInterval(trickle);
  for (const [name, h] of [['partial head', partial], ['silent', silent]] as const) {
    const ms = h.closedAt! - h.opened;
    t.ok(ms >= 900 && ms < 2500, `${name}: closed after ${Math.round(ms)}ms (timeout 1s)`);
    t.match(h.got, /^HTTP\/1\.1 408 /, `${name}: answered 408`);
  }
  t.equal(up.connections.length, 0, 'the upstream saw nothing');
});

t.test('client_body_timeout: a client that stops sending its body gets 408 and is closed; a slow steady one is served', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  // max_failures = 1: a stalled client blamed on the backend would eject it.
  const pool = '[pools.app.passive]\nmax_failures = 1\neject_for = "60s"';
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'client_body_timeout = "500ms"', extra: pool }), [port]);
  t.teardown(() => lb.stop());
  const stalled = await hold(port, 'POST /stalled HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789');
  const chunked = await hold(port, 'POST /stalled-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
  // 10 bytes every 200 ms for 2 s: never 500 ms without a byte, so it must pass whole.
  const steady = await hold(port, 'POST /steady HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\nConnection: close\r\n\r\n');
  let sent = 0;
  const trickle = setInterval(() => {
    if (sent < 100 && steady.socket.writable) {
      steady.socket.write('x'.repeat(10));
      sent += 10;
    }
  }, 200);
  t.teardown(() => clearInterval(trickle));
  await waitFor(() => stalled.closedAt && chunked.closedAt && steady.closedAt, 8000, 'the three connections to be closed');
  for (const [name, h] of [['content-length body', stalled], ['chunked body', chunked]] as const) {
    const ms = h.closedAt! - h.opened;
    t.ok(ms >= 450 && ms < 2000, `${name}: closed after ${Math.round(ms)}ms (client_body_timeout 500ms)`);
    t.match(h.got, /^HTTP\/1\.1 408 [^]*no request body bytes for 500ms/, `${name}: answered 408 with the reason`);
  }
  t.match(steady.got, /^HTTP\/1\.1 200 [^]*"path":"\/steady","proto":"http","bytes":100/, 'the steady upload reached the backend whole');
  t.notOk(up.requests.some((q) => q.path.startsWith('/stalled')), 'the backend never saw a complete stalled request');
  const status = await admin(lb.socket, { cmd: 'status' });
  t.equal(status.result.pools[0].backends[0].state, 'up', 'stalled clients were not counted as backend failures');
});

t.test('client_body_timeout does not count time lb spends waiting for a slow backend to take the body', async (t) => {
  // The backend reads nothing for 1.5 s, then takes the whole 16 MiB body: lb stops reading the client
  // meanwhile (back-pressure), which must not be taken for a client that stopped sending.
  const slow = http.createServer((req, res) => {
    req.pause();
    setTimeout(() => {
      let n = 0;
      req.on('data', (d: Buffer) => (n += d.length));
      req.on('end', () => res.end(String(n)));
      req.resume();
    }, 1500);
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (slow.closeAllConnections(), slow.close(() => r()))));
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [(slow.address() as net.AddressInfo).port], listener: 'client_body_timeout = "500ms"' }), [port]);
  t.teardown(() => lb.stop());
  const size = 16 * 1024 * 1024;
  const reply = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PUT', path: '/big', agent: false, headers: { 'content-length': size } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(Buffer.alloc(size, 'b'));
  });
  t.same(reply, { status: 200, body: String(size) }, 'the body went through whole after the backend started reading');
});

t.test('idle_timeout: an idle keep-alive connection is closed on time', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'idle_timeout = "1s"' }), [port]);
  t.teardown(() => lb.stop());
  const h = await hold(port, 'GET /a HTTP/1.1\r\nHost: h\r\n\r\n');
  await waitFor(() => h.got.includes('"path":"/a"'), 5000, 'the response');
  const answered = performance.now();
  await waitFor(() => h.closedAt, 5000, 'lb to close the idle connection');
  const ms = h.closedAt! - answered;
  t.ok(ms >= 800 && ms < 2500, `closed ${Math.round(ms)}ms after the response (idle_timeout 1s)`);
});

t.test('max_connections: the connection over the cap is refused; room frees up when one closes', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'max_connections = 5' }), [port]);
  t.teardown(() => lb.stop());
  // startLb's readiness probe connected and closed: wait until the worker has let go of it.
  const agents = Array.from({ length: 5 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  t.teardown(() => agents.forEach((a) => a.destroy()));
  await waitFor(async () => (await timedGet(port, '/probe', false)).status === 200, 5000, 'lb to serve');
  for (const [i, a] of agents.entries()) {
    const r = await timedGet(port, `/held-${i}`, a);
    t.equal(r.status, 200, `connection ${i + 1} of 5 served and kept open`);
  }
  const over = await rawExchange(port, 'GET /over HTTP/1.1\r\nHost: h\r\n\r\n', 3000);
  t.equal(over.status, 0, 'the 6th connection gets no response');
  t.ok(over.closed, 'the 6th connection is closed by lb');
  t.notOk(up.text().includes('/over'), 'its request never reached the upstream');
  agents[0]!.destroy();
  await waitFor(async () => (await rawExchange(port, 'GET /again HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', 2000)).status === 200, 5000, 'a new connection to be served once one closed');
  t.pass('a new connection is served once one of the 5 closed');
  for (const [i, a] of agents.slice(1).entries()) {
    const r = await timedGet(port, `/still-${i}`, a);
    t.equal(r.status, 200, `held connection ${i + 2} still served`);
  }
});

t.test('max_header_size is honoured in both directions, and more than 1000 header fields get 431', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'max_header_size = 65536' }), [port]);
  t.teardown(() => lb.stop());
  const big = await rawExchange(port, `GET /big HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(40_000)}\r\nConnection: close\r\n\r\n`);
  t.equal(big.status, 200, 'a 40 KB head passes under max_header_size = 65536');
  const over = await rawExchange(port, `GET /over HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
  t.equal(over.status, 431, 'a 70 KB head gets 431');
  const fields1000 = await rawExchange(port, `GET /f1000 HTTP/1.1\r\nHost: h\r\n${'x-f: 1\r\n'.repeat(998)}Connection: close\r\n\r\n`);
  t.equal(fields1000.status, 200, '1000 header fields pass');
  const fieldsMany = await rawExchange(port, `GET /f2500 HTTP/1.1\r\nHost: h\r\n${'x-f: 1\r\n'.repeat(2500)}\r\n`);
  t.equal(fieldsMany.status, 431, '2500 header fields get 431');
  const f1000 = up.requests.find((q) => q.path === '/f1000');
  t.ok(f1000, 'the 1000-field request reached the upstream');
  t.notOk(up.text().includes('/f2500') || up.text().includes('/over'), 'refused requests never reached the upstream');
});

t.test('1000 slowloris connections: a normal client is served promptly; every one is closed at client_header_timeout', async (t) => {
  const limit = fdLimit();
  const n = Math.min(1000, Math.floor(limit - 500));
  t.comment(`RLIMIT_NOFILE soft limit ${limit}; ${n} slowloris connections`);
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  // One worker takes all of them; 3 s to send a head.
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: 'client_header_timeout = "3s"' }), [port]);
  t.teardown(() => lb.stop());

  const slow: Held[] = [];
  for (let i = 0; i < n; i += 100) {
    slow.push(...(await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => hold(port, `GET /slowloris HTTP/1.1\r\nHost: h\r\n`)))));
  }
  const opened = performance.now();
  t.comment(`opened ${slow.length} connections in ${Math.round(opened - slow[0]!.opened)}ms`);
  // Each sends one more header line every 500 ms, and never finishes its head.
  let k = 0;
  const trickle = setInterval(() => {
    for (let j = 0; j < slow.length / 10; j++) {
      const h = slow[k++ % slow.length]!;
      if (!h.closedAt && h.socket.writable) h.socket.write(`X-${k}: ${k}\r\n`);
    }
  }, 50);
  t.teardown(() => clearInterval(trickle));

  // While they are all open: a normal client, on new and on kept-alive connections.
  const stillOpen = slow.filter((h) => !h.closedAt).length;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    for (const a of [false, agent] as const) {
      const r = await timedGet(port, `/normal-${i}`, a, 2000);
      t.equal(r.status, 200, `normal request ${i} (${a ? 'kept-alive' : 'new connection'}) answered 200`);
      times.push(r.ms);
    }
  }
  agent.destroy();
  const during = slow.filter((h) => !h.closedAt).length;
  t.ok(stillOpen === slow.length && during >= slow.length * 0.95, `the slowloris connections were open meanwhile (${stillOpen} before, ${during} after the normal client)`);
  t.ok(Math.max(...times) < 1000, `every normal request took < 1 s (max ${Math.round(Math.max(...times))}ms, mean ${Math.round(times.reduce((a, b) => a + b) / times.length)}ms)`);

  await waitFor(() => slow.every((h) => h.closedAt), 10_000, 'every slowloris connection to be closed');
  clearInterval(trickle);
  const lifetimes = slow.map((h) => h.closedAt! - h.opened).sort((a, b) => a - b);
  const min = lifetimes[0]!;
  const max = lifetimes[lifetimes.length - 1]!;
  t.ok(min >= 2900 && max < 5000, `closed 3 s after they connected (lifetimes ${Math.round(min)}..${Math.round(max)}ms)`);
  t.equal(slow.filter((h) => /^HTTP\/1\.1 408 /.test(h.got)).length, slow.length, 'every one was answered 408');
  t.notOk(up.text().includes('/slowloris'), 'none reached the upstream');
  const after = await timedGet(port, '/after', false);
  t.equal(after.status, 200, 'lb serves normally afterwards');
});

t.test('backend max_connections: a backend at its cap is not picked; 503 when every one is; tcp the same', async (t) => {
  let inSlow = 0;
  let peakSlow = 0;
  const slow = await startUpstream('slow', (_req, res) => {
    inSlow++;
    peakSlow = Math.max(peakSlow, inSlow);
    setTimeout(() => {
      inSlow--;
      res.end('slow');
    }, 300);
  });
  const fast = await startUpstream('fast');
  t.teardown(() => Promise.all([slow.close(), fast.close()]));
  const [port, port2, tcpPort] = [await freePort(), await freePort(), await freePort()];
  const lb = await startLb(
    httpConfig(
      port,
      `[pools.app]
algorithm = "round-robin"
backends = [ { address = "127.0.0.1:${slow.port}", max_connections = 2 }, { address = "127.0.0.1:${fast.port}" } ]
[pools.one]
backends = [ { address = "127.0.0.1:${slow.port}", max_connections = 1 } ]
[listeners.one]
protocol = "http"
listen = "127.0.0.1:${port2}"
pool = "one"
[listeners.raw]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "one"
`,
    ),
    [port, port2, tcpPort],
  );
  t.teardown(() => lb.stop());
  const mixed = await Promise.all(Array.from({ length: 12 }, (_, i) => timedGet(port, `/m${i}`, false, 5000)));
  t.ok(mixed.every((r) => r.status === 200), `all 12 answered 200 (${mixed.map((r) => r.status).join(',')})`);
  t.equal(peakSlow, 2, 'the slow backend never had more than its 2 in flight');
  t.ok(mixed.filter((r) => r.body === 'slow').length >= 2, 'it took its 2; the fast one the rest');
  const capped = await Promise.all(Array.from({ length: 3 }, (_, i) => timedGet(port2, `/c${i}`, false, 5000)));
  t.same(
    capped.map((r) => r.status).sort(),
    [200, 503, 503],
    'one backend with max_connections = 1: one request served, the two beside it 503 at once',
  );
  t.ok(capped.filter((r) => r.status === 503).every((r) => r.ms < 250), '503 without waiting for the busy one');
  t.match(capped.find((r) => r.status === 503)?.body ?? '', /503 Service Unavailable/);
  const after = await timedGet(port2, '/after', false, 5000);
  t.equal(after.status, 200, 'served again once the cap frees');

  // tcp: the first connection holds the one slot; a second is closed at once; the first is served.
  const first = await hold(tcpPort, '');
  const second = await rawExchange(tcpPort, '', 2000);
  t.ok(second.closed && second.raw === '' && second.ms < 500, `the second tcp connection is closed at once (${Math.round(second.ms)} ms)`);
  first.socket.write('GET /tcp HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  await waitFor(() => first.got.includes('\r\n\r\nslow'), 3000, 'the first tcp connection to be served');
  await waitFor(() => first.closedAt, 3000, 'the first tcp connection to end');
  const third = await hold(tcpPort, 'GET /tcp HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  await waitFor(() => third.got.includes('\r\n\r\nslow'), 3000, 'a new tcp connection once the slot is free');
  third.socket.destroy();
});

// Request smuggling and malformed HTTP, table-driven: every request of the corpus is sent as raw bytes on its
// own connection; each must get one 4xx/5xx answer (400, or 431/414/501/505 where that fits) and a closed
// connection, and the upstream — a raw net server recording every byte it receives — must receive nothing
// of it (no head, no smuggled inner request). Valid requests on other connections, sent concurrently, are
// answered 200 and reach the upstream intact. node:http's lenient parser is never enabled.

import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import net from 'node:net';
import { HTTPParser as ParserClass } from '../src/node-internals/llhttp.js';
import { HttpListener } from '../src/dataplane/http-listener.js';
import type { BackendPool } from '../src/dataplane/pool.js';
import type { ListenerConfig } from '../config/model.js';
import { childPids, lbConfig, rawExchange, startRecordingUpstream, timedGet } from './helpers/hardening.js';
import { admin, freePort, startLb, waitFor } from './helpers/lb.js';

import { inner, MAX_HEADER, ROWS, VALID } from './helpers/smuggling-corpus.js';

t.test('the smuggling and malformed-request corpus is refused and never reaches the upstream', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  // max_failures = 1: a single request blamed on the backend would eject it and fail the valid traffic.
  const passive = '[pools.app.passive]\nmax_failures = 1\neject_for = "60s"';
  const lb = await startLb(lbConfig({ port, upstreams: [up.port], listener: `max_header_size = ${MAX_HEADER}`, extra: passive }), [port]);
  t.teardown(() => lb.stop());

  // The lenient parser is not switched on from outside either: no --insecure-http-parser anywhere.
  for (const pid of [lb.proc.pid!, ...childPids(lb.proc.pid!)]) {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const env = fs.readFileSync(`/proc/${pid}/environ`, 'utf8');
    t.notMatch(argv + env, /insecure-http-parser/, `process ${pid} runs without --insecure-http-parser`);
  }

  // Concurrent valid traffic on kept-alive connections for the whole run.
  let running = true;
  const validResults: Array<{ status: number; body: string; path: string }> = [];
  const valid = Array.from({ length: 8 }, async (_, c) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; running || i < 20; i++) {
      const path = `/ok-${c}-${i}`;
      try {
        const r = await timedGet(port, path, agent, 5000);
        validResults.push({ status: r.status, body: r.body, path });
      } catch (err) {
        validResults.push({ status: 0, body: (err as Error).message, path });
      }
    }
    agent.destroy();
  });

  // The corpus: each row on its own connection, eight at a time.
  const replies = new Map<string, Awaited<ReturnType<typeof rawExchange>>>();
  for (let i = 0; i < ROWS.length; i += 8) {
    await Promise.all(ROWS.slice(i, i + 8).map(async (row) => replies.set(row.id, await rawExchange(port, row.bytes.replaceAll('ID', row.id), 4000))));
  }
  const validReplies = await Promise.all(VALID.map(async (v) => [v, await rawExchange(port, v.bytes.replaceAll('ID', v.id).replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'), 4000)] as const));
  running = false;
  await Promise.all(valid);

  const seen = up.text();
  for (const row of ROWS) {
    const r = replies.get(row.id)!;
    t.test(`${row.id}: ${row.why}`, async (t) => {
      t.ok(row.expect.includes(r.status), `answered ${row.expect.join('/')} (got ${r.status}: ${JSON.stringify(r.raw.slice(0, 80))})`);
      t.equal(r.raw.match(/HTTP\/1\.1 \d{3}/g)?.length ?? 0, 1, 'exactly one response (nothing smuggled behind it)');
      t.ok(r.closed, `connection closed by lb (after ${Math.round(r.ms)}ms)`);
      t.notOk(seen.includes(`bad-${row.id}`), 'upstream received no byte of the request');
      t.notOk(seen.includes(`smuggled-${row.id}`), 'upstream received no smuggled inner request');
    });
  }
  for (const [v, r] of validReplies) {
    t.match(r.raw, /^(HTTP\/1\.1 100 Continue\r\n\r\n)?HTTP\/1\.1 200 /, `valid ${v.id} answered 200 (${JSON.stringify(r.raw.slice(0, 60))})`);
    const req = up.requests.find((q) => q.path === `/okraw-${v.id}`);
    t.ok(req, `valid ${v.id} reached the upstream`);
    t.equal(req?.body.toString(), 'hello'.slice(0, v.bodyBytes), `valid ${v.id}: body forwarded intact`);
  }
  const star = await rawExchange(port, 'OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  t.equal(star.status, 200, 'OPTIONS * is answered 200 by lb itself');
  t.notOk(up.requests.some((q) => q.method === 'OPTIONS'), 'OPTIONS * is not forwarded');
  const status = await admin(lb.socket, { cmd: 'status' });
  t.equal(status.result.pools[0].backends[0].state, 'up', 'no corpus request was counted as a backend failure (passive max_failures = 1)');
  const bad = validResults.filter((r) => r.status !== 200 || JSON.parse(r.body).path !== r.path);
  t.ok(validResults.length >= 160, `concurrent valid requests ran throughout (${validResults.length})`);
  t.equal(bad.length, 0, `every concurrent valid request answered 200 by the upstream (${JSON.stringify(bad.slice(0, 3))})`);
  const okPaths = new Set(up.requests.map((q) => q.path));
  t.ok(validResults.every((r) => okPaths.has(r.path)), 'every concurrent valid request reached the upstream');
});

t.test('the HTTP listener never enables the lenient parser', async (t) => {
  // Every request parser the listener creates is initialized with llhttp's strict mode (kLenientNone).
  // (The class the listener uses: the binding's, or the fallback parser's when it is forced.)
  const HTTPParser = ParserClass as unknown as { REQUEST: number; kLenientNone: number; prototype: { initialize: (...args: unknown[]) => void } };
  const seen: unknown[][] = [];
  const original = HTTPParser.prototype.initialize;
  HTTPParser.prototype.initialize = function (this: unknown, ...args: unknown[]) {
    seen.push(args);
    return original.apply(this, args);
  };
  t.teardown(() => {
    HTTPParser.prototype.initialize = original;
  });
  const port = await freePort();
  const cfg: ListenerConfig = {
    name: 'probe',
    protocol: 'http',
    listen: { host: '127.0.0.1', port, text: `127.0.0.1:${port}` },
    pool: 'app',
    routes: [],
    maxConnections: 0,
    clientHeaderTimeoutMs: 10_000,
    clientBodyTimeoutMs: 60_000,
    idleTimeoutMs: 60_000,
    maxHeaderSize: 16384,
    proxyProtocol: false,
  };
  const pools = new Map([['app', { name: 'app' } as unknown as BackendPool]]);
  const events = { needsClient: false, done() {}, failure() {}, recovered() {} };
  const l = new HttpListener(cfg, pools, events);
  await l.listen('shared');
  t.teardown(() => l.destroy());
  const sockets = [1, 2, 3].map(() => net.connect(port, '127.0.0.1').on('error', () => {}));
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  const requestParsers = await waitFor(() => {
    const r = seen.filter((a) => a[0] === HTTPParser.REQUEST);
    return r.length >= 3 ? r : undefined;
  }, 5000, 'three request parsers');
  for (const args of requestParsers) t.equal(args[3], HTTPParser.kLenientNone, 'initialized with kLenientNone');
  t.equal(HTTPParser.kLenientNone, 0, 'kLenientNone sets no leniency flag');
  t.notOk(process.execArgv.includes('--insecure-http-parser'), 'test process itself is strict too');
  void l.stop();
});

t.test('bad chunk framing in a later TCP segment than the head: the upstream never gets a complete request', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port] }), [port]);
  t.teardown(() => lb.stop());
  // A streaming proxy forwards the head and the valid part of a body before it has seen the rest: this
  // pins down what the upstream may see then (a head and a cut-off body), and what it may not (the end).
  const s = net.connect(port, '127.0.0.1');
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const closed = new Promise<void>((r) => s.once('close', () => r()));
  s.on('error', () => {});
  s.write('POST /split HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
  await waitFor(() => up.text().includes('hello'), 5000, 'the valid first chunk to reach the upstream');
  s.write(`zz\r\n${inner.replace('ID', 'split')}\r\n0\r\n\r\n`);
  await Promise.race([closed, new Promise((r) => setTimeout(r, 5000))]);
  t.match(got, /^HTTP\/1\.1 400 /, 'client: 400 for the bad chunk size');
  await waitFor(() => up.connections.length > 0 && up.requests.length === 0, 5000, 'upstream state to settle');
  const seen = up.text();
  t.notOk(seen.includes('0\r\n\r\n'), 'upstream never received the terminating chunk');
  t.notOk(seen.includes('smuggled-split'), 'upstream never received the smuggled request');
  t.equal(up.requests.length, 0, 'upstream never parsed a complete request');
  const after = await timedGet(port, '/after', false);
  t.equal(after.status, 200, 'lb serves the next request');
});

t.test('curl uploading 2 MB (curl sends Expect: 100-continue): forwarded whole', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port] }), [port]);
  t.teardown(() => lb.stop());
  const file = path.join(lb.dir, 'upload.bin');
  fs.writeFileSync(file, Buffer.alloc(2 * 1024 * 1024, 7));
  const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const p = spawn('curl', ['-sS', '-v', '--max-time', '10', '--data-binary', `@${file}`, `http://127.0.0.1:${port}/upload`]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.once('close', (code) => resolve({ code, out, err }));
  });
  t.match(r.err, /Expect: 100-continue/i, 'curl asked for 100-continue');
  t.equal(r.code, 0, 'curl succeeded');
  t.same(JSON.parse(r.out || '{}'), { path: '/upload', proto: 'http', bytes: 2 * 1024 * 1024 }, 'the upstream received all 2 MB');
  t.notOk(up.requests.some((q) => 'expect' in q.headers), 'Expect was answered by lb, not forwarded');
});

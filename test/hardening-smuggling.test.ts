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
import { createRequire } from 'node:module';
import { HttpListener } from '../src/dataplane/http-listener.js';
import type { BackendPool } from '../src/dataplane/pool.js';
import type { ListenerConfig } from '../config/model.js';
import { childPids, lbConfig, rawExchange, startRecordingUpstream, timedGet } from './helpers/hardening.js';
import { admin, freePort, startLb, waitFor } from './helpers/lb.js';

const MAX_HEADER = 8192;

interface Row {
  id: string;
  /** Why this request is dangerous or malformed. */
  why: string;
  /** Raw request bytes; `ID` is replaced by the row id (paths /bad-ID and /smuggled-ID mark its bytes). */
  bytes: string;
  expect: number[];
}

const inner = 'GET /smuggled-ID HTTP/1.1\r\nHost: h\r\n\r\n';
const chunkedInner = `0\r\n\r\n${inner}`;
const head = (extra: string, method = 'POST', target = '/bad-ID'): string => `${method} ${target} HTTP/1.1\r\nHost: h\r\n${extra}\r\n`;

const ROWS: Row[] = [
  // Content-Length / Transfer-Encoding conflicts (CL.TE, TE.CL)
  { id: 'cl-te', why: 'Content-Length and Transfer-Encoding: chunked (CL.TE)', bytes: head(`Content-Length: ${chunkedInner.length}\r\nTransfer-Encoding: chunked\r\n`) + chunkedInner, expect: [400] },
  { id: 'te-cl', why: 'Transfer-Encoding: chunked then Content-Length (TE.CL)', bytes: head('Transfer-Encoding: chunked\r\nContent-Length: 4\r\n') + `5c\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'cl-cl-diff', why: 'two different Content-Lengths', bytes: head(`Content-Length: 5\r\nContent-Length: ${5 + inner.length}\r\n`) + 'hello' + inner, expect: [400] },
  { id: 'cl-cl-same', why: 'two identical Content-Length headers', bytes: head('Content-Length: 5\r\nContent-Length: 5\r\n') + 'hello', expect: [400] },
  { id: 'cl-list', why: 'Content-Length list "5, 5"', bytes: head('Content-Length: 5, 5\r\n') + 'hello', expect: [400] },
  { id: 'cl-plus', why: 'Content-Length "+5"', bytes: head('Content-Length: +5\r\n') + 'hello', expect: [400] },
  { id: 'cl-neg', why: 'Content-Length "-1"', bytes: head('Content-Length: -1\r\n') + inner, expect: [400] },
  { id: 'cl-hex', why: 'Content-Length "0x5"', bytes: head('Content-Length: 0x5\r\n') + 'hello', expect: [400] },
  { id: 'cl-junk', why: 'Content-Length "5x"', bytes: head('Content-Length: 5x\r\n') + 'hello', expect: [400] },
  { id: 'cl-huge', why: 'Content-Length beyond 2^64', bytes: head('Content-Length: 99999999999999999999999\r\n') + 'hello', expect: [400] },
  // Transfer-Encoding variants
  { id: 'te-chunked-x', why: 'Transfer-Encoding "chunked, x" (chunked not last)', bytes: head('Transfer-Encoding: chunked, x\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-x-chunked', why: 'Transfer-Encoding "x, chunked" (unknown coding before chunked)', bytes: head('Transfer-Encoding: x, chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-gzip-chunked', why: 'Transfer-Encoding "gzip, chunked" (a coding lb would drop while forwarding)', bytes: head('Transfer-Encoding: gzip, chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-space-colon', why: '"Transfer-Encoding : chunked" (space before the colon)', bytes: head('Transfer-Encoding : chunked\r\n') + chunkedInner, expect: [400] },
  { id: 'te-xchunked', why: 'Transfer-Encoding "xchunked"', bytes: head('Transfer-Encoding: xchunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-chunkedx', why: 'Transfer-Encoding "chunkedx"', bytes: head('Transfer-Encoding: chunkedx\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-identity', why: 'Transfer-Encoding "identity"', bytes: head('Transfer-Encoding: identity\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-twice', why: 'two Transfer-Encoding: chunked headers (chunked applied twice)', bytes: head('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-chunked-identity', why: 'Transfer-Encoding: chunked, then Transfer-Encoding: identity', bytes: head('Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-obs-fold', why: 'Transfer-Encoding continued by obs-fold', bytes: head('Transfer-Encoding: identity\r\n chunked\r\n') + chunkedInner, expect: [400] },
  { id: 'te-vtab', why: 'Transfer-Encoding value with a vertical tab', bytes: head('Transfer-Encoding:\x0bchunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-http10', why: 'Transfer-Encoding on an HTTP/1.0 request', bytes: `POST /bad-ID HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunkedInner}`, expect: [400, 501] },
  // Chunked framing
  { id: 'chunk-size-junk', why: 'chunk size "zz"', bytes: head('Transfer-Encoding: chunked\r\n') + `zz\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-size-overflow', why: 'chunk size overflowing 64 bits', bytes: head('Transfer-Encoding: chunked\r\n') + `fffffffffffffffff1\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-size-neg', why: 'chunk size "-1"', bytes: head('Transfer-Encoding: chunked\r\n') + `-1\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-too-long', why: 'chunk data longer than its size', bytes: head('Transfer-Encoding: chunked\r\n') + `3\r\nhello\r\n0\r\n\r\n${inner}`, expect: [400] },
  { id: 'chunk-bare-lf', why: 'chunk lines ended by bare LF', bytes: head('Transfer-Encoding: chunked\r\n') + `5\nhello\n0\n\n${inner}`, expect: [400] },
  { id: 'chunk-space-size', why: 'chunk size followed by spaces', bytes: head('Transfer-Encoding: chunked\r\n') + `5   \r\nhello\r\n0\r\n\r\n${inner}`, expect: [400] },
  // Line endings, folding, control characters
  { id: 'obs-fold', why: 'obs-fold header continuation', bytes: head('X-Folded: a\r\n b\r\n', 'GET'), expect: [400] },
  { id: 'leading-ws-header', why: 'whitespace before the first header', bytes: 'GET /bad-ID HTTP/1.1\r\n Host: h\r\n\r\n', expect: [400] },
  { id: 'bare-lf', why: 'request ended by bare LFs', bytes: 'GET /bad-ID HTTP/1.1\nHost: h\n\n', expect: [400] },
  { id: 'bare-lf-header', why: 'one header ended by a bare LF', bytes: 'GET /bad-ID HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n', expect: [400] },
  { id: 'bare-cr', why: 'bare CR inside a header value', bytes: head('X-A: a\rb\r\n', 'GET'), expect: [400] },
  { id: 'nul-value', why: 'NUL in a header value', bytes: head('X-A: a\0b\r\n', 'GET'), expect: [400] },
  { id: 'nul-name', why: 'NUL in a header name', bytes: head('X-\0A: b\r\n', 'GET'), expect: [400] },
  { id: 'space-in-name', why: 'space inside a header name', bytes: head('X A: b\r\n', 'GET'), expect: [400] },
  { id: 'no-colon', why: 'header line without a colon', bytes: head('NoColonHere\r\n', 'GET'), expect: [400] },
  { id: 'ctl-in-target', why: 'control character in the request target', bytes: 'GET /bad-ID\x01 HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400] },
  { id: 'bad-method', why: 'method with a non-token character', bytes: 'G@T /bad-ID HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400] },
  { id: 'bad-version', why: 'HTTP/9.9', bytes: 'GET /bad-ID HTTP/9.9\r\nHost: h\r\n\r\n', expect: [400, 505] },
  { id: 'no-version', why: 'HTTP/0.9-style request line', bytes: 'GET /bad-ID\r\n\r\n', expect: [400] },
  // Host
  { id: 'no-host', why: 'HTTP/1.1 request without Host', bytes: 'GET /bad-ID HTTP/1.1\r\nX-A: b\r\n\r\n', expect: [400] },
  { id: 'two-hosts', why: 'two different Host headers (routing confusion)', bytes: 'GET /bad-ID HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n', expect: [400] },
  // Sizes
  { id: 'header-too-big', why: `one header over max_header_size (${MAX_HEADER})`, bytes: head(`X-Big: ${'a'.repeat(MAX_HEADER + 100)}\r\n`, 'GET'), expect: [431] },
  { id: 'head-too-big', why: 'many headers adding up to more than max_header_size', bytes: head(Array.from({ length: 200 }, (_, i) => `X-H${i}: ${'v'.repeat(60)}\r\n`).join(''), 'GET'), expect: [431] },
  { id: 'too-many-headers', why: '1001 tiny header fields (under the byte limit, over the 1000-field limit)', bytes: head('x:1\r\n'.repeat(1001), 'GET'), expect: [431] },
  { id: 'target-too-long', why: 'request line over the head limit', bytes: `GET /bad-ID?${'q'.repeat(MAX_HEADER + 100)} HTTP/1.1\r\nHost: h\r\n\r\n`, expect: [414, 431, 400] },
  // Not a forward proxy
  { id: 'authority-form-get', why: 'authority-form target on GET', bytes: 'GET evil.example:443 HTTP/1.1\r\nHost: h\r\nX-Id: bad-ID\r\n\r\n', expect: [400] },
  { id: 'connect', why: 'CONNECT (tunnel request)', bytes: 'CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nX-Id: bad-ID\r\n\r\n', expect: [501] },
  { id: 'connect-origin', why: 'CONNECT with an origin-form target', bytes: 'CONNECT /bad-ID HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400, 501] },
  { id: 'upgrade-cl-te', why: 'websocket upgrade carrying CL and TE', bytes: head(`Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: ${chunkedInner.length}\r\nTransfer-Encoding: chunked\r\n`, 'GET') + chunkedInner, expect: [400] },
];

/** Valid requests that look unusual: they must be answered 200 and reach the upstream as sent. */
const VALID = [
  { id: 'ok-chunked-upper', bytes: head('Transfer-Encoding: CHUNKED\r\n', 'POST', '/okraw-ID') + '5\r\nhello\r\n0\r\n\r\n', bodyBytes: 5 },
  { id: 'ok-chunk-ext', bytes: head('Transfer-Encoding: chunked\r\n', 'POST', '/okraw-ID') + '5;name=v\r\nhello\r\n0\r\n\r\n', bodyBytes: 5 },
  { id: 'ok-cl', bytes: head('Content-Length: 5\r\n', 'POST', '/okraw-ID') + 'hello', bodyBytes: 5 },
  { id: 'ok-expect-continue', bytes: head('Expect: 100-continue\r\nContent-Length: 5\r\n', 'POST', '/okraw-ID') + 'hello', bodyBytes: 5 },
  { id: 'ok-http10', bytes: 'POST /okraw-ID HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello', bodyBytes: 5 },
  { id: 'ok-1000-fields', bytes: head('x:1\r\n'.repeat(998), 'GET', '/okraw-ID'), bodyBytes: 0 },
];

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
  const { HTTPParser } = createRequire(import.meta.url)('_http_common') as {
    HTTPParser: { REQUEST: number; kLenientNone: number; prototype: { initialize: (...args: unknown[]) => void } };
  };
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

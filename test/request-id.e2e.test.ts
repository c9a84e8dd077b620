// Request IDs and W3C traceparent through the real daemon, with hostile clients: raw-socket requests that
// repeat the fields, name them in Connection, send oversized or malformed values. The backend records the
// raw header list it received; the client's response and the access log are checked against it.

import http from 'node:http';
import t from 'tap';
import { rawExchange } from './helpers/hardening.js';
import { freePort, startLb, waitFor } from './helpers/lb.js';

interface Seen {
  raw: string[];
}

const HEX32 = /^[0-9a-f]{32}$/;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;
const VALID_TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

function fields(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name) out.push(raw[i + 1]!);
  return out;
}

t.test('request IDs and traceparent', async (t) => {
  const seen: Seen[] = [];
  const backend = http.createServer((req, res) => {
    seen.push({ raw: req.rawHeaders });
    const headers: Record<string, string> = { 'content-type': 'text/plain' };
    if (req.url === '/backend-id') headers['x-request-id'] = 'from-backend';
    res.writeHead(200, headers);
    res.end('ok');
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { backend.closeAllConnections(); backend.close(() => r()); }));
  const upPort = (backend.address() as { port: number }).port;
  const [trusting, strict, creating, plain] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const lb = await startLb(
    `
[daemon]
workers = 1
[admin]
socket = "{{socket}}"
[log]
access = true
[rate_limits.one]
rate = 1
per = "1m"
burst = 1
[listeners.trusting]
protocol = "http"
listen = "127.0.0.1:${trusting}"
pool = "app"
request_id = { trust_incoming = true }
trace = { traceparent = "propagate" }
[listeners.strict]
protocol = "http"
listen = "127.0.0.1:${strict}"
pool = "app"
request_id = { header = "X-Correlation-Id", response = false }
[listeners.creating]
protocol = "http"
listen = "127.0.0.1:${creating}"
pool = "app"
request_id = {}
trace = { traceparent = "create", sampled = false }
rate_limit = "one"
[listeners.plain]
protocol = "http"
listen = "127.0.0.1:${plain}"
pool = "app"
[pools.app]
backends = [{ address = "127.0.0.1:${upPort}" }]
`,
    [trusting, strict, creating, plain],
  );
  t.teardown(() => lb.stop());

  const send = async (port: number, head: string, path = '/'): Promise<{ status: number; raw: string; backend: string[] | undefined }> => {
    const before = seen.length;
    const r = await rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: h\r\n${head}Connection: close\r\n\r\n`.replace('Connection: close\r\n\r\n', head.includes('Connection:') ? '\r\n' : 'Connection: close\r\n\r\n'));
    return { status: r.status, raw: r.raw, backend: seen.length > before ? seen[seen.length - 1]!.raw : undefined };
  };
  const responseField = (raw: string, name: string): string[] =>
    raw.split('\r\n\r\n')[0]!.split('\r\n').filter((l) => l.toLowerCase().startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).trim());

  t.test('absent: generated, 32 hex, sent to the backend and back, logged', async (t) => {
    const r = await send(trusting, '');
    t.equal(r.status, 200);
    const ids = fields(r.backend!, 'x-request-id');
    t.equal(ids.length, 1);
    t.match(ids[0], HEX32);
    t.same(responseField(r.raw, 'x-request-id'), ids);
    const line = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.request_id === ids[0]), 5000, 'the access line');
    t.equal(line.listener, 'trusting');
  });

  t.test('trusted listener keeps one valid incoming ID, replaces a bad, long or repeated one', async (t) => {
    let r = await send(trusting, 'X-Request-Id: abc-123.XYZ\r\n');
    t.same(fields(r.backend!, 'x-request-id'), ['abc-123.XYZ']);
    t.same(responseField(r.raw, 'x-request-id'), ['abc-123.XYZ']);
    r = await send(trusting, `X-Request-Id: ${'a'.repeat(10_000)}\r\n`);
    t.match(fields(r.backend!, 'x-request-id'), [HEX32], '10 KB ID replaced');
    r = await send(trusting, 'X-Request-Id: a\r\nx-request-id: b\r\n');
    t.equal(fields(r.backend!, 'x-request-id').length, 1, 'repeated: one field reaches the backend');
    t.match(fields(r.backend!, 'x-request-id')[0], HEX32);
    r = await send(trusting, 'X-Request-Id: "quoted" <script>\r\n');
    t.match(fields(r.backend!, 'x-request-id'), [HEX32], 'characters outside the allowed set: replaced');
    // Named in Connection: hop-by-hop, removed; lb's own ID is what the backend sees.
    r = await send(trusting, 'X-Request-Id: keepme\r\nConnection: close, x-request-id\r\n');
    t.equal(r.status, 200);
    t.match(fields(r.backend!, 'x-request-id'), [HEX32], 'an ID named in Connection is dropped and replaced');
  });

  t.test('untrusting listener replaces any incoming ID; its own header name; not sent back', async (t) => {
    const r = await send(strict, 'X-Correlation-Id: abc\r\nX-Request-Id: other\r\n');
    t.match(fields(r.backend!, 'x-correlation-id'), [HEX32]);
    t.same(fields(r.backend!, 'x-request-id'), ['other'], 'another field of another name is left alone');
    t.same(responseField(r.raw, 'x-correlation-id'), [], 'response = false');
  });

  t.test('the response carries lb\'s ID, not one the backend set', async (t) => {
    const r = await send(trusting, 'X-Request-Id: mine\r\n', '/backend-id');
    t.same(responseField(r.raw, 'x-request-id'), ['mine']);
  });

  t.test('traceparent propagate: a valid one passes unchanged with tracestate; invalid ones are dropped', async (t) => {
    let r = await send(trusting, `traceparent: ${VALID_TP}\r\ntracestate: vendor=abc\r\n`);
    t.same(fields(r.backend!, 'traceparent'), [VALID_TP]);
    t.same(fields(r.backend!, 'tracestate'), ['vendor=abc']);
    const ids = fields(r.backend!, 'x-request-id');
    const line = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.request_id === ids[0]), 5000, 'the access line');
    t.equal(line.trace_id, '0af7651916cd43dd8448eb211c80319c');
    for (const bad of [
      VALID_TP.toUpperCase(),
      '00-00000000000000000000000000000000-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      `${VALID_TP}-extra`,
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01',
      'garbage',
    ]) {
      r = await send(trusting, `traceparent: ${bad}\r\ntracestate: vendor=abc\r\n`);
      t.same(fields(r.backend!, 'traceparent'), [], `dropped: ${bad}`);
      t.same(fields(r.backend!, 'tracestate'), [], 'with its tracestate');
    }
    r = await send(trusting, `traceparent: ${VALID_TP}\r\ntraceparent: ${VALID_TP}\r\n`);
    t.same(fields(r.backend!, 'traceparent'), [], 'two traceparent fields: invalid');
    const future = '01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-later';
    r = await send(trusting, `traceparent: ${future}\r\n`);
    t.same(fields(r.backend!, 'traceparent'), [future], 'a later version with more fields passes');
    r = await send(trusting, `traceparent: ${VALID_TP}\r\nConnection: close, traceparent\r\n`);
    t.same(fields(r.backend!, 'traceparent'), [], 'named in Connection: dropped');
  });

  t.test('traceparent create: absent or invalid gets a new one; a valid one passes', async (t) => {
    let r = await send(creating, '');
    const tp = fields(r.backend!, 'traceparent');
    t.equal(tp.length, 1);
    const m = TRACEPARENT.exec(tp[0]!);
    t.ok(m, `created ${tp[0]}`);
    t.equal(m![3], '00', 'sampled = false');
    const id = fields(r.backend!, 'x-request-id')[0];
    const line = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.request_id === id), 5000, 'the access line');
    t.equal(line.trace_id, m![1]);
    // The limit of this listener (1 per minute) is spent: the 429 has the request ID too, and is logged with both.
    r = await send(creating, `traceparent: ${VALID_TP}\r\n`);
    t.equal(r.status, 429);
    const rid = responseField(r.raw, 'x-request-id')[0]!;
    t.match(rid, HEX32);
    const refused = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.request_id === rid), 5000, 'the 429 line');
    t.equal(refused.status, 429);
    t.equal(refused.trace_id, '0af7651916cd43dd8448eb211c80319c');
  });

  t.test('a listener without request_id or trace passes both through untouched', async (t) => {
    const r = await send(plain, `X-Request-Id: a\r\nX-Request-Id: b\r\ntraceparent: garbage\r\n`);
    t.same(fields(r.backend!, 'x-request-id'), ['a', 'b']);
    t.same(fields(r.backend!, 'traceparent'), ['garbage']);
    t.same(responseField(r.raw, 'x-request-id'), []);
  });
});

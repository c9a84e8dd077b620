// The HTTP/1.1 trust properties of lb's request path, each through `lb run` on loopback with a raw
// recording backend: framing never derived from headers after hop-by-hop removal, Upgrade only on 101,
// pipelined requests forwarded one at a time, 1xx and trailers passed on, transfer codings kept,
// absolute-form accepted, Host checked, early responses delivered during uploads, and idempotent requests
// that never fail because a kept-alive backend connection was closed while idle.

import t, { type Test } from 'tap';
import net from 'node:net';
import { rawExchange, startRecordingUpstream, type RecordingUpstream, type SeenRequest } from './helpers/hardening.js';
import { freePort, httpConfig, startLb, waitFor, type Lb } from './helpers/lb.js';

function config(port: number, upstream: number, extra = ''): string {
  return httpConfig(
    port,
    `
[pools.app]
algorithm = "round-robin"
retries = 2
${extra}
backends = [{ address = "127.0.0.1:${upstream}" }]
`,
  );
}

/** A recording backend answering with `answer`, and lb in front of it; both stopped at the test's end. */
async function setup(t: Test, answer?: (req: SeenRequest, s: net.Socket) => void): Promise<{ up: RecordingUpstream; port: number }> {
  const up = await startRecordingUpstream(answer);
  const port = await freePort();
  const lb = await startLb(config(port, up.port), [port]);
  t.teardown(async () => {
    await lb.stop();
    await up.close();
  });
  return { up, port };
}

/** Statuses of every response in `raw` (interim ones included), in order. */
function statuses(raw: string): number[] {
  return [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/** A client connection that collects what lb sends and can wait for it. */
function client(port: number): { s: net.Socket; got: () => string; closed: () => boolean } {
  const s = net.connect(port, '127.0.0.1');
  let got = '';
  let closed = false;
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  s.on('error', () => {});
  s.on('close', () => (closed = true));
  return { s, got: () => got, closed: () => closed };
}

const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

t.test('a Connection header naming Content-Length, Transfer-Encoding or Host is refused; nothing is forwarded', async (t) => {
  const { up, port } = await setup(t);
  const inner = 'GET /admin/secret HTTP/1.1\r\nHost: h\r\n\r\n';
  const cases = {
    'content-length': `POST /public HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
    'keep-alive, Content-Length': `POST /public HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Content-Length\r\nContent-Length: ${inner.length}\r\n\r\n${inner}`,
    'transfer-encoding': `POST /public HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`,
    host: 'GET /public HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n',
  };
  for (const [name, bytes] of Object.entries(cases)) {
    const r = await rawExchange(port, bytes);
    t.equal(r.status, 400, `Connection: ${name} -> 400`);
    t.ok(r.closed, 'and the connection closed');
  }
  t.equal(up.requests.length, 0, 'the backend received no request');
  t.notMatch(up.text(), /secret/, 'and no byte of the inner request');
  // Any other field named in Connection is removed (RFC 9110 §7.6.1); framing is lb's own.
  const r = await rawExchange(port, 'POST /p HTTP/1.1\r\nHost: h\r\nConnection: x-drop\r\nX-Drop: 1\r\nX-Keep: 2\r\nContent-Length: 2\r\n\r\nhi', 3000, { until: (raw) => raw.includes('"bytes"') });
  t.equal(r.status, 200);
  const seen = up.requests.at(-1)!;
  t.equal(seen.headers['x-drop'], undefined, 'the named field was removed');
  t.equal(seen.headers['x-keep'], '2');
  t.equal(seen.headers['content-length'], '2', 'the body went out with its Content-Length');
  t.equal(seen.body.toString(), 'hi');
});

t.test('an Upgrade the backend declines leaves an HTTP connection: the next request is parsed, checked and forwarded', async (t) => {
  const { up, port } = await setup(t, (req: SeenRequest, s) => {
    if (req.path === '/h2c') s.write(ok('declined'));
    else if (req.path === '/ws426') s.write('HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n');
    else s.write(ok(`path:${req.path} xff:${req.headers['x-forwarded-for'] ?? ''}`));
  });
  for (const [path, upgrade, status] of [['/h2c', 'h2c', 200], ['/ws426', 'websocket', 426]] as const) {
    const c = client(port);
    c.s.write(
      `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: ${upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n` +
        'GET /second HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n',
    );
    await waitFor(() => c.got().includes('path:/second'), 5000, `the second request answered after ${path}`);
    t.same(statuses(c.got()), [status, 200], `${path}: the declined upgrade's ${status}, then the second response`);
    t.match(c.got(), /xff:6\.6\.6\.6, 127\.0\.0\.1/, 'the second request got X-Forwarded-For appended by lb');
    const second = up.requests.find((r) => r.path === '/second' && r.headers['x-forwarded-for']?.startsWith('6.6.6.6'));
    t.ok(second, 'the backend parsed the second request as a request');
    // A request lb refuses still gets refused on that connection: CL and TE together.
    c.s.write('POST /third HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    await waitFor(() => statuses(c.got()).length === 3, 5000, 'the third answer');
    t.equal(statuses(c.got())[2], 400, 'CL+TE after a declined upgrade: 400');
    c.s.destroy();
  }
  t.notOk(up.requests.some((r) => r.path === '/third'), 'the refused request never reached the backend');
});

t.test('pipelined requests are forwarded one at a time: a GET behind a POST sees the POST done', async (t) => {
  let value = 'old';
  const { up, port } = await setup(t, (req: SeenRequest, s) => {
    if (req.method === 'POST') {
      setTimeout(() => {
        value = req.body.toString();
        s.write(ok('stored'));
      }, 100);
    } else if (req.method === 'DELETE') {
      setTimeout(() => {
        value = 'deleted';
        s.write(ok('gone'));
      }, 100);
    } else s.write(ok(`value:${value}`));
  });
  const c = client(port);
  c.s.write('POST /w HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nnewGET /r HTTP/1.1\r\nHost: h\r\n\r\nDELETE /w HTTP/1.1\r\nHost: h\r\n\r\nGET /r HTTP/1.1\r\nHost: h\r\n\r\n');
  await waitFor(() => statuses(c.got()).length === 4, 5000, 'four responses');
  const bodies = [...c.got().matchAll(/\r\n\r\n(stored|gone|value:[a-z]+)/g)].map((m) => m[1]);
  t.same(bodies, ['stored', 'value:new', 'gone', 'value:deleted'], 'each request saw the one before it done, answers in order');
  c.s.destroy();
});

t.test('1xx responses reach HTTP/1.1 clients; trailers pass both ways; other transfer codings are kept', async (t) => {
  const { up, port } = await setup(t, (req: SeenRequest, s) => {
    if (req.path === '/hints') s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n' + ok('final'));
    else if (req.path === '/trailers') s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n2\r\nhi\r\n0\r\ngrpc-status: 0\r\nSet-Cookie: s=1\r\n\r\n');
    else if (req.path === '/gzip') s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n');
    else s.write(ok(`trailer-raw:${JSON.stringify(req.raw.slice(req.raw.lastIndexOf('0\r\n')))}`));
  });
  let r = await rawExchange(port, 'GET /hints HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  t.same(statuses(r.raw), [103, 200], 'the 103 and then the final response');
  t.match(r.raw, /HTTP\/1\.1 103 Early Hints\r\nLink: <\/a\.css>; rel=preload\r\n\r\nHTTP\/1\.1 200 OK/, 'the 103 with its Link field');
  r = await rawExchange(port, 'GET /hints HTTP/1.0\r\nHost: h\r\n\r\n');
  t.same(statuses(r.raw), [200], 'not to an HTTP/1.0 client (RFC 9110 §15.2)');
  r = await rawExchange(port, 'GET /trailers HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nConnection: close, TE\r\n\r\n');
  t.match(r.raw, /\r\n0\r\ngrpc-status: 0\r\n\r\n$/, 'the response trailer reached the client');
  t.notMatch(r.raw.slice(r.raw.indexOf('\r\n0\r\n')), /Set-Cookie/i, 'a field that may not be a trailer is not forwarded (RFC 9110 §6.5.1)');
  t.match(r.raw, /Trailer: grpc-status/i, 'Trailer is not dropped as hop-by-hop (RFC 9110 §6.6.2)');
  r = await rawExchange(port, 'POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Checksum: 42\r\n\r\n');
  t.match(r.raw, /trailer-raw:"0\\r\\nX-Checksum: 42\\r\\n\\r\\n"/, 'the request trailer reached the backend');
  r = await rawExchange(port, 'GET /gzip HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  t.match(r.raw, /Transfer-Encoding: gzip, chunked\r\n/, 'the gzip coding is still announced');
  t.match(r.raw, /\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n$/, 'and its bytes arrive as sent');
  r = await rawExchange(port, 'GET /gzip HTTP/1.0\r\nHost: h\r\n\r\n');
  t.equal(r.status, 502, 'an HTTP/1.0 client cannot be told of it: 502 rather than unmarked gzip bytes');
});

t.test('absolute-form targets are accepted (their authority is the Host); Host syntax is checked', async (t) => {
  const { up, port } = await setup(t);
  let r = await rawExchange(port, 'GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n');
  t.equal(r.status, 200);
  let seen = up.requests.at(-1)!;
  t.equal(seen.path, '/p?q=1', 'forwarded in origin-form');
  t.equal(seen.headers.host, 'example.test:8080', "the target's authority replaced Host (RFC 9112 §3.2.2)");
  r = await rawExchange(port, 'GET HTTPS://example.test?x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n');
  t.equal(r.status, 200);
  seen = up.requests.at(-1)!;
  t.equal(seen.path, '/?x');
  const before = up.requests.length;
  for (const bad of [
    'GET ftp://example.test/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET http://user@example.test/ HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET example.test:80 HTTP/1.1\r\nHost: h\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a b\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: h@evil\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: h/x\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\n\r\n',
    'GET * HTTP/1.1\r\nHost: h\r\n\r\n',
  ]) {
    r = await rawExchange(port, bad);
    t.equal(r.status, 400, JSON.stringify(bad.split('\r\n').slice(0, 2).join(' | ')));
  }
  t.equal(up.requests.length, before, 'none of them reached the backend');
  for (const good of ['h:8080', '[::1]:80', '127.0.0.1', 'a-b.c_d~e']) {
    r = await rawExchange(port, `GET / HTTP/1.1\r\nHost: ${good}\r\nConnection: close\r\n\r\n`);
    t.equal(r.status, 200, `Host: ${good}`);
  }
});

t.test('an early final response during an upload reaches the client every time, never a 502', async (t) => {
  // The backend reads the head, answers 413 and closes without reading the body.
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let head = '';
    s.on('data', (d: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) s.end('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upPort = (server.address() as net.AddressInfo).port;
  const port = await freePort();
  const lb = await startLb(config(port, upPort), [port]);
  t.teardown(async () => {
    await lb.stop();
    server.close();
  });
  const body = Buffer.alloc(4 * 1024 * 1024, 'x');
  const seen: Record<string, number> = {};
  let kept = 0;
  for (let i = 0; i < 30; i++) {
    const c = client(port);
    c.s.write(`POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n`);
    c.s.write(body);
    await waitFor(() => c.closed() || /\r\n\r\ntoo large/.test(c.got()), 10_000, 'an answer');
    const status = statuses(c.got())[0] ?? 0;
    seen[status] = (seen[status] ?? 0) + 1;
    if (/Connection: keep-alive\r\n/.test(c.got())) {
      // lb read the rest of the body (and dropped it): the connection is in step and must serve again.
      c.s.write('GET /again HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
      await waitFor(() => statuses(c.got()).length === 2 || c.closed(), 10_000, 'a second answer or a close');
      t.equal(statuses(c.got()).length, 2, 'keep-alive announced: the connection answers the next request');
      kept++;
    } else {
      // RFC 9112 §9.6: lb closes gracefully, having said so.
      t.match(c.got(), /Connection: close\r\n/, 'no keep-alive announced on a connection lb closes');
      await waitFor(() => c.closed(), 10_000, 'lb to close');
    }
    c.s.destroy();
  }
  t.same(seen, { 413: 30 }, 'the 413 every time');
  t.comment(`${kept} of 30 connections kept alive (the body read and dropped), the rest closed after the 413`);
});

t.test('idempotent requests never fail because a kept-alive backend connection was closed while idle', async (t) => {
  // A backend that closes each connection 2-32 ms after it falls idle (as a short keepalive_timeout does).
  let served = 0;
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let buf = '';
    let timer: NodeJS.Timeout | undefined;
    s.on('data', (d: Buffer) => {
      clearTimeout(timer);
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) break;
        const m = /content-length: (\d+)/i.exec(buf.slice(0, end));
        const total = end + 4 + (m ? Number(m[1]) : 0);
        if (buf.length < total) break;
        buf = buf.slice(total);
        served++;
        s.write(ok('ok'));
      }
      timer = setTimeout(() => s.destroy(), 2 + Math.floor(Math.random() * 30));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const upPort = (server.address() as net.AddressInfo).port;
  const port = await freePort();
  const lb: Lb = await startLb(config(port, upPort), [port]);
  t.teardown(async () => {
    await lb.stop();
    server.close();
  });
  const counts = { GET: { ok: 0, failed: 0 }, POST: { ok: 0, failed: 0 } };
  const deadline = Date.now() + 60_000;
  // 8 kept-alive client connections, each sending requests one after another with pauses of 0-40 ms,
  // so that lb's backend connections are reused at every idle age around the backend's timeout.
  await Promise.all(
    Array.from({ length: 8 }, async (_, n) => {
      const c = client(port);
      for (let i = 0; i < 150 && Date.now() < deadline && !c.closed(); i++) {
        const method = (i + n) % 4 === 0 ? 'POST' : 'GET';
        const before = statuses(c.got()).length;
        c.s.write(method === 'POST' ? 'POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi' : 'GET /g HTTP/1.1\r\nHost: h\r\n\r\n');
        await waitFor(() => statuses(c.got()).length > before || c.closed(), 10_000, 'an answer');
        const status = statuses(c.got())[before];
        if (status === 200) counts[method].ok++;
        else counts[method].failed++;
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 40)));
      }
      c.s.destroy();
    }),
  );
  t.comment(`GET ${JSON.stringify(counts.GET)}, POST ${JSON.stringify(counts.POST)}, backend served ${served}`);
  t.ok(counts.GET.ok > 500, 'enough GETs ran');
  t.equal(counts.GET.failed, 0, 'no GET failed');
  t.ok(counts.POST.failed <= counts.POST.ok * 0.01, `POST failures within 1% (${counts.POST.failed} of ${counts.POST.ok + counts.POST.failed})`);
});

t.test('the request after one with trailers, on the same connection, is forwarded with its own target', async (t) => {
  // Node's binding hands trailers over with the previous request's url, and from then on passes every
  // head of that parser through kOnHeaders: the server must not take that url as part of the next target.
  const { up, port } = await setup(t);
  const c = client(port);
  t.teardown(() => c.s.destroy());
  c.s.write('POST /first HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n');
  await waitFor(() => statuses(c.got()).length === 1, 5000, 'the first answer');
  c.s.write('GET /second HTTP/1.1\r\nHost: h\r\n\r\n');
  await waitFor(() => statuses(c.got()).length === 2, 5000, 'the second answer');
  t.same(up.requests.map((r) => `${r.method} ${r.path}`), ['POST /first', 'GET /second'], 'the backend saw /second as /second');
});

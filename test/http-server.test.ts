// lb's HTTP/1.1 server side (src/dataplane/http-server.ts) as clients meet it, through `lb run`, over raw
// loopback sockets: pipelined requests answered in order (a slow first response holding back a fast and a
// large one), a malformed request pipelined behind a good one, response framing to HTTP/1.0 and HTTP/1.1
// clients, HEAD, Expect, a client's half-close, the Keep-Alive hint, the bytes that follow an Upgrade
// request's head, a streamed response to a client that stops reading, and a reloaded idle_timeout reaching
// open connections.

import t from 'tap';
import net from 'node:net';
import { lbConfig, rawExchange, startRecordingUpstream, type SeenRequest } from './helpers/hardening.js';
import fs from 'node:fs';
import { cli, freePort, startLb, waitFor, withStateFile } from './helpers/lb.js';

interface Parsed {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Splits what a client received into responses; `methods` are the requests' methods, in order. */
function parseResponses(raw: string, methods: string[]): Parsed[] {
  const out: Parsed[] = [];
  let rest = raw;
  for (const method of methods) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) break;
    const lines = rest.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0]!)?.[1] ?? 0);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    rest = rest.slice(end + 4);
    let body = '';
    if (method === 'HEAD' || status === 204 || status === 304) {
      body = '';
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = rest.slice(0, n);
      rest = rest.slice(n);
    } else if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const eol = rest.indexOf('\r\n');
        const size = parseInt(rest.slice(0, eol), 16);
        rest = rest.slice(eol + 2);
        if (size === 0) {
          rest = rest.slice(2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else {
      body = rest;
      rest = '';
    }
    out.push({ status, headers, body });
  }
  return out;
}

/** What came back for `bytes` (see rawExchange), split into responses to requests of `methods`. */
async function exchange(port: number, bytes: string, o: { methods: string[]; half?: boolean; answered?: boolean }): Promise<{ raw: string; responses: Parsed[]; closed: boolean }> {
  const r = await rawExchange(port, bytes, 3000, { half: o.half, until: o.answered ? (raw) => raw.includes('\r\n\r\n') : undefined });
  return { raw: r.raw, responses: parseResponses(r.raw, o.methods), closed: r.closed };
}

const BIG = 'b'.repeat(200 * 1024);
/** /stream: this many chunked pieces of 1000 bytes, each starting with its number (8 digits). */
const STREAM_CHUNKS = 16_000;
/** Set when the backend had to wait for lb to take /stream (lb stopped reading: its client was not). */
let streamBlocked = false;

/** The upstream's answers, by path: /slow-N after N ms, /chunked in two chunks, /big 200 KiB, /ws a 101. */
function answer(req: SeenRequest, socket: net.Socket): void {
  const reply = (text: string): void => {
    if (!socket.destroyed) socket.write(text);
  };
  const plain = (body: string): string => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  if (req.path.startsWith('/slow-')) {
    setTimeout(() => reply(plain(`path:${req.path}`)), Number(req.path.slice(6)));
  } else if (req.path === '/chunked') {
    reply(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n`);
  } else if (req.path === '/big') {
    reply(plain(BIG));
  } else if (req.path === '/stream') {
    socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
    let i = 0;
    const pump = (): void => {
      while (i < STREAM_CHUNKS) {
        const piece = `${String(i++).padStart(8, '0')}${'x'.repeat(992)}`;
        if (!socket.write(`3e8\r\n${piece}\r\n`)) {
          streamBlocked = true;
          socket.once('drain', pump);
          return;
        }
      }
      socket.write('0\r\n\r\n');
    };
    pump();
  } else if (req.path === '/ws') {
    reply('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n');
  } else {
    reply(plain(`path:${req.path}`));
  }
}

t.test('lb as an HTTP/1.1 server: pipelining, framing, Expect, half-close, upgrade, reloaded timeouts', async (t) => {
  const up = await startRecordingUpstream(answer);
  const port = await freePort();
  const config = (idle: string): string => lbConfig({ port, upstreams: [up.port], listener: `idle_timeout = "${idle}"` });
  const lb = await startLb(config('7s'), [port]);
  t.teardown(async () => {
    await lb.stop();
    await up.close();
  });
  const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: h\r\n${extra}\r\n`;

  t.test('pipelined requests are answered in order: a slow first response holds back a small and a 200 KiB one', async (t) => {
    const r = await exchange(port, get('/slow-300') + get('/big') + get('/chunked') + get('/fast', 'Connection: close\r\n'), { methods: ['GET', 'GET', 'GET', 'GET'] });
    t.equal(r.responses.length, 4, 'four responses');
    t.same(
      r.responses.map((x) => x.status),
      [200, 200, 200, 200],
    );
    t.equal(r.responses[0]!.body, 'path:/slow-300', 'first: the slow one');
    t.ok(r.responses[1]!.body === BIG, 'second: 200 KiB intact');
    t.equal(r.responses[2]!.body, 'abcdef', 'third: the chunked one, re-chunked');
    t.equal(r.responses[2]!.headers['transfer-encoding'], 'chunked');
    t.equal(r.responses[3]!.body, 'path:/fast', 'fourth');
    t.equal(r.responses[3]!.headers.connection, 'close', 'the last (Connection: close) response says so');
    t.ok(r.closed, 'lb closed the connection after it');
  });

  t.test('300 requests pipelined in one write: at most 128 are taken, answered in order, then the connection closes', async (t) => {
    const seen = up.requests.length;
    const methods = Array.from({ length: 300 }, () => 'GET');
    const r = await exchange(port, Array.from({ length: 300 }, (_, i) => get(`/p${i}`)).join(''), { methods });
    const n = r.responses.length;
    t.ok(n >= 32 && n <= 128, `${n} answered (32 to 128)`);
    t.ok(
      r.responses.every((x, i) => x.body === `path:/p${i}`),
      'in request order',
    );
    t.ok(r.closed, 'then closed');
    t.equal(up.requests.length - seen, n, 'the upstream got exactly the answered ones');
  });

  t.test('a malformed request pipelined behind a slow one: the good response comes whole, then 400 and the connection closes', async (t) => {
    const seen = up.requests.length;
    const r = await exchange(port, get('/slow-200') + 'G@T /x HTTP/1.1\r\nHost: h\r\n\r\n', { methods: ['GET', 'GET'] });
    t.equal(r.responses.length, 2, 'two responses, in order');
    t.equal(r.responses[0]!.status, 200);
    t.equal(r.responses[0]!.body, 'path:/slow-200');
    t.not(r.responses[0]!.headers.connection, 'close', 'the good response keeps the keep-alive it announced');
    t.equal(r.responses[1]!.status, 400, "then the malformed request's own 400 (as HAProxy and NGINX)");
    t.ok(r.closed, 'connection closed');
    t.equal(up.requests.length - seen, 1, 'only the good request reached the upstream');
  });

  t.test('framing: a chunked backend response is close-delimited to an HTTP/1.0 client, chunked to HTTP/1.1', async (t) => {
    const r10 = await exchange(port, 'GET /chunked HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n', { methods: ['GET'] });
    t.equal(r10.responses[0]?.body, 'abcdef');
    t.equal(r10.responses[0]?.headers['transfer-encoding'], undefined, 'no chunked coding to HTTP/1.0');
    t.equal(r10.responses[0]?.headers.connection, 'close');
    t.ok(r10.closed, 'the body ended with the connection');
    const r11 = await exchange(port, get('/chunked') + get('/fast', 'Connection: close\r\n'), { methods: ['GET', 'GET'] });
    t.equal(r11.responses[0]?.headers['transfer-encoding'], 'chunked');
    t.equal(r11.responses[0]?.headers.connection, 'keep-alive', 'persistent');
    t.equal(r11.responses[0]?.headers['keep-alive'], 'timeout=7', 'Keep-Alive hint from idle_timeout');
    t.equal(r11.responses[1]?.body, 'path:/fast', 'the connection carried the next request');
  });

  t.test('HEAD gets a head only, and the next request on the connection is framed right', async (t) => {
    const r = await exchange(port, `HEAD /chunked HTTP/1.1\r\nHost: h\r\n\r\n` + get('/fast', 'Connection: close\r\n'), { methods: ['HEAD', 'GET'] });
    t.equal(r.responses.length, 2);
    t.equal(r.responses[0]!.status, 200);
    t.equal(r.responses[1]!.body, 'path:/fast');
  });

  t.test('Expect: 100-continue gets 100 Continue before the final response; any other expectation gets 417', async (t) => {
    const seen = up.requests.length;
    const bad = await exchange(port, `POST /e HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\nhi`, { methods: ['POST'] });
    t.equal(bad.responses[0]?.status, 417);
    t.ok(bad.closed, 'closed after 417');
    t.equal(up.requests.length, seen, 'the upstream saw nothing of it');
    const s = net.connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.write(`POST /c HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n`);
    await waitFor(() => got.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 3000, '100 Continue');
    s.write('hi');
    await waitFor(() => /HTTP\/1\.1 200 OK[\s\S]*path:\/c$/.test(got), 3000, 'the final response');
    t.equal(up.requests.at(-1)?.body.toString(), 'hi', 'the body reached the upstream');
  });

  t.test("a client's FIN right after its request: the response is still sent", async (t) => {
    const r = await exchange(port, get('/slow-150'), { methods: ['GET'], half: true });
    t.equal(r.responses[0]?.status, 200);
    t.equal(r.responses[0]?.body, 'path:/slow-150');
    t.ok(r.closed, 'then lb closed');
  });

  t.test('the bytes sent right behind an Upgrade request reach the backend after its head', async (t) => {
    const s = net.connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    const conns = up.connections.length;
    s.write(`GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nfirst-frame-bytes`);
    await waitFor(() => got.startsWith('HTTP/1.1 101'), 3000, '101 through lb');
    const text = await waitFor(() => {
      const c = up.connections.slice(conns).map((l) => Buffer.concat(l).toString('latin1'));
      return c.find((x) => x.includes('first-frame-bytes'));
    }, 3000, 'the bytes after the head at the upstream');
    t.match(text, /^GET \/ws HTTP\/1\.1\r\n[\s\S]*\r\n\r\nfirst-frame-bytes$/, 'head, then the bytes, once');
  });

  t.test('a FIN sent right behind an Upgrade request reaches the backend (lb was still connecting to it)', async (t) => {
    const r = await exchange(port, `GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nbye`, { methods: ['GET'], half: true });
    t.equal(r.responses[0]?.status, 101, '101 through lb');
    t.ok(r.closed, 'the backend saw the FIN and closed; lb passed that on');
  });

  t.test('50 upgrades in a row: each gets its 101, and plain requests are served after them', async (t) => {
    let ok = 0;
    for (let i = 0; i < 50; i++) {
      const r = await exchange(port, `GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n`, { methods: ['GET'], answered: true });
      if (r.responses[0]?.status === 101) ok++;
    }
    t.equal(ok, 50, 'every upgrade answered 101');
    const r = await exchange(port, get('/after', 'Connection: close\r\n'), { methods: ['GET'] });
    t.equal(r.responses[0]?.body, 'path:/after', 'lb still serving');
    t.notMatch(lb.stdout(), /worker died/, 'no worker died');
  });

  t.test('a response in 16,000 small pieces to a client that stops reading: lb holds the backend back, then all of it arrives in order', async (t) => {
    const s = net.connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.pause();
    s.write(get('/stream'));
    // lb writes each piece as it comes until its client's buffers are full, then stops reading the backend.
    await waitFor(() => streamBlocked, 20_000, 'the backend to wait for lb');
    const parts: Buffer[] = [];
    let got = '';
    s.on('data', (d: Buffer) => {
      parts.push(d);
      if (d.includes('\r\n0\r\n\r\n')) got = Buffer.concat(parts).toString('latin1');
    });
    s.resume();
    await waitFor(() => got, 30_000, 'the whole response');
    const [r] = parseResponses(got, ['GET']);
    t.equal(r?.status, 200);
    t.equal(r?.headers['transfer-encoding'], 'chunked');
    const body = r?.body ?? '';
    t.equal(body.length, STREAM_CHUNKS * 1000, 'every byte arrived');
    let inOrder = true;
    for (let i = 0; i < STREAM_CHUNKS && inOrder; i++) inOrder = body.slice(i * 1000, i * 1000 + 8) === String(i).padStart(8, '0');
    t.ok(inOrder, 'the pieces in order');
  });

  t.test('a reloaded idle_timeout applies to a connection that was idle under the old one', async (t) => {
    const s = net.connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    let got = '';
    let closedAt = 0;
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('close', () => (closedAt = performance.now()));
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(get('/before-reload'));
    await waitFor(() => got.includes('path:/before-reload'), 3000, 'the first response (idle_timeout 7s)');
    fs.writeFileSync(lb.configFile, withStateFile(config('1s'), lb.dir));
    const r = await cli(['reload', '-s', lb.socket]);
    t.equal(r.code, 0, 'reload applied');
    s.write(get('/after-reload'));
    await waitFor(() => got.includes('path:/after-reload'), 3000, 'the response');
    const answered = performance.now();
    t.match(got, /Keep-Alive: timeout=1\r\n/, 'the response carries the new hint');
    await waitFor(() => closedAt, 4000, 'lb to close the idle connection');
    const idle = closedAt - answered;
    t.ok(idle > 800 && idle < 2000, `closed ${Math.round(idle)}ms after the response (idle_timeout now 1s, was 7s)`);
  });
});

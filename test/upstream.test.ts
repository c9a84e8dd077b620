// The proxy's upstream HTTP/1.1 client (src/dataplane/upstream.ts) against scripted backends on loopback:
// what it writes, what it accepts, when it reuses a connection and how each failure is reported.

import net from 'node:net';
import { PassThrough } from 'node:stream';
import t from 'tap';
import { UpstreamPool, UPSTREAM_CODES, type UpstreamRequest } from '../src/dataplane/upstream.js';
import { CHUNKED, NO_BODY } from '../src/dataplane/http-server.js';
import { startRecordingUpstream, type RecordingUpstream } from './helpers/hardening.js';
import { waitFor } from './helpers/lb.js';

/** A backend that hands each complete request (raw text, head and body) to `answer`. */
function scripted(answer: (req: string, socket: net.Socket) => void): Promise<RecordingUpstream> {
  return startRecordingUpstream((req, socket) => answer(req.raw, socket));
}

interface Outcome {
  status?: number;
  statusText?: string;
  headers?: string[];
  body: string;
  complete: boolean;
  error?: string;
  connected: boolean;
}

function pool(port: number, o: Partial<ConstructorParameters<typeof UpstreamPool>[0]> = {}): UpstreamPool {
  return new UpstreamPool({ host: '127.0.0.1', port, connectTimeoutMs: 2000, responseTimeoutMs: 2000, idleTimeoutMs: 4000, maxHeaderSize: 16384, ...o });
}

function get(path = '/', extra: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return { method: 'GET', path, headers: ['host', 'example.test'], hasHost: true, body: null, framing: NO_BODY, upgrade: false, reuse: 'any', ...extra };
}

/** One exchange; `pauseFirst` returns false from the first onData and resumes `pauseMs` (50) later. */
function exchange(p: UpstreamPool, req: UpstreamRequest, opts: { pauseFirst?: boolean; pauseMs?: number; abortOnConnect?: boolean } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const o: Outcome = { body: '', complete: false, connected: false };
    let resume: (() => void) | undefined;
    let paused = false;
    p.dispatch(req, {
      onConnect(abort) {
        o.connected = true;
        if (opts.abortOnConnect) abort(Object.assign(new Error('client closed'), { code: 'TEST_ABORT' }));
      },
      onHeaders(status, headers, text, r) {
        o.status = status;
        o.headers = headers;
        o.statusText = text;
        resume = r;
        return true;
      },
      onData(chunk) {
        o.body += chunk.toString('latin1');
        if (opts.pauseFirst && !paused) {
          paused = true;
          setTimeout(() => resume!(), opts.pauseMs ?? 50);
          return false;
        }
        return true;
      },
      onComplete(last) {
        if (last) o.body += last.toString('latin1');
        o.complete = true;
        resolve(o);
      },
      onError(err) {
        o.error = err.code ?? err.message;
        resolve(o);
      },
      onInformational() {},
      onUpgrade(_text, _headers, socket) {
        socket.destroy();
        o.error = 'UPGRADED';
        resolve(o);
      },
    });
  });
}

const ok = (body: string, extra = ''): string => `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${extra}\r\n${body}`;

t.test('writes the request head as given, adds Host only when missing, reuses the connection', async (t) => {
  const b = await scripted((_req, s) => s.write(ok('hi')));
  t.teardown(() => b.close());
  const p = pool(b.port);
  const r1 = await exchange(p, get('/a?x=1', { headers: ['Host', 'example.test', 'X-Y', 'z'] }));
  t.same([r1.status, r1.statusText, r1.body, r1.complete], [200, 'OK', 'hi', true]);
  t.same(r1.headers, ['Content-Length', '2']);
  const r2 = await exchange(p, get('/b', { headers: ['accept', '*/*'], hasHost: false }));
  t.equal(r2.body, 'hi');
  t.equal(b.requests[0]?.raw, 'GET /a?x=1 HTTP/1.1\r\nHost: example.test\r\nX-Y: z\r\n\r\n');
  t.equal(b.requests[1]?.raw, `GET /b HTTP/1.1\r\naccept: */*\r\nhost: 127.0.0.1:${b.port}\r\n\r\n`);
  t.equal(b.connections.length, 1, 'the second request went over the first connection');
  t.equal(p.connections, 1);
  p.close();
  await waitFor(() => p.connections === 0 && b.open() === 0, 2000, 'close() to end the idle connection');
});

t.test('Content-Length bodies pass as they are; bodies of unknown length go chunked', async (t) => {
  const b = await scripted((_req, s) => s.write(ok('ok')));
  t.teardown(() => b.close());
  const p = pool(b.port);
  t.teardown(() => p.close());
  const fixed = new PassThrough();
  const done1 = exchange(p, get('/up', { method: 'POST', headers: [], hasHost: false, body: fixed, framing: 10 }));
  fixed.write('01234');
  setTimeout(() => fixed.end('56789'), 20);
  t.equal((await done1).body, 'ok');
  t.equal(b.requests[0]?.raw, `POST /up HTTP/1.1\r\nhost: 127.0.0.1:${b.port}\r\ncontent-length: 10\r\n\r\n0123456789`);
  const chunked = new PassThrough();
  const done2 = exchange(p, get('/up', { method: 'POST', headers: ['host', 'h'], body: chunked, framing: CHUNKED }));
  chunked.write('abc');
  setTimeout(() => chunked.end(Buffer.alloc(17, 'x')), 20);
  t.equal((await done2).complete, true);
  t.equal(b.requests[1]?.raw, `POST /up HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n11\r\n${'x'.repeat(17)}\r\n0\r\n\r\n`);
  t.equal(b.connections.length, 1);
});

t.test('1xx responses are skipped, HEAD and 304 have no body, trailers stay out of the next head', async (t) => {
  const b = await scripted((req, s) => {
    if (req.startsWith('HEAD')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n');
    else if (req.includes('/early')) s.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n' + ok('final'));
    else if (req.includes('/304')) s.write('HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n');
    else if (req.includes('/trailers')) s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\nX-Trailer: t\r\n\r\n');
    else s.write(ok('plain'));
  });
  t.teardown(() => b.close());
  const p = pool(b.port);
  t.teardown(() => p.close());
  const early = await exchange(p, get('/early'));
  t.same([early.status, early.body], [200, 'final'], 'the final response, not the 103 or the 100');
  t.same(early.headers, ['Content-Length', '5']);
  const head = await exchange(p, get('/', { method: 'HEAD' }));
  t.same([head.status, head.body, head.complete], [200, '', true]);
  const nm = await exchange(p, get('/304'));
  t.same([nm.status, nm.body, nm.complete], [304, '', true]);
  const tr = await exchange(p, get('/trailers'));
  t.same([tr.body, tr.complete], ['wxyz', true]);
  const after = await exchange(p, get('/next'));
  t.same(after.headers, ['Content-Length', '5'], 'no trailer field in the next response');
  t.equal(b.connections.length, 1, 'all of them over one connection');
});

t.test('a response delimited by the end of the connection completes; a cut one is an error', async (t) => {
  const b = await scripted((req, s) => {
    if (req.includes('/eof')) s.end('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end');
    else if (req.includes('/cut')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this');
    else s.end(); // answers nothing
  });
  t.teardown(() => b.close());
  const p = pool(b.port);
  t.teardown(() => p.close());
  const eof = await exchange(p, get('/eof'));
  t.same([eof.status, eof.body, eof.complete, eof.error], [200, 'until the end', true, undefined]);
  const cut = await exchange(p, get('/cut'));
  t.equal(cut.status, 200);
  t.equal(cut.complete, false);
  t.match(cut.error, /^HPE_/, 'llhttp reports the short body');
  const silent = await exchange(p, get('/silent'));
  t.same([silent.status, silent.error, silent.connected], [undefined, UPSTREAM_CODES.closed, true]);
  await waitFor(() => p.connections === 0, 2000, 'closed connections to be forgotten');
});

t.test('response timeout, refused connection, malformed and unrequested responses', async (t) => {
  const b = await scripted((req, s) => {
    if (req.includes('/slow')) return; // never answers
    if (req.includes('/junk')) s.write('HTTP/1.1 abc\r\n\r\n');
    else if (req.includes('/101')) s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n');
    else if (req.includes('/extra')) s.write(ok('one') + ok('two'));
    else s.write(ok('fine'));
  });
  t.teardown(() => b.close());
  const p = pool(b.port, { responseTimeoutMs: 150 });
  t.teardown(() => p.close());
  const t0 = Date.now();
  const slow = await exchange(p, get('/slow'));
  t.equal(slow.error, UPSTREAM_CODES.responseTimeout);
  t.ok(Date.now() - t0 >= 140, 'not before the timeout');
  t.match((await exchange(p, get('/junk'))).error, /^HPE_/);
  t.equal((await exchange(p, get('/101'))).error, UPSTREAM_CODES.badResponse);
  const before = b.connections.length;
  const extra = await exchange(p, get('/extra'));
  t.same([extra.body, extra.complete], ['one', true]);
  await waitFor(() => p.connections === 0, 2000, 'the connection with an unrequested response to close');
  t.equal((await exchange(p, get('/ok'))).body, 'fine');
  t.equal(b.connections.length, before + 2, 'a new connection after the unrequested response');
  const dead = await scripted(() => {});
  await dead.close();
  const refused = await exchange(pool(dead.port), get('/'));
  t.same([refused.error, refused.connected], ['ECONNREFUSED', false], 'onConnect is not called when connecting fails');
});

t.test('response_timeout runs from the end of the request body, not from its head', async (t) => {
  const b = await scripted((req, s) => {
    if (!req.includes('/never')) s.write(ok('got it'));
  });
  t.teardown(() => b.close());
  const p = pool(b.port, { responseTimeoutMs: 150 });
  t.teardown(() => p.close());
  const trickle = (path: string): { done: Promise<Outcome>; ended: Promise<number> } => {
    const body = new PassThrough();
    const done = exchange(p, get(path, { method: 'POST', headers: ['content-length', '40'], body }));
    const ended = new Promise<number>((resolve) => {
      let n = 0;
      const timer = setInterval(() => {
        body.write('0123456789');
        if (++n === 4) {
          clearInterval(timer);
          body.end();
          resolve(performance.now());
        }
      }, 100);
    });
    return { done, ended };
  };
  const slowUpload = trickle('/upload');
  const r = await slowUpload.done;
  t.same([r.status, r.body, r.error], [200, 'got it', undefined], 'a 400 ms upload is not cut by a 150 ms response_timeout');
  const silent = trickle('/never');
  const [r2, ended] = await Promise.all([silent.done, silent.ended]);
  const waited = performance.now() - ended;
  t.equal(r2.error, UPSTREAM_CODES.responseTimeout);
  t.ok(waited >= 140, `timed out ${Math.round(waited)} ms after the body was sent`);
});

t.test('read_timeout: a body that stops is cut; a slow steady body and a slow client are not', async (t) => {
  const big = 'z'.repeat(2 * 1024 * 1024);
  const b = await scripted((req, s) => {
    if (req.includes('/stall')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello');
    else if (req.includes('/big')) s.write(ok(big));
    else {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n');
      let n = 0;
      const timer = setInterval(() => {
        if (s.destroyed) return clearInterval(timer);
        s.write('abcde'[n]!);
        if (++n === 5) clearInterval(timer);
      }, 60);
    }
  });
  t.teardown(() => b.close());
  const p = pool(b.port, { readTimeoutMs: 200 });
  t.teardown(() => p.close());
  const t0 = performance.now();
  const stalled = await exchange(p, get('/stall'));
  const waited = performance.now() - t0;
  t.same([stalled.status, stalled.body, stalled.error], [200, 'hello', UPSTREAM_CODES.readTimeout], 'cut after the 5 bytes that came');
  t.ok(waited >= 190 && waited < 1000, `cut ${Math.round(waited)} ms after the request (read_timeout 200 ms)`);
  const trickled = await exchange(p, get('/trickle'));
  t.same([trickled.body, trickled.complete, trickled.error], ['abcde', true, undefined], 'a byte every 60 ms for 300 ms passes whole');
  const slowClient = await exchange(p, get('/big'), { pauseFirst: true, pauseMs: 600 });
  t.same([slowClient.body.length, slowClient.complete, slowClient.error], [big.length, true, undefined], 'a client pausing 600 ms is not the backend timing out');
});

t.test('back-pressure: a paused exchange resumes and completes; abort from onConnect writes nothing', async (t) => {
  const big = 'y'.repeat(512 * 1024);
  const b = await scripted((_req, s) => s.write(ok(big)));
  t.teardown(() => b.close());
  const p = pool(b.port);
  t.teardown(() => p.close());
  const r = await exchange(p, get('/'), { pauseFirst: true });
  t.same([r.complete, r.body.length], [true, big.length]);
  const aborted = await exchange(p, get('/'), { abortOnConnect: true });
  t.equal(aborted.error, 'TEST_ABORT');
  t.equal(b.requests.length, 1, 'the aborted request never reached the backend');
});

t.test("a backend's Keep-Alive timeout hint shortens the idle time, or ends reuse", async (t) => {
  const b = await scripted((req, s) => s.write(ok('k', req.includes('/once') ? 'Keep-Alive: timeout=1\r\n' : 'Keep-Alive: timeout=2\r\n')));
  t.teardown(() => b.close());
  const p = pool(b.port, { idleTimeoutMs: 60_000 });
  t.teardown(() => p.close());
  await exchange(p, get('/once'));
  await waitFor(() => p.connections === 0, 2000, 'timeout=1 (no time left after the margin) to end the connection');
  await exchange(p, get('/twice'));
  t.equal(p.connections, 1);
  const t0 = Date.now();
  await waitFor(() => p.connections === 0, 5000, 'the idle connection to close after timeout=2 less the margin');
  t.ok(Date.now() - t0 >= 800, `closed after ${Date.now() - t0} ms idle`);
  t.equal(b.connections.length, 2);
});

// lb's own HTTP/2 framing (src/dataplane/h2-session.ts) against RFC 9113, through the real daemon: frames
// written by hand on raw sockets, so that nothing client-side smooths them. Each case checks what the client
// gets (a response, RST_STREAM or GOAWAY with the RFC's error code) and, at the end, that no worker died and
// a well-formed client is still served. A random-frame fuzzer then throws a bounded number of broken
// connections at the same worker.

import t from 'tap';
import http from 'node:http';
import http2 from 'node:http2';
import { randomBytes } from 'node:crypto';
import { freePort, httpConfig, startLb, startUpstream, waitFor } from './helpers/lb.js';
import { FRAME, RawH2, headerBlock } from './helpers/h2raw.js';
import { h2request } from './helpers/h2.js';
import { HpackDecoder } from '../src/dataplane/hpack.js';

const ERR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, FLOW_CONTROL_ERROR: 3, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 };
const GET: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'site.test']];
const POST = (path: string): Array<[string, string]> => [[':method', 'POST'], [':scheme', 'http'], [':path', path], [':authority', 'site.test']];

/** The response head on `stream` (lb's header blocks never use the dynamic table: one decoder per block). */
async function responseHead(c: RawH2, stream: number): Promise<Record<string, string>> {
  const f = await c.responseOn(stream);
  const list = new HpackDecoder().decode(f.payload, 1 << 20)!;
  const out: Record<string, string> = {};
  for (let i = 0; i < list.length; i += 2) out[list[i]!] = list[i + 1]!;
  return out;
}

function dataOf(c: RawH2, stream: number): Buffer {
  return Buffer.concat(c.frames.filter((f) => f.type === FRAME.DATA && f.stream === stream).map((f) => f.payload));
}

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const setting = (id: number, value: number): Buffer => {
  const b = Buffer.alloc(6);
  b.writeUInt16BE(id);
  b.writeUInt32BE(value, 2);
  return b;
};

t.test('RFC 9113 through lb: frames, flow control, limits', async (t) => {
  let release: (() => void) | undefined;
  const held: Array<() => void> = [];
  const backend = await startUpstream('app', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url === '/slow') {
        held.push(() => res.end('slow'));
        release = () => held.splice(0).forEach((f) => f());
        return;
      }
      if (req.url === '/big') {
        res.end(Buffer.alloc(1000, 'x'));
        return;
      }
      if (req.url === '/huge') {
        // 8 MiB in 64 KiB writes, each byte its offset mod 251 (checked by the client).
        let sent = 0;
        const more = (): void => {
          while (sent < 8 << 20) {
            const chunk = Buffer.alloc(65536);
            for (let i = 0; i < chunk.length; i++) chunk[i] = (sent + i) % 251;
            sent += chunk.length;
            if (!res.write(chunk)) return void res.once('drain', more);
          }
          res.end();
        };
        more();
        return;
      }
      res.end(`got ${body.length} ${body.toString('latin1').slice(0, 40)}`);
    });
  });
  t.teardown(() => backend.close());
  const port = await freePort();
  const lb = await startLb(
    httpConfig(port, `http2 = true\nhttp2_max_concurrent_streams = 4\nmax_header_size = 8192\n[pools.app]\nbackends = [{ address = "127.0.0.1:${backend.port}" }]`, 1, 'level = "info"\naccess = true'),
    [port],
  );
  t.teardown(() => lb.stop());
  const open = async (settings?: Buffer): Promise<RawH2> => {
    const c = await RawH2.connect(port, settings);
    t.teardown(() => c.close());
    return c;
  };

  await t.test('PING is answered with an ACK carrying the same 8 bytes', async (t) => {
    const c = await open();
    c.send(FRAME.PING, 0, 0, Buffer.from('lb-ping!'));
    const f = await waitFor(() => c.frames.find((x) => x.type === FRAME.PING), 10_000, 'PING ACK');
    t.equal(f.flags & 1, 1, 'ACK flag');
    t.equal(f.payload.toString(), 'lb-ping!', 'same payload');
  });

  await t.test('a header block split over CONTINUATION frames, and padded HEADERS and DATA', async (t) => {
    const c = await open();
    const block = headerBlock([...POST('/echo'), ['x-long', 'v'.repeat(3000)]]);
    c.send(FRAME.HEADERS, 0, 1, block.subarray(0, 1000));
    c.send(FRAME.CONTINUATION, 0, 1, block.subarray(1000, 2000));
    c.send(FRAME.CONTINUATION, 0x4, 1, block.subarray(2000));
    // DATA with PADDED: pad length 5, "hello", 5 bytes of padding.
    c.send(FRAME.DATA, 0x8 | 0x1, 1, Buffer.concat([Buffer.from([5]), Buffer.from('hello'), Buffer.alloc(5)]));
    const head = await responseHead(c, 1);
    t.equal(head[':status'], '200');
    await waitFor(() => c.frames.some((f) => f.stream === 1 && f.type === FRAME.DATA && (f.flags & 1) === 1), 10_000, 'the end of the response');
    t.equal(dataOf(c, 1).toString(), 'got 5 hello', 'the backend got the body without the padding');
    // PADDED and PRIORITY on a HEADERS frame.
    const b3 = headerBlock(GET);
    c.send(FRAME.HEADERS, 0x1 | 0x4 | 0x8 | 0x20, 3, Buffer.concat([Buffer.from([3]), u32(0), Buffer.from([16]), b3, Buffer.alloc(3)]));
    t.equal((await responseHead(c, 3))[':status'], '200', 'padded HEADERS with priority fields: answered');
  });

  await t.test('send flow control: a client window of 100 bytes gets the body as the window opens', async (t) => {
    const c = await open(setting(4, 100));
    c.headers(1, [...GET.slice(0, 2), [':path', '/big'], [':authority', 'site.test']]);
    await responseHead(c, 1);
    await waitFor(() => dataOf(c, 1).length >= 100, 10_000, 'the first 100 bytes');
    // Nothing more until the window opens (the frames already here are all there is).
    await new Promise((r) => setImmediate(r));
    t.equal(dataOf(c, 1).length, 100, 'no more than the stream window');
    c.send(FRAME.WINDOW_UPDATE, 0, 1, u32(2000));
    await waitFor(() => dataOf(c, 1).length === 1000, 10_000, 'the rest after WINDOW_UPDATE');
    t.ok(c.frames.some((f) => f.stream === 1 && f.type === FRAME.DATA && (f.flags & 1) === 1), 'END_STREAM on the last DATA');
  });

  await t.test('three concurrent 8 MiB responses to a client with wide-open windows arrive whole', async (t) => {
    // Windows (stream and connection) far larger than the bodies: only the socket paces lb's writes.
    const client = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 1 << 30 } });
    t.teardown(() => client.close());
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    client.setLocalWindowSize(1 << 30);
    const one = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const r = client.request({ ':path': '/huge' });
        let off = 0;
        let bad = -1;
        r.on('data', (d: Buffer) => {
          for (let i = 0; i < d.length && bad < 0; i++) if (d[i] !== (off + i) % 251) bad = off + i;
          off += d.length;
        });
        r.on('end', () => (bad >= 0 ? reject(new Error(`wrong byte at ${bad}`)) : resolve(off)));
        r.on('error', reject);
      });
    const sizes = await waitFor(() => Promise.all([one(), one(), one()]), 120_000, 'three 8 MiB responses');
    t.same(sizes, [8 << 20, 8 << 20, 8 << 20], 'three concurrent 8 MiB bodies, every byte in place');
  });

  await t.test('a client that shrinks its HPACK table (SETTINGS_HEADER_TABLE_SIZE 0) is answered', async (t) => {
    // nghttp2 expects a dynamic table size update in the first header block after such a SETTINGS.
    const client = http2.connect(`http://127.0.0.1:${port}`, { settings: { headerTableSize: 0 } });
    t.teardown(() => client.close());
    const failed = new Promise<never>((_, reject) => client.once('error', reject));
    const r = await Promise.race([h2request(client, { ':path': '/t0' }), failed]);
    t.equal(r.status, 200);
    const again = await Promise.race([h2request(client, { ':path': '/t0' }), failed]);
    t.equal(again.status, 200, 'and again on the same connection');
  });

  await t.test('streams over SETTINGS_MAX_CONCURRENT_STREAMS are refused (REFUSED_STREAM)', async (t) => {
    const c = await open();
    const slow: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/slow'], [':authority', 'site.test']];
    for (const id of [1, 3, 5, 7]) c.headers(id, slow);
    c.headers(9, slow);
    t.equal(await c.resetOf(9), ERR.REFUSED_STREAM, 'the fifth stream');
    await waitFor(() => held.length === 4, 10_000, 'the four streams at the backend');
    release!();
    for (const id of [1, 3, 5, 7]) t.equal((await responseHead(c, id))[':status'], '200', `stream ${id} answered`);
  });

  await t.test('a header list over max_header_size: 431, the connection lives on', async (t) => {
    const c = await open();
    c.headers(1, [...GET, ['x-big', 'v'.repeat(9000)]]);
    t.equal((await responseHead(c, 1))[':status'], '431');
    c.headers(3, GET);
    t.equal((await responseHead(c, 3))[':status'], '200', 'the next stream is served');
    const line = await waitFor(() => lb.logs().find((l) => l.status === 431), 10_000, 'the 431 logged');
    t.equal(line.proto, 'h2');
  });

  await t.test('trailers without END_STREAM: RST_STREAM PROTOCOL_ERROR', async (t) => {
    const c = await open();
    c.headers(1, POST('/echo'), true);
    c.send(FRAME.HEADERS, 0x4, 1, headerBlock([['x-trailer', '1']]));
    t.equal(await c.resetOf(1), ERR.PROTOCOL_ERROR);
  });

  const connectionErrors: Array<{ name: string; code: number; send: (c: RawH2) => void }> = [
    { name: 'a frame larger than 16384 bytes', code: ERR.FRAME_SIZE_ERROR, send: (c) => c.send(FRAME.DATA, 0, 1, Buffer.alloc(16385)) },
    { name: 'SETTINGS of 5 bytes', code: ERR.FRAME_SIZE_ERROR, send: (c) => c.send(FRAME.SETTINGS, 0, 0, Buffer.alloc(5)) },
    { name: 'SETTINGS_MAX_FRAME_SIZE below 16384', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.SETTINGS, 0, 0, setting(5, 100)) },
    { name: 'SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1', code: ERR.FLOW_CONTROL_ERROR, send: (c) => c.send(FRAME.SETTINGS, 0, 0, setting(4, 0x80000000)) },
    { name: 'HEADERS on an even stream', code: ERR.PROTOCOL_ERROR, send: (c) => c.headers(2, GET) },
    { name: 'another frame inside a header block', code: ERR.PROTOCOL_ERROR, send: (c) => (c.send(FRAME.HEADERS, 0, 1, headerBlock(GET)), c.send(FRAME.PING, 0, 0, Buffer.alloc(8))) },
    { name: 'CONTINUATION without HEADERS', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.CONTINUATION, 0x4, 1, headerBlock(GET)) },
    { name: 'DATA on stream 0', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.DATA, 0, 0, Buffer.from('x')) },
    { name: 'DATA on an idle stream', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.DATA, 1, 7, Buffer.from('x')) },
    { name: 'RST_STREAM on an idle stream', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.RST_STREAM, 0, 9, u32(8)) },
    { name: 'PUSH_PROMISE from a client', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.PUSH_PROMISE, 0x4, 1, Buffer.concat([u32(2), headerBlock(GET)])) },
    { name: 'WINDOW_UPDATE of 0 on the connection', code: ERR.PROTOCOL_ERROR, send: (c) => c.send(FRAME.WINDOW_UPDATE, 0, 0, u32(0)) },
    { name: 'a connection window above 2^31-1', code: ERR.FLOW_CONTROL_ERROR, send: (c) => c.send(FRAME.WINDOW_UPDATE, 0, 0, u32(0x7fffffff)) },
    { name: 'padding as long as the DATA payload', code: ERR.PROTOCOL_ERROR, send: (c) => (c.headers(1, POST('/echo'), true), c.send(FRAME.DATA, 0x8, 1, Buffer.from([3, 1, 2]))) },
    { name: 'an HPACK index past the tables', code: ERR.COMPRESSION_ERROR, send: (c) => c.send(FRAME.HEADERS, 0x5, 1, Buffer.from([0xff, 0x7f])) },
    {
      name: 'a CONTINUATION flood (a header block that never ends)',
      code: ERR.ENHANCE_YOUR_CALM,
      send: (c) => {
        c.send(FRAME.HEADERS, 0, 1, headerBlock(GET));
        for (let i = 0; i < 40; i++) c.send(FRAME.CONTINUATION, 0, 1, Buffer.alloc(16384, 0x40));
      },
    },
    {
      name: '2000 empty DATA frames (a glitch flood)',
      code: ERR.ENHANCE_YOUR_CALM,
      send: (c) => {
        c.headers(1, POST('/echo'), true);
        for (let i = 0; i < 2000; i++) c.send(FRAME.DATA, 0, 1);
      },
    },
  ];
  for (const e of connectionErrors) {
    await t.test(`${e.name}: GOAWAY ${e.code}, the connection closed`, async (t) => {
      const c = await open();
      e.send(c);
      t.equal(await c.goawayCode(), e.code, 'the error code');
      await waitFor(() => c.closed, 10_000, 'the connection closed');
    });
  }

  await t.test('a first frame other than SETTINGS: GOAWAY PROTOCOL_ERROR', async (t) => {
    const net = await import('node:net');
    const s = net.connect(port, '127.0.0.1');
    t.teardown(() => s.destroy());
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x08\x06\x00\x00\x00\x00\x00abcdefgh', 'latin1'));
    await waitFor(() => s.closed || s.readableEnded, 10_000, 'the connection closed');
    const all = Buffer.concat(got);
    // SETTINGS (lb's) then GOAWAY: find the GOAWAY frame.
    let off = 0;
    let code = -1;
    while (off + 9 <= all.length) {
      const len = all.readUIntBE(off, 3);
      if (all[off + 3] === FRAME.GOAWAY) code = all.readUInt32BE(off + 9 + 4);
      off += 9 + len;
    }
    t.equal(code, ERR.PROTOCOL_ERROR);
  });

  await t.test('HEADERS on a stream already closed is ignored (RFC 9113 §5.1), and its HPACK block still read', async (t) => {
    const c = await open();
    c.headers(5, GET);
    await responseHead(c, 5);
    // Stream 3 was never opened (implicitly closed by 5); a block that adds to the dynamic table on it
    // (literal with incremental indexing, new name), then stream 7 refers to that entry (index 62).
    const add = Buffer.concat([Buffer.from([0x40, 6]), Buffer.from('x-late'), Buffer.from([1]), Buffer.from('1')]);
    c.send(FRAME.HEADERS, 0x5, 3, Buffer.concat([headerBlock(GET), add]));
    c.send(FRAME.HEADERS, 0x5, 7, Buffer.concat([headerBlock(GET), Buffer.from([0x80 | 62])]));
    t.equal((await responseHead(c, 7))[':status'], '200', 'the next stream is served');
    t.notOk(c.frames.some((f) => f.type === FRAME.GOAWAY), 'no GOAWAY');
  });

  await t.test('unknown frame types are ignored', async (t) => {
    const c = await open();
    c.send(0xfa, 0, 0, Buffer.from('whatever'));
    c.send(0xfb, 0xff, 1, Buffer.from('whatever'));
    c.headers(1, GET);
    t.equal((await responseHead(c, 1))[':status'], '200');
  });

  await t.test('a random-frame fuzzer: no worker dies; a well-formed client is served after', async (t) => {
    // Bounded: 300 connections, each a valid preface then 1-20 frames of random type, flags, stream and
    // payload (some with a valid header block first), closed after 20 ms at most.
    let seed = 12345;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let i = 0; i < 300; i++) {
      const c = await RawH2.connect(port);
      if (rnd(2) === 0) c.headers(1, GET, rnd(2) === 0);
      const n = 1 + rnd(20);
      for (let j = 0; j < n; j++) {
        const len = rnd(4) === 0 ? 0 : rnd(64);
        c.send(rnd(11), rnd(256), rnd(8), rnd(3) === 0 ? headerBlock(GET).subarray(0, len) : randomBytes(len));
      }
      await new Promise((r) => setTimeout(r, rnd(20)));
      c.close();
    }
    const client = http2.connect(`http://127.0.0.1:${port}`);
    t.teardown(() => client.close());
    const r = await h2request(client, { ':path': '/after' });
    t.equal(r.status, 200, 'served');
  });

  t.notOk(lb.logs().some((l) => l.level === 'fatal' || /worker died/.test(String(l.msg))), 'no worker died');
});


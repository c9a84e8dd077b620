// Fuzzing lb's HTTP/1.1 handling with fast-check (seeded), through `lb run` over raw sockets, on both sides.
// Requests: valid ones (plain, with Content-Length or chunked bodies, HEAD, Expect, pipelined pairs, an
// upgrade) with a few bytes inserted, deleted or replaced from an alphabet of framing characters, sent on a
// fresh connection followed by a FIN. Properties: lb answers every connection and closes it within its
// deadline (no hang); what it sends is empty or starts with a well-formed status line; every request the
// upstream receives has a token method and an origin-form target; no worker dies, and a normal request is
// served afterwards.
// Responses: a backend answers with valid responses (Content-Length, chunked, trailers, 204, 304, 1xx first,
// close-delimited, Keep-Alive hints) mutated the same way. Properties: the client gets a well-formed status
// line or a closed connection in time, and the normal request sent right after each one gets exactly its own
// answer (a malformed response never leaves bytes that lb would take for the next response).

import t from 'tap';
import fc from 'fast-check';
import net from 'node:net';
import { lbConfig, rawExchange, startRecordingUpstream } from './helpers/hardening.js';
import { freePort, get, startLb } from './helpers/lb.js';

const TEMPLATES = [
  'GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n',
  'HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n',
  'POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello',
  'POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc',
  'GET /f HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n',
  'GET /g HTTP/1.1\r\nHost: h\r\n\r\nGET /h HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n',
  'GET /i HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nafter',
];
const ALPHABET = ['\r', '\n', ' ', '\t', ':', '\0', '\x7f', '0', 'f', '-', ',', ';', 'a', '/', '\xff'];

const mutation = fc.record({
  op: fc.constantFrom('insert', 'delete', 'replace'),
  at: fc.nat(),
  ch: fc.constantFrom(...ALPHABET),
});

function mutate(base: string, muts: Array<{ op: string; at: number; ch: string }>): string {
  let s = base;
  for (const m of muts) {
    const i = m.at % (s.length + 1);
    if (m.op === 'insert') s = s.slice(0, i) + m.ch + s.slice(i);
    else if (m.op === 'delete') s = s.slice(0, i) + s.slice(i + 1);
    else s = s.slice(0, i) + m.ch + s.slice(i + 1);
  }
  return s;
}

t.test('mutated requests: always an answer or a close in time, well-formed output, nothing malformed upstream, no crash', async (t) => {
  const up = await startRecordingUpstream();
  const port = await freePort();
  const lb = await startLb(
    lbConfig({ port, upstreams: [up.port], listener: 'client_header_timeout = "1s"\nclient_body_timeout = "1s"\nidle_timeout = "1s"' }),
    [port],
  );
  t.teardown(async () => {
    await lb.stop();
    await up.close();
  });
  let runs = 0;
  let answered = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...TEMPLATES), fc.array(mutation, { minLength: 1, maxLength: 4 }), async (base, muts) => {
      const bytes = Buffer.from(mutate(base, muts), 'latin1');
      const r = await rawExchange(port, bytes, 4000, { half: true });
      runs++;
      if (r.raw !== '') answered++;
      if (!r.closed) throw new Error(`lb kept the connection open 4 s after the client's FIN: ${JSON.stringify(bytes.toString('latin1'))}`);
      if (r.raw !== '' && !/^HTTP\/1\.1 [1-5]\d\d /.test(r.raw)) throw new Error(`not a status line: ${JSON.stringify(r.raw.slice(0, 80))}`);
    }),
    { seed: 20261122, numRuns: 1000 },
  );
  t.equal(runs, 1000, '1000 mutated requests sent');
  t.ok(answered > 700, `${answered} of them answered (the rest: closed without an answer)`);
  const bad = up.requests.filter((q) => !/^[A-Z]+$/.test(q.method) || !q.path.startsWith('/'));
  t.same(
    bad.map((q) => q.raw.slice(0, 60)),
    [],
    `every one of the ${up.requests.length} requests the upstream received has a token method and an origin-form target`,
  );
  t.notMatch(lb.stdout(), /worker died/, 'no worker died');
  const ok = await get(port, '/after');
  t.equal(ok.status, 200, 'a normal request is served afterwards');
});

const RESPONSES = [
  'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n',
  'HTTP/1.1 204 No Content\r\n\r\n',
  'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
  'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  'HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\n\r\nabc',
  'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nxyz',
];

t.test('mutated responses: the client gets a well-formed answer or a close in time, and the next response is never desynchronized', async (t) => {
  const answers = new Map<string, string>();
  const sockets = new Set<net.Socket>();
  const up = net.createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (let end = buf.indexOf('\r\n\r\n'); end !== -1; end = buf.indexOf('\r\n\r\n')) {
        const path = buf.slice(0, end).split(' ')[1] ?? '';
        buf = buf.slice(end + 4);
        const fuzzed = answers.get(path);
        if (fuzzed !== undefined) s.write(Buffer.from(fuzzed, 'latin1'));
        else s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`);
      }
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), up.close(() => r()))));
  const port = await freePort();
  const lb = await startLb(
    lbConfig({ port, upstreams: [(up.address() as net.AddressInfo).port], pool: 'retries = 0\nresponse_timeout = "300ms"\nread_timeout = "300ms"' }),
    [port],
  );
  t.teardown(() => lb.stop());
  let n = 0;
  let cut = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...RESPONSES), fc.array(mutation, { minLength: 1, maxLength: 3 }), async (base, muts) => {
      const i = n++;
      const fuzzed = mutate(base, muts);
      answers.set(`/fz-${i}`, fuzzed);
      const r = await rawExchange(port, `GET /fz-${i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`, 3000);
      if (!r.closed) throw new Error(`no answer or close within 3 s for ${JSON.stringify(fuzzed)}`);
      if (r.raw === '') cut++;
      else if (!/^HTTP\/1\.1 [1-5]\d\d /.test(r.raw)) throw new Error(`not a status line: ${JSON.stringify(r.raw.slice(0, 80))} for ${JSON.stringify(fuzzed)}`);
      const next = await rawExchange(port, `GET /plain-${i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`, 3000);
      if (!next.raw.endsWith(`\r\n\r\n/plain-${i}`)) throw new Error(`the request after ${JSON.stringify(fuzzed)} got ${JSON.stringify(next.raw.slice(0, 120))}`);
    }),
    { seed: 20261122, numRuns: 300 },
  );
  t.equal(n, 300, '300 mutated responses');
  t.pass(`${300 - cut} answered with a status line, ${cut} closed without one; every following request got its own answer`);
  t.notMatch(lb.stdout(), /worker died/, 'no worker died');
});

// Fuzzing lb's HTTP/1.1 server side with fast-check (seeded), through `lb run` over raw sockets: valid
// requests (plain, with Content-Length or chunked bodies, HEAD, Expect, pipelined pairs, an upgrade) with a
// few bytes inserted, deleted or replaced from an alphabet of framing characters, sent on a fresh
// connection followed by a FIN. Properties: lb answers every connection and closes it within its deadline
// (no hang); what it sends is empty or starts with a well-formed status line; every request the upstream
// receives has a token method and an origin-form target; no worker dies, and a normal request is served
// afterwards.

import t from 'tap';
import fc from 'fast-check';
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

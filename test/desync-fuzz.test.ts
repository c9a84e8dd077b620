// Desync invariant fuzzer: fast-check generates client byte streams from a grammar of request pieces (valid
// requests with Content-Length or chunked bodies, and smuggling attempts: conflicting framing, Connection
// options, obs-fold, bare LF, odd whitespace, upgrades, Expect), split into random writes, and sends two or
// three of them at once on separate connections through one lb to a recording backend that echoes the
// target of every request it parses. Invariants, per run:
//   1. every request the backend parsed is one lb parsed, accepted and logged (access log: method + target),
//      and carries exactly the body its client sent with it;
//   2. every client receives only answers to its own requests, in the order it sent them.
// Seeded (LB_FUZZ_SEED, default 14) and sized by LB_FUZZ_RUNS (default 2000); LB_FUZZ_SHRINK=1 shrinks a
// failure (slow: every shrink step is a real exchange).
// LB_FUZZ_SEED, LB_FUZZ_RUNS, LB_FUZZ_KINDS and LB_FUZZ_SHRINK are read below.

import net from 'node:net';
import t from 'tap';
import fc from 'fast-check';
import { finals, parseResponses, startBackend, type Case } from './helpers/differential.js';
import { lbConfig } from './helpers/hardening.js';
import { freePort, startLb, waitFor } from './helpers/lb.js';

t.setTimeout(300_000);

const SEED = Number(process.env.LB_FUZZ_SEED ?? 14);
const RUNS = Number(process.env.LB_FUZZ_RUNS ?? 2000);

/** One generated request piece: its bytes (with @ standing for the request's target) and what a faithful parse forwards. */
interface Piece {
  kind: string;
  method: string;
  /** The body a correct proxy forwards with this request, when it forwards it. */
  body: string;
  render: (target: string) => string;
  /** Targets that appear inside the bytes but are not requests lb may forward (smuggled inner requests). */
  inner: boolean;
}

const word = fc.stringMatching(/^[a-z0-9]{1,12}$/);
const inner = (target: string): string => `GET ${target}-inner HTTP/1.1\r\nHost: h\r\n\r\n`;
const chunkedOf = (body: string, cuts: number[], ext: string, trailer: string): string => {
  const parts: string[] = [];
  let at = 0;
  for (const c of [...cuts.map((x) => x % (body.length + 1)).sort((a, b) => a - b), body.length]) {
    if (c > at) parts.push(body.slice(at, c));
    at = Math.max(at, c);
  }
  return parts.map((p) => `${p.length.toString(16)}${ext}\r\n${p}\r\n`).join('') + `0\r\n${trailer}\r\n`;
};

const valid: fc.Arbitrary<Piece> = fc.oneof(
  fc.record({ h: fc.constantFrom('', 'X-A: b\r\n', 'Connection: keep-alive\r\n', 'Connection: x-foo\r\nX-Foo: 1\r\n', 'TE: trailers\r\nConnection: te\r\n') }).map(({ h }) => ({
    kind: 'get',
    method: 'GET',
    body: '',
    inner: false,
    render: (tg: string) => `GET ${tg} HTTP/1.1\r\nHost: h\r\n${h}\r\n`,
  })),
  fc.record({ body: word, expect: fc.boolean() }).map(({ body, expect }) => ({
    kind: 'post-cl',
    method: 'POST',
    body,
    inner: false,
    render: (tg: string) => `POST ${tg} HTTP/1.1\r\nHost: h\r\n${expect ? 'Expect: 100-continue\r\n' : ''}Content-Length: ${body.length}\r\n\r\n${body}`,
  })),
  fc.record({ body: word, cuts: fc.array(fc.nat(), { maxLength: 3 }), ext: fc.constantFrom('', ';a=b'), trailer: fc.constantFrom('', 'X-T: 1\r\n') }).map(({ body, cuts, ext, trailer }) => ({
    kind: 'post-chunked',
    method: 'POST',
    body,
    inner: false,
    render: (tg: string) => `POST ${tg} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunkedOf(body, cuts, ext, trailer)}`,
  })),
  fc.constantFrom('h2c', 'websocket').map((proto) => ({
    kind: `upgrade-${proto}`,
    method: 'GET',
    body: '',
    inner: false,
    render: (tg: string) => `GET ${tg} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade${proto === 'h2c' ? ', HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__' : ''}\r\nUpgrade: ${proto}\r\n${proto === 'websocket' ? 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' : ''}\r\n`,
  })),
);

/** Smuggling attempts: each hides `inner(target)` where a careless parser would see a second request. */
const SMUGGLE_HEADS: Array<(len: number) => string> = [
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding: chunked\r\n`,
  (len) => `Transfer-Encoding: chunked\r\nContent-Length: ${len}\r\n`,
  (len) => `Content-Length: 5\r\nContent-Length: ${len}\r\n`,
  (len) => `Connection: content-length\r\nContent-Length: ${len}\r\n`,
  (len) => `Connection: close, Content-Length\r\nContent-Length: ${len}\r\n`,
  (len) => `Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\nContent-Length: ${len}\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding : chunked\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding: chunked, identity\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding:\tchunked\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding: x\r\n chunked\r\n`,
  (len) => `Content-Length: ${len}\r\nX: y\nTransfer-Encoding: chunked\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding: xchunked\r\n`,
  (len) => `Content-Length: ${len}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n`,
  (len) => `Content-Length: ${len}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n`,
  (len) => `Content-Length:  ${len} \r\nTransfer_Encoding: chunked\r\n`,
];
const smuggle: fc.Arbitrary<Piece> = fc.record({ i: fc.nat({ max: SMUGGLE_HEADS.length - 1 }), chunkedFirst: fc.boolean(), method: fc.constantFrom('POST', 'GET') }).map(({ i, chunkedFirst, method }) => ({
  kind: `smuggle-${i}${chunkedFirst ? '-chunked' : ''}`,
  method,
  // Where lb forwards such a request at all, it forwards what it framed: the body it parsed. The checks
  // below only need that the inner request never reaches the backend as a request.
  body: '*',
  inner: true,
  render: (tg: string) => {
    const bodyText = chunkedFirst ? `0\r\n\r\n${inner(tg)}` : inner(tg);
    return `${method} ${tg} HTTP/1.1\r\nHost: h\r\n${SMUGGLE_HEADS[i]!(bodyText.length)}\r\n${bodyText}`;
  },
}));
/** Malformed heads that must be refused. */
const malformed: fc.Arbitrary<Piece> = fc.constantFrom(
  'GET @ HTTP/1.1\nHost: h\n\n',
  'GET @ HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n',
  'GET @ HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n',
  'GET @ HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n',
  'GET @ HTTP/1.1\r\nX: y\r\n\r\n',
  'GET @ HTTP/1.1\r\nHost: a b\r\n\r\n',
  'POST @ HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\nx',
  'GET @ HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n',
).map((tpl) => ({ kind: 'malformed', method: 'GET', body: '*', inner: false, render: (tg: string) => tpl.replace('@', tg) }));

// LB_FUZZ_KINDS=regex keeps only the piece kinds it matches (e.g. '^(get|post)' to check the fuzzer itself on plain traffic).
const KINDS = process.env.LB_FUZZ_KINDS ? new RegExp(process.env.LB_FUZZ_KINDS) : undefined;
const piece = fc.oneof({ arbitrary: valid, weight: 6 }, { arbitrary: smuggle, weight: 3 }, { arbitrary: malformed, weight: 1 }).filter((p) => !KINDS || KINDS.test(p.kind));
const stream = fc.record({ pieces: fc.array(piece, { minLength: 1, maxLength: 5 }), cuts: fc.array(fc.nat(), { maxLength: 4 }) });

interface Sent {
  target: string;
  piece: Piece;
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % buf.length))].filter((c) => c > 0).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of [...points, buf.length]) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  return out;
}

/** Sends the writes and collects the answer until lb closes, every piece is answered, or 1.5 s pass. */
let deadlines = 0;
function exchange(port: number, writes: Buffer[], pieces: number): Promise<{ raw: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ raw: Buffer.concat(chunks), closed });
    };
    const timer = setTimeout(() => {
      deadlines++;
      done();
    }, 1500);
    s.on('error', () => {});
    s.on('connect', () => {
      for (const w of writes) s.write(w);
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (parseResponses(Buffer.concat(chunks), false).complete >= pieces) done();
    });
    s.on('close', () => {
      closed = true;
      done();
    });
  });
}

t.test('desync invariants hold for generated client streams through lb', async (t) => {
  const backend = await startBackend();
  t.teardown(() => backend.close());
  const port = await freePort();
  const toml = lbConfig({ port, upstreams: [backend.port], pool: 'retries = 2\nresponse_timeout = "5s"' }).replace('level = "warn"', 'level = "info"\naccess = true');
  const lb = await startLb(toml, [port]);
  t.teardown(() => lb.stop());

  // Access log lines as they come: "METHOD target" -> statuses logged for it.
  const logged = new Map<string, number[]>();
  let partial = '';
  lb.proc.stdout!.on('data', (d: Buffer) => {
    partial += d.toString();
    const lines = partial.split('\n');
    partial = lines.pop()!;
    for (const l of lines) {
      if (!l.includes('"msg":"access"')) continue;
      const r = JSON.parse(l) as { method?: string; path?: string; status: number };
      const k = `${r.method} ${r.path}`;
      logged.set(k, [...(logged.get(k) ?? []), r.status]);
    }
  });

  /** Backend-parsed requests whose access line has not been seen yet. */
  let pending: Array<{ key: string; since: number; streams: string }> = [];
  /** Problems of pending entries: logged as refused, or not logged after `graceMs`. */
  const checkLogged = (graceMs: number): string[] => {
    const out: string[] = [];
    pending = pending.filter((p) => {
      const statuses = logged.get(p.key);
      if (statuses) {
        if (statuses.every((st) => st >= 400 && st < 500)) out.push(`backend parsed ${p.key}, which lb logged as refused (${statuses.join(',')}); streams:\n${p.streams}`);
        return false;
      }
      if (Date.now() - p.since > graceMs) {
        out.push(`backend parsed ${p.key}, which lb never logged; streams:\n${p.streams}`);
        return false;
      }
      return true;
    });
    return out;
  };
  const showStreams = (sent: Sent[][]): string => sent.map((c) => c.map((s) => JSON.stringify(s.piece.render(s.target))).join(' + ')).join('\n');
  let run = 0;
  const kinds = new Map<string, number>();
  const fuzzCase: Case = { id: 'fuzz', group: 'fuzz', title: 'fuzz', steps: [], expect: {} };
  const property = fc.asyncProperty(fc.array(stream, { minLength: 2, maxLength: 3 }), async (clients) => {
    run++;
    backend.begin(fuzzCase);
    const sent: Sent[][] = clients.map((c, ci) => c.pieces.map((p, pi) => ({ target: `/f/${run}/${ci}/${pi}`, piece: p })));
    for (const c of sent) for (const s of c) kinds.set(s.piece.kind, (kinds.get(s.piece.kind) ?? 0) + 1);
    const results = await Promise.all(
      clients.map((c, ci) => {
        const bytes = Buffer.from(sent[ci]!.map((s) => s.piece.render(s.target)).join(''), 'latin1');
        return exchange(port, splitAt(bytes, c.cuts), c.pieces.length);
      }),
    );
    // Let the backend see whatever lb still sends for this run before it is closed off.
    let quiet = Date.now();
    let last = backend.lastByte();
    await waitFor(() => {
      if (backend.lastByte() !== last) {
        last = backend.lastByte();
        quiet = Date.now();
      }
      return Date.now() - quiet >= 10;
    }, 5000, 'the backend to go quiet', 2);
    const seen = backend.end();

    const problems: string[] = [];
    const byTarget = new Map(sent.flat().map((s) => [s.target, s]));
    // Invariant 1: the backend parsed only requests lb parsed, accepted and logged, each with its own body.
    for (const r of seen.requests) {
      const s = byTarget.get(r.target);
      if (!s) {
        problems.push(`backend parsed ${r.method} ${JSON.stringify(r.target.slice(0, 60))}, which no client sent as a request (smuggled or mangled)`);
        continue;
      }
      if (s.piece.body !== '*' && r.body.toString('latin1') !== s.piece.body) problems.push(`${r.target}: backend got body ${JSON.stringify(r.body.toString('latin1').slice(0, 40))}, client sent ${JSON.stringify(s.piece.body)}`);
      // Access lines come in batches (up to ~100 ms late): checked at the end of later runs and at the end.
      pending.push({ key: `${r.method} ${r.target}`, since: Date.now(), streams: showStreams(sent) });
    }
    problems.push(...checkLogged(3000));
    // Invariant 2: each client got answers to its own requests only, in order.
    results.forEach((res, ci) => {
      const parsed = parseResponses(res.raw, res.closed);
      let lastIndex = -1;
      for (const m of finals({ responses: parsed.responses } as never)) {
        let echoed: string | undefined;
        try {
          echoed = (JSON.parse(m.body.toString()) as { t?: string }).t;
        } catch {
          continue; // lb's own answer (400, 502...)
        }
        if (!echoed) continue;
        const idx = sent[ci]!.findIndex((s) => s.target === echoed);
        if (idx === -1) problems.push(`client ${ci} received the answer to ${echoed}, not one of its requests`);
        else if (idx <= lastIndex) problems.push(`client ${ci} received the answer to ${echoed} out of order`);
        else lastIndex = idx;
      }
    });
    if (problems.length) throw new Error(`${problems.join('\n')}\nclient streams:\n${showStreams(sent)}`);
  });

  const out = await fc.check(property, { numRuns: RUNS, seed: SEED, endOnFailure: process.env.LB_FUZZ_SHRINK !== '1', interruptAfterTimeLimit: 150_000, markInterruptAsFailure: false });
  // The last runs' access lines.
  const late: string[] = [];
  await waitFor(() => (late.push(...checkLogged(3000)), pending.length === 0), 10_000, 'the last access lines').catch(() => late.push(`${pending.length} requests never logged`));
  t.same(late, [], 'every request the backend parsed in the last runs was logged by lb as accepted');
  t.comment(`seed ${SEED}: ${out.numRuns} runs of 2-3 concurrent clients (${[...kinds.values()].reduce((a, b) => a + b, 0)} request pieces: ${[...kinds].map(([k, n]) => `${k} ${n}`).join(', ')}; ${deadlines} exchanges ended by their 1.5 s deadline)`);
  t.notOk(out.failed, out.failed ? `counterexample (seed ${SEED}, path ${out.counterexamplePath}):\n${(out.errorInstance as Error | undefined)?.message}` : `no desync in ${out.numRuns} runs`);
  t.ok(out.numRuns >= Math.min(RUNS, 500) || out.failed, `enough runs completed (${out.numRuns})`);
});

// The fallback HTTP parser (src/node-internals/http-parser.ts) against Node's llhttp binding: both get the
// same bytes — the smuggling corpus (test/helpers/smuggling-corpus.ts), the valid requests sent through lb
// by test/hardening-smuggling.test.ts and test/http-server.test.ts, and responses as backends send them —
// whole and in random splits, and must report the same callback sequence: message begin, the head
// (fields, method, url, status, upgrade, keep-alive), body bytes, trailers, message complete, where the
// parser stopped (upgrade), and whether and how it failed (HPE_* code), then what finish() says.

import t from 'tap';
import { FALLBACK_METHODS, FallbackHTTPParser } from '../src/node-internals/http-parser.js';
import { HTTPParser, httpParserCapability, type ParserInstance } from '../src/node-internals/llhttp.js';
import { MAX_HEADER, ROWS, VALID } from './helpers/smuggling-corpus.js';

type Ev = unknown[];
interface Case {
  id: string;
  type: 'req' | 'res';
  bytes: string;
  /** Responses: the request was HEAD (the client's on_headers_complete returns 1). */
  head?: boolean;
  maxHeader?: number;
}

interface ParserClassLike {
  new (): ParserInstance;
  REQUEST: number;
  RESPONSE: number;
}

/** The normalized callback sequence `Parser` reports for `bytes` fed in pieces ending at `cuts`. */
function trace(Parser: ParserClassLike, methods: readonly string[], c: Case, cuts: number[]): Ev[] {
  const p = new Parser();
  p.initialize(c.type === 'req' ? Parser.REQUEST : Parser.RESPONSE, {}, c.maxHeader ?? MAX_HEADER, 0);
  const ev: Ev[] = [];
  let pending: string[] = [];
  let pendingUrl = '';
  let inBody = false;
  let upgrading = false;
  let upgraded = false;
  p[0] = () => {
    ev.push(['begin']);
  };
  p[1] = (headers: string[], url: string) => {
    const last = ev[ev.length - 1];
    if (inBody && last?.[0] === 'trailers') (last[1] as string[]).push(...headers);
    else if (inBody) ev.push(['trailers', [...headers]]);
    else {
      pending.push(...headers);
      pendingUrl += url ?? '';
    }
  };
  p[2] = (major: number, minor: number, headers: string[] | undefined, method: number, url: string | undefined, status: number, text: string, upgrade: boolean, keepAlive: boolean) => {
    const all = [...pending, ...(headers ?? [])];
    pending = [];
    const u = url ?? pendingUrl;
    pendingUrl = '';
    inBody = true;
    upgrading = upgrade || status === 101 || methods[method] === 'CONNECT';
    ev.push(['head', major, minor, all, c.type === 'req' ? (methods[method] ?? `#${method}`) : null, c.type === 'req' ? u : null, status ?? null, text ?? null, upgrade, keepAlive]);
    if (c.type === 'req') return methods[method] === 'CONNECT' ? 2 : 0;
    return c.head || status < 200 ? 1 : 0;
  };
  p[3] = (chunk: Buffer) => {
    const last = ev[ev.length - 1];
    if (last?.[0] === 'body') last[1] += chunk.toString('latin1');
    else ev.push(['body', chunk.toString('latin1')]);
  };
  p[4] = () => {
    inBody = false;
    upgraded = upgrading;
    ev.push(['complete']);
  };
  const data = Buffer.from(c.bytes, 'latin1');
  let at = 0;
  for (const end of [...cuts, data.length]) {
    if (end <= at) continue;
    const piece = data.subarray(at, end);
    const r = p.execute(piece);
    if (r instanceof Error) {
      ev.push(['error', (r as Error & { code: string }).code]);
      p.close();
      return ev;
    }
    // Both stop after an upgrade message: where the read ends there, the binding stops at the start of the
    // next one (it enters its upgrade pause then).
    if (r < piece.length || upgraded) {
      ev.push(['stopped', at + r]);
      p.close();
      return ev;
    }
    at = end;
  }
  const f = p.finish();
  ev.push(['finish', f instanceof Error ? (f as Error & { code: string }).code : 'ok']);
  p.close();
  return ev;
}

/** Deterministic pseudo-random cuts (mulberry32), so that a failure can be replayed from its seed. */
function cutsFor(length: number, seed: number): number[] {
  let s = seed >>> 0;
  const rnd = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const n = 1 + Math.floor(rnd() * Math.min(12, length));
  const cuts = new Set<number>();
  for (let i = 0; i < n; i++) cuts.add(1 + Math.floor(rnd() * Math.max(1, length - 1)));
  return [...cuts].sort((a, b) => a - b);
}

const req = (id: string, bytes: string, o: Partial<Case> = {}): Case => ({ id, type: 'req', bytes, ...o });
const res = (id: string, bytes: string, o: Partial<Case> = {}): Case => ({ id, type: 'res', bytes, ...o });
const h = 'Host: h\r\n';

const CASES: Case[] = [
  ...ROWS.map((r) => req(r.id, r.bytes.replace(/ID/g, r.id))),
  ...VALID.map((r) => req(r.id, r.bytes.replace(/ID/g, r.id))),
  // Requests as test/http-server.test.ts and test/http-trust.test.ts send them.
  req('pipelined', `GET /a HTTP/1.1\r\n${h}\r\nGET /b HTTP/1.1\r\n${h}\r\nPOST /c HTTP/1.1\r\n${h}Content-Length: 3\r\n\r\nabcGET /d HTTP/1.1\r\n${h}\r\n`),
  req('keep-alive-1.0', `GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n`),
  req('close-then-more', `GET / HTTP/1.1\r\n${h}Connection: close\r\n\r\nGET /x HTTP/1.1\r\n\r\n`),
  req('close-then-crlf', `GET / HTTP/1.1\r\n${h}Connection: close\r\n\r\n\r\n`),
  req('leading-crlf', `\r\n\r\nGET / HTTP/1.1\r\n${h}\r\n`),
  req('upgrade', `GET /ws HTTP/1.1\r\n${h}Connection: Upgrade\r\nUpgrade: test\r\n\r\nfirst-frame-bytes`),
  req('upgrade-tokens', `GET /ws HTTP/1.1\r\n${h}Connection: keep-alive, UPGRADE\r\nUpgrade: h2c\r\n\r\nGET /next HTTP/1.1\r\n\r\n`),
  req('upgrade-with-body', `POST /ws HTTP/1.1\r\n${h}Connection: upgrade\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabcdef`),
  req('upgrade-no-connection', `GET /ws HTTP/1.1\r\n${h}Upgrade: x\r\n\r\nGET /n HTTP/1.1\r\n${h}\r\n`),
  req('connect', `CONNECT a.example:443 HTTP/1.1\r\n${h}\r\ntunnel bytes`),
  req('expect', `POST /c HTTP/1.1\r\n${h}Expect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi`),
  req('chunked-trailers', `POST / HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10;a=b;c="d e\\"f"\r\n0123456789abcdef\r\n0\r\nT1: v1\r\nT2:  v2  \r\n\r\nGET /after HTTP/1.1\r\n${h}\r\n`),
  req('chunked-leading-zeros', `POST / HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n000\r\n\r\n`),
  req('chunked-upper-hex', `POST / HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n`),
  req('te-gzip-then-chunked', `POST / HTTP/1.1\r\n${h}Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`),
  req('te-not-chunked', `POST / HTTP/1.1\r\n${h}Transfer-Encoding: gzip\r\n\r\n`),
  req('cl-trailing-space', `POST / HTTP/1.1\r\n${h}Content-Length: 1 \r\n\r\nx`),
  req('cl-empty', `POST / HTTP/1.1\r\n${h}Content-Length: \r\n\r\n`),
  req('value-ws', `GET / HTTP/1.1\r\nA:  b \t\r\nB:\r\nC:\t\r\n${h}\r\n`),
  req('value-obs-text', `GET / HTTP/1.1\r\nA: caf\xe9\r\n${h}\r\n`),
  req('value-del', `GET / HTTP/1.1\r\nA: a\x7fb\r\n${h}\r\n`),
  req('value-nul', `GET / HTTP/1.1\r\nA: a\x00b\r\n${h}\r\n`),
  req('value-tab', `GET / HTTP/1.1\r\nA: a\tb\r\n${h}\r\n`),
  req('field-no-colon', `GET / HTTP/1.1\r\nA\r\n${h}\r\n`),
  req('field-empty-name', `GET / HTTP/1.1\r\n: b\r\n${h}\r\n`),
  req('bare-cr-value', `GET / HTTP/1.1\r\nA: b\rc\r\n${h}\r\n`),
  req('method-lower', 'get / HTTP/1.1\r\n\r\n'),
  req('method-unknown', 'FOO / HTTP/1.1\r\n\r\n'),
  req('method-long', 'PROPPATCHPROPPATCHPROPPATCH / HTTP/1.1\r\n\r\n'),
  req('method-spaces', `GET   / HTTP/1.1\r\n${h}\r\n`),
  req('query-method', `QUERY / HTTP/1.1\r\n${h}\r\n`),
  req('m-search', `M-SEARCH * HTTP/1.1\r\n${h}\r\n`),
  req('url-tab', `GET /a\tb HTTP/1.1\r\n${h}\r\n`),
  req('url-high', `GET /\x80 HTTP/1.1\r\n${h}\r\n`),
  req('url-fragment', `GET /#a?b HTTP/1.1\r\n${h}\r\n`),
  req('url-absolute', `GET http://a.example/b?c HTTP/1.1\r\n${h}\r\n`),
  req('url-asterisk', `OPTIONS * HTTP/1.1\r\n${h}\r\n`),
  req('url-relative', `GET a HTTP/1.1\r\n${h}\r\n`),
  req('version-12', `GET / HTTP/1.2\r\n${h}\r\n`),
  req('version-lower', `GET / http/1.1\r\n${h}\r\n`),
  req('version-space', `GET / HTTP/1.1 \r\n${h}\r\n`),
  req('bare-lf-line', `GET / HTTP/1.1\n${h}\n`),
  req('bare-lf-header', `GET / HTTP/1.1\r\nA: b\n${h}\r\n`),
  req('bare-lf-end', `GET / HTTP/1.1\r\n${h}\n`),
  req('many-fields', `GET / HTTP/1.1\r\n${h}${Array.from({ length: 70 }, (_, i) => `F${i}: v${i}\r\n`).join('')}\r\n`),
  req('many-fields-trailers', `POST / HTTP/1.1\r\n${h}${Array.from({ length: 40 }, (_, i) => `F${i}: v${i}\r\n`).join('')}Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n${Array.from({ length: 40 }, (_, i) => `T${i}: v\r\n`).join('')}\r\n`),
  req('head-just-under', `GET / HTTP/1.1\r\nX: ${'a'.repeat(8000)}\r\n\r\n`),
  req('head-at-limit', `GET / HTTP/1.1\r\nX: ${'a'.repeat(MAX_HEADER - 2)}\r\n\r\n`),
  req('head-over', `GET / HTTP/1.1\r\nX: ${'a'.repeat(MAX_HEADER)}\r\n\r\n`),
  req('url-over', `GET /${'a'.repeat(MAX_HEADER)} HTTP/1.1\r\n\r\n`),
  req('head-over-incomplete', `GET / HTTP/1.1\r\nX: ${'a'.repeat(MAX_HEADER + 10)}`),
  req('trailers-over', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: ${'a'.repeat(MAX_HEADER)}\r\n\r\n`),
  req('chunk-ext-long', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;${'a'.repeat(20000)}\r\nx\r\n0\r\n\r\n`),
  req('chunk-size-space', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n`),
  req('chunk-size-lf', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\r\n0\r\n\r\n`),
  req('chunk-data-long', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n`),
  req('chunk-ext-space', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a b\r\nx\r\n0\r\n\r\n`),
  req('chunk-ext-empty-value', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=\r\nx\r\n0\r\n\r\n`),
  req('chunk-size-overflow', `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n`),
  req('cut-in-body', `POST / HTTP/1.1\r\n${h}Content-Length: 10\r\n\r\nabc`),
  req('cut-in-head', `GET / HTTP/1.1\r\n${h}`),
  // Responses as backends send them (the upstream client's side).
  res('ok-cl', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n'),
  res('no-reason', 'HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n'),
  res('reason-obs-text', 'HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 0\r\n\r\n'),
  res('eof-body', 'HTTP/1.1 200 OK\r\n\r\nuntil the end'),
  res('eof-body-1.0', 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nab'),
  res('chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n'),
  res('te-gzip-eof', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc'),
  res('te-chunked-gzip', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc'),
  res('cl-te', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'),
  res('cl-dup', 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx'),
  res('head', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n', { head: true }),
  res('204-cl', 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'),
  res('304', 'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n'),
  res('100-then-200', 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  res('103-then-200', 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
  res('101', 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nframes after'),
  res('101-no-upgrade-fields', 'HTTP/1.1 101 S\r\nUpgrade: x\r\n\r\nabc'),
  res('upgrade-fields-on-200', 'HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: x\r\nContent-Length: 1\r\n\r\nx'),
  res('close-then-more', 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n\r\nX'),
  res('status-2-digits', 'HTTP/1.1 20 OK\r\n\r\n'),
  res('status-4-digits', 'HTTP/1.1 2000 OK\r\n\r\n'),
  res('status-099', 'HTTP/1.1 099 x\r\nContent-Length: 0\r\n\r\n'),
  res('status-bare-lf', 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n'),
  res('not-http', 'HTTX/1.1 200 OK\r\n\r\n'),
  res('cut-in-chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel'),
  res('keep-alive-1.0', 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nxHTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n'),
  res('head-over', `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(MAX_HEADER)}\r\n\r\n`),
];

/**
 * Where the fallback is stricter than the binding on purpose (http-parser.ts says why): llhttp parses
 * these, lb's listener refuses them after it (400), the fallback refuses them as it parses (400 too).
 */
const STRICTER: Record<string, string> = {
  'http09': 'HTTP/0.9 request line',
  'no-version': 'HTTP/0.9 request line',
  'http2-line': 'HTTP/2.0 request line',
};
CASES.push(req('http09', 'GET /\r\n\r\n'), req('http2-line', `GET / HTTP/2.0\r\n${h}\r\n`));

const skip = httpParserCapability.mode !== 'usable' ? 'no llhttp binding in this Node to compare with' : false;

t.test('the fallback parser reports what llhttp reports, fed whole and in random splits', { skip }, async (t) => {
  const binding = HTTPParser as unknown as ParserClassLike;
  const fallback = FallbackHTTPParser as unknown as ParserClassLike;
  const SPLITS = 25;
  let compared = 0;
  for (const c of CASES) {
    // (Method numbers are llhttp's in both; node's `methods` has no name for QUERY's 46: compare numbers.)
    const expected = trace(binding, FALLBACK_METHODS, c, []);
    const got = trace(fallback, FALLBACK_METHODS, c, []);
    if (STRICTER[c.id]) {
      t.notOk(expected.some((e) => e[0] === 'error'), `${c.id}: llhttp parses the ${STRICTER[c.id]}`);
      t.match(got[got.length - 1], ['error', /^HPE_/], `${c.id}: the fallback refuses the ${STRICTER[c.id]}`);
      continue;
    }
    t.same(got, expected, `${c.id}: whole`);
    // Splits: each seed cuts the bytes the same way for both parsers.
    const bytes = Buffer.byteLength(c.bytes, 'latin1');
    for (let seed = 1; seed <= SPLITS; seed++) {
      const cuts = cutsFor(bytes, seed * 7919 + bytes);
      const a = trace(binding, FALLBACK_METHODS, c, cuts);
      const b = trace(fallback, FALLBACK_METHODS, c, cuts);
      compared++;
      if (JSON.stringify(a) !== JSON.stringify(b)) {
        t.same(b, a, `${c.id}: split at ${JSON.stringify(cuts)}`);
        break;
      }
    }
  }
  t.ok(compared >= CASES.length * SPLITS * 0.9, `${compared} split feeds compared`);
  // Each byte on its own (the smallest reads a socket can give).
  for (const c of CASES.filter((x) => !STRICTER[x.id] && x.bytes.length < 2000)) {
    const cuts = Array.from({ length: c.bytes.length }, (_, i) => i + 1);
    t.same(trace(fallback, FALLBACK_METHODS, c, cuts), trace(binding, FALLBACK_METHODS, c, cuts), `${c.id}: a byte at a time`);
  }
});

t.test('the fallback parser keeps the binding interface', async (t) => {
  const p = new FallbackHTTPParser();
  t.throws(() => p.initialize(FallbackHTTPParser.REQUEST, {}, 0, 1), /strict only/, 'no lenient mode');
  p.initialize(FallbackHTTPParser.REQUEST, {}, 0, 0);
  const data = Buffer.from('GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nrest');
  const r = p.execute(data);
  t.equal(r, data.length - 4, 'stops after an upgrade request, returning where the other protocol starts');
  t.equal(p.getCurrentBuffer(), data, 'getCurrentBuffer is the buffer being parsed');
  t.equal(p.execute(Buffer.from('GET / HTTP/1.1\r\n\r\n')), 18, 'parses on from there when called again (a declined upgrade)');
  const bad = p.execute(Buffer.from('GET / HTTP/1.1\r\nA : b\r\n\r\n'));
  t.match(bad, { code: 'HPE_INVALID_HEADER_TOKEN', bytesParsed: Number }, 'errors carry code and bytesParsed');
  t.equal(p.execute(Buffer.from('GET / HTTP/1.1\r\n\r\n')), bad, 'and stay');
  const q = new FallbackHTTPParser();
  q.initialize(FallbackHTTPParser.REQUEST, {}, 0, 0);
  q[FallbackHTTPParser.kOnHeadersComplete] = () => {
    throw new Error('from the callback');
  };
  t.throws(() => q.execute(Buffer.from('GET / HTTP/1.1\r\n\r\n')), /from the callback/, 'a callback that throws throws out of execute');
  t.type(q.execute(Buffer.from('GET / HTTP/1.1\r\n\r\n')), Error, 'and the parser is unusable after');
});

t.test('mutated messages: the fallback never accepts what llhttp refuses, and agrees on what both accept', { skip }, async (t) => {
  // Seeded mutations (replace, insert, delete) of valid requests and responses with the octets framing
  // turns on. Where llhttp accepts and the fallback refuses (HTTP/0.9 lines, empty chunk extension
  // names), lb's answer is a 400 either way; the other way round would be a smuggling gap.
  const binding = HTTPParser as unknown as ParserClassLike;
  const fallback = FallbackHTTPParser as unknown as ParserClassLike;
  const seeds: Case[] = [
    req('s1', `POST /a?b HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n${h}Content-Length: 3\r\n\r\nabc`),
    req('s2', `GET /ws HTTP/1.1\r\n${h}Connection: Upgrade\r\nUpgrade: x\r\n\r\nzz`),
    res('s3', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello'),
    res('s4', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.0 204 N\r\n\r\n'),
  ];
  const octets = [0x20, 0x09, 0x0d, 0x0a, 0x3a, 0x3b, 0x2c, 0x30, 0x31, 0x22, 0x5c, 0x00, 0x7f, 0xff, 0x2f, 0x3d, 0x61];
  let s = 20240601;
  const rnd = (n: number): number => {
    s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff;
    return s % n;
  };
  const refusedOnlyByFallback: string[] = [];
  let gaps = 0;
  let disagreements = 0;
  let bothAccepted = 0;
  const N = 20_000;
  for (let i = 0; i < N; i++) {
    const seed = seeds[rnd(seeds.length)]!;
    const b = [...Buffer.from(seed.bytes, 'latin1')];
    for (let k = 1 + rnd(3); k > 0; k--) {
      const at = rnd(b.length);
      const op = rnd(3);
      const c = octets[rnd(octets.length)]!;
      if (op === 0) b[at] = c;
      else if (op === 1) b.splice(at, 0, c);
      else b.splice(at, 1);
    }
    const c: Case = { ...seed, id: `${seed.id}#${i}`, bytes: Buffer.from(b).toString('latin1') };
    const a = trace(binding, FALLBACK_METHODS, c, []);
    const f = trace(fallback, FALLBACK_METHODS, c, []);
    const aErr = a.some((e) => e[0] === 'error');
    const fErr = f.some((e) => e[0] === 'error');
    if (aErr && !fErr) {
      if (gaps++ < 3) t.fail(`the fallback accepts what llhttp refuses: ${JSON.stringify(c.bytes)}`, { llhttp: a, fallback: f });
    } else if (!aErr && fErr) {
      refusedOnlyByFallback.push(c.bytes);
    } else if (!aErr && !fErr) {
      bothAccepted++;
      if (JSON.stringify(a) !== JSON.stringify(f) && disagreements++ < 3) t.same(f, a, `both accept ${JSON.stringify(c.bytes)}: same callbacks`);
    }
  }
  t.equal(gaps, 0, `no message refused by llhttp is accepted by the fallback (${N} mutations)`);
  t.equal(disagreements, 0, `both accepted ${bothAccepted}: same callbacks for each`);
  t.ok(bothAccepted > N / 10 && bothAccepted < N, 'the mutations give both accepted and refused messages');
  t.comment(`refused by the fallback only: ${refusedOnlyByFallback.length}, e.g. ${JSON.stringify(refusedOnlyByFallback.slice(0, 2))}`);
});

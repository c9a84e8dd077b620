// The differential corpus: raw client conversations with lb's expected outcome (RFC 9110 / 9112), run by
// test/differential.test.ts through lb, HAProxy and NGINX. Targets start with /{id} (the case id) so that
// every byte a backend receives names its case. Rows of test/hardening-smuggling.test.ts are not repeated.

import zlib from 'node:zlib';
import { GZIP_BODY, finals, header, interims, type Case, type Expect, type Outcome, type Reply, type Step } from './helpers/differential.js';

type Check = (o: Outcome) => string | undefined;

const CRLF = '\r\n';
/** A request: `lines` are header lines; Host: h is added unless a line names Host or `noHost`. */
function req(method: string, target: string, lines: string[] = [], body = '', o: { version?: string; noHost?: boolean } = {}): string {
  const host = o.noHost || lines.some((l) => /^host\s*:/i.test(l)) ? [] : ['Host: h'];
  return `${method} ${target} ${o.version ?? 'HTTP/1.1'}${CRLF}${[...host, ...lines].map((l) => l + CRLF).join('')}${CRLF}${body}`;
}
const chunk = (s: string): string => `${s.length.toString(16)}\r\n${s}\r\n`;
const chunked = (...parts: string[]): string => parts.map(chunk).join('') + '0\r\n\r\n';
// No {id} inside: body lengths are computed before the id is filled in (the backend files bytes per case anyway).
const INNER = 'GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n';
const after = (lines: string[] = []): string => req('GET', '/{id}/after', lines);

// ---- checks --------------------------------------------------------------------------------------------
const be = (o: Outcome, i: number) => {
  const r = o.backend.requests[i];
  if (!r) throw new Error(`backend request ${i} missing`);
  return r;
};
const noSmuggled: Check = (o) => (o.backend.requests.some((r) => r.target.includes('smuggled')) ? 'the backend parsed the smuggled inner request' : undefined);
const noBackendBytes = (needle: string): Check => (o) => (o.backend.conns.some((c) => c.includes(needle)) ? `backend received ${JSON.stringify(needle)}` : undefined);
const beHeaderAbsent = (i: number, name: string): Check => (o) => (header(be(o, i), name) !== undefined ? `backend request ${i} carries ${name}: ${header(be(o, i), name)}` : undefined);
const beHeaderIs = (i: number, name: string, value: string | RegExp): Check => (o) => {
  const v = header(be(o, i), name);
  const ok = typeof value === 'string' ? v === value : v !== undefined && value.test(v);
  return ok ? undefined : `backend request ${i} ${name} = ${JSON.stringify(v)}, expected ${value}`;
};
const beBody = (i: number, body: string): Check => (o) => (be(o, i).body.toString('latin1') === body ? undefined : `backend request ${i} body ${JSON.stringify(be(o, i).body.toString('latin1').slice(0, 60))}, expected ${JSON.stringify(body.slice(0, 60))}`);
const xffAdded = (i: number): Check => beHeaderIs(i, 'x-forwarded-for', /127\.0\.0\.1/);
const beTrailer = (i: number, name: string, value: string): Check => (o) => {
  const r = be(o, i);
  const t = r.trailers.find(([n]) => n === name);
  return t?.[1] === value ? undefined : `backend request ${i} trailers ${JSON.stringify(r.trailers)}; expected ${name}: ${value}`;
};
const respTrailer = (i: number, name: string, value: string): Check => (o) => {
  const r = finals(o)[i];
  const t = r?.trailers.find(([n]) => n === name);
  return t?.[1] === value ? undefined : `response ${i} trailers ${JSON.stringify(r?.trailers)}; expected ${name}: ${value}`;
};
const oneAtATime: Check = (o) => (o.backend.maxOutstanding > 1 ? `backend held ${o.backend.maxOutstanding} requests of one client connection at once` : undefined);
/** Response bodies (the backend's JSON echo) answer the requests in order: response i names target i. */
const inOrder = (targets: string[]): Check => (o) => {
  const got = finals(o).map((r) => {
    try {
      return (JSON.parse(r.body.toString()) as { t: string }).t.replace(`/${o.caseId}`, '');
    } catch {
      return `(${r.status})`;
    }
  });
  return JSON.stringify(got) === JSON.stringify(targets) ? undefined : `responses answer ${JSON.stringify(got)}, expected ${JSON.stringify(targets)}`;
};
const atMostOne100: Check = (o) => (interims(o).filter((s) => s === 100).length > 1 ? `client got ${interims(o).filter((s) => s === 100).length} 100 Continue` : undefined);
const tunnelHas = (s: string): Check => (o) => (o.tunnel.includes(s) ? undefined : `tunnel bytes ${JSON.stringify(o.tunnel.slice(0, 60))} lack ${JSON.stringify(s)}`);
const no502: Check = (o) => (finals(o).some((r) => r.status === 502) ? 'the client got a 502' : undefined);
/** Either refused (4xx/5xx, closed, nothing forwarded) or forwarded as exactly this one request with this body, never a desync. */
const rejectOrExact = (body: string): Check => (o) => {
  const f = finals(o);
  if (f[0] && f[0].status >= 400) return o.backend.requests.length ? `refused with ${f[0].status} but the backend parsed ${o.backend.requests.length} requests` : o.closed ? undefined : 'refused but the connection stays open';
  if (o.backend.requests.length !== 1) return `backend parsed ${o.backend.requests.length} requests`;
  return beBody(0, body)(o);
};

const REJECT: Expect = { final: [400], closed: true, forwarded: [], checks: [noSmuggled, noBackendBytes('/smuggled')] };
const reject = (...codes: number[]): Expect => ({ ...REJECT, final: codes.map((c) => [c]) });

export const CASES: Case[] = [];
const add = (c: Case): void => {
  if (CASES.some((x) => x.id === c.id)) throw new Error(`duplicate case id ${c.id}`);
  CASES.push(c);
};
const send = (s: string): Step => ({ send: s });
const wait = (n: number): Step => ({ responses: n });

// ---- A. Connection options x framing --------------------------------------------------------------------
// lb refuses a Connection header that names content-length, transfer-encoding or host (400, nothing
// forwarded); other options are honoured and the nominated fields removed (RFC 9110 §7.6.1).
const BAD_OPTS = ['content-length', 'Content-Length', 'transfer-encoding', 'host', 'HOST', 'keep-alive, content-length', 'close, Transfer-Encoding', 'x-foo, host'];
const GOOD_OPTS: Array<{ opt: string; extra: string[]; checks: Check[]; why?: string }> = [
  { opt: 'upgrade', extra: [], checks: [] },
  { opt: 'keep-alive', extra: ['Keep-Alive: timeout=5'], checks: [beHeaderAbsent(0, 'keep-alive')] },
  { opt: 'te', extra: ['TE: trailers'], checks: [] },
  // HAProxy and NGINX forward a nominated X-Forwarded-For; RFC 9110 §7.6.1 says a proxy MUST remove the fields the Connection header names.
  { opt: 'x-forwarded-for', extra: ['X-Forwarded-For: 6.6.6.6'], checks: [(o) => (/6\.6\.6\.6/.test(header(be(o, 0), 'x-forwarded-for') ?? '') ? 'the nominated client X-Forwarded-For was forwarded' : undefined), xffAdded(0)], why: 'RFC 9110 §7.6.1: a proxy MUST remove the fields named in Connection; lb then adds its own X-Forwarded-For' },
  { opt: 'x-foo', extra: ['X-Foo: 1'], checks: [beHeaderAbsent(0, 'x-foo')] },
  { opt: 'x-foo, x-bar', extra: ['X-Foo: 1', 'X-Bar: 2'], checks: [beHeaderAbsent(0, 'x-foo'), beHeaderAbsent(0, 'x-bar')] },
  { opt: 'keep-alive, x-foo', extra: ['X-Foo: 1'], checks: [beHeaderAbsent(0, 'x-foo')] },
  { opt: 'X-Foo', extra: ['x-foo: 1'], checks: [beHeaderAbsent(0, 'x-foo')] },
];
const FRAMINGS: Array<{ f: string; method: string; lines: string[]; body: string; beBody: string }> = [
  { f: 'none', method: 'GET', lines: [], body: '', beBody: '' },
  { f: 'cl', method: 'POST', lines: ['Content-Length: 5'], body: 'hello', beBody: 'hello' },
  { f: 'cl-inner', method: 'POST', lines: [`Content-Length: ${INNER.length}`], body: INNER, beBody: INNER },
  { f: 'chunked', method: 'POST', lines: ['Transfer-Encoding: chunked'], body: chunked('hello'), beBody: 'hello' },
  { f: 'chunked-inner', method: 'POST', lines: ['Transfer-Encoding: chunked'], body: chunked(INNER), beBody: INNER },
];
for (const fr of FRAMINGS) {
  for (const opt of BAD_OPTS) {
    add({
      id: `conn-${opt.replace(/[^a-zA-Z]+/g, '_')}-${fr.f}`,
      group: 'connection-options',
      title: `Connection: ${opt} on a ${fr.f} request`,
      steps: [send(req(fr.method, '/{id}/x', [`Connection: ${opt}`, ...fr.lines], fr.body) + after()), wait(1)],
      expect: REJECT,
      why: 'a Connection option naming a framing or routing field has no legitimate use: dropping the field desyncs the backend (body forwarded unframed, HTTP/1.1 request without Host), keeping it contradicts RFC 9110 §7.6.1; lb refuses with 400 (RFC 9112 §3.2, §6.3)',
    });
  }
  for (const g of GOOD_OPTS) {
    add({
      id: `conn-${g.opt.replace(/[^a-zA-Z]+/g, '_')}-${fr.f}`,
      group: 'connection-options',
      title: `Connection: ${g.opt} on a ${fr.f} request, then a second request`,
      steps: [send(req(fr.method, '/{id}/x', [`Connection: ${g.opt}`, ...g.extra, ...fr.lines], fr.body)), wait(1), send(after(['X-Forwarded-For: 6.6.6.6']))],
      expect: { final: [200, 200], closed: false, forwarded: [`${fr.method} /x`, 'GET /after'], checks: [...g.checks, beBody(0, fr.beBody), beHeaderAbsent(0, 'connection'), xffAdded(1), noSmuggled] },
      why: g.why,
    });
  }
  add({
    id: `conn-close-${fr.f}`,
    group: 'connection-options',
    title: `Connection: close on a ${fr.f} request with a request pipelined behind it`,
    steps: [send(req(fr.method, '/{id}/x', ['Connection: close', ...fr.lines], fr.body) + after())],
    expect: { final: [200], closed: true, forwarded: [`${fr.method} /x`], checks: [beBody(0, fr.beBody), noSmuggled] },
  });
  add({
    id: `conn-empty-${fr.f}`,
    group: 'connection-options',
    title: `an empty Connection header on a ${fr.f} request`,
    steps: [send(req(fr.method, '/{id}/x', ['Connection:', ...fr.lines], fr.body)), wait(1), send(after())],
    expect: { final: [200, 200], forwarded: [`${fr.method} /x`, 'GET /after'], checks: [beBody(0, fr.beBody)] },
  });
  add({
    id: `conn10-ka-cl-${fr.f}`,
    group: 'connection-options',
    title: `HTTP/1.0 Connection: keep-alive, content-length on a ${fr.f} request`,
    steps: [send(req(fr.method, '/{id}/x', ['Connection: keep-alive, content-length', ...fr.lines.filter((l) => !/transfer-encoding/i.test(l))], fr.f.startsWith('chunked') ? '' : fr.body, { version: 'HTTP/1.0' }) + after())],
    expect: REJECT,
    why: 'as for HTTP/1.1: a Connection option naming Content-Length would strip the framing (RFC 9110 §7.6.1)',
  });
}

// ---- B. Upgrade -----------------------------------------------------------------------------------------
const PROTOS: Record<string, string[]> = {
  h2c: ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQAAP__'],
  websocket: ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'],
  'ws-keepalive': ['Connection: keep-alive, Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'],
  custom: ['Connection: upgrade', 'Upgrade: foo/2'],
};
const CLTE_FOLLOWUP = req('POST', '/{id}/bad', [`Content-Length: ${('0\r\n\r\n' + INNER).length}`, 'Transfer-Encoding: chunked'], '0\r\n\r\n' + INNER);
for (const [proto, lines] of Object.entries(PROTOS)) {
  for (const status of [200, 426, 400, 404]) {
    const reply = (i: number): Reply => (i === 0 ? { kind: 'status', status, headers: status === 426 ? 'Upgrade: websocket\r\n' : '' } : { kind: 'echo' });
    add({
      id: `upgrade-${proto}-declined-${status}-next`,
      group: 'upgrade',
      title: `${proto} upgrade declined with ${status}, then a second request on the connection`,
      reply,
      steps: [send(req('GET', '/{id}/up', lines)), wait(1), send(after(['X-Forwarded-For: 6.6.6.6']))],
      expect: { final: [status, 200], closed: false, forwarded: ['GET /up', 'GET /after'], checks: [xffAdded(1), beHeaderIs(1, 'x-forwarded-for', /^6\.6\.6\.6, *127\.0\.0\.1$/)] },
    });
    add({
      id: `upgrade-${proto}-declined-${status}-smuggle`,
      group: 'upgrade',
      title: `${proto} upgrade declined with ${status}, then a CL.TE smuggling request on the connection`,
      reply,
      steps: [send(req('GET', '/{id}/up', lines)), wait(1), send(CLTE_FOLLOWUP)],
      expect: { final: [status, 400], closed: true, forwarded: ['GET /up'], checks: [noSmuggled, noBackendBytes('/bad')] },
      why: 'a tunnel starts only after 101 (RFC 9110 §7.8, §15.2.2); after any other answer the connection still speaks HTTP/1.1 and the next request is parsed and checked',
    });
  }
  add({
    id: `upgrade-${proto}-pipelined-declined`,
    group: 'upgrade',
    title: `${proto} upgrade and a second request in one write; the backend declines with 426`,
    reply: (i) => (i === 0 ? { kind: 'status', status: 426 } : { kind: 'echo' }),
    steps: [send(req('GET', '/{id}/up', lines) + after())],
    expect: { final: [426, 200], forwarded: ['GET /up', 'GET /after'], checks: [xffAdded(1)] },
  });
  // The parser's hold after an Upgrade belongs to that request, not to the request before it (a stall once).
  add({
    id: `upgrade-${proto}-behind-get-declined`,
    group: 'upgrade',
    title: `a GET, then a ${proto} upgrade and a third request, in one write; the backend declines the upgrade with 426`,
    reply: (i) => (i === 1 ? { kind: 'status', status: 426 } : { kind: 'echo' }),
    steps: [send(req('GET', '/{id}/first') + req('GET', '/{id}/up', lines) + after())],
    expect: { final: [200, 426, 200], forwarded: ['GET /first', 'GET /up', 'GET /after'], checks: [xffAdded(2)] },
  });
  add({
    id: `upgrade-${proto}-accepted`,
    group: 'upgrade',
    title: `${proto} upgrade accepted with 101; bytes then flow both ways`,
    reply: { kind: 'switch' },
    steps: [send(req('GET', '/{id}/up', lines)), wait(1), send('ping-{id}'), { tunnel: 10 }],
    expect: { final: [101], forwarded: ['GET /up'], checks: [tunnelHas('echo:ping-'), beHeaderIs(0, 'upgrade', /./), beHeaderIs(0, 'connection', /upgrade/i)] },
  });
  add({
    id: `upgrade-${proto}-post-declined`,
    group: 'upgrade',
    title: `${proto} upgrade on a POST with a body, declined with 200, then a second request`,
    steps: [send(req('POST', '/{id}/up', [...lines, 'Content-Length: 5'], 'hello')), wait(1), send(after())],
    expect: { final: [200, 200], forwarded: ['POST /up', 'GET /after'], checks: [beBody(0, 'hello'), xffAdded(1)] },
  });
}
add({
  id: 'upgrade-http10-ignored',
  group: 'upgrade',
  title: 'Upgrade on an HTTP/1.0 request is ignored',
  steps: [send(req('GET', '/{id}/up', PROTOS.websocket!, '', { version: 'HTTP/1.0' }))],
  expect: { final: [200], forwarded: ['GET /up'], checks: [beHeaderAbsent(0, 'upgrade')] },
  why: 'RFC 9110 §7.8: a server that receives an Upgrade header field in an HTTP/1.0 request MUST ignore it',
});
add({
  id: 'upgrade-101-unasked',
  group: 'upgrade',
  title: 'a 101 from the backend to a request that asked for no upgrade',
  reply: { kind: 'switch' },
  steps: [send(req('GET', '/{id}/x'))],
  // Sent once: a 101 is an answer, not a stale kept-alive connection to retry on (it was sent twice once).
  expect: { final: [[502], [101]], forwarded: ['GET /x'], checks: [(o) => (finals(o)[0]?.status === 101 && o.tunnel.length ? 'tunnel bytes leaked' : undefined)] },
});

// ---- C. Expect ------------------------------------------------------------------------------------------
add({ id: 'expect-wait-body', group: 'expect', title: 'Expect: 100-continue, body sent after the 100', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 5'])), { interim: 100 }, send('hello')], expect: { interim: [100], final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'hello'), beHeaderAbsent(0, 'expect')] } });
add({ id: 'expect-body-at-once', group: 'expect', title: 'Expect: 100-continue with the body in the same write', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 5'], 'hello'))], expect: { final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'hello'), atMostOne100, beHeaderAbsent(0, 'expect')] } });
add({ id: 'expect-chunked', group: 'expect', title: 'Expect: 100-continue with a chunked body', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Transfer-Encoding: chunked'])), { interim: 100 }, send(chunked('hel', 'lo'))], expect: { interim: [100], final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'hello'), beHeaderAbsent(0, 'expect')] } });
add({ id: 'expect-no-body', group: 'expect', title: 'Expect: 100-continue on a GET without a body', steps: [send(req('GET', '/{id}/e', ['Expect: 100-continue']))], expect: { final: [200], forwarded: ['GET /e'], checks: [atMostOne100] } });
add({ id: 'expect-cl0', group: 'expect', title: 'Expect: 100-continue with Content-Length: 0', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 0']))], expect: { final: [200], forwarded: ['POST /e'], checks: [atMostOne100] } });
add({ id: 'expect-mixed-case', group: 'expect', title: 'Expect: 100-Continue (the expectation is case-insensitive)', steps: [send(req('POST', '/{id}/e', ['Expect: 100-Continue', 'Content-Length: 5'])), { interim: 100 }, send('hello')], expect: { interim: [100], final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'hello')] } });
add({ id: 'expect-unknown', group: 'expect', title: 'Expect: foo (an unknown expectation)', steps: [send(req('POST', '/{id}/e', ['Expect: foo', 'Content-Length: 5'], 'hello'))], expect: { final: [[417], [200]], checks: [(o) => (finals(o)[0]?.status === 417 ? (o.backend.requests.length ? '417 but forwarded' : undefined) : beBody(0, 'hello')(o))] } });
add({ id: 'expect-backend-100-too', group: 'expect', title: 'Expect: 100-continue and a backend that sends its own 100 before the 200', reply: { kind: 'interim', heads: ['100 Continue'] }, steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 5'])), { interim: 100 }, send('hello')], expect: { interim: [100], final: [200], forwarded: ['POST /e'], checks: [atMostOne100] } });
add({ id: 'expect-http10', group: 'expect', title: 'Expect: 100-continue on HTTP/1.0 is ignored', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 5'], 'hello', { version: 'HTTP/1.0' }))], expect: { interim: [], final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'hello')] }, why: 'RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request MUST be ignored; §15.2: no 1xx to an HTTP/1.0 client' });
add({ id: 'expect-split-body', group: 'expect', title: 'Expect: 100-continue, the body in two writes after the 100', steps: [send(req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 10'])), { interim: 100 }, send('hello'), send('world')], expect: { interim: [100], final: [200], forwarded: ['POST /e'], checks: [beBody(0, 'helloworld')] } });
add({ id: 'expect-pipelined', group: 'expect', title: 'a GET then an Expect: 100-continue POST pipelined', steps: [send(req('GET', '/{id}/a') + req('POST', '/{id}/e', ['Expect: 100-continue', 'Content-Length: 5'])), { interim: 100 }, send('hello')], expect: { final: [200, 200], forwarded: ['GET /a', 'POST /e'], checks: [inOrder(['/a', '/e']), atMostOne100] } });

// ---- D. TE, Transfer-Encoding variants and trailers -----------------------------------------------------
add({ id: 'te-trailers-connection-te', group: 'te', title: 'TE: trailers with Connection: te', steps: [send(req('GET', '/{id}/t', ['TE: trailers', 'Connection: te']))], expect: { final: [200], forwarded: ['GET /t'] } });
add({ id: 'te-trailers-alone', group: 'te', title: 'TE: trailers without Connection: te', steps: [send(req('GET', '/{id}/t', ['TE: trailers']))], expect: { final: [200], forwarded: ['GET /t'] } });
add({ id: 'te-gzip-connection-te', group: 'te', title: 'TE: gzip with Connection: TE', steps: [send(req('GET', '/{id}/t', ['TE: gzip', 'Connection: TE']))], expect: { final: [200], forwarded: ['GET /t'] } });
add({ id: 'req-trailer', group: 'trailers', title: 'a chunked request with a trailer field', steps: [send(req('POST', '/{id}/t', ['Transfer-Encoding: chunked', 'Trailer: X-Req-Trailer'], '5\r\nhello\r\n0\r\nX-Req-Trailer: v\r\n\r\n'))], expect: { final: [200], forwarded: ['POST /t'], checks: [beBody(0, 'hello'), beTrailer(0, 'x-req-trailer', 'v')] } });
add({ id: 'req-trailers-many-chunks', group: 'trailers', title: 'a chunked request in several chunks with extensions and two trailers', steps: [send(req('POST', '/{id}/t', ['Transfer-Encoding: chunked'], '2;a=b\r\nhe\r\n3\r\nllo\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n'))], expect: { final: [200], forwarded: ['POST /t'], checks: [beBody(0, 'hello'), beTrailer(0, 'x-a', '1'), beTrailer(0, 'x-b', '2')] } });
add({ id: 'req-trailer-content-length', group: 'trailers', title: 'a chunked request whose trailer is Content-Length: 50, then a second request', steps: [send(req('POST', '/{id}/t', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n')), wait(1), send(after())], expect: { final: [[200, 200], [400]], checks: [noSmuggled, (o) => (finals(o)[0]?.status === 200 ? beBody(0, 'hello')(o) ?? (o.backend.requests.length === 2 ? undefined : 'the request after a Content-Length trailer was not parsed') : undefined)] } });
add({ id: 'req-trailer-split', group: 'trailers', title: 'a chunked request whose trailer arrives in a later write', steps: [send(req('POST', '/{id}/t', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nX-Late')), send(': yes\r\n\r\n')], expect: { final: [200], forwarded: ['POST /t'], checks: [beTrailer(0, 'x-late', 'yes')] } });
add({ id: 'resp-trailers', group: 'trailers', title: 'a chunked response with a trailer (client sent TE: trailers)', reply: { kind: 'trailers' }, steps: [send(req('GET', '/{id}/t', ['TE: trailers', 'Connection: te']))], expect: { final: [200], checks: [respTrailer(0, 'x-resp-trailer', 'yes')] } });
add({ id: 'resp-trailers-no-te', group: 'trailers', title: 'a chunked response with a trailer (client sent no TE)', reply: { kind: 'trailers' }, steps: [send(req('GET', '/{id}/t'))], expect: { final: [200], checks: [respTrailer(0, 'x-resp-trailer', 'yes')] } });
add({ id: 'resp-trailers-then-next', group: 'trailers', title: 'a chunked response with a trailer, then a second request', reply: (i) => (i === 0 ? { kind: 'trailers' } : { kind: 'echo' }), steps: [send(req('GET', '/{id}/t')), wait(1), send(after())], expect: { final: [200, 200], forwarded: ['GET /t', 'GET /after'] } });
add({ id: 'resp-trailers-http10', group: 'trailers', title: 'a chunked response with a trailer to an HTTP/1.0 client', reply: { kind: 'trailers' }, steps: [send(req('GET', '/{id}/t', [], '', { version: 'HTTP/1.0' }))], expect: { final: [200], checks: [(o) => (/"t":"\//.test(finals(o)[0]?.body.toString() ?? '') && !finals(o)[0]?.chunked ? undefined : 'HTTP/1.0 client did not get the plain body')] } });
const gzipOk: Check = (o) => {
  const r = finals(o)[0];
  if (!r) return 'no response';
  if (!/^gzip,\s*chunked$/i.test(header(r, 'transfer-encoding') ?? '')) return `Transfer-Encoding ${JSON.stringify(header(r, 'transfer-encoding'))}, expected gzip, chunked`;
  try {
    return zlib.gunzipSync(r.body).toString() === GZIP_BODY ? undefined : 'gunzipped body differs';
  } catch (err) {
    return `body is not gzip: ${(err as Error).message}`;
  }
};
add({ id: 'resp-te-gzip-chunked', group: 'te', title: 'a response with Transfer-Encoding: gzip, chunked', reply: { kind: 'gzip-chunked' }, steps: [send(req('GET', '/{id}/g'))], expect: { final: [200], checks: [gzipOk] } });
add({ id: 'resp-te-gzip-chunked-next', group: 'te', title: 'Transfer-Encoding: gzip, chunked response, then a second request', reply: (i) => (i === 0 ? { kind: 'gzip-chunked' } : { kind: 'echo' }), steps: [send(req('GET', '/{id}/g')), wait(1), send(after())], expect: { final: [200, 200], checks: [gzipOk] } });
add({ id: 'resp-cl-and-te', group: 'te', title: 'a response with both Content-Length and Transfer-Encoding: chunked, then a second request', reply: (i) => (i === 0 ? { kind: 'raw', bytes: 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' } : { kind: 'echo' }), steps: [send(req('GET', '/{id}/r')), wait(1), send(after())], expect: { final: [[200, 200], [502, 200], [200], [502]], checks: [(o) => (finals(o)[0]?.status === 200 && finals(o)[0]?.body.toString() !== 'hello' ? `body ${JSON.stringify(finals(o)[0]?.body.toString())}` : undefined)] } });
// Request Transfer-Encoding variants not in the smuggling test: valid whitespace, empty list elements, quoted.
const TE_VARIANTS: Array<[string, string, 'ok' | 'either' | 'reject']> = [
  ['te-trailing-space', 'Transfer-Encoding: chunked ', 'ok'],
  ['te-tab-ows', 'Transfer-Encoding:\tchunked', 'ok'],
  ['te-empty-element', 'Transfer-Encoding: , chunked', 'either'],
  ['te-quoted', 'Transfer-Encoding: "chunked"', 'reject'],
  ['te-param', 'Transfer-Encoding: chunked;q=1', 'reject'],
  // lb refuses it (400): CGI-style backends fold "_" and "-" into one variable (HTTP_TRANSFER_ENCODING),
  // where it would frame the body. NGINX drops underscore names (underscores_in_headers off); HAProxy passes it.
  ['te-underscore-name', 'Transfer_Encoding: chunked', 'reject'],
  ['te-mixed-case-name', 'TrAnSfEr-EnCoDiNg: cHuNkEd', 'ok'],
];
for (const [id, line, kind] of TE_VARIANTS) {
  add({
    id,
    group: 'te',
    title: `request ${JSON.stringify(line)} with a chunked body and CL.TE-shaped smuggling bytes`,
    steps: [send(req('POST', '/{id}/x', [line, 'Content-Length: 5'], '5\r\nhello\r\n0\r\n\r\n' + INNER))],
    expect: kind === 'reject' ? reject(400, 501) : { checks: [noSmuggled, rejectOrExact(kind === 'ok' ? 'hello' : 'hello')] },
    ...(id === 'te-underscore-name' ? { why: 'CGI-style backends (WSGI, PHP-FPM) read Transfer_Encoding as Transfer-Encoding (HTTP_TRANSFER_ENCODING); a name that reads as a framing field there is refused rather than forwarded' } : {}),
  });
}

// ---- E. Pipelines ---------------------------------------------------------------------------------------
const slow = (ms: number): Reply => ({ kind: 'echo', delayMs: ms });
add({ id: 'pipe-post-get', group: 'pipeline', title: 'POST /w then GET /r in one write', reply: slow(40), steps: [send(req('POST', '/{id}/w', ['Content-Length: 5'], 'hello') + req('GET', '/{id}/r'))], expect: { final: [200, 200], forwarded: ['POST /w', 'GET /r'], checks: [oneAtATime, inOrder(['/w', '/r'])] } });
add({ id: 'pipe-get-x3', group: 'pipeline', title: 'three GETs in one write', reply: slow(20), steps: [send(req('GET', '/{id}/1') + req('GET', '/{id}/2') + req('GET', '/{id}/3'))], expect: { final: [200, 200, 200], forwarded: ['GET /1', 'GET /2', 'GET /3'], checks: [oneAtATime, inOrder(['/1', '/2', '/3'])] } });
add({ id: 'pipe-get-x10', group: 'pipeline', title: 'ten GETs in one write', steps: [send(Array.from({ length: 10 }, (_, i) => req('GET', `/{id}/${i}`)).join(''))], expect: { final: Array(10).fill(200), checks: [oneAtATime, inOrder(Array.from({ length: 10 }, (_, i) => `/${i}`))] } });
add({ id: 'pipe-close-middle', group: 'pipeline', title: 'GET, GET with Connection: close, GET in one write', steps: [send(req('GET', '/{id}/1') + req('GET', '/{id}/2', ['Connection: close']) + req('GET', '/{id}/3'))], expect: { final: [200, 200], closed: true, forwarded: ['GET /1', 'GET /2'] } });
add({ id: 'pipe-after-cl-body', group: 'pipeline', title: 'a request right after a Content-Length body (same write) is parsed as a request', steps: [send(req('POST', '/{id}/p', ['Content-Length: 5'], 'hello') + req('GET', '/{id}/smuggled-looking', ['X-Forwarded-For: 6.6.6.6']))], expect: { final: [200, 200], forwarded: ['POST /p', 'GET /smuggled-looking'], checks: [beBody(0, 'hello'), xffAdded(1), beHeaderIs(1, 'x-forwarded-for', /^6\.6\.6\.6, *127\.0\.0\.1$/)] } });
add({ id: 'pipe-chunked-get', group: 'pipeline', title: 'a chunked POST then a GET in one write', reply: slow(30), steps: [send(req('POST', '/{id}/c', ['Transfer-Encoding: chunked'], chunked('hel', 'lo')) + req('GET', '/{id}/g'))], expect: { final: [200, 200], forwarded: ['POST /c', 'GET /g'], checks: [beBody(0, 'hello'), oneAtATime, inOrder(['/c', '/g'])] } });
add({ id: 'pipe-head-get', group: 'pipeline', title: 'HEAD then GET in one write (the HEAD response has Content-Length and no body)', head: [0], steps: [send(req('HEAD', '/{id}/h') + req('GET', '/{id}/g'))], expect: { final: [200, 200], forwarded: ['HEAD /h', 'GET /g'], checks: [(o) => (JSON.parse(finals(o)[1]?.body.toString() ?? '{}').t?.endsWith('/g') ? undefined : 'the GET response is not the GET echo')] } });
add({ id: 'pipe-malformed-second', group: 'pipeline', title: 'a GET then a bare-LF request in one write', steps: [send(req('GET', '/{id}/1') + 'GET /{id}/bad HTTP/1.1\nHost: h\n\n')], expect: { final: [200, 400], closed: true, forwarded: ['GET /1'] } });
add({ id: 'pipe-clte-second', group: 'pipeline', title: 'a GET then a CL.TE request in one write', steps: [send(req('GET', '/{id}/1') + CLTE_FOLLOWUP)], expect: { final: [200, 400], closed: true, forwarded: ['GET /1'], checks: [noSmuggled, noBackendBytes('/bad')] } });
// Found by test/desync-fuzz.test.ts: after a chunked request with a trailer, lb glued the previous target
// onto the next pipelined request's target (GET /p/g), which the backend then routed.
add({ id: 'pipe-after-trailers', group: 'pipeline', title: 'a chunked POST with a trailer, then a GET, in one write', steps: [send(req('POST', '/{id}/p', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n') + req('GET', '/{id}/g'))], expect: { final: [200, 200], forwarded: ['POST /p', 'GET /g'], checks: [beBody(0, 'hello'), inOrder(['/p', '/g'])] } });
add({ id: 'pipe-after-trailers-split', group: 'pipeline', title: 'a chunked POST with a trailer, then a GET whose target arrives in two writes', steps: [send(req('POST', '/{id}/p', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n') + 'GET /{id}/'), send('g HTTP/1.1\r\nHost: h\r\n\r\n')], expect: { final: [200, 200], forwarded: ['POST /p', 'GET /g'] } });
add({ id: 'pipe-split-body', group: 'pipeline', title: 'a POST whose body and the next request come in odd writes', steps: [send(req('POST', '/{id}/p', ['Content-Length: 10'], 'hel')), send('lowor'), send('ldGET /{id}/g HT'), send('TP/1.1\r\nHost: h\r\n\r\n')], expect: { final: [200, 200], forwarded: ['POST /p', 'GET /g'], checks: [beBody(0, 'helloworld')] } });
add({ id: 'pipe-http10-first', group: 'pipeline', title: 'an HTTP/1.0 request (no keep-alive) with a GET pipelined behind it', steps: [send(req('GET', '/{id}/1', [], '', { version: 'HTTP/1.0' }) + req('GET', '/{id}/2'))], expect: { final: [200], closed: true, forwarded: ['GET /1'] } });
add({ id: 'pipe-http10-keepalive', group: 'pipeline', title: 'HTTP/1.0 keep-alive requests pipelined', steps: [send(req('GET', '/{id}/1', ['Connection: keep-alive'], '', { version: 'HTTP/1.0' }) + req('GET', '/{id}/2', ['Connection: keep-alive'], '', { version: 'HTTP/1.0' }))], expect: { final: [200, 200], forwarded: ['GET /1', 'GET /2'], checks: [inOrder(['/1', '/2'])] } });
add({ id: 'pipe-slow-first', group: 'pipeline', title: 'a slow first response and a fast second one stay in order', reply: (i) => (i === 0 ? slow(100) : { kind: 'echo' }), steps: [send(req('GET', '/{id}/slow') + req('GET', '/{id}/fast'))], expect: { final: [200, 200], checks: [oneAtATime, inOrder(['/slow', '/fast'])] } });
add({ id: 'pipe-upload-then-get', group: 'pipeline', title: 'a 64 KiB upload and a GET in one write', reply: slow(20), steps: [send(req('POST', '/{id}/u', ['Content-Length: 65536'], 'u'.repeat(65536)) + req('GET', '/{id}/g'))], expect: { final: [200, 200], forwarded: ['POST /u', 'GET /g'], checks: [oneAtATime, inOrder(['/u', '/g'])] } });

// ---- F. 1xx from the backend ----------------------------------------------------------------------------
const LINK103 = '103 Early Hints\r\nLink: </style.css>; rel=preload; as=style';
add({ id: '1xx-103', group: '1xx', title: '103 Early Hints with a Link header before the 200', reply: { kind: 'interim', heads: [LINK103] }, steps: [send(req('GET', '/{id}/x'))], expect: { interim: [103], final: [200], checks: [(o) => (/style\.css/.test(header(o.responses[0]!, 'link') ?? '') ? undefined : 'the 103 lost its Link header')] }, why: 'RFC 9110 §15.2: a proxy MUST forward 1xx responses (other than those it asked for) to HTTP/1.1 clients' });
add({ id: '1xx-103-twice', group: '1xx', title: 'two 103s before the 200', reply: { kind: 'interim', heads: [LINK103, '103 Early Hints\r\nLink: </app.js>; rel=preload; as=script'] }, steps: [send(req('GET', '/{id}/x'))], expect: { interim: [103, 103], final: [200] }, why: 'RFC 9110 §15.2: every 1xx is forwarded' });
add({ id: '1xx-102', group: '1xx', title: '102 Processing before the 200', reply: { kind: 'interim', heads: ['102 Processing'] }, steps: [send(req('GET', '/{id}/x'))], expect: { interim: [102], final: [200] }, why: 'RFC 9110 §15.2: a proxy MUST forward 1xx responses' });
add({ id: '1xx-199', group: '1xx', title: 'an unknown 1xx (199) before the 200', reply: { kind: 'interim', heads: ['199 Whatever'] }, steps: [send(req('GET', '/{id}/x'))], expect: { interim: [199], final: [200] }, why: 'RFC 9110 §15.2: a proxy MUST forward 1xx responses, known or not (§15: unknown codes are understood by class)' });
add({ id: '1xx-100-103', group: '1xx', title: 'an unasked 100 and a 103 before the 200', reply: { kind: 'interim', heads: ['100 Continue', LINK103] }, steps: [send(req('GET', '/{id}/x'))], expect: { final: [200], checks: [(o) => (interims(o).includes(103) ? undefined : 'the 103 was not forwarded'), atMostOne100] } });
add({ id: '1xx-103-http10', group: '1xx', title: '103 to an HTTP/1.0 client is not forwarded', reply: { kind: 'interim', heads: [LINK103] }, steps: [send(req('GET', '/{id}/x', [], '', { version: 'HTTP/1.0' }))], expect: { interim: [], final: [200] }, why: 'RFC 9110 §15.2: a server MUST NOT send a 1xx response to an HTTP/1.0 client' });
add({ id: '1xx-103-pipelined', group: '1xx', title: 'two pipelined GETs, each answered with a 103 then a 200', reply: { kind: 'interim', heads: [LINK103] }, steps: [send(req('GET', '/{id}/1') + req('GET', '/{id}/2'))], expect: { interim: [103, 103], final: [200, 200], checks: [inOrder(['/1', '/2'])] } });
add({ id: '1xx-103-post', group: '1xx', title: '103 in answer to a POST with a body', reply: { kind: 'interim', heads: [LINK103] }, steps: [send(req('POST', '/{id}/x', ['Content-Length: 5'], 'hello'))], expect: { interim: [103], final: [200], checks: [beBody(0, 'hello')] } });

// ---- G. Absolute-form and other request targets --------------------------------------------------------
const hostIs = (v: string): Check => beHeaderIs(0, 'host', v);
const ABS: Array<{ id: string; line: string; lines?: string[]; version?: string; noHost?: boolean; ok?: { target: string; host: string }; why?: string }> = [
  { id: 'abs-http', line: 'http://a.example/{id}/p', lines: ['Host: a.example'], ok: { target: 'GET /p', host: 'a.example' } },
  { id: 'abs-host-mismatch', line: 'http://a.example/{id}/p', lines: ['Host: b.example'], ok: { target: 'GET /p', host: 'a.example' }, why: 'RFC 9112 §3.2.2: with an absolute-form target the server MUST ignore the received Host and use the target authority' },
  { id: 'abs-port', line: 'http://a.example:8080/{id}/p', lines: ['Host: a.example:8080'], ok: { target: 'GET /p', host: 'a.example:8080' } },
  { id: 'abs-https', line: 'https://a.example/{id}/p', lines: ['Host: a.example'], ok: { target: 'GET /p', host: 'a.example' } },
  { id: 'abs-query', line: 'http://a.example/{id}/p?x=1&y', lines: ['Host: a.example'], ok: { target: 'GET /p?x=1&y', host: 'a.example' } },
  { id: 'abs-upper-scheme', line: 'HTTP://a.example/{id}/p', lines: ['Host: a.example'], ok: { target: 'GET /p', host: 'a.example' }, why: 'RFC 3986 §3.1: schemes are case-insensitive' },
  { id: 'abs-ipv6', line: 'http://[::1]:8080/{id}/p', lines: ['Host: [::1]:8080'], ok: { target: 'GET /p', host: '[::1]:8080' } },
  { id: 'abs-at-in-path', line: 'http://a.example/{id}/p@evil', lines: ['Host: a.example'], ok: { target: 'GET /p@evil', host: 'a.example' } },
  { id: 'abs-http10-no-host', line: 'http://a.example/{id}/p', version: 'HTTP/1.0', noHost: true, ok: { target: 'GET /p', host: 'a.example' } },
  { id: 'abs-no-host-11', line: 'http://a.example/{id}/p', noHost: true, why: 'RFC 9112 §3.2: an HTTP/1.1 request without Host MUST be answered 400, whatever the target form' },
  { id: 'abs-ftp', line: 'ftp://a.example/{id}/p', lines: ['Host: a.example'], why: 'only http and https targets can be served (RFC 9112 §3.2.2 concerns http(s) URIs)' },
  { id: 'abs-userinfo', line: 'http://u:p@a.example/{id}/p', lines: ['Host: a.example'], why: 'RFC 9110 §4.2.4: userinfo in an http(s) URI is treated as an error' },
  { id: 'abs-empty-authority', line: 'http:///{id}/p', lines: ['Host: a.example'], why: 'RFC 9110 §4.2.1: an http URI with an empty host is invalid and MUST be rejected' },
  { id: 'abs-bad-port', line: 'http://a.example:abc/{id}/p', lines: ['Host: a.example'] },
  { id: 'abs-fragment', line: 'http://a.example/{id}/p#frag', lines: ['Host: a.example'], why: 'RFC 9112 §3.2: the request-target has no fragment component' },
  { id: 'abs-bad-host-header', line: 'http://a.example/{id}/p', lines: ['Host: a b'], why: 'RFC 9112 §3.2: a Host field with an invalid value is answered 400 even when the target is absolute' },
  { id: 'abs-two-host-headers', line: 'http://a.example/{id}/p', lines: ['Host: a.example', 'Host: b.example'] },
  { id: 'authority-form-options', line: 'a.example:80', lines: ['Host: a.example', 'X-Id: {id}'] },
  { id: 'asterisk-form-get', line: '*', lines: ['Host: a.example', 'X-Id: {id}'], why: 'RFC 9112 §3.2.4: the asterisk form is only for OPTIONS' },
];
for (const a of ABS) {
  const method = a.id === 'authority-form-options' ? 'OPTIONS' : 'GET';
  add({
    id: a.id,
    group: 'request-target',
    title: `${method} ${a.line} ${a.version ?? 'HTTP/1.1'}${a.lines ? ' with ' + a.lines.join(', ') : ''}`,
    steps: [send(req(method, a.line, a.lines ?? [], '', { version: a.version, noHost: a.noHost }))],
    expect: a.ok ? { final: [200], forwarded: [a.ok.target], checks: [hostIs(a.ok.host)] } : { ...REJECT, checks: [noBackendBytes(`/${a.id}`)] },
    why: a.why ?? (a.ok ? 'RFC 9112 §3.2.2: a server MUST accept the absolute form; lb forwards it in origin form with the target authority as Host' : undefined),
  });
}

// ---- H. Host syntax -------------------------------------------------------------------------------------
const HOST_BAD = ['a b', 'h@evil', 'h/x', 'h?x', 'h#x', 'h"x', 'h<x>', 'h:abc', '[::1', '::1', 'h:80:80', '\\evil', 'h\tb', 'h%zz', '[::1]x', 'a.example:80@b.example'];
const HOST_OK = ['h:8080', '[::1]:80', '[::1]', '127.0.0.1:80', 'H.EXAMPLE', 'h.example.', 'a_b.example', 'xn--bcher-kva.example', 'a-b.example', '~h'];
const HOST_EITHER = ['', 'h:', '%41.example', 'h,h2', "h!$&'()*+;=", 'h:99999', '[v1.x]'];
for (const [i, v] of HOST_BAD.entries()) add({ id: `host-bad-${i}`, group: 'host', title: `Host: ${JSON.stringify(v)}`, steps: [send(req('GET', '/{id}/x', [`Host: ${v}`]))], expect: REJECT, why: 'RFC 9112 §3.2: a Host field with an invalid value (not uri-host [":" port], RFC 3986 §3.2.2) MUST be answered 400' });
for (const [i, v] of HOST_OK.entries()) add({ id: `host-ok-${i}`, group: 'host', title: `Host: ${JSON.stringify(v)}`, steps: [send(req('GET', '/{id}/x', [`Host: ${v}`]))], expect: { final: [200], forwarded: ['GET /x'], checks: [hostIs(v)] } });
for (const [i, v] of HOST_EITHER.entries())
  add({
    id: `host-edge-${i}`,
    group: 'host',
    title: `Host: ${JSON.stringify(v)} (valid by RFC 3986, odd)`,
    steps: [send(req('GET', '/{id}/x', [`Host: ${v}`]))],
    expect: { checks: [(o) => (finals(o)[0]?.status === 200 ? hostIs(v)(o) : o.backend.requests.length ? 'refused but forwarded' : finals(o).length === 1 && finals(o)[0]!.status === 400 ? undefined : `status ${finals(o)[0]?.status}`)] },
  });
add({ id: 'host-two-same', group: 'host', title: 'two identical Host headers', steps: [send(req('GET', '/{id}/x', ['Host: h', 'Host: h']))], expect: REJECT, why: 'RFC 9112 §3.2: more than one Host field line MUST be answered 400' });
add({ id: 'host-two-case', group: 'host', title: 'Host and host', steps: [send(req('GET', '/{id}/x', ['Host: h', 'host: h2']))], expect: REJECT });
add({ id: 'host-ows', group: 'host', title: 'Host with surrounding whitespace', steps: [send(req('GET', '/{id}/x', ['Host: \t h.example \t']))], expect: { final: [200], checks: [hostIs('h.example')] } });
add({ id: 'host-missing-http10', group: 'host', title: 'HTTP/1.0 without Host', steps: [send(req('GET', '/{id}/x', [], '', { version: 'HTTP/1.0', noHost: true }))], expect: { final: [200], forwarded: ['GET /x'] } });
add({ id: 'host-missing-pipelined', group: 'host', title: 'a good GET then an HTTP/1.1 GET without Host', steps: [send(req('GET', '/{id}/1') + 'GET /{id}/2 HTTP/1.1\r\nX-A: b\r\n\r\n')], expect: { final: [200, 400], closed: true, forwarded: ['GET /1'] } });

// ---- I. Early final responses during an upload -----------------------------------------------------------
const BIG = 256 * 1024;
for (let rep = 1; rep <= 3; rep++) {
  for (const mode of ['linger', 'close'] as const) {
    const early: Reply = { kind: 'early', status: 413, mode };
    // The 413 carries Connection: close from the backend, a hop-by-hop field: when the whole body has
    // arrived the proxy may keep the client connection (all three do), so closing is not asserted.
    const ex: Expect = { final: [413], checks: [no502] };
    add({ id: `early413-${mode}-at-once-${rep}`, group: 'early-response', title: `413 + close (${mode}) while a ${BIG}-byte body arrives in the same write (run ${rep})`, reply: early, steps: [send(req('POST', '/{id}/up', [`Content-Length: ${BIG}`], 'b'.repeat(BIG)))], expect: ex, deadline: 4 });
    add({ id: `early413-${mode}-head-first-${rep}`, group: 'early-response', title: `413 + close (${mode}) after the head; the client then sends the body (run ${rep})`, reply: early, steps: [send(req('POST', '/{id}/up', [`Content-Length: ${BIG}`])), wait(1), send('b'.repeat(BIG))], expect: ex, deadline: 4 });
    add({ id: `early413-${mode}-chunked-${rep}`, group: 'early-response', title: `413 + close (${mode}) during a chunked upload (run ${rep})`, reply: early, steps: [send(req('POST', '/{id}/up', ['Transfer-Encoding: chunked'], chunk('c'.repeat(60000)))), wait(1), send(chunk('c'.repeat(60000)) + '0\r\n\r\n')], expect: ex, deadline: 4 });
  }
}
add({ id: 'early413-expect', group: 'early-response', title: '413 + close to an Expect: 100-continue upload', reply: { kind: 'early', status: 413, mode: 'linger' }, steps: [send(req('POST', '/{id}/up', ['Expect: 100-continue', `Content-Length: ${BIG}`])), { interim: 100 }, send('b'.repeat(BIG))], expect: { final: [413], closed: true, checks: [no502, atMostOne100] }, deadline: 4 });

// ---- J. Stale kept-alive backend connections ------------------------------------------------------------
for (let rep = 1; rep <= 3; rep++) {
  for (const [mode, afterMs] of [['fin', 0], ['fin', 20], ['rst', 20]] as const) {
    const reply = (i: number): Reply => (i === 0 ? { kind: 'close-idle', mode, afterMs } : { kind: 'echo' });
    add({ id: `stale-${mode}${afterMs}-get-${rep}`, group: 'stale-backend', title: `the backend closes (${mode}, ${afterMs} ms) its idle connection after answering; then another GET (run ${rep})`, reply, steps: [send(req('GET', '/{id}/1')), wait(1), { backendClosed: 1 }, send(req('GET', '/{id}/2'))], expect: { final: [200, 200], checks: [no502] } });
  }
  add({ id: `stale-race-get-${rep}`, group: 'stale-backend', title: `the backend closes right after answering while the next GET is already on its way (run ${rep})`, reply: (i) => (i === 0 ? { kind: 'close-idle', mode: 'fin', afterMs: 0 } : { kind: 'echo' }), steps: [send(req('GET', '/{id}/1')), wait(1), send(req('GET', '/{id}/2'))], expect: { final: [200, 200], checks: [no502] } });
}
add({ id: 'stale-post', group: 'stale-backend', title: 'the backend closes its idle connection; then a POST (not idempotent)', reply: (i) => (i === 0 ? { kind: 'close-idle', mode: 'fin', afterMs: 10 } : { kind: 'echo' }), steps: [send(req('GET', '/{id}/1')), wait(1), { backendClosed: 1 }, send(req('POST', '/{id}/2', ['Content-Length: 5'], 'hello'))], expect: { final: [200, 200], checks: [no502] } });

// ---- K. Malformed client traffic not in the smuggling test ---------------------------------------------
const MAL: Array<[string, string]> = [
  ['trailing-space-version', 'GET /{id}/x HTTP/1.1 \r\nHost: h\r\n\r\n'],
  ['lowercase-version', 'GET /{id}/x http/1.1\r\nHost: h\r\n\r\n'],
  ['tab-separator', 'GET\t/{id}/x HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['name-tab-colon', 'POST /{id}/x HTTP/1.1\r\nHost: h\r\nContent-Length\t: 5\r\n\r\nhello'],
  ['http2-preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['http12', 'GET /{id}/x HTTP/1.2\r\nHost: h\r\n\r\n'],
  ['cl-space-inside', 'POST /{id}/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\nhelloworld'],
  ['cl-empty', 'POST /{id}/x HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\nhello'],
  ['te-cl-zero-get', `GET /{id}/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${INNER}`],
  ['chunk-lf-after-data', 'POST /{id}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n'],
  ['chunk-ext-bad', 'POST /{id}/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a"b\r\nhello\r\n0\r\n\r\n'],
  ['high-byte-name', 'GET /{id}/x HTTP/1.1\r\nHost: h\r\nX-\xffA: b\r\n\r\n'],
  ['del-in-value', 'GET /{id}/x HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n'],
  ['empty-name', 'GET /{id}/x HTTP/1.1\r\nHost: h\r\n: b\r\n\r\n'],
];
for (const [id, bytes] of MAL) add({ id: `malformed-${id}`, group: 'malformed', title: JSON.stringify(bytes.slice(0, 70)), steps: [send(bytes)], expect: { ...REJECT, final: [[400], [501], [505]] } });
add({ id: 'malformed-double-space', group: 'malformed', title: 'two spaces after the method', steps: [send('GET  /{id}/x HTTP/1.1\r\nHost: h\r\n\r\n')], expect: { checks: [rejectOrExact('')] } });
add({ id: 'cl-leading-zeros', group: 'malformed', title: 'Content-Length: 005 (valid digits)', steps: [send(req('POST', '/{id}/x', ['Content-Length: 005'], 'hello'))], expect: { final: [200], forwarded: ['POST /x'], checks: [beBody(0, 'hello')] } });
add({ id: 'cl-trailing-ows', group: 'malformed', title: 'Content-Length with trailing whitespace (valid OWS)', steps: [send(req('POST', '/{id}/x', ['Content-Length: 5 '], 'hello'))], expect: { final: [200], forwarded: ['POST /x'], checks: [beBody(0, 'hello')] } });
add({ id: 'chunk-size-leading-zeros', group: 'malformed', title: 'chunk size 005', steps: [send(req('POST', '/{id}/x', ['Transfer-Encoding: chunked'], '005\r\nhello\r\n0\r\n\r\n'))], expect: { final: [200], forwarded: ['POST /x'], checks: [beBody(0, 'hello')] } });
add({ id: 'cl0-then-garbage', group: 'malformed', title: 'Content-Length: 0 followed by body-like garbage', steps: [send(req('POST', '/{id}/x', ['Content-Length: 0'], 'hello\r\n\r\n'))], expect: { final: [200, 400], closed: true, forwarded: ['POST /x'] } });
add({ id: 'leading-crlf', group: 'malformed', title: 'an empty line before the request line', steps: [send('\r\n' + req('GET', '/{id}/x'))], expect: { final: [[200], [400]], checks: [(o) => (finals(o)[0]?.status === 200 && o.backend.requests.length !== 1 ? 'forwarded more than once' : undefined)] } });

// ---- L. Smuggling mutations (ideas from public corpora, transcribed) ------------------------------------
// Header-name/value mutations of Transfer-Encoding from defparsed/smuggler (configs/default.py and
// exhaustive.py) and the request-smuggling payload lists of PortSwigger's research ("HTTP Desync Attacks").
// Each goes out as CL.TE: Content-Length covers a chunked body followed by a smuggled request. Whatever lb
// does, the backend must never parse the inner request.
const MUTATIONS: Array<[string, string]> = [
  ['te-space-before-value', 'Transfer-Encoding:  chunked'],
  ['te-nbsp', 'Transfer-Encoding:\xa0chunked'],
  ['te-nul-suffix', 'Transfer-Encoding: chunked\x00'],
  ['te-ff-prefix', 'Transfer-Encoding: \x0cchunked'],
  ['te-0x1f', 'Transfer-Encoding: \x1fchunked'],
  ['te-cr-value', 'Transfer-Encoding: \rchunked'],
  ['te-lf-name', 'Transfer-Encoding\n: chunked'],
  ['te-x-prefix-line', 'X: X\rTransfer-Encoding: chunked'],
  ['te-comma-identity', 'Transfer-Encoding: chunked, identity'],
  ['te-cow', 'Transfer-Encoding: cow, chunked'],
  ['te-chunk', 'Transfer-Encoding: chunk'],
  ['te-quoted-single', "Transfer-Encoding: 'chunked'"],
  ['te-content-encoding', 'Content-Encoding: chunked'],
  ['te-high-unicode', 'Transfer-Encoding: chunk\xedd'],
  ['te-name-high', 'Transfer-Encoding\xff: chunked'],
  ['te-tab-name', 'Transfer-Encoding\t: chunked'],
  ['te-dash-underscore', 'Transfer-Encoding: chunked\r\nTransfer_Encoding: x'],
  ['te-multi-case', 'transfer-encoding: chunked\r\nTRANSFER-ENCODING: identity'],
  ['te-empty-then', 'Transfer-Encoding:\r\nTransfer-Encoding: chunked'],
  ['te-ws-line', 'Transfer-Encoding: chunked\r\n \r\n'],
];
for (const [id, line] of MUTATIONS) {
  const body = '0\r\n\r\n' + INNER;
  add({
    id: `mut-${id}`,
    group: 'smuggling-mutations',
    title: `CL.TE with ${JSON.stringify(line)}`,
    steps: [send(`POST /{id}/x HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n${line}\r\n\r\n${body}`)],
    expect: { checks: [noSmuggled, (o) => (o.backend.requests.length > 1 ? `backend parsed ${o.backend.requests.length} requests` : undefined), (o) => (finals(o).length > 1 ? `${finals(o).length} responses to one request` : undefined)] },
  });
}

// ---- Why lb differs from both anchors where the case above carries no reason of its own ------------------
// (the differential test lists every case where lb's outcome differs from HAProxy's and NGINX's).
const STRICT = "llhttp in strict mode refuses it (lb never enables the lenient parser); the anchors accept it, and a parser that tolerates what another refuses is where desync starts";
const WHY: Record<string, string> = {
  'upgrade-101-unasked': 'a 101 to a request that asked for no upgrade cannot be forwarded: 502, as HAProxy (NGINX gives no answer)',
  'expect-unknown': 'RFC 9110 §10.1.1: an expectation the server cannot meet MAY get 417; lb does not forward Expect, so it cannot have the backend meet it',
  'expect-backend-100-too': 'lb answers Expect: 100-continue itself; the backend\'s own 100 is not passed on a second time (one interim answer per expectation)',
  'req-trailer-content-length': `RFC 9110 §6.5.1: Content-Length may not be a trailer field; ${STRICT}`,
  'resp-cl-and-te': 'RFC 9112 §6.3: a message with both Transfer-Encoding and Content-Length "ought to be handled as an error"; lb answers 502 rather than pick one',
  'te-tab-ows': `a tab before the Transfer-Encoding value (valid OWS, RFC 9110 §5.6.3); ${STRICT}; NGINX refuses it too (501)`,
  'te-empty-element': 'all three refuse it; only the status differs (HAProxy 422, NGINX 501, lb 400 from llhttp)',
  'mut-te-cow': 'all three refuse it; only the status differs (HAProxy 422, NGINX 501, lb 400 from llhttp)',
  'pipe-malformed-second': `a bare LF line ending (RFC 9112 §2.2 allows, does not require, accepting it); ${STRICT}; lb answers the good request first, then 400`,
  'malformed-http12': 'RFC 9110 §2.5 says a higher minor version SHOULD be processed as HTTP/1.1; llhttp strict refuses HTTP/1.2 and lb keeps that (no client sends it)',
  'malformed-chunk-lf-after-data': `chunk data ended by a bare LF (RFC 9112 §7.1 requires CRLF); ${STRICT}; chunk terminator differences are a known smuggling vector`,
  'malformed-chunk-ext-bad': `a chunk extension outside the RFC 9112 §7.1.1 grammar; ${STRICT}; chunk-extension parsing differences are a known smuggling vector`,
  'malformed-del-in-value': 'RFC 9110 §5.5: DEL is not a field-vchar; llhttp refuses the field, the anchors forward it',
  'early413-expect': 'lb answers 100 Continue when it hands the request over (as NGINX), then forwards the backend\'s 413; it closes afterwards (as below)',
};
for (const id of Object.keys(WHY)) {
  const c = CASES.find((x) => x.id === id);
  if (!c) throw new Error(`WHY names no case ${id}`);
  c.why ??= WHY[id];
}
// An early final response: lb closes the connection (Connection: close, a lingering close) unless it had
// read the rest of the body already; the anchors read and drop the rest and keep the connection.
for (const c of CASES) if (c.id.startsWith('early413-') && !c.why) c.why = 'RFC 9112 §9.6: after an early response lb closes gracefully (Connection: close, then a lingering close) rather than read an unbounded remaining body to keep the connection';
// A GET that lands on a kept-alive connection the backend is closing is sent again on a new one (RFC 9110
// §9.2.2: idempotent requests may be retried); a backend that read the first copy before closing sees it twice.
for (const c of CASES) if (c.id.startsWith('stale-race-get-')) c.why ??= 'an idempotent GET whose kept-alive connection closed without an answer is sent again on a new connection (RFC 9110 §9.2.2; NGINX retries too); the recording backend had read the first copy before closing';

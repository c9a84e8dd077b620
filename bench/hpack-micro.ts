// The CPU cost of HPACK (src/dataplane/hpack.ts) per request header block, in isolation (no sockets), so
// the numbers hold on a machine busy with other work.
//
//   node dist/bench/hpack-micro.js [--iterations N]
//
// Variants, each timed over N operations (default 1,000,000) after a warm-up of N/4, in interleaved rounds
// (5); the best round is reported as ns per operation:
//   decode-first    a new decoder (a new connection) decoding the first request of an h2load-style client:
//                   :method/:scheme/:path from the static table, :authority and user-agent as literals
//                   with incremental indexing, Huffman-coded (what nghttp2's encoder sends)
//   decode-indexed  every later request on that connection: five one-byte indexed fields, three of them
//                   from the dynamic table
//   decode-stream   a connection's sequence of 100 requests: one decode-first, 99 decode-indexed
//   decode-literal  a browser-like request whose values all differ from the previous one (path, cookie,
//                   request id as Huffman literals without indexing; the rest indexed)
//   encode          a response: :status 200, content-type, content-length, date, server (a new Buffer
//                   view each time, as handed to socket.write)
//   encode-into     the same into a caller's reused output buffer (encodeInto)

import { HpackDecoder, HpackEncoder } from '../src/dataplane/hpack.js';
import { huffmanEncode, huffmanEncodedLength } from '../src/dataplane/hpack-huffman.js';

function int(prefixBits: number, flags: number, value: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  for (value -= max; value >= 128; value >>>= 7) out.push((value & 0x7f) | 0x80);
  out.push(value);
  return out;
}
function huff(s: string): number[] {
  const b = Buffer.alloc(huffmanEncodedLength(s));
  huffmanEncode(s, b, 0);
  return [...int(7, 0x80, b.length), ...b];
}

// RFC 7541 §6.1 / §6.2.1: 0x82 :method GET, 0x86 :scheme http, 0x84 :path /; 0x41 = literal with
// incremental indexing, name :authority (static 1); 0x7a = same with name user-agent (static 58);
// then in later blocks 0xbf / 0xbe / 0xc0 are dynamic entries (62 = newest).
const FIRST = Buffer.from([0x82, 0x86, 0x84, 0x41, ...huff('127.0.0.1:8080'), 0x7a, ...huff('h2load nghttp2/1.52.0'), 0x40, ...huff('x-bench'), ...huff('1')]);
const INDEXED = Buffer.from([0x82, 0x86, 0x84, 0xc0, 0xbf, 0xbe]);
const LITERAL_PREFIX = [0x82, 0x87, 0xc0, 0xbf, 0xbe];
const LITERALS: Buffer[] = [];
for (let i = 0; i < 64; i++) {
  LITERALS.push(
    Buffer.from([
      ...LITERAL_PREFIX,
      0x04, ...huff(`/static/js/app.${i}.chunk.js?v=${i * 7919}`),
      0x0f, 0x11, ...huff(`session=${(i * 2654435761) >>> 0}; theme=dark; consent=yes`), // cookie (32)
      0x00, ...huff('x-request-id'), ...huff(`${i.toString(16).padStart(8, '0')}-4bd1-9c2f-${(i * 31).toString(16).padStart(12, '0')}`),
    ]),
  );
}
const FIELDS = ['content-type', 'text/plain; charset=utf-8', 'content-length', '1234', 'date', 'Thu, 03 Dec 2026 17:30:00 GMT', 'server', 'lb'];
const LIMIT = 64 * 1024;

const argIndex = process.argv.indexOf('--iterations');
const N = argIndex > 0 ? Number(process.argv[argIndex + 1]) : 1_000_000;

let sink = 0;
const variants: Record<string, (n: number) => void> = {
  'decode-first': (n) => {
    for (let i = 0; i < n; i++) sink += new HpackDecoder().decode(FIRST, LIMIT)!.length;
  },
  'decode-indexed': (n) => {
    const d = new HpackDecoder();
    d.decode(FIRST, LIMIT);
    for (let i = 0; i < n; i++) sink += d.decode(INDEXED, LIMIT)!.length;
  },
  'decode-stream': (n) => {
    let d = new HpackDecoder();
    for (let i = 0; i < n; i++) {
      if (i % 100 === 0) {
        d = new HpackDecoder();
        sink += d.decode(FIRST, LIMIT)!.length;
      } else {
        sink += d.decode(INDEXED, LIMIT)!.length;
      }
    }
  },
  'decode-literal': (n) => {
    const d = new HpackDecoder();
    d.decode(FIRST, LIMIT);
    for (let i = 0; i < n; i++) sink += d.decode(LITERALS[i & 63]!, LIMIT)!.length;
  },
  encode: (n) => {
    const e = new HpackEncoder();
    for (let i = 0; i < n; i++) sink += e.encode(200, FIELDS).length;
  },
  'encode-into': (n) => {
    const e = new HpackEncoder();
    const out = Buffer.allocUnsafe(4096);
    for (let i = 0; i < n; i++) sink += e.encodeInto(out, 9, 200, FIELDS);
  },
};

// Check once that the blocks decode to what they claim, so the timing is of real work.
{
  const d = new HpackDecoder();
  const first = d.decode(FIRST, LIMIT)!;
  const again = d.decode(INDEXED, LIMIT)!;
  if (first.join('\n') !== again.join('\n') || first.length !== 12) throw new Error(`bench blocks do not decode as expected: ${first} / ${again}`);
  const lit = d.decode(LITERALS[5]!, LIMIT)!;
  if (lit[11] !== '/static/js/app.5.chunk.js?v=39595' || lit[12] !== 'cookie') throw new Error(`literal block: ${lit}`);
  const enc = new HpackEncoder().encode(200, FIELDS);
  if (new HpackDecoder().decode(enc, LIMIT)!.join('\n') !== [':status', '200', ...FIELDS].join('\n')) throw new Error('encode round trip');
}

const names = Object.keys(variants);
for (const name of names) variants[name]!(Math.max(1, N >> 2));
const best = new Map<string, number>();
for (let round = 0; round < 5; round++) {
  for (const name of names) {
    const t0 = process.hrtime.bigint();
    variants[name]!(N);
    const ns = Number(process.hrtime.bigint() - t0) / N;
    if (!(best.get(name)! <= ns)) best.set(name, ns);
  }
}
console.log(`node ${process.version}, ${N} operations per variant and round, best of 5 rounds`);
console.log('variant          ns/op   block bytes');
const bytes: Record<string, string> = {
  'decode-first': String(FIRST.length),
  'decode-indexed': String(INDEXED.length),
  'decode-stream': '-',
  'decode-literal': `${LITERALS[0]!.length}`,
  encode: String(new HpackEncoder().encode(200, FIELDS).length),
  'encode-into': String(new HpackEncoder().encode(200, FIELDS).length),
};
for (const n of names) console.log(`${n.padEnd(15)} ${best.get(n)!.toFixed(1).padStart(6)}   ${bytes[n]!.padStart(5)}`);
if (sink === 0) console.log('');

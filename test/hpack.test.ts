// HPACK (RFC 7541): the Huffman code table, the decoder on every Appendix C example (with the dynamic table
// after each block), every malformed-input case, the header list size limit, the encoder round-tripped
// through the decoder, and interop with node:http2 (nghttp2) both ways over real loopback sockets: its
// client accepts the encoder's response and trailer blocks, and the decoder reads the request blocks its
// client sends (dynamic table references, Huffman-coded strings, never-indexed fields); the same with
// nghttp2's own tools (h2load under a bounded load, nghttp printing the response headers it decoded); and
// every static table name as nghttp2 refers to it by index.

import t, { type Test } from 'tap';
import http2 from 'node:http2';
import net from 'node:net';
import { run } from './helpers/h2.js';
import { FRAME, frame } from './helpers/h2raw.js';
import { encodedLengthBound, HpackDecoder, HpackEncoder, HpackError } from '../src/dataplane/hpack.js';
import {
  HUFFMAN_CODES,
  HUFFMAN_LENGTHS,
  huffmanDecode,
  huffmanDecodedMax,
  huffmanEncode,
  huffmanEncodedLength,
} from '../src/dataplane/hpack-huffman.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

/** §5.1 integer with an N-bit prefix, the first byte's other bits set to `flags`. */
function int(prefixBits: number, flags: number, value: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [flags | value];
  const out = [flags | max];
  value -= max;
  while (value >= 128) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}
/** §5.2 raw string literal. */
function str(s: string): number[] {
  return [...int(7, 0, s.length), ...Buffer.from(s, 'latin1')];
}
/** §5.2 Huffman-coded string literal. */
function huff(s: string): number[] {
  const b = Buffer.alloc(huffmanEncodedLength(s));
  huffmanEncode(s, b, 0);
  return [...int(7, 0x80, b.length), ...b];
}

t.test('Huffman table (Appendix B): 257 codes, canonical, complete (Kraft equality), prefix-free', async (t) => {
  t.equal(HUFFMAN_CODES.length, 257);
  t.equal(HUFFMAN_LENGTHS.length, 257);
  let kraft = 0n;
  const badLength: number[] = [];
  const badCode: number[] = [];
  for (let s = 0; s < 257; s++) {
    const len = HUFFMAN_LENGTHS[s]!;
    if (!(len >= 5 && len <= 30)) badLength.push(s);
    if (!(HUFFMAN_CODES[s]! < 2 ** len)) badCode.push(s);
    kraft += 1n << BigInt(30 - len);
  }
  t.same(badLength, [], 'every length is 5..30 bits');
  t.same(badCode, [], 'every code fits its length');
  t.equal(kraft, 1n << 30n, 'sum of 2^-length is exactly 1');
  // Canonical: in (length, symbol) order each code is the previous one plus one, shifted to its length.
  const order = [...Array(257).keys()].sort((a, b) => HUFFMAN_LENGTHS[a]! - HUFFMAN_LENGTHS[b]! || a - b);
  let code = 0;
  let prevLen = HUFFMAN_LENGTHS[order[0]!]!;
  let canonical = HUFFMAN_CODES[order[0]!] === 0;
  for (let i = 1; i < order.length; i++) {
    const len = HUFFMAN_LENGTHS[order[i]!]!;
    code = (code + 1) * 2 ** (len - prevLen);
    prevLen = len;
    if (HUFFMAN_CODES[order[i]!] !== code) canonical = false;
  }
  t.ok(canonical, 'canonical');
  // Prefix-free: no code is a prefix of another (compare every pair, left-aligned to 30 bits).
  let prefixFree = true;
  for (let a = 0; a < 257; a++) {
    for (let b = 0; b < 257; b++) {
      if (a === b || HUFFMAN_LENGTHS[a]! > HUFFMAN_LENGTHS[b]!) continue;
      if (Math.floor(HUFFMAN_CODES[b]! / 2 ** (HUFFMAN_LENGTHS[b]! - HUFFMAN_LENGTHS[a]!)) === HUFFMAN_CODES[a]) prefixFree = false;
    }
  }
  t.ok(prefixFree, 'prefix-free');
  t.equal(HUFFMAN_CODES[256], 0x3fffffff, 'EOS is 30 ones');
  t.equal(HUFFMAN_LENGTHS[256], 30);
});

t.test('Huffman coding: Appendix C strings, every byte value, padding', async (t) => {
  // RFC 7541 Appendix C.4 and C.6 Huffman-coded literals.
  const vectors: Array<[string, string]> = [
    ['www.example.com', 'f1e3c2e5f23a6ba0ab90f4ff'],
    ['no-cache', 'a8eb10649cbf'],
    ['custom-key', '25a849e95ba97d7f'],
    ['custom-value', '25a849e95bb8e8b4bf'],
    ['302', '6402'],
    ['private', 'aec3771a4b'],
    ['Mon, 21 Oct 2013 20:13:21 GMT', 'd07abe941054d444a8200595040b8166e082a62d1bff'],
    ['https://www.example.com', '9d29ad171863c78f0b97c8e9ae82ae43d3'],
    ['307', '640eff'],
    ['Mon, 21 Oct 2013 20:13:22 GMT', 'd07abe941054d444a8200595040b8166e084a62d1bff'],
    ['gzip', '9bd9ab'],
    ['foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1', '94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007'],
  ];
  for (const [plain, coded] of vectors) {
    const enc = Buffer.alloc(huffmanEncodedLength(plain));
    t.equal(huffmanEncode(plain, enc, 0), enc.length, `${plain}: encoded length`);
    t.equal(enc.toString('hex'), coded, `${plain}: encodes as in the RFC`);
    const src = hex(coded);
    const dst = Buffer.alloc(huffmanDecodedMax(src.length));
    const n = huffmanDecode(src, 0, src.length, dst);
    t.equal(dst.toString('latin1', 0, n), plain, `${plain}: decodes`);
  }
  // Every byte value, and every length 0..40 of a mix (all padding lengths 0..7 occur).
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  const samples = [all.toString('latin1'), all.reverse().toString('latin1')];
  const mix = 'aZ0\x00\xff%~é/\x80 q';
  for (let n = 0; n <= 40; n++) samples.push(mix.repeat(4).slice(0, n));
  for (const s of samples) {
    const enc = Buffer.alloc(huffmanEncodedLength(s) + 2);
    const end = huffmanEncode(s, enc, 1);
    const dst = Buffer.alloc(huffmanDecodedMax(end - 1));
    const n = huffmanDecode(enc, 1, end, dst);
    t.equal(dst.toString('latin1', 0, n), s, `round trip of ${JSON.stringify(s.slice(0, 12))}… (${s.length})`);
  }
  const dec = (b: Buffer) => huffmanDecode(b, 0, b.length, Buffer.alloc(huffmanDecodedMax(b.length) + 1));
  t.equal(dec(hex('1f')), 1, "'a' (00011) with 3 bits of padding");
  t.equal(dec(hex('18')), -1, 'padding not all ones');
  t.equal(dec(hex('1fff')), -1, 'padding of 11 bits');
  t.equal(dec(hex('ff')), -1, 'padding of 8 bits alone');
  t.equal(dec(hex('fffffffc')), -1, 'EOS (30 ones) in the string');
  t.equal(dec(hex('1ffffffff8')), -1, "'a' then EOS");
  t.equal(dec(hex('1c7f')), 2, "'ab'");
  t.equal(dec(hex('fffffffc 71ff')), -1, "EOS, then 'ab' with valid padding");
});

type Step = { block: string; fields: string[]; table: string[]; size: number };

/** Decodes the blocks in order on one decoder, checking fields, dynamic table (newest first) and size. */
function series(t: Test, name: string, tableSize: number, steps: Step[]): void {
  const d = new HpackDecoder(tableSize);
  steps.forEach((step, i) => {
    t.same(d.decode(hex(step.block), NO_LIMIT), step.fields, `${name} block ${i + 1}: fields`);
    t.same(d.dynamicTable().flat(), step.table, `${name} block ${i + 1}: dynamic table`);
    t.equal(d.tableSize, step.size, `${name} block ${i + 1}: table size`);
  });
}

t.test('decoder: RFC 7541 Appendix C.1 integers and C.2 single fields', async (t) => {
  // C.1.1 10 and C.1.2 1337 with a 5-bit prefix, as dynamic table size updates; C.1.3 42 at an octet
  // boundary as a string length.
  const d = new HpackDecoder(4096);
  t.same(d.decode(hex('2a'), NO_LIMIT), []);
  t.equal(d.tableCapacity, 10);
  t.same(d.decode(hex('3f9a0a'), NO_LIMIT), []);
  t.equal(d.tableCapacity, 1337);
  const v42 = 'x'.repeat(42);
  t.same(d.decode(Buffer.from([0x04, 0x2a, ...Buffer.from(v42)]), NO_LIMIT), [':path', v42]);

  series(t, 'C.2.1', 4096, [
    { block: '400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572', fields: ['custom-key', 'custom-header'], table: ['custom-key', 'custom-header'], size: 55 },
  ]);
  series(t, 'C.2.2', 4096, [{ block: '040c 2f73 616d 706c 652f 7061 7468', fields: [':path', '/sample/path'], table: [], size: 0 }]);
  series(t, 'C.2.3', 4096, [{ block: '1008 7061 7373 776f 7264 0673 6563 7265 74', fields: ['password', 'secret'], table: [], size: 0 }]);
  series(t, 'C.2.4', 4096, [{ block: '82', fields: [':method', 'GET'], table: [], size: 0 }]);
});

const REQ1 = [':method', 'GET', ':scheme', 'http', ':path', '/', ':authority', 'www.example.com'];
const REQ2 = [...REQ1, 'cache-control', 'no-cache'];
const REQ3 = [':method', 'GET', ':scheme', 'https', ':path', '/index.html', ':authority', 'www.example.com', 'custom-key', 'custom-value'];
const TAB1 = [':authority', 'www.example.com'];
const TAB2 = ['cache-control', 'no-cache', ...TAB1];
const TAB3 = ['custom-key', 'custom-value', ...TAB2];

t.test('decoder: RFC 7541 Appendix C.3 and C.4, requests on one connection', async (t) => {
  series(t, 'C.3', 4096, [
    { block: '8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d', fields: REQ1, table: TAB1, size: 57 },
    { block: '8286 84be 5808 6e6f 2d63 6163 6865', fields: REQ2, table: TAB2, size: 110 },
    { block: '8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65', fields: REQ3, table: TAB3, size: 164 },
  ]);
  series(t, 'C.4', 4096, [
    { block: '8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff', fields: REQ1, table: TAB1, size: 57 },
    { block: '8286 84be 5886 a8eb 1064 9cbf', fields: REQ2, table: TAB2, size: 110 },
    { block: '8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf', fields: REQ3, table: TAB3, size: 164 },
  ]);
});

const DATE1 = 'Mon, 21 Oct 2013 20:13:21 GMT';
const DATE2 = 'Mon, 21 Oct 2013 20:13:22 GMT';
const LOC = 'https://www.example.com';
const COOKIE = 'foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1';
const RESP1 = [':status', '302', 'cache-control', 'private', 'date', DATE1, 'location', LOC];
const RESP2 = [':status', '307', 'cache-control', 'private', 'date', DATE1, 'location', LOC];
const RESP3 = [':status', '200', 'cache-control', 'private', 'date', DATE2, 'location', LOC, 'content-encoding', 'gzip', 'set-cookie', COOKIE];
const RTAB1 = ['location', LOC, 'date', DATE1, 'cache-control', 'private', ':status', '302'];
const RTAB2 = [':status', '307', 'location', LOC, 'date', DATE1, 'cache-control', 'private'];
const RTAB3 = ['set-cookie', COOKIE, 'content-encoding', 'gzip', 'date', DATE2];

t.test('decoder: RFC 7541 Appendix C.5 and C.6, responses with a 256-byte table (evictions)', async (t) => {
  series(t, 'C.5', 256, [
    {
      block: `4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32
              3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d`,
      fields: RESP1,
      table: RTAB1,
      size: 222,
    },
    { block: '4803 3330 37c1 c0bf', fields: RESP2, table: RTAB2, size: 222 },
    {
      block: `88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970
              7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61
              6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31`,
      fields: RESP3,
      table: RTAB3,
      size: 215,
    },
  ]);
  series(t, 'C.6', 256, [
    {
      block: `4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad
              1718 63c7 8f0b 97c8 e9ae 82ae 43d3`,
      fields: RESP1,
      table: RTAB1,
      size: 222,
    },
    { block: '4883 640e ffc1 c0bf', fields: RESP2, table: RTAB2, size: 222 },
    {
      block: `88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2
              e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07`,
      fields: RESP3,
      table: RTAB3,
      size: 215,
    },
  ]);
});

t.test('decoder: dynamic table size updates, eviction, oversized entries, growth', async (t) => {
  const d = new HpackDecoder(4096);
  d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), NO_LIMIT);
  t.equal(d.tableSize, 57);
  // Two updates opening a block (§4.2): 0 empties the table, then back to 4096.
  t.same(d.decode(Buffer.from([0x20, ...int(5, 0x20, 4096), 0x82]), NO_LIMIT), [':method', 'GET']);
  t.equal(d.tableSize, 0);
  t.equal(d.tableCapacity, 4096);
  t.throws(() => d.decode(Buffer.from([0xbe]), NO_LIMIT), HpackError, 'the evicted entry is gone');

  // Eviction keeps the newest entries that fit: 100-byte entries (32 + 4 + 64) in a 350-byte table.
  const e = new HpackDecoder(350);
  const entry = (i: number) => [`k${String(i).padStart(3, '0')}`, String(i).repeat(64).slice(0, 64)];
  for (let i = 0; i < 10; i++) {
    const [n, v] = entry(i);
    t.same(e.decode(Buffer.from([0x40, ...str(n!), ...str(v!)]), NO_LIMIT), [n, v]);
    t.equal(e.tableSize, Math.min(i + 1, 3) * 100);
  }
  t.same(e.dynamicTable().flat(), [...entry(9), ...entry(8), ...entry(7)]);
  t.same(e.decode(Buffer.from([0xbe, 0xc0]), NO_LIMIT), [...entry(9), ...entry(7)]);
  // An entry larger than the table empties it and is not added (§4.4).
  t.same(e.decode(Buffer.from([0x40, ...str('big'), ...str('v'.repeat(400))]), NO_LIMIT), ['big', 'v'.repeat(400)]);
  t.equal(e.tableSize, 0);
  t.same(e.dynamicTable(), []);
  // One byte too many: the table empties as well.
  e.decode(Buffer.from([0x40, ...str('n'), ...str('v')]), NO_LIMIT);
  t.same(e.decode(Buffer.from([0x40, ...str('n'), ...str('v'.repeat(350 - 32))]), NO_LIMIT), ['n', 'v'.repeat(318)]);
  t.same(e.dynamicTable(), [], 'an entry of 351 bytes is not added to a 350-byte table');
  // An entry of exactly the table's size fits.
  t.same(e.decode(Buffer.from([0x40, ...str('n'), ...str('v'.repeat(350 - 33))]), NO_LIMIT), ['n', 'v'.repeat(317)]);
  t.equal(e.tableSize, 350);

  // Many small entries: the ring grows past its initial slots and indexes stay right.
  const g = new HpackDecoder(65536);
  for (let i = 0; i < 300; i++) g.decode(Buffer.from([0x40, ...str(`n${i}`), ...str(`v${i}`)]), NO_LIMIT);
  const refs: number[] = [];
  for (const k of [0, 1, 17, 64, 299]) refs.push(...int(7, 0x80, 62 + k));
  t.same(g.decode(Buffer.from(refs), NO_LIMIT), ['n299', 'v299', 'n298', 'v298', 'n282', 'v282', 'n235', 'v235', 'n0', 'v0']);
  // A name taken from the dynamic table (index 63 = second newest) in a literal.
  t.same(g.decode(Buffer.from([...int(4, 0x00, 63), ...str('x')]), NO_LIMIT), ['n298', 'x']);
  t.same(g.decode(Buffer.from([...int(6, 0x40, 63), ...huff('hello')]), NO_LIMIT), ['n298', 'hello']);
  t.same(g.dynamicTable()[0], ['n298', 'hello']);

  // Our limit dropped (SETTINGS acknowledged): the next block must open with an update within it.
  const s = new HpackDecoder(4096);
  s.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), NO_LIMIT);
  s.setMaxTableSize(100);
  t.throws(() => s.decode(Buffer.from([0x82]), NO_LIMIT), HpackError, 'no update after the limit dropped');
  const s2 = new HpackDecoder(4096);
  s2.setMaxTableSize(100);
  t.throws(() => s2.decode(Buffer.from([...int(5, 0x20, 101), 0x82]), NO_LIMIT), HpackError, 'update above the new limit');
  const s3 = new HpackDecoder(4096);
  s3.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), NO_LIMIT);
  s3.setMaxTableSize(100);
  t.same(s3.decode(Buffer.from([...int(5, 0x20, 100), 0xbe]), NO_LIMIT), [':authority', 'www.example.com'], 'the 57-byte entry survives');
  t.same(s3.decode(Buffer.from([0xbe]), NO_LIMIT), [':authority', 'www.example.com'], 'no update needed any more');
  // The limit went down to 0 and back up between two blocks: the first update must signal the minimum.
  const s5 = new HpackDecoder(4096);
  s5.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), NO_LIMIT);
  s5.setMaxTableSize(0);
  s5.setMaxTableSize(4096);
  t.throws(() => s5.decode(Buffer.from([...int(5, 0x20, 4096), 0x82]), NO_LIMIT), HpackError, 'an update to 4096 alone');
  const s6 = new HpackDecoder(4096);
  s6.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), NO_LIMIT);
  s6.setMaxTableSize(0);
  s6.setMaxTableSize(4096);
  t.same(s6.decode(Buffer.from([0x20, ...int(5, 0x20, 4096), 0x82]), NO_LIMIT), [':method', 'GET'], '0, then 4096');
  t.equal(s6.tableSize, 0, 'the update to 0 emptied the table');
  t.equal(s6.tableCapacity, 4096);
  const s4 = new HpackDecoder(4096);
  s4.setMaxTableSize(8192);
  t.same(s4.decode(Buffer.from([0x82]), NO_LIMIT), [':method', 'GET'], 'a raised limit needs no update');
  t.same(s4.decode(Buffer.from(int(5, 0x20, 8192)), NO_LIMIT), []);
  t.equal(s4.tableCapacity, 8192);
});

t.test('decoder: malformed blocks throw HpackError', async (t) => {
  const bad: Array<[string, number[], number?]> = [
    ['indexed field with index 0', [0x80]],
    ['indexed field beyond the static table, empty dynamic table', [0xbe]],
    ['indexed field far out of range', int(7, 0x80, 5000)],
    ['literal (incremental) with a name index out of range', [...int(6, 0x40, 62), ...str('v')]],
    ['literal (without indexing) with a name index out of range', [...int(4, 0x00, 62), ...str('v')]],
    ['literal (never indexed) with a name index out of range', [...int(4, 0x10, 70), ...str('v')]],
    ['size update above the limit', int(5, 0x20, 4097)],
    ['size update above a small limit', int(5, 0x20, 101), 100],
    ['size update after a field', [0x82, 0x20]],
    ['size update (to 0) after a field, followed by bytes that would parse as strings', [0x82, 0x20, ...str('a'), ...str('b')]],
    ['size update after a literal', [0x04, ...str('/'), ...int(5, 0x20, 10)]],
    ['integer with 5 continuation bytes (> 2^28)', [0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]],
    ['integer with 5 continuation bytes, small value', [0x3f, 0x80, 0x80, 0x80, 0x80, 0x00]],
    ['integer whose bits would wrap a 32-bit shift to a small value', [0x3f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]],
    ['string length > 2^28', [0x04, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f]],
    ['integer ends with the block', [0xff, 0x80]],
    ['integer prefix at the end', [0xff]],
    ['string longer than the block', [0x04, 0x05, 0x61, 0x62]],
    ['Huffman string longer than the block', [0x04, 0x85, 0x1f]],
    ['block ends before the value', [0x04]],
    ['block ends before the name', [0x40]],
    ['block ends after the name', [0x00, ...str('x')]],
    ['value string length runs past the end', [0x00, ...str('x'), 0x7f, 0x80]],
    ['Huffman padding not all ones', [0x04, 0x81, 0x18]],
    ['Huffman padding longer than 7 bits', [0x04, 0x82, 0x1f, 0xff]],
    ['Huffman string of only padding (8 ones)', [0x04, 0x81, 0xff]],
    ['Huffman EOS in a value', [0x04, 0x84, 0xff, 0xff, 0xff, 0xfc]],
    ['Huffman EOS after a symbol in a name', [0x00, 0x85, 0x1f, 0xff, 0xff, 0xff, 0xf8, ...str('v')]],
    ['literal with incremental indexing, EOS in the value', [0x40, ...str('n'), 0x84, 0xff, 0xff, 0xff, 0xfc]],
  ];
  for (const [what, bytes, limit] of bad) {
    const d = new HpackDecoder(limit ?? 4096);
    t.throws(() => d.decode(Buffer.from(bytes), NO_LIMIT), HpackError, what);
  }
  // Valid neighbours of the cases above, so that the throws are for the reason given.
  const ok: Array<[string, number[], string[]]> = [
    ['index 61 (last static entry)', [0xbd], ['www-authenticate', '']],
    ['integer with 4 continuation bytes (31, not minimal)', [0x3f, 0x80, 0x80, 0x80, 0x00, 0x82], [':method', 'GET']],
    ['Huffman string with 7 bits of padding', [0x04, ...huff('00000')], [':path', '00000']],
    ['empty Huffman string', [0x04, 0x80], [':path', '']],
    ['never indexed', [0x10, ...str('secret'), ...str('v')], ['secret', 'v']],
    ['size update equal to the limit', [...int(5, 0x20, 4096), 0x82], [':method', 'GET']],
  ];
  for (const [what, bytes, fields] of ok) t.same(new HpackDecoder().decode(Buffer.from(bytes), NO_LIMIT), fields, what);
  t.equal(huff('00000').length, 5, "'0' is a 5-bit code: 25 bits and 7 of padding");
});

t.test('decoder: header list over maxListSize returns null, decodes the whole block, stays in sync', async (t) => {
  const d = new HpackDecoder(4096);
  // C.3 block 1 has a list size of (7+3+32) + (7+4+32) + (5+1+32) + (10+15+32) = 180.
  t.equal(d.decode(hex('8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d'), 179), null, 'over by one');
  t.same(d.dynamicTable().flat(), TAB1, 'the literal with indexing was still added');
  t.same(d.decode(hex('8286 84be 5808 6e6f 2d63 6163 6865'), 180 + 53), REQ2, 'next block decodes; its list size 233 is allowed');
  t.equal(d.decode(hex('8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65'), 0), null, 'limit 0');
  t.same(d.dynamicTable().flat(), TAB3, 'table after the rejected block');
  t.same(d.decode(Buffer.from([0xbe, 0xbf, 0xc0]), NO_LIMIT), TAB3, 'entries from every block are where the peer expects them');

  // Over the limit early in a block, with a Huffman literal and a size update: still processed in full.
  const e = new HpackDecoder(4096);
  const block = Buffer.from([...int(5, 0x20, 200), 0x40, ...str('x-big'), ...str('y'.repeat(100)), 0x40, ...huff('x-a'), ...huff('b'), 0x82]);
  t.equal(e.decode(block, 100), null);
  t.equal(e.tableCapacity, 200);
  t.same(e.dynamicTable().flat(), ['x-a', 'b', 'x-big', 'y'.repeat(100)]);
  t.same(e.decode(Buffer.from([0xbe, 0xbf]), NO_LIMIT), ['x-a', 'b', 'x-big', 'y'.repeat(100)]);
  // A malformed block still throws even when it is over the limit.
  t.throws(() => new HpackDecoder().decode(Buffer.from([0x04, ...str('z'.repeat(50)), 0x80]), 10), HpackError);
});

/** A deterministic pseudo-random source (LCG), so that failures reproduce. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

t.test('encoder: exact bytes for the representations it uses', async (t) => {
  const enc = new HpackEncoder();
  t.equal(enc.encode(200, []).toString('hex'), '88', ':status 200 is static index 8');
  const indexed: Array<[number, string]> = [[204, '89'], [206, '8a'], [304, '8b'], [400, '8c'], [404, '8d'], [500, '8e']];
  for (const [status, want] of indexed) t.equal(enc.encode(status, []).toString('hex'), want, `:status ${status}`);
  t.equal(enc.encode(418, []).toString('hex'), '0803343138', ':status 418: literal without indexing, name index 8');
  t.equal(enc.encode(200, ['content-type', 'text/plain']).toString('hex'), '880f100a' + Buffer.from('text/plain').toString('hex'), 'name index 31 = 0x0f 0x10');
  t.equal(enc.encode(200, ['age', '1']).toString('hex'), '880f06' + '0131', 'name index 21');
  t.equal(enc.encode(200, ['accept-charset', 'x']).toString('hex'), '880f00' + '0178', 'name index 15 = 0x0f 0x00');
  t.equal(enc.encode(200, ['date', 'd']).toString('hex'), '880f' + '12' + '0164', 'date = index 33');
  t.equal(enc.encode(200, [':authority', 'a']).toString('hex'), '88' + '01' + '0161', 'name index 1');
  t.equal(enc.encode(undefined, ['grpc-status', '0']).toString('hex'), '000b' + Buffer.from('grpc-status').toString('hex') + '0130', 'trailers: literal name');
  const v127 = 'v'.repeat(127);
  t.equal(enc.encode(undefined, ['x', v127]).subarray(0, 5).toString('hex'), '0001787f00', 'length 127 = 0x7f 0x00');
  const v300 = 'v'.repeat(300);
  t.equal(enc.encode(undefined, ['x', v300]).subarray(0, 6).toString('hex'), '0001787fad01', 'length 300 = 0x7f 0xad 0x01');
});

t.test('encoder: round trip through the decoder, never touching the dynamic table', async (t) => {
  const enc = new HpackEncoder();
  const dec = new HpackDecoder();
  const rand = rng(7541);
  const NAMES = ['content-type', 'content-length', 'date', 'server', 'set-cookie', 'cache-control', 'etag', 'location',
    'vary', 'www-authenticate', 'x-request-id', 'grpc-status', 'grpc-message', 'x', 'x-a-rather-long-custom-header-name-for-testing'];
  const value = (): string => {
    const kind = rand(6);
    const len = kind === 0 ? 0 : kind === 1 ? 120 + rand(20) : kind === 2 ? rand(20_000) : rand(40);
    let s = '';
    for (let i = 0; i < len; i++) s += String.fromCharCode(kind === 3 ? 0x80 + rand(128) : kind === 4 ? rand(256) : 0x20 + rand(95));
    return s;
  };
  const STATUSES = [200, 204, 206, 304, 400, 404, 500, 100, 101, 201, 302, 307, 418, 429, 502, 503, 599, undefined];
  const kept: Array<{ block: Buffer; want: string[] }> = [];
  let failures = 0;
  for (let i = 0; i < 1500; i++) {
    const status = STATUSES[rand(STATUSES.length)];
    const fields: string[] = [];
    const n = rand(12);
    for (let f = 0; f < n; f++) fields.push(NAMES[rand(NAMES.length)]!, value());
    const block = enc.encode(status, fields);
    const want = status === undefined ? fields : [':status', String(status), ...fields];
    const got = dec.decode(block, NO_LIMIT);
    if (JSON.stringify(got) !== JSON.stringify(want)) failures++;
    if (i % 50 === 0) kept.push({ block, want });
  }
  t.equal(failures, 0, '1500 random blocks (values with bytes 0x00-0xff, lengths 0..20000) decode to what was encoded');
  t.equal(dec.tableSize, 0, 'no field was added to the dynamic table');
  t.same(dec.dynamicTable(), []);
  // Earlier blocks were not overwritten by later encodes (they may still sit in a socket's queue).
  const fresh = new HpackDecoder();
  t.ok(kept.every((k) => JSON.stringify(fresh.decode(k.block, NO_LIMIT)) === JSON.stringify(k.want)), 'blocks kept aside are intact');
  // One block larger than the output slab.
  const huge = ['x-huge', 'h'.repeat(100_000), 'content-type', 'a\xff\x80b'];
  t.same(dec.decode(enc.encode(200, huge), NO_LIMIT), [':status', '200', ...huge]);
});

// ---- interop with node:http2 (nghttp2) over loopback ----

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

/** A node:http2 client of `port`, closed when `t` ends. */
function connectTo(t: Test, port: number): http2.ClientHttp2Session {
  const client = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => client.close());
  client.on('error', () => undefined);
  return client;
}

/**
 * A minimal HTTP/2 server on a raw socket (RFC 9113 framing, just enough for a node:http2 client): sends an
 * empty SETTINGS, acknowledges the client's SETTINGS and PINGs, and hands every complete request header
 * block (HEADERS + CONTINUATION, padding and priority removed) to `onHeaders` with a per-connection decoder.
 */
async function rawH2Server(onHeaders: (sock: net.Socket, stream: number, block: Buffer, dec: HpackDecoder) => void, tableSize?: number) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    const dec = new HpackDecoder(4096);
    let buf = Buffer.alloc(0);
    let sawPreface = false;
    let pending: { stream: number; parts: Buffer[] } | undefined;
    // SETTINGS_HEADER_TABLE_SIZE (0x1) when asked for; it binds the client's encoder once acknowledged.
    const settings = Buffer.alloc(tableSize === undefined ? 0 : 6);
    if (tableSize !== undefined) {
      settings.writeUInt16BE(0x1, 0);
      settings.writeUInt32BE(tableSize, 2);
    }
    sock.write(frame(FRAME.SETTINGS, 0, 0, settings));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!sawPreface) {
        if (buf.length < PREFACE.length) return;
        if (!buf.subarray(0, PREFACE.length).equals(PREFACE)) return sock.destroy();
        buf = buf.subarray(PREFACE.length);
        sawPreface = true;
      }
      while (buf.length >= 9) {
        const len = buf.readUIntBE(0, 3);
        if (buf.length < 9 + len) break;
        const type = buf[3]!;
        const flags = buf[4]!;
        const stream = buf.readUInt32BE(5) & 0x7fffffff;
        let p = buf.subarray(9, 9 + len);
        buf = buf.subarray(9 + len);
        if (type === FRAME.SETTINGS && !(flags & ACK)) sock.write(frame(FRAME.SETTINGS, ACK, 0, Buffer.alloc(0)));
        else if (type === FRAME.SETTINGS && tableSize !== undefined) dec.setMaxTableSize(tableSize);
        else if (type === FRAME.PING && !(flags & ACK)) sock.write(frame(FRAME.PING, ACK, 0, p));
        else if (type === FRAME.HEADERS) {
          if (flags & PADDED) p = p.subarray(1, p.length - p[0]!);
          if (flags & PRIORITY) p = p.subarray(5);
          if (flags & END_HEADERS) onHeaders(sock, stream, p, dec);
          else pending = { stream, parts: [p] };
        } else if (type === FRAME.CONTINUATION && pending) {
          pending.parts.push(p);
          if (flags & END_HEADERS) {
            onHeaders(sock, pending.stream, Buffer.concat(pending.parts), dec);
            pending = undefined;
          }
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface ClientReply {
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders | undefined;
  body: string;
}
function clientRequest(client: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders): Promise<ClientReply> {
  return new Promise((resolve, reject) => {
    const req = client.request(headers);
    let got: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    req.on('response', (h) => (got = h));
    req.on('trailers', (h) => (trailers = h));
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('error', reject);
    req.on('end', () => {
      if (!got) return reject(new Error('no response headers'));
      resolve({ headers: got, trailers, body: Buffer.concat(chunks).toString() });
    });
  });
}

/** The pairs of a header object as sorted "name: value" lines (arrays spread), pseudo-headers included. */
function lines(h: http2.IncomingHttpHeaders, skip: string[] = []): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(h)) {
    if (skip.includes(k) || v === undefined) continue;
    for (const x of Array.isArray(v) ? v : [v]) out.push(`${k}: ${x}`);
  }
  return out.sort();
}
function flatLines(fields: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < fields.length; i += 2) out.push(`${fields[i]}: ${fields[i + 1]}`);
  return out.sort();
}

t.test('interop: node:http2 client accepts the encoder\'s response and trailer blocks', async (t) => {
  const enc = new HpackEncoder();
  const cases: Record<string, { status: number; fields: string[]; trailers?: string[] }> = {
    '/ok': { status: 200, fields: ['content-type', 'text/plain', 'content-length', '2', 'date', 'Thu, 03 Dec 2026 17:00:00 GMT', 'server', 'lb'] },
    '/teapot': { status: 418, fields: ['x-custom-header', 'some value', 'cache-control', 'no-store'] },
    '/notfound': { status: 404, fields: [] },
    '/latin1': { status: 503, fields: ['x-bytes', 'caf\xe9 \x80\xff\xa0end', 'retry-after', '5'] },
    '/cookies': { status: 200, fields: ['set-cookie', 'a=1', 'set-cookie', 'b=2; Path=/', 'vary', 'accept-encoding', 'etag', '"abc"'] },
    '/long': { status: 206, fields: ['x-long', 'L'.repeat(5000), 'content-range', 'bytes 0-1/2', 'www-authenticate', 'Basic realm="x"'] },
    '/grpc': { status: 200, fields: ['content-type', 'application/grpc'], trailers: ['grpc-status', '0', 'grpc-message', 'fine \xe9'] },
  };
  const srv = await rawH2Server((sock, stream, block, dec) => {
    const req = dec.decode(block, NO_LIMIT)!;
    const c = cases[req[req.indexOf(':path') + 1]!]!;
    // The HEADERS frame written in place in front of the block (headroom of 9 bytes).
    const f = enc.encode(c.status, c.fields, 9);
    f.writeUIntBE(f.length - 9, 0, 3);
    f[3] = FRAME.HEADERS;
    f[4] = END_HEADERS;
    f.writeUInt32BE(stream, 5);
    sock.write(f);
    if (c.trailers) {
      sock.write(frame(FRAME.DATA, 0, stream, Buffer.from('ok')));
      sock.write(frame(FRAME.HEADERS, END_HEADERS | END_STREAM, stream, enc.encode(undefined, c.trailers)));
    } else {
      sock.write(frame(FRAME.DATA, END_STREAM, stream, Buffer.from('ok')));
    }
  });
  t.teardown(srv.close);
  const client = connectTo(t, srv.port);
  // Sequentially, then all at once.
  for (const [path, c] of Object.entries(cases)) {
    const r = await clientRequest(client, { ':path': path });
    t.equal(r.headers[':status'], c.status, `${path}: status`);
    t.same(lines(r.headers, [':status']), flatLines(c.fields), `${path}: headers`);
    if (c.trailers) t.same(lines(r.trailers ?? {}), flatLines(c.trailers), `${path}: trailers`);
    t.equal(r.body, 'ok');
  }
  const all = await Promise.all(Object.keys(cases).map((p) => clientRequest(client, { ':path': p })));
  t.same(all.map((r) => r.headers[':status']), Object.values(cases).map((c) => c.status), 'concurrent streams');
});

t.test('interop: the decoder reads node:http2 client request blocks (dynamic table, Huffman, never indexed)', async (t) => {
  const blocks: Buffer[] = [];
  const decoded: string[][] = [];
  let lastDecoder: HpackDecoder | undefined;
  const enc = new HpackEncoder();
  const srv = await rawH2Server((sock, stream, block, dec) => {
    lastDecoder = dec;
    blocks.push(Buffer.from(block));
    decoded.push(dec.decode(block, NO_LIMIT)!);
    sock.write(frame(FRAME.HEADERS, END_HEADERS | END_STREAM, stream, enc.encode(204, [])));
  });
  t.teardown(srv.close);
  const client = connectTo(t, srv.port);
  const sent: http2.OutgoingHttpHeaders[] = [];
  for (let i = 0; i < 8; i++) {
    const h: http2.OutgoingHttpHeaders = {
      ':method': i % 3 === 2 ? 'POST' : 'GET',
      ':path': `/api/v1/items/${i}?sort=name&filter=active`,
      'user-agent': 'hpack-interop-client/1.0 (lowercase text huffman codes well)',
      accept: 'application/json, text/plain, */*',
      'accept-encoding': 'gzip, deflate, br',
      'x-request-id': `req-${i}-0123456789abcdef`,
      'x-tenant': 'tenant-alpha',
      cookie: 'session=abcdef0123456789; theme=dark',
      authorization: 'Bearer very-secret-token-value',
      [http2.sensitiveHeaders]: ['authorization'],
    };
    sent.push(h);
    const r = await clientRequest(client, h);
    t.equal(r.headers[':status'], 204);
  }
  t.equal(decoded.length, 8, 'eight request blocks');
  for (let i = 0; i < 8; i++) {
    const want: string[] = [`:authority: 127.0.0.1:${srv.port}`, ':scheme: http'];
    for (const [k, v] of Object.entries(sent[i]!)) if (typeof k === 'string' && typeof v === 'string') want.push(`${k}: ${v}`);
    const got = decoded[i]!;
    // RFC 9113 §8.2.3 allows the cookie header to be split into crumbs; join them back.
    const crumbs: string[] = [];
    const rest: string[] = [];
    for (let j = 0; j < got.length; j += 2) (got[j] === 'cookie' ? crumbs.push(got[j + 1]!) : rest.push(got[j]!, got[j + 1]!));
    t.same(flatLines([...rest, 'cookie', crumbs.join('; ')]), want.sort(), `request ${i}: every header as sent`);
  }
  t.notOk(blocks[0]!.includes('hpack-interop-client'), 'the first block carries user-agent Huffman-coded');
  t.ok(blocks[7]!.length * 2 < blocks[0]!.length, `later blocks reuse the dynamic table (${blocks[0]!.length} → ${blocks[7]!.length} bytes)`);
  const table = lastDecoder!.dynamicTable();
  t.ok(table.some(([n]) => n === 'user-agent'), 'user-agent is in the dynamic table');
  t.notOk(table.some(([n]) => n === 'authorization'), 'authorization (sensitive) was never indexed');
});

t.test('interop: the client honours our SETTINGS_HEADER_TABLE_SIZE; the decoder enforces it', async (t) => {
  for (const size of [0, 64]) {
    const decoded: string[][] = [];
    const capacities: number[] = [];
    const enc = new HpackEncoder();
    const srv = await rawH2Server((sock, stream, block, dec) => {
      decoded.push(dec.decode(block, NO_LIMIT)!);
      capacities.push(dec.tableCapacity);
      sock.write(frame(FRAME.HEADERS, END_HEADERS | END_STREAM, stream, enc.encode(200, [])));
    }, size);
    const client = http2.connect(`http://127.0.0.1:${srv.port}`);
    client.on('error', () => undefined);
    for (let i = 0; i < 5; i++) {
      const r = await clientRequest(client, { ':path': `/p${i}`, 'x-filler': `value-${i}-`.padEnd(40, 'z'), 'user-agent': 'interop' });
      t.equal(r.headers[':status'], 200);
    }
    client.close();
    await srv.close();
    t.equal(decoded.length, 5);
    for (let i = 0; i < 5; i++) {
      const got = decoded[i]!;
      t.equal(got[got.indexOf(':path') + 1], `/p${i}`, `table ${size}, request ${i}: path`);
      t.equal(got[got.indexOf('x-filler') + 1], `value-${i}-`.padEnd(40, 'z'), `table ${size}, request ${i}: x-filler`);
    }
    t.ok(capacities[4]! <= size, `table ${size}: the client shrank its table (${capacities.join(', ')})`);
  }
});

t.test('decoder: blocks that are views into a larger buffer; strings larger than the kept scratch', async (t) => {
  const inner = Buffer.from([0x82, 0x40, ...str('x-a'), ...huff('caf\xe9'), 0x04, ...str('/p')]);
  const outer = Buffer.concat([Buffer.from('garbage'), inner, Buffer.from([0xff, 0xff, 0x80])]);
  const view = outer.subarray(7, 7 + inner.length);
  t.same(new HpackDecoder().decode(view, NO_LIMIT), [':method', 'GET', 'x-a', 'caf\xe9', ':path', '/p']);
  const big = 'abc\xff'.repeat(40_000);
  const d = new HpackDecoder();
  t.same(d.decode(Buffer.from([0x04, ...huff(big), 0x00, ...huff('x'), ...huff('y')]), NO_LIMIT), [':path', big, 'x', 'y'], '160 000-char Huffman string');
  t.same(d.decode(Buffer.from([0x04, ...huff('short')]), NO_LIMIT), [':path', 'short'], 'then a short one');
  const mid = 'mid-sized \xe9'.repeat(1000); // coded in more than the initial 4 KiB scratch, less than 64 KiB
  t.same(d.decode(Buffer.from([0x04, ...huff(mid), 0x04, ...huff('after')]), NO_LIMIT), [':path', mid, ':path', 'after']);
  t.throws(() => new HpackDecoder(-1), RangeError);
  t.throws(() => new HpackDecoder(1.5), RangeError);
  t.throws(() => d.setMaxTableSize(-1), RangeError);
});

t.test('encoder: headroom, encodeInto, chars above 0xff, odd field lists', async (t) => {
  const enc = new HpackEncoder();
  const fields = ['content-type', 'text/html', 'x-custom', 'v\xe9'.repeat(30)];
  const out = Buffer.alloc(encodedLengthBound(fields) + 3, 0xaa);
  const end = enc.encodeInto(out, 3, 302, fields);
  t.same(new HpackDecoder().decode(out.subarray(3, end), NO_LIMIT), [':status', '302', ...fields], 'encodeInto at an offset');
  t.equal(out.subarray(0, 3).toString('hex'), 'aaaaaa', 'bytes before the offset untouched');
  t.same(out.subarray(3, end), enc.encode(302, fields), 'same bytes as encode()');
  t.throws(() => enc.encodeInto(out, 4, 302, fields), RangeError, 'one byte short of the bound');
  t.throws(() => enc.encodeInto(out, -1, 302, fields), RangeError, 'negative offset');
  const b = enc.encode(200, ['age', '1'], 9);
  t.equal(b.length, 14);
  t.equal(b.subarray(9).toString('hex'), '880f060131', 'the block follows 9 free bytes');
  t.equal(enc.encode(undefined, ['x', '\u0100\u01ff']).toString('hex'), '0001780200ff', 'a char above 0xff is sent as its low byte');
  t.equal(enc.encode(404, ['age']).toString('hex'), '8d', 'a name without a value is ignored');
  const d = new HpackDecoder();
  const long = 'q'.repeat(16 * 1024 + 5);
  const blocks = [enc.encode(200, ['x', long], 9), enc.encode(200, ['x', long], 9), enc.encode(204, [], 9)];
  t.same(blocks.map((x) => d.decode(x.subarray(9), NO_LIMIT)), [[':status', '200', 'x', long], [':status', '200', 'x', long], [':status', '204']]);
});

t.test('decoder: mutated and random blocks either decode or throw HpackError, nothing else', async (t) => {
  const rand = rng(9113);
  const enc = new HpackEncoder();
  const seeds: Buffer[] = [
    hex('8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff'),
    hex('8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf'),
    hex('4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad'),
    Buffer.from([...int(5, 0x20, 300), 0x40, ...huff('x-key'), ...huff('some value'), 0xbe, 0x10, ...str('n'), ...huff('v')]),
    Buffer.from(enc.encode(503, ['content-type', 'text/plain', 'x-long', 'z'.repeat(200)])),
  ];
  let decoded = 0;
  let rejected = 0;
  const other: string[] = [];
  // `shared` keeps decoding after errors (a connection would be closed): whatever state an error leaves,
  // the next block still only decodes or throws HpackError.
  const shared = new HpackDecoder(4096);
  for (let i = 0; i < 20_000; i++) {
    const b = Buffer.from(seeds[rand(seeds.length)]!);
    let m: Buffer = b;
    const kind = rand(5);
    if (kind === 0) {
      for (let k = rand(3) + 1; k > 0; k--) {
        const at = rand(m.length);
        m[at] = m[at]! ^ (1 << rand(8));
      }
    }
    else if (kind === 1) m = b.subarray(0, rand(b.length));
    else if (kind === 2) m = Buffer.concat([b, Buffer.from([rand(256), rand(256), rand(256)])]);
    else if (kind === 3) m[rand(m.length)] = rand(256);
    else m = Buffer.from(Array.from({ length: rand(40) }, () => rand(256)));
    for (const d of [new HpackDecoder(4096), shared]) {
      try {
        const r = d.decode(m, rand(2) ? NO_LIMIT : 200);
        if (r !== null && (r.length % 2 !== 0 || r.some((x) => typeof x !== 'string'))) other.push(`bad result for ${m.toString('hex')}`);
        decoded++;
      } catch (err) {
        if (err instanceof HpackError) rejected++;
        else other.push(`${(err as Error).name}: ${(err as Error).message} for ${m.toString('hex')}`);
      }
    }
  }
  t.same(other.slice(0, 5), [], 'no other exception or malformed result');
  t.ok(decoded > 1000 && rejected > 1000, `both outcomes occur (${decoded} decoded, ${rejected} rejected)`);
});

t.test('interop: h2load and nghttp (nghttp2 tools) against the codec on a raw HTTP/2 socket', async (t) => {
  const enc = new HpackEncoder();
  const bad: string[] = [];
  let blocks = 0;
  const srv = await rawH2Server((sock, stream, block, dec) => {
    blocks++;
    let req: string[] | null = null;
    try {
      req = dec.decode(block, 16 * 1024);
    } catch (err) {
      bad.push(`stream ${stream}: ${(err as Error).message}`);
    }
    const get = (n: string) => (req ? req[req.indexOf(n) + 1] : undefined);
    if (req && (get(':method') !== 'GET' || get(':scheme') !== 'http' || !get(':path')?.startsWith('/load') || get('x-test') !== 'caf\xc3\xa9 ' + 'v'.repeat(60))) {
      bad.push(`stream ${stream}: ${JSON.stringify(req)}`);
    }
    const fields = ['content-type', 'text/plain', 'x-seen', String(blocks), 'x-bytes', 'caf\xe9', 'server', 'hpack-test'];
    sock.write(frame(FRAME.HEADERS, END_HEADERS, stream, enc.encode(get(':path') === '/load/teapot' ? 418 : 200, fields)));
    sock.write(frame(FRAME.DATA, END_STREAM, stream, Buffer.from('hello')));
  });
  t.teardown(srv.close);
  // x-test's value is sent as UTF-8 by the tools and decoded here byte for byte (latin1).
  const r = await run('h2load', ['-n', '2000', '-c', '4', '-m', '10', '-t', '1', '-H', `x-test: café ${'v'.repeat(60)}`, `http://127.0.0.1:${srv.port}/load`]);
  t.equal(r.code, 0, `h2load exits 0 ${r.err}`);
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.out);
  t.ok(m, `h2load reports its requests: ${r.out.slice(0, 400)}`);
  t.equal(Number(m?.[4]), 2000, '2000 succeeded');
  t.match(r.out, /status codes: 2000 2xx/, 'all 2xx');
  t.match(r.out, /space savings [0-9.]+%/, 'h2load reports its header compression');
  t.same(bad.slice(0, 5), [], 'every request block decoded to what h2load sent');
  t.equal(blocks, 2000);

  const n = await run('nghttp', ['-nv', '-H', `x-test: café ${'v'.repeat(60)}`, `http://127.0.0.1:${srv.port}/load/teapot`]);
  t.equal(n.code, 0, `nghttp exits 0 ${n.err}`);
  t.match(n.out, /recv \(stream_id=\d+\) :status: 418/, 'nghttp decoded :status 418 (literal, static name)');
  t.match(n.out, /recv \(stream_id=\d+\) content-type: text\/plain/, 'content-type (static name index 31)');
  t.match(n.out, /recv \(stream_id=\d+\) x-seen: 2001/, 'x-seen (literal name)');
  t.match(n.out, /recv \(stream_id=\d+\) server: hpack-test/, 'server');
  t.same(bad, [], 'nghttp\'s request block decoded too');
});

t.test('interop: every static table name as nghttp2 indexes it decodes to the same name', async (t) => {
  // Names 15..61 of Appendix A, minus those node:http2 refuses to send (connection-specific) or rewrites.
  const names = ['accept-charset', 'accept-encoding', 'accept-language', 'accept-ranges', 'accept', 'access-control-allow-origin',
    'age', 'allow', 'authorization', 'cache-control', 'content-disposition', 'content-encoding', 'content-language',
    'content-length', 'content-location', 'content-range', 'content-type', 'cookie', 'date', 'etag', 'expect', 'expires',
    'from', 'if-match', 'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since', 'last-modified', 'link',
    'location', 'max-forwards', 'proxy-authenticate', 'proxy-authorization', 'range', 'referer', 'refresh', 'retry-after',
    'server', 'set-cookie', 'strict-transport-security', 'user-agent', 'vary', 'via', 'www-authenticate'];
  const decoded: string[][] = [];
  const enc = new HpackEncoder();
  const srv = await rawH2Server((sock, stream, block, dec) => {
    decoded.push(dec.decode(block, NO_LIMIT)!);
    sock.write(frame(FRAME.HEADERS, END_HEADERS | END_STREAM, stream, enc.encode(204, [])));
  });
  t.teardown(srv.close);
  const client = connectTo(t, srv.port);
  const headers: http2.OutgoingHttpHeaders = { ':method': 'POST', ':path': '/index.html', ':scheme': 'https' };
  for (const n of names) headers[n] = n === 'accept-encoding' ? 'gzip, deflate' : n === 'content-length' ? '0' : `v-${n}`;
  await clientRequest(client, headers);
  await clientRequest(client, headers);
  t.equal(decoded.length, 2);
  for (const got of decoded) {
    const seen = new Map<string, string>();
    for (let i = 0; i < got.length; i += 2) seen.set(got[i]!, got[i + 1]!);
    t.same(names.filter((n) => seen.get(n) !== headers[n]), [], 'every name and value');
    t.equal(seen.get(':path'), '/index.html');
    t.equal(seen.get(':scheme'), 'https');
    t.equal(seen.get(':method'), 'POST');
  }
});

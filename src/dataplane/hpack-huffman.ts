// The HPACK Huffman code (RFC 7541 §5.2, Appendix B) and a table-driven decoder built from it at module
// load.
//
// HUFFMAN_TABLE below is RFC 7541 Appendix B transcribed as data: for each symbol 0..255 and EOS (256),
// the code right-aligned in an integer and its length in bits. The code is canonical (codes assigned in
// order of length, then symbol) and complete (Kraft sum exactly 1); test/hpack.test.ts checks both.
//
// Decoder: a byte-at-a-time state machine. States are the 256 internal nodes of the code tree (the root is
// state 0); DECODE_TABLE[state << 8 | byte] says which state the 8 bits lead to, and which symbols (at most
// two, since the shortest code has 5 bits) were completed on the way. An input that walks into the EOS
// leaf is an error (§5.2: "A Huffman-encoded string literal containing the EOS symbol MUST be treated as
// a decoding error"): it leads to a dead state (256) that no byte leaves, so the loop needs no branch. At
// the end of the string the state must be a node on the all-ones path at depth 0..7 (ACCEPTING): that is
// exactly "padding of at most 7 bits, all ones, i.e. a prefix of EOS".

/** RFC 7541 Appendix B: code, length in bits; one row per symbol 0..255, then EOS. */
// prettier-ignore
export const HUFFMAN_TABLE: readonly number[] = [
  0x00001ff8, 13, // (  0)
  0x007fffd8, 23, // (  1)
  0x0fffffe2, 28, // (  2)
  0x0fffffe3, 28, // (  3)
  0x0fffffe4, 28, // (  4)
  0x0fffffe5, 28, // (  5)
  0x0fffffe6, 28, // (  6)
  0x0fffffe7, 28, // (  7)
  0x0fffffe8, 28, // (  8)
  0x00ffffea, 24, // (  9)
  0x3ffffffc, 30, // ( 10)
  0x0fffffe9, 28, // ( 11)
  0x0fffffea, 28, // ( 12)
  0x3ffffffd, 30, // ( 13)
  0x0fffffeb, 28, // ( 14)
  0x0fffffec, 28, // ( 15)
  0x0fffffed, 28, // ( 16)
  0x0fffffee, 28, // ( 17)
  0x0fffffef, 28, // ( 18)
  0x0ffffff0, 28, // ( 19)
  0x0ffffff1, 28, // ( 20)
  0x0ffffff2, 28, // ( 21)
  0x3ffffffe, 30, // ( 22)
  0x0ffffff3, 28, // ( 23)
  0x0ffffff4, 28, // ( 24)
  0x0ffffff5, 28, // ( 25)
  0x0ffffff6, 28, // ( 26)
  0x0ffffff7, 28, // ( 27)
  0x0ffffff8, 28, // ( 28)
  0x0ffffff9, 28, // ( 29)
  0x0ffffffa, 28, // ( 30)
  0x0ffffffb, 28, // ( 31)
  0x00000014,  6, // ( 32)
  0x000003f8, 10, // '!'
  0x000003f9, 10, // '"'
  0x00000ffa, 12, // '#'
  0x00001ff9, 13, // '$'
  0x00000015,  6, // '%'
  0x000000f8,  8, // '&'
  0x000007fa, 11, // '''
  0x000003fa, 10, // '('
  0x000003fb, 10, // ')'
  0x000000f9,  8, // '*'
  0x000007fb, 11, // '+'
  0x000000fa,  8, // ','
  0x00000016,  6, // '-'
  0x00000017,  6, // '.'
  0x00000018,  6, // '/'
  0x00000000,  5, // '0'
  0x00000001,  5, // '1'
  0x00000002,  5, // '2'
  0x00000019,  6, // '3'
  0x0000001a,  6, // '4'
  0x0000001b,  6, // '5'
  0x0000001c,  6, // '6'
  0x0000001d,  6, // '7'
  0x0000001e,  6, // '8'
  0x0000001f,  6, // '9'
  0x0000005c,  7, // ':'
  0x000000fb,  8, // ';'
  0x00007ffc, 15, // '<'
  0x00000020,  6, // '='
  0x00000ffb, 12, // '>'
  0x000003fc, 10, // '?'
  0x00001ffa, 13, // '@'
  0x00000021,  6, // 'A'
  0x0000005d,  7, // 'B'
  0x0000005e,  7, // 'C'
  0x0000005f,  7, // 'D'
  0x00000060,  7, // 'E'
  0x00000061,  7, // 'F'
  0x00000062,  7, // 'G'
  0x00000063,  7, // 'H'
  0x00000064,  7, // 'I'
  0x00000065,  7, // 'J'
  0x00000066,  7, // 'K'
  0x00000067,  7, // 'L'
  0x00000068,  7, // 'M'
  0x00000069,  7, // 'N'
  0x0000006a,  7, // 'O'
  0x0000006b,  7, // 'P'
  0x0000006c,  7, // 'Q'
  0x0000006d,  7, // 'R'
  0x0000006e,  7, // 'S'
  0x0000006f,  7, // 'T'
  0x00000070,  7, // 'U'
  0x00000071,  7, // 'V'
  0x00000072,  7, // 'W'
  0x000000fc,  8, // 'X'
  0x00000073,  7, // 'Y'
  0x000000fd,  8, // 'Z'
  0x00001ffb, 13, // '['
  0x0007fff0, 19, // '\'
  0x00001ffc, 13, // ']'
  0x00003ffc, 14, // '^'
  0x00000022,  6, // '_'
  0x00007ffd, 15, // '`'
  0x00000003,  5, // 'a'
  0x00000023,  6, // 'b'
  0x00000004,  5, // 'c'
  0x00000024,  6, // 'd'
  0x00000005,  5, // 'e'
  0x00000025,  6, // 'f'
  0x00000026,  6, // 'g'
  0x00000027,  6, // 'h'
  0x00000006,  5, // 'i'
  0x00000074,  7, // 'j'
  0x00000075,  7, // 'k'
  0x00000028,  6, // 'l'
  0x00000029,  6, // 'm'
  0x0000002a,  6, // 'n'
  0x00000007,  5, // 'o'
  0x0000002b,  6, // 'p'
  0x00000076,  7, // 'q'
  0x0000002c,  6, // 'r'
  0x00000008,  5, // 's'
  0x00000009,  5, // 't'
  0x0000002d,  6, // 'u'
  0x00000077,  7, // 'v'
  0x00000078,  7, // 'w'
  0x00000079,  7, // 'x'
  0x0000007a,  7, // 'y'
  0x0000007b,  7, // 'z'
  0x00007ffe, 15, // '{'
  0x000007fc, 11, // '|'
  0x00003ffd, 14, // '}'
  0x00001ffd, 13, // '~'
  0x0ffffffc, 28, // (127)
  0x000fffe6, 20, // (128)
  0x003fffd2, 22, // (129)
  0x000fffe7, 20, // (130)
  0x000fffe8, 20, // (131)
  0x003fffd3, 22, // (132)
  0x003fffd4, 22, // (133)
  0x003fffd5, 22, // (134)
  0x007fffd9, 23, // (135)
  0x003fffd6, 22, // (136)
  0x007fffda, 23, // (137)
  0x007fffdb, 23, // (138)
  0x007fffdc, 23, // (139)
  0x007fffdd, 23, // (140)
  0x007fffde, 23, // (141)
  0x00ffffeb, 24, // (142)
  0x007fffdf, 23, // (143)
  0x00ffffec, 24, // (144)
  0x00ffffed, 24, // (145)
  0x003fffd7, 22, // (146)
  0x007fffe0, 23, // (147)
  0x00ffffee, 24, // (148)
  0x007fffe1, 23, // (149)
  0x007fffe2, 23, // (150)
  0x007fffe3, 23, // (151)
  0x007fffe4, 23, // (152)
  0x001fffdc, 21, // (153)
  0x003fffd8, 22, // (154)
  0x007fffe5, 23, // (155)
  0x003fffd9, 22, // (156)
  0x007fffe6, 23, // (157)
  0x007fffe7, 23, // (158)
  0x00ffffef, 24, // (159)
  0x003fffda, 22, // (160)
  0x001fffdd, 21, // (161)
  0x000fffe9, 20, // (162)
  0x003fffdb, 22, // (163)
  0x003fffdc, 22, // (164)
  0x007fffe8, 23, // (165)
  0x007fffe9, 23, // (166)
  0x001fffde, 21, // (167)
  0x007fffea, 23, // (168)
  0x003fffdd, 22, // (169)
  0x003fffde, 22, // (170)
  0x00fffff0, 24, // (171)
  0x001fffdf, 21, // (172)
  0x003fffdf, 22, // (173)
  0x007fffeb, 23, // (174)
  0x007fffec, 23, // (175)
  0x001fffe0, 21, // (176)
  0x001fffe1, 21, // (177)
  0x003fffe0, 22, // (178)
  0x001fffe2, 21, // (179)
  0x007fffed, 23, // (180)
  0x003fffe1, 22, // (181)
  0x007fffee, 23, // (182)
  0x007fffef, 23, // (183)
  0x000fffea, 20, // (184)
  0x003fffe2, 22, // (185)
  0x003fffe3, 22, // (186)
  0x003fffe4, 22, // (187)
  0x007ffff0, 23, // (188)
  0x003fffe5, 22, // (189)
  0x003fffe6, 22, // (190)
  0x007ffff1, 23, // (191)
  0x03ffffe0, 26, // (192)
  0x03ffffe1, 26, // (193)
  0x000fffeb, 20, // (194)
  0x0007fff1, 19, // (195)
  0x003fffe7, 22, // (196)
  0x007ffff2, 23, // (197)
  0x003fffe8, 22, // (198)
  0x01ffffec, 25, // (199)
  0x03ffffe2, 26, // (200)
  0x03ffffe3, 26, // (201)
  0x03ffffe4, 26, // (202)
  0x07ffffde, 27, // (203)
  0x07ffffdf, 27, // (204)
  0x03ffffe5, 26, // (205)
  0x00fffff1, 24, // (206)
  0x01ffffed, 25, // (207)
  0x0007fff2, 19, // (208)
  0x001fffe3, 21, // (209)
  0x03ffffe6, 26, // (210)
  0x07ffffe0, 27, // (211)
  0x07ffffe1, 27, // (212)
  0x03ffffe7, 26, // (213)
  0x07ffffe2, 27, // (214)
  0x00fffff2, 24, // (215)
  0x001fffe4, 21, // (216)
  0x001fffe5, 21, // (217)
  0x03ffffe8, 26, // (218)
  0x03ffffe9, 26, // (219)
  0x0ffffffd, 28, // (220)
  0x07ffffe3, 27, // (221)
  0x07ffffe4, 27, // (222)
  0x07ffffe5, 27, // (223)
  0x000fffec, 20, // (224)
  0x00fffff3, 24, // (225)
  0x000fffed, 20, // (226)
  0x001fffe6, 21, // (227)
  0x003fffe9, 22, // (228)
  0x001fffe7, 21, // (229)
  0x001fffe8, 21, // (230)
  0x007ffff3, 23, // (231)
  0x003fffea, 22, // (232)
  0x003fffeb, 22, // (233)
  0x01ffffee, 25, // (234)
  0x01ffffef, 25, // (235)
  0x00fffff4, 24, // (236)
  0x00fffff5, 24, // (237)
  0x03ffffea, 26, // (238)
  0x007ffff4, 23, // (239)
  0x03ffffeb, 26, // (240)
  0x07ffffe6, 27, // (241)
  0x03ffffec, 26, // (242)
  0x03ffffed, 26, // (243)
  0x07ffffe7, 27, // (244)
  0x07ffffe8, 27, // (245)
  0x07ffffe9, 27, // (246)
  0x07ffffea, 27, // (247)
  0x07ffffeb, 27, // (248)
  0x0ffffffe, 28, // (249)
  0x07ffffec, 27, // (250)
  0x07ffffed, 27, // (251)
  0x07ffffee, 27, // (252)
  0x07ffffef, 27, // (253)
  0x07fffff0, 27, // (254)
  0x03ffffee, 26, // (255)
  0x3fffffff, 30, // EOS
];

export const EOS = 256;
export const HUFFMAN_CODES = new Uint32Array(257);
export const HUFFMAN_LENGTHS = new Uint8Array(257);
for (let s = 0; s < 257; s++) {
  HUFFMAN_CODES[s] = HUFFMAN_TABLE[2 * s]!;
  HUFFMAN_LENGTHS[s] = HUFFMAN_TABLE[2 * s + 1]!;
}

// DECODE_TABLE entry layout:
//   bits 0-8   next state (0..255, or DEAD)
//   bits 9-16  first completed symbol      bits 17-24 second completed symbol
//   bits 25-26 number of symbols completed (0, 1 or 2)
const DEAD = 256;
export const DECODE_TABLE = new Int32Array(257 * 256);
/** 1 for the states a string may end in (padding of 0..7 one bits), else 0 (DEAD included). */
export const ACCEPTING = new Uint8Array(257);

{
  // The code tree: child[node * 2 + bit] is an internal node id (>= 0) or ~symbol for a leaf (< 0);
  // 0x7fffffff marks an unset child (there is none in a complete code).
  const UNSET = 0x7fffffff;
  const child = new Int32Array(512).fill(UNSET);
  let nodes = 1;
  for (let s = 0; s < 257; s++) {
    const code = HUFFMAN_CODES[s]!;
    const len = HUFFMAN_LENGTHS[s]!;
    let node = 0;
    for (let i = len - 1; i >= 0; i--) {
      const slot = node * 2 + ((code >>> i) & 1);
      if (i === 0) {
        if (child[slot] !== UNSET) throw new Error(`HPACK Huffman table: code of symbol ${s} is not prefix-free`);
        child[slot] = ~s;
      } else {
        let next = child[slot]!;
        if (next === UNSET) {
          if (nodes === 256) throw new Error('HPACK Huffman table: more than 256 internal nodes');
          next = nodes++;
          child[slot] = next;
        } else if (next < 0) {
          throw new Error(`HPACK Huffman table: code of symbol ${s} is not prefix-free`);
        }
        node = next;
      }
    }
  }
  if (nodes !== 256 || child.includes(UNSET)) throw new Error('HPACK Huffman table: the code is not complete');

  // Depth-0..7 nodes on the all-ones path accept the end of a string.
  for (let node = 0, depth = 0; depth < 8; depth++) {
    ACCEPTING[node] = 1;
    node = child[node * 2 + 1]!;
  }

  for (let state = 0; state < 256; state++) {
    for (let byte = 0; byte < 256; byte++) {
      let node = state;
      let count = 0;
      let syms = 0;
      let fail = false;
      for (let i = 7; i >= 0; i--) {
        const next = child[node * 2 + ((byte >>> i) & 1)]!;
        if (next >= 0) {
          node = next;
          continue;
        }
        const sym = ~next;
        if (sym === EOS) {
          fail = true;
          break;
        }
        syms |= sym << (8 * count);
        count++;
        node = 0;
      }
      DECODE_TABLE[(state << 8) | byte] = fail ? DEAD : (count << 25) | (syms << 9) | node;
    }
  }
  for (let byte = 0; byte < 256; byte++) DECODE_TABLE[(DEAD << 8) | byte] = DEAD;
}

/**
 * The size of output buffer huffmanDecode needs for `n` Huffman-coded bytes: every code has at least 5 bits,
 * so at most n * 8 / 5 symbols, plus one byte that the decoder may scribble on past the end.
 */
export function huffmanDecodedMax(n: number): number {
  return (((n * 8) / 5) | 0) + 1;
}

/**
 * Decodes src[start, end) into dst from offset 0 and returns the decoded length, or -1 when the input is
 * not a valid HPACK Huffman string (EOS inside, padding longer than 7 bits or not all ones). dst must hold
 * huffmanDecodedMax(end - start) bytes.
 */
export function huffmanDecode(src: Uint8Array, start: number, end: number, dst: Uint8Array): number {
  let state = 0;
  let out = 0;
  for (let i = start; i < end; i++) {
    const e = DECODE_TABLE[(state << 8) | src[i]!]!;
    // Branch-free: store both symbol slots (Uint8Array stores keep the low 8 bits), advance by the count.
    dst[out] = e >>> 9;
    dst[out + 1] = e >>> 17;
    out += e >>> 25;
    state = e & 0x1ff;
  }
  return ACCEPTING[state] === 1 ? out : -1;
}

/** The Huffman-coded length in bytes of the latin1 string `s` (each char's low byte is the symbol). */
export function huffmanEncodedLength(s: string): number {
  let bits = 0;
  for (let i = 0; i < s.length; i++) bits += HUFFMAN_LENGTHS[s.charCodeAt(i) & 0xff]!;
  return (bits + 7) >>> 3;
}

/**
 * Huffman-codes the latin1 string `s` into dst at `off` (padding with the most significant bits of EOS,
 * i.e. ones, §5.2) and returns the offset after it. dst must hold huffmanEncodedLength(s) bytes from off.
 */
export function huffmanEncode(s: string, dst: Uint8Array, off: number): number {
  let acc = 0; // pending bits, right-aligned
  let n = 0; // number of pending bits (< 8 between symbols)
  for (let i = 0; i < s.length; i++) {
    const sym = s.charCodeAt(i) & 0xff;
    const len = HUFFMAN_LENGTHS[sym]!;
    const code = HUFFMAN_CODES[sym]!;
    // Emit the code in chunks so that acc never needs more than 31 bits.
    let rem = len;
    while (rem > 0) {
      const take = rem > 24 ? rem - 24 : rem;
      rem -= take;
      acc = ((acc << take) | ((code >>> rem) & ((1 << take) - 1))) >>> 0;
      n += take;
      while (n >= 8) {
        n -= 8;
        dst[off++] = (acc >>> n) & 0xff;
      }
      acc &= (1 << n) - 1;
    }
  }
  if (n > 0) dst[off++] = ((acc << (8 - n)) | (0xff >>> n)) & 0xff;
  return off;
}

// The fixed hash of lb's hash-based algorithms: MurmurHash3 x86_32 (Austin Appleby, SMHasher,
// src/MurmurHash3.cpp, MurmurHash3_x86_32), over the UTF-8 bytes of a string.
//
// Contract: the value depends only on the input and the seed, never on the process, the platform or the
// Node version, so every worker and every lb instance maps a key to the same backend. Changing this
// function, HASH_SEED or the way algorithms feed it moves keys between backends: treat it as a format.

/** The seed lb hashes keys and ring points with (MurmurHash3 x86_32, seed 0). */
export const HASH_SEED = 0;

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

/** Growable scratch for the UTF-8 path; hashing is synchronous, so one buffer per process suffices. */
let scratch = new Uint8Array(256);
const encoder = new TextEncoder();

/**
 * MurmurHash3 x86_32 of the UTF-8 encoding of `s` (lone surrogates encode as U+FFFD, as TextEncoder and
 * Buffer do), as an unsigned 32-bit integer. `seed` is taken modulo 2^32.
 *
 * ASCII strings are hashed straight from their char codes with no allocation; other strings are encoded
 * into a reused scratch buffer and hashed by murmur3_32Bytes.
 */
export function murmur3_32(s: string, seed: number = HASH_SEED): number {
  const len = s.length;
  const blocks = len & ~3;
  let h = seed | 0;
  let i = 0;
  for (; i < blocks; i += 4) {
    const b0 = s.charCodeAt(i);
    const b1 = s.charCodeAt(i + 1);
    const b2 = s.charCodeAt(i + 2);
    const b3 = s.charCodeAt(i + 3);
    if ((b0 | b1 | b2 | b3) > 0x7f) return hashUtf8(s, seed);
    const k = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
    h = mixBlock(h, k);
  }
  const rest = len & 3;
  if (rest !== 0) {
    const b0 = s.charCodeAt(i);
    const b1 = rest > 1 ? s.charCodeAt(i + 1) : 0;
    const b2 = rest > 2 ? s.charCodeAt(i + 2) : 0;
    if ((b0 | b1 | b2) > 0x7f) return hashUtf8(s, seed);
    h ^= scramble(b0 | (b1 << 8) | (b2 << 16));
  }
  return fmix(h, len);
}

/** MurmurHash3 x86_32 of `data[0 .. length)`, unsigned. The byte-level form that murmur3_32 agrees with. */
export function murmur3_32Bytes(data: Uint8Array, seed: number = HASH_SEED, length: number = data.length): number {
  const blocks = length & ~3;
  let h = seed | 0;
  let i = 0;
  for (; i < blocks; i += 4) {
    const k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    h = mixBlock(h, k);
  }
  const rest = length & 3;
  if (rest !== 0) {
    let k = data[i]!;
    if (rest > 1) k |= data[i + 1]! << 8;
    if (rest > 2) k |= data[i + 2]! << 16;
    h ^= scramble(k);
  }
  return fmix(h, length);
}

function hashUtf8(s: string, seed: number): number {
  // Each UTF-16 code unit encodes to at most 3 UTF-8 bytes.
  const need = s.length * 3;
  if (scratch.length < need) scratch = new Uint8Array(Math.max(need, scratch.length * 2));
  const { written } = encoder.encodeInto(s, scratch);
  return murmur3_32Bytes(scratch, seed, written);
}

/** MurmurHash3's per-block key scramble (also applied to the 1-3 byte tail). */
function scramble(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

/** One 4-byte block folded into the running hash. */
function mixBlock(h: number, k: number): number {
  h ^= scramble(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** Length mix and MurmurHash3's fmix32 finalizer. */
function fmix(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

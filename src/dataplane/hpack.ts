// HPACK, header compression for HTTP/2 (RFC 7541): a decoder for request header blocks and an encoder for
// response header and trailer blocks. No I/O; the HTTP/2 framing layer hands in complete header blocks
// (HEADERS + CONTINUATION payloads joined) and frames what encode() returns.
//
// Strings are latin1 (one char per byte, byte-preserving): the decoder never interprets bytes, so the caller
// validates names and values (RFC 9113 §8.2.1) on what the peer really sent.
//
// Decoder contract: any malformed block throws HpackError, which the caller turns into a connection error
// of type COMPRESSION_ERROR (RFC 9113 §4.3) — after an error the dynamic table is out of sync with the
// peer's, so the decoder must not be used again.
//
// Encoder contract: it never adds to the peer's dynamic table (every field is "literal without indexing",
// §6.2.2, or a static-table index, §6.1), so it needs no state that depends on the peer's
// SETTINGS_HEADER_TABLE_SIZE and blocks can be encoded in any order. Values are sent raw (no Huffman): on
// this path CPU time matters more than bytes.

import { huffmanDecode, huffmanDecodedMax } from './hpack-huffman.js';

/** A malformed header block: the connection must be closed with COMPRESSION_ERROR (RFC 9113 §4.3). */
export class HpackError extends Error {
  override name = 'HpackError';
}

/** RFC 7541 Appendix A: the static table, index 1..61 (pairs of name, value). */
// prettier-ignore
const STATIC_TABLE: readonly string[] = [
  ':authority', '',
  ':method', 'GET',
  ':method', 'POST',
  ':path', '/',
  ':path', '/index.html',
  ':scheme', 'http',
  ':scheme', 'https',
  ':status', '200',
  ':status', '204',
  ':status', '206',
  ':status', '304',
  ':status', '400',
  ':status', '404',
  ':status', '500',
  'accept-charset', '',
  'accept-encoding', 'gzip, deflate',
  'accept-language', '',
  'accept-ranges', '',
  'accept', '',
  'access-control-allow-origin', '',
  'age', '',
  'allow', '',
  'authorization', '',
  'cache-control', '',
  'content-disposition', '',
  'content-encoding', '',
  'content-language', '',
  'content-length', '',
  'content-location', '',
  'content-range', '',
  'content-type', '',
  'cookie', '',
  'date', '',
  'etag', '',
  'expect', '',
  'expires', '',
  'from', '',
  'host', '',
  'if-match', '',
  'if-modified-since', '',
  'if-none-match', '',
  'if-range', '',
  'if-unmodified-since', '',
  'last-modified', '',
  'link', '',
  'location', '',
  'max-forwards', '',
  'proxy-authenticate', '',
  'proxy-authorization', '',
  'range', '',
  'referer', '',
  'refresh', '',
  'retry-after', '',
  'server', '',
  'set-cookie', '',
  'strict-transport-security', '',
  'transfer-encoding', '',
  'user-agent', '',
  'vary', '',
  'via', '',
  'www-authenticate', '',
];

export const STATIC_TABLE_LENGTH = 61;
/** STATIC_NAMES[i] / STATIC_VALUES[i]: static table entry i (1..61); index 0 is unused. */
const STATIC_NAMES: string[] = [''];
const STATIC_VALUES: string[] = [''];
/** Name → the lowest static index with that name. */
const STATIC_NAME_INDEX = new Map<string, number>();
for (let i = 1; i <= STATIC_TABLE_LENGTH; i++) {
  const name = STATIC_TABLE[2 * i - 2]!;
  STATIC_NAMES.push(name);
  STATIC_VALUES.push(STATIC_TABLE[2 * i - 1]!);
  if (!STATIC_NAME_INDEX.has(name)) STATIC_NAME_INDEX.set(name, i);
}

/** §4.1: the size of an entry is its name's and value's length in bytes plus 32. */
export const ENTRY_OVERHEAD = 32;

// Buffer's latin1 fast paths; they exist on every supported Node.js (they back toString('latin1') and
// write(…, 'latin1')) without the argument normalisation of the public methods.
interface Latin1Buffer {
  latin1Slice(start: number, end: number): string;
  latin1Write(s: string, offset: number, length: number): number;
}

/**
 * Largest integer the decoder accepts (§5.1 leaves the limit to the implementation): a prefix plus at
 * most four continuation bytes, i.e. below 2^28 + 255. Every legitimate length or index is far smaller.
 */
const MAX_CONTINUATION_SHIFT = 21;

/**
 * Huffman output, shared by every decoder of the process: decode() is synchronous and copies each string
 * out (latin1Slice) before the next one is decoded, so one buffer suffices and a new connection costs no
 * allocation for it. Grows to the largest string seen, up to SCRATCH_KEEP.
 */
let scratch: Buffer = Buffer.allocUnsafeSlow(4096);
/** The largest scratch buffer kept for reuse; a longer string gets a buffer of its own. */
const SCRATCH_KEEP = 64 * 1024;

/** The dynamic table's initial ring (a power of two of slots), copied per decoder; it grows by doubling. */
const EMPTY_RING: readonly string[] = Array.from({ length: 16 }, () => '');

export class HpackDecoder {
  /** Our SETTINGS_HEADER_TABLE_SIZE: the largest dynamic table size the peer may choose. */
  private limit: number;
  /** The dynamic table's maximum size, as last set by the peer (§4.2, §6.3); starts at `limit`. */
  private capacity: number;
  /**
   * -1, or the value the next block's first size update must not exceed: the smallest limit set since the
   * last block, when it went below `capacity` (§4.2: the next block must start with an update, and "the
   * smallest maximum table size that occurs in that interval MUST be signaled").
   */
  private updateBound = -1;
  // The dynamic table: a ring of `names.length` (a power of two) slots; the newest entry (index 62) is at
  // slot (head - 1) & mask, the oldest at (head - count) & mask.
  private names: string[];
  private values: string[];
  private mask: number;
  private head = 0;
  private count = 0;
  private size = 0;
  /** Read position in the block being decoded. */
  private pos = 0;

  /**
   * `maxTableSize`: the dynamic table size limit in force, which is also the table's initial maximum size.
   * A peer may send header blocks before it has seen our SETTINGS, so a server that advertises a
   * SETTINGS_HEADER_TABLE_SIZE other than the protocol's initial 4096 should start with 4096 and call
   * setMaxTableSize() once the peer acknowledges that SETTINGS (RFC 9113 §6.5.3).
   */
  constructor(maxTableSize = 4096) {
    if (!Number.isInteger(maxTableSize) || maxTableSize < 0) throw new RangeError('maxTableSize must be an integer >= 0');
    this.limit = maxTableSize;
    this.capacity = maxTableSize;
    this.names = EMPTY_RING.slice();
    this.values = EMPTY_RING.slice();
    this.mask = EMPTY_RING.length - 1;
  }

  /**
   * A new SETTINGS_HEADER_TABLE_SIZE of ours took effect (the peer acknowledged it). When it is below the
   * table's current maximum, the peer's next block must start with a size update within it (§4.2).
   */
  setMaxTableSize(maxTableSize: number): void {
    if (!Number.isInteger(maxTableSize) || maxTableSize < 0) throw new RangeError('maxTableSize must be an integer >= 0');
    this.limit = maxTableSize;
    if (maxTableSize < this.capacity && (this.updateBound < 0 || maxTableSize < this.updateBound)) this.updateBound = maxTableSize;
  }

  /** The dynamic table's current size (§4.1) and maximum size (§4.2). */
  get tableSize(): number {
    return this.size;
  }
  get tableCapacity(): number {
    return this.capacity;
  }

  /** The dynamic table's entries, newest (index 62) first, as [name, value] pairs. For tests and diagnostics. */
  dynamicTable(): [string, string][] {
    const out: [string, string][] = [];
    for (let k = 0; k < this.count; k++) {
      const slot = (this.head - 1 - k) & this.mask;
      out.push([this.names[slot]!, this.values[slot]!]);
    }
    return out;
  }

  /**
   * Decodes one complete header block into a flat [name, value, name, value, ...] list of latin1 strings.
   * Throws HpackError on malformed input. When the header list's size (§4.1: sum of name and value lengths
   * plus 32 per field) exceeds `maxListSize`, the whole block is still decoded (the dynamic table stays in
   * sync with the peer's) and null is returned.
   */
  decode(block: Buffer, maxListSize: number): string[] | null {
    const end = block.length;
    const out: string[] = [];
    let listSize = 0;
    let pos = 0;

    // §4.2: dynamic table size updates may only open a block.
    while (pos < end && (block[pos]! & 0xe0) === 0x20) {
      let n = block[pos]! & 0x1f;
      pos++;
      if (n === 0x1f) n = this.readIntTail(block, pos, n);
      else this.pos = pos;
      pos = this.pos;
      if (n > this.limit) throw new HpackError(`dynamic table size update to ${n} exceeds the limit ${this.limit}`);
      if (this.updateBound >= 0) {
        if (n > this.updateBound) throw new HpackError(`dynamic table size update to ${n}, expected at most ${this.updateBound} first`);
        this.updateBound = -1;
      }
      this.capacity = n;
      this.evictTo(n);
    }
    if (this.updateBound >= 0) throw new HpackError('missing dynamic table size update after SETTINGS_HEADER_TABLE_SIZE decreased');

    while (pos < end) {
      const b = block[pos]!;
      let name: string;
      let value: string;
      if (b >= 0x80) {
        // §6.1 indexed header field.
        let idx = b & 0x7f;
        pos++;
        if (idx === 0x7f) {
          idx = this.readIntTail(block, pos, idx);
          pos = this.pos;
        }
        if (idx <= STATIC_TABLE_LENGTH) {
          if (idx === 0) throw new HpackError('indexed header field with index 0');
          name = STATIC_NAMES[idx]!;
          value = STATIC_VALUES[idx]!;
        } else {
          const k = idx - STATIC_TABLE_LENGTH - 1;
          if (k >= this.count) throw new HpackError(`header field index ${idx} is out of range`);
          const slot = (this.head - 1 - k) & this.mask;
          name = this.names[slot]!;
          value = this.values[slot]!;
        }
      } else {
        // §6.2: a literal; 01xxxxxx with incremental indexing (6-bit index prefix), 0000xxxx without
        // indexing and 0001xxxx never indexed (4-bit prefix); 001xxxxx is a misplaced size update.
        let idx: number;
        let prefix: number;
        if (b >= 0x40) prefix = 0x3f;
        else if (b >= 0x20) throw new HpackError('dynamic table size update after the first header field');
        else prefix = 0x0f;
        idx = b & prefix;
        pos++;
        if (idx === prefix) idx = this.readIntTail(block, pos, idx);
        else this.pos = pos;
        if (idx === 0) name = this.readString(block);
        else name = this.nameAt(idx);
        value = this.readString(block);
        pos = this.pos;
        if (b >= 0x40) this.insert(name, value);
      }
      listSize += name.length + value.length + ENTRY_OVERHEAD;
      if (listSize <= maxListSize) out.push(name, value);
    }
    return listSize <= maxListSize ? out : null;
  }

  private nameAt(idx: number): string {
    if (idx <= STATIC_TABLE_LENGTH) return STATIC_NAMES[idx]!;
    const k = idx - STATIC_TABLE_LENGTH - 1;
    if (k >= this.count) throw new HpackError(`header name index ${idx} is out of range`);
    return this.names[(this.head - 1 - k) & this.mask]!;
  }

  /**
   * §5.1: the continuation bytes of an integer whose prefix was all ones (`value` = the prefix's maximum),
   * from `pos`; leaves the position after it in this.pos.
   */
  private readIntTail(block: Buffer, pos: number, value: number): number {
    let shift = 0;
    for (;;) {
      if (pos >= block.length) throw new HpackError('header block ends inside an integer');
      const c = block[pos++]!;
      value += (c & 0x7f) << shift;
      if (c < 0x80) break;
      shift += 7;
      if (shift > MAX_CONTINUATION_SHIFT) throw new HpackError('integer too large');
    }
    this.pos = pos;
    return value;
  }

  /** §5.2: a string literal at this.pos; leaves this.pos after it. */
  private readString(block: Buffer): string {
    let pos = this.pos;
    if (pos >= block.length) throw new HpackError('header block ends before a string literal');
    const b = block[pos]!;
    let len = b & 0x7f;
    pos++;
    if (len === 0x7f) {
      len = this.readIntTail(block, pos, len);
      pos = this.pos;
    }
    const end = pos + len;
    if (end > block.length) throw new HpackError('string literal runs past the end of the header block');
    this.pos = end;
    if (b < 0x80) return (block as unknown as Latin1Buffer).latin1Slice(pos, end);
    if (len === 0) return '';
    const max = huffmanDecodedMax(len);
    let dst = scratch;
    if (dst.length < max) {
      dst = Buffer.allocUnsafeSlow(max);
      if (max <= SCRATCH_KEEP) scratch = dst;
    }
    const n = huffmanDecode(block, pos, end, dst);
    if (n < 0) throw new HpackError('invalid Huffman-coded string (EOS symbol, or bad padding)');
    return (dst as unknown as Latin1Buffer).latin1Slice(0, n);
  }

  /** §4.4: adds an entry, evicting the oldest ones to make room; an entry larger than the table empties it. */
  private insert(name: string, value: string): void {
    const esize = name.length + value.length + ENTRY_OVERHEAD;
    if (esize > this.capacity) {
      this.evictTo(0);
      return;
    }
    this.evictTo(this.capacity - esize);
    if (this.count === this.names.length) this.grow();
    this.names[this.head] = name;
    this.values[this.head] = value;
    this.head = (this.head + 1) & this.mask;
    this.count++;
    this.size += esize;
  }

  /** §4.3: evicts the oldest entries until the table's size is at most `max`. */
  private evictTo(max: number): void {
    while (this.size > max) {
      const slot = (this.head - this.count) & this.mask;
      this.size -= this.names[slot]!.length + this.values[slot]!.length + ENTRY_OVERHEAD;
      this.names[slot] = '';
      this.values[slot] = '';
      this.count--;
    }
  }

  private grow(): void {
    const n = this.names.length;
    // Oldest to newest into slots 0..count-1 (a full ring: count === n), then empty slots.
    const names: string[] = [];
    const values: string[] = [];
    for (let k = 0; k < this.count; k++) {
      const slot = (this.head - this.count + k) & this.mask;
      names.push(this.names[slot]!);
      values.push(this.values[slot]!);
    }
    for (let k = this.count; k < n * 2; k++) {
      names.push('');
      values.push('');
    }
    this.names = names;
    this.values = values;
    this.mask = n * 2 - 1;
    this.head = this.count;
  }
}

/** Output is carved from slabs of this size; a block larger than a slab gets a buffer of its own. */
const SLAB_SIZE = 16 * 1024;
/**
 * Strings up to this length are copied by a JS loop; longer ones by Buffer's latin1Write, whose fixed cost
 * (a call into C++) is about that of copying this many chars in JS.
 */
const SHORT_STRING = 32;

/**
 * An upper bound of the size of the block HpackEncoder writes for `fields` (with or without a status):
 * :status takes at most 1 + 1 + a short decimal; each field one representation byte, up to 5 bytes of
 * name index or length, the name, up to 5 bytes of length, the value.
 */
export function encodedLengthBound(fields: string[]): number {
  let need = 40;
  for (let i = 0; i < fields.length; i++) need += fields[i]!.length + 6;
  return need;
}

export class HpackEncoder {
  private slab: Buffer = Buffer.allocUnsafeSlow(SLAB_SIZE);
  private off = 0;

  /**
   * Encodes a response header block (`status` set: `:status` first) or a trailer block (`status`
   * undefined) from flat [name, value, ...] pairs (an odd last element is ignored), names already
   * lower-case, strings latin1 (a char above 0xff is sent as its low byte: the caller validates).
   * `headroom` bytes are left free in front of the block (content unspecified) for the caller's frame
   * header, so that the frame is a single buffer; the block is result.subarray(headroom). The returned
   * Buffer is never written again by the encoder (it is carved from a slab that only moves forward), so it
   * can be handed to socket.write as is.
   */
  encode(status: number | undefined, fields: string[], headroom = 0): Buffer {
    const need = headroom + encodedLengthBound(fields);
    if (this.slab.length - this.off < need) {
      this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB_SIZE, need));
      this.off = 0;
    }
    const start = this.off;
    const end = writeBlock(this.slab, start + headroom, status, fields);
    this.off = end;
    return this.slab.subarray(start, end);
  }

  /**
   * Like encode(), into the caller's buffer at `offset` (e.g. an output buffer that batches frames);
   * returns the offset after the block. Throws RangeError unless dst has encodedLengthBound(fields) bytes
   * from offset.
   */
  encodeInto(dst: Buffer, offset: number, status: number | undefined, fields: string[]): number {
    if (!(offset >= 0 && dst.length - offset >= encodedLengthBound(fields))) {
      throw new RangeError(`HPACK encodeInto: need ${encodedLengthBound(fields)} bytes at offset ${offset} of ${dst.length}`);
    }
    return writeBlock(dst, offset, status, fields);
  }
}

/** Writes the block at `off` (room checked by the caller) and returns the offset after it. */
function writeBlock(buf: Buffer, off: number, status: number | undefined, fields: string[]): number {
  if (status !== undefined) {
    switch (status) {
      // §6.1 indexed: static entries 8..14.
      case 200: buf[off++] = 0x88; break;
      case 204: buf[off++] = 0x89; break;
      case 206: buf[off++] = 0x8a; break;
      case 304: buf[off++] = 0x8b; break;
      case 400: buf[off++] = 0x8c; break;
      case 404: buf[off++] = 0x8d; break;
      case 500: buf[off++] = 0x8e; break;
      default:
        // §6.2.2 literal without indexing, name = static index 8 (:status).
        buf[off++] = 0x08;
        off = writeString(buf, off, String(status));
    }
  }
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = fields[i]!;
    const idx = STATIC_NAME_INDEX.get(name);
    if (idx === undefined) {
      buf[off++] = 0x00; // §6.2.2 literal without indexing, new name
      off = writeString(buf, off, name);
    } else if (idx < 15) {
      buf[off++] = idx; // §6.2.2 literal without indexing, indexed name (4-bit prefix)
    } else {
      buf[off++] = 0x0f;
      buf[off++] = idx - 15; // idx <= 61: one continuation byte
    }
    off = writeString(buf, off, fields[i + 1]!);
  }
  return off;
}

/** §5.2 string literal, H = 0: 7-bit-prefix length then the latin1 bytes. Returns the offset after it. */
function writeString(buf: Buffer, off: number, s: string): number {
  const len = s.length;
  if (len < 0x7f) {
    buf[off++] = len;
  } else {
    buf[off++] = 0x7f;
    let n = len - 0x7f;
    while (n >= 0x80) {
      buf[off++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    buf[off++] = n;
  }
  if (len <= SHORT_STRING) {
    for (let i = 0; i < len; i++) buf[off + i] = s.charCodeAt(i);
  } else {
    (buf as unknown as Latin1Buffer).latin1Write(s, off, len);
  }
  return off + len;
}

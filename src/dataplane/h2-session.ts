// lb's own HTTP/2 server connection (RFC 9113): frames, stream states, flow control and the checks that
// make a request well-formed, with HPACK from hpack.ts. h2-front.ts maps its streams onto the request and
// response the listener routes (exchange.ts). Written for lb instead of node:http2 because node:http2's
// per-stream objects cost several times lb's whole HTTP/1.1 request path (docs/http2.md, bench/results/h2).
//
// What it implements: the connection preface; SETTINGS (MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE and
// MAX_HEADER_LIST_SIZE sent; the peer's INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE obeyed); HEADERS with
// CONTINUATION, padding and priority fields (priority itself is ignored, as RFC 9113 §5.3.2 allows); DATA
// with flow control both ways (a stream's window is given back as its body is consumed, so a slow backend
// holds a client's upload at the window, §5.2); RST_STREAM, PING, GOAWAY, WINDOW_UPDATE; unknown frame
// types ignored (§4.1) except inside a header block (§6.10). Server push is never used.
//
// Errors (§5.4): a connection error sends GOAWAY with its code and closes; a stream error sends RST_STREAM.
// A malformed request (§8.1.1) is a stream error PROTOCOL_ERROR and never reaches the listener, as HAProxy
// and NGINX answer (docs/http2.md has the differential table).
//
// Abuse bounds, each ending the connection with GOAWAY ENHANCE_YOUR_CALM:
// - a header block (HEADERS + CONTINUATION) larger than max(4 x max header list size, 64 KiB): the
//   CONTINUATION flood (CVE-2024-27316 and relatives) cannot grow a buffer without bound;
// - "glitches" (frames that cost lb work and carry nothing: empty DATA without END_STREAM, PRIORITY, DATA or
//   WINDOW_UPDATE for closed streams, streams refused over the concurrency limit) past GLITCH_LIMIT and
//   past the count of completed streams: HAProxy's glitch counter, CVE-2019-9512..9518;
// - control frames lb must answer (SETTINGS and PING ACKs) while the peer does not read: more than
//   MAX_PENDING_CONTROL queued (CVE-2019-9512, CVE-2019-9515);
// - rapid reset (CVE-2023-44487) is counted per stream by h2-front.ts (resetLimit) on the close events.

import type net from 'node:net';
import { HpackDecoder, HpackEncoder, HpackError, encodedLengthBound } from './hpack.js';

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const ERR = {
  NO_ERROR: 0,
  PROTOCOL_ERROR: 1,
  INTERNAL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 5,
  FRAME_SIZE_ERROR: 6,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  COMPRESSION_ERROR: 9,
  ENHANCE_YOUR_CALM: 11,
} as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY_FLAG = 0x20;
const SETTINGS_HEADER_TABLE_SIZE = 1;
const SETTINGS_ENABLE_PUSH = 2;
const SETTINGS_MAX_CONCURRENT_STREAMS = 3;
const SETTINGS_INITIAL_WINDOW_SIZE = 4;
const SETTINGS_MAX_FRAME_SIZE = 5;
const SETTINGS_MAX_HEADER_LIST_SIZE = 6;
const MAX_WINDOW = 0x7fffffff;
/** The frame size lb reads (SETTINGS_MAX_FRAME_SIZE is left at its initial value, RFC 9113 §6.5.2). */
const MAX_FRAME = 16384;
const DEFAULT_WINDOW = 65535;
const GLITCH_LIMIT = 1000;
const MAX_PENDING_CONTROL = 1000;
/** The output slab's size, and the largest payload copied into it rather than queued by reference. */
const SLAB = 16384;
const COPY_MAX = 2048;
/** Bytes queued to the socket above which streams are told to wait ('drain'), and reading pauses at 16x. */
const OUT_HIGH = 65536;
/** RFC 7541 §6.3: dynamic table size update, new size 0. */
const SIZE_UPDATE_0 = Buffer.from([0x20]);
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface SessionLimits {
  maxConcurrentStreams: number;
  initialWindowSize: number;
  maxHeaderListSize: number;
}

/** A request's pseudo-header fields and its regular fields, checked (RFC 9113 §8.3.1, §8.2). */
export interface RequestHead {
  method: string;
  /** :path ("" for CONNECT) */
  path: string;
  authority: string | undefined;
  /** Regular fields, flat name/value list as received (names lower-case), cookie crumbs kept apart. */
  fields: string[];
  /** The Content-Length, -1 without one. */
  contentLength: number;
}

export interface SessionEvents {
  /** A new, well-formed request stream. */
  stream(stream: H2Stream, head: RequestHead): void;
  /** A request refused: malformed (400; the stream was reset PROTOCOL_ERROR) or too large (431, answered). */
  malformed(reason: string, status: number): void;
  /** The connection ended (every stream closed first). */
  close(): void;
}

/** One stream of the connection (client-initiated; lb never pushes). */
export class H2Stream {
  /** END_STREAM received. */
  remoteEnded = false;
  /** END_STREAM sent (or queued behind flow control). */
  localEnded = false;
  closed = false;
  /** The code that closed the stream (RST_STREAM either way); NO_ERROR when both sides ended. */
  code: number = ERR.NO_ERROR;
  /** The peer reset it (RST_STREAM received). */
  resetByPeer = false;
  recvWindow: number;
  /** Received DATA not yet given back with WINDOW_UPDATE. */
  unacked = 0;
  sendWindow: number;
  /** DATA waiting for the send window; `queuedBytes` of it. */
  queue: Buffer[] | undefined;
  queuedBytes = 0;
  /** A trailer block to send once the queue is out. */
  pendingTrailers: Buffer | undefined;
  contentLength = -1;
  received = 0;
  // What the request and response above it take from the stream (h2-front.ts).
  onData: ((chunk: Buffer) => void) | undefined;
  onEnd: ((trailers: string[] | undefined) => void) | undefined;
  onDrain: (() => void) | undefined;
  onClose: ((stream: H2Stream) => void) | undefined;
  user: unknown;

  constructor(
    readonly id: number,
    readonly session: H2Session,
    recvWindow: number,
    sendWindow: number,
  ) {
    this.recvWindow = recvWindow;
    this.sendWindow = sendWindow;
  }
}

/** A lower-case token character (RFC 9110 §5.6.2) may appear in a field name (RFC 9113 §8.2.1). */
const NAME_CHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz") NAME_CHAR[c.charCodeAt(0)] = 1;
/** Field names an HTTP/2 message must not carry (§8.2.2); TE is checked on its own. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

function badName(name: string): boolean {
  for (let i = 0; i < name.length; i++) if (NAME_CHAR[name.charCodeAt(i)] !== 1) return true;
  return name.length === 0;
}

/** NUL, CR, LF (RFC 9113 §8.2.1); a value of any other bytes is forwarded as it came. */
function badValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0 || c === 10 || c === 13) return true;
  }
  return false;
}

/** A token character, either case (RFC 9110 §5.6.2). */
const TOKEN_CHAR = new Uint8Array(256);
for (let c = 0; c < 256; c++) TOKEN_CHAR[c] = NAME_CHAR[c] === 1 || (c >= 0x41 && c <= 0x5a) ? 1 : 0;

/** :method and :scheme: tokens; :path and :authority: visible characters only (no space, CTL or DEL). */
function badToken(value: string): boolean {
  if (value.length === 0) return true;
  for (let i = 0; i < value.length; i++) if (TOKEN_CHAR[value.charCodeAt(i)] !== 1) return true;
  return false;
}
function badVisible(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** The request's fields checked (RFC 9113 §8.1.1, §8.2, §8.3.1); a string says why it is malformed. */
export function checkRequest(list: string[]): RequestHead | string {
  let method: string | undefined;
  let scheme: string | undefined;
  let path: string | undefined;
  let authority: string | undefined;
  let regular = false;
  let contentLength = -1;
  const fields: string[] = [];
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    const value = list[i + 1]!;
    if (name.charCodeAt(0) === 58 /* ":" */) {
      if (regular) return 'a pseudo-header field after a regular field';
      if (badValue(value)) return `${name} holds NUL, CR or LF`;
      if (name === ':method') {
        if (method !== undefined) return ':method twice';
        if (badToken(value)) return ':method is not a token';
        method = value;
      } else if (name === ':path') {
        if (path !== undefined) return ':path twice';
        if (badVisible(value) || value === '') return ':path is empty or holds a space or control character';
        path = value;
      } else if (name === ':scheme') {
        if (scheme !== undefined) return ':scheme twice';
        if (badToken(value)) return ':scheme is not a token';
        scheme = value;
      } else if (name === ':authority') {
        if (authority !== undefined) return ':authority twice';
        if (badVisible(value)) return ':authority holds a space or control character';
        authority = value;
      } else return `unknown pseudo-header field ${JSON.stringify(name)}`;
      continue;
    }
    regular = true;
    if (badName(name)) return `field name ${JSON.stringify(name)} is empty, upper-case or not a token`;
    if (badValue(value)) return `field ${name} holds NUL, CR or LF`;
    const n = name.length;
    if (n === 2 && name === 'te') {
      if (value !== 'trailers') return 'TE other than "trailers"';
    } else if (n === 14 && name === 'content-length') {
      if (!/^[0-9]{1,15}$/.test(value)) return 'Content-Length is not one decimal number';
      const len = Number(value);
      if (contentLength !== -1 && contentLength !== len) return 'two different Content-Length fields';
      contentLength = len;
    } else if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field ${name}`;
    fields.push(name, value);
  }
  if (method === undefined) return 'no :method';
  if (method === 'CONNECT') {
    // §8.5: :authority only; lb answers it (it does not tunnel over HTTP/2).
    if (scheme !== undefined || path !== undefined || authority === undefined) return 'CONNECT with :scheme or :path, or without :authority';
    return { method, path: '', authority, fields, contentLength };
  }
  if (scheme === undefined || path === undefined) return 'no :scheme or no :path';
  // §8.3.1: for http and https, :path is origin-form or "*" (OPTIONS).
  if (path.charCodeAt(0) !== 47 /* "/" */ && !(path === '*' && method === 'OPTIONS')) return ':path is neither origin-form nor "*"';
  return { method, path, authority, fields, contentLength };
}

/** Trailer fields (§8.1): no pseudo-header fields; names and values as in the head. */
function checkTrailers(list: string[]): string[] | string {
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i]!;
    if (name.charCodeAt(0) === 58) return 'a pseudo-header field in trailers';
    if (badName(name)) return `trailer name ${JSON.stringify(name)} is empty, upper-case or not a token`;
    if (badValue(list[i + 1]!)) return `trailer ${name} holds NUL, CR or LF`;
  }
  return list;
}

export class H2Session {
  readonly streams = new Map<number, H2Stream>();
  /** Highest stream id the client opened. */
  lastId = 0;
  /** Streams completed (both sides ended), against which glitches are weighed. */
  completed = 0;
  glitches = 0;
  /** GOAWAY sent; no new stream is taken, and the connection ends when the last one closes. */
  goingAway = false;
  destroyed = false;
  private gotPreface: boolean;
  private gotSettings = false;
  private settingsAcked = false;
  private rest: Buffer | undefined;
  /** A header block being collected: its stream, HEADERS flags, parts and size. */
  private block: { id: number; flags: number; parts: Buffer[]; size: number } | undefined;
  private readonly decoder = new HpackDecoder();
  private readonly encoder = new HpackEncoder();
  private recvWindow: number;
  private recvUnacked = 0;
  private sendWindow = DEFAULT_WINDOW;
  private peerInitialWindow = DEFAULT_WINDOW;
  private peerMaxFrame = 16384;
  /** Queued output: buffers in order, then the slab's unflushed frames (slabStart..slabOff). */
  private out: Buffer[] = [];
  private outBytes = 0;
  private slab: Buffer | undefined;
  private slabStart = 0;
  private slabOff = 0;
  private flushing = false;
  private pendingControl = 0;
  private readPaused = false;
  /** The next header block starts with a dynamic table size update to 0 (see onSettings). */
  private sizeUpdate = false;
  /** Streams with DATA waiting for a window. */
  private readonly blocked = new Set<H2Stream>();
  /** Streams whose writer waits for 'drain'. */
  private readonly drainWaiters = new Set<H2Stream>();
  private readonly maxBlock: number;

  constructor(
    readonly socket: net.Socket,
    private readonly limits: SessionLimits,
    private readonly events: SessionEvents,
    /** The preface was already read (and checked) by whoever handed the socket over. */
    prefaceRead = false,
  ) {
    this.gotPreface = prefaceRead;
    this.recvWindow = Math.max(limits.initialWindowSize, DEFAULT_WINDOW);
    this.maxBlock = Math.max(4 * limits.maxHeaderListSize, 65536);
  }

  /** Sends lb's SETTINGS and starts reading (bytes already buffered on the socket come first). */
  start(): void {
    const s = Buffer.allocUnsafe(18);
    s.writeUInt16BE(SETTINGS_MAX_CONCURRENT_STREAMS, 0);
    s.writeUInt32BE(this.limits.maxConcurrentStreams, 2);
    s.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
    s.writeUInt32BE(this.limits.initialWindowSize, 8);
    s.writeUInt16BE(SETTINGS_MAX_HEADER_LIST_SIZE, 12);
    s.writeUInt32BE(this.limits.maxHeaderListSize, 14);
    this.emitFrame(FRAME.SETTINGS, 0, 0, s);
    // The connection window as large as a stream's (its initial value is 65535, §6.9.2).
    const extra = this.limits.initialWindowSize - DEFAULT_WINDOW;
    if (extra > 0) this.windowUpdate(0, extra);
    const sock = this.socket;
    sock.on('data', this.onData);
    sock.on('drain', this.onSocketDrain);
    sock.on('error', this.onSocketError);
    sock.on('end', this.onSocketEnd);
    sock.on('close', this.onSocketClose);
    sock.resume();
  }

  // ---- input ----

  private readonly onData = (chunk: Buffer): void => {
    let buf = chunk;
    if (this.rest !== undefined) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = undefined;
    }
    let off = 0;
    if (!this.gotPreface) {
      const n = Math.min(buf.length, PREFACE.length);
      if (buf.compare(PREFACE, 0, n, 0, n) !== 0) {
        this.destroy();
        return;
      }
      if (buf.length < PREFACE.length) {
        this.rest = buf;
        return;
      }
      this.gotPreface = true;
      off = PREFACE.length;
    }
    const end = buf.length;
    while (end - off >= 9 && !this.destroyed) {
      const len = (buf[off]! << 16) | (buf[off + 1]! << 8) | buf[off + 2]!;
      if (len > MAX_FRAME) {
        this.connectionError(ERR.FRAME_SIZE_ERROR);
        return;
      }
      if (end - off - 9 < len) break;
      const type = buf[off + 3]!;
      const flags = buf[off + 4]!;
      const id = buf.readUInt32BE(off + 5) & MAX_WINDOW;
      const payload = buf.subarray(off + 9, off + 9 + len);
      off += 9 + len;
      this.frame(type, flags, id, payload);
    }
    if (off < end && !this.destroyed) this.rest = buf.subarray(off);
  };

  private frame(type: number, flags: number, id: number, p: Buffer): void {
    if (!this.gotSettings) {
      // §3.4: the client's preface ends with a SETTINGS frame.
      if (type !== FRAME.SETTINGS || (flags & ACK) !== 0) return this.connectionError(ERR.PROTOCOL_ERROR);
      this.gotSettings = true;
    }
    if (this.block !== undefined && type !== FRAME.CONTINUATION) return this.connectionError(ERR.PROTOCOL_ERROR);
    switch (type) {
      case FRAME.DATA:
        return this.onDataFrame(flags, id, p);
      case FRAME.HEADERS:
        return this.onHeaders(flags, id, p);
      case FRAME.PRIORITY:
        if (id === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
        if (p.length !== 5) return this.resetStream(id, ERR.FRAME_SIZE_ERROR);
        return this.glitch();
      case FRAME.RST_STREAM:
        return this.onReset(id, p);
      case FRAME.SETTINGS:
        return this.onSettings(flags, id, p);
      case FRAME.PUSH_PROMISE:
        return this.connectionError(ERR.PROTOCOL_ERROR);
      case FRAME.PING:
        if (id !== 0) return this.connectionError(ERR.PROTOCOL_ERROR);
        if (p.length !== 8) return this.connectionError(ERR.FRAME_SIZE_ERROR);
        if ((flags & ACK) === 0) this.control(FRAME.PING, p);
        return;
      case FRAME.GOAWAY:
        if (id !== 0) return this.connectionError(ERR.PROTOCOL_ERROR);
        if (p.length < 8) return this.connectionError(ERR.FRAME_SIZE_ERROR);
        // The client takes no more responses beyond what it has open; no new streams come after it.
        return this.close();
      case FRAME.WINDOW_UPDATE:
        return this.onWindowUpdate(id, p);
      case FRAME.CONTINUATION:
        return this.onContinuation(flags, id, p);
      default:
        return; // §4.1: unknown types are ignored
    }
  }

  private onHeaders(flags: number, id: number, p: Buffer): void {
    if (id === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
    let start = 0;
    let end = p.length;
    if (flags & PADDED) {
      if (p.length < 1) return this.connectionError(ERR.FRAME_SIZE_ERROR);
      const pad = p[0]!;
      // §6.2: padding as long as the payload or longer is a connection error.
      if (pad >= p.length) return this.connectionError(ERR.PROTOCOL_ERROR);
      start = 1;
      end -= pad;
    }
    let selfDependent = false;
    if (flags & PRIORITY_FLAG) {
      if (end - start < 5) return this.connectionError(ERR.FRAME_SIZE_ERROR);
      selfDependent = (p.readUInt32BE(start) & MAX_WINDOW) === id;
      start += 5;
    }
    const frag = p.subarray(start, end);
    if (flags & END_HEADERS) return this.headerBlock(id, flags, frag, selfDependent);
    this.block = { id, flags: selfDependent ? flags | 0x100 : flags, parts: [frag], size: frag.length };
  }

  private onContinuation(flags: number, id: number, p: Buffer): void {
    const b = this.block;
    if (b === undefined || b.id !== id) return this.connectionError(ERR.PROTOCOL_ERROR);
    b.parts.push(p);
    b.size += p.length;
    if (b.size > this.maxBlock) return this.connectionError(ERR.ENHANCE_YOUR_CALM);
    if (p.length === 0 && (flags & END_HEADERS) === 0) this.glitch();
    if ((flags & END_HEADERS) === 0 || this.destroyed) return;
    this.block = undefined;
    this.headerBlock(id, b.flags, Buffer.concat(b.parts, b.size), (b.flags & 0x100) !== 0);
  }

  /** A complete header block: a new request, or trailers of an open one. */
  private headerBlock(id: number, flags: number, block: Buffer, selfDependent: boolean): void {
    const existing = this.streams.get(id);
    let list: string[] | null;
    try {
      // Decoded whatever becomes of the stream: the dynamic table must follow every block (RFC 7541 §2.2).
      list = this.decoder.decode(block, this.limits.maxHeaderListSize);
    } catch (err) {
      if (err instanceof HpackError) return this.connectionError(ERR.COMPRESSION_ERROR);
      throw err;
    }
    const endStream = (flags & END_STREAM) !== 0;
    if (existing !== undefined) {
      // Trailers (§8.1): must end the stream, once.
      if (existing.remoteEnded) return this.resetStream(id, ERR.STREAM_CLOSED);
      if (!endStream) return this.malformed(existing, 'trailers without END_STREAM');
      if (list === null) return this.malformed(existing, 'trailers larger than the header list limit');
      const t = checkTrailers(list);
      if (typeof t === 'string') return this.malformed(existing, t);
      this.remoteEnd(existing, t);
      return;
    }
    if ((id & 1) === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
    // A stream already closed: lb may have reset it while the client was still sending (trailers after a
    // refusal or an early answer), which §5.1 says to ignore. Its block was decoded above (the table stays
    // in step); counted as a glitch.
    if (id <= this.lastId) return this.glitch();
    this.lastId = id;
    // After GOAWAY, streams the client opened past its last stream id are ignored (§6.8).
    if (this.goingAway) return;
    if (selfDependent) return this.resetStream(id, ERR.PROTOCOL_ERROR);
    if (this.streams.size >= this.limits.maxConcurrentStreams) {
      this.glitch();
      return this.resetStream(id, ERR.REFUSED_STREAM);
    }
    const recv = this.settingsAcked ? this.limits.initialWindowSize : Math.max(this.limits.initialWindowSize, DEFAULT_WINDOW);
    const s = new H2Stream(id, this, recv, this.peerInitialWindow);
    if (list === null) {
      // Too large: 431, as the HTTP/1.1 head bound answers (the stream is then reset if the body is still coming).
      this.streams.set(id, s);
      s.remoteEnded = endStream;
      this.events.malformed('header list larger than max_header_size', 431);
      const body = Buffer.from('431 Request Header Fields Too Large\n', 'latin1');
      this.respond(s, 431, ['content-type', 'text/plain; charset=utf-8', 'content-length', String(body.length)], false);
      this.write(s, body, true);
      return;
    }
    const head = checkRequest(list);
    if (typeof head === 'string') {
      this.events.malformed(head, 400);
      return this.resetStream(id, ERR.PROTOCOL_ERROR);
    }
    s.contentLength = head.contentLength;
    s.remoteEnded = endStream;
    if (endStream && head.contentLength > 0) {
      this.events.malformed('Content-Length without DATA', 400);
      return this.resetStream(id, ERR.PROTOCOL_ERROR);
    }
    this.streams.set(id, s);
    this.events.stream(s, head);
  }

  private onDataFrame(flags: number, id: number, p: Buffer): void {
    if (id === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
    const len = p.length;
    this.recvWindow -= len;
    if (this.recvWindow < 0) return this.connectionError(ERR.FLOW_CONTROL_ERROR);
    // The connection window is given back at once: each stream's own window bounds what lb holds.
    this.recvUnacked += len;
    if (this.recvUnacked >= this.limits.initialWindowSize >>> 1 || this.recvUnacked >= 16384) {
      this.windowUpdate(0, this.recvUnacked);
      this.recvWindow += this.recvUnacked;
      this.recvUnacked = 0;
    }
    let data = p;
    if (flags & PADDED) {
      if (len < 1) return this.connectionError(ERR.FRAME_SIZE_ERROR);
      const pad = p[0]!;
      if (pad >= len) return this.connectionError(ERR.PROTOCOL_ERROR);
      data = p.subarray(1, len - pad);
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (id > this.lastId) return this.connectionError(ERR.PROTOCOL_ERROR); // idle stream (§5.1)
      return this.glitch(); // a stream lb already closed or reset
    }
    if (s.remoteEnded) return this.resetStream(id, ERR.STREAM_CLOSED);
    s.recvWindow -= len;
    if (s.recvWindow < 0) return this.resetStream(id, ERR.FLOW_CONTROL_ERROR);
    // Padding is given back at once; the data when it is consumed (`consumed`).
    s.unacked += len - data.length;
    s.received += data.length;
    const end = (flags & END_STREAM) !== 0;
    if (s.contentLength >= 0 && (s.received > s.contentLength || (end && s.received !== s.contentLength))) {
      return this.malformed(s, 'DATA that disagrees with Content-Length');
    }
    if (data.length > 0) {
      if (s.onData !== undefined) s.onData(data);
      else s.unacked += data.length;
    } else if (!end) this.glitch();
    if (end) this.remoteEnd(s, undefined);
    else if (s.unacked > 0 && s.onData === undefined) this.consumed(s, 0);
  }

  /** The request body's reader took `n` more bytes: the stream window is given back in halves. */
  consumed(s: H2Stream, n: number): void {
    s.unacked += n;
    if (s.remoteEnded || s.closed) return;
    if (s.unacked >= this.limits.initialWindowSize >>> 1 || s.unacked >= 16384) {
      this.windowUpdate(s.id, s.unacked);
      s.recvWindow += s.unacked;
      s.unacked = 0;
      this.scheduleFlush();
    }
  }

  private remoteEnd(s: H2Stream, trailers: string[] | undefined): void {
    s.remoteEnded = true;
    s.onEnd?.(trailers);
    if (s.localEnded && s.queue === undefined && s.pendingTrailers === undefined) this.closeStream(s, ERR.NO_ERROR);
  }

  private onReset(id: number, p: Buffer): void {
    if (id === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
    if (p.length !== 4) return this.connectionError(ERR.FRAME_SIZE_ERROR);
    const s = this.streams.get(id);
    if (s === undefined) {
      if (id > this.lastId) return this.connectionError(ERR.PROTOCOL_ERROR);
      return;
    }
    s.resetByPeer = true;
    this.closeStream(s, p.readUInt32BE(0));
  }

  private onSettings(flags: number, id: number, p: Buffer): void {
    if (id !== 0) return this.connectionError(ERR.PROTOCOL_ERROR);
    if (flags & ACK) {
      if (p.length !== 0) return this.connectionError(ERR.FRAME_SIZE_ERROR);
      this.settingsAcked = true;
      return;
    }
    if (p.length % 6 !== 0) return this.connectionError(ERR.FRAME_SIZE_ERROR);
    for (let i = 0; i < p.length; i += 6) {
      const key = p.readUInt16BE(i);
      const value = p.readUInt32BE(i + 2);
      if (key === SETTINGS_ENABLE_PUSH) {
        if (value > 1) return this.connectionError(ERR.PROTOCOL_ERROR);
      } else if (key === SETTINGS_INITIAL_WINDOW_SIZE) {
        if (value > MAX_WINDOW) return this.connectionError(ERR.FLOW_CONTROL_ERROR);
        const delta = value - this.peerInitialWindow;
        this.peerInitialWindow = value;
        // §6.9.2: every open stream's window moves by the difference.
        for (const s of this.streams.values()) {
          s.sendWindow += delta;
          if (s.sendWindow > MAX_WINDOW) return this.connectionError(ERR.FLOW_CONTROL_ERROR);
        }
        if (delta > 0) this.pumpAll();
      } else if (key === SETTINGS_MAX_FRAME_SIZE) {
        if (value < 16384 || value > 16777215) return this.connectionError(ERR.PROTOCOL_ERROR);
        this.peerMaxFrame = value;
      } else if (key === SETTINGS_HEADER_TABLE_SIZE) {
        // lb's encoder never indexes, but a decoder whose table was made smaller than 4096 expects the
        // change acknowledged by a dynamic table size update at the start of the next header block
        // (RFC 7541 §4.2; nghttp2 fails the connection without it): lb sends one, to 0.
        if (value < 4096) this.sizeUpdate = true;
      }
      // MAX_CONCURRENT_STREAMS: lb never pushes; MAX_HEADER_LIST_SIZE: advisory (§6.5.2); unknown settings
      // are ignored.
    }
    this.control(FRAME.SETTINGS, undefined);
  }

  private onWindowUpdate(id: number, p: Buffer): void {
    if (p.length !== 4) return this.connectionError(ERR.FRAME_SIZE_ERROR);
    const inc = p.readUInt32BE(0) & MAX_WINDOW;
    if (id === 0) {
      if (inc === 0) return this.connectionError(ERR.PROTOCOL_ERROR);
      this.sendWindow += inc;
      if (this.sendWindow > MAX_WINDOW) return this.connectionError(ERR.FLOW_CONTROL_ERROR);
      this.pumpAll();
      return;
    }
    const s = this.streams.get(id);
    if (s === undefined) {
      if (id > this.lastId) return this.connectionError(ERR.PROTOCOL_ERROR);
      return this.glitch();
    }
    if (inc === 0) return this.resetStream(id, ERR.PROTOCOL_ERROR);
    s.sendWindow += inc;
    if (s.sendWindow > MAX_WINDOW) return this.resetStream(id, ERR.FLOW_CONTROL_ERROR);
    if (s.queue !== undefined) this.pump(s);
  }

  private glitch(): void {
    if (++this.glitches > GLITCH_LIMIT && this.glitches > this.completed) this.connectionError(ERR.ENHANCE_YOUR_CALM);
  }

  /** A stream error PROTOCOL_ERROR for a malformed message (§8.1.1), reported to the listener. */
  private malformed(s: H2Stream, reason: string): void {
    this.events.malformed(reason, 400);
    this.resetStream(s.id, ERR.PROTOCOL_ERROR);
  }

  // ---- output ----

  /** The response head (and END_STREAM when nothing follows). */
  respond(s: H2Stream, status: number, fields: string[], endStream: boolean): void {
    if (s.closed || this.destroyed) return;
    const bound = encodedLengthBound(fields);
    if (this.sizeUpdate || bound > 16384) this.headers(s, this.encoder.encode(status, fields), endStream);
    else {
      // The usual head: encoded straight into the output slab behind its frame header.
      let b = this.slab;
      if (b === undefined || b.length - this.slabOff < 9 + bound) b = this.newSlab(9 + bound);
      const o = this.slabOff;
      const end = this.encoder.encodeInto(b, o + 9, status, fields);
      const len = end - o - 9;
      b[o] = len >>> 16;
      b[o + 1] = (len >>> 8) & 0xff;
      b[o + 2] = len & 0xff;
      b[o + 3] = FRAME.HEADERS;
      b[o + 4] = END_HEADERS | (endStream ? END_STREAM : 0);
      b.writeUInt32BE(s.id, o + 5);
      this.slabOff = end;
      this.outBytes += end - o;
      this.scheduleFlush();
    }
    if (endStream) this.localEnd(s);
  }

  /** An interim (1xx) response. */
  informational(s: H2Stream, status: number, fields: string[]): void {
    if (s.closed || this.destroyed) return;
    this.headers(s, this.encoder.encode(status, fields), false);
  }

  /** DATA, END_STREAM with the last of it when `end`; false: wait for the stream's onDrain. */
  write(s: H2Stream, chunk: Buffer | undefined, end: boolean): boolean {
    if (s.closed || this.destroyed || s.localEnded) return false;
    if (end) s.localEnded = true;
    if (s.queue !== undefined) {
      if (chunk !== undefined && chunk.length > 0) {
        s.queue.push(chunk);
        s.queuedBytes += chunk.length;
      }
    } else if (chunk !== undefined && chunk.length > 0) {
      this.sendData(s, chunk, end);
    } else if (end) {
      this.emitFrame(FRAME.DATA, END_STREAM, s.id, undefined);
    }
    if (end && s.queue === undefined) this.localDone(s);
    if (s.queue === undefined && this.outBytes + this.socket.writableLength < OUT_HIGH) return true;
    if (!end) this.drainWaiters.add(s);
    this.scheduleFlush();
    return false;
  }

  /** Trailers end the stream (after any DATA still waiting for the window). */
  trailers(s: H2Stream, fields: string[]): void {
    if (s.closed || this.destroyed || s.localEnded) return;
    s.localEnded = true;
    const block = this.encoder.encode(undefined, fields);
    if (s.queue !== undefined) {
      s.pendingTrailers = block;
      return;
    }
    this.headers(s, block, true);
    this.localDone(s);
  }

  /** Sends what the windows allow of `chunk`; the rest waits in the stream's queue. */
  private sendData(s: H2Stream, chunk: Buffer, end: boolean): void {
    let off = 0;
    const len = chunk.length;
    while (off < len) {
      const room = Math.min(s.sendWindow, this.sendWindow, this.peerMaxFrame);
      if (room <= 0) break;
      const n = Math.min(room, len - off);
      const last = off + n === len;
      this.emitFrame(FRAME.DATA, last && end ? END_STREAM : 0, s.id, off === 0 && last ? chunk : chunk.subarray(off, off + n));
      s.sendWindow -= n;
      this.sendWindow -= n;
      off += n;
    }
    if (off < len) {
      s.queue = [off === 0 ? chunk : chunk.subarray(off)];
      s.queuedBytes = len - off;
      this.blocked.add(s);
    }
  }

  /** A window opened: queued DATA of `s` goes out as far as it allows. */
  private pump(s: H2Stream): void {
    const q = s.queue;
    if (q === undefined || s.closed) return;
    s.queue = undefined;
    s.queuedBytes = 0;
    this.blocked.delete(s);
    for (let i = 0; i < q.length; i++) {
      if (s.queue !== undefined) {
        (s.queue as Buffer[]).push(q[i]!);
        s.queuedBytes += q[i]!.length;
        continue;
      }
      this.sendData(s, q[i]!, s.localEnded && s.pendingTrailers === undefined && i === q.length - 1);
    }
    if (s.queue === undefined) {
      if (s.pendingTrailers !== undefined) {
        this.headers(s, s.pendingTrailers, true);
        s.pendingTrailers = undefined;
      }
      if (s.localEnded) this.localDone(s);
      this.wake(s);
    }
    this.scheduleFlush();
  }

  private pumpAll(): void {
    if (this.blocked.size === 0) return;
    for (const s of [...this.blocked]) {
      if (this.sendWindow <= 0) break;
      this.pump(s);
    }
  }

  /** A stream's writer waiting for 'drain' is told once its queue is out and the socket keeps up. */
  private wake(s: H2Stream): void {
    if (!this.drainWaiters.has(s) || s.queue !== undefined || this.outBytes + this.socket.writableLength >= OUT_HIGH) return;
    this.drainWaiters.delete(s);
    s.onDrain?.();
  }

  private headers(s: H2Stream, block: Buffer, endStream: boolean): void {
    if (this.sizeUpdate) {
      this.sizeUpdate = false;
      block = Buffer.concat([SIZE_UPDATE_0, block]);
    }
    const max = this.peerMaxFrame;
    const flags = endStream ? END_STREAM : 0;
    if (block.length <= max) {
      this.emitFrame(FRAME.HEADERS, flags | END_HEADERS, s.id, block);
      return;
    }
    // §6.10: HEADERS then CONTINUATION frames, nothing between them.
    for (let off = 0; off < block.length; off += max) {
      const n = Math.min(max, block.length - off);
      const last = off + n >= block.length;
      this.emitFrame(off === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, (off === 0 ? flags : 0) | (last ? END_HEADERS : 0), s.id, block.subarray(off, off + n));
    }
  }

  private localEnd(s: H2Stream): void {
    s.localEnded = true;
    this.localDone(s);
  }

  /** The response is out: the stream closes once the request has ended too; if it has not, lb stops it (§8.1). */
  private localDone(s: H2Stream): void {
    if (s.closed) return;
    if (s.remoteEnded) {
      this.completed++;
      this.closeStream(s, ERR.NO_ERROR);
      return;
    }
    // §8.1: a server may answer before the request is complete and then reset it with NO_ERROR.
    this.completed++;
    this.resetStream(s.id, ERR.NO_ERROR);
  }

  /** RST_STREAM with `code`; closes the stream if open. */
  resetStream(id: number, code: number): void {
    if (this.destroyed) return;
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(code, 0);
    this.emitFrame(FRAME.RST_STREAM, 0, id, p);
    this.scheduleFlush();
    const s = this.streams.get(id);
    if (s !== undefined) this.closeStream(s, code);
  }

  private closeStream(s: H2Stream, code: number): void {
    if (s.closed) return;
    s.closed = true;
    s.code = code;
    this.streams.delete(s.id);
    if (s.queue !== undefined) {
      this.blocked.delete(s);
      s.queue = undefined;
    }
    this.drainWaiters.delete(s);
    s.onClose?.(s);
    if (this.goingAway && this.streams.size === 0) this.end();
  }

  private windowUpdate(id: number, n: number): void {
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(n, 0);
    this.emitFrame(FRAME.WINDOW_UPDATE, 0, id, p);
  }

  /** An ACK the peer's frame asked for; bounded while the peer does not read. */
  private control(type: number, payload: Buffer | undefined): void {
    if (this.socket.writableNeedDrain && ++this.pendingControl > MAX_PENDING_CONTROL) return this.connectionError(ERR.ENHANCE_YOUR_CALM);
    this.emitFrame(type, ACK, 0, payload);
  }

  /**
   * Queues a frame. Headers and small payloads are copied into the session's output slab (one buffer for
   * many frames, nothing allocated per frame); a larger payload is queued by reference after it. The slab
   * only moves forward: a region handed to socket.write is never written again.
   */
  private emitFrame(type: number, flags: number, id: number, payload: Buffer | undefined): void {
    const len = payload === undefined ? 0 : payload.length;
    const big = len > COPY_MAX;
    const need = big ? 9 : 9 + len;
    let b = this.slab;
    if (b === undefined || b.length - this.slabOff < need) b = this.newSlab(need);
    let o = this.slabOff;
    b[o] = len >>> 16;
    b[o + 1] = (len >>> 8) & 0xff;
    b[o + 2] = len & 0xff;
    b[o + 3] = type;
    b[o + 4] = flags;
    b[o + 5] = id >>> 24;
    b[o + 6] = (id >>> 16) & 0xff;
    b[o + 7] = (id >>> 8) & 0xff;
    b[o + 8] = id & 0xff;
    o += 9;
    if (len > 0 && !big) {
      b.set(payload!, o);
      o += len;
    }
    this.slabOff = o;
    this.outBytes += 9 + len;
    if (big) {
      this.cut();
      this.out.push(payload!);
    }
    this.scheduleFlush();
  }

  /** The slab's unflushed frames become one queued buffer. */
  private cut(): void {
    if (this.slab !== undefined && this.slabOff > this.slabStart) {
      this.out.push(this.slab.subarray(this.slabStart, this.slabOff));
      this.slabStart = this.slabOff;
    }
  }

  private newSlab(need: number): Buffer {
    this.cut();
    const b = (this.slab = Buffer.allocUnsafeSlow(Math.max(SLAB, need)));
    this.slabStart = this.slabOff = 0;
    return b;
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(this.flush);
  }

  /** Everything queued since the last flush goes out in one write (frames of many streams together). */
  private readonly flush = (): void => {
    this.flushing = false;
    this.cut();
    const out = this.out;
    if (out.length === 0 || this.socket.destroyed) return;
    this.out = [];
    this.outBytes = 0;
    const sock = this.socket;
    let ok: boolean;
    if (out.length === 1) ok = sock.write(out[0]!);
    else {
      // One writev.
      sock.cork();
      for (let i = 0; i < out.length - 1; i++) sock.write(out[i]!);
      ok = sock.write(out[out.length - 1]!);
      sock.uncork();
    }
    // An idle connection holds no slab.
    if (this.streams.size === 0) this.slab = undefined;
    if (!ok && !this.readPaused && sock.writableLength >= 16 * OUT_HIGH) {
      // The client does not read what it asks for: stop reading it until it does.
      this.readPaused = true;
      sock.pause();
    }
    if (ok) {
      this.pendingControl = 0;
      // The socket took it all: no 'drain' will come, so writers told to wait are woken here.
      if (this.drainWaiters.size > 0) for (const s of [...this.drainWaiters]) this.wake(s);
    }
  };

  private readonly onSocketDrain = (): void => {
    this.pendingControl = 0;
    if (this.readPaused) {
      this.readPaused = false;
      this.socket.resume();
    }
    if (this.drainWaiters.size === 0) return;
    for (const s of [...this.drainWaiters]) this.wake(s);
  };

  // ---- connection end ----

  /** Graceful: GOAWAY NO_ERROR with the last stream lb took; open streams finish, then the connection ends. */
  close(): void {
    if (this.goingAway || this.destroyed) return;
    this.goingAway = true;
    this.goaway(ERR.NO_ERROR);
    if (this.streams.size === 0) this.end();
  }

  private goaway(code: number): void {
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(this.lastId, 0);
    p.writeUInt32BE(code, 4);
    this.emitFrame(FRAME.GOAWAY, 0, 0, p);
  }

  /** A connection error (§5.4.1): GOAWAY with `code`, every stream closed, the socket ended. */
  connectionError(code: number): void {
    if (this.destroyed) return;
    this.goingAway = true;
    this.goaway(code);
    this.flush();
    this.destroy(code);
  }

  /** Flushes what is queued and ends the socket (a closed stream set). */
  private end(): void {
    if (this.destroyed) return;
    this.flush();
    this.socket.end();
    // A client that never closes its side is cut after a while.
    setTimeout(() => this.socket.destroy(), 5000).unref();
    this.destroy(ERR.NO_ERROR);
  }

  /** Closes every stream (code INTERNAL_ERROR unless given) and the socket if still open. */
  destroy(code: number = ERR.CANCEL): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const s of [...this.streams.values()]) this.closeStream(s, code === ERR.NO_ERROR ? ERR.CANCEL : code);
    if (!this.socket.writableEnded && !this.socket.destroyed) {
      this.flush();
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 1000).unref();
    }
    this.socket.removeListener('data', this.onData);
    this.events.close();
  }

  private readonly onSocketError = (): void => {
    this.socket.destroy();
  };

  private readonly onSocketEnd = (): void => {
    // The client closed its side: nothing more can come; streams still open are answered if they can be.
    if (this.streams.size === 0) this.destroy(ERR.NO_ERROR);
    else this.goingAway = true;
  };

  private readonly onSocketClose = (): void => {
    this.out = [];
    this.outBytes = 0;
    this.slab = undefined;
    this.destroy(ERR.CANCEL);
  };
}

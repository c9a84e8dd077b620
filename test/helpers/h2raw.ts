// A raw HTTP/2 client for malformed input that node:http2's client refuses to send (upper-case names,
// connection-specific fields): frames written by hand, header blocks as HPACK literals without indexing
// (RFC 7541 §6.2.2; no Huffman), incoming frames split by type and stream. The server's SETTINGS are
// acknowledged; its header blocks are not decoded (tests look at frame types, streams and error codes).

import net from 'node:net';
import { waitFor } from './lb.js';

export const FRAME = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, payload]);
}

function hpackInt(n: number): Buffer {
  // 7-bit prefix, H = 0.
  if (n < 127) return Buffer.from([n]);
  const out = [127];
  n -= 127;
  while (n >= 128) {
    out.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

/** A header block of literal fields without indexing, names and values as given (case untouched). */
export function headerBlock(fields: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [n, v] of fields) {
    parts.push(Buffer.from([0]), hpackInt(Buffer.byteLength(n)), Buffer.from(n, 'latin1'), hpackInt(Buffer.byteLength(v)), Buffer.from(v, 'latin1'));
  }
  return Buffer.concat(parts);
}

export class RawH2 {
  readonly frames: Frame[] = [];
  private buf = Buffer.alloc(0);
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }

  /** Connects and sends the preface with a SETTINGS frame (`settings`: its payload; none by default). */
  static async connect(port: number, settings: Buffer = Buffer.alloc(0)): Promise<RawH2> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const c = new RawH2(socket);
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(FRAME.SETTINGS, 0, 0, settings)]));
    return c;
  }

  /** Any frame, as given. */
  send(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): void {
    this.socket.write(frame(type, flags, stream, payload));
  }

  /** The error code of the GOAWAY the server sent, once it came. */
  async goawayCode(ms = 10_000): Promise<number> {
    const f = await waitFor(() => this.frames.find((x) => x.type === FRAME.GOAWAY), ms, 'GOAWAY');
    return f.payload.readUInt32BE(4);
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 9) {
      const len = this.buf.readUIntBE(0, 3);
      if (this.buf.length < 9 + len) break;
      const f: Frame = { type: this.buf[3]!, flags: this.buf[4]!, stream: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
      this.buf = this.buf.subarray(9 + len);
      this.frames.push(f);
      if (f.type === FRAME.SETTINGS && (f.flags & 1) === 0) this.socket.write(frame(FRAME.SETTINGS, 1, 0, Buffer.alloc(0)));
    }
  }

  /** A HEADERS frame (END_HEADERS, and END_STREAM unless `more`). */
  headers(stream: number, fields: Array<[string, string]>, more = false): void {
    this.socket.write(frame(FRAME.HEADERS, 0x4 | (more ? 0 : 0x1), stream, headerBlock(fields)));
  }

  /** A DATA frame on `stream` (END_STREAM when `end`). */
  data(stream: number, payload: Buffer, end = true): void {
    this.socket.write(frame(FRAME.DATA, end ? 0x1 : 0, stream, payload));
  }

  rst(stream: number, code = 8): void {
    const p = Buffer.alloc(4);
    p.writeUInt32BE(code);
    this.socket.write(frame(FRAME.RST_STREAM, 0, stream, p));
  }

  /** The error code of the RST_STREAM the server sent on `stream`, once it came. */
  async resetOf(stream: number, ms = 10_000): Promise<number> {
    const f = await waitFor(() => this.frames.find((x) => x.type === FRAME.RST_STREAM && x.stream === stream), ms, `RST_STREAM on stream ${stream}`);
    return f.payload.readUInt32BE(0);
  }

  /** Whether a response HEADERS frame came on `stream`. */
  async responseOn(stream: number, ms = 10_000): Promise<Frame> {
    return waitFor(() => this.frames.find((x) => x.type === FRAME.HEADERS && x.stream === stream), ms, `response HEADERS on stream ${stream}`);
  }

  close(): void {
    this.socket.destroy();
  }
}

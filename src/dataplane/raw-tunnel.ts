// A plain tcp listener's connection on bare TCP handles (tcp-wrap.ts): the client's handle, as accepted, and
// one backend handle, spliced both ways. The same contract as splice() in connect.ts, which serves TLS
// listeners, host-name backends and websocket upgrades:
// - back-pressure: while a write to one side is unfinished, the other side is not read;
// - half-close: a FIN from one side is passed on (shutdown(2)) while the other direction keeps flowing; when
//   the second FIN arrives with nothing left to write, both are closed (close(2) sends the FIN);
// - an error or reset on either side closes both;
// - until the backend accepts, what the client sends is held (up to HOLD_BYTES, then reading pauses) and
//   goes to whichever backend accepts, after retries too;
// - idle_timeout: no byte read in either direction for that long closes both.

import { isIPv6 } from 'node:net';
import type { Backend } from './backend.js';
import type { Dialer } from './connect.js';
import { Deadline } from './deadline.js';
import type { Endpoints } from './proxy-protocol.js';
import { uvError, type TcpHandle, type TcpWrap, type WriteReq } from '../node-internals/tcp-wrap.js';

/** What is read from a client while its backend connection is being made, at most (then reading pauses). */
export const HOLD_BYTES = 64 * 1024;

const kSide = Symbol('lb.side');

interface Owned extends TcpHandle {
  [kSide]?: Side;
}

interface PendingWrite extends WriteReq {
  src: Side;
  dst: Side;
  data: Uint8Array;
}

class Side {
  /** Its own FIN (or an error) was read: nothing more comes from it. */
  eof = false;
  /** Reading is stopped for back-pressure (or while the hold is full). */
  stopped = false;
  /** Writes to it still in progress. */
  pending = 0;
  /** The other side's FIN waits for `pending` to reach 0. */
  finWaiting = false;
  peer: Side | undefined;
  constructor(
    readonly tunnel: RawTunnel,
    readonly handle: Owned,
  ) {
    handle[kSide] = this;
  }
}

export class RawTunnel {
  readonly client: Side;
  private up: Side | undefined;
  backend: Backend | undefined;
  /** Bytes read from the client and written to it. */
  bytesIn = 0;
  bytesOut = 0;
  private held: Uint8Array[] | undefined = [];
  private heldBytes = 0;
  private closed = false;
  private readonly idle: Deadline;

  /**
   * Starts reading `client` (holding what it sends). `onClose` is called once, when the tunnel closes (its
   * `backend` is set if it was ever spliced); `idleMs` gives the current idle_timeout at each read.
   */
  constructor(
    readonly w: TcpWrap,
    client: TcpHandle,
    private readonly idleMs: () => number,
    private readonly onClose: (t: RawTunnel) => void,
  ) {
    this.client = new Side(this, client);
    this.idle = new Deadline(() => this.destroy());
    client.onread = onRead;
    const err = client.readStart();
    if (err < 0) queueMicrotask(() => this.destroy());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The client's address (getpeername(2)), or '' when it is gone. */
  remoteAddress(): string {
    const out: { address?: string } = {};
    return this.client.handle.getpeername(out) === 0 ? (out.address ?? '') : '';
  }

  /** The client connection's two ends (getpeername(2), getsockname(2)), for a PROXY header. */
  endpoints(): Endpoints {
    const peer: { address?: string; port?: number } = {};
    const local: { address?: string; port?: number } = {};
    this.client.handle.getpeername(peer);
    this.client.handle.getsockname(local);
    return { src: { address: peer.address ?? '', port: peer.port ?? 0 }, dst: { address: local.address ?? '', port: local.port ?? 0 } };
  }

  /**
   * Splices the client to a connected backend handle: `preface` (a PROXY header) and what was held are
   * written first.
   */
  splice(up: TcpHandle, backend: Backend, preface?: Uint8Array): void {
    const u = new Side(this, up);
    const c = this.client;
    this.up = u;
    this.backend = backend;
    c.peer = u;
    u.peer = c;
    up.onread = onRead;
    const held = this.held!;
    this.held = undefined;
    if (preface) write(c, u, preface);
    for (const chunk of held) write(c, u, chunk);
    if (this.closed) return;
    this.idle.arm(this.idleMs());
    if (up.readStart() < 0) {
      this.destroy();
      return;
    }
    if (c.eof) fin(u);
    else if (c.stopped && u.pending === 0) {
      c.stopped = false;
      c.handle.readStart();
    }
  }

  hold(chunk: Uint8Array): void {
    this.held!.push(chunk);
    this.heldBytes += chunk.length;
    if (this.heldBytes >= HOLD_BYTES) {
      this.client.stopped = true;
      this.client.handle.readStop();
    }
  }

  /** Closes both handles (close(2): a FIN, or a reset when unread bytes remain), once. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.idle.clear();
    this.client.handle.close();
    this.up?.handle.close();
    this.onClose(this);
  }

  touch(): void {
    if (this.up) this.idle.arm(this.idleMs());
  }
}

function onRead(this: Owned, arrayBuffer: ArrayBuffer | undefined): void {
  const side = this[kSide]!;
  const t = side.tunnel;
  if (t.isClosed) return;
  const w = t.w;
  const n = w.readBytes();
  if (n > 0) {
    const chunk = new Uint8Array(arrayBuffer!, w.readOffset(), n);
    t.touch();
    if (side === t.client) t.bytesIn += n;
    const peer = side.peer;
    if (peer) write(side, peer, chunk);
    else t.hold(chunk);
    return;
  }
  if (n === 0) return;
  if (n !== w.UV_EOF) {
    t.destroy();
    return;
  }
  side.eof = true;
  this.readStop();
  // The client's FIN before the splice is passed on by splice().
  if (side.peer) fin(side.peer);
}

function write(src: Side, dst: Side, data: Uint8Array): void {
  const t = src.tunnel;
  const w = t.w;
  const req = w.newWrite() as PendingWrite;
  req.handle = dst.handle;
  req.oncomplete = afterWrite as WriteReq['oncomplete'];
  const err = dst.handle.writeBuffer(req, data);
  if (err < 0) {
    t.destroy();
    return;
  }
  if (dst === t.client) t.bytesOut += data.length;
  if (!w.lastWriteAsync()) return;
  // Unfinished: the bytes stay referenced until oncomplete, and the source is not read meanwhile.
  req.src = src;
  req.dst = dst;
  req.data = data;
  dst.pending++;
  if (!src.stopped && !src.eof) {
    src.stopped = true;
    src.handle.readStop();
  }
}

function afterWrite(this: PendingWrite, status: number): void {
  const { src, dst } = this;
  const t = dst.tunnel;
  dst.pending--;
  if (t.isClosed) return;
  if (status < 0) {
    t.destroy();
    return;
  }
  if (dst.pending > 0) return;
  if (dst.finWaiting) fin(dst);
  else if (src.stopped && !src.eof) {
    src.stopped = false;
    src.handle.readStart();
  }
}

/** Passes the other side's FIN on to `dst`, once its writes are done (see the file's header). */
function fin(dst: Side): void {
  if (dst.pending > 0) {
    dst.finWaiting = true;
    return;
  }
  dst.finWaiting = false;
  const t = dst.tunnel;
  if (dst.eof) {
    t.destroy();
    return;
  }
  const w = t.w;
  const req = w.newShutdown();
  req.handle = dst.handle;
  req.oncomplete = noop;
  if (dst.handle.shutdown(req) < 0) t.destroy();
}

function noop(): void {}

/**
 * Dials backends on bare handles; the backend's host must be an IP address (BackendPool.ipOnly). TCP_NODELAY,
 * as HAProxy and NGINX set it (libuv applies it when it creates the socket).
 */
export function rawDialer(w: TcpWrap): Dialer<TcpHandle> {
  return {
    dial(b, cb) {
      const h = w.newSocket();
      h.setNoDelay(true);
      const req = w.newConnect();
      const { host, port } = b.address;
      req.oncomplete = (status: number) => cb(status < 0 ? uvError(status, 'connect') : null);
      const err = isIPv6(host) ? h.connect6(req, host, port) : h.connect(req, host, port);
      if (err < 0) process.nextTick(cb, uvError(err, 'connect'));
      return h;
    },
    abort(h) {
      h.close();
    },
  };
}

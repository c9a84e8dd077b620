// A latin1 string (an HTTP head, or a head with a small body) written on a plain socket's handle at once,
// past net.Socket's Writable: no write-state bookkeeping, WriteWrap and after-write tick per write. It is
// the call net.Socket makes itself (handle.writeLatin1String, which copies up to 16 KiB to the stack and
// tries the write right away), taken only when the stream holds nothing: ordering with the stream's own
// writes is kept by libuv, whose queue both go through. Uses tcp_wrap's WriteWrap (tcp-wrap.ts); without it
// (or with LB_NODE_FALLBACK=tcp_wrap), and for TLS sockets, it is socket.write().

import type net from 'node:net';
import { tcpWrap, uvError, type WriteReq } from './tcp-wrap.js';

/** Strings up to this length go through the handle's try-write path (its stack buffer is 16 KiB). */
const DIRECT_MAX = 16 * 1024;
/** Set on a socket while a direct write waits for the kernel (later writes then take the stream). */
const kPending = Symbol('lb.directWritePending');

interface WriteHandle {
  writeLatin1String(req: WriteReq, data: string): number;
}
type Marked = net.Socket & {
  _handle?: WriteHandle | null;
  encrypted?: boolean;
  [kPending]?: boolean;
  _writableState?: { autoDestroy?: boolean };
};
type PendingReq = WriteReq & { socket?: Marked };

/** A WriteWrap no write holds (a write done at once, or refused, leaves its request untouched). */
let spare: WriteReq | undefined;

/**
 * Writes `data` (latin1) on `socket`, as socket.write(data, 'latin1') would. False when not all of it
 * went to the kernel at once: the rest is written before anything written after it, and 'drain' is
 * emitted on the socket once it is (a failed write destroys the socket, or emits 'error' on one whose
 * autoDestroy is off, as the stream's own write does).
 */
export function writeLatin1(socket: net.Socket, data: string): boolean {
  const s = socket as Marked;
  const h = s._handle;
  if (
    tcpWrap === undefined ||
    !h ||
    data.length > DIRECT_MAX ||
    s.encrypted === true ||
    s[kPending] === true ||
    s.connecting ||
    !s.writable ||
    s.writableLength !== 0 ||
    s.writableCorked !== 0 ||
    typeof h.writeLatin1String !== 'function'
  ) {
    return socket.write(data, 'latin1');
  }
  const req = spare ?? tcpWrap.newWrite();
  spare = undefined;
  if (h.writeLatin1String(req, data) !== 0) {
    // Refused before a byte was written (EPIPE, ECONNRESET): the stream's write meets the same error
    // and reports it its own way.
    spare = req;
    return socket.write(data, 'latin1');
  }
  if (!tcpWrap.lastWriteAsync()) {
    spare = req;
    return true;
  }
  // Part of it is queued in libuv (the kernel's buffer is full); `req` is in use until it completes.
  s[kPending] = true;
  const pending = req as PendingReq;
  pending.socket = s;
  pending.oncomplete = onDirectWriteDone;
  return false;
}

function onDirectWriteDone(this: PendingReq, status: number): void {
  const s = this.socket!;
  this.socket = undefined;
  s[kPending] = false;
  if (s.destroyed) return;
  if (status < 0) {
    const err = uvError(status, 'write');
    if (s._writableState?.autoDestroy === false) s.emit('error', err);
    else s.destroy(err);
    return;
  }
  s.emit('drain');
}

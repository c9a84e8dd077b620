// Opening a raw TCP connection to a pool's backend, for tcp listeners: pick, connect
// within `connect_timeout`, and on failure try other backends up to `retries` times. Counts the connection
// in the chosen backend's `inflight` from the first attempt; the caller ends it with `backend.end()`.

import net from 'node:net';
import type { Backend } from './backend.js';
import type { DataPlaneEvents } from './events.js';
import type { BackendPool } from './pool.js';

export interface Connected<S = net.Socket> {
  backend: Backend;
  socket: S;
  retries: number;
}

export interface ConnectFailure {
  /** The last backend tried, if any was usable. */
  backend?: Backend;
  error: string;
  retries: number;
}

/**
 * How connectUpstream opens one connection: `dial` starts connecting to a backend and calls `cb` once, with
 * an error or null when connected, never before `dial` has returned; `abort` drops a connection that is
 * not wanted (after a timeout, an error, or a cancel). A `cb` after `abort` is ignored.
 */
export interface Dialer<S> {
  dial(b: Backend, cb: (err: (Error & { code?: string }) | null) => void): S;
  abort(s: S): void;
}

/** Dials with net.connect (any host name; node resolves it); TCP_NODELAY, as HAProxy and NGINX set it. */
export const netDialer: Dialer<net.Socket> = {
  dial(b, cb) {
    const socket = net.connect({ host: b.address.host, port: b.address.port, allowHalfOpen: true, noDelay: true });
    const failed = (err: Error): void => {
      socket.removeListener('connect', connected);
      cb(err);
    };
    const connected = (): void => {
      socket.removeListener('error', failed);
      cb(null);
    };
    socket.once('error', failed);
    socket.once('connect', connected);
    return socket;
  },
  abort(socket) {
    socket.destroy();
  },
};

export function connectUpstream<S>(
  pool: BackendPool,
  key: string | undefined,
  events: DataPlaneEvents,
  done: (err: ConnectFailure | null, ok?: Connected<S>) => void,
  dialer: Dialer<S>,
): () => void {
  let tried: Backend[] | undefined;
  // The attempt under way: its end (success, failure, timeout, cancel) is taken once.
  let current: { b: Backend; socket: S | undefined; open: boolean } | undefined;
  let timer: NodeJS.Timeout | undefined;

  const attempt = (b: Backend | undefined): void => {
    if (!b) {
      const last = tried?.[tried.length - 1];
      done({ backend: last, error: last ? 'all attempts failed' : 'no usable backend', retries: Math.max(0, (tried?.length ?? 0) - 1) });
      return;
    }
    b.begin();
    const startedAt = performance.now();
    const at: { b: Backend; socket: S | undefined; open: boolean } = { b, socket: undefined, open: true };
    current = at;
    const fail = (err: Error & { code?: string }): void => {
      at.open = false;
      clearTimeout(timer);
      dialer.abort(at.socket!);
      b.end();
      pool.done(b, startedAt, false);
      b.failStreak++;
      events.failure(pool.name, b.name, 'connect');
      (tried ??= []).push(b);
      if (tried.length <= pool.config.retries) {
        attempt(pool.pickRetry({ key }, tried));
      } else {
        done({ backend: b, error: `${err.code ?? err.message}`, retries: tried.length - 1 });
      }
    };
    at.socket = dialer.dial(b, (err) => {
      if (!at.open) return;
      if (err) {
        fail(err);
        return;
      }
      at.open = false;
      clearTimeout(timer);
      pool.done(b, startedAt, true);
      if (b.failStreak > 0) {
        b.failStreak = 0;
        events.recovered(pool.name, b.name);
      }
      done(null, { backend: b, socket: at.socket!, retries: tried?.length ?? 0 });
    });
    timer = setTimeout(() => fail(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), pool.config.connectTimeoutMs);
  };

  const queue = pool.queue;
  if (queue !== undefined && !queue.underCap()) {
    // max_requests: tcp connections do not queue; the client's connection is closed (docs/SPEC.md).
    pool.queueStats.shedFull++;
    done({ error: `pool ${pool.name} is at max_requests`, retries: 0 });
    return () => {};
  }
  attempt(pool.pick({ key }));
  return () => {
    clearTimeout(timer);
    // An attempt cut short by the caller is neither a failure nor a success of its backend.
    if (current?.open) {
      current.open = false;
      dialer.abort(current.socket!);
      current.b.end();
    }
  };
}

/**
 * Pipes two sockets both ways with back-pressure and half-close (a FIN from one side is passed on while the
 * other direction keeps flowing); an error or reset on either side destroys both. Calls `closed` once, when
 * both are closed.
 *
 * When the second FIN arrives, both sockets are closed at once (see passFin) rather than shut down and then
 * closed. A FIN that `a` sent before the splice (`a.readableEnded`) is the caller's to pass on, with
 * `passFin(b)`.
 */
export function splice(a: net.Socket, b: net.Socket, closed: () => void): void {
  let open = 2;
  const onClose = (): void => {
    if (--open === 0) closed();
  };
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  a.on('close', (hadError) => {
    if (hadError || !a.readableEnded) b.destroy();
    onClose();
  });
  b.on('close', (hadError) => {
    if (hadError || !b.readableEnded) a.destroy();
    onClose();
  });
  forward(a, b);
  forward(b, a);
}

function forward(src: net.Socket, dst: net.Socket): void {
  let waiting = false;
  src.on('data', (chunk: Buffer) => {
    if (!dst.write(chunk) && !waiting) {
      waiting = true;
      src.pause();
    }
  });
  dst.on('drain', () => {
    if (waiting) {
      waiting = false;
      src.resume();
    }
  });
  src.on('end', () => passFin(dst, src));
}

/**
 * Passes `src`'s FIN on to `dst`. When `dst` had already sent its FIN and has nothing left to write, it is
 * closed outright (close(2) sends the FIN), and so is `src` if its own end() has nothing left to write either:
 * no shutdown(2) for them. Otherwise `dst.end()`. TLS sockets always end, so that close_notify is sent.
 */
export function passFin(dst: net.Socket, src?: net.Socket): void {
  if (dst.readableEnded && dst.writableLength === 0 && plain(dst)) {
    dst.destroy();
    if (src && src.writableEnded && src.writableLength === 0 && plain(src)) src.destroy();
  } else {
    dst.end();
  }
}

function plain(s: net.Socket): boolean {
  return !(s as { encrypted?: boolean }).encrypted;
}

// Opening a raw TCP connection to a pool's backend, for tcp listeners and websocket upgrades: pick, connect
// within `connect_timeout`, and on failure try other backends up to `retries` times. Counts the connection
// in the chosen backend's `inflight` from the first attempt; the caller ends it with `backend.end()`.

import net from 'node:net';
import type { Backend } from './backend.js';
import type { DataPlaneEvents } from './events.js';
import type { BackendPool } from './pool.js';

export interface Connected {
  backend: Backend;
  socket: net.Socket;
  retries: number;
}

export interface ConnectFailure {
  /** The last backend tried, if any was usable. */
  backend?: Backend;
  error: string;
  retries: number;
}

export function connectUpstream(
  pool: BackendPool,
  key: string | undefined,
  events: DataPlaneEvents,
  done: (err: ConnectFailure | null, ok?: Connected) => void,
): () => void {
  const tried: Backend[] = [];
  let cancelled = false;
  let current: net.Socket | undefined;
  let timer: NodeJS.Timeout | undefined;

  const attempt = (b: Backend | undefined): void => {
    if (!b) {
      const last = tried[tried.length - 1];
      done({ backend: last, error: last ? 'all attempts failed' : 'no usable backend', retries: Math.max(0, tried.length - 1) });
      return;
    }
    b.begin();
    const socket = net.connect({ host: b.address.host, port: b.address.port, allowHalfOpen: true });
    current = socket;
    const fail = (err: Error & { code?: string }): void => {
      if (timer) clearTimeout(timer);
      socket.destroy();
      b.end();
      b.failStreak++;
      events.failure(pool.name, b.name, 'connect');
      if (cancelled) return;
      tried.push(b);
      if (tried.length <= pool.config.retries) {
        attempt(pool.pickRetry({ key }, tried));
      } else {
        done({ backend: b, error: `${err.code ?? err.message}`, retries: tried.length - 1 });
      }
    };
    timer = setTimeout(() => {
      const e: Error & { code?: string } = new Error('connect timeout');
      e.code = 'ETIMEDOUT';
      fail(e);
    }, pool.config.connectTimeoutMs);
    socket.once('error', fail);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', fail);
      if (cancelled) {
        socket.destroy();
        b.end();
        return;
      }
      if (b.failStreak > 0) {
        b.failStreak = 0;
        events.recovered(pool.name, b.name);
      }
      done(null, { backend: b, socket, retries: tried.length });
    });
  };

  attempt(pool.pick({ key }));
  return () => {
    cancelled = true;
    if (timer) clearTimeout(timer);
    current?.destroy();
  };
}

/**
 * Pipes two sockets both ways with back-pressure and half-close (a FIN from one side is passed on while the
 * other direction keeps flowing); an error or reset on either side destroys both. Calls `closed` once, when
 * both are closed.
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
  a.once('close', (hadError) => {
    if (hadError || !a.readableEnded) b.destroy();
    onClose();
  });
  b.once('close', (hadError) => {
    if (hadError || !b.readableEnded) a.destroy();
    onClose();
  });
  a.pipe(b);
  b.pipe(a);
}

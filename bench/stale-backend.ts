// The backend of `lb bench stale`: a raw-TCP HTTP/1.1 server, kept-alive, that closes each connection once
// it has been idle for a time drawn anew after every response (uniform in [minMs, maxMs]; minMs = maxMs is a
// fixed idle time), as servers with a short keep-alive timeout do. It answers every request 200 "ok\n" at
// once. It runs in a child process so that its timers are not delayed by the load generator's event loop.
//
// The close is a plain close(2) of the socket (FIN; the kernel answers RST to bytes that arrive later), so a
// proxy that sends a request on the connection at that moment sees it closed or reset with no response byte:
// the race the bench counts.
//
// Counts since start(): connections accepted, connections it closed for idleness, requests parsed per
// method, and requests whose target it had already seen (each request of the bench has its own target, so
// these reached it twice: a proxy sent them again).
//
// Parent/child protocol (IPC): child -> {t:'listening', port}; parent -> {t:'start'} (reset the counts),
// {t:'stats'} -> {t:'stats', stats}. The child exits when the parent goes.

import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { ChildServer } from './upstream.js';

const CHILD_SCRIPT = fileURLToPath(import.meta.url);

export interface StaleBackendSpec {
  /** Idle time before the backend closes a kept-alive connection, drawn uniform in [minMs, maxMs]. */
  minMs: number;
  maxMs: number;
}

export interface StaleBackendStats {
  connections: number;
  idleCloses: number;
  requests: Record<string, number>;
  /** Requests whose target had been received before, per method. */
  duplicates: Record<string, number>;
}

/** Starts the backend child; resolves once it listens on 127.0.0.1. */
export function startStaleBackend(spec: StaleBackendSpec): Promise<ChildServer<StaleBackendStats>> {
  return ChildServer.spawn<StaleBackendStats>('stale backend', CHILD_SCRIPT, JSON.stringify(spec));
}

// ---- child side ----------------------------------------------------------------------------------------------

const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n', 'latin1');
const CLOSE_RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n', 'latin1');
const HEAD_END = Buffer.from('\r\n\r\n');
const CHUNKED_END = Buffer.from('\r\n0\r\n\r\n');

function runChild(spec: StaleBackendSpec): void {
  const fresh = (): StaleBackendStats => ({ connections: 0, idleCloses: 0, requests: {}, duplicates: {} });
  let stats = fresh();
  let seen = new Set<string>();
  const draw = (): number => spec.minMs + Math.random() * (spec.maxMs - spec.minMs);

  const server = net.createServer((s) => {
    stats.connections++;
    s.setNoDelay(true);
    let buf: Buffer = Buffer.alloc(0);
    /** Body bytes still to read of the current request; -1: a chunked body, read up to its last chunk. */
    let bodyLeft = 0;
    let inRequest = false;
    let closing = false;
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      timer = setTimeout(() => {
        timer = undefined;
        if (s.destroyed) return;
        stats.idleCloses++;
        s.destroy();
      }, draw());
    };
    const answer = (close: boolean): void => {
      s.write(close ? CLOSE_RESPONSE : RESPONSE);
      if (close) {
        closing = true;
        s.end();
      }
    };
    s.on('data', (d: Buffer) => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (closing) return;
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (inRequest) {
          if (bodyLeft > 0) {
            const take = Math.min(bodyLeft, buf.length);
            bodyLeft -= take;
            buf = buf.subarray(take);
            if (bodyLeft > 0) break;
          } else if (bodyLeft < 0) {
            const end = buf.indexOf(CHUNKED_END);
            if (end < 0) break;
            buf = buf.subarray(end + CHUNKED_END.length);
            bodyLeft = 0;
          }
          inRequest = false;
          answer(pendingClose);
          if (closing) return;
        }
        const end = buf.indexOf(HEAD_END);
        if (end < 0) break;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        buf = buf.subarray(end + HEAD_END.length);
        const [method = '', target = ''] = (lines[0] ?? '').split(' ');
        stats.requests[method] = (stats.requests[method] ?? 0) + 1;
        const key = `${method} ${target}`;
        if (seen.has(key)) stats.duplicates[method] = (stats.duplicates[method] ?? 0) + 1;
        else seen.add(key);
        bodyLeft = 0;
        pendingClose = false;
        for (const l of lines.slice(1)) {
          const c = l.indexOf(':');
          const name = l.slice(0, c).trim().toLowerCase();
          const value = l.slice(c + 1).trim().toLowerCase();
          if (name === 'content-length') bodyLeft = Number(value) || 0;
          else if (name === 'transfer-encoding' && value.endsWith('chunked')) bodyLeft = -1;
          else if (name === 'connection' && value.split(',').some((t) => t.trim() === 'close')) pendingClose = true;
        }
        inRequest = true;
        // A chunked body's terminator search needs the CRLF that ends the head.
        if (bodyLeft < 0) buf = Buffer.concat([Buffer.from('\r\n'), buf]);
      }
      if (!inRequest && buf.length === 0) arm();
    });
    let pendingClose = false;
    s.on('error', () => undefined);
    s.on('close', () => {
      if (timer) clearTimeout(timer);
    });
  });

  process.on('message', (m: { t: string }) => {
    if (m.t === 'start') {
      stats = fresh();
      seen = new Set();
    } else if (m.t === 'stats') {
      process.send?.({ t: 'stats', stats });
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  server.on('error', (err: NodeJS.ErrnoException) => {
    process.stderr.write(`stale backend: ${err.code ?? err.message}\n`);
    process.exit(1);
  });
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.send?.({ t: 'listening', port: typeof addr === 'object' && addr ? addr.port : 0 });
  });
}

if (process.argv[1] === CHILD_SCRIPT && process.send) runChild(JSON.parse(process.argv[2] ?? '{}') as StaleBackendSpec);

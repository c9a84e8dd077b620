// Upstreams for the DNS discovery end-to-end tests: small HTTP servers on loopback addresses other than
// 127.0.0.1 (127.0.0.0/8 is all loopback on Linux), so that A records can name distinct backends on one port.

import http from 'node:http';
import type net from 'node:net';

export interface App {
  name: string;
  host: string;
  port: number;
  /** Requests answered (not counting /healthz), and the time of the last and first one (performance.now()). */
  hits: number;
  first?: number;
  last?: number;
  /** Requests to /slow waiting for release(). */
  held: number;
  release(): void;
  /** /healthz answers 503 while false. */
  healthy: boolean;
  close(): Promise<void>;
}

/** Serves its name; /healthz 200 (or 503 when !healthy); /slow is held until release(). */
/** `name` defaults to "host:port" (the name lb gives an A/AAAA member). */
export async function startApp(host: string, port = 0, name?: string): Promise<App> {
  let waiting: Array<() => void> = [];
  const a: App = {
    name: name ?? '',
    host,
    port,
    hits: 0,
    held: 0,
    healthy: true,
    release: () => {
      const w = waiting;
      waiting = [];
      for (const f of w) f();
    },
    close: async () => {},
  };
  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(a.healthy ? 200 : 503).end();
      return;
    }
    a.hits++;
    a.last = performance.now();
    a.first ??= a.last;
    const answer = () => res.writeHead(200, { 'content-type': 'text/plain' }).end(a.name);
    if (req.url === '/slow') {
      a.held++;
      waiting.push(answer);
    } else answer();
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  a.port = (server.address() as net.AddressInfo).port;
  a.name = name ?? `${host}:${a.port}`;
  a.close = () =>
    new Promise<void>((r) => {
      a.release();
      server.closeAllConnections();
      server.close(() => r());
    });
  return a;
}

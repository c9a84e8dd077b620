// Helpers for the PROXY protocol tests: a real HAProxy (Debian's, started with its own temp config as a
// foreground child, `haproxy -f cfg -db`), HTTP requests from a chosen loopback source address (127.0.0.0/8
// is all loopback on Linux, so a "client" can be told apart from HAProxy and lb by its address), and raw
// socket exchanges that record what came back and when the connection closed.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { connectOnce, tmpdir, waitFor } from './lb.js';
import { findBinary } from './differential.js';

export interface Haproxy {
  pid: number;
  output(): string;
  stop(): Promise<void>;
}

/** Runs HAProxy on `config` until stop(); resolves once every port in `ports` ([host, port]) accepts. */
export async function startHaproxy(config: string, ports: Array<[string, number]>): Promise<Haproxy> {
  const dir = tmpdir('lb-pp-haproxy-');
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, config);
  const proc = spawn(findBinary('haproxy'), ['-f', file, '-db'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let gone = false;
  const exited = new Promise<void>((r) => proc.once('exit', () => ((gone = true), r())));
  const h: Haproxy = {
    pid: proc.pid!,
    output: () => out,
    async stop() {
      if (!gone) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
  try {
    await waitFor(
      async () => {
        if (gone) throw new Error(`haproxy exited: ${out}`);
        for (const [host, port] of ports) await connectOnce(port, host);
        return true;
      },
      15_000,
      'haproxy to listen',
      30,
    );
  } catch (err) {
    await h.stop();
    throw err;
  }
  return h;
}

/** What the echo backend saw of a request: the headers lb and HAProxy add, and its own peer. */
export interface Seen {
  xff?: string;
  realSrc?: string;
  upstream: string;
  remote: string;
}

/** An http.RequestListener answering 200 with a JSON Seen. */
export function echoHandler(name: string): http.RequestListener {
  return (req, res) => {
    const seen: Seen = {
      xff: req.headers['x-forwarded-for'] as string | undefined,
      realSrc: req.headers['x-real-src'] as string | undefined,
      upstream: name,
      remote: req.socket.remoteAddress ?? '',
    };
    const body = JSON.stringify(seen);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
}

/** GET `pathname` on host:port from `localAddress`; resolves with status and the parsed Seen (or body text). */
export function getFrom(host: string, port: number, localAddress: string | undefined, pathname = '/', agent: http.Agent | false = false): Promise<{ status: number; seen: Seen; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path: pathname, agent, ...(localAddress ? { localAddress } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        let seen: Seen;
        try {
          seen = JSON.parse(body) as Seen;
        } catch {
          seen = { upstream: '', remote: '' };
        }
        resolve({ status: res.statusCode ?? 0, seen, body });
      });
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('no response in 30 s')));
    req.end();
  });
}

export interface RawResult {
  /** Everything read until the connection closed. */
  data: Buffer;
  /** ms from connect to the close. */
  closedAfterMs: number;
  error?: string;
}

/**
 * Connects (from `localAddress` if given), writes each of `writes` (a number is a pause in ms), and resolves
 * when the peer closes the connection, or rejects after `deadlineMs`.
 */
export function rawExchange(port: number, writes: Array<Buffer | string | number>, opts: { host?: string; localAddress?: string; deadlineMs?: number } = {}): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    let error: string | undefined;
    const s = net.connect({ host: opts.host ?? '127.0.0.1', port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) });
    const deadline = setTimeout(() => {
      s.destroy();
      reject(new Error(`connection still open after ${opts.deadlineMs ?? 20_000}ms; read ${Buffer.concat(chunks).toString('latin1').slice(0, 200)}`));
    }, opts.deadlineMs ?? 20_000);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', (err: Error & { code?: string }) => (error = err.code ?? err.message));
    s.on('close', () => {
      clearTimeout(deadline);
      resolve({ data: Buffer.concat(chunks), closedAfterMs: performance.now() - t0, ...(error ? { error } : {}) });
    });
    s.on('connect', async () => {
      for (const w of writes) {
        if (typeof w === 'number') await new Promise((r) => setTimeout(r, w));
        else if (!s.destroyed) s.write(w);
      }
    });
  });
}

/** One request with a PROXY header in front over a raw socket; resolves with the response text (the connection is closed by the request). */
export async function rawRequest(port: number, header: Buffer | string, opts: { localAddress?: string; host?: string } = {}): Promise<string> {
  const r = await rawExchange(port, [Buffer.concat([Buffer.from(header), Buffer.from('GET /raw HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n')])], opts);
  return r.data.toString('latin1');
}

/** The JSON body of a raw HTTP/1.1 response text (a Seen with nothing in it when there is none). */
export function bodyOf(response: string): Seen {
  const body = response.slice(response.indexOf('\r\n\r\n') + 4);
  try {
    return JSON.parse(body) as Seen;
  } catch {
    return { upstream: '', remote: '' };
  }
}

/** v2 header bytes built here (not with lb's encoder), from the parts of proxy-protocol.txt section 2.2. */
export function v2Header(verCmd: number, fam: number, payload: Buffer): Buffer {
  const sig = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(payload.length);
  return Buffer.concat([sig, Buffer.from([verCmd, fam]), len, payload]);
}

/** A metric's value from Prometheus text, 0 when the series is absent. */
export async function metricValue(port: number, name: string, labels: Record<string, string>): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (b += d));
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    if (Object.entries(labels).every(([k, v]) => inner.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}

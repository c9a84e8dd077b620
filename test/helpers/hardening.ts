// Helpers for the hardening, TLS, fuzz and leak tests: raw-socket HTTP exchanges, an upstream that records
// every byte it receives, per-process RSS and fd counts from /proc, and a config builder. Every wait has a
// deadline; traffic stays on 127.0.0.1.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { httpConfig } from './lb.js';

export interface RawReply {
  /** Status code of the first response line, 0 when none arrived. */
  status: number;
  /** Everything received, latin1. */
  raw: string;
  /** The server closed (or reset) the connection before the deadline. */
  closed: boolean;
  /** Milliseconds from connect to close (or to the deadline). */
  ms: number;
}

/**
 * Sends `bytes` on a fresh connection (then a FIN with `half`) and collects what comes back until the server
 * closes the connection, `until` holds for what came, or `timeoutMs` passes (then the client closes).
 * Never rejects: a refused or reset connection is a reply with status 0.
 */
export function rawExchange(port: number, bytes: string | Buffer, timeoutMs = 3000, o: { half?: boolean; until?: (raw: string) => boolean } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const raw = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
      resolve({ status: m ? Number(m[1]) : 0, raw, closed, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    s.on('connect', () => {
      s.write(bytes);
      if (o.half) s.end();
    });
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      if (o.until?.(Buffer.concat(chunks).toString('latin1'))) finish(false);
    });
    s.on('error', () => finish(true));
    s.on('close', () => finish(true));
  });
}

/** One parsed request as the recording upstream saw it. */
export interface SeenRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  /** The request's bytes as received, head and body (latin1). */
  raw: string;
}

export interface RecordingUpstream {
  port: number;
  /** Every byte received on every connection, in arrival order per connection. */
  connections: Buffer[][];
  requests: SeenRequest[];
  /** All bytes received, latin1 (for substring checks). */
  text(): string;
  /** Connections open now. */
  open(): number;
  close(): Promise<void>;
}

/**
 * A raw net server that records every byte it receives and answers each complete HTTP/1.1 request (head
 * plus a Content-Length or chunked body) with `answer`: by default 200 and a small JSON body describing what
 * it saw. It speaks
 * just enough HTTP for lb's upstream side (keep-alive, no pipelining ambiguity); it parses nothing leniently:
 * anything it cannot parse is recorded and left unanswered.
 */
export async function startRecordingUpstream(answer: (req: SeenRequest, socket: net.Socket) => void = answerWhatWasSeen): Promise<RecordingUpstream> {
  const u: RecordingUpstream = {
    port: 0,
    connections: [],
    requests: [],
    text: () => u.connections.map((c) => Buffer.concat(c).toString('latin1')).join(''),
    open: () => sockets.size,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    const log: Buffer[] = [];
    u.connections.push(log);
    let buf: Buffer = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      log.push(d);
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const parsed = parseOne(buf);
        if (!parsed) break;
        buf = buf.subarray(parsed.used);
        u.requests.push(parsed.req);
        answer(parsed.req, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  u.port = (server.address() as net.AddressInfo).port;
  return u;
}

/** The default answer: 200 with a small JSON body describing the request. */
export function answerWhatWasSeen(req: SeenRequest, s: net.Socket): void {
  const body = JSON.stringify({ path: req.path, proto: req.headers['x-forwarded-proto'] ?? null, bytes: req.body.length });
  s.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

function parseOne(buf: Buffer): { req: SeenRequest; used: number } | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return undefined;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const [method = '', path = ''] = (lines[0] ?? '').split(' ');
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  let at = end + 4;
  let body: Buffer = Buffer.alloc(0);
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const nl = buf.indexOf('\r\n', at);
      if (nl === -1) return undefined;
      const size = parseInt(buf.subarray(at, nl).toString('latin1'), 16);
      if (Number.isNaN(size)) return undefined;
      if (size === 0) {
        const fin = buf.indexOf('\r\n\r\n', nl);
        if (fin === -1) return undefined;
        at = fin + 4;
        break;
      }
      if (buf.length < nl + 2 + size + 2) return undefined;
      parts.push(buf.subarray(nl + 2, nl + 2 + size));
      at = nl + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (buf.length < at + n) return undefined;
    body = buf.subarray(at, at + n);
    at += n;
  }
  return { req: { method, path, headers, body: Buffer.from(body), raw: buf.subarray(0, at).toString('latin1') }, used: at };
}

export interface ProcStats {
  pid: number;
  /** VmRSS in KiB. */
  rssKiB: number;
  fds: number;
}

/** RSS (VmRSS) and open fd count of one process; undefined when it is gone. */
export function procStats(pid: number): ProcStats | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    const fds = fs.readdirSync(`/proc/${pid}/fd`).length;
    return { pid, rssKiB: rss ? Number(rss[1]) : 0, fds };
  } catch {
    return undefined;
  }
}

/** Direct children of `pid` (the workers of lb's primary). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  try {
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const c = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (c) out.push(...c.split(/\s+/).map(Number));
    }
  } catch {
    /* gone */
  }
  return out.sort((a, b) => a - b);
}

/** An HTTP request with a keep-alive agent and an overall deadline; resolves status, body and duration. */
export function timedGet(port: number, path: string, agent: http.Agent | false, timeoutMs = 5000, headers?: Record<string, string>): Promise<{ status: number; body: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = http.request({ host: '127.0.0.1', port, path, agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs}ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** A one-pool lb config; `listener` and `pool` are extra TOML lines for the listener and pool tables. */
export function lbConfig(o: { port: number; upstreams: number[]; workers?: number; listener?: string; pool?: string; extra?: string; metricsPort?: number }): string {
  return httpConfig(
    o.port,
    `${o.listener ?? ''}
[pools.app]
algorithm = "round-robin"
${o.pool ?? ''}
backends = [${o.upstreams.map((p) => `{ address = "127.0.0.1:${p}" }`).join(', ')}]
${o.extra ?? ''}
${o.metricsPort ? `[metrics]\nlisten = "127.0.0.1:${o.metricsPort}"\n` : ''}`,
    o.workers ?? 1,
  );
}

// ---------------------------------------------------------------------------------------------------------
// Leak check: many requests (kept-alive, new connections, aborted mid-way) through a 2-worker lb, with RSS
// and fd counts of the primary and every worker from /proc before, during (peak) and after.

export interface ProcFigures {
  role: string;
  pid: number;
  /** After the warm-up, lb idle. */
  start: ProcStats;
  peak: { rssKiB: number; fds: number };
  /** After each round, lb idle again; the last one is `end`. */
  rounds: ProcStats[];
  /** Highest RSS (KiB) sampled during each round. */
  roundPeaks: number[];
  end: ProcStats;
}

export interface LeakReport {
  requests: { keepAlive: number; fresh: number; aborted: number; failed: number; errors: string[] };
  seconds: number;
  rounds: number;
  processes: ProcFigures[];
  /** After the load: connections still open on lb's listeners and requests in flight, summed over workers. */
  openConnections: number;
  inflight: number;
}

export interface LeakOptions {
  /** Totals over all rounds. */
  keepAlive: number;
  fresh: number;
  aborted: number;
  /** The load is sent in this many equal rounds, lb idle and measured after each (default 2): a leak grows round after round, V8's heap sizing levels off after the first. */
  rounds?: number;
  /** autocannon connections for the kept-alive share. */
  connections?: number;
  log?: (line: string) => void;
}

/** Runs the whole leak check: upstream, lb, warm-up, baseline, load, settle, figures; stops lb at the end. */
export async function leakRun(o: LeakOptions): Promise<LeakReport> {
  const { createRequire } = await import('node:module');
  const autocannon = createRequire(import.meta.url)('autocannon') as (opts: Record<string, unknown>) => Promise<{ requests: { total: number }; non2xx: number; errors: number; timeouts: number; '2xx': number }>;
  const { startLb, freePort, waitFor, admin } = await import('./lb.js');
  const log = o.log ?? (() => {});

  // The upstream: answers at once, /slow after 50 ms, /upload after reading the body. Counts open sockets.
  let upstreamOpen = 0;
  const upstream = http.createServer((req, res) => {
    if (req.url === '/slow') {
      const timer = setTimeout(() => res.end('slow'), 50);
      res.once('close', () => clearTimeout(timer));
      return;
    }
    req.resume();
    req.once('end', () => res.end('ok'));
  });
  // Short, so that the keep-alive pools of lb to it drain quickly once the load stops (lb follows the Keep-Alive hint).
  upstream.keepAliveTimeout = 2_000;
  upstream.on('connection', (s: net.Socket) => {
    upstreamOpen++;
    s.once('close', () => upstreamOpen--);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as net.AddressInfo).port;
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, workers: 2, upstreams: [upPort] }), [port]);
  const primary = lb.proc.pid!;
  const pids = (): Array<{ role: string; pid: number }> => [{ role: 'primary', pid: primary }, ...childPids(primary).map((pid, i) => ({ role: `worker ${i + 1}`, pid }))];

  const failures: string[] = [];
  let failed = 0;
  const fail = (why: string): void => {
    failed++;
    if (failures.length < 10) failures.push(why);
  };
  const keepAliveLoad = async (amount: number): Promise<number> => {
    if (amount <= 0) return 0;
    const r = await autocannon({ url: `http://127.0.0.1:${port}/`, connections: o.connections ?? 32, amount, timeout: 10 });
    const bad = r.non2xx + r.errors + r.timeouts;
    if (bad > 0) fail(`autocannon: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
    return r['2xx'];
  };
  const freshLoad = async (amount: number, concurrency = 16): Promise<number> => {
    let next = 0;
    let ok = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < amount) {
          next++;
          try {
            const r = await timedGet(port, '/', false, 10_000);
            if (r.status === 200) ok++;
            else fail(`new-connection request: status ${r.status}`);
          } catch (err) {
            fail(`new-connection request: ${(err as Error).message}`);
          }
        }
      }),
    );
    return ok;
  };
  const abortOne = (i: number): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.once('close', () => resolve());
      s.setTimeout(10_000, () => s.destroy());
      s.once('connect', () => {
        switch (i % 4) {
          case 0: // the response is on its way (upstream waits 50 ms): the client gives up after 10 ms
            s.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n');
            setTimeout(() => s.destroy(), 10);
            break;
          case 1: // an upload cut after 1000 of 100000 bytes
            s.write(`POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n${'u'.repeat(1000)}`);
            setTimeout(() => s.destroy(), 5);
            break;
          case 2: // half a request head
            s.write('GET / HTTP/1.1\r\nHost:');
            setImmediate(() => s.destroy());
            break;
          default: // a whole request, and gone before the answer
            s.end('GET / HTTP/1.1\r\nHost: h\r\n\r\n');
            s.destroy();
        }
      });
    });
  const abortedLoad = async (amount: number, concurrency = 16): Promise<number> => {
    let next = 0;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < amount) await abortOne(next++);
    }));
    return amount;
  };
  /** Idle: no client connection open in lb, nothing in flight, and the upstream keep-alive pool drained. */
  const settle = async (what: string): Promise<{ connections: number; inflight: number }> => {
    let last = { connections: -1, inflight: -1 };
    await waitFor(
      async () => {
        const r = await admin(lb.socket, { cmd: 'inflight' });
        const inflight = Object.values(r.result.inflight as Record<string, Record<string, number>>).flatMap((p) => Object.values(p)).reduce((a, b) => a + b, 0);
        last = { connections: r.result.connections as number, inflight };
        return last.connections === 0 && inflight === 0 && upstreamOpen === 0;
      },
      30_000,
      `${what}: lb idle (last: ${JSON.stringify(last)}, upstream sockets ${upstreamOpen})`,
      250,
    );
    return last;
  };

  try {
    log('warm-up');
    await keepAliveLoad(Math.min(5000, Math.max(1000, o.keepAlive / 20)));
    await freshLoad(Math.min(1000, Math.max(200, o.fresh / 20)));
    await abortedLoad(Math.min(500, Math.max(100, o.aborted / 20)));
    await settle('after warm-up');
    const start = new Map(pids().map(({ role, pid }) => [pid, { role, stats: procStats(pid)! }]));
    const peak = new Map([...start].map(([pid, s]) => [pid, { rssKiB: s.stats.rssKiB, fds: s.stats.fds }]));
    const roundPeaks = new Map([...start.keys()].map((pid) => [pid, [] as number[]]));
    const sample = (): void => {
      for (const { pid } of pids()) {
        const s = procStats(pid);
        const p = peak.get(pid);
        const r = roundPeaks.get(pid);
        if (s && p && r) {
          p.rssKiB = Math.max(p.rssKiB, s.rssKiB);
          p.fds = Math.max(p.fds, s.fds);
          r[r.length - 1] = Math.max(r[r.length - 1] ?? 0, s.rssKiB);
        }
      }
    };
    const sampler = setInterval(sample, 200);
    const rounds = o.rounds ?? 2;
    const after = new Map([...start.keys()].map((pid) => [pid, [] as ProcStats[]]));
    const sent = { keepAlive: 0, fresh: 0, aborted: 0 };
    let seconds = 0;
    let idle = { connections: 0, inflight: 0 };
    for (let i = 0; i < rounds; i++) {
      const share = (n: number): number => Math.floor(n / rounds) + (i < n % rounds ? 1 : 0);
      log(`round ${i + 1}/${rounds}: ${share(o.keepAlive)} kept-alive, ${share(o.fresh)} new-connection, ${share(o.aborted)} aborted`);
      for (const r of roundPeaks.values()) r.push(0);
      const t0 = performance.now();
      const [k, f, a] = await Promise.all([keepAliveLoad(share(o.keepAlive)), freshLoad(share(o.fresh)), abortedLoad(share(o.aborted))]);
      seconds += (performance.now() - t0) / 1000;
      sent.keepAlive += k;
      sent.fresh += f;
      sent.aborted += a;
      sample();
      idle = await settle(`after round ${i + 1}`);
      for (const [pid, list] of after) list.push(procStats(pid) ?? { pid, rssKiB: 0, fds: 0 });
      const now = [...after].map(([pid, list]) => `${start.get(pid)!.role} ${(list[list.length - 1]!.rssKiB / 1024).toFixed(1)} MB/${list[list.length - 1]!.fds} fds`);
      log(`round ${i + 1} done (${seconds.toFixed(1)} s of load so far); idle: ${now.join(', ')}`);
    }
    clearInterval(sampler);
    const processes: ProcFigures[] = [...start].map(([pid, s]) => {
      const list = after.get(pid)!;
      return { role: s.role, pid, start: s.stats, peak: peak.get(pid)!, rounds: list, roundPeaks: roundPeaks.get(pid)!, end: list[list.length - 1]! };
    });
    return { requests: { ...sent, failed, errors: failures }, seconds, rounds, processes, openConnections: idle.connections, inflight: idle.inflight };
  } finally {
    await lb.stop();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
  }
}

/** The figures as a table, one line per process. */
export function formatLeakReport(r: LeakReport): string {
  const mb = (k: number): string => `${(k / 1024).toFixed(1)} MB`;
  return [
    `requests: ${r.requests.keepAlive} kept-alive + ${r.requests.fresh} new-connection + ${r.requests.aborted} aborted in ${r.seconds.toFixed(1)} s; ${r.requests.failed} failed`,
    ...r.processes.map(
      (p) =>
        `${p.role.padEnd(9)} pid ${p.pid}: RSS start ${mb(p.start.rssKiB)}, peak ${mb(p.peak.rssKiB)}, peak per round ${p.roundPeaks.map(mb).join(' / ')}, ` +
        `idle after each round ${p.rounds.map((x) => mb(x.rssKiB)).join(' / ')}; ` +
        `fds start ${p.start.fds}, peak ${p.peak.fds}, after each round ${p.rounds.map((x) => x.fds).join(' / ')}`,
    ),
    `after: ${r.openConnections} client connections open in lb, ${r.inflight} requests in flight`,
  ].join('\n');
}

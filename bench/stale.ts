// `lb bench stale` (npm run bench:stale): requests lost to kept-alive backend connections that the backend
// closed while idle (issue 14, item 4), for lb, HAProxy and NGINX under the same load.
//
// Rig: one backend (bench/stale-backend.ts) that closes each kept-alive connection after an idle time drawn
// uniform in 2-32 ms (or a fixed one), in front of it one proxy at a time: lb (1 worker, retries = 2),
// HAProxy (1 thread, retries 2, option redispatch; http-reuse safe, its default, and http-reuse always as
// a second row) and NGINX (1 worker, upstream keepalive 32, HTTP/1.1 to the upstream, proxy_next_upstream
// at its default "error timeout"). The load generator (raw sockets, in this process) keeps N client
// connections; each sends one request at a time after a think time drawn uniform in 0-40 ms, so that the
// proxy's idle backend connections are taken at every idle age, below and above the backend's close.
// GETs and POSTs (16-byte body) are shuffled into one queue that the connections share; every request has
// its own target, so the backend can tell a request it received twice.
//
// A failure: any status but 200, a reset, a client connection closed before a whole response, no response
// within 10 s. A client connection the proxy closes after a whole response (or while idle) is opened again
// and not counted. The backend counts the connections each proxy opened to it: lb sends a POST only on a
// connection idle for less than half the shortest idle close it has seen, which costs new connections.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { LbProcess, freePort, sleep, statusOf } from './scenarios.js';
import { startStaleBackend, type StaleBackendStats } from './stale-backend.js';
import { median, num, percentile, progress, Report, table } from './report.js';
import { commandExists, stopChild } from './upstream.js';

export interface StaleOptions {
  /** GETs per proxy; default 20,000. */
  gets?: number;
  /** POSTs per proxy; default 20,000. */
  posts?: number;
  /** Client connections; default 32. */
  connections?: number;
  /** Backend idle close, ms: [min, max] drawn uniform; min = max is fixed. Default [2, 32]. */
  idleMs?: [number, number];
  /** Client think time, ms, uniform; default [0, 40]. */
  thinkMs?: [number, number];
  /** Rows to run (default every one found installed): lb, haproxy-safe, haproxy-always, nginx. */
  proxies?: string[];
  command?: string;
  out?: string;
}

export const STALE_PROXIES = ['lb', 'haproxy-safe', 'haproxy-always', 'nginx'] as const;

export interface MethodCounts {
  total: number;
  ok: number;
  failed: number;
  /** Failures by kind: "status 502", "reset", "closed", "timeout", "connect". */
  kinds: Record<string, number>;
  /** Latency of every request of the method (failed ones too), ms. */
  p50Ms: number;
  p99Ms: number;
}

export interface StaleRow {
  proxy: string;
  label: string;
  get: MethodCounts;
  post: MethodCounts;
  backend: StaleBackendStats;
  /** Client connections opened again after the proxy closed one (not failures). */
  clientReconnects: number;
  /** The first 100 failures: method, kind, when (ms after the run started). */
  failures: Array<{ method: string; kind: string; atMs: number }>;
  seconds: number;
  loadAverage: number;
}

export interface StaleResults {
  gets: number;
  posts: number;
  connections: number;
  idleMs: [number, number];
  thinkMs: [number, number];
  rows: StaleRow[];
  skipped: Array<{ proxy: string; reason: string }>;
}

// ---- the load generator --------------------------------------------------------------------------------------

const POST_BODY = '0123456789abcdef';
const REQUEST_TIMEOUT_MS = 10_000;
const HEAD_END = Buffer.from('\r\n\r\n');

type Outcome = { ok: true } | { ok: false; kind: string };

/** One kept-alive client connection sending one request at a time. */
class Client {
  private sock: net.Socket | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private waiting: ((o: Outcome, keep: boolean) => void) | undefined;
  private error: string | undefined;
  reconnects = 0;
  private opened = 0;

  constructor(private readonly port: number) {}

  private connect(): Promise<net.Socket | undefined> {
    return new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1');
      s.setNoDelay(true);
      this.error = undefined;
      const onConnectError = (): void => resolve(undefined);
      s.once('error', onConnectError);
      s.once('connect', () => {
        s.off('error', onConnectError);
        s.on('error', (err: NodeJS.ErrnoException) => (this.error = err.code ?? err.message));
        s.on('data', (d: Buffer) => this.onData(d));
        s.on('close', () => this.onClose(s));
        resolve(s);
      });
    });
  }

  private onClose(s: net.Socket): void {
    if (this.sock !== s) return;
    this.sock = undefined;
    this.buf = Buffer.alloc(0);
    const w = this.waiting;
    this.waiting = undefined;
    if (w) w({ ok: false, kind: this.error === 'ECONNRESET' ? 'reset' : this.error ? this.error : 'closed' }, false);
  }

  /** Parses one response out of buf (Content-Length or chunked bodies; else read to the close). */
  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    if (!this.waiting) return;
    const end = this.buf.indexOf(HEAD_END);
    if (end < 0) return;
    const lines = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
    let length = -1;
    let chunked = false;
    let close = /^HTTP\/1\.0/.test(lines[0] ?? '');
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      const name = l.slice(0, c).trim().toLowerCase();
      const value = l.slice(c + 1).trim().toLowerCase();
      if (name === 'content-length') length = Number(value);
      else if (name === 'transfer-encoding') chunked = value.endsWith('chunked');
      else if (name === 'connection') close = value.split(',').some((t) => t.trim() === 'close') || (close && !value.includes('keep-alive'));
    }
    const body = this.buf.subarray(end + HEAD_END.length);
    let complete: boolean;
    if (chunked) complete = Buffer.concat([Buffer.from('\r\n'), body]).includes('\r\n0\r\n\r\n');
    else if (length >= 0) complete = body.length >= length;
    else return; // read to the close: onClose ends it (counted as 'closed' unless a 200, see below)
    if (!complete) return;
    this.buf = Buffer.alloc(0);
    const w = this.waiting;
    this.waiting = undefined;
    if (close) {
      const s = this.sock;
      this.sock = undefined;
      s?.destroy();
    }
    w(status === 200 ? { ok: true } : { ok: false, kind: `status ${status}` }, !close);
  }

  async request(bytes: Buffer): Promise<Outcome> {
    if (!this.sock || this.sock.destroyed) {
      if (this.opened > 0) this.reconnects++;
      this.opened++;
      this.sock = await this.connect();
      if (!this.sock) return { ok: false, kind: 'connect' };
    }
    const s = this.sock;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        this.sock = undefined;
        s.destroy();
        resolve({ ok: false, kind: 'timeout' });
      }, REQUEST_TIMEOUT_MS);
      this.waiting = (o) => {
        clearTimeout(timer);
        resolve(o);
      };
      s.write(bytes);
    });
  }

  close(): void {
    const s = this.sock;
    this.sock = undefined;
    s?.destroy();
  }
}

const uniform = ([lo, hi]: [number, number]): number => lo + Math.random() * (hi - lo);

async function drive(port: number, o: Required<Pick<StaleOptions, 'gets' | 'posts' | 'connections' | 'thinkMs'>>): Promise<Omit<StaleRow, 'proxy' | 'label' | 'backend' | 'loadAverage'>> {
  const queue: Array<'GET' | 'POST'> = [...Array<'GET'>(o.gets).fill('GET'), ...Array<'POST'>(o.posts).fill('POST')];
  for (let i = queue.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [queue[i], queue[j]] = [queue[j]!, queue[i]!];
  }
  const counts = { GET: mkCounts(), POST: mkCounts() };
  const failures: StaleRow['failures'] = [];
  const latencies = { GET: [] as number[], POST: [] as number[] };
  let next = 0;
  const clients = Array.from({ length: o.connections }, () => new Client(port));
  const t0 = performance.now();
  await Promise.all(
    clients.map(async (c, ci) => {
      for (;;) {
        await sleep(uniform(o.thinkMs));
        const n = next++;
        const method = queue[n];
        if (!method) break;
        const target = `/${method === 'GET' ? 'g' : 'p'}/${ci}-${n}`;
        const bytes =
          method === 'GET'
            ? `GET ${target} HTTP/1.1\r\nHost: bench\r\n\r\n`
            : `POST ${target} HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\nContent-Length: ${POST_BODY.length}\r\n\r\n${POST_BODY}`;
        const start = performance.now();
        const out = await c.request(Buffer.from(bytes, 'latin1'));
        latencies[method].push(performance.now() - start);
        const k = counts[method];
        k.total++;
        if (out.ok) k.ok++;
        else {
          k.failed++;
          k.kinds[out.kind] = (k.kinds[out.kind] ?? 0) + 1;
          if (failures.length < 100) failures.push({ method, kind: out.kind, atMs: Math.round(start - t0) });
        }
      }
      c.close();
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  for (const m of ['GET', 'POST'] as const) {
    const l = latencies[m].sort((a, b) => a - b);
    counts[m].p50Ms = median(l);
    counts[m].p99Ms = percentile(l, 99);
  }
  return {
    get: counts.GET,
    post: counts.POST,
    clientReconnects: clients.reduce((a, c) => a + c.reconnects, 0),
    failures,
    seconds,
  };
}

const mkCounts = (): MethodCounts => ({ total: 0, ok: 0, failed: 0, kinds: {}, p50Ms: NaN, p99Ms: NaN });

// ---- the proxies ---------------------------------------------------------------------------------------------

interface Running {
  port: number;
  stop: () => Promise<void>;
}

/** The binary from $PATH or Debian's /usr/sbin, or undefined. */
function findBinary(name: string): string | undefined {
  for (const d of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin']) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return commandExists(name) ? name : undefined;
}

/** The config each row runs, as it goes into the report. */
export function lbToml(port: number, backendPort: number, socket: string): string {
  return `# Generated by lb bench stale.
[daemon]
workers = 1
grace_period = "2s"

[admin]
socket = "${socket}"

[log]
level = "warn"
access = false

[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"

[pools.app]
algorithm = "round-robin"
retries = 2
backends = [ { name = "stale", address = "127.0.0.1:${backendPort}" } ]
`;
}

export function haproxyCfg(port: number, backendPort: number, reuse: 'safe' | 'always'): string {
  return `global
  nbthread 1
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  http-reuse ${reuse}
  retries 2
  option redispatch
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 10s
frontend fe
  bind 127.0.0.1:${port}
  default_backend be
backend be
  server s1 127.0.0.1:${backendPort}
`;
}

export function nginxConf(port: number, backendPort: number, dir: string): string {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return `daemon off;
master_process off;
worker_processes 1;
${root ? 'user root;\n' : ''}pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream be {
    server 127.0.0.1:${backendPort};
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

async function startChild(name: string, port: number, cmd: string, args: string[], logFile: string): Promise<Running> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = (): Promise<void> => stopChild(child, 3000);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
      throw new Error(`${name} exited (${child.exitCode}): ${(out + log).trim().split('\n').slice(-3).join(' ')}`);
    }
    if ((await statusOf(port)) === 200) return { port, stop };
    await sleep(100);
  }
  await stop();
  throw new Error(`${name} did not answer 200 on 127.0.0.1:${port} within 10 s`);
}

async function startProxy(proxy: string, backendPort: number, dir: string): Promise<Running> {
  const port = await freePort();
  if (proxy === 'lb') {
    const lb = await LbProcess.start(lbToml(port, backendPort, path.join(dir, 'admin.sock')), port, dir);
    return { port, stop: () => lb.stop() };
  }
  if (proxy.startsWith('haproxy')) {
    const bin = findBinary('haproxy');
    if (!bin) throw new Error('haproxy is not installed');
    const file = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(file, haproxyCfg(port, backendPort, proxy === 'haproxy-always' ? 'always' : 'safe'));
    return startChild(proxy, port, bin, ['-db', '-f', file], file);
  }
  const bin = findBinary('nginx');
  if (!bin) throw new Error('nginx is not installed');
  const file = path.join(dir, 'nginx.conf');
  fs.writeFileSync(file, nginxConf(port, backendPort, dir));
  return startChild(proxy, port, bin, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', file], path.join(dir, 'error.log'));
}

const LABELS: Record<string, string> = {
  lb: 'lb (retries = 2)',
  'haproxy-safe': 'HAProxy 2.x, http-reuse safe (default)',
  'haproxy-always': 'HAProxy 2.x, http-reuse always',
  nginx: 'NGINX, upstream keepalive 32',
};

function versionOf(proxy: string): string | undefined {
  const bin = findBinary(proxy.startsWith('haproxy') ? 'haproxy' : 'nginx');
  if (!bin || proxy === 'lb') return undefined;
  try {
    const r = spawnSync(bin, ['-v'], { encoding: 'utf8' });
    const text = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    return (/nginx\/([\d.]+)/.exec(text) ?? /HAProxy version ([\d.]+)/.exec(text))?.[1];
  } catch {
    return undefined;
  }
}

// ---- the run -------------------------------------------------------------------------------------------------

export async function runStale(opts: StaleOptions = {}): Promise<StaleResults> {
  const o = {
    gets: opts.gets ?? 20_000,
    posts: opts.posts ?? 20_000,
    connections: opts.connections ?? 32,
    idleMs: opts.idleMs ?? ([2, 32] as [number, number]),
    thinkMs: opts.thinkMs ?? ([0, 40] as [number, number]),
  };
  const proxies = opts.proxies ?? [...STALE_PROXIES];
  const results: StaleResults = { ...o, rows: [], skipped: [] };
  const backend = await startStaleBackend({ minMs: o.idleMs[0], maxMs: o.idleMs[1] });
  try {
    for (const proxy of proxies) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lb-bench-stale-${proxy}-`));
      // NGINX's unprivileged workers (when not run as root) read their temp folders here.
      fs.chmodSync(dir, 0o755);
      let running: Running;
      try {
        running = await startProxy(proxy, backend.port, dir);
      } catch (err) {
        const reason = (err as Error).message;
        progress('stale', `${proxy}: skipped (${reason})`);
        results.skipped.push({ proxy, reason });
        fs.rmSync(dir, { recursive: true, force: true });
        continue;
      }
      const version = versionOf(proxy);
      const label = (LABELS[proxy] ?? proxy).replace('2.x', version ?? '2.x').replace('NGINX', version ? `NGINX ${version}` : 'NGINX');
      progress('stale', `${label}: ${num(o.gets)} GETs and ${num(o.posts)} POSTs over ${o.connections} connections`);
      // Idle backend connections from the readiness probe close on their own before the run.
      await sleep(Math.min(o.idleMs[1] + 50, 500));
      backend.start();
      const loadAverage = Math.round((os.loadavg()[0] ?? 0) * 100) / 100;
      try {
        const r = await drive(running.port, o);
        const stats = await backend.stats();
        const row: StaleRow = { proxy, label, ...r, backend: stats, loadAverage };
        results.rows.push(row);
        progress('stale', `${label}: GET ${r.get.failed}/${r.get.total} failed, POST ${r.post.failed}/${r.post.total} failed, ${stats.connections} backend connections, ${r.seconds.toFixed(1)} s`);
      } finally {
        await running.stop();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await backend.stop();
  }
  if (opts.out) {
    const readme = staleReport(results, opts.command).write(opts.out, results);
    progress('stale', `report: ${readme}`);
  }
  return results;
}

// ---- the report ----------------------------------------------------------------------------------------------

const percent = (n: number, total: number): string => (total > 0 ? `${((100 * n) / total).toFixed(n > 0 && (100 * n) / total < 0.01 ? 3 : 2)} %` : '–');
const kinds = (k: MethodCounts): string =>
  Object.entries(k.kinds)
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${kind}: ${num(n)}`)
    .join(', ') || '–';

export function summaryTable(r: StaleResults): string {
  return table(
    ['proxy', 'GET failed', 'GET %', 'POST failed', 'POST %', 'backend connections', 'per 1,000 requests'],
    r.rows.map((row) => {
      const requests = row.get.total + row.post.total;
      return [
        row.label,
        `${num(row.get.failed)} / ${num(row.get.total)}`,
        percent(row.get.failed, row.get.total),
        `${num(row.post.failed)} / ${num(row.post.total)}`,
        percent(row.post.failed, row.post.total),
        num(row.backend.connections),
        num((1000 * row.backend.connections) / Math.max(1, requests), 1),
      ];
    }),
  );
}

export function staleReport(r: StaleResults, command?: string): Report {
  const rep = new Report('lb bench stale: kept-alive backend connections the backend closed while idle');
  if (command) rep.command = command;
  const idle = r.idleMs[0] === r.idleMs[1] ? `after ${r.idleMs[0]} ms idle (fixed)` : `after an idle time drawn uniform in ${r.idleMs[0]}-${r.idleMs[1]} ms, anew after every response`;
  rep.add(
    `One backend closes each kept-alive connection ${idle}; it answers every request 200 at once. ` +
      `In front of it, one proxy at a time. ${r.connections} kept-alive client connections each send one request at a time after a think time drawn uniform in ` +
      `${r.thinkMs[0]}-${r.thinkMs[1]} ms, so that the proxies reuse idle backend connections at every idle age; ${num(r.gets)} GETs and ${num(r.posts)} POSTs ` +
      `(16-byte body), shuffled, per proxy. A failure is any status but 200, a reset, or a client connection closed before a whole response ` +
      `(a client connection closed after a response is opened again and not counted).`,
    '## Failures',
    summaryTable(r),
    '"backend connections": the connections each proxy opened to the backend during its run; the cost of not sending a request on a connection that may be closing.',
    '## Details',
    table(
      ['proxy', 'GET failures by kind', 'POST failures by kind', 'backend idle closes', 'received twice (GET / POST)', 'client reconnects', 'GET p50 / p99 ms', 'POST p50 / p99 ms', 'seconds', 'load avg'],
      r.rows.map((row) => [
        row.label,
        kinds(row.get),
        kinds(row.post),
        num(row.backend.idleCloses),
        `${num(row.backend.duplicates.GET ?? 0)} / ${num(row.backend.duplicates.POST ?? 0)}`,
        num(row.clientReconnects),
        `${row.get.p50Ms.toFixed(2)} / ${row.get.p99Ms.toFixed(2)}`,
        `${row.post.p50Ms.toFixed(2)} / ${row.post.p99Ms.toFixed(2)}`,
        row.seconds.toFixed(1),
        String(row.loadAverage),
      ]),
    ),
    '"received twice": requests the backend parsed more than once. It closes only connections with nothing unread, so a request sent again after a close was never parsed the first time: this stays 0 unless a proxy duplicates requests. ' +
      '"client reconnects": client connections the proxy closed after a response or while idle, opened again, not failures. "load avg": the machine\'s 1-minute load average when the row started. ' +
      'results.json lists, per row, the first 100 failures with the time each request was sent (ms after the row started).',
  );
  if (r.skipped.length) rep.add('## Skipped', r.skipped.map((s) => `- ${s.proxy}: ${s.reason}`).join('\n'));
  rep.add(
    '## Configurations',
    'lb: `node bin/lb.js run -c lb.toml`, 1 worker:',
    '```toml\n' + lbToml(0, 0, 'admin.sock').replace(/127\.0\.0\.1:0/g, '127.0.0.1:PORT') + '```',
    'HAProxy (`haproxy -db -f haproxy.cfg`; the second row has `http-reuse always`):',
    '```\n' + haproxyCfg(0, 0, 'safe').replace(/127\.0\.0\.1:0/g, '127.0.0.1:PORT') + '```',
    'NGINX (`nginx -p DIR -c nginx.conf`, no master process; temp paths in DIR):',
    '```nginx\n' + nginxConf(0, 0, 'DIR').replace(/127\.0\.0\.1:0/g, '127.0.0.1:PORT') + '```',
  );
  return rep;
}

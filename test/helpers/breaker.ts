// Shared by the circuit-breaking tests (test/breaker-*.e2e.test.ts) and bench/queueing.ts: backends that
// count what reaches them, an open-loop client, /metrics scraping and HAProxy started on free ports.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { connectOnce, get, startUpstream, tmpdir, waitFor, type Upstream } from './lb.js';

/** An upstream that answers `status` after `delayMs`, counting hits and the most requests it held at once. */
export interface CountingUpstream extends Upstream {
  active: number;
  maxActive: number;
  status: number;
  delayMs: number;
}

export async function countingUpstream(name: string, opts: { delayMs?: number; status?: number } = {}): Promise<CountingUpstream> {
  const state = { active: 0, maxActive: 0, status: opts.status ?? 200, delayMs: opts.delayMs ?? 0 };
  const u = await startUpstream(name, (_req, res) => {
    state.active++;
    if (state.active > state.maxActive) state.maxActive = state.active;
    const answer = (): void => {
      state.active--;
      res.writeHead(state.status, { 'content-type': 'text/plain', 'x-upstream': name });
      res.end(name);
    };
    if (state.delayMs > 0) setTimeout(answer, state.delayMs);
    else answer();
  });
  return Object.defineProperties(u, {
    active: { get: () => state.active },
    maxActive: { get: () => state.maxActive, set: (v: number) => (state.maxActive = v) },
    status: { get: () => state.status, set: (v: number) => (state.status = v) },
    delayMs: { get: () => state.delayMs, set: (v: number) => (state.delayMs = v) },
  }) as CountingUpstream;
}

export interface Shot {
  status: number;
  ms: number;
  body: string;
}

/**
 * Open-loop load: `rate` requests per second for `durationMs`, each on its own keep-alive-less connection,
 * whatever the answers take (arrivals do not wait for responses, as real clients behind a busy service).
 * Resolves when every request has its answer or error (status 0).
 */
export async function openLoop(port: number, opts: { rate: number; durationMs: number; path?: string }): Promise<Shot[]> {
  const total = Math.round((opts.rate * opts.durationMs) / 1000);
  const gap = 1000 / opts.rate;
  const shots: Array<Promise<Shot>> = [];
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + i * gap;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    const start = performance.now();
    shots.push(
      get(port, opts.path ?? '/').then(
        (r) => ({ status: r.status, ms: performance.now() - start, body: r.body }),
        () => ({ status: 0, ms: performance.now() - start, body: '' }),
      ),
    );
  }
  return Promise.all(shots);
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The text exposition of /metrics as samples. */
export async function scrape(port: number): Promise<Sample[]> {
  const r = await get(port, '/metrics');
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
  const out: Sample[] = [];
  for (const line of r.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const kv of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="([^"]*)"/g)) labels[kv[1]!] = kv[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export function sum(samples: Sample[], name: string, where: Record<string, string> = {}): number {
  let s = 0;
  for (const x of samples) if (x.name === name && Object.entries(where).every(([k, v]) => x.labels[k] === v)) s += x.value;
  return s;
}

/** HAProxy (Debian's /usr/sbin/haproxy) running `config` (with {{port}} filled in); stop() kills it by pid. */
export async function startHaproxy(port: number, config: string): Promise<{ proc: ChildProcess; stop(): Promise<void>; output(): string }> {
  const dir = tmpdir('lb-haproxy-');
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, config.replaceAll('{{port}}', String(port)));
  const bin = fs.existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : 'haproxy';
  const proc = spawn(bin, ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(
    async () => {
      if (gone) throw new Error(`haproxy exited: ${out}`);
      await connectOnce(port);
      return true;
    },
    15_000,
    'haproxy to listen',
    30,
  );
  return {
    proc,
    output: () => out,
    async stop() {
      if (!gone) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A request on a keep-alive connection of its own, answered when the server answers; `abort()` closes the
 * connection (a FIN), as a client that gives up does.
 */
export function hangingRequest(port: number, pathname = '/'): { abort(): void; done: Promise<number> } {
  let req: http.ClientRequest;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const done = new Promise<number>((resolve) => {
    req = http.request({ host: '127.0.0.1', port, path: pathname, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', () => resolve(0));
    req.end();
  }).finally(() => agent.destroy());
  return { abort: () => req.destroy(), done };
}

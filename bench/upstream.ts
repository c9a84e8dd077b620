// Simulated upstreams for the end-to-end parts (scenarios, overhead): one small node:http server per
// backend, each in its own child process so that its event loop is not the load generator's or lb's.
//
// A backend answers every request with 200 "hello world\n" (12 bytes, as the anchors' nginx upstreams do)
// after a latency drawn from its profile, or with 500 for a `failRate` share of requests, and counts what
// it served, which is where the scenario report's per-backend shares come from. With `dieAfterMs` it
// dies that long after `start()`: it closes its listener and destroys every open connection, so lb sees
// connection resets and refused connects, exactly as after a crash (the process stays only to report its
// counts). With `slots`, at most that many requests are served at once and the rest wait in line, first
// come first served (a backend with a fixed worker pool, whose latency grows once it is saturated).
//
// Latency profiles (`latencyMs` is the median in every profile):
//   constant   always latencyMs
//   uniform    uniform in [0.5, 1.5] x latencyMs
//   lognormal  latencyMs x exp(sigma x Z), Z standard normal (sigma default 1: p99 = 10.2 x median)
//   pareto     Pareto(xm, alpha) with xm = latencyMs / 2^(1/alpha), so the median is latencyMs (alpha
//              default 1.5: p99 = 13.6 x median)
// Every draw is capped at MAX_LATENCY_MS. Delays use setTimeout, whose resolution is about 1 ms; a latency
// of 0 answers at once.
//
// Parent/child protocol (IPC messages): child -> {t:'listening', port}; parent -> {t:'start'} (reset the
// counts, arm the death timer), {t:'stats'} -> {t:'stats', stats}. The child exits when the parent goes.

import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export type LatencyProfile = 'constant' | 'uniform' | 'lognormal' | 'pareto';
export const PROFILES: readonly LatencyProfile[] = ['constant', 'uniform', 'lognormal', 'pareto'];

/** Upper bound of any drawn latency, so that every request of a run ends in bounded time. */
export const MAX_LATENCY_MS = 2000;

export interface UpstreamSpec {
  name: string;
  /** Median latency in ms (see the profiles above). */
  latencyMs: number;
  profile: LatencyProfile;
  /** lognormal shape; default 1. */
  sigma?: number;
  /** pareto shape; default 1.5. */
  alpha?: number;
  /** Share of requests answered 500, 0..1; default 0. */
  failRate?: number;
  /** Dies this long after start(); default never. */
  dieAfterMs?: number;
  /** Requests served at once; default unlimited. */
  slots?: number;
  /** Fixed port on 127.0.0.1 (e.g. 19001 for the anchors' proxies); default any free port. */
  port?: number;
}

export interface UpstreamStats {
  /** Requests answered since start() (200 and 500 alike). */
  requests: number;
  /** Of those, answered 500 (failRate). */
  failed: number;
  /** True once the backend has died (dieAfterMs). */
  dead: boolean;
  /** Milliseconds after start() when it died. */
  diedAtMs?: number;
}

/** Draws a latency in ms from the spec's profile; `rng` returns uniform [0, 1). */
export function drawLatency(spec: UpstreamSpec, rng: () => number = Math.random): number {
  const m = spec.latencyMs;
  let v: number;
  switch (spec.profile) {
    case 'constant':
      v = m;
      break;
    case 'uniform':
      v = m * (0.5 + rng());
      break;
    case 'lognormal': {
      // Box-Muller; 1 - rng() is in (0, 1], so the log is finite.
      const z = Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng());
      v = m * Math.exp((spec.sigma ?? 1) * z);
      break;
    }
    case 'pareto': {
      const alpha = spec.alpha ?? 1.5;
      v = (m / 2 ** (1 / alpha)) * (1 - rng()) ** (-1 / alpha);
      break;
    }
  }
  return Math.min(MAX_LATENCY_MS, Math.max(0, v));
}

// ---- parent side -------------------------------------------------------------------------------------------

const CHILD_SCRIPT = fileURLToPath(import.meta.url);

/**
 * A child process that listens on 127.0.0.1 and keeps counts, with the IPC protocol above: it sends
 * {t:'listening', port} once, and answers {t:'start'} (reset) and {t:'stats'}. Shared by the simulated
 * upstreams and the stale bench's backend (bench/stale-backend.ts).
 */
export class ChildServer<S> {
  private waiters: Array<(s: S) => void> = [];

  private constructor(
    readonly what: string,
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    child.on('message', (m: { t: string; stats?: S }) => {
      if (m.t === 'stats' && m.stats) for (const w of this.waiters.splice(0)) w(m.stats);
    });
  }

  /**
   * Spawns `node script arg` and resolves once it listens. `cpu` pins it with taskset (when given and
   * taskset exists). Rejects after 10 s, or when the child exits first (e.g. its fixed port is taken).
   */
  static spawn<S>(what: string, script: string, arg: string, cpu?: number): Promise<ChildServer<S>> {
    const [cmd, args] = pinned(cpu, process.execPath, [script, arg]);
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`${what} did not listen within 10 s`));
      }, 10_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${what} exited (${code}) before listening: ${stderr.trim() || 'no message'}`));
      });
      child.once('message', (m: { t: string; port?: number }) => {
        if (m.t !== 'listening' || !m.port) return;
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve(new ChildServer<S>(what, m.port, child));
      });
    });
  }

  /** Resets the counts (and, for an upstream, arms the death timer); the measured run starts now. */
  start(): void {
    this.child.send({ t: 'start' });
  }

  /** The counts since start(). */
  stats(): Promise<S> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.what} did not report its counts`)), 5000);
      this.waiters.push((s) => {
        clearTimeout(timer);
        resolve(s);
      });
      this.child.send({ t: 'stats' });
    });
  }

  /** Ends the child (SIGTERM, then SIGKILL after 2 s) and resolves when it has exited. */
  stop(): Promise<void> {
    return stopChild(this.child, 2000);
  }
}

/** A running upstream child. */
export class Upstream {
  private constructor(
    readonly spec: UpstreamSpec,
    private readonly server: ChildServer<UpstreamStats>,
  ) {}

  get port(): number {
    return this.server.port;
  }

  /** Spawns the child and resolves once it listens on 127.0.0.1 (see ChildServer.spawn). */
  static async start(spec: UpstreamSpec, cpu?: number): Promise<Upstream> {
    return new Upstream(spec, await ChildServer.spawn<UpstreamStats>(`upstream ${spec.name}`, CHILD_SCRIPT, JSON.stringify(spec), cpu));
  }

  /** Resets the counts and arms the death timer; the measured run starts now. */
  start(): void {
    this.server.start();
  }

  /** The counts since start(). */
  stats(): Promise<UpstreamStats> {
    return this.server.stats();
  }

  /** Ends the child (SIGTERM, then SIGKILL after 2 s) and resolves when it has exited. */
  stop(): Promise<void> {
    return this.server.stop();
  }
}

/** Starts every spec; on any failure stops those already started and rethrows. */
export async function startUpstreams(specs: readonly UpstreamSpec[], cpu?: number): Promise<Upstream[]> {
  const settled = await Promise.allSettled(specs.map((s) => Upstream.start(s, cpu)));
  const ok = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) {
    await Promise.all(ok.map((u) => u.stop()));
    throw failed.reason;
  }
  return ok;
}

/** Whether taskset(1) is on the PATH (checked once). */
let tasksetFound: boolean | undefined;
export function hasTaskset(): boolean {
  if (tasksetFound === undefined) tasksetFound = commandExists('taskset');
  return tasksetFound;
}

/** True when `name` is an executable on the PATH. */
export function commandExists(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    if (!dir) return false;
    try {
      accessSync(`${dir}/${name}`, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** `cmd args` wrapped in `taskset -c CPU` when a CPU is given and taskset exists. */
export function pinned(cpu: number | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpu !== undefined && hasTaskset() ? ['taskset', ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

// ---- child side ----------------------------------------------------------------------------------------------

const BODY = 'hello world\n';

function runChild(spec: UpstreamSpec): void {
  let stats: UpstreamStats = { requests: 0, failed: 0, dead: false };
  let startedAt = Date.now();
  let deathTimer: NodeJS.Timeout | undefined;
  const sockets = new Set<Socket>();
  const slots = spec.slots && spec.slots > 0 ? spec.slots : Infinity;
  let busy = 0;
  const line: Array<() => void> = [];

  const answer = (res: http.ServerResponse, fail: boolean): void => {
    stats.requests++;
    if (fail) stats.failed++;
    res.writeHead(fail ? 500 : 200, { 'content-type': 'text/plain', 'content-length': BODY.length, 'x-backend': spec.name });
    res.end(BODY);
  };
  /** Serves one request in a slot; the next one waiting takes the slot when it is done. */
  const serve = (res: http.ServerResponse): void => {
    busy++;
    const fail = Math.random() < (spec.failRate ?? 0);
    const done = (): void => {
      busy--;
      if (!res.destroyed) answer(res, fail);
      line.shift()?.();
    };
    const ms = drawLatency(spec);
    if (ms <= 0) done();
    else setTimeout(done, ms);
  };

  const server = http.createServer({ keepAlive: true }, (req, res) => {
    req.resume();
    if (busy < slots) serve(res);
    else line.push(() => serve(res));
  });
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 0;
  server.requestTimeout = 0;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  const die = (): void => {
    stats = { ...stats, dead: true, diedAtMs: Date.now() - startedAt };
    server.close();
    for (const s of sockets) s.destroy();
    line.length = 0;
  };

  process.on('message', (m: { t: string }) => {
    if (m.t === 'start') {
      if (stats.dead) return;
      stats = { requests: 0, failed: 0, dead: false };
      startedAt = Date.now();
      if (deathTimer) clearTimeout(deathTimer);
      if (spec.dieAfterMs !== undefined) deathTimer = setTimeout(die, spec.dieAfterMs);
    } else if (m.t === 'stats') {
      process.send?.({ t: 'stats', stats });
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));

  server.on('error', (err: NodeJS.ErrnoException) => {
    process.stderr.write(`upstream ${spec.name}: cannot listen on 127.0.0.1:${spec.port ?? 0}: ${err.code ?? err.message}\n`);
    process.exit(1);
  });
  server.listen(spec.port ?? 0, '127.0.0.1', () => {
    const addr = server.address();
    process.send?.({ t: 'listening', port: typeof addr === 'object' && addr ? addr.port : 0 });
  });
}

if (process.argv[1] === CHILD_SCRIPT && process.send) runChild(JSON.parse(process.argv[2] ?? '{}') as UpstreamSpec);

// The load generator of the end-to-end parts: autocannon (programmatic API) in a child process of its own,
// so that its event loop does not share a thread with the harness, the upstreams or lb.
//
// Two modes: fixed concurrency (`connections` connections, each with one request outstanding: a closed
// loop) and fixed rate (`rate` requests/s over all connections: autocannon's overallRate). Latency is
// measured per response, whatever its status, with sub-millisecond resolution (autocannon's own histogram
// keeps whole milliseconds and only 2xx responses), from the request write to the end of the response.
//
// Every request carries a hash-key header (`x-user-id`, `keys` distinct values, cycled per connection),
// the same for every algorithm, so that key-based algorithms spread the load as they would in production
// (a single client IP would pin every request to one backend).
//
// Safety bounds: the target must be http://127.0.0.1; a run lasts at most MAX_DURATION_MS; connections
// and rate are capped.

import { fork, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { percentile } from './report.js';
import { pinned, stopChild } from './upstream.js';

export const MAX_DURATION_MS = 300_000;
export const MAX_CONNECTIONS = 1024;
export const MAX_RATE = 200_000;
/** The header carrying the hash key; scenario pools use `hash_key = "header:x-user-id"`. */
export const KEY_HEADER = 'x-user-id';

export interface LoadOptions {
  /** http://127.0.0.1:PORT/PATH */
  url: string;
  connections: number;
  durationMs: number;
  /** Fixed-rate mode: requests per second over all connections. Absent: fixed concurrency. */
  rate?: number;
  /** Distinct hash keys sent in KEY_HEADER; default 1000. */
  keys?: number;
  /** Per-request timeout; default 10 s. */
  timeoutMs?: number;
}

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  /** Responses received (any status). */
  responses: number;
  durationSec: number;
  /** Responses per second. */
  rps: number;
  /** Milliseconds, over every response. */
  latency: Latency;
  /** Responses whose status is not 2xx. */
  non2xx: number;
  /** Connection errors and resets (requests that got no response), timeouts included. */
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
}

/** Rejects options outside the safety bounds (see the header). */
export function checkLoadOptions(o: LoadOptions): void {
  const u = new URL(o.url);
  if (u.protocol !== 'http:' || u.hostname !== '127.0.0.1') throw new Error(`load goes to http://127.0.0.1 only, got ${o.url}`);
  if (!(o.durationMs > 0 && o.durationMs <= MAX_DURATION_MS)) throw new Error(`duration must be in (0, ${MAX_DURATION_MS}] ms`);
  if (!(Number.isInteger(o.connections) && o.connections >= 1 && o.connections <= MAX_CONNECTIONS)) {
    throw new Error(`connections must be an integer in 1..${MAX_CONNECTIONS}`);
  }
  if (o.rate !== undefined && !(o.rate >= 1 && o.rate <= MAX_RATE)) throw new Error(`rate must be in 1..${MAX_RATE} req/s`);
}

// ---- parent side ---------------------------------------------------------------------------------------------

const CHILD_SCRIPT = fileURLToPath(import.meta.url);

/** A load-generator child; runs one load at a time. */
export class LoadGenerator {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: LoadResult) => void; reject: (e: Error) => void }>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { t: string; id: number; result?: LoadResult; message?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.t === 'result' && m.result) p.resolve(m.result);
      else p.reject(new Error(`load generator: ${m.message ?? 'failed'}`));
    });
    child.on('exit', (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`load generator exited (${code})`));
      this.pending.clear();
    });
  }

  /** Starts the child, pinned to `cpu` with taskset when given (and taskset exists). */
  static start(cpu?: number): LoadGenerator {
    if (cpu === undefined) return new LoadGenerator(fork(CHILD_SCRIPT, ['--child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const [cmd, args] = pinned(cpu, process.execPath, [CHILD_SCRIPT, '--child']);
    return new LoadGenerator(spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  run(opts: LoadOptions): Promise<LoadResult> {
    checkLoadOptions(opts);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ t: 'run', id, opts });
    });
  }

  stop(): Promise<void> {
    return stopChild(this.child, 2000);
  }
}

// ---- child side ------------------------------------------------------------------------------------------------

interface AutocannonInstance {
  on(event: 'response', fn: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void): void;
  on(event: 'reqError', fn: (err: Error) => void): void;
}
type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, result: Record<string, unknown>) => void) => AutocannonInstance;

async function runLoad(o: LoadOptions): Promise<LoadResult> {
  checkLoadOptions(o);
  const require = createRequire(import.meta.url);
  const autocannon = require('autocannon') as Autocannon;
  const keys = o.keys ?? 1000;
  const requests = Array.from({ length: keys }, (_, i) => ({ method: 'GET', headers: { [KEY_HEADER]: `user-${i}` } }));
  let samples = new Float64Array(1 << 16);
  let count = 0;
  const statusCodes: Record<string, number> = {};
  let non2xx = 0;
  const started = process.hrtime.bigint();
  const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const inst = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationMs / 1000,
        timeout: (o.timeoutMs ?? 10_000) / 1000,
        requests,
        ...(o.rate !== undefined ? { overallRate: o.rate } : {}),
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on('response', (_client, statusCode, _bytes, responseTimeMs) => {
      if (count === samples.length) {
        const bigger = new Float64Array(samples.length * 2);
        bigger.set(samples);
        samples = bigger;
      }
      samples[count++] = responseTimeMs;
      statusCodes[statusCode] = (statusCodes[statusCode] ?? 0) + 1;
      if (statusCode < 200 || statusCode > 299) non2xx++;
    });
  });
  const durationSec = Number(process.hrtime.bigint() - started) / 1e9;
  const sorted = samples.subarray(0, count).sort();
  let sum = 0;
  for (let i = 0; i < count; i++) sum += sorted[i]!;
  return {
    responses: count,
    durationSec,
    rps: count / durationSec,
    latency: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: count ? sorted[count - 1]! : NaN,
      mean: count ? sum / count : NaN,
    },
    non2xx,
    errors: Number(result['errors'] ?? 0),
    timeouts: Number(result['timeouts'] ?? 0),
    statusCodes,
  };
}

if (process.argv[1] === CHILD_SCRIPT && process.argv[2] === '--child' && process.send) {
  process.on('message', (m: { t: string; id: number; opts: LoadOptions }) => {
    if (m.t !== 'run') return;
    runLoad(m.opts).then(
      (result) => process.send?.({ t: 'result', id: m.id, result }),
      (err: unknown) => process.send?.({ t: 'error', id: m.id, message: err instanceof Error ? err.message : String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}

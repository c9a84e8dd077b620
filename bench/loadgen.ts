// The load generator of the end-to-end parts: autocannon (programmatic API) in a child process of its own,
// so that its event loop does not share a thread with the harness, the upstreams or lb.
//
// Two modes. Fixed concurrency: autocannon, `connections` connections each with one request outstanding (a
// closed loop); latency per response, whatever its status, with sub-millisecond resolution (autocannon's
// own histogram keeps whole milliseconds and only 2xx responses), from the request write to the end of the
// response. Fixed rate: an open loop of our own (node:http, keep-alive, at most `connections` sockets):
// send times drawn in advance from a Poisson or bursty process (bench/sim-model.ts arrivalTimes), and
// latency measured from each request's intended send time, so a request that waits for a free connection,
// or is sent late because the generator fell behind, counts its whole wait (no coordinated omission: Gil
// Tene, "How NOT to Measure Latency"). The achieved rate is reported next to the target.
//
// Every request carries a hash-key header (`x-user-id`) drawn per request from a seeded distribution:
// uniform or Zipf over `keys` keys, or the keys of a recorded trace in order. The result reports how many
// distinct keys were sent and the share of requests sent while another with the same key was in flight.
//
// Safety bounds: the target must be http://127.0.0.1; a run lasts at most MAX_DURATION_MS; connections
// and rate are capped.

import { fork, spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { percentile } from './report.js';
import { arrivalTimes, keySampler, mulberry32, type Bursts } from './sim-model.js';
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
  /** Fixed-rate mode (open loop): requests per second over all connections. Absent: fixed concurrency. */
  rate?: number;
  /** Fixed-rate mode: bursty arrivals with this mean rate; absent = Poisson. */
  bursts?: Bursts;
  /** Distinct hash keys sent in KEY_HEADER; default 1000. */
  keys?: number;
  /** How keys are drawn per request: uniform (default) or Zipf over `keys`. Ignored with traceKeys. */
  keyDistribution?: 'uniform' | 'zipf';
  /** Zipf exponent; default 1. */
  keyExponent?: number;
  /** Keys of a recorded trace, sent in order (looped). */
  traceKeys?: string[];
  /** Seed of the key and arrival draws; default 1. */
  seed?: number;
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
  /**
   * Fixed-rate mode: the target rate and requests sent. The achieved rate is `rps`, answers over the time
   * from the start to the last answer.
   */
  targetRate?: number;
  sent?: number;
  /** Distinct keys sent, and the share of requests sent while another with the same key was in flight. */
  keys: { distinct: number; sameKeyInFlight: number };
}

/** True when a fixed-rate run answered less than 95 % of its target rate (the result is not at that rate). */
export function rateShort(r: LoadResult): boolean {
  return r.targetRate !== undefined && r.rps < 0.95 * r.targetRate;
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

/** Per-request keys, and the counts behind LoadResult.keys. */
class Keys {
  private readonly draw: () => string;
  private readonly inflight = new Map<string, number>();
  private readonly seen = new Set<string>();
  private sent = 0;
  private overlapping = 0;

  constructor(o: LoadOptions) {
    const rng = mulberry32(o.seed ?? 1);
    const trace = o.traceKeys;
    if (trace && trace.length > 0) {
      let i = 0;
      this.draw = () => trace[i++ % trace.length]!;
    } else {
      const spec = { distribution: o.keyDistribution ?? 'uniform', count: o.keys ?? 1000, ...(o.keyExponent !== undefined ? { exponent: o.keyExponent } : {}) };
      const sample = keySampler(spec, rng);
      this.draw = () => sample()!;
    }
  }

  /** The next key, counted as in flight until `done(key)`. */
  next(): string {
    const key = this.draw();
    const c = this.inflight.get(key) ?? 0;
    this.sent++;
    if (c > 0) this.overlapping++;
    this.seen.add(key);
    this.inflight.set(key, c + 1);
    return key;
  }

  done(key: string): void {
    const c = (this.inflight.get(key) ?? 1) - 1;
    if (c <= 0) this.inflight.delete(key);
    else this.inflight.set(key, c);
  }

  summary(): LoadResult['keys'] {
    return { distinct: this.seen.size, sameKeyInFlight: this.sent ? this.overlapping / this.sent : 0 };
  }
}

/** The answers of a run: latency samples in ms (growing) and status counts. */
class Samples {
  private a = new Float64Array(1 << 16);
  count = 0;
  readonly statusCodes: Record<string, number> = {};
  non2xx = 0;
  add(v: number, status: number): void {
    if (this.count === this.a.length) {
      const bigger = new Float64Array(this.a.length * 2);
      bigger.set(this.a);
      this.a = bigger;
    }
    this.a[this.count++] = v;
    this.statusCodes[status] = (this.statusCodes[status] ?? 0) + 1;
    if (status < 200 || status > 299) this.non2xx++;
  }

  /** The LoadResult of these answers over `durationSec`. */
  result(durationSec: number, errors: number, timeouts: number, keys: LoadResult['keys']): LoadResult {
    return { responses: this.count, durationSec, rps: this.count / durationSec, latency: this.latency(), non2xx: this.non2xx, errors, timeouts, statusCodes: this.statusCodes, keys };
  }
  latency(): Latency {
    const sorted = this.a.subarray(0, this.count).sort();
    let sum = 0;
    for (let i = 0; i < this.count; i++) sum += sorted[i]!;
    return {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: this.count ? sorted[this.count - 1]! : NaN,
      mean: this.count ? sum / this.count : NaN,
    };
  }
}

async function runLoad(o: LoadOptions): Promise<LoadResult> {
  checkLoadOptions(o);
  return o.rate !== undefined ? runOpenLoop(o, o.rate) : runClosedLoop(o);
}

/** Fixed concurrency: autocannon, one request outstanding per connection, a fresh key per request. */
async function runClosedLoop(o: LoadOptions): Promise<LoadResult> {
  const require = createRequire(import.meta.url);
  const autocannon = require('autocannon') as Autocannon;
  const keys = new Keys(o);
  // autocannon builds a connection's next request when the previous one is answered (or at its start), and
  // keeps `context` per connection until then: the key is drawn there and released at the response.
  const requests = [
    {
      method: 'GET',
      setupRequest: (req: { headers?: Record<string, string> }, context: { key?: string }) => {
        context.key = keys.next();
        return { ...req, headers: { ...req.headers, [KEY_HEADER]: context.key } };
      },
      onResponse: (_status: number, _body: unknown, context: { key?: string }) => {
        if (context.key !== undefined) keys.done(context.key);
      },
    },
  ];
  const samples = new Samples();
  const started = process.hrtime.bigint();
  const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const inst = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationMs / 1000,
        timeout: (o.timeoutMs ?? 10_000) / 1000,
        requests,
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    inst.on('response', (_client, statusCode, _bytes, responseTimeMs) => samples.add(responseTimeMs, statusCode));
  });
  const durationSec = Number(process.hrtime.bigint() - started) / 1e9;
  return samples.result(durationSec, Number(result['errors'] ?? 0), Number(result['timeouts'] ?? 0), keys.summary());
}

/**
 * Fixed rate, open loop: send times from arrivalTimes (seeded), each request issued at its time whatever
 * is still in flight, through a keep-alive agent of at most `connections` sockets (more requests wait in
 * the agent's queue). Latency runs from the intended send time to the end of the response. Requests still
 * unanswered `timeoutMs` after the last send time are counted as timeouts.
 */
async function runOpenLoop(o: LoadOptions, rate: number): Promise<LoadResult> {
  const u = new URL(o.url);
  const timeoutMs = o.timeoutMs ?? 10_000;
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.connections });
  const keys = new Keys(o);
  const next = arrivalTimes(rate / 1000, mulberry32((o.seed ?? 1) + 0x51ed), o.bursts);
  const samples = new Samples();
  let errors = 0;
  let timeouts = 0;
  let sent = 0;
  let pending = 0;
  let lastAnswer = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let due = next();
    let finishing = false;
    let deadline: NodeJS.Timeout | undefined;
    const maybeEnd = (): void => {
      if (finishing && pending === 0) {
        clearTimeout(deadline);
        resolve();
      }
    };
    const send = (intended: number): void => {
      const key = keys.next();
      sent++;
      pending++;
      let settled = false;
      const settle = (): void => {
        if (settled) return;
        settled = true;
        pending--;
        keys.done(key);
        maybeEnd();
      };
      const req = http.request({ agent, host: u.hostname, port: u.port, path: u.pathname + u.search, headers: { [KEY_HEADER]: key }, timeout: timeoutMs }, (res) => {
        res.resume();
        res.on('end', () => {
          lastAnswer = performance.now() - t0;
          samples.add(lastAnswer - intended, res.statusCode ?? 0);
          settle();
        });
        res.on('error', () => {
          errors++;
          settle();
        });
      });
      req.on('timeout', () => {
        timeouts++;
        req.destroy(new Error('timeout'));
      });
      req.on('error', () => {
        errors++;
        settle();
      });
      req.end();
    };
    const tick = (): void => {
      const now = performance.now() - t0;
      while (due <= now && due < o.durationMs) {
        send(due);
        due = next();
      }
      if (due >= o.durationMs) {
        finishing = true;
        deadline = setTimeout(() => {
          // Whatever is still unanswered counts as a timeout.
          timeouts += pending;
          errors += pending;
          pending = 0;
          agent.destroy();
          resolve();
        }, timeoutMs);
        maybeEnd();
        return;
      }
      setTimeout(tick, Math.max(0, due - now - 1));
    };
    tick();
  });
  agent.destroy();
  // The achieved rate: answers over the time from the start to the last answer (at least the send window),
  // so that a backlog answered after the window does not count as if answered within it.
  const durationSec = Math.max(o.durationMs, lastAnswer) / 1000;
  return { ...samples.result(durationSec, errors, timeouts, keys.summary()), targetRate: rate, sent };
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

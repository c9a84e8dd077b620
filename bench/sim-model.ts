// The random models shared by the simulator (bench/sim.ts) and the load generator (bench/loadgen.ts):
// seeded draws, service-time distributions, key distributions (uniform, Zipf, a recorded trace) and
// arrival processes (Poisson, bursty). Everything here is a pure function of its seed, so a simulation or a
// key sequence repeats exactly.

/** Mulberry32 (Tommy Ettinger, public domain): a small seeded PRNG, so simulations repeat exactly. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A standard normal draw (Box-Muller; one of the pair is dropped, which keeps the stream simple). */
export function normal(rng: () => number): number {
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** An exponential draw of mean 1. */
export function exponential(rng: () => number): number {
  return -Math.log(1 - rng());
}

export const SERVICE_DISTRIBUTIONS = ['constant', 'uniform', 'exp', 'lognormal', 'pareto'] as const;
export type ServiceDistribution = (typeof SERVICE_DISTRIBUTIONS)[number];

export interface ServiceTime {
  dist: ServiceDistribution;
  /** Mean service time in ms: every distribution is scaled so that its mean is this (capacity = slots / mean). */
  meanMs: number;
  /** lognormal shape (default 1). */
  sigma?: number;
  /** Pareto shape, > 1 so that the mean exists (default 1.5). */
  alpha?: number;
}

/**
 * A service-time draw whose expectation is `s.meanMs`: constant; uniform on [0.5, 1.5] x mean; exponential;
 * lognormal mean x e^(σZ − σ²/2); Pareto with scale mean x (α − 1) / α.
 */
export function drawService(s: ServiceTime, rng: () => number): number {
  switch (s.dist) {
    case 'constant':
      return s.meanMs;
    case 'uniform':
      return s.meanMs * (0.5 + rng());
    case 'exp':
      return s.meanMs * exponential(rng);
    case 'lognormal': {
      const sigma = s.sigma ?? 1;
      return s.meanMs * Math.exp(sigma * normal(rng) - (sigma * sigma) / 2);
    }
    case 'pareto': {
      const alpha = s.alpha ?? 1.5;
      return (s.meanMs * (alpha - 1)) / alpha / Math.pow(1 - rng(), 1 / alpha);
    }
  }
}

// ---- keys --------------------------------------------------------------------------------------------------

export const KEY_DISTRIBUTIONS = ['uniform', 'zipf', 'trace', 'none'] as const;
export type KeyDistribution = (typeof KEY_DISTRIBUTIONS)[number];

export interface KeySpec {
  distribution: KeyDistribution;
  /** Distinct keys (uniform, zipf). */
  count: number;
  /** Zipf exponent s: key of rank k (1-based) has probability k^-s / H(count, s). */
  exponent?: number;
}

/** The name of the key of rank k (0-based); a hash of it is what key-based algorithms see. */
export const keyName = (rank: number): string => `user-${rank}`;

/**
 * A key sampler: each call draws the next key. Uniform: every key of `count` equally likely. Zipf: by the
 * cumulative table (binary search, O(log count) per draw). None: no key (undefined).
 */
export function keySampler(spec: KeySpec, rng: () => number): () => string | undefined {
  if (spec.distribution === 'none') return () => undefined;
  if (spec.distribution === 'uniform') return () => keyName(Math.floor(rng() * spec.count));
  if (spec.distribution === 'zipf') {
    const cdf = zipfCdf(spec.count, spec.exponent ?? 1);
    return () => keyName(lowerBound(cdf, rng()));
  }
  throw new Error('trace keys come from the trace file');
}

/** Cumulative Zipf(s) probabilities over ranks 1..n, normalised so the last is 1. */
export function zipfCdf(n: number, s: number): Float64Array {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 0; k < n; k++) cdf[k] = sum += Math.pow(k + 1, -s);
  for (let k = 0; k < n; k++) cdf[k]! /= sum;
  cdf[n - 1] = 1;
  return cdf;
}

/** The first index whose value is >= x (a.length - 1 at most). */
function lowerBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// ---- traces --------------------------------------------------------------------------------------------------

export interface TraceEntry {
  /** Send time in ms from the trace's start. */
  atMs: number;
  key: string;
}

/**
 * A recorded trace: one request a line, `TIME_MS KEY` (space, tab or comma separated), times ascending from
 * any origin (shifted to start at 0); `#` starts a comment. Throws with the line number of a bad line.
 */
export function parseTrace(text: string, file = 'trace'): TraceEntry[] {
  const out: TraceEntry[] = [];
  let first: number | undefined;
  let last = -Infinity;
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) return;
    const [t, key, extra] = line.split(/[\s,]+/);
    const at = Number(t);
    if (!Number.isFinite(at) || key === undefined || extra !== undefined) {
      throw new Error(`${file}:${i + 1}: expected "TIME_MS KEY", got "${raw.trim()}"`);
    }
    if (at < last) throw new Error(`${file}:${i + 1}: times must not decrease (${at} after ${last})`);
    last = at;
    first ??= at;
    out.push({ atMs: at - first, key });
  });
  if (out.length === 0) throw new Error(`${file}: no requests`);
  return out;
}

// ---- arrivals ------------------------------------------------------------------------------------------------

export interface Bursts {
  /** Rate during a burst over the rate between bursts; > 1. */
  factor: number;
  /** Long-run share of the time spent in bursts, in (0, 1). */
  share: number;
  /** Mean length of one burst in ms (exponentially distributed; calm periods in proportion). */
  meanBurstMs: number;
}

/**
 * Interarrival gaps of an open loop with mean rate `ratePerMs`: Poisson (exponential gaps), or, with
 * `bursts`, a two-state Markov-modulated Poisson process whose long-run mean is the same rate: a calm rate
 * r and a burst rate factor x r, with share x factor + (1 - share) = rate / r. Returns a generator of
 * absolute send times from 0.
 */
export function arrivalTimes(ratePerMs: number, rng: () => number, bursts?: Bursts): () => number {
  let now = 0;
  if (!bursts) {
    return () => (now += exponential(rng) / ratePerMs);
  }
  const calm = ratePerMs / (bursts.share * bursts.factor + (1 - bursts.share));
  const meanCalmMs = (bursts.meanBurstMs * (1 - bursts.share)) / bursts.share;
  let inBurst = false;
  let switchAt = exponential(rng) * meanCalmMs;
  return () => {
    for (;;) {
      const rate = inBurst ? calm * bursts.factor : calm;
      const next = now + exponential(rng) / rate;
      if (next < switchAt) return (now = next);
      // Memorylessness: the draw past the switch is discarded and a new one starts at the switch.
      now = switchAt;
      inBurst = !inBurst;
      switchAt = now + exponential(rng) * (inBurst ? bursts.meanBurstMs : meanCalmMs);
    }
  };
}

// ---- event queue -------------------------------------------------------------------------------------------

/** A binary min-heap under `before` (a strict order: ties must be broken by the caller for determinism). */
export class MinHeap<T> {
  private readonly a: T[] = [];
  constructor(private readonly before: (x: T, y: T) => boolean) {}

  get size(): number {
    return this.a.length;
  }

  push(item: T): void {
    const { a, before } = this;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(a[i]!, a[p]!)) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }

  pop(): T | undefined {
    const { a, before } = this;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last !== undefined) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && before(a[l]!, a[m]!)) m = l;
        if (r < a.length && before(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}

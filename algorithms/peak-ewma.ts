// `peak-ewma`: latency-aware power of two choices, Finagle's peak-EWMA load metric
// (finagle-core/src/main/scala/com/twitter/finagle/loadbalancer/PeakEwma.scala; Linkerd's and tower's
// `PeakEwma` are the same idea; Mitzenmacher 2001 for the two choices).
//
// Each candidate keeps `cost`, an exponentially weighted moving average of its latencies that is
// peak-sensitive: a sample above the current cost replaces it at once; otherwise, after td ms since the
// last update, cost = cost * w + sample * (1 - w) with w = exp(-td / decay). Reading the cost first decays
// it toward 0 by the time elapsed (Finagle's observe(0) in `load`), so an idle backend's old latency is
// forgotten with time constant `decay` and it gets tried again. A pick draws two distinct usable candidates
// by weight (as power-of-two-choices, random.ts) and takes the one with the lower load, the first drawn on a
// tie:
//
//   load = cost * (inflight + 1) / weight, or, for a candidate with no latency yet (cost 0) and requests in
//   flight, PENALTY + inflight (Finagle's `Penalty`): unknown backends are tried once, then wait for their
//   first answer.
//
// Samples come from Picker.done (types.ts): http, the time to the end of the response; tcp, the connect
// time. A failed attempt's sample is taken as at least the current cost, so failing fast never makes a
// backend look faster (Finagle observes failures like answers; lb's passive checks eject failing backends).
// `inflight` is this process's count, as for every algorithm; the costs are per process too.
//
// The cost of a candidate lives with the candidate object (a WeakMap), not the Picker, so the rebuilds a
// weight change or slow start causes keep what was learned.
//
// Options: `decay` (a duration, default "10s", Finagle's default decayTime); `now` (programs only, e.g. a
// simulator's virtual clock: a function returning milliseconds; default performance.now).

import { performance } from 'node:perf_hooks';
import { tryParseDuration } from '../config/duration.js';
import { checkOptions } from './options.js';
import { bestOfTwo } from './power-of-two-choices.js';
import { WeightedSampler } from './random.js';
import type { Algorithm, Candidate, Outcome, Picker, PickContext, Usable } from './types.js';

/** Finagle's PeakEwma Penalty (Long.MaxValue >> 16): the load of a busy candidate with no latency yet. */
export const PENALTY = 2 ** 47;
export const DEFAULT_DECAY_MS = 10_000;

/** One candidate's peak-EWMA. */
export class PeakEwma {
  /** Milliseconds; 0 until the first sample. */
  cost = 0;
  private stamp: number;

  constructor(now: number) {
    this.stamp = now;
  }

  /** Folds in a latency sample taken at `now` (Finagle's observe). A sample of 0 only decays. */
  observe(sample: number, now: number, decayMs: number): void {
    const td = Math.max(now - this.stamp, 0);
    const w = Math.exp(-td / decayMs);
    if (sample > this.cost) this.cost = sample;
    else this.cost = this.cost * w + sample * (1 - w);
    this.stamp = now;
  }

  /** The load with `inflight` requests pending, decayed to `now`. */
  load(inflight: number, now: number, decayMs: number): number {
    this.observe(0, now, decayMs);
    return this.cost === 0 && inflight !== 0 ? PENALTY + inflight : this.cost * (inflight + 1);
  }
}

class PeakEwmaPicker<B extends Candidate> implements Picker<B> {
  private readonly sampler: WeightedSampler<B>;

  constructor(
    candidates: readonly B[],
    private readonly state: WeakMap<Candidate, PeakEwma>,
    private readonly decayMs: number,
    private readonly now: () => number,
  ) {
    this.sampler = new WeightedSampler(candidates);
  }

  private ewma(c: Candidate, now: number): PeakEwma {
    let e = this.state.get(c);
    if (!e) {
      e = new PeakEwma(now);
      this.state.set(c, e);
    }
    return e;
  }

  /** Load per unit of weight of the candidate at `j` in sampler.list, decayed to now. */
  private readonly load = (j: number): number => {
    const c = this.sampler.list[j]!;
    const now = this.now();
    return this.ewma(c, now).load(c.inflight, now, this.decayMs) / this.sampler.weight[j]!;
  };

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    return bestOfTwo(this.sampler, usable, this.load);
  }

  done(candidate: B, outcome: Outcome): void {
    const now = this.now();
    const e = this.ewma(candidate, now);
    const latency = Math.max(0, outcome.latencyMs);
    e.observe(outcome.ok ? latency : Math.max(latency, e.cost), now, this.decayMs);
  }
}

/** The `decay` option in milliseconds, or an error message. */
function decayOf(v: unknown): number | string {
  if (v === undefined) return DEFAULT_DECAY_MS;
  if (typeof v !== 'string') return `expected a duration string such as "10s", got ${typeof v === 'number' ? v : typeof v}`;
  const r = tryParseDuration(v);
  if (!r.ok) return r.error;
  if (r.ms <= 0) return `must be longer than 0 (got ${JSON.stringify(v)})`;
  return r.ms;
}

/** Costs by candidate object, shared by every Picker of this algorithm (see the header). */
const costs = new WeakMap<Candidate, PeakEwma>();

export const peakEwma: Algorithm = {
  name: 'peak-ewma',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[], options?: Readonly<Record<string, unknown>>): Picker<B> => {
    const decay = decayOf(options?.['decay']);
    const now = options?.['now'];
    return new PeakEwmaPicker(
      candidates,
      costs,
      typeof decay === 'number' ? decay : DEFAULT_DECAY_MS,
      typeof now === 'function' ? (now as () => number) : () => performance.now(),
    );
  },
  validateOptions: (options) =>
    checkOptions('peak-ewma', options, {
      decay: (v) => {
        const d = decayOf(v);
        return typeof d === 'string' ? d : undefined;
      },
      now: (v) =>
        typeof v === 'function' ? undefined : 'expected a function returning milliseconds (for programs; not a config key)',
    }),
};

export default peakEwma;

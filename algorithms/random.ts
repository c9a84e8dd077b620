// `random`: weighted random. Each pick returns a usable candidate with probability weight / (sum of the
// usable candidates' weights), independently of earlier picks (no state shared between picks, so it needs no
// coordination between workers). Also the sampler of power-of-two-choices.

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';

/** Draws tried by rejection sampling before the exact O(N) pass over the usable candidates. */
const REJECTION_ATTEMPTS = 4;

/**
 * Weighted sampling without allocation per draw. A draw first tries rejection sampling: one draw by weight
 * over all candidates in O(1) with Walker's alias method (Vose's construction: M. D. Vose, "A Linear
 * Algorithm for Generating Random Numbers with a Given Distribution", IEEE TSE 1991), retried while it
 * hits an unusable candidate. After REJECTION_ATTEMPTS misses (most candidates unusable) it samples exactly
 * among the usable ones in one O(N) pass. Both steps give each usable candidate probability
 * weight / usable total, so the mix does too.
 */
export class WeightedSampler<B extends Candidate> {
  /** Candidates with weight > 0 in config order, and their indexes in the list given to the constructor. */
  readonly list: B[];
  readonly index: number[];
  readonly weight: Float64Array;
  /** Alias tables: slot j keeps j with probability keep[j], else gives alias[j]. */
  private readonly keep: Float64Array;
  private readonly alias: Uint32Array;
  /** Scratch for the exact pass: 1 where the candidate may be drawn. */
  private readonly ok: Uint8Array;

  /** `rng`: uniform numbers in [0, 1); a seeded one makes a run reproducible. */
  constructor(
    candidates: readonly B[],
    private readonly rng: () => number = Math.random,
  ) {
    ({ list: this.list, index: this.index } = eligible(candidates));
    const n = this.list.length;
    this.weight = Float64Array.from(this.list, (c) => c.weight);
    this.keep = new Float64Array(n);
    this.alias = new Uint32Array(n);
    buildAlias(this.weight, this.keep, this.alias);
    this.ok = new Uint8Array(n);
  }

  /**
   * Position in `list` of a usable candidate other than the one at `exclude`, drawn with probability
   * proportional to weight among those; -1 when there is none.
   */
  sample(usable: Usable<B>, exclude = -1): number {
    const { list, index, weight, ok } = this;
    const n = list.length;
    if (n === 0) return -1;
    for (let a = 0; a < REJECTION_ATTEMPTS; a++) {
      const j = this.draw();
      if (j !== exclude && usable(list[j]!, index[j]!)) return j;
    }
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const yes = j !== exclude && usable(list[j]!, index[j]!);
      ok[j] = yes ? 1 : 0;
      if (yes) sum += weight[j]!;
    }
    if (sum === 0) return -1;
    let r = this.rng() * sum;
    let last = -1;
    for (let j = 0; j < n; j++) {
      if (ok[j] === 0) continue;
      last = j;
      r -= weight[j]!;
      if (r < 0) return j;
    }
    return last; // rng() * sum rounded up to sum
  }

  /** A position drawn by weight among all candidates, usable or not: one random number, O(1). */
  private draw(): number {
    const n = this.list.length;
    const r = this.rng() * n;
    const j = Math.min(n - 1, Math.floor(r));
    // The fraction of r is the second uniform number Walker's method needs: Math.random has 52 bits, so it
    // keeps 52 - log2(n) bits of resolution.
    return r - j < this.keep[j]! ? j : this.alias[j]!;
  }
}

/** Vose's alias construction over weights > 0; fills keep and alias. O(N). */
function buildAlias(weight: Float64Array, keep: Float64Array, alias: Uint32Array): void {
  const n = weight.length;
  const total = weight.reduce((a, b) => a + b, 0);
  const scaled = weight.map((w) => (w * n) / total);
  const small: number[] = [];
  const large: number[] = [];
  scaled.forEach((p, j) => (p < 1 ? small : large).push(j));
  while (small.length > 0 && large.length > 0) {
    const s = small.pop()!;
    const l = large.pop()!;
    keep[s] = scaled[s]!;
    alias[s] = l;
    scaled[l] = scaled[l]! + scaled[s]! - 1;
    (scaled[l]! < 1 ? small : large).push(l);
  }
  // What is left has probability 1 up to rounding.
  for (const j of large) keep[j] = 1;
  for (const j of small) keep[j] = 1;
}

class RandomPicker<B extends Candidate> implements Picker<B> {
  private readonly sampler: WeightedSampler<B>;

  constructor(candidates: readonly B[]) {
    this.sampler = new WeightedSampler(candidates);
  }

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const j = this.sampler.sample(usable);
    return j < 0 ? undefined : this.sampler.list[j];
  }
}

export const random: Algorithm = {
  name: 'random',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new RandomPicker(candidates),
};

export default random;

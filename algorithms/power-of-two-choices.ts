// `power-of-two-choices`: the power of two random choices (Mitzenmacher, "The Power of Two Choices in
// Randomized Load Balancing", IEEE TPDS 2001), as Envoy's least_request with choice_count = 2
// (source/extensions/load_balancing_policies/least_request/). Draws two distinct usable candidates, each
// by weight (see random.ts), and returns the one with the lower inflight / weight; the first drawn on a
// tie, so idle backends receive traffic in proportion to their weights. Needs no shared state between
// workers, and avoids the herding onto one backend that a stale global least-loaded view causes.

import { WeightedSampler } from './random.js';
import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';

/**
 * The two-choices step shared with peak-ewma: draws two distinct usable candidates by weight (positions in
 * sampler.list) and returns the first, or the second when `load(second) < load(first)`; the only usable
 * one when there is one; undefined when none.
 */
export function bestOfTwo<B extends Candidate>(sampler: WeightedSampler<B>, usable: Usable<B>, load: (position: number) => number): B | undefined {
  const a = sampler.sample(usable);
  if (a < 0) return undefined;
  const b = sampler.sample(usable, a);
  if (b < 0) return sampler.list[a];
  return load(b) < load(a) ? sampler.list[b] : sampler.list[a];
}

class TwoChoicesPicker<B extends Candidate> implements Picker<B> {
  private readonly sampler: WeightedSampler<B>;
  private readonly load = (j: number): number => this.sampler.list[j]!.inflight / this.sampler.weight[j]!;

  constructor(candidates: readonly B[]) {
    this.sampler = new WeightedSampler(candidates);
  }

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    return bestOfTwo(this.sampler, usable, this.load);
  }
}

export const powerOfTwoChoices: Algorithm = {
  name: 'power-of-two-choices',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new TwoChoicesPicker(candidates),
};

export default powerOfTwoChoices;

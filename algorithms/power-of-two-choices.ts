// `power-of-two-choices`: the power of two random choices (Mitzenmacher, "The Power of Two Choices in
// Randomized Load Balancing", IEEE TPDS 2001), as Envoy's least_request with choice_count = 2
// (source/extensions/load_balancing_policies/least_request/). Draws two distinct usable candidates, each
// by weight (see random.ts), and returns the one with the lower inflight / weight; the first drawn on a
// tie, so idle backends receive traffic in proportion to their weights. Needs no shared state between
// workers, and avoids the herding onto one backend that a stale global least-loaded view causes.

import { WeightedSampler } from './random.js';
import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';

class TwoChoicesPicker<B extends Candidate> implements Picker<B> {
  private readonly sampler: WeightedSampler<B>;

  constructor(candidates: readonly B[]) {
    this.sampler = new WeightedSampler(candidates);
  }

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const { sampler } = this;
    const a = sampler.sample(usable);
    if (a < 0) return undefined;
    const first = sampler.list[a]!;
    const b = sampler.sample(usable, a);
    if (b < 0) return first;
    const second = sampler.list[b]!;
    return second.inflight / sampler.weight[b]! < first.inflight / sampler.weight[a]! ? second : first;
  }
}

export const powerOfTwoChoices: Algorithm = {
  name: 'power-of-two-choices',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new TwoChoicesPicker(candidates),
};

export default powerOfTwoChoices;

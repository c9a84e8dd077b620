// `weighted-round-robin`: NGINX's smooth weighted round robin (ngx_http_upstream_get_peer in
// src/http/ngx_http_upstream_round_robin.c). On every pick each usable peer's current weight grows by its
// weight, the peer with the largest current weight wins (the first one in config order on a tie), and the
// winner's current weight drops by the sum of the weights that took part. Over any window of sum(weights)
// picks each peer is chosen exactly weight times, spread out rather than in bursts: weights 5, 1, 1 give
// a a b a c a a, repeated.
//
// Differences from NGINX: weights are fixed for the Picker's life (a weight change builds a new Picker, so
// there is no effective_weight recovery after failures; passive health marks the backend unusable
// instead), and fractional weights (slow start) work as they are.

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';

class SmoothWeightedPicker<B extends Candidate> implements Picker<B> {
  private readonly list: B[];
  private readonly index: number[];
  private readonly weight: Float64Array;
  /** NGINX's peer->current_weight. */
  private readonly current: Float64Array;

  constructor(candidates: readonly B[]) {
    ({ list: this.list, index: this.index } = eligible(candidates));
    this.weight = Float64Array.from(this.list, (c) => c.weight);
    this.current = new Float64Array(this.list.length);
  }

  /**
   * One pass over the candidates. Unusable ones take no part: their current weight is left alone and their
   * weight is not in the total, so the usable ones share the picks by their weights. O(N), no allocation.
   */
  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const { list, index, weight, current } = this;
    let best = -1;
    let total = 0;
    for (let j = 0; j < list.length; j++) {
      if (!usable(list[j]!, index[j]!)) continue;
      const w = weight[j]!;
      current[j] = current[j]! + w;
      total += w;
      if (best < 0 || current[j]! > current[best]!) best = j;
    }
    if (best < 0) return undefined;
    current[best] = current[best]! - total;
    return list[best];
  }
}

export const weightedRoundRobin: Algorithm = {
  name: 'weighted-round-robin',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new SmoothWeightedPicker(candidates),
};

export default weightedRoundRobin;

// `least-connections`: the usable candidate with the fewest in-flight requests per unit of weight
// (inflight / weight), as NGINX's least_conn (ngx_http_upstream_get_least_conn_peer in
// src/http/modules/ngx_http_upstream_least_conn_module.c) and HAProxy's leastconn (lb_fwlc.c).
//
// Ties are broken as NGINX does: a smooth weighted round robin (see weighted-round-robin.ts) among the
// tied candidates only. So equal idle backends alternate instead of piling onto the first one, and idle
// backends of different weights are picked in proportion to their weights.
//
// `inflight` is read live at pick time; it counts this process's requests only (each worker balances its
// own share, as NGINX workers do without a shared zone).

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';

class LeastConnectionsPicker<B extends Candidate> implements Picker<B> {
  private readonly list: B[];
  private readonly index: number[];
  private readonly weight: Float64Array;
  /** Smooth-WRR current weights for tie-breaking; only tied candidates take part in a round. */
  private readonly current: Float64Array;
  /** Per-pick scratch: inflight / weight of each usable candidate, NaN for unusable ones. */
  private readonly load: Float64Array;

  constructor(candidates: readonly B[]) {
    ({ list: this.list, index: this.index } = eligible(candidates));
    const n = this.list.length;
    this.weight = Float64Array.from(this.list, (c) => c.weight);
    this.current = new Float64Array(n);
    this.load = new Float64Array(n);
  }

  /**
   * First pass: the lowest load among usable candidates and whether several share it. Second pass (ties
   * only): smooth WRR among the tied ones, starting at the first of them. O(N), no allocation.
   */
  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const { list, index, weight, current, load } = this;
    const n = list.length;
    let first = -1;
    let min = Infinity;
    let tied = false;
    for (let j = 0; j < n; j++) {
      const c = list[j]!;
      if (!usable(c, index[j]!)) {
        load[j] = NaN;
        continue;
      }
      const l = c.inflight / weight[j]!;
      load[j] = l;
      if (first < 0 || l < min) {
        first = j;
        min = l;
        tied = false;
      } else if (l === min) {
        tied = true;
      }
    }
    if (first < 0) return undefined;
    if (!tied) return list[first];

    let best = -1;
    let total = 0;
    for (let j = first; j < n; j++) {
      if (load[j] !== min) continue;
      const w = weight[j]!;
      current[j] = current[j]! + w;
      total += w;
      if (best < 0 || current[j]! > current[best]!) best = j;
    }
    current[best] = current[best]! - total;
    return list[best];
  }
}

export const leastConnections: Algorithm = {
  name: 'least-connections',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new LeastConnectionsPicker(candidates),
};

export default leastConnections;

// `least-connections`: the usable candidate with the fewest in-flight requests per unit of weight
// (inflight / weight), as NGINX's least_conn (ngx_http_upstream_get_least_conn_peer in
// src/http/modules/ngx_http_upstream_least_conn_module.c) and HAProxy's leastconn (lb_fwlc.c).
//
// Ties are broken as NGINX does: a smooth weighted round robin (see weighted-round-robin.ts) among the
// tied candidates only. So equal idle backends alternate instead of piling onto the first one, and idle
// backends of different weights are picked in proportion to their weights.
//
// `inflight` counts this process's requests only (each worker balances its own share, as NGINX workers do
// without a shared zone). Up to SMALL_POOL candidates (heap.ts) it is read live at pick time, in one O(N)
// pass. Above, the candidates sit in a heap ordered by (inflight / weight, tie tag, config order), as
// HAProxy's leastconn keeps them in a tree (lb_fwlc.c): the Picker has an `inflightChanged` hook (see
// types.ts) that the pool calls from Backend.begin/end, so a pick and an in-flight change cost O(log N).
// Ties there rotate by virtual time (start-time fair queueing): the winner's tag becomes
// max(tag, V) + 1/weight and V its start, so equal idle backends alternate and idle backends of different
// weights share by weight, as with NGINX's tie-break, though not in the same order. Unusable candidates
// ahead of the first usable one are set aside for that pick and put back unchanged: a pick costs
// O((1 + U) log N) with U such candidates (backends down or drained have nothing in flight and so sit at
// the head: with many of them the cost approaches the O(N) pass).

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';
import { IndexedHeap, SMALL_POOL } from './heap.js';

export class LeastConnectionsPicker<B extends Candidate> implements Picker<B> {
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

/** The heap form (see the top of this file). `inflight` must be reported through inflightChanged. */
export class LeastLoadHeapPicker<B extends Candidate> implements Picker<B> {
  private readonly list: B[];
  private readonly index: number[];
  private readonly position: Map<B, number>;
  private readonly weight: Float64Array;
  /** inflight / weight as last reported. */
  private readonly load: Float64Array;
  /** Tie tags (virtual finish of each candidate's next pick) and the virtual clock. */
  private readonly tag: Float64Array;
  private now = 0;
  private readonly heap: IndexedHeap;
  /** Per-pick scratch: the unusable candidates set aside. */
  private readonly skipped: Int32Array;

  constructor(candidates: readonly B[]) {
    ({ list: this.list, index: this.index } = eligible(candidates));
    const n = this.list.length;
    this.position = new Map(this.list.map((c, j) => [c, j]));
    this.weight = Float64Array.from(this.list, (c) => c.weight);
    this.load = Float64Array.from(this.list, (c) => c.inflight / c.weight);
    this.tag = new Float64Array(n);
    this.heap = new IndexedHeap(n, this.load, this.tag);
    this.skipped = new Int32Array(n);
    for (let j = 0; j < n; j++) this.heap.push(j);
  }

  inflightChanged(candidate: B): void {
    const j = this.position.get(candidate);
    if (j === undefined) return;
    this.load[j] = candidate.inflight / this.weight[j]!;
    this.heap.update(j);
  }

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const { list, index, heap, skipped, tag } = this;
    let won = heap.top();
    let skips = 0;
    while (won >= 0 && !usable(list[won]!, index[won]!)) {
      skipped[skips++] = heap.pop();
      won = heap.top();
    }
    if (won >= 0) {
      const s = Math.max(tag[won]!, this.now);
      this.now = s;
      tag[won] = s + 1 / this.weight[won]!;
      heap.update(won);
    }
    for (let k = 0; k < skips; k++) heap.push(skipped[k]!);
    return won >= 0 ? list[won] : undefined;
  }
}

export const leastConnections: Algorithm = {
  name: 'least-connections',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => {
    let n = 0;
    for (const c of candidates) if (c.weight > 0) n++;
    return n <= SMALL_POOL ? new LeastConnectionsPicker(candidates) : new LeastLoadHeapPicker(candidates);
  },
};

export default leastConnections;

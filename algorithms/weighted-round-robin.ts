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
//
// Above SMALL_POOL candidates (heap.ts) smooth WRR's O(N) pass is replaced by an O(log N) virtual-time
// scheduler, WF2Q (Bennett and Zhang, "WF2Q: Worst-case Fair Weighted Fair Queueing", INFOCOM 1996) with
// unit-size picks. Smooth WRR's sequence cannot be had in less than O(N): every pick adds each usable
// candidate's weight to its current weight, so the next state depends on `usable` of all N candidates, and
// `usable` is an opaque per-request predicate (health, drain, retries). WF2Q keeps for each candidate a
// virtual start S = n/w and finish F = (n+1)/w (n: its picks so far) and a virtual clock V that advances
// by 1/sum(weights) per pick; the pick is the least F among candidates with S <= V (least S when there is
// none), ties to the first in config order. Like smooth WRR, over every prefix of k picks with all
// candidates usable, each candidate's count stays within one of its share k*w/W (tested), and weights
// 5, 1, 1 give a b a a c a a. An unusable candidate at the head of the schedule is skipped and loses that
// turn (its S and F advance as if picked), as round-robin skips it: the usable ones keep their shares
// among themselves, a candidate coming back does not get a burst to catch up, and a pick asks each
// candidate at most once.

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';
import { IndexedHeap, SMALL_POOL } from './heap.js';

export class SmoothWeightedPicker<B extends Candidate> implements Picker<B> {
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

/** WF2Q over unit picks (see the top of this file): O(log N) per pick when the head is usable. */
export class VirtualTimePicker<B extends Candidate> implements Picker<B> {
  private readonly list: B[];
  private readonly index: number[];
  /** 1 / weight of each candidate. */
  private readonly inv: Float64Array;
  /** Virtual start and finish of each candidate's next pick. */
  private readonly start: Float64Array;
  private readonly finish: Float64Array;
  /** The virtual clock V, and its advance per pick, 1 / sum(weights). */
  private now = 0;
  private readonly step: number;
  /** Candidates with start <= now, least finish first; and the others, least start first. */
  private readonly ready: IndexedHeap;
  private readonly waiting: IndexedHeap;
  /** Per-pick scratch: the unusable candidates skipped, put back when the pick ends. */
  private readonly skipped: Int32Array;

  constructor(candidates: readonly B[]) {
    ({ list: this.list, index: this.index } = eligible(candidates));
    const n = this.list.length;
    this.inv = Float64Array.from(this.list, (c) => 1 / c.weight);
    let total = 0;
    for (const c of this.list) total += c.weight;
    this.step = n > 0 ? 1 / total : 0;
    this.start = new Float64Array(n);
    this.finish = Float64Array.from(this.inv);
    this.ready = new IndexedHeap(n, this.finish);
    this.waiting = new IndexedHeap(n, this.start);
    this.skipped = new Int32Array(n);
    for (let j = 0; j < n; j++) this.ready.push(j);
  }

  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const { list, index, start, finish, inv, ready, waiting, skipped } = this;
    let won = -1;
    let skips = 0;
    for (;;) {
      while (waiting.size > 0 && start[waiting.top()]! <= this.now) ready.push(waiting.pop());
      let j = ready.pop();
      if (j < 0) j = waiting.pop(); // rounding left no candidate eligible: the earliest start
      if (j < 0) break; // every candidate was asked
      start[j] = finish[j]!;
      finish[j] = start[j]! + inv[j]!;
      this.now += this.step;
      if (usable(list[j]!, index[j]!)) {
        won = j;
        break;
      }
      skipped[skips++] = j;
    }
    if (won >= 0) this.place(won);
    for (let k = 0; k < skips; k++) this.place(skipped[k]!);
    return won >= 0 ? list[won] : undefined;
  }

  private place(j: number): void {
    (this.start[j]! <= this.now ? this.ready : this.waiting).push(j);
  }
}

export const weightedRoundRobin: Algorithm = {
  name: 'weighted-round-robin',
  usesWeights: true,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => {
    let n = 0;
    for (const c of candidates) if (c.weight > 0) n++;
    return n <= SMALL_POOL ? new SmoothWeightedPicker(candidates) : new VirtualTimePicker(candidates);
  },
};

export default weightedRoundRobin;

// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded
// Loads", SODA 2018), as HAProxy's `hash-balance-factor` (chash_server_is_eligible in src/lb_chash.c) and
// Envoy's `hash_balance_factor` (BoundedLoadHashingLoadBalancer) apply it: the option `hash_balance_factor`
// = c >= 1 of consistent-hash and maglev.
//
// Contract: with T requests in flight over the pool (this process's, PickContext.inflightTotal) a usable
// candidate of weight w is skipped when its inflight + 1 > ceil(c * (T + 1) * w / W), W the total weight of
// the usable candidates (for equal weights: ceil(c * (T + 1) / N_usable)); the walk goes on in the
// algorithm's own preference order (the ring's next points for consistent-hash, the table's next entries
// for maglev) to the first usable candidate under its bound. Since the bounds sum to at least c * (T + 1)
// > T, one always is; should the caller's total be wrong, the first usable candidate is taken. Hence no
// candidate ever holds more than ceil(c * average) in flight, and a key leaves its own backend only while
// that backend is over the bound: with nothing in flight every key goes where the plain algorithm sends it.
//
// Cost: O(1) when the key's own candidate is under its bound (W is first taken as the total weight of all
// candidates, which can only make the bound smaller); only when that test fails is W summed over the usable
// candidates, once per pick (O(N)).

import type { Candidate, Usable } from './types.js';

export class BoundedLoad<B extends Candidate> {
  private readonly weight: Float64Array;
  private readonly allWeight: number;
  private readonly seen: Uint32Array;
  private generation = 0;
  // The pick under way (pick is synchronous).
  private total = 0;
  private usableWeight = -1;
  private usable: Usable<B> = () => false;

  constructor(
    private readonly list: readonly B[],
    private readonly index: readonly number[],
    /** c >= 1. */
    readonly factor: number,
  ) {
    this.weight = Float64Array.from(list, (c) => c.weight);
    this.allWeight = this.weight.reduce((a, b) => a + b, 0);
    this.seen = new Uint32Array(list.length);
  }

  /**
   * From slot `start` of `owners` (positions in `list`) forward with wrap-around, each distinct owner asked
   * once: the first one usable and under its bound; else the first usable one; else undefined. `distinct`:
   * the number of distinct owners in `owners` (the walk stops after asking them all).
   */
  pick(owners: ArrayLike<number>, start: number, distinct: number, usable: Usable<B>, inflightTotal: number | undefined): B | undefined {
    const { list, index } = this;
    if (inflightTotal === undefined) {
      inflightTotal = 0;
      for (let o = 0; o < list.length; o++) inflightTotal += list[o]!.inflight;
    }
    this.total = inflightTotal;
    this.usableWeight = -1;
    this.usable = usable;

    const o0 = owners[start]!;
    if (usable(list[o0]!, index[o0]!) && this.under(o0)) return list[o0];

    const seen = this.seen;
    if (this.generation === 0xffffffff) {
      seen.fill(0);
      this.generation = 0;
    }
    const gen = ++this.generation;
    const slots = owners.length;
    let firstUsable = -1;
    let p = start;
    let asked = 0;
    for (let step = 0; step < slots; step++, p++) {
      if (p === slots) p = 0;
      const o = owners[p]!;
      if (seen[o] === gen) continue;
      seen[o] = gen;
      if (usable(list[o]!, index[o]!)) {
        if (firstUsable < 0) firstUsable = o;
        if (this.under(o)) return list[o];
      }
      if (++asked === distinct) break;
    }
    return firstUsable < 0 ? undefined : list[firstUsable];
  }

  /** inflight + 1 <= ceil(c * (T + 1) * w / W) for the usable candidate at `o`. */
  private under(o: number): boolean {
    const need = this.list[o]!.inflight + 1;
    const scaled = this.factor * (this.total + 1) * this.weight[o]!;
    if (need <= Math.ceil(scaled / this.allWeight)) return true;
    if (this.usableWeight < 0) {
      let w = 0;
      const { list, index, usable, weight } = this;
      for (let j = 0; j < list.length; j++) if (usable(list[j]!, index[j]!)) w += weight[j]!;
      this.usableWeight = w;
    }
    return this.usableWeight > 0 && need <= Math.ceil(scaled / this.usableWeight);
  }
}

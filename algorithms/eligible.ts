// The candidates a Picker may return (weight > 0), with each one's position in the list given to
// `Algorithm.create` (the `index` a `usable` predicate receives). `byName` orders them by name, so that
// hash-based algorithms do not depend on the order backends are written in the config.

import type { Candidate, Usable } from './types.js';

export function eligible<B extends Candidate>(candidates: readonly B[], byName = false): { list: B[]; index: number[] } {
  const live: Array<{ c: B; i: number }> = [];
  candidates.forEach((c, i) => {
    if (c.weight > 0) live.push({ c, i });
  });
  if (byName) live.sort((a, b) => (a.c.name < b.c.name ? -1 : a.c.name > b.c.name ? 1 : 0));
  return { list: live.map((e) => e.c), index: live.map((e) => e.i) };
}

/**
 * The failover walk of the hash-based pickers (a ring's points or a lookup table's slots): from slot
 * `start`, whose owner was found unusable, forward with wrap-around, asking each distinct owner once, until
 * one is usable or all `distinct` owners have been asked. Later slots of an owner already asked are skipped
 * by a per-owner stamp compare, so a walk costs O(slots) at worst and allocates nothing.
 */
export class FailoverWalk {
  private readonly seen: Uint32Array;
  private generation = 0;

  constructor(owners: number) {
    this.seen = new Uint32Array(owners);
  }

  walk<B>(owners: ArrayLike<number>, start: number, list: readonly B[], index: readonly number[], usable: Usable<B>, distinct: number): B | undefined {
    if (distinct <= 1) return undefined;
    const seen = this.seen;
    if (this.generation === 0xffffffff) {
      seen.fill(0);
      this.generation = 0;
    }
    const gen = ++this.generation;
    const total = owners.length;
    let p = start;
    seen[owners[p]!] = gen;
    let asked = 1;
    for (let step = 1; step < total; step++) {
      if (++p === total) p = 0;
      const o = owners[p]!;
      if (seen[o] === gen) continue;
      if (usable(list[o]!, index[o]!)) return list[o];
      seen[o] = gen;
      if (++asked === distinct) return undefined;
    }
    return undefined;
  }
}

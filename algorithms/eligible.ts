// The candidates a Picker may return (weight > 0), with each one's position in the list given to
// `Algorithm.create` (the `index` a `usable` predicate receives). `byName` orders them by name, so that
// hash-based algorithms do not depend on the order backends are written in the config.

import type { Candidate } from './types.js';

export function eligible<B extends Candidate>(candidates: readonly B[], byName = false): { list: B[]; index: number[] } {
  const live: Array<{ c: B; i: number }> = [];
  candidates.forEach((c, i) => {
    if (c.weight > 0) live.push({ c, i });
  });
  if (byName) live.sort((a, b) => (a.c.name < b.c.name ? -1 : a.c.name > b.c.name ? 1 : 0));
  return { list: live.map((e) => e.c), index: live.map((e) => e.i) };
}

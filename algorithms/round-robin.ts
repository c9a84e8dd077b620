// `round-robin`: plain rotation over the candidates in config order, ignoring weights (except that weight 0
// is never picked). Also the key-less fallback of the hash algorithms (consistent-hash, maglev), as
// HAProxy's `balance hdr()` falls back to round robin when the header is absent.

import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible } from './eligible.js';

class RoundRobinPicker<B extends Candidate> implements Picker<B> {
  /** Candidates with weight > 0, in config order, and their indexes in the list given to create. */
  private readonly list: B[];
  private readonly index: number[];
  /** Position in `list` where the next scan starts: one past the last pick. */
  private next = 0;

  constructor(candidates: readonly B[]) {
    ({ list: this.list, index: this.index } = eligible(candidates));
  }

  /**
   * Scans from one past the previous pick and returns the first usable candidate. The rotation resumes
   * after the candidate actually picked, not after the scan start, so with one backend unusable the others
   * still alternate evenly (a, c, a, c rather than a, c, c). O(N) worst case, O(1) when all are usable.
   */
  pick(_ctx: PickContext, usable: Usable<B>): B | undefined {
    const n = this.list.length;
    let j = this.next;
    for (let s = 0; s < n; s++, j++) {
      if (j >= n) j = 0;
      const c = this.list[j]!;
      if (usable(c, this.index[j]!)) {
        this.next = j + 1;
        return c;
      }
    }
    return undefined;
  }
}

export const roundRobin: Algorithm = {
  name: 'round-robin',
  usesWeights: false,
  usesKey: false,
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new RoundRobinPicker(candidates),
};

export default roundRobin;

// weighted-round-robin's O(N) form (NGINX smooth WRR) at every pool size, as lb used it for every pool
// before the O(log N) form above 32 backends: `lb bench quality --algorithms
// all,./dist/bench/algorithms/linear-weighted-round-robin.js` times both in one run.

import type { Algorithm, Candidate, Picker } from '../../algorithms/types.js';
import { SmoothWeightedPicker, weightedRoundRobin } from '../../algorithms/weighted-round-robin.js';

const linear: Algorithm = {
  ...weightedRoundRobin,
  name: 'weighted-round-robin O(N)',
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new SmoothWeightedPicker(candidates),
};

export default linear;

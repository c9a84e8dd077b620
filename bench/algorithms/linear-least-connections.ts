// least-connections' O(N) form (one pass, ties by smooth WRR) at every pool size, as lb used it for every
// pool before the O(log N) heap above 32 backends: `lb bench quality --algorithms
// all,./dist/bench/algorithms/linear-least-connections.js` times both in one run.

import type { Algorithm, Candidate, Picker } from '../../algorithms/types.js';
import { leastConnections, LeastConnectionsPicker } from '../../algorithms/least-connections.js';

const linear: Algorithm = {
  ...leastConnections,
  name: 'least-connections O(N)',
  create: <B extends Candidate>(candidates: readonly B[]): Picker<B> => new LeastConnectionsPicker(candidates),
};

export default linear;

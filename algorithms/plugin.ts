// The published entry point for algorithm plugins: `import type { Algorithm } from 'lb/algorithm'` (package
// exports "./algorithm"), so that a plugin need not reach into dist/. Type imports are erased at compile time
// and work wherever the plugin is; the helpers below are runtime imports, which only resolve where the
// plugin can find the lb package (e.g. installed next to it).

export type { Algorithm, Candidate, Outcome, PickContext, Picker, Usable } from './types.js';
export { checkOptions, numberAtLeast, numberOption, type OptionCheck } from './options.js';
export { eligible, FailoverWalk } from './eligible.js';
export { HASH_SEED, murmur3_32 } from './hash.js';
export { WeightedSampler } from './random.js';
export { BoundedLoad } from './bounded-load.js';

// Slow start for algorithms that hash a key (consistent-hash, maglev, with or without hash_balance_factor)
// without moving other backends' keys. The lookup table is built with the ramping backend at its full
// weight, so nothing is rebuilt during the ramp; the ramp is an admission share r in (0, 1]: a key whose
// choice is a ramping backend goes there only when a second hash of the key, independent of the table's,
// is below r, and otherwise to the key's next choice (where it would go were that backend unusable).
// Since r only grows during a ramp, a key admitted once stays admitted until the ramp ends (no flapping),
// the backend's share of keys is r times its full share, and keys whose choice is another backend never
// move. (Envoy and HAProxy ramp the weight instead, which for a hash table means a rebuild per step and
// keys moving among the other backends.)

import { murmur3_32 } from './hash.js';

/** Seed of the admission hash: any value other than the table's HASH_SEED makes the two independent. */
export const RAMP_SEED = 0x9e3779b9;

/** A key's admission draw, uniform in [0, 1): admitted to a backend ramping at r when draw < r. */
export function rampDraw(key: string): number {
  return murmur3_32(key, RAMP_SEED) / 4294967296;
}

/** Draws for requests without a key: the golden-ratio sequence, spread evenly over [0, 1). */
export function nextSpreadDraw(previous: number): number {
  const next = previous + 0.6180339887498949;
  return next >= 1 ? next - 1 : next;
}

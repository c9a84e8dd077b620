// `maglev`: Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
// NSDI 2016, §3.4, Pseudocode 1), with a lookup table of M entries, M prime (see table size below). Compared with consistent-hash: O(1) lookups and near-perfect balance, at the cost of slightly more
// than the minimal disruption when the membership changes.
//
// Each backend with weight > 0 gets a permutation of the table slots from its name:
// offset = murmur3_32(name, OFFSET_SEED) mod M, skip = murmur3_32(name, SKIP_SEED) mod (M - 1) + 1,
// permutation[j] = (offset + j * skip) mod M. The population loop lets backends claim their next free
// preferred slot in turns until the table is full.
//
// Weights: Envoy's weighted Maglev (MaglevTable's constructor in
// source/extensions/load_balancing_policies/maglev/maglev_lb.cc): in iteration t = 1, 2, ... a backend of
// weight w takes a turn when t * w >= counts, and its counts then grow by max(weight). A backend of the
// largest weight takes a turn every iteration, one of a third of it every third, so table shares follow
// the weights, fractional ones included.
//
// Lookup: table[murmur3_32(key) mod M]. When that backend is unusable, the walk goes forward through the
// table to the first entry whose backend is usable (each backend asked once); since consecutive entries
// belong to independent backends, a down backend's keys spread over the others by their shares, and no
// key of a usable backend moves. The table depends only on names and weights (turns are taken in name
// order, not config order), so every process maps a key alike. A weight change rebuilds the whole table
// (the Picker is immutable, see types.ts): about 6 ms for 10 backends, 10 ms for 100. Without a key:
// round-robin.
//
// Table size (option `table_size`, a prime up to 5,000,011 as Envoy's): the paper (§3.4, §5.3) asks
// M > 100 * N for balance and small disruption. By default M is the first of DEFAULT_SIZES at least
// 100 * N (65537 up to 655 backends, 131101 up to 1311, ...): the ladder is fixed so that every process
// picks the same M, and a change of M remaps keys wholesale, so it only happens when N crosses a rung (set
// `table_size` to pin it). Build time grows with M: ~10 ms at M = 65537, N = 100.
//
// Option `hash_balance_factor` = c >= 1 bounds each backend's in-flight requests to ceil(c * average),
// walking on to the next table entries past backends over the bound (see bounded-load.ts).

import { HASH_SEED, murmur3_32 } from './hash.js';
import { roundRobin } from './round-robin.js';
import type { Algorithm, Candidate, Picker, PickContext, Usable } from './types.js';
import { eligible, FailoverWalk } from './eligible.js';
import { BoundedLoad } from './bounded-load.js';
import { checkBalanceFactor, checkOptions, numberOption } from './options.js';

/** The smallest table: prime (every skip in 1 .. M-1 then visits all slots), the paper's and Envoy's default. */
export const TABLE_SIZE = 65537;
/** The largest `table_size`, Envoy's limit. */
export const MAX_TABLE_SIZE = 5_000_011;
/** Default sizes: each the first prime above twice the one before, from 65537, capped at MAX_TABLE_SIZE. */
export const DEFAULT_SIZES: readonly number[] = [65537, 131101, 262217, 524453, 1048909, 2097829, 4195679, MAX_TABLE_SIZE];

/** The default table size for n backends: the first of DEFAULT_SIZES >= 100 * n. */
export function defaultTableSize(n: number): number {
  return DEFAULT_SIZES.find((m) => m >= 100 * n) ?? MAX_TABLE_SIZE;
}

/** Trial division; table sizes are at most ~5e6, so at most ~1100 odd divisors. */
export function isPrime(m: number): boolean {
  if (!Number.isInteger(m) || m < 2) return false;
  if (m % 2 === 0) return m === 2;
  for (let d = 3; d * d <= m; d += 2) if (m % d === 0) return false;
  return true;
}
/** Seeds of the two name hashes giving a backend's offset and skip. */
export const OFFSET_SEED = 0x4d41474c; // "MAGL"
export const SKIP_SEED = 0x45562d32; // "EV-2"

/** Sentinel for an empty slot while the table is built. */
const EMPTY = 0xffffffff;

class MaglevPicker<B extends Candidate> implements Picker<B> {
  /** Backends with weight > 0, sorted by name, and their indexes in the list given to create. */
  private readonly list: B[];
  private readonly index: number[];
  /**
   * table[slot] = position in `list`; empty when no backend has weight > 0. 16-bit entries (128 KiB, kinder
   * to the CPU cache than 256 KiB) unless there are more than 65536 backends.
   */
  private readonly table: Uint16Array | Uint32Array;
  /** Number of distinct backends holding at least one slot: the failover walk stops after asking them all. */
  private readonly present: number;
  private readonly walker: FailoverWalk;
  private readonly fallback: Picker<B>;
  /** M. */
  readonly size: number;
  /** Set with `hash_balance_factor`. */
  private readonly bounded: BoundedLoad<B> | undefined;

  constructor(candidates: readonly B[], options?: Readonly<Record<string, unknown>>) {
    ({ list: this.list, index: this.index } = eligible(candidates, true));
    this.fallback = roundRobin.create(candidates);
    const n = this.list.length;
    this.walker = new FailoverWalk(n);
    const asked = numberOption(options, 'table_size');
    this.size = asked !== undefined && isPrime(asked) && asked <= MAX_TABLE_SIZE ? asked : defaultTableSize(n);
    const factor = numberOption(options, 'hash_balance_factor');
    this.bounded = factor !== undefined && factor >= 1 ? new BoundedLoad(this.list, this.index, factor) : undefined;
    if (n === 0) {
      this.table = new Uint32Array(0);
      this.present = 0;
      return;
    }
    const table = populate(this.list, this.size);
    this.table = n <= 0x10000 ? Uint16Array.from(table) : table;
    const has = new Uint8Array(n);
    for (let s = 0; s < this.size; s++) has[this.table[s]!] = 1;
    this.present = has.reduce((a, b) => a + b, 0);
  }

  /** O(1) when the key's backend is usable; otherwise a forward walk, each backend asked at most once. */
  pick(ctx: PickContext, usable: Usable<B>): B | undefined {
    const key = ctx.key;
    if (key === undefined) return this.fallback.pick(ctx, usable);
    const { table, list, index } = this;
    if (table.length === 0) return undefined;

    const h = murmur3_32(key, HASH_SEED);
    const s = this.size === TABLE_SIZE ? mod65537(h) : h % this.size;
    if (this.bounded) return this.bounded.pick(table, s, this.present, usable, ctx.inflightTotal);
    const o = table[s]!;
    if (usable(list[o]!, index[o]!)) return list[o];

    return this.walker.walk(table, s, list, index, usable, this.present);
  }
}

/** h mod 65537 for an unsigned 32-bit h, in int32 arithmetic: 2^16 = -1 (mod 65537). */
function mod65537(h: number): number {
  const r = (h & 0xffff) - (h >>> 16);
  return r < 0 ? r + TABLE_SIZE : r;
}

/** Pseudocode 1 of the paper with Envoy's weighted turns; `list` is in name order, all weights > 0. */
function populate(list: readonly Candidate[], size: number): Uint32Array {
  const n = list.length;
  // Slots and skips are < size <= MAX_TABLE_SIZE < 2^23, so slot + skip stays exact in int32 and a
  // subtraction replaces the modulo (the table is the same; the build is several times faster).
  const next = new Int32Array(n); // current slot of each backend's permutation
  const skip = new Int32Array(n);
  const weight = new Float64Array(n);
  const counts = new Float64Array(n);
  let maxWeight = 0;
  for (let o = 0; o < n; o++) {
    const c = list[o]!;
    next[o] = murmur3_32(c.name, OFFSET_SEED) % size;
    skip[o] = (murmur3_32(c.name, SKIP_SEED) % (size - 1)) + 1;
    weight[o] = c.weight;
    if (c.weight > maxWeight) maxWeight = c.weight;
  }

  const table = new Uint32Array(size).fill(EMPTY);
  let filled = 0;
  for (let iteration = 1; ; iteration++) {
    for (let o = 0; o < n; o++) {
      if (iteration * weight[o]! < counts[o]!) continue;
      counts[o] = counts[o]! + maxWeight;
      const step = skip[o]!;
      let slot = next[o]!;
      while (table[slot] !== EMPTY) {
        slot += step;
        if (slot >= size) slot -= size;
      }
      table[slot] = o;
      slot += step;
      next[o] = slot >= size ? slot - size : slot;
      if (++filled === size) return table;
    }
  }
}

export const maglev: Algorithm = {
  name: 'maglev',
  usesWeights: true,
  usesKey: true,
  create: <B extends Candidate>(candidates: readonly B[], options?: Readonly<Record<string, unknown>>): Picker<B> =>
    new MaglevPicker(candidates, options),
  validateOptions: (options) =>
    checkOptions('maglev', options, {
      hash_balance_factor: checkBalanceFactor,
      table_size: (v) =>
        typeof v !== 'number' || !Number.isInteger(v)
          ? `expected an integer, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`
          : v > MAX_TABLE_SIZE
            ? `must be <= ${MAX_TABLE_SIZE} (got ${v})`
            : !isPrime(v)
              ? `must be a prime (got ${v}; e.g. 65537, 131101, 262217, 524453, 1048909)`
              : undefined,
    }),
};

export default maglev;

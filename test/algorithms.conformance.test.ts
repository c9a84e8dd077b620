// Every registered algorithm against the contract of algorithms/types.ts. Table-driven over the registry,
// so a new built-in is covered by adding it to the registry. Exact sequences and quality (keys moved,
// statistical shares) of each algorithm are in algorithms.test.ts.

import t from 'tap';
import { algorithms } from '../algorithms/registry.js';
import type { Algorithm, Candidate, Picker, Usable } from '../algorithms/types.js';

interface Host extends Candidate {
  name: string;
  weight: number;
  inflight: number;
  down?: boolean;
}

const hosts = (spec: Record<string, number>): Host[] =>
  Object.entries(spec).map(([name, weight]) => ({ name, weight, inflight: 0 }));

/** Caddy's selection-policy fixture: three hosts, one of them down. */
function caddyFixture(): Host[] {
  const h = hosts({ host1: 1, host2: 1, host3: 1 });
  h[1]!.down = true;
  return h;
}

const upOnly: Usable<Host> = (h) => !h.down;

/** The key of request `i`, or undefined to exercise the key-less path. */
const keyOf = (alg: Algorithm, i: number): string | undefined => (alg.usesKey ? `client-${i}` : undefined);

/**
 * Counts picks by name ('(none)' for undefined). Also counts, as '(bad index)', usable calls whose index
 * is not the candidate's position in the list given to create.
 */
function countPicks(
  alg: Algorithm,
  list: Host[],
  picks: number,
  usable: Usable<Host>,
  keyed = alg.usesKey,
): Map<string, number> {
  const picker = alg.create(list);
  const counts = new Map<string, number>();
  let badIndex = 0;
  const checked: Usable<Host> = (h, i) => {
    if (list[i] !== h) badIndex++;
    return usable(h, i);
  };
  for (let i = 0; i < picks; i++) {
    const h = picker.pick({ key: keyed ? `client-${i}` : undefined }, checked);
    const name = h?.name ?? '(none)';
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  if (badIndex > 0) counts.set('(bad index)', badIndex);
  return counts;
}

/** True when two fresh builds give the same picks for the same requests, i.e. no randomness. */
function isDeterministic(alg: Algorithm): boolean {
  const a = alg.create(hosts({ a: 3, b: 1, c: 2 }));
  const b = alg.create(hosts({ a: 3, b: 1, c: 2 }));
  for (let i = 0; i < 200; i++) {
    const key = keyOf(alg, i);
    if (a.pick({ key }, () => true)?.name !== b.pick({ key }, () => true)?.name) return false;
  }
  return true;
}

t.test('the registry holds the built-ins under their config names', async (t) => {
  t.same(
    [...algorithms.keys()].sort(),
    [
      'consistent-hash',
      'least-connections',
      'maglev',
      'peak-ewma',
      'power-of-two-choices',
      'random',
      'round-robin',
      'weighted-round-robin',
    ],
  );
  for (const [name, alg] of algorithms) t.equal(alg.name, name);
});

/**
 * Option sets the contract is also checked with (besides none): every `algorithm_options` key of a built-in
 * appears here. With nothing in flight, bounded load must not change any pick.
 */
const OPTION_VARIANTS: Record<string, Array<Record<string, unknown>>> = {
  'consistent-hash': [{ hash_balance_factor: 1.25 }],
  maglev: [{ hash_balance_factor: 1.25 }, { table_size: 131101 }, { table_size: 251, hash_balance_factor: 2 }],
  'peak-ewma': [{ decay: '1s' }],
};

t.test('validateOptions accepts the option variants used here and rejects unknown keys', async (t) => {
  for (const alg of algorithms.values()) {
    for (const o of OPTION_VARIANTS[alg.name] ?? []) t.same(alg.validateOptions?.(o) ?? [], [], `${alg.name} ${JSON.stringify(o)}`);
    const problems = alg.validateOptions?.({ no_such_option: 1 });
    if (problems) t.match(problems, [/^no_such_option: unknown option/], `${alg.name} reports an unknown key at it`);
  }
});

/** Each algorithm, and each of its option variants, as an Algorithm whose create passes the options. */
const variants: Algorithm[] = [];
for (const alg of algorithms.values()) {
  variants.push(alg);
  for (const o of OPTION_VARIANTS[alg.name] ?? []) {
    variants.push({ ...alg, name: `${alg.name} ${JSON.stringify(o)}`, create: (c) => alg.create(c, o) });
  }
}

for (const alg of variants) {
  t.test(alg.name, async (t) => {
    const modes = alg.usesKey ? [true, false] : [false];

    for (const keyed of modes) {
      const how = keyed ? 'with a key' : 'without a key';

      t.test(`skips unusable candidates (Caddy fixture, one of three down), ${how}`, async (t) => {
        const list = caddyFixture();
        const counts = countPicks(alg, list, 3000, upOnly, keyed);
        t.equal(counts.get('host2'), undefined, 'the down host is never picked');
        t.equal(counts.get('(none)'), undefined, 'a usable host is always found');
        t.ok((counts.get('host1') ?? 0) > 0 && (counts.get('host3') ?? 0) > 0, 'both up hosts get traffic');
        t.equal(counts.get('(bad index)'), undefined, 'usable gets each candidate with its index in the list');
      });

      t.test(`fails over as far as the last usable candidate, ${how}`, async (t) => {
        const list = hosts({ a: 1, b: 1, c: 1, d: 1, e: 1 });
        for (const survivor of list) {
          const counts = countPicks(alg, list, 200, (h) => h === survivor, keyed);
          t.same([...counts.keys()], [survivor.name], `only ${survivor.name} usable`);
        }
      });

      t.test(`never returns a candidate of weight 0, ${how}`, async (t) => {
        const list = hosts({ zero1: 0, a: 1, zero2: 0, b: 2, zero3: 0 });
        const counts = countPicks(alg, list, 3000, () => true, keyed);
        t.same([...counts.keys()].sort(), ['a', 'b']);
        const onlyZero = countPicks(alg, list, 100, (h) => h.weight === 0, keyed);
        t.same([...onlyZero.keys()], ['(none)'], 'undefined when only weight-0 candidates are usable');
      });

      t.test(`returns undefined when nothing is usable, ${how}`, async (t) => {
        const key = keyed ? 'k' : undefined;
        const list = caddyFixture();
        const picker = alg.create(list);
        for (let i = 0; i < 10; i++) t.equal(picker.pick({ key }, () => false), undefined);
        t.equal(picker.pick({ key }, upOnly)?.down, undefined, 'and recovers when some are usable again');
        t.equal(alg.create<Host>([]).pick({ key }, () => true), undefined, 'empty candidate list');
        t.equal(alg.create(hosts({ a: 0, b: 0 })).pick({ key }, () => true), undefined, 'all weights 0');
      });
    }

    t.test('honours weights', async (t) => {
      const weights = { a: 3, b: 1, c: 2 };
      const list = hosts(weights);
      const total = 6;
      const picks = 60_000;
      const counts = countPicks(alg, list, picks, () => true);
      t.same([...counts.keys()].sort(), ['a', 'b', 'c'], 'every candidate gets picks');
      const deterministic = isDeterministic(alg);
      for (const [name, w] of Object.entries(weights)) {
        const p = alg.usesWeights ? w / total : 1 / list.length;
        const got = counts.get(name) ?? 0;
        const expected = picks * p;
        if (alg.usesKey) {
          // A deterministic function of the names: the share is fixed, the bound only has to admit the
          // ring's / table's granularity (about 8% relative deviation for 160 points per unit of weight).
          t.ok(Math.abs(got - expected) <= 0.25 * expected, `${name}: ${got} keys, expected ~${expected}`);
        } else if (deterministic) {
          t.equal(got, expected, `${name}: exactly ${expected} of ${picks} picks`);
        } else {
          // 6 standard deviations of a binomial: fails by chance with probability < 1e-8.
          const sigma = Math.sqrt(picks * p * (1 - p));
          t.ok(Math.abs(got - expected) <= 6 * sigma, `${name}: ${got} picks, expected ${expected} ± ${6 * sigma}`);
        }
      }
    });

    if (alg.usesKey) {
      t.test('the same key always gives the same backend', async (t) => {
        const list = hosts({ a: 1, b: 2, c: 1, d: 3 });
        const picker = alg.create(list);
        const first = new Map<string, string | undefined>();
        for (let i = 0; i < 1000; i++) first.set(`k${i}`, picker.pick({ key: `k${i}` }, () => true)?.name);
        let differ = 0;
        for (let round = 0; round < 3; round++) {
          for (let i = 999; i >= 0; i--) {
            picker.pick({ key: undefined }, () => true); // key-less picks in between change nothing
            if (picker.pick({ key: `k${i}` }, () => true)?.name !== first.get(`k${i}`)) differ++;
          }
        }
        t.equal(differ, 0);
      });

      t.test('two independent builds agree on 10,000 keys', async (t) => {
        const spec = { 'app-1': 1, 'app-2': 3, 'app-3': 1, 'app-4': 2, 'app-5': 1 };
        const a: Picker<Host> = alg.create(hosts(spec));
        const b: Picker<Host> = alg.create(hosts(spec));
        const down = (h: Host): boolean => h.name !== 'app-2';
        let differ = 0;
        for (let i = 0; i < 10_000; i++) {
          const key = `10.1.${i >> 8}.${i & 255}`;
          if (a.pick({ key }, () => true)?.name !== b.pick({ key }, () => true)?.name) differ++;
          if (a.pick({ key }, down)?.name !== b.pick({ key }, down)?.name) differ++;
        }
        t.equal(differ, 0, 'also when a backend is down');
      });
    }
  });
}

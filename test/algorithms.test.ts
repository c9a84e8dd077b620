// Per-algorithm behaviour: exact sequences of the deterministic pickers, statistical bounds of the random
// ones, key movement of the hash ones against the 1/N optimum, MurmurHash3 test vectors, and module
// loading. The contract every algorithm shares is in algorithms.conformance.test.ts.

import { fileURLToPath } from 'node:url';
import t from 'tap';
import { consistentHash } from '../algorithms/consistent-hash.js';
import { HASH_SEED, murmur3_32, murmur3_32Bytes } from '../algorithms/hash.js';
import { leastConnections } from '../algorithms/least-connections.js';
import { maglev } from '../algorithms/maglev.js';
import { powerOfTwoChoices } from '../algorithms/power-of-two-choices.js';
import { random } from '../algorithms/random.js';
import { AlgorithmError, algorithms, loadAlgorithm } from '../algorithms/registry.js';
import { roundRobin } from '../algorithms/round-robin.js';
import type { Candidate, Picker, Usable } from '../algorithms/types.js';
import { weightedRoundRobin } from '../algorithms/weighted-round-robin.js';

interface Host extends Candidate {
  name: string;
  weight: number;
  inflight: number;
}

const hosts = (spec: Record<string, number>): Host[] =>
  Object.entries(spec).map(([name, weight]) => ({ name, weight, inflight: 0 }));

const all: Usable<Host> = () => true;

/** Names of `n` successive key-less picks, concatenated. */
function sequence(picker: Picker<Host>, n: number, usable: Usable<Host> = all): string {
  let s = '';
  for (let i = 0; i < n; i++) s += picker.pick({}, usable)?.name ?? '-';
  return s;
}

function counts(picker: Picker<Host>, n: number, usable: Usable<Host> = all): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const name = picker.pick({}, usable)?.name ?? '(none)';
    m.set(name, (m.get(name) ?? 0) + 1);
  }
  return m;
}

/** |got - n p| within 6 standard deviations of a binomial(n, p): a false failure is below 1e-8. */
function withinSixSigma(t: { ok: (v: boolean, m: string) => boolean }, got: number, n: number, p: number, what: string) {
  const sigma = Math.sqrt(n * p * (1 - p));
  t.ok(Math.abs(got - n * p) <= 6 * sigma, `${what}: ${got}, expected ${n * p} ± ${(6 * sigma).toFixed(0)}`);
}

t.test('murmur3_32', async (t) => {
  t.test('published test vectors (MurmurHash3_x86_32)', async (t) => {
    const vectors: [string, number, number][] = [
      ['', 0, 0x00000000],
      ['', 1, 0x514e28b7],
      ['', 0xffffffff, 0x81f16f39],
      ['\0\0\0\0', 0, 0x2362f9de],
      ['aaaa', 0x9747b28c, 0x5a97808a],
      ['aaa', 0x9747b28c, 0x283e0130],
      ['aa', 0x9747b28c, 0x5d211726],
      ['a', 0x9747b28c, 0x7fa09ea6],
      ['abcd', 0x9747b28c, 0xf0478627],
      ['abc', 0x9747b28c, 0xc84a62dd],
      ['ab', 0x9747b28c, 0x74875592],
      ['Hello, world!', 0x9747b28c, 0x24884cba],
      ['ππππππππ', 0x9747b28c, 0xd58063c1], // UTF-8: 16 bytes
      ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
      ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
      ['abc', 0, 0xb3dd93fa],
      ['test', 0, 0xba6bd213],
      ['héllo', 0, 0xbc9fa068],
    ];
    for (const [s, seed, want] of vectors) {
      t.equal(murmur3_32(s, seed), want, `${JSON.stringify(s)} seed ${seed.toString(16)}`);
      t.equal(murmur3_32Bytes(Buffer.from(s, 'utf8'), seed), want, `bytes of ${JSON.stringify(s)}`);
    }
    t.equal(HASH_SEED, 0);
    t.equal(murmur3_32('abc'), 0xb3dd93fa, 'default seed is HASH_SEED');
  });

  t.test("SMHasher's verification value 0xB0F57EE3", async (t) => {
    // KeysetTest.cpp VerificationTest: hash keys {}, {0}, {0,1}, ... {0..254} with seed 256 - length,
    // then hash the 256 little-endian results with seed 0.
    const key = new Uint8Array(256);
    const hashes = new Uint8Array(1024);
    const view = new DataView(hashes.buffer);
    for (let i = 0; i < 256; i++) {
      key[i] = i;
      view.setUint32(i * 4, murmur3_32Bytes(key, 256 - i, i), true);
    }
    t.equal(murmur3_32Bytes(hashes, 0), 0xb0f57ee3);
  });

  t.test('strings hash as their UTF-8 bytes (ASCII, 2-, 3-, 4-byte, lone surrogates)', async (t) => {
    let state = 12345;
    const next = (n: number): number => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      return state % n;
    };
    const char = (): string => {
      const kind = next(10);
      if (kind === 5) return String.fromCharCode(0x80 + next(0x780)); // 2 bytes
      if (kind === 6) return String.fromCharCode(0x800 + next(0xd000)); // 3 bytes, below the surrogates
      if (kind === 7) return String.fromCharCode(0xd800 + next(0x800)); // lone surrogate: U+FFFD
      if (kind === 8) return String.fromCodePoint(0x10000 + next(0x100000)); // surrogate pair: 4 bytes
      return String.fromCharCode(0x20 + next(0x5f)); // ASCII
    };
    let differ = 0;
    for (let i = 0; i < 5000; i++) {
      let s = '';
      const len = next(24);
      for (let j = 0; j < len; j++) s += char();
      if (murmur3_32(s, i) !== murmur3_32Bytes(Buffer.from(s, 'utf8'), i)) differ++;
    }
    t.equal(differ, 0);
    const long = 'é'.repeat(10_000) + 'x';
    t.equal(murmur3_32(long, 7), murmur3_32Bytes(Buffer.from(long, 'utf8'), 7), 'scratch buffer grows');
    t.equal(murmur3_32('a€'), murmur3_32Bytes(Buffer.from('a€', 'utf8')), 'non-ASCII in the tail');
  });

  t.test('is unsigned 32-bit', async (t) => {
    for (let i = 0; i < 1000; i++) {
      const h = murmur3_32(`key-${i}`);
      if (!(Number.isInteger(h) && h >= 0 && h <= 0xffffffff)) t.fail(`key-${i}: ${h}`);
    }
    t.equal(murmur3_32('', 0xffffffff), 0x81f16f39, 'seed 2^32-1 (> int32) is taken modulo 2^32');
  });
});

t.test('round-robin', async (t) => {
  const list = hosts({ a: 1, b: 5, c: 1 });
  const p = roundRobin.create(list);
  t.equal(sequence(p, 9), 'abcabcabc', 'in config order, weights ignored');
  let bDown = true;
  const usable: Usable<Host> = (h) => h.name !== 'b' || !bDown;
  t.equal(sequence(p, 6, usable), 'acacac', 'with b down, a and c alternate evenly');
  bDown = false;
  t.equal(sequence(p, 3), 'abc', 'b rejoins the rotation where it was');
  t.equal(sequence(roundRobin.create(hosts({ a: 1, z: 0, b: 1 })), 4), 'abab', 'weight 0 is skipped');
});

t.test('weighted-round-robin (NGINX smooth WRR)', async (t) => {
  const p = weightedRoundRobin.create(hosts({ a: 5, b: 1, c: 1 }));
  t.equal(sequence(p, 21), 'aabacaa'.repeat(3), 'weights 5, 1, 1 give a a b a c a a, repeated');

  const q = weightedRoundRobin.create(hosts({ a: 5, b: 1, c: 1 }));
  t.equal(sequence(q, 4, (h) => h.name !== 'a'), 'bcbc', 'only usable peers take part');
  t.equal(sequence(q, 7), 'aabacaa', 'back to the full cycle once a is usable again');

  const r = weightedRoundRobin.create(hosts({ a: 2, b: 1 }));
  t.equal(sequence(r, 6), 'abaaba', 'weights 2, 1');
  const s = weightedRoundRobin.create(hosts({ a: 0.5, b: 0.25, c: 0.25 }));
  t.equal(sequence(s, 8), 'abcaabca', 'fractional weights (slow start)');
});

t.test('least-connections', async (t) => {
  const list = hosts({ a: 1, b: 1, c: 1 });
  const p = leastConnections.create(list);
  t.equal(sequence(p, 9), 'abcabcabc', 'equal idle backends alternate');

  list[0]!.inflight = 5;
  list[1]!.inflight = 1;
  list[2]!.inflight = 3;
  t.equal(sequence(p, 5), 'bbbbb', 'the least loaded, read live at pick time');
  list[1]!.inflight = 4;
  t.equal(sequence(p, 3), 'ccc', 'follows inflight as it changes');
  list[0]!.inflight = 3;
  t.equal(sequence(p, 4), 'acac', 'ties among the least loaded alternate, others left out');
  t.equal(sequence(p, 2, (h) => h.name !== 'c'), 'aa', 'unusable ones are left out');

  const weighted = hosts({ a: 2, b: 1 });
  const w = leastConnections.create(weighted);
  weighted[0]!.inflight = 4; // 2 per unit of weight
  weighted[1]!.inflight = 3; // 3 per unit of weight
  t.equal(sequence(w, 3), 'aaa', 'load is inflight / weight');
  weighted[0]!.inflight = 0;
  weighted[1]!.inflight = 0;
  t.equal(sequence(w, 6), 'abaaba', 'idle backends of different weights share by weight (NGINX)');
});

/** Key -> backend name for `n` keys. */
function mapping(picker: Picker<Host>, n: number, usable: Usable<Host> = all): string[] {
  const out: string[] = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = picker.pick({ key: `user-${i}` }, usable)?.name ?? '(none)';
  return out;
}

const N = 10;
const KEYS = 100_000;
const backends = (n: number, weight = (_i: number) => 1): Host[] =>
  Array.from({ length: n }, (_, i) => ({ name: `backend-${i}`, weight: weight(i), inflight: 0 }));

for (const alg of [consistentHash, maglev]) {
  t.test(`${alg.name}: keys moved by membership changes, against the 1/N optimum`, async (t) => {
    const before = mapping(alg.create(backends(N)), KEYS);
    const shares = new Map<string, number>();
    for (const b of before) shares.set(b, (shares.get(b) ?? 0) + 1);
    t.equal(shares.size, N, 'every backend has keys');
    for (const [name, c] of shares) t.ok(c >= 0.7 * (KEYS / N) && c <= 1.4 * (KEYS / N), `${name} holds ${c}`);

    // Removal: 1 of N.
    const gone = 'backend-3';
    const after = mapping(alg.create(backends(N).filter((b) => b.name !== gone)), KEYS);
    let moved = 0;
    let betweenSurvivors = 0;
    for (let i = 0; i < KEYS; i++) {
      if (before[i] !== after[i]) {
        moved++;
        if (before[i] !== gone) betweenSurvivors++;
      }
    }
    t.ok(moved >= (0.7 * KEYS) / N && moved <= (1.4 * KEYS) / N, `removing 1 of ${N} moves ${moved} of ${KEYS}`);
    t.equal(after.filter((b) => b === gone).length, 0, 'no key stays on the removed backend');
    if (alg === consistentHash) t.equal(betweenSurvivors, 0, 'no key moves between two surviving backends');
    else t.ok(betweenSurvivors <= 0.01 * KEYS, `few keys move between survivors (${betweenSurvivors})`);

    // Marking a backend unusable (failover walk) moves exactly its keys, for both algorithms.
    const down = mapping(alg.create(backends(N)), KEYS, (h) => h.name !== gone);
    let wrong = 0;
    const spread = new Set<string>();
    for (let i = 0; i < KEYS; i++) {
      if (before[i] === gone) spread.add(down[i]!);
      else if (down[i] !== before[i]) wrong++;
    }
    t.equal(wrong, 0, 'an unusable backend gives up only its own keys');
    t.equal(spread.size, N - 1, 'and they spread over all the others');

    // Addition: N + 1.
    const added = 'backend-new';
    const grown = mapping(alg.create([...backends(N), { name: added, weight: 1, inflight: 0 }]), KEYS);
    let gained = 0;
    let elsewhere = 0;
    for (let i = 0; i < KEYS; i++) {
      if (before[i] !== grown[i]) {
        if (grown[i] === added) gained++;
        else elsewhere++;
      }
    }
    const optimum = KEYS / (N + 1);
    t.ok(gained >= 0.7 * optimum && gained <= 1.4 * optimum, `adding one moves ${gained} keys to it (~${optimum.toFixed(0)})`);
    if (alg === consistentHash) t.equal(elsewhere, 0, 'every moved key moves to the new backend');
    else t.ok(elsewhere <= 0.01 * KEYS, `few keys move between old backends (${elsewhere})`);
  });

  t.test(`${alg.name}: weights and determinism`, async (t) => {
    const weighted = mapping(alg.create(backends(N, (i) => (i < N / 2 ? 2 : 1))), KEYS);
    const heavy = weighted.filter((b) => Number(b.slice('backend-'.length)) < N / 2).length;
    const ratio = heavy / (KEYS - heavy);
    t.ok(ratio >= 1.7 && ratio <= 2.3, `weights 2:1 give ${ratio.toFixed(3)}:1 key shares`);

    const a = mapping(alg.create(backends(N)), KEYS);
    const b = mapping(alg.create(backends(N)), KEYS);
    const reversed = mapping(alg.create(backends(N).reverse()), KEYS);
    const moved = backends(N).map((h) => ({ ...h, address: 'changed' }));
    t.same(a, b, 'two builds map all keys alike');
    t.same(a, reversed, 'config order does not matter, only names and weights');
    t.same(a, mapping(alg.create(moved), KEYS), 'only the name is hashed');

    const list = hosts({ x: 1, y: 1, z: 1 });
    t.equal(sequence(alg.create(list), 6), 'xyzxyz', 'without a key: round-robin');
  });
}

t.test('consistent-hash: rings above 2^20 points are scaled down, keeping the shares', async (t) => {
  // 4000 + 2000 + 2000 weight units would be 1,280,000 points.
  const list = hosts({ a: 4000, b: 2000, c: 2000 });
  const m = mapping(consistentHash.create(list), 40_000);
  const a = m.filter((x) => x === 'a').length;
  t.ok(a >= 0.48 * 40_000 && a <= 0.52 * 40_000, `a (half the weight) holds ${a} of 40000 keys`);
  const tiny = hosts({ a: 1e9, b: 1 });
  t.equal(consistentHash.create(tiny).pick({ key: 'k' }, (h) => h.name !== 'a')?.name, 'b', 'every backend keeps a point');
});

t.test('random: shares follow the weights', async (t) => {
  const n = 100_000;
  const c = counts(random.create(hosts({ a: 1, b: 2, c: 3, d: 4 })), n);
  for (const [name, w] of [['a', 1], ['b', 2], ['c', 3], ['d', 4]] as const) withinSixSigma(t, c.get(name) ?? 0, n, w / 10, name);

  const d = counts(random.create(hosts({ a: 1, b: 2, c: 3, d: 4 })), n, (h) => h.name !== 'd');
  t.equal(d.get('d'), undefined, 'down backend never picked');
  for (const [name, w] of [['a', 1], ['b', 2], ['c', 3]] as const) withinSixSigma(t, d.get(name) ?? 0, n, w / 6, `${name} with d down`);

  const e = counts(random.create(hosts({ a: 1, b: 1, c: 1, d: 1, e: 1 })), n, (h) => h.name === 'a' || h.name === 'e');
  withinSixSigma(t, e.get('a') ?? 0, n, 0.5, 'a with only a and e usable (exact fallback pass)');
});

t.test('power-of-two-choices', async (t) => {
  const n = 60_000;
  const list = hosts({ a: 1, b: 1, c: 1 });
  list[1]!.inflight = 10;
  list[2]!.inflight = 10;
  const c = counts(powerOfTwoChoices.create(list), n);
  // a wins whenever it is one of the two distinct choices: 2 pairs out of 3.
  withinSixSigma(t, c.get('a') ?? 0, n, 2 / 3, 'least loaded of three');
  withinSixSigma(t, c.get('b') ?? 0, n, 1 / 6, 'b (tie with c: the first drawn wins)');

  const two = hosts({ a: 3, b: 1 });
  two[0]!.inflight = 6; // 2 per unit of weight
  two[1]!.inflight = 1; // 1 per unit of weight
  t.equal(sequence(powerOfTwoChoices.create(two), 20), 'b'.repeat(20), 'load is inflight / weight');

  const idle = counts(powerOfTwoChoices.create(hosts({ a: 3, b: 1 })), n);
  withinSixSigma(t, idle.get('a') ?? 0, n, 3 / 4, 'idle: shares follow the weights');

  const alone = counts(powerOfTwoChoices.create(list), 100, (h) => h.name === 'c');
  t.same([...alone.keys()], ['c'], 'a single usable candidate is returned');
});

t.test('loadAlgorithm', async (t) => {
  const baseDir = fileURLToPath(new URL('../../test/', import.meta.url));

  t.equal(await loadAlgorithm('maglev', baseDir), maglev, 'a built-in by name');
  for (const [name, a] of algorithms) t.equal(await loadAlgorithm(name, baseDir), a);

  const first = await loadAlgorithm('./fixtures/first-usable.mjs', baseDir);
  t.match(first, { name: 'first-usable', usesKey: false, usesWeights: false });
  const list = hosts({ z: 0, a: 1, b: 1 });
  t.equal(first.create(list).pick({}, (h) => h.name !== 'a')?.name, 'b', 'the default export is used');

  const named = await loadAlgorithm(`${baseDir}fixtures/named-export.mjs`, '/nonexistent');
  t.equal(named.name, 'last-usable', 'an absolute path, and a named `algorithm` export');
  const fromParent = await loadAlgorithm('../fixtures/named-export.mjs', `${baseDir}fixtures`);
  t.equal(fromParent, named, 'a "../" path against baseDir (same module instance)');

  const invalid = loadAlgorithm('./fixtures/invalid-algorithm.mjs', baseDir);
  await t.rejects(invalid, {
    code: 'ALGORITHM_INVALID',
    message: /invalid-algorithm\.mjs.*"create" must be a function.*"usesKey" must be a boolean.*"usesWeights" must be a boolean/,
  });
  await t.rejects(invalid, AlgorithmError);

  await t.rejects(loadAlgorithm('./fixtures/no-such-module.mjs', baseDir), {
    code: 'ALGORITHM_INVALID',
    message: /no-such-module\.mjs cannot be loaded/,
  });
  await t.rejects(loadAlgorithm('./algorithms.conformance.test.ts', baseDir), {
    code: 'ALGORITHM_INVALID',
  }, 'a module that cannot be imported');
  await t.rejects(loadAlgorithm('node:path', baseDir), { code: 'ALGORITHM_UNKNOWN' }, 'not a path: a name');
  await t.rejects(loadAlgorithm('leastconn', baseDir), {
    code: 'ALGORITHM_UNKNOWN',
    message: /unknown algorithm "leastconn": expected one of round-robin, .*maglev/,
  });
});

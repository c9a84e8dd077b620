// The algorithms' options and the completion callback: bounded-load hashing (exact in-flight fixture, key
// movement), peak-ewma (statistical share of a slow backend on a virtual clock, exact decay), maglev
// table_size (keys moved at N = 1000 against 1/N), and algorithm_options errors located by the real CLI.

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { consistentHash } from '../algorithms/consistent-hash.js';
import { defaultTableSize, DEFAULT_SIZES, isPrime, maglev, MAX_TABLE_SIZE } from '../algorithms/maglev.js';
import { PeakEwma, peakEwma, PENALTY } from '../algorithms/peak-ewma.js';
import { powerOfTwoChoices } from '../algorithms/power-of-two-choices.js';
import type { Algorithm, Candidate, Picker } from '../algorithms/types.js';
import { cli, tmpdir } from './helpers/lb.js';

interface Host extends Candidate {
  name: string;
  weight: number;
  inflight: number;
}

const hosts = (n: number, weight = (_i: number) => 1): Host[] =>
  Array.from({ length: n }, (_, i) => ({ name: `b${i}`, weight: weight(i), inflight: 0 }));

const all = (): boolean => true;

for (const alg of [consistentHash, maglev]) {
  t.test(`${alg.name} hash_balance_factor`, async (t) => {
    t.test('no backend exceeds ceil(c x T x w / W) in flight under a hot key (exact, deterministic fixture)', async (t) => {
      // The bound holds when a backend is chosen (T counts the new request): with arrivals only, it then holds
      // for every backend at every moment; when requests also end, T shrinks, so it is checked on the one
      // chosen.
      for (const [c, weights] of [
        [1.25, () => 1],
        [1.5, (i: number) => 1 + (i % 3)],
        [1, () => 1],
      ] as Array<[number, (i: number) => number]>) {
        const list = hosts(10, weights);
        const W = list.reduce((a, h) => a + h.weight, 0);
        const bound = (x: Host, total: number): number => Math.ceil((c * total * x.weight) / W);
        const picker = alg.create(list, { hash_balance_factor: c });
        // 80% of the picks carry one hot key.
        const keyOf = (i: number): string => (i % 5 === 0 ? `cold-${i}` : 'hot');
        let total = 0;
        let violations = 0;
        for (let i = 0; i < 500; i++) {
          picker.pick({ key: keyOf(i), inflightTotal: total }, all)!.inflight++;
          total++;
          for (const x of list) if (x.inflight > bound(x, total)) violations++;
        }
        t.equal(violations, 0, `c = ${c}, arrivals only: every backend within its bound after every pick`);
        // Then a request ends every third pick, oldest first.
        for (const x of list) x.inflight = 0;
        total = 0;
        const open: Host[] = [];
        for (let i = 0; i < 3000; i++) {
          const h = picker.pick({ key: keyOf(i), inflightTotal: total }, all)!;
          h.inflight++;
          total++;
          open.push(h);
          if (h.inflight > bound(h, total)) violations++;
          if (i % 3 === 2) {
            open.shift()!.inflight--;
            total--;
          }
        }
        t.equal(violations, 0, `c = ${c}, with completions: each chosen backend within its bound`);
        t.ok(list.every((x) => x.inflight > 0), 'the hot key spread over every backend');
      }
    });

    t.test('the same fixture without the option piles the hot key onto one backend (the check can fail)', async (t) => {
      const list = hosts(10);
      const picker = alg.create(list);
      for (let i = 0; i < 100; i++) picker.pick({ key: 'hot', inflightTotal: i }, all)!.inflight++;
      t.equal(Math.max(...list.map((h) => h.inflight)), 100);
    });

    t.test('keys move only as needed', async (t) => {
      const list = hosts(10);
      const plain = alg.create(list);
      const bounded = alg.create(list, { hash_balance_factor: 1.25 });
      const keys = Array.from({ length: 10_000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
      let differ = 0;
      for (const key of keys) if (plain.pick({ key }, all) !== bounded.pick({ key, inflightTotal: 0 }, all)) differ++;
      t.equal(differ, 0, 'nothing in flight: every key where the plain algorithm sends it');

      // b3 holds 100 of the 100 requests in flight: over its bound ceil(1.25 * 101 / 10) = 13; the others are
      // idle. Exactly b3's keys move, each where the plain algorithm sends it with b3 down.
      const hot = list[3]!;
      hot.inflight = 100;
      const notHot = (h: Host): boolean => h !== hot;
      let moved = 0;
      let wrong = 0;
      for (const key of keys) {
        const before = plain.pick({ key }, all);
        const now = bounded.pick({ key, inflightTotal: 100 }, all);
        if (now !== before) moved++;
        if (before !== hot ? now !== before : now !== plain.pick({ key }, notHot)) wrong++;
      }
      t.equal(wrong, 0, "only the overloaded backend's keys move, to their next backend in the algorithm's order");
      t.ok(moved > 500 && moved < 1500, `about 1/10 of the keys moved (${moved})`);
      hot.inflight = 0;
    });

    t.test('without inflightTotal the picker sums the candidates itself', async (t) => {
      const list = hosts(4);
      const picker = alg.create(list, { hash_balance_factor: 1 });
      for (let i = 0; i < 40; i++) picker.pick({ key: 'hot' }, all)!.inflight++;
      t.same(list.map((h) => h.inflight), [10, 10, 10, 10]);
    });

    t.test('a bound is relative to the usable candidates; a retry that excludes all but an overloaded one still gets it', async (t) => {
      const list = hosts(4);
      list[0]!.inflight = 50;
      const picker = alg.create(list, { hash_balance_factor: 1.25 });
      t.equal(picker.pick({ key: 'k', inflightTotal: 50 }, (h) => h === list[0]), list[0]);
      t.equal(picker.pick({ key: 'k', inflightTotal: 50 }, () => false), undefined);
    });

    t.test('validateOptions', async (t) => {
      t.same(alg.validateOptions!({ hash_balance_factor: 1 }), []);
      t.match(alg.validateOptions!({ hash_balance_factor: 0.9 }), [/^hash_balance_factor: must be >= 1/]);
      t.match(alg.validateOptions!({ hash_balance_factor: '1.25' }), [/^hash_balance_factor: expected a number/]);
    });
  });
}

/**
 * A closed loop on a virtual clock: a request arrives every `gapMs`; backend i answers after latency[i] ms;
 * completions call done(). Returns each backend's share of the picks.
 */
function simulate(alg: Algorithm, latency: number[], picks: number, gapMs: number): number[] {
  let now = 0;
  const list = hosts(latency.length);
  const picker: Picker<Host> = alg.create(list, { now: () => now, decay: '10s' });
  const ends: Array<{ at: number; h: Host; sent: number }> = [];
  const count = latency.map(() => 0);
  for (let i = 0; i < picks; i++) {
    now = i * gapMs;
    ends.sort((a, b) => a.at - b.at);
    while (ends.length > 0 && ends[0]!.at <= now) {
      const e = ends.shift()!;
      e.h.inflight--;
      picker.done?.(e.h, { latencyMs: e.at - e.sent, ok: true, status: 200 });
    }
    const h = picker.pick({}, all)!;
    const j = list.indexOf(h);
    count[j]!++;
    h.inflight++;
    ends.push({ at: now + latency[j]!, h, sent: now });
  }
  return count.map((c) => c / picks);
}

t.test('peak-ewma', async (t) => {
  t.test('a slow backend gets less traffic (statistical bound; power-of-two-choices as the contrast)', async (t) => {
    // Backend 0 answers in 50 ms, the other three in 5 ms; a request every 2 ms (about 2.5 in flight
    // among the fast ones). Measured over runs: peak-ewma gives the slow backend ~1%, P2C ~9%.
    const latency = [50, 5, 5, 5];
    const ewma = simulate(peakEwma, latency, 20_000, 2);
    const p2c = simulate(powerOfTwoChoices, latency, 20_000, 2);
    t.ok(ewma[0]! < 0.04, `peak-ewma: slow backend's share ${ewma[0]!.toFixed(4)} < 0.04`);
    t.ok(p2c[0]! > ewma[0]! * 2, `power-of-two-choices gives it more: ${p2c[0]!.toFixed(4)}`);
    for (const s of ewma.slice(1)) t.ok(Math.abs(s - 0.33) < 0.05, `fast backends share the rest evenly (${s.toFixed(3)})`);
  });

  t.test('peak-sensitive, then decays with time constant `decay` (exact)', async (t) => {
    const e = new PeakEwma(0);
    e.observe(10, 0, 10_000);
    t.equal(e.cost, 10);
    e.observe(100, 1, 10_000);
    t.equal(e.cost, 100, 'a sample above the cost replaces it at once');
    e.observe(20, 1001, 10_000);
    const w = Math.exp(-1000 / 10_000);
    t.equal(e.cost, 100 * w + 20 * (1 - w), 'a lower sample is averaged in by exp(-td / decay)');
    const before = e.cost;
    t.equal(e.load(0, 51_001, 10_000), before * Math.exp(-5), 'reading decays it toward 0: forgotten after a few decays');
    t.equal(e.load(3, 51_001, 10_000), e.cost * 4, 'load = cost x (inflight + 1)');
    t.equal(new PeakEwma(0).load(2, 5, 10_000), PENALTY + 2, 'no latency yet and busy: the penalty');
    t.equal(new PeakEwma(0).load(0, 5, 10_000), 0, 'no latency yet and idle: tried first');
  });

  t.test('through the picker: a backend slow once is avoided, then tried again once its cost has decayed', async (t) => {
    let now = 0;
    const [a, b] = hosts(2);
    const picker = peakEwma.create([a!, b!], { now: () => now, decay: '10s' });
    picker.done!(a!, { latencyMs: 1000, ok: true });
    picker.done!(b!, { latencyMs: 10, ok: true });
    let toA = 0;
    for (let i = 0; i < 100; i++) {
      now += 10;
      if (picker.pick({}, all) === a) toA++;
      picker.done!(b!, { latencyMs: 10, ok: true });
    }
    t.equal(toA, 0, 'while its cost is high, the slow backend gets nothing (two candidates: both always drawn)');
    now += 60_000; // 1000 * e^-6 = 2.5 ms < 10 ms
    picker.done!(b!, { latencyMs: 10, ok: true });
    t.equal(picker.pick({}, all), a, 'after 6 decay constants its cost is below the fast one');
  });

  t.test('a failed attempt never lowers the cost; a rebuilt picker keeps what was learned', async (t) => {
    let now = 0;
    const [a, b] = hosts(2);
    const p1 = peakEwma.create([a!, b!], { now: () => now });
    p1.done!(a!, { latencyMs: 200, ok: true });
    p1.done!(b!, { latencyMs: 100, ok: true });
    now += 5000;
    p1.done!(a!, { latencyMs: 1, ok: false }); // a fast failure
    const p2 = peakEwma.create([a!, b!], { now: () => now });
    t.equal(p2.pick({}, all), b, 'a still costs more than b');
  });

  t.test('validateOptions', async (t) => {
    t.same(peakEwma.validateOptions!({ decay: '500ms' }), []);
    t.match(peakEwma.validateOptions!({ decay: '0s' }), [/^decay: must be longer than 0/]);
    t.match(peakEwma.validateOptions!({ decay: 10 }), [/^decay: expected a duration string/]);
    t.match(peakEwma.validateOptions!({ now: 1 }), [/^now: expected a function/]);
  });
});

t.test('maglev table_size', async (t) => {
  t.test('the default ladder: primes, each at least 100 x N up to the cap', async (t) => {
    for (const m of DEFAULT_SIZES) t.ok(isPrime(m), `${m} is prime`);
    t.equal(DEFAULT_SIZES[DEFAULT_SIZES.length - 1], MAX_TABLE_SIZE);
    t.equal(defaultTableSize(10), 65537);
    t.equal(defaultTableSize(655), 65537);
    t.equal(defaultTableSize(656), 131101);
    t.equal(defaultTableSize(1000), 131101);
    t.equal(defaultTableSize(100_000), MAX_TABLE_SIZE);
    t.same([isPrime(1), isPrime(2), isPrime(65537), isPrime(65536), isPrime(5_000_011), isPrime(1_000_001)], [false, true, true, false, true, false]);
  });

  t.test('keys moved when 1 of 1000 backends is removed, against the 1/N optimum', async (t) => {
    const list = hosts(1000);
    const keys = Array.from({ length: 200_000 }, (_, i) => `key-${i}`);
    const rows: string[] = [];
    const extra: Record<number, number> = {};
    for (const size of [65537, 131101, 1048909]) {
      const before = maglev.create(list, { table_size: size });
      const after = maglev.create(list.filter((h) => h.name !== 'b500'), { table_size: size });
      let moved = 0;
      let needless = 0;
      for (const key of keys) {
        const a = before.pick({ key }, all);
        const b = after.pick({ key }, all);
        if (a !== b) {
          moved++;
          if (a!.name !== 'b500') needless++;
        }
      }
      extra[size] = moved / keys.length / (1 / 1000);
      rows.push(`M=${size}: ${((100 * moved) / keys.length).toFixed(3)}% of keys moved (${extra[size]!.toFixed(2)}x 1/N), ${needless} between two kept backends`);
    }
    t.comment(rows.join('\n'));
    // Measured (200,000 keys): 6.59x at 65537, 6.62x at 131101 (the default for N = 1000), 3.00x at 1048909.
    // Maglev's disruption falls slowly with M; 100 x N is the paper's bound for balance, not for disruption.
    t.ok(extra[1048909]! < 0.6 * extra[65537]!, 'a table of ~1000 x N moves clearly fewer keys than 65537');
    t.ok(extra[131101]! < 8, 'the default size stays within 8x the optimum');
  });

  t.test('validateOptions', async (t) => {
    t.same(maglev.validateOptions!({ table_size: 131101 }), []);
    t.match(maglev.validateOptions!({ table_size: 65536 }), [/^table_size: must be a prime \(got 65536/]);
    t.match(maglev.validateOptions!({ table_size: 5_000_017 }), [/^table_size: must be <= 5000011/]);
    t.match(maglev.validateOptions!({ table_size: 1.5 }), [/^table_size: expected an integer/]);
  });
});

t.test('algorithm_options errors are located by `lb validate` (file, line, key)', async (t) => {
  const dir = tmpdir();
  const file = path.join(dir, 'lb.toml');
  writeFileSync(
    file,
    [
      '[listeners.web]',
      'protocol = "http"',
      'listen = "127.0.0.1:18080"',
      'pool = "m"',
      '[pools.m]',
      'algorithm = "maglev"',
      'backends = [ { address = "127.0.0.1:9001" } ]',
      '[pools.m.algorithm_options]',
      'table_size = 65536',
      '[pools.r]',
      'algorithm = "round-robin"',
      'algorithm_options = { hash_balance_factor = 1.25 }',
      'backends = [ { address = "127.0.0.1:9001" } ]',
      '',
    ].join('\n'),
  );
  const r = await cli(['validate', '-c', file]);
  t.equal(r.code, 1);
  t.match(r.stderr, `${file}:9:1: pools.m.algorithm_options.table_size: must be a prime (got 65536`);
  t.match(r.stderr, /lb\.toml:12:\d+: pools\.r\.algorithm_options\.hash_balance_factor: unknown option for algorithm round-robin \(it takes none\)/);
});

// The O(log N) forms of weighted-round-robin (WF2Q virtual time) and least-connections (a heap kept by the
// inflightChanged hook), used above SMALL_POOL candidates: each against a straightforward O(N) reference
// of the same rule, over random weights, random in-flight changes and random usable sets (fixed seeds, so
// every run replays the same cases), plus the share bound that smooth WRR and WF2Q both keep.

import t from 'tap';
import { SMALL_POOL } from '../algorithms/heap.js';
import { leastConnections, LeastLoadHeapPicker } from '../algorithms/least-connections.js';
import type { Candidate, Picker, Usable } from '../algorithms/types.js';
import { SmoothWeightedPicker, VirtualTimePicker, weightedRoundRobin } from '../algorithms/weighted-round-robin.js';
import { mulberry32 } from '../bench/sim-model.js';

interface Host extends Candidate {
  name: string;
  weight: number;
  inflight: number;
  i: number;
}

/** Weights: integers 1..10, fractions (as slow start makes), and some 0 (never picked). */
function randomHosts(rng: () => number, n: number): Host[] {
  return Array.from({ length: n }, (_, i) => {
    const r = rng();
    const weight = r < 0.05 ? 0 : r < 0.55 ? 1 + Math.floor(rng() * 10) : Math.round(rng() * 1000) / 100 + 0.01;
    return { name: `h${i}`, weight, inflight: 0, i };
  });
}

/** WF2Q by a plain scan: the same arithmetic as VirtualTimePicker, the minimum found in O(N). */
class ReferenceWf2q {
  private readonly live: Host[];
  private readonly start: number[];
  private readonly finish: number[];
  private now = 0;
  private readonly step: number;
  constructor(list: Host[]) {
    this.live = list.filter((h) => h.weight > 0);
    this.start = this.live.map(() => 0);
    this.finish = this.live.map((h) => 1 / h.weight);
    let total = 0;
    for (const h of this.live) total += h.weight;
    this.step = 1 / total;
  }
  pick(usable: Usable<Host>): Host | undefined {
    const asked = new Set<number>();
    for (;;) {
      let best = -1;
      for (let j = 0; j < this.live.length; j++) {
        if (asked.has(j) || this.start[j]! > this.now) continue;
        if (best < 0 || this.finish[j]! < this.finish[best]!) best = j;
      }
      if (best < 0) {
        for (let j = 0; j < this.live.length; j++) {
          if (asked.has(j)) continue;
          if (best < 0 || this.start[j]! < this.start[best]!) best = j;
        }
      }
      if (best < 0) return undefined;
      this.start[best] = this.finish[best]!;
      this.finish[best] = this.start[best]! + 1 / this.live[best]!.weight;
      this.now += this.step;
      const h = this.live[best]!;
      if (usable(h, h.i)) return h;
      asked.add(best);
    }
  }
}

/** Least (inflight / weight, tie tag, order) among usable candidates, inflight read live. */
class ReferenceLeastLoad {
  private readonly live: Host[];
  private readonly tag: number[];
  private now = 0;
  constructor(list: Host[]) {
    this.live = list.filter((h) => h.weight > 0);
    this.tag = this.live.map(() => 0);
  }
  pick(usable: Usable<Host>): Host | undefined {
    let best = -1;
    let bestLoad = Infinity;
    for (let j = 0; j < this.live.length; j++) {
      const h = this.live[j]!;
      if (!usable(h, h.i)) continue;
      const load = h.inflight / h.weight;
      if (best < 0 || load < bestLoad || (load === bestLoad && this.tag[j]! < this.tag[best]!)) {
        best = j;
        bestLoad = load;
      }
    }
    if (best < 0) return undefined;
    const s = Math.max(this.tag[best]!, this.now);
    this.now = s;
    this.tag[best] = s + 1 / this.live[best]!.weight;
    return this.live[best];
  }
}

/** A usable predicate for one pick: each candidate out with probability `p`, or every one when p < 0. */
function randomUsable(rng: () => number, n: number, p: number): { usable: Usable<Host>; none: boolean } {
  if (p < 0) return { usable: () => false, none: true };
  const up = Array.from({ length: n }, () => rng() >= p);
  return { usable: (h) => up[h.i]!, none: false };
}

t.test('create picks the O(N) form up to SMALL_POOL candidates and the O(log N) form above', async (t) => {
  const list = (n: number): Host[] => Array.from({ length: n }, (_, i) => ({ name: `h${i}`, weight: 1, inflight: 0, i }));
  t.ok(weightedRoundRobin.create(list(SMALL_POOL)) instanceof SmoothWeightedPicker);
  t.ok(weightedRoundRobin.create(list(SMALL_POOL + 1)) instanceof VirtualTimePicker);
  t.equal(leastConnections.create(list(SMALL_POOL)).inflightChanged, undefined, 'no hook: the pool pays nothing');
  t.ok(leastConnections.create(list(SMALL_POOL + 1)) instanceof LeastLoadHeapPicker);
  // Weight-0 candidates do not count: 40 listed, 32 eligible.
  const mixed = list(40).map((h, i) => ({ ...h, weight: i % 5 === 0 ? 0 : 1 }));
  t.ok(weightedRoundRobin.create(mixed) instanceof SmoothWeightedPicker);
});

t.test('weighted-round-robin above SMALL_POOL: the WF2Q heap picks what the O(N) reference picks', async (t) => {
  const rng = mulberry32(16);
  let picks = 0;
  let mismatches = 0;
  let undefinedPicks = 0;
  for (let trial = 0; trial < 40; trial++) {
    const n = SMALL_POOL + 1 + Math.floor(rng() * 300);
    const list = randomHosts(rng, n);
    const heap = new VirtualTimePicker(list);
    const ref = new ReferenceWf2q(list);
    const outRate = [0, 0.1, 0.5, 0.95][trial % 4]!;
    for (let k = 0; k < 2000; k++) {
      const { usable } = randomUsable(rng, n, rng() < 0.01 ? -1 : rng() < 0.5 ? 0 : outRate);
      const a = heap.pick({}, usable);
      const b = ref.pick(usable);
      picks++;
      if (a === undefined) undefinedPicks++;
      if (a !== b) mismatches++;
    }
  }
  t.equal(mismatches, 0, `${picks} picks compared`);
  t.ok(undefinedPicks > 0, 'the cases include picks with nothing usable');
});

t.test('least-connections above SMALL_POOL: the heap picks what the O(N) reference picks', async (t) => {
  const rng = mulberry32(61);
  let picks = 0;
  let mismatches = 0;
  let ties = 0;
  for (let trial = 0; trial < 60; trial++) {
    const n = SMALL_POOL + 1 + Math.floor(rng() * 300);
    const list = randomHosts(rng, n);
    // Equal weights in half of the trials: more ties for the rotation to break.
    if (trial % 2 === 0) for (const h of list) if (h.weight > 0) h.weight = 1;
    const heap = leastConnections.create(list) as Picker<Host>;
    if (typeof heap.inflightChanged !== 'function') throw new Error('the heap form has the hook');
    const ref = new ReferenceLeastLoad(list);
    const busy: Host[] = [];
    const outRate = [0, 0.1, 0.5, 0.95][trial % 4]!;
    for (let k = 0; k < 2000; k++) {
      const { usable } = randomUsable(rng, n, rng() < 0.01 ? -1 : rng() < 0.5 ? 0 : outRate);
      const a = heap.pick({}, usable);
      const b = ref.pick(usable);
      picks++;
      if (a !== b) mismatches++;
      if (a && a.inflight === 0) ties++;
      // Begin the picked one; end a random one now and then (as Backend.begin/end do, hook after).
      if (a) {
        a.inflight++;
        heap.inflightChanged!(a);
        busy.push(a);
      }
      while (busy.length > 0 && rng() < 0.45) {
        const h = busy.splice(Math.floor(rng() * busy.length), 1)[0]!;
        h.inflight--;
        heap.inflightChanged!(h);
      }
    }
    heap.inflightChanged!({ name: 'stranger', weight: 1, inflight: 3, i: -1 }); // ignored
  }
  t.equal(mismatches, 0, `${picks} picks compared`);
  t.ok(ties > 1000, `the cases include picks among idle (tied) backends (${ties})`);
});

t.test('least-connections above SMALL_POOL: idle ties rotate by weight, load decides otherwise', async (t) => {
  const list: Host[] = Array.from({ length: 40 }, (_, i) => ({ name: `h${i}`, weight: i < 20 ? 2 : 1, inflight: 0, i }));
  const p = leastConnections.create(list);
  const counts = new Map<Host, number>();
  for (let k = 0; k < 600; k++) {
    const h = p.pick({}, () => true)!;
    counts.set(h, (counts.get(h) ?? 0) + 1);
  }
  t.same(
    [...new Set(list.map((h) => `${h.weight}:${counts.get(h)}`))].sort(),
    ['1:10', '2:20'],
    'nothing in flight: 600 picks over weights 2 (x20) and 1 (x20) give exactly 20 and 10 each',
  );
  list[7]!.inflight = 0;
  for (const h of list) {
    h.inflight = h === list[7] ? 0 : 1;
    p.inflightChanged!(h);
  }
  t.equal(p.pick({}, () => true), list[7], 'the only idle one');
  t.equal(p.pick({}, (h) => h !== list[7]), list[0], 'when it is unusable: the least loaded by inflight / weight (weight 2)');
});

t.test('WF2Q and smooth WRR keep every prefix within one pick of the weight share', async (t) => {
  const rng = mulberry32(5);
  for (const [name, make] of [
    ['smooth WRR', (l: Host[]) => new SmoothWeightedPicker(l)],
    ['WF2Q', (l: Host[]) => new VirtualTimePicker(l)],
  ] as const) {
    let worst = 0;
    for (let trial = 0; trial < 40; trial++) {
      const list = randomHosts(rng, 2 + Math.floor(rng() * 100)).filter((h) => h.weight > 0);
      const total = list.reduce((s, h) => s + h.weight, 0);
      const p = make(list);
      const counts = new Float64Array(list.length);
      const pos = new Map(list.map((h, j) => [h, j]));
      for (let k = 1; k <= 3000; k++) {
        counts[pos.get(p.pick({}, () => true)!)!]!++;
        for (let j = 0; j < list.length; j++) worst = Math.max(worst, Math.abs(counts[j]! - (k * list[j]!.weight) / total));
      }
    }
    t.ok(worst < 1, `${name}: |picks - k * w / W| < 1 over every prefix (worst ${worst.toFixed(3)})`);
  }
  const wf = new VirtualTimePicker([5, 1, 1].map((weight, i) => ({ name: 'abc'[i]!, weight, inflight: 0, i })));
  let seq = '';
  for (let k = 0; k < 14; k++) seq += wf.pick({}, () => true)!.name;
  t.equal(seq, 'abaacaa'.repeat(2), 'WF2Q with weights 5, 1, 1 (smooth WRR: aabacaa)');
});

t.test('WF2Q above SMALL_POOL: an unusable candidate loses its turns, the others share by weight', async (t) => {
  const list: Host[] = Array.from({ length: 50 }, (_, i) => ({ name: `h${i}`, weight: 1 + (i % 3), inflight: 0, i }));
  const p = weightedRoundRobin.create(list);
  const down = new Set<Host>([list[0]!, list[1]!, list[2]!]);
  const counts = new Map<Host, number>();
  const up = list.filter((h) => !down.has(h));
  const upWeight = up.reduce((s, h) => s + h.weight, 0);
  const picks = upWeight * 100;
  for (let k = 0; k < picks; k++) {
    const h = p.pick({}, (c) => !down.has(c))!;
    counts.set(h, (counts.get(h) ?? 0) + 1);
  }
  t.equal([...down].filter((h) => counts.has(h)).length, 0, 'never picked while unusable');
  const dev = Math.max(...up.map((h) => Math.abs((counts.get(h) ?? 0) - h.weight * 100)));
  t.ok(dev <= 2, `each usable one within 2 picks of 100 x its weight (worst ${dev})`);
  down.clear();
  const back = new Map<Host, number>();
  for (let k = 0; k < 100; k++) {
    const h = p.pick({}, () => true)!;
    back.set(h, (back.get(h) ?? 0) + 1);
  }
  // Had it kept its missed turns (about 300 over the picks above), it would now take nearly every pick.
  const got = back.get(list[2]!) ?? 0;
  t.ok(got < (100 * 3) / (upWeight + 6) + 2, `a candidate coming back gets no catch-up burst (${got} of 100 picks, weight 3 of ${upWeight + 6})`);
});

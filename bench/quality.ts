// Part 1 of `lb bench`: the quality of every algorithm, in process, with no network (Envoy's load-balancer
// benchmarks report the same things: hit distribution against the weights, keys moved against the optimum).
//
//   - speed: ns per pick over 10, 100, 1000 backends (the Picker is built before timing starts; the
//     `usable` predicate accepts every candidate);
//   - weight share: each backend's share of the picks against its weight share (weights 1..5 cycling),
//     as max and mean absolute relative deviation, next to the noise floor of ideal independent draws;
//   - for algorithms with `usesKey`: the share of 100k keys that move when 1 of N backends is removed, 1 is
//     added, or 1 is re-weighted x2, next to the optimum; and whether two independent builds agree on every key;
//   - a closed loop on a virtual clock (a discrete-event simulation, no timers): clients that send their
//     next request as soon as the last one answers, against backends of which one is 10x slower. Shows
//     how load-aware algorithms (least-connections, power-of-two-choices) steer around the slow one.
//
// The algorithm list comes from the registry (plus module paths given by the user), so a new algorithm
// shows up in every table and chart with no change here.

import { rampDraw } from '../algorithms/ramp.js';
import type { Algorithm, Candidate, Picker, PickContext, Usable } from '../algorithms/types.js';
import { barChart, lineChart, SEQUENTIAL } from './svg.js';
import { num, pct, percentile, progress, Report, sig, table, type BenchAlgorithm } from './report.js';
import { MinHeap, mulberry32 } from './sim-model.js';

export { mulberry32 };

/** A backend as the bench feeds it to a Picker; `inflight` is mutated by the closed-loop simulation only. */
export interface SimBackend extends Candidate {
  name: string;
  weight: number;
  inflight: number;
}

/** Weights 1, 2, 3, 4, 5, 1, 2, ... (the weighted part of the quality report). */
export const cyclingWeight = (i: number): number => (i % 5) + 1;

/** `n` backends named b0 .. b{n-1} with weight `weightOf(i)` and nothing in flight. */
export function makeBackends(n: number, weightOf: (i: number) => number = () => 1): SimBackend[] {
  return Array.from({ length: n }, (_, i) => ({ name: `b${i}`, weight: weightOf(i), inflight: 0 }));
}

const ACCEPT_ALL: Usable<Candidate> = () => true;

/** The hash keys of the bench: "user-0" .. "user-{count-1}" (any distinct strings would do). */
export function makeKeys(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `user-${i}`);
}

// ---- speed ---------------------------------------------------------------------------------------------

/** Defeats dead-code elimination of timed picks. */
let sink = 0;

/**
 * ns per pick: the best of `rounds` timed batches of about `batchMs` each, after a warm-up (the minimum,
 * as Python's timeit advises: on a shared machine, noise only ever adds time). Build time is excluded.
 * Key-based algorithms get a different key on each pick (4096 keys cycling); the others {}.
 */
export function nsPerPick(alg: Algorithm, n: number, batchMs = 40, rounds = 7): number {
  const picker = alg.create(makeBackends(n, cyclingWeight));
  const ctxs: PickContext[] = alg.usesKey ? makeKeys(4096).map((key) => ({ key })) : Array.from({ length: 4096 }, () => ({}));
  const run = (count: number): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      const c = picker.pick(ctxs[i & 4095]!, ACCEPT_ALL);
      sink += c === undefined ? 1 : c.weight;
    }
    return Number(process.hrtime.bigint() - t0);
  };
  // Calibrate: double the batch until it takes batchMs (this is also the warm-up).
  let count = 1000;
  for (let spent = run(count); spent < batchMs * 1e6 && count < 1e9; spent = run(count)) {
    count = Math.ceil(count * Math.min(10, Math.max(2, (batchMs * 1e6) / Math.max(spent, 1))));
  }
  return Math.min(...Array.from({ length: rounds }, () => run(count) / count));
}

// ---- weight shares ---------------------------------------------------------------------------------------

export interface ShareDeviation {
  /** What the shares are compared with: weights (usesWeights) or equal shares. */
  target: 'weights' | 'equal';
  picks: number;
  /** max and mean over backends of |share - target share| / target share. */
  maxAbsRelDev: number;
  meanAbsRelDev: number;
  /**
   * The mean absolute relative deviation that ideal independent random draws would show with this many
   * picks: mean over backends of sqrt(2/pi) * sqrt((1 - p) / (picks * p)). Random algorithms should sit
   * near it; deterministic ones near 0.
   */
  noiseFloor: number;
  /** Max over mean of count / target share: 1 is perfect balance. */
  maxOverMean: number;
}

/**
 * Picks about `minPicks` times (rounded up to whole cycles of sum(weights)) over n backends of cycling
 * weights 1..5, with a fresh key per pick for key-based algorithms, and compares each backend's share
 * with its target share.
 */
export function shareDeviation(alg: Algorithm, n: number, minPicks = 100_000): ShareDeviation {
  const backends = makeBackends(n, cyclingWeight);
  const picker = alg.create(backends);
  const target = alg.usesWeights ? 'weights' : 'equal';
  const tw = backends.map((b) => (alg.usesWeights ? b.weight : 1));
  const total = tw.reduce((a, b) => a + b, 0);
  const sumW = backends.reduce((a, b) => a + b.weight, 0);
  const picks = Math.ceil(Math.max(minPicks, 100 * sumW) / sumW) * sumW;
  const counts = countPicks(picker, backends, picks, alg.usesKey ? (i) => `key-${i}` : undefined);
  let maxDev = 0;
  let sumDev = 0;
  let noise = 0;
  let maxLoad = 0;
  let sumLoad = 0;
  backends.forEach((_, i) => {
    const p = tw[i]! / total;
    const share = counts[i]! / picks;
    const dev = Math.abs(share - p) / p;
    maxDev = Math.max(maxDev, dev);
    sumDev += dev;
    noise += Math.sqrt(2 / Math.PI) * Math.sqrt((1 - p) / (picks * p));
    const load = share / p;
    maxLoad = Math.max(maxLoad, load);
    sumLoad += load;
  });
  return { target, picks, maxAbsRelDev: maxDev, meanAbsRelDev: sumDev / n, noiseFloor: noise / n, maxOverMean: maxLoad / (sumLoad / n) };
}

/** Counts picks per backend position; `keyOf(i)` gives pick i's key (undefined: no key). */
function countPicks(picker: Picker<SimBackend>, backends: SimBackend[], picks: number, keyOf?: (i: number) => string): number[] {
  const pos = new Map(backends.map((b, i) => [b, i]));
  const counts = new Array<number>(backends.length).fill(0);
  const noKey: PickContext = {};
  for (let i = 0; i < picks; i++) {
    const c = picker.pick(keyOf ? { key: keyOf(i) } : noKey, ACCEPT_ALL);
    if (c) counts[pos.get(c)!]!++;
  }
  return counts;
}

/**
 * Smooth weighted round robin's promise: over each window of sum(weights) consecutive picks, every backend
 * is picked exactly `weight` times. Returns how many of `cycles` windows met it exactly.
 */
export function exactCycles(alg: Algorithm, weights: readonly number[], cycles = 20): { cycles: number; exact: number } {
  const backends = weights.map((weight, i) => ({ name: `b${i}`, weight, inflight: 0 }));
  const picker = alg.create(backends);
  const sumW = weights.reduce((a, b) => a + b, 0);
  let exact = 0;
  for (let c = 0; c < cycles; c++) {
    const counts = countPicks(picker, backends, sumW);
    if (counts.every((k, i) => k === weights[i])) exact++;
  }
  return { cycles, exact };
}

// ---- key movement ----------------------------------------------------------------------------------------

export interface KeyMovement {
  n: number;
  keys: number;
  /** Share of keys whose backend changed when backend b{n/2} is removed; optimum 1/n (its own keys). */
  removed: number;
  /** Of those, keys that moved between two backends that both stayed (0 for a perfectly consistent hash). */
  removedCollateral: number;
  /** Share of keys that moved when b{n} is added; optimum 1/(n+1). */
  added: number;
  /** Share of keys that moved when b{n/2}'s weight goes 1 -> 2; optimum 2/(n+1) - 1/n. */
  reweighted: number;
  optimum: { removed: number; added: number; reweighted: number };
  /** True when two pickers built independently from equal inputs map every key alike. */
  buildsAgree: boolean;
  /** Keys on which they differ. */
  disagreements: number;
}

/** The backend name each key maps to. */
function mapKeys(alg: Algorithm, backends: SimBackend[], keys: readonly string[]): string[] {
  const picker = alg.create(backends);
  return keys.map((key) => picker.pick({ key }, ACCEPT_ALL)?.name ?? '');
}

function movedShare(a: readonly string[], b: readonly string[]): number {
  let moved = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) moved++;
  return moved / a.length;
}

/** Two independent builds from equal (but distinct) inputs: do they map every key alike? */
export function buildsAgree(alg: Algorithm, n: number, keys: readonly string[]): { agree: boolean; disagreements: number } {
  const a = mapKeys(alg, makeBackends(n), keys);
  const b = mapKeys(alg, makeBackends(n), keys);
  const disagreements = Math.round(movedShare(a, b) * keys.length);
  return { agree: disagreements === 0, disagreements };
}

/** Keys moved by membership and weight changes, over n backends of weight 1 (see KeyMovement). */
export function keyMovement(alg: Algorithm, n: number, keys: readonly string[] = makeKeys(100_000)): KeyMovement {
  const base = makeBackends(n);
  const before = mapKeys(alg, base, keys);
  const victim = `b${n >> 1}`;

  const after = mapKeys(alg, base.filter((b) => b.name !== victim), keys);
  let collateral = 0;
  for (let i = 0; i < keys.length; i++) if (before[i] !== victim && before[i] !== after[i]) collateral++;

  const added = mapKeys(alg, [...makeBackends(n), { name: `b${n}`, weight: 1, inflight: 0 }], keys);
  const reweighted = mapKeys(alg, makeBackends(n, (i) => (i === n >> 1 ? 2 : 1)), keys);
  const agreement = buildsAgree(alg, n, keys);
  return {
    n,
    keys: keys.length,
    removed: movedShare(before, after),
    removedCollateral: collateral / keys.length,
    added: movedShare(before, added),
    reweighted: movedShare(before, reweighted),
    optimum: { removed: 1 / n, added: 1 / (n + 1), reweighted: 2 / (n + 1) - 1 / n },
    buildsAgree: agreement.agree,
    disagreements: agreement.disagreements,
  };
}

// ---- slow start of a key-hashing pool ----------------------------------------------------------------------

/** One way of ramping a backend: what happened over the whole ramp. */
export interface RampChurn {
  /** Picker builds (each a table rebuild in every worker) from the backend coming up to the end of the ramp. */
  rebuilds: number;
  /** Largest share of keys that moved between two backends that are not ramping, in one step. */
  movedOthersMax: number;
  /** Keys that left the ramping backend in a step (a key flapping back), over the whole ramp. */
  leftRamping: number;
  /** Per state (down, then each ramp step): keys on the ramping backend / keys on it after the ramp. */
  shares: number[];
}

export interface SlowStartChurn {
  n: number;
  keys: number;
  /** The ramp fraction at each state (0: down; then 0.05, 0.1, ... 0.9 as the primary sends them; 1: done). */
  ramps: number[];
  /** Weight ramp: the table is rebuilt with the ramped weight at each step (what non-hash algorithms get). */
  weight: RampChurn;
  /** Key admission (algorithms/ramp.ts): the table keeps the full weight, a share r of the keys is admitted. */
  admission: RampChurn;
}

/**
 * Backend b{n/2} of n (weight 1) comes up with slow start in the primary's 10 steps, both ways (see
 * SlowStartChurn), over `keys`: who serves each key in each state. The admission rule is BackendPool.pick's:
 * the table's choice among backends that are up and admit the key, else among those up.
 */
export function slowStartChurn(alg: Algorithm, n: number, keys: readonly string[]): SlowStartChurn {
  const ramps = [0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
  const victim = n >> 1;
  const draws = keys.map(rampDraw);
  const measure = (owners: (step: number) => { names: string[]; rebuilt: boolean }): RampChurn => {
    let rebuilds = 0;
    let movedOthersMax = 0;
    let leftRamping = 0;
    const shares: number[] = [];
    let prev: string[] | undefined;
    ramps.forEach((_, step) => {
      const { names, rebuilt } = owners(step);
      if (rebuilt && step > 0) rebuilds++;
      let on = 0;
      for (const name of names) if (name === `b${victim}`) on++;
      shares.push(on);
      if (prev) {
        let moved = 0;
        for (let i = 0; i < names.length; i++) {
          if (prev[i] === names[i]) continue;
          if (prev[i] === `b${victim}`) leftRamping++;
          else if (names[i] !== `b${victim}`) moved++;
        }
        movedOthersMax = Math.max(movedOthersMax, moved / keys.length);
      }
      prev = names;
    });
    const atFull = shares.at(-1)!;
    return { rebuilds, movedOthersMax, leftRamping, shares: shares.map((on) => (atFull > 0 ? on / atFull : 0)) };
  };

  const backends = makeBackends(n);
  const full = alg.create(backends);
  let lastWeight = 1;
  const weight = measure((step) => {
    const r = ramps[step]!;
    // Down: the table is as before (health does not rebuild); the backend is skipped.
    if (r === 0) return { names: keys.map((key) => full.pick({ key }, (b) => b !== backends[victim])?.name ?? ''), rebuilt: false };
    const w = Math.round(r * 1000) / 1000;
    const picker = alg.create(makeBackends(n, (i) => (i === victim ? w : 1)));
    const rebuilt = w !== lastWeight;
    lastWeight = w;
    return { names: keys.map((key) => picker.pick({ key }, ACCEPT_ALL)?.name ?? ''), rebuilt };
  });
  const admission = measure((step) => {
    const r = ramps[step]!;
    const names = keys.map((key, i) => {
      const up = (b: SimBackend): boolean => b !== backends[victim] || r > 0;
      const admitted = (b: SimBackend): boolean => b !== backends[victim] || draws[i]! < r;
      return (full.pick({ key }, r < 1 ? admitted : up) ?? full.pick({ key }, up))?.name ?? '';
    });
    return { names, rebuilt: false };
  });
  return { n, keys: keys.length, ramps, weight, admission };
}

// ---- closed loop on a virtual clock ------------------------------------------------------------------------

export interface ClosedLoopOptions {
  /** Median service time of each backend in ms; default [1, 1, 10] (the last one 10x slower). */
  latenciesMs?: number[];
  /**
   * Requests each backend serves at once (a worker pool); more wait in line, first come first served.
   * Default Infinity: a pure delay.
   */
  slots?: number;
  /** Concurrent clients, each with one request outstanding; default 32. */
  clients?: number;
  /** Completed requests to simulate; default 100k. */
  requests?: number;
  seed?: number;
}

export interface ClosedLoopResult {
  latenciesMs: number[];
  slots: number;
  clients: number;
  requests: number;
  /** Share of requests served by each backend, in backend order. */
  shares: number[];
  p50: number;
  p90: number;
  p99: number;
  meanMs: number;
  /** Completed requests per virtual second. */
  throughput: number;
}

/**
 * Discrete-event simulation: each backend serves up to `slots` requests at once, each taking its latency
 * times a uniform jitter in [0.8, 1.2]; the others wait in its line (in flight for the balancer, as a
 * real backend's accept queue is). A client picks with
 * the backends' live `inflight` counts, waits for the answer, and sends its next request at once. Key-based
 * algorithms get a uniformly random key of 10k per request. Deterministic for a seed, except for
 * algorithms that draw from Math.random themselves.
 */
export function simulateClosedLoop(alg: Algorithm, opts: ClosedLoopOptions = {}): ClosedLoopResult {
  const latencies = opts.latenciesMs ?? [1, 1, 10];
  const slots = opts.slots ?? Infinity;
  const clients = opts.clients ?? 32;
  const requests = opts.requests ?? 100_000;
  const rng = mulberry32(opts.seed ?? 42);
  const backends = latencies.map((_, i) => ({ name: `b${i}`, weight: 1, inflight: 0 }));
  const pos = new Map(backends.map((b, i) => [b, i]));
  const picker = alg.create(backends);
  const heap = new EventHeap();
  const served = new Array<number>(backends.length).fill(0);
  const samples = new Float64Array(requests);
  /** Per backend: requests in service, and the send times of those waiting in line. */
  const busy = new Array<number>(backends.length).fill(0);
  const lines = backends.map(() => [] as number[]);
  let done = 0;
  let now = 0;

  const serve = (i: number, sent: number, at: number): void => {
    busy[i]!++;
    heap.push(at + latencies[i]! * (0.8 + 0.4 * rng()), i, sent);
  };
  const send = (at: number): void => {
    const ctx: PickContext = alg.usesKey ? { key: `user-${Math.floor(rng() * 10_000)}` } : {};
    const b = picker.pick(ctx, ACCEPT_ALL);
    if (!b) throw new Error(`${alg.name} picked nothing with every backend usable`);
    const i = pos.get(b)!;
    b.inflight++;
    picker.inflightChanged?.(b);
    if (busy[i]! < slots) serve(i, at, at);
    else lines[i]!.push(at);
  };
  // Clients start 1 µs apart, so that the first picks do not all see the same empty state.
  for (let c = 0; c < clients; c++) send(c * 0.001);
  while (done < requests) {
    const ev = heap.pop()!;
    now = ev.time;
    const i = ev.backend;
    backends[i]!.inflight--;
    picker.inflightChanged?.(backends[i]!);
    busy[i]!--;
    served[i]!++;
    samples[done++] = ev.time - ev.sent;
    const waiting = lines[i]!.shift();
    if (waiting !== undefined) serve(i, waiting, now);
    send(now);
  }
  samples.sort();
  const mean = samples.reduce((a, b) => a + b, 0) / requests;
  return {
    latenciesMs: latencies,
    slots,
    clients,
    requests,
    shares: served.map((s) => s / requests),
    p50: percentile(samples, 50),
    p90: percentile(samples, 90),
    p99: percentile(samples, 99),
    meanMs: mean,
    throughput: requests / (now / 1000),
  };
}

/** Completion events, keyed by time (the shared heap of sim-model.ts). */
class EventHeap {
  private readonly heap = new MinHeap<{ time: number; backend: number; sent: number }>((x, y) => x.time < y.time);

  push(time: number, backend: number, sent: number): void {
    this.heap.push({ time, backend, sent });
  }

  pop(): { time: number; backend: number; sent: number } | undefined {
    return this.heap.pop();
  }
}

// ---- the part --------------------------------------------------------------------------------------------

export interface QualityOptions {
  algorithms: readonly BenchAlgorithm[];
  /** Backend counts; default 10, 100, 1000. */
  sizes?: readonly number[];
  /** Keys for the movement and agreement checks; default 100k. */
  keys?: number;
  /** Length of one timed batch in ms; default 40. */
  batchMs?: number;
  /** Timed batches per algorithm and size, the best kept; default 7. */
  batches?: number;
  /** Completed requests of the closed-loop simulation; default 100k. */
  simRequests?: number;
  /** The command line, printed in the report. */
  command?: string;
  /** Folder for README.md, charts and results.json; nothing is written when absent. */
  out?: string;
}

export interface QualityRow {
  algorithm: string;
  usesWeights: boolean;
  usesKey: boolean;
  n: number;
  nsPerPick: number;
  share: ShareDeviation;
  /** usesWeights only, n <= 100: windows of sum(weights) picks with exactly the weights' counts. */
  cycles?: { cycles: number; exact: number };
  movement?: KeyMovement;
}

export interface QualityResults {
  sizes: number[];
  rows: QualityRow[];
  /** One entry per algorithm and backend model (see CLOSED_LOOP_MODELS). */
  closedLoop: Array<{ algorithm: string; model: string; result: ClosedLoopResult }>;
  /** How ns per pick was timed: the best of `batches` batches of about `batchMs` each. */
  timing?: { batches: number; batchMs: number };
  /** Key-based algorithms: slow start of 1 of 100 backends, weight ramp against key admission. */
  slowStart?: Array<{ algorithm: string; result: SlowStartChurn }>;
}

/**
 * The two backend models of the closed loop: a pure delay (load-aware algorithms win throughput but the
 * slowest requests still take the slow backend's time) and a backend serving 8 requests at once, the
 * others waiting in its line (a slow backend that receives a third of the load then builds a queue, and
 * the tail latency shows it).
 */
export const CLOSED_LOOP_MODELS = [
  { model: 'pure delay', slots: Infinity },
  { model: 'queue, 8 at once', slots: 8 },
] as const;

export async function runQuality(opts: QualityOptions): Promise<{ results: QualityResults; report?: string }> {
  const sizes = [...(opts.sizes ?? [10, 100, 1000])];
  const keys = makeKeys(opts.keys ?? 100_000);
  const rows: QualityRow[] = [];
  for (const { algorithm: alg } of opts.algorithms) {
    for (const n of sizes) {
      const row: QualityRow = {
        algorithm: alg.name,
        usesWeights: alg.usesWeights,
        usesKey: alg.usesKey,
        n,
        nsPerPick: nsPerPick(alg, n, opts.batchMs ?? 40, opts.batches ?? 7),
        share: shareDeviation(alg, n),
      };
      if (alg.usesWeights && n <= 100) row.cycles = exactCycles(alg, makeBackends(n, cyclingWeight).map((b) => b.weight));
      if (alg.usesKey) row.movement = keyMovement(alg, n, keys);
      rows.push(row);
      const mv = row.movement ? `, removal moves ${pct(row.movement.removed)} (optimum ${pct(row.movement.optimum.removed)})` : '';
      progress('quality', `${alg.name} n=${n}: ${sig(row.nsPerPick)} ns/pick, max share deviation ${pct(row.share.maxAbsRelDev)}${mv}`);
    }
  }
  const closedLoop: QualityResults['closedLoop'] = [];
  for (const { model, slots } of CLOSED_LOOP_MODELS) {
    for (const { algorithm: alg } of opts.algorithms) {
      const result = simulateClosedLoop(alg, { slots, requests: opts.simRequests ?? 100_000 });
      closedLoop.push({ algorithm: alg.name, model, result });
      progress('quality', `closed loop (${model}) ${alg.name}: p99 ${result.p99.toFixed(2)} ms, slow backend share ${pct(result.shares.at(-1))}, ${num(result.throughput)} req/s`);
    }
  }
  const slowStart: NonNullable<QualityResults['slowStart']> = [];
  for (const { algorithm: alg } of opts.algorithms) {
    if (!alg.usesKey) continue;
    const result = slowStartChurn(alg, 100, keys);
    slowStart.push({ algorithm: alg.name, result });
    progress(
      'quality',
      `slow start ${alg.name}: weight ramp ${result.weight.rebuilds} rebuilds, up to ${pct(result.weight.movedOthersMax)} of keys moved among the others per step; ` +
        `key admission ${result.admission.rebuilds} rebuilds, ${pct(result.admission.movedOthersMax)}`,
    );
  }
  const timing = { batches: opts.batches ?? 7, batchMs: opts.batchMs ?? 40 };
  const results: QualityResults = { sizes, rows, closedLoop, timing, ...(slowStart.length > 0 ? { slowStart } : {}) };
  if (!opts.out) return { results };
  const rep = qualityReport(results);
  if (opts.command) rep.command = opts.command;
  const report = rep.write(opts.out, results);
  progress('quality', `report: ${report}`);
  return { results, report };
}

/** The markdown report with its charts. */
export function qualityReport(r: QualityResults): Report {
  const rep = new Report('lb bench: algorithm quality (in process)');
  const names = [...new Set(r.rows.map((x) => x.algorithm))];
  const row = (a: string, n: number): QualityRow | undefined => r.rows.find((x) => x.algorithm === a && x.n === n);

  rep.add(
    'Every registered algorithm (and any module given with `--algorithms ./file.js`), measured in process with no ' +
      'network. Backends are named `b0`, `b1`, ...; the `usable` predicate accepts every backend. Regenerate with ' +
      '`lb bench quality`.',
    '## Speed: ns per pick',
    `Best of ${r.timing?.batches ?? 7} timed batches of about ${r.timing?.batchMs ?? 40} ms after a warm-up` +
      ' (noise on a shared machine only adds time); the ' +
      'Picker is built before timing. Weights 1..5 ' +
      'cycling; nothing in flight (so least-connections breaks ties on every pick, its worst case). Key-based ' +
      'algorithms get a different key on every pick.',
    table(['algorithm', ...r.sizes.map((n) => `${n} backends`)], names.map((a) => [a, ...r.sizes.map((n) => sig(row(a, n)?.nsPerPick))])),
  );
  rep.chart(
    'ns-per-pick.svg',
    lineChart({
      title: 'Time per pick by number of backends',
      subtitle: `lower is better; best of ${r.timing?.batches ?? 7} batches of ${r.timing?.batchMs ?? 40} ms, Picker built before timing`,
      categories: r.sizes.map((n) => `${n} backends`),
      series: names.map((a) => ({ name: a, values: r.sizes.map((n) => row(a, n)?.nsPerPick ?? null) })),
      yLabel: 'time per pick',
      unit: 'ns',
      xLabel: 'backends in the pool',
      log: true,
    }),
    'ns per pick by number of backends',
  );

  rep.add(
    '## Share of picks against the weights',
    'Weights 1, 2, 3, 4, 5, 1, 2, ... Each algorithm that honours weights is compared with the weight shares, the ' +
      'others with equal shares. Deviation = |share − target share| / target share per backend; the noise floor is ' +
      'the mean deviation that ideal independent random draws would show with as many picks. max/mean = highest ' +
      'over mean of share / target share (1 = perfect). "Exact cycles": of 20 windows of sum(weights) consecutive ' +
      'picks, how many gave every backend exactly its weight (smooth weighted round robin promises all of them). ' +
      'Nothing is in flight, so least-connections and power-of-two-choices fall back to their tie-breaks here; ' +
      'see the closed loop below for them under load.',
    table(
      ['algorithm', 'backends', 'target', 'picks', 'max deviation', 'mean deviation', 'noise floor', 'max/mean', 'exact cycles'],
      r.rows.map((x) => [
        x.algorithm,
        String(x.n),
        x.share.target,
        num(x.share.picks),
        pct(x.share.maxAbsRelDev),
        pct(x.share.meanAbsRelDev),
        pct(x.share.noiseFloor),
        x.share.maxOverMean.toFixed(3),
        x.cycles ? `${x.cycles.exact}/${x.cycles.cycles}` : '–',
      ]),
      'lrlrrrrrr',
    ),
  );
  rep.chart(
    'share-deviation.svg',
    barChart({
      title: 'Mean deviation of a backend\'s share from its target, against sampling noise',
      subtitle: 'weights 1..5 cycling (equal shares if weights are ignored); the whisker is the noise of ideal random draws: a bar within it is not imbalance',
      categories: names,
      series: r.sizes.map((n) => ({
        name: `${n} backends`,
        values: names.map((a) => (row(a, n) ? row(a, n)!.share.meanAbsRelDev * 100 : null)),
        // The band ideal independent draws land in: 0 to twice their expected mean deviation.
        low: names.map((a) => (row(a, n) ? 0 : null)),
        high: names.map((a) => (row(a, n) ? row(a, n)!.share.noiseFloor * 200 : null)),
      })),
      yLabel: 'mean |share − target| / target',
      unit: '%',
      xLabel: 'algorithm',
      clipAt: 100,
    }),
    'mean share deviation per algorithm against the sampling-noise band',
  );

  const keyed = r.rows.filter((x) => x.movement);
  if (keyed.length > 0) {
    rep.add(
      '## Keys moved by a membership or weight change (key-based algorithms)',
      `${num(keyed[0]!.movement!.keys)} keys over N backends of weight 1. *Remove*: b{N/2} leaves (optimum 1/N: ` +
        'only its own keys move); *collateral* is the part of those moves between two backends that both stayed ' +
        '(0 for a perfectly consistent hash). *Add*: a new backend joins (optimum 1/(N+1)). *Re-weight*: b{N/2} ' +
        'goes from weight 1 to 2 (optimum 2/(N+1) − 1/N). *Builds agree*: two Pickers built independently from ' +
        'equal inputs map every key to the same backend (what lets every worker and every lb instance agree).',
      table(
        ['algorithm', 'backends', 'remove 1', 'optimum', 'collateral', 'add 1', 'optimum', 're-weight ×2', 'optimum', 'builds agree'],
        keyed.map((x) => {
          const m = x.movement!;
          return [
            x.algorithm,
            String(x.n),
            pct(m.removed),
            pct(m.optimum.removed),
            pct(m.removedCollateral),
            pct(m.added),
            pct(m.optimum.added),
            pct(m.reweighted),
            pct(m.optimum.reweighted),
            m.buildsAgree ? `yes (${num(m.keys)} keys)` : `no: ${num(m.disagreements)} keys differ`,
          ];
        }),
        'lrrrrrrrrl',
      ),
    );
    const mid = r.sizes.includes(100) ? 100 : r.sizes[0]!;
    const at = keyed.filter((x) => x.n === mid);
    const events = ['remove 1', 'add 1', 're-weight ×2'];
    const opt = at[0]!.movement!.optimum;
    rep.chart(
      'keys-moved.svg',
      barChart({
        title: `Keys moved by one change, ${mid} backends`,
        subtitle: `${num(at[0]!.movement!.keys)} keys; the optimum moves only the keys that must move; lower is better`,
        categories: events,
        series: [
          ...at.map((x) => ({ name: x.algorithm, values: [x.movement!.removed, x.movement!.added, x.movement!.reweighted].map((v) => v * 100) })),
          { name: 'optimum', values: [opt.removed, opt.added, opt.reweighted].map((v) => v * 100), color: '#999999' },
        ],
        yLabel: 'keys moved',
        unit: '%',
        xLabel: 'change to the pool',
      }),
      'keys moved per change',
    );
  }

  if (r.slowStart && r.slowStart.length > 0) {
    const ss = r.slowStart;
    const s0 = ss[0]!.result;
    rep.add(
      '## Slow start of a key-hashing pool: weight ramp against key admission',
      `Backend b${s0.n >> 1} of ${s0.n} (weight 1, ${num(s0.keys)} keys) comes up with \`slow_start\`, in the primary's ` +
        'steps (ramp 0.05, 0.1, 0.2, ... 0.9, then 1). *Weight ramp*: the table is rebuilt with the ramped weight at each ' +
        'step (what lb did for every algorithm, and still does for those that hash no key). *Key admission* (lb now, ' +
        'for consistent-hash and maglev, see README "Slow start"): the table keeps the full weight; a key whose choice ' +
        'is the ramping backend goes there only when a second hash of the key is below the ramp, else to its next ' +
        'choice. *Moved among others*: the largest share of keys, in one step, that moved between two backends that ' +
        'are not ramping (keys that should not move at all). *Left ramping*: keys that moved away from the ramping ' +
        'backend during the ramp (flapping). *Share*: keys on the ramping backend over the keys it holds after the ' +
        'ramp, at each step (ideally the ramp itself).',
      table(
        ['algorithm', 'ramp by', 'table rebuilds', 'moved among others (max per step)', 'left ramping', 'share of its keys at ramp ' + s0.ramps.slice(1).join(', ')],
        ss.flatMap(({ algorithm, result }) =>
          (['weight', 'admission'] as const).map((how) => {
            const c = result[how];
            return [algorithm, how === 'weight' ? 'weight' : 'key admission', String(c.rebuilds), pct(c.movedOthersMax), num(c.leftRamping), c.shares.slice(1).map((x) => x.toFixed(2)).join(' ')];
          }),
        ),
        'llrrrl',
      ),
    );
  }

  if (r.closedLoop.length > 0) {
    const first = r.closedLoop[0]!.result;
    const nb = first.latenciesMs.length;
    const models = [...new Set(r.closedLoop.map((x) => x.model))];
    const algs = [...new Set(r.closedLoop.map((x) => x.algorithm))];
    const sim = (a: string, m: string): ClosedLoopResult | undefined => r.closedLoop.find((x) => x.algorithm === a && x.model === m)?.result;
    rep.add(
      '## Closed loop with one slow backend (virtual clock)',
      `${first.clients} clients, each sending its next request as soon as the last one answers, ${num(first.requests)} ` +
        `requests, against ${nb} backends of median latency ${first.latenciesMs.join(', ')} ms (±20 % uniform jitter). ` +
        'Two backend models: a *pure delay* (a backend serves any number of requests at once) and a *queue, 8 at ' +
        'once* (a worker pool: requests beyond 8 wait in the backend\'s line, which the balancer sees as in flight). A ' +
        'discrete-event simulation: the Picker sees live in-flight counts and time is virtual, so these numbers are ' +
        'properties of the algorithm, free of machine noise.',
      table(
        ['algorithm', 'backends', ...first.latenciesMs.map((l, i) => `share b${i} (${l} ms)`), 'p50 (ms)', 'p90 (ms)', 'p99 (ms)', 'mean (ms)', 'throughput (req/s)'],
        r.closedLoop.map(({ algorithm, model, result: x }) => [
          algorithm,
          model,
          ...x.shares.map((s) => pct(s, 1)),
          x.p50.toFixed(2),
          x.p90.toFixed(2),
          x.p99.toFixed(2),
          x.meanMs.toFixed(2),
          num(x.throughput),
        ]),
        'll' + 'r'.repeat(first.latenciesMs.length + 5),
      ),
    );
    const queued = models[models.length - 1]!;
    rep.chart(
      'closed-loop-latency.svg',
      barChart({
        title: `Closed loop, one backend 10x slower (${queued}): latency`,
        subtitle: `${first.clients} clients, backends ${first.latenciesMs.join(' / ')} ms, virtual clock; lower is better`,
        categories: algs,
        series: (['p50', 'p90', 'p99'] as const).map((p, i) => ({ name: p, values: algs.map((a) => sim(a, queued)?.[p] ?? null), color: SEQUENTIAL[i + 1] })),
        yLabel: 'latency',
        unit: 'ms',
        xLabel: 'algorithm',
      }),
      'closed loop latency per algorithm',
    );
    rep.chart(
      'closed-loop-throughput.svg',
      barChart({
        title: 'Closed loop, one backend 10x slower: throughput',
        subtitle: `${first.clients} clients, backends ${first.latenciesMs.join(' / ')} ms, virtual clock; higher is better`,
        categories: algs,
        series: models.map((m) => ({ name: m, values: algs.map((a) => sim(a, m)?.throughput ?? null) })),
        yLabel: 'completed requests per second',
        unit: 'req/s',
        xLabel: 'algorithm',
      }),
      'closed loop throughput per algorithm',
    );
    rep.chart(
      'closed-loop-share.svg',
      barChart({
        title: `Closed loop, one backend 10x slower (${queued}): who served the requests`,
        subtitle: `share of ${num(first.requests)} requests per backend; the slow one is b${nb - 1}`,
        categories: algs,
        series: first.latenciesMs.map((l, i) => ({ name: `b${i} (${l} ms)`, values: algs.map((a) => (sim(a, queued)?.shares[i] ?? 0) * 100) })),
        yLabel: 'share of requests',
        unit: '%',
        xLabel: 'algorithm',
        stacked: true,
        yMax: 100,
      }),
      'closed loop share per backend',
    );
  }
  return rep;
}

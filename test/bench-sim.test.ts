// `lb bench sim`: the discrete-event simulator of bench/sim.ts. Reproducible from a seed, independent of
// wall time, driving the real algorithms of the registry (with options and Picker.done when they have
// them), and honest about a dead backend.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { algorithms } from '../algorithms/registry.js';
import { loadSimScenario, parseSimScenario, resolveEntries, runSim, shippedSimScenarios, simulate } from '../bench/sim.js';
import { arrivalTimes, mulberry32, zipfCdf } from '../bench/sim-model.js';
import { cli } from './helpers/lb.js';

const TEST_DIR = fileURLToPath(new URL('../../test/', import.meta.url));
const tmpDir = (t: { teardown(fn: () => void): void }): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-sim-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
};
const alg = (name: string) => algorithms.get(name)!;

const HOT = parseSimScenario(
  `
duration = "2s"
warmup = "200ms"
arrivals = { process = "poisson", load = 0.8 }
keys = { distribution = "zipf", count = 1000, exponent = 0.9 }
instances = 2
algorithms = ["power-of-two-choices", "consistent-hash"]
backends = [{ name = "b", count = 5, capacity = 2, service = "exp", mean = "2ms" }]
events = [{ at = "1s", backend = "b-3", action = "slow", factor = 4 }]
`,
  path.join(TEST_DIR, 'hot.toml'),
);

t.test('same seed, same numbers; another seed, other numbers', async (t) => {
  for (const name of ['power-of-two-choices', 'random', 'consistent-hash']) {
    const a = simulate(HOT, alg(name), undefined, 7);
    const b = simulate(HOT, alg(name), undefined, 7);
    t.same(b, a, `${name}: seed 7 twice`);
    t.ok(a.requests > 1000, `${name}: ${a.requests} requests simulated`);
    const c = simulate(HOT, alg(name), undefined, 8);
    t.not(c.latency.p99, a.latency.p99, `${name}: seed 8 differs`);
  }
  const before = Math.random;
  simulate(HOT, alg('random'), undefined, 1);
  t.equal(Math.random, before, 'Math.random is restored after a run');
});

t.test('the virtual clock reads no wall time', async (t) => {
  const expected = simulate(HOT, alg('power-of-two-choices'), undefined, 3);
  const saved = { now: Date.now, perf: performance.now, hr: process.hrtime, setTimeout: globalThis.setTimeout };
  const boom = (): never => {
    throw new Error('wall clock read');
  };
  Date.now = boom;
  performance.now = boom;
  process.hrtime = Object.assign(boom, { bigint: boom }) as unknown as typeof process.hrtime;
  globalThis.setTimeout = boom as unknown as typeof setTimeout;
  let got;
  try {
    got = simulate(HOT, alg('power-of-two-choices'), undefined, 3);
  } finally {
    Date.now = saved.now;
    performance.now = saved.perf;
    process.hrtime = saved.hr;
    globalThis.setTimeout = saved.setTimeout;
  }
  t.same(got, expected, 'the same numbers with every clock and timer throwing');
  t.ok(got.endMs >= HOT.durationMs, `the run covered ${got.endMs} virtual ms`);
});

t.test('a deterministic picker gives its exact distribution (weighted round-robin 5:1:1 over 70 requests)', async (t) => {
  const dir = tmpDir(t);
  fs.writeFileSync(path.join(dir, 'seventy.txt'), Array.from({ length: 70 }, (_, i) => `${i} k${i}`).join('\n') + '\n');
  const file = path.join(dir, 's.toml');
  fs.writeFileSync(
    file,
    `duration = "70ms"
arrivals = { process = "trace", file = "seventy.txt" }
algorithms = ["weighted-round-robin"]
backends = [{ name = "a", weight = 5, capacity = 1, service = "constant", mean = "1ms" },
            { name = "b", weight = 1, capacity = 1, service = "constant", mean = "1ms" },
            { name = "c", weight = 1, capacity = 1, service = "constant", mean = "1ms" }]
`,
  );
  const s = loadSimScenario(file);
  const r = simulate(s, alg('weighted-round-robin'), undefined, 1);
  t.equal(r.requests, 70, 'the trace played once');
  t.same(r.backends.map((b) => b.served), [50, 10, 10], 'exactly 5:1:1');
  t.equal(r.errors, 0);
  t.same(r.keys, { distinct: 70, sameKeyInFlight: 0, maxSameKey: 1 }, 'trace keys, all distinct');
});

t.test('Picker.done is called once per answer with its latency; options reach create', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 's.toml');
  const fixture = path.join(TEST_DIR, 'fixtures', 'sim-options.mjs');
  fs.writeFileSync(
    file,
    `duration = "1s"
arrivals = { process = "closed", clients = 3 }
algorithms = [{ name = "${fixture}", options = { answer = 42 } }, { name = "${fixture}", options = { nonsense = 1 } },
              "peak-ewma-not-here", { name = "round-robin", options = { x = 1 } }]
backends = [{ name = "only", capacity = 10, service = "constant", mean = "5ms" }, { name = "spare", service = "constant", mean = "5ms" }]
`,
  );
  const s = loadSimScenario(file);
  const { ok, skipped } = await resolveEntries(s.algorithms, s.baseDir);
  t.equal(ok.length, 1, 'one entry runs');
  t.same(skipped.map((x) => x.entry.label.replace(fixture, 'F')), ['F (nonsense=1)', 'peak-ewma-not-here', 'round-robin (x=1)'], 'three skipped');
  t.match(skipped[0]!.reason, /rejects the options: unknown option nonsense/);
  t.match(skipped[1]!.reason, /unknown algorithm "peak-ewma-not-here"/);
  t.match(skipped[2]!.reason, /takes no options/);
  const calls = (globalThis as unknown as { simOptionsCalls: { options: unknown[]; done: Array<{ name: string; latencyMs: number; ok: boolean; status?: number }> } }).simOptionsCalls;
  calls.options.length = 0;
  calls.done.length = 0;
  const r = simulate(s, ok[0]!.algorithm, ok[0]!.entry.options, 1);
  t.same(calls.options, [{ answer: 42 }], 'create got the options (one instance)');
  t.equal(calls.done.length, r.ok, 'one done() per answer');
  t.ok(r.ok >= 3 * 199, `${r.ok} answers: 3 clients x 1 s / 5 ms`);
  t.ok(calls.done.every((d) => d.name === 'only' && d.ok && d.status === 200 && Math.abs(d.latencyMs - 5) < 1e-9), 'each with the 5 ms service time');
});

t.test('a dead backend gets nothing after its death once the health view follows; in-flight requests fail', async (t) => {
  const text = (delay: string) => `
duration = "4s"
retries = 1
health_delay = "${delay}"
arrivals = { process = "poisson", rate = 2000 }
algorithms = ["round-robin"]
backends = [{ name = "b", count = 4, capacity = 4, service = "exp", mean = "2ms" }]
events = [{ at = "2s", backend = "b-2", action = "die" }]
`;
  for (const name of ['round-robin', 'least-connections', 'consistent-hash', 'maglev', 'power-of-two-choices']) {
    const s = parseSimScenario(text('0s'), 'dies.toml');
    const r = simulate(s, alg(name), undefined, 5);
    t.equal(r.backends[1]!.sentAfterDeath, 0, `${name}: nothing sent to b-2 after its death`);
    const share = r.backends[1]!.served / r.ok;
    t.ok(share < 0.125 + 0.02 && share > 0.125 - 0.04, `${name}: b-2 served about half its quarter (${share})`);
    t.ok(r.errors < 20, `${name}: only the requests b-2 was serving failed (${r.errors})`);
  }
  const late = simulate(parseSimScenario(text('300ms'), 'dies.toml'), alg('round-robin'), undefined, 5);
  t.ok(late.backends[1]!.sentAfterDeath > 50, `with a 300 ms late view it is still tried (${late.backends[1]!.sentAfterDeath} refused)`);
  t.ok(late.errors < 20, `and the retry saves those requests (${late.errors} errors)`);
});

t.test('least-connections and power-of-two-choices beat round-robin on p99 with one backend 10x slower', async (t) => {
  // The p99 claim of the end-to-end scenario test (bench.test.ts), on the virtual clock: a loaded machine
  // cannot turn it around, and a load-aware picker that stopped reading in-flight counts would lose it.
  const s = parseSimScenario(
    `
duration = "3s"
warmup = "500ms"
arrivals = { process = "poisson", load = 0.7 }
algorithms = ["round-robin"]
backends = [
  { name = "fast-1", capacity = 8, service = "lognormal", sigma = 0.5, mean = "2ms" },
  { name = "fast-2", capacity = 8, service = "lognormal", sigma = 0.5, mean = "2ms" },
  { name = "slow", capacity = 8, service = "lognormal", sigma = 0.5, mean = "20ms" },
]
`,
    'one-slow.toml',
  );
  for (const seed of [1, 2, 3]) {
    const rr = simulate(s, alg('round-robin'), undefined, seed);
    for (const name of ['least-connections', 'power-of-two-choices']) {
      const r = simulate(s, alg(name), undefined, seed);
      t.ok(r.latency.p99 * 4 < rr.latency.p99, `seed ${seed}: p99 ${name} ${r.latency.p99} ms < round-robin ${rr.latency.p99} ms / 4`);
      t.ok(r.backends[2]!.served / r.ok < rr.backends[2]!.served / rr.ok, `seed ${seed}: ${name} sends less to the slow backend`);
    }
  }
});

t.test('consistent hashing collapses under hot keys where load-aware picks do not', async (t) => {
  const a = simulate(HOT, alg('consistent-hash'), undefined, 1);
  const b = simulate(HOT, alg('least-connections'), undefined, 1);
  t.ok(a.keys.sameKeyInFlight > 0.05, `hot keys overlap in flight (${a.keys.sameKeyInFlight})`);
  t.ok(a.latency.p99 > 5 * b.latency.p99, `p99 consistent-hash ${a.latency.p99} ms vs least-connections ${b.latency.p99} ms`);
});

t.test('models: Zipf table, bursty arrivals keep their mean rate', async (t) => {
  const cdf = zipfCdf(1000, 0.9);
  t.equal(cdf[999], 1);
  let h = 0;
  for (let k = 1; k <= 1000; k++) h += k ** -0.9;
  t.ok(Math.abs(cdf[0]! - 1 / h) < 1e-12, 'rank 1 has probability 1/H');
  for (const bursts of [undefined, { factor: 4, share: 0.2, meanBurstMs: 50 }]) {
    const next = arrivalTimes(2, mulberry32(9), bursts);
    let count = 0;
    while (next() < 1_000_000) count++;
    t.ok(Math.abs(count / 2_000_000 - 1) < 0.03, `${bursts ? 'bursty' : 'poisson'}: ${count} arrivals in 1000 s at 2/ms`);
  }
});

t.test('every shipped sim scenario parses; mistakes name their key', async (t) => {
  const names = shippedSimScenarios();
  for (const n of ['hot-keys', 'one-slow', 'backend-dies', 'k4-instances', 'trace-replay']) t.ok(names.includes(n), `${n} shipped`);
  for (const n of names) t.doesNotThrow(() => loadSimScenario(n), n);
  t.throws(() => parseSimScenario('algorithms = ["random"]\nbackends = [{ mean = "1ms" }]\narrivals = { load = 0.5 }', 'x.toml'), /x\.toml: arrivals\.load: needs a capacity/);
  t.throws(() => parseSimScenario('algorithms = ["random"]\nduration = "1s"\nbackends = [{ mean = "1ms" }]\narrivals = { rate = 5 }\nevents = [{ at = "2s", backend = "b1", action = "die" }]', 'x.toml'), /events\[0\]\.at: must be before the end/);
  t.throws(() => parseSimScenario('algorithms = ["random"]\nbackends = [{ mean = "1ms", speed = 2 }]', 'x.toml'), /backends\[0\]\.speed: unknown key/);
});

t.test('lb bench sim writes a report with spread, and a summary over scenarios', async (t) => {
  const out = tmpDir(t);
  const file = path.join(out, 'tiny.toml');
  fs.writeFileSync(file, 'duration = "500ms"\nrepeats = 3\narrivals = { rate = 1000 }\nalgorithms = ["round-robin", "least-connections", "no-such"]\nbackends = [{ count = 3, capacity = 2, mean = "2ms" }]\n');
  const r = await cli(['bench', 'sim', file, '--out', out, '--seed', '11', '--no-quality']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /skipped no-such: unknown algorithm/);
  const md = fs.readFileSync(path.join(out, 'tiny', 'README.md'), 'utf8');
  t.match(md, /median over 3 seeds \(11\.\.13\)/);
  t.match(md, /\| least-connections \| [\d.]+ \[[\d.]+–[\d.]+\]/, 'median [min–max]');
  t.match(md, /`no-such`: unknown algorithm/, 'skipped entries listed');
  t.match(fs.readFileSync(path.join(out, 'tiny', 'latency.svg'), 'utf8'), /to [\d.]+ ms<\/title><line/, 'whiskers drawn');
  t.match(fs.readFileSync(path.join(out, 'README.md'), 'utf8'), /\[tiny\]\(tiny\/README\.md\)/, 'summary links the scenario');
  const again = await runSim(loadSimScenario(file), { seed: 11, quality: false });
  const json = JSON.parse(fs.readFileSync(path.join(out, 'tiny', 'results.json'), 'utf8')) as { results: { runs: unknown } };
  t.same(json.results.runs, JSON.parse(JSON.stringify(again.results.runs)), 'the command line and the API give the same numbers');
  t.equal((await cli(['bench', 'sim', file, '--seed', 'x'])).code, 2);
});

// The bench harness (bench/): its quality measurements, its scenario machinery end to end against the
// real daemon, its reports and its command line. Small and fast: the whole file runs in about 30 s.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { consistentHash } from '../algorithms/consistent-hash.js';
import { maglev } from '../algorithms/maglev.js';
import { algorithms } from '../algorithms/registry.js';
import { weightedRoundRobin } from '../algorithms/weighted-round-robin.js';
import { parseConfigText } from '../config/load.js';
import { cli } from './helpers/lb.js';
import { parseAnchors, parseWrk, proxyReport } from '../bench/overhead.js';
import { buildsAgree, exactCycles, keyMovement, makeKeys, runQuality, simulateClosedLoop } from '../bench/quality.js';
import { resolveAlgorithms } from '../bench/report.js';
import { lbConfigToml, loadScenario, parseScenario, runScenarios, shippedScenarios } from '../bench/scenarios.js';
import { runStale } from '../bench/stale.js';
import { barChart, lineChart } from '../bench/svg.js';

const TEST_DIR = fileURLToPath(new URL('../../test/', import.meta.url));
const tmpDir = (t: { teardown(fn: () => void): void }): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-bench-test-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
};

t.test('quality: smooth weighted round-robin gives every backend exactly its weight in every cycle', async (t) => {
  t.same(exactCycles(weightedRoundRobin, [5, 1, 1], 50), { cycles: 50, exact: 50 }, 'NGINX example 5, 1, 1');
  const cycling = Array.from({ length: 23 }, (_, i) => (i % 5) + 1);
  t.same(exactCycles(weightedRoundRobin, cycling, 20), { cycles: 20, exact: 20 }, 'weights 1..5 cycling over 23 backends');
});

t.test('quality: consistent-hash moves close to 1/N keys when one of N backends is removed', async (t) => {
  const keys = makeKeys(100_000);
  for (const n of [10, 100]) {
    const m = keyMovement(consistentHash, n, keys);
    t.ok(Math.abs(m.removed - 1 / n) < 0.25 / n, `n=${n}: removal moved ${m.removed}, optimum ${1 / n}`);
    t.equal(m.removedCollateral, 0, `n=${n}: no key moves between two backends that both stay`);
    t.ok(Math.abs(m.added - 1 / (n + 1)) < 0.25 / (n + 1), `n=${n}: adding one moved ${m.added}, optimum ${1 / (n + 1)}`);
    t.ok(m.buildsAgree, `n=${n}: two builds agree on every key`);
  }
});

t.test('quality: two independent builds of each key-based algorithm agree on every key', async (t) => {
  const keys = makeKeys(100_000);
  for (const alg of [consistentHash, maglev]) t.same(buildsAgree(alg, 100, keys), { agree: true, disagreements: 0 }, alg.name);
});

t.test('quality: the closed loop steers load-aware algorithms away from the slow backend', async (t) => {
  const rr = simulateClosedLoop(algorithms.get('round-robin')!, { slots: 8, requests: 20_000 });
  const lc = simulateClosedLoop(algorithms.get('least-connections')!, { slots: 8, requests: 20_000 });
  t.ok(Math.abs(rr.shares[2]! - 1 / 3) < 0.01, `round-robin sends a third to the slow backend (${rr.shares[2]})`);
  t.ok(lc.shares[2]! < 0.1, `least-connections sends it less than 10 % (${lc.shares[2]})`);
  t.ok(lc.p99 < rr.p99, `p99 ${lc.p99} < ${rr.p99}`);
});

t.test('quality: a module-path algorithm appears in the report with no harness change', async (t) => {
  const out = tmpDir(t);
  const list = await resolveAlgorithms(['all', './fixtures/first-usable.mjs'], TEST_DIR);
  t.same(
    list.map((a) => a.algorithm.name),
    [...algorithms.keys(), 'first-usable'],
    'the registry, in order, then the module',
  );
  t.equal(list.at(-1)!.spec, path.join(TEST_DIR, 'fixtures', 'first-usable.mjs'), 'module paths become absolute');
  const { results, report } = await runQuality({ algorithms: list, sizes: [10], keys: 2000, batchMs: 2, simRequests: 2000, out });
  t.ok(results.rows.some((r) => r.algorithm === 'first-usable'), 'measured');
  const md = fs.readFileSync(report!, 'utf8');
  for (const name of [...algorithms.keys(), 'first-usable']) t.match(md, `| ${name} |`, `${name} in the report`);
  t.match(md, /\*\*Machine:\*\* \d+ × /, 'the report names the machine');
  for (const chart of ['ns-per-pick.svg', 'share-deviation.svg', 'keys-moved.svg', 'closed-loop-latency.svg']) {
    t.ok(fs.existsSync(path.join(out, chart)), `${chart} written`);
    t.match(md, `(${chart})`, `${chart} linked`);
  }
  t.match(fs.readFileSync(path.join(out, 'ns-per-pick.svg'), 'utf8'), 'first-usable', 'and in the charts');
});

t.test('scenarios: every shipped file parses; mistakes are reported with their key', async (t) => {
  const names = shippedScenarios();
  t.ok(names.includes('one-slow') && names.length >= 5, `shipped: ${names.join(', ')}`);
  for (const n of names) t.doesNotThrow(() => loadScenario(n), n);
  const s = loadScenario('one-slow');
  t.same(s.backends.map((b) => b.latencyMs), [2, 2, 20]);
  t.throws(() => parseScenario('durtion = "5s"\nbackends = [{ latency = "2ms" }]', 'x.toml'), /x\.toml: durtion: unknown key/);
  t.throws(() => parseScenario('backends = [{ latency = "fast" }]', 'x.toml'), { name: 'ScenarioError', code: 'SCENARIO_INVALID' });
  t.throws(() => parseScenario('backends = []', 'x.toml'), /backends: must be a non-empty array/);
});

t.test('scenarios: the generated lb config is valid for every registered algorithm', async (t) => {
  for (const [name, algorithm] of algorithms) {
    const text = lbConfigToml({
      port: 18_000,
      workers: 1,
      socket: '/tmp/x.sock',
      algorithm: { spec: name, algorithm },
      backends: [{ name: 'a', port: 18_001, weight: 2 }, { name: 'b', port: 18_002, weight: 1 }],
      pool: { retries: 1, passive: { max_failures: 3, eject_for: '5s' } },
    });
    t.same(parseConfigText(text, 'gen.toml').issues, [], name);
  }
});

// The p99 ordering of these algorithms is tested on the simulator's virtual clock (bench-sim.test.ts): here,
// through the real daemon on a shared machine, the scheduler's delays reach every algorithm's tail alike and
// the p99 order of three runs taken one after the other is noise. What does not depend on timing noise is
// checked: the runs, the counts, and where the requests went.
t.test('scenarios: least-connections and power-of-two-choices send less than round-robin to a slow backend', async (t) => {
  const scenario = parseScenario(
    `
description = "test: one backend 10x slower"
duration = "3s"
warmup = "500ms"
connections = 32
concurrency = 8
algorithms = ["round-robin", "least-connections", "power-of-two-choices"]
backends = [{ latency = "2ms" }, { latency = "2ms" }, { name = "slow", latency = "20ms" }]
`,
    path.join(TEST_DIR, 'one-slow-test.toml'),
  );
  const { runs, failures } = await runScenarios({ scenarios: [scenario] });
  t.same(failures, [], 'every run completed');
  const by = (name: string) => runs.find((r) => r.algorithm === name)!;
  t.equal(runs.length, 3, 'one run per algorithm (fixed concurrency only: no rate)');
  for (const r of runs) {
    t.ok(r.load.responses > 100, `${r.algorithm}: ${r.load.responses} responses`);
    t.equal(r.load.errors + r.load.non2xx, 0, `${r.algorithm}: no errors`);
    t.equal(r.backends.reduce((n, b) => n + b.requests, 0) > 0, true, `${r.algorithm}: counted at the upstreams`);
  }
  const rr = by('round-robin');
  const slowShare = (name: string): number => {
    const r = by(name);
    return r.backends[2]!.requests / r.backends.reduce((n, b) => n + b.requests, 0);
  };
  t.ok(Math.abs(slowShare('round-robin') - 1 / 3) < 0.05, `round-robin: a third to the slow backend (${slowShare('round-robin')})`);
  for (const name of ['least-connections', 'power-of-two-choices']) {
    t.ok(by(name).load.latency.p99 > 0, `${name}: p99 measured (${by(name).load.latency.p99} ms; round-robin ${rr.load.latency.p99} ms)`);
    t.ok(slowShare(name) < slowShare('round-robin'), `${name} sends less to the slow backend (${slowShare(name)})`);
  }
});

t.test('svg: charts carry title, legend, axis unit and escaped text', async (t) => {
  const svg = barChart({
    title: 'p99 <by> algorithm',
    categories: ['round-robin', 'least-connections'],
    series: [
      { name: 'p50', values: [1, 2] },
      { name: 'p99', values: [10, null] },
    ],
    yLabel: 'latency',
    unit: 'ms',
    log: true,
  });
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.match(svg, /<\/svg>\n$/);
  t.match(svg, 'p99 &lt;by&gt; algorithm');
  t.match(svg, 'latency (ms), log scale');
  t.equal((svg.match(/<rect [^>]*><title>/g) ?? []).length, 3, 'one bar per value, none for null');
  const stacked = barChart({ title: 's', categories: ['a'], series: [{ name: 'x', values: [60] }, { name: 'y', values: [40] }], yLabel: 'share', unit: '%', stacked: true, yMax: 100 });
  t.match(stacked, '>100<', 'stacked shares end at 100 %');
  t.match(lineChart({ title: 'l', categories: ['10', '100'], series: [{ name: 'rr', values: [3, 4] }], yLabel: 'time', unit: 'ns' }), '<polyline');
});

t.test('proxy report: run-anchors.sh output becomes ratios', async (t) => {
  const http = [
    'round=1 node-undici rps=20000.00 p50=2.00ms p99=10.00ms',
    'round=1 http-proxy-3 rps=8000.00 p50=5.00ms p99=20.00ms',
    'round=1 lb rps=16000.00 p50=3.00ms p99=8.00ms',
  ].join('\n');
  const l4 = ['round=1 bulk node-tcp-bare transfer_per_s=0.50GB', 'round=1 new-conn node-tcp-bare rps=5000.00', 'round=1 bulk lb-tcp transfer_per_s=1.00GB', 'round=1 new-conn lb-tcp rps=4000.00'].join('\n');
  t.equal(parseAnchors(http).length, 3);
  const md = proxyReport(http, l4).markdown();
  t.match(md, '| L7 req/s: lb / node-undici | 0.80× |');
  t.match(md, '| L7 req/s: lb / http-proxy-3 | 2.00× |');
  t.match(md, '| L4 bulk: lb-tcp / node-tcp-bare | 2.00× |');
  t.match(md, '| L4 new connection per request: lb-tcp / node-tcp-bare | 0.80× |');
  const wrk = parseWrk('  Latency Distribution\n     50%  812.00us\n     99%    2.50ms\nRequests/sec:  12345.67\n  Non-2xx or 3xx responses: 3\n');
  t.same(wrk, { rps: 12345.67, p50: 0.812, p99: 2.5, errors: 3 });
});

t.test('stale: lb before a backend that closes idle connections; every request counted once, report written', async (t) => {
  const out = tmpDir(t);
  const r = await runStale({ gets: 150, posts: 150, connections: 4, proxies: ['lb'], out });
  t.equal(r.rows.length, 1);
  const row = r.rows[0]!;
  t.equal(row.get.total, 150);
  t.equal(row.post.total, 150);
  t.equal(row.get.ok + row.get.failed, 150);
  t.equal(row.post.ok + row.post.failed, 150);
  t.ok(row.backend.connections > 0, 'backend connections counted');
  t.ok(row.backend.idleCloses > 0, 'the backend closed idle connections');
  t.ok((row.backend.requests.GET ?? 0) >= row.get.ok, 'the backend parsed every GET that was answered');
  const md = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
  t.match(md, '| proxy | GET failed | GET % | POST failed | POST % | backend connections |');
  t.match(md, 'retries = 2');
  t.ok(JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')).results.rows[0].backend);
});

t.test('command line: --help, usage errors', async (t) => {
  // Through the real `lb bench` command: tap's own output goes to this process's stdout.
  const help = await cli(['bench', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout + help.stderr, 'Usage: lb bench [PART]');
  t.equal((await cli(['bench', 'nonsense'])).code, 2);
  t.equal((await cli(['bench', 'scenarios', '--duration', '5'])).code, 2, 'a duration needs a unit');
  t.equal((await cli(['bench', 'stale', '--idle', '0'])).code, 2, 'stale: an idle close of at least 1 ms');
  t.equal((await cli(['bench', 'stale', '--idle', '32-2'])).code, 2, 'stale: MIN-MAX in order');
  t.equal((await cli(['bench', 'stale', '--proxies', 'lb,squid'])).code, 2, 'stale: known rows only');
  const unknown = await cli(['bench', 'quality', '--algorithms', 'no-such-algorithm']);
  t.equal(unknown.code, 1);
  t.match(unknown.stdout + unknown.stderr, 'ALGORITHM_UNKNOWN');
});

t.test('scenarios: die_after must fall inside the measured run, --duration included', async (t) => {
  t.throws(() => parseScenario('duration = "2s"\nbackends = [{ latency = "1ms", die_after = "3s" }]', 'x.toml'), /x\.toml: backends\[0\]\.die_after: must be shorter than duration/);
  const s = parseScenario('duration = "5s"\nbackends = [{ latency = "1ms", die_after = "3s" }, { latency = "1ms" }]', 'x.toml');
  await t.rejects(runScenarios({ scenarios: [s], durationMs: 2000 }), /dies after 3000 ms, not within the 2000 ms run/);
  t.same(parseScenario('key_distribution = "zipf"\nkey_exponent = 0.9\nbackends = [{ latency = "1ms" }]', 'x.toml').keyExponent, 0.9);
  t.throws(() => parseScenario('arrivals = "steady"\nbackends = [{ latency = "1ms" }]', 'x.toml'), /arrivals: must be "poisson" or "bursty"/);
});

t.test('svg: a log axis leaves a visible bar for the smallest value', async (t) => {
  const svg = barChart({ title: 'x', categories: ['a', 'b'], series: [{ name: 's', values: [1.05, 300] }], yLabel: 'y', unit: 'ms', log: true });
  const h = Number(/height="([\d.]+)" fill="[^"]+" stroke="#ffffff" stroke-width="0.5"><title>a · s: 1.05 ms/.exec(svg)?.[1]);
  t.ok(h > 20, `the 1.05 ms bar is ${h} px tall`);
});

t.test('loadgen: the open loop measures from the intended send time, flags a missed rate, and draws keys per request', async (t) => {
  const http = await import('node:http');
  const { LoadGenerator, rateShort } = await import('../bench/loadgen.js');
  const keys = new Set<string>();
  // 50 ms per answer, one connection: at most 20 answers/s against 60 sent/s.
  const server = http.createServer((req, res) => {
    keys.add(String(req.headers['x-user-id']));
    setTimeout(() => res.end('ok'), 50);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const gen = LoadGenerator.start();
  t.teardown(() => gen.stop());
  const r = await gen.run({ url: `http://127.0.0.1:${port}/`, connections: 1, durationMs: 1000, rate: 60, keys: 1000, keyDistribution: 'zipf', keyExponent: 0.9 });
  t.equal(r.targetRate, 60);
  t.ok(r.sent! > 30 && r.sent! < 100, `${r.sent} sent in 1 s at 60/s`);
  t.ok(rateShort(r) && r.rps < 30, `${r.rps} answers/s flagged below the 60/s target`);
  t.ok(r.latency.p99 > 500, `p99 ${r.latency.p99} ms includes the wait for the one connection (a closed loop would show 50 ms)`);
  t.equal(r.keys.distinct, keys.size, 'distinct keys as the server saw them');
  t.ok(keys.size > 10, `${keys.size} distinct keys drawn per request`);
  const closed = await gen.run({ url: `http://127.0.0.1:${port}/`, connections: 4, durationMs: 500, keys: 5 });
  t.ok(closed.keys.distinct >= 2 && closed.keys.distinct <= 5, `closed loop: ${closed.keys.distinct} of 5 keys`);
  t.ok(closed.keys.sameKeyInFlight > 0, `4 connections over 5 keys overlap (${closed.keys.sameKeyInFlight})`);
  t.equal(closed.targetRate, undefined);
});

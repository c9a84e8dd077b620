// Global rate limits through two real lb instances sharing one real redis-server: together they hold a
// limit of 1,000 req/s within 5 %; with redis-server killed mid-run requests keep flowing (only 200 and
// 429, no errors) and the instances fall back to half the limit each (two instances were alive); once
// redis-server is back the shared limit holds again.

import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import t from 'tap';
import { LoadGenerator, type LoadResult } from '../bench/loadgen.js';
import { freePort, startLb, startUpstream, tmpdir, waitFor, type Lb } from './helpers/lb.js';

const RATE = 1000;
const WARMUP_MS = 3000;

function startRedis(port: number, dir: string): ChildProcess {
  return spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    s.once('error', () => resolve(false));
  });
}

function config(port: number, upPort: number, redisPort: number): string {
  return `
[daemon]
workers = 1
[admin]
socket = "{{socket}}"
[redis]
address = "127.0.0.1:${redisPort}"
timeout = "250ms"
prefix = "lbtest:"
[rate_limits.shared]
rate = ${RATE}
burst = 1000
key = "listener"
scope = "global"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
rate_limit = "shared"
[pools.app]
backends = [{ address = "127.0.0.1:${upPort}" }]
`;
}

const count = (hits: number[], from: number, to: number): number => hits.filter((h) => h >= from && h < to).length;

t.test('a global limit shared by two instances; redis-server killed and restarted mid-run', async (t) => {
  const dir = tmpdir('lb-redis-');
  const redisPort = await freePort();
  let redis = startRedis(redisPort, dir);
  t.teardown(() => {
    redis.kill('SIGKILL');
  });
  await waitFor(() => ping(redisPort), 10_000, 'redis-server to answer PING');

  const hits: number[] = [];
  const up = await startUpstream('app', (_req, res) => {
    hits.push(performance.now());
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  });
  t.teardown(() => up.close());
  const ports = [await freePort(), await freePort()];
  const lbs: Lb[] = [];
  for (const p of ports) {
    const lb = await startLb(config(p, up.port, redisPort), [p]);
    t.teardown(() => lb.stop());
    lbs.push(lb);
  }
  const gens = ports.map(() => LoadGenerator.start());
  t.teardown(() => Promise.all(gens.map((g) => g.stop())));

  const LOAD_MS = 24_000;
  const t0 = performance.now();
  const runs: Promise<LoadResult>[] = ports.map((p, i) => gens[i]!.run({ url: `http://127.0.0.1:${p}/`, connections: 16, durationMs: LOAD_MS, keys: 1 }));
  // Warm-up (JIT, leases growing) for WARMUP_MS from the first admitted request, then phase A: shared
  // through Redis, 4 s. Then redis-server is killed.
  await waitFor(() => hits.length > 0, 10_000, 'the first admitted request');
  await waitFor(() => performance.now() - hits[0]! > WARMUP_MS + 4000, 15_000, 'phase A');
  const killedAt = performance.now();
  redis.kill('SIGKILL');
  await waitFor(() => lbs.every((lb) => lb.logs().some((l) => l.msg?.toString().startsWith('redis unreachable'))), 5000, 'both instances to notice');
  // Phase B: Redis down for 4 s.
  await waitFor(() => performance.now() - killedAt > 4000, 10_000, 'phase B');
  const restartedAt = performance.now();
  redis = startRedis(redisPort, dir);
  await waitFor(() => ping(redisPort), 10_000, 'redis-server to answer again');
  // Phase C: both instances reconnected (backoff: at most 2 s after the restart, plus the machine's delays).
  const reconnected = (lb: Lb): boolean => lb.logs().filter((l) => String(l.msg).startsWith('redis connected')).length >= 2;
  await waitFor(() => lbs.every(reconnected), 8000, 'both instances to reconnect');
  const reconnectedAt = performance.now();
  const results = await Promise.all(runs);
  const end = t0 + LOAD_MS;

  const first = hits[0]!;
  const aFrom = first + WARMUP_MS;
  const a = count(hits, aFrom, killedAt);
  const aRate = (a / (killedAt - aFrom)) * 1000;
  const bFrom = killedAt + 500;
  const b = count(hits, bFrom, restartedAt);
  const bRate = (b / (restartedAt - bFrom)) * 1000;
  const cFrom = reconnectedAt + 1000;
  const cTo = Math.min(end, hits[hits.length - 1]!) - 200;
  const c = count(hits, cFrom, cTo);
  const cRate = (c / (cTo - cFrom)) * 1000;
  const offered = results.reduce((s, r) => s + r.rps, 0);
  const codes: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.statusCodes)) codes[k] = (codes[k] ?? 0) + v;
  const maxLatency = Math.max(...results.map((r) => r.latency.max));
  t.comment(
    `offered ${offered.toFixed(0)} req/s over both; codes ${JSON.stringify(codes)}; errors ${results.map((r) => r.errors).join('+')}; max latency ${maxLatency.toFixed(1)} ms`,
  );
  const drops = lbs.map((lb) => lb.logs().filter((l) => String(l.msg).startsWith('redis unreachable')).length);
  t.comment(`"redis unreachable" lines per instance (1 expected, for the kill): ${drops.join(', ')}`);
  t.comment(`A shared: ${a} in ${((killedAt - aFrom) / 1000).toFixed(2)} s = ${aRate.toFixed(1)} req/s (error ${((aRate / RATE - 1) * 100).toFixed(2)}%)`);
  t.comment(`B redis down: ${b} in ${((restartedAt - bFrom) / 1000).toFixed(2)} s = ${bRate.toFixed(1)} req/s (2 x limit/2; error ${((bRate / RATE - 1) * 100).toFixed(2)}%)`);
  t.comment(`C shared again: ${c} in ${((cTo - cFrom) / 1000).toFixed(2)} s = ${cRate.toFixed(1)} req/s (error ${((cRate / RATE - 1) * 100).toFixed(2)}%)`);

  t.ok(offered > 2 * RATE, 'offered load is over twice the limit');
  t.ok(Math.abs(aRate / RATE - 1) <= 0.05, `shared limit within 5%: ${aRate.toFixed(1)} req/s`);
  t.ok(Math.abs(bRate / RATE - 1) <= 0.1, `redis down: each instance at half the limit, together within 10%: ${bRate.toFixed(1)} req/s`);
  t.ok(Math.abs(cRate / RATE - 1) <= 0.05, `shared limit within 5% after redis came back: ${cRate.toFixed(1)} req/s`);
  t.same(Object.keys(codes).sort(), ['200', '429'], 'only 200 and 429: no 5xx');
  t.equal(results.reduce((s, r) => s + r.errors, 0), 0, 'no connection errors or timeouts');
  // The bound: one redis.timeout per batch, or the worker's 1 s wait for its primary; never the 10 s timeout.
  t.ok(maxLatency < 5000, `no request stalled (max ${maxLatency.toFixed(1)} ms)`);
});

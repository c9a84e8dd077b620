// The circuit-breaking rules that need no daemon: Envoy's success-rate outlier arithmetic, the
// max_ejection_percent cap, the growing ejection time, and the config keys' located errors through the real
// `lb validate`.

import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { decayedCount, ejectionCap, ejectionTime, isGatewayError, successRateOutliers } from '../src/health/outlier.js';
import { RetryBudget } from '../src/dataplane/retry-budget.js';
import { cli, tmpdir } from './helpers/lb.js';

const sr = { intervalMs: 1000, minRequests: 10, minHosts: 5, stdevFactor: 1.9 };

t.test('success rate: below mean - factor x stdev is ejected; too few requests or hosts judges none', async (t) => {
  const pool = (bad: number) => [
    { key: 'a', total: 100, ok: 100 },
    { key: 'b', total: 100, ok: 100 },
    { key: 'c', total: 100, ok: 100 },
    { key: 'd', total: 100, ok: 100 },
    { key: 'e', total: 100, ok: bad },
  ];
  const v = successRateOutliers(pool(0), sr);
  t.same(v.map((x) => x.key), ['e']);
  t.equal(v[0]!.mean, 80);
  t.equal(v[0]!.stdev, 40);
  t.ok(Math.abs(v[0]!.threshold - 4) < 1e-9, 'threshold 80 - 1.9 x 40');
  t.same(successRateOutliers(pool(50), sr).map((x) => x.key), ['e'], '50% against 100%: mean 90, stdev 20, threshold 52');
  const two = pool(50);
  two[3] = { key: 'd', total: 100, ok: 50 };
  t.same(successRateOutliers(two, sr), [], 'two of five at 50%: mean 80, stdev 24.5, threshold 33.5: none');
  t.same(successRateOutliers(pool(0).slice(0, 4).concat([{ key: 'e', total: 9, ok: 0 }]), sr), [], 'under min_requests: 4 judged < min_hosts');
  t.same(successRateOutliers(pool(100), sr), [], 'all equal: none');
});

t.test('max_ejection_percent always allows one; ejection time grows and decays', async (t) => {
  t.equal(ejectionCap(10, 10), 1);
  t.equal(ejectionCap(10, 25), 2);
  t.equal(ejectionCap(3, 10), 1, 'at least one (Envoy)');
  t.equal(ejectionCap(4, 100), 4);
  t.equal(ejectionTime(30_000, 300_000, 1), 30_000);
  t.equal(ejectionTime(30_000, 300_000, 3), 90_000);
  t.equal(ejectionTime(30_000, 300_000, 50), 300_000, 'capped by max_eject_for');
  t.equal(decayedCount(3, 0, 30_000), 3);
  t.equal(decayedCount(3, 65_000, 30_000), 1, 'one less per eject_for served');
  t.equal(decayedCount(3, 10 * 60_000, 30_000), 0);
  t.ok(isGatewayError(502) && isGatewayError(503) && isGatewayError(504) && !isGatewayError(500) && !isGatewayError(undefined));
});

t.test('retry budget: percent of requests in flight, with a floor', async (t) => {
  const b = new RetryBudget(20, 3);
  t.ok(b.acquire(1) && b.acquire(1) && b.acquire(1), 'the floor: 3 whatever the load');
  t.notOk(b.acquire(1), 'a fourth is refused at low load');
  t.ok(b.acquire(20), '20% of 20 = 4');
  t.notOk(b.acquire(20));
  b.release();
  t.ok(b.acquire(20), 'a released slot is reused');
});

t.test('config errors name file, line and key', async (t) => {
  const dir = tmpdir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'lb.toml');
  fs.writeFileSync(
    file,
    `[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "app"
[pools.app]
max_queue = 10
per_try_timeout = "40s"
retry_on = ["connect-failure", "500"]
retry_budget = { percent = 120 }
backends = [ { address = "127.0.0.1:9" } ]
[pools.app.passive]
max_ejection_percent = 101
consecutive_5xx = 0
eject_for = "10s"
max_eject_for = "5s"
success_rate = { interval = "0s", stdev_factor = "x" }
`,
  );
  const r = await cli(['validate', '-c', file]);
  t.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n').map((l) => l.replace(file, 'lb.toml'));
  t.same(lines, [
    'lb.toml:6:1: pools.app.max_queue: has no effect: nothing to wait for (set max_requests, or max_connections on a backend)',
    'lb.toml:7:1: pools.app.per_try_timeout: must not be longer than response_timeout (30s)',
    'lb.toml:8:32: pools.app.retry_on[1]: must be one of: connect-failure, reset, 502, 503, 504, gateway-error (got "500"; did you mean "502"?)',
    'lb.toml:9:18: pools.app.retry_budget.percent: must be <= 100 (got 120)',
    'lb.toml:12:1: pools.app.passive.max_ejection_percent: must be <= 100 (got 101)',
    'lb.toml:13:1: pools.app.passive.consecutive_5xx: must be >= 1 (got 0)',
    'lb.toml:15:1: pools.app.passive.max_eject_for: must not be shorter than eject_for (10s)',
    'lb.toml:16:18: pools.app.passive.success_rate.interval: must be longer than 0 (got "0s")',
    'lb.toml:16:35: pools.app.passive.success_rate.stdev_factor: expected a number, got string "x"',
  ]);
});

// Outlier ejection beyond max_failures, through the real daemon with 2 workers (the primary decides from
// both workers' reports): consecutive_5xx under a max_ejection_percent cap (10 backends all failing, at most
// the cap ejected), and success-rate ejection of the one bad backend among good ones (Envoy
// outlier_detection semantics, src/health/outlier.ts).

import t from 'tap';
import { admin, freePort, startLb, startLoad, waitFor } from './helpers/lb.js';
import { countingUpstream, scrape, sum, type CountingUpstream } from './helpers/breaker.js';

interface BackendStatus {
  name: string;
  health: string;
  reason: string | null;
  ejectedUntil: string | null;
}

async function backends(socket: string, pool: string): Promise<BackendStatus[]> {
  const r = await admin(socket, { cmd: 'status' });
  return (r.result.pools as Array<{ name: string; backends: BackendStatus[] }>).find((x) => x.name === pool)!.backends;
}

function config(port: number, metricsPort: number, pool: string): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${pool}
`;
}

const addr = (us: CountingUpstream[]): string => `[${us.map((u) => `{ name = "${u.name}", address = "127.0.0.1:${u.port}" }`).join(', ')}]`;

t.test('max_ejection_percent: with 10 backends failing, at most the cap is ejected', async (t) => {
  const ups = await Promise.all(Array.from({ length: 10 }, (_, i) => countingUpstream(`b${i}`, { status: 503 })));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
retries = 0
backends = ${addr(ups)}
[pools.app.passive]
consecutive_5xx = 3
max_ejection_percent = 20
eject_for = "60s"
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const load = startLoad(port, { concurrency: 4, keepAlive: true, limitMs: 20_000 });
  await waitFor(async () => (await backends(lb.socket, 'app')).filter((b) => b.health === 'down').length === 2, 10_000, 'the cap reached');
  // Every backend keeps failing every request: each in service reaches 3 in a row many times over.
  const at = ups.map((u) => u.hits);
  const total = (): number => ups.reduce((a, u) => a + u.hits, 0);
  const start = total();
  await waitFor(() => total() - start >= 160, 20_000, '160 more failed requests');
  const r = await load.stop();
  const bs = await backends(lb.socket, 'app');
  const down = bs.filter((b) => b.health === 'down');
  t.equal(down.length, 2, `20% of 10 backends ejected, no more (${r.failed} failed requests sent)`);
  t.ok(down.every((b) => /consecutive 5xx/.test(b.reason ?? '')), 'for consecutive 5xx');
  const served = ups.filter((u) => !down.some((d) => d.name === u.name)).map((u) => u.hits - at[ups.indexOf(u)]!);
  t.ok(served.every((n) => n >= 10), `the other 8 kept receiving traffic and failing (${served})`);
  const m = await scrape(mport);
  t.equal(sum(m, 'lb_outlier_ejections_total', { pool: 'app' }), 2, 'lb_outlier_ejections_total');
});

t.test('success_rate ejects the one bad backend among good ones', async (t) => {
  const good = await Promise.all(['g1', 'g2', 'g3', 'g4'].map((n) => countingUpstream(n)));
  const bad = await countingUpstream('bad', { status: 503 });
  const ups = [...good, bad];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
retries = 0
backends = ${addr(ups)}
[pools.app.passive]
eject_for = "60s"
success_rate = { interval = "1s", min_requests = 20, min_hosts = 5, stdev_factor = 1.9 }
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const load = startLoad(port, { concurrency: 4, keepAlive: true, limitMs: 30_000 });
  const ejected = await waitFor(
    async () => (await backends(lb.socket, 'app')).find((b) => b.name === 'bad' && b.health === 'down'),
    25_000,
    'the bad backend ejected',
  );
  const hitsAtEjection = bad.hits;
  await new Promise((r) => setTimeout(r, 1500));
  await load.stop();
  t.match(ejected.reason, /^passive: success rate 0\.0% below /, `reason: ${ejected.reason}`);
  const bs = await backends(lb.socket, 'app');
  t.same(bs.filter((b) => b.health === 'down').map((b) => b.name), ['bad'], 'only the bad one is out');
  t.ok(bad.hits - hitsAtEjection <= 4, 'no traffic to it after the ejection (a few in flight at most)');
});

// /metrics on the metrics listener, served by the primary and summed over workers (docs/SPEC.md "Metrics"),
// driven against the real daemon with 2 workers: exact request counts over both workers, lb_backend_up
// following active health checks, a scrape that stays bounded while a worker is busy-looping, and
// counters that do not go backwards when a worker is killed with SIGKILL and respawned.

import t, { type Test } from 'tap';
import net from 'node:net';
import { rawExchange } from './helpers/hardening.js';
import { admin, backends, freePort, get, startLb, startUpstream, waitFor, type Lb, type Upstream } from './helpers/lb.js';

/** Text exposition -> samples. Label values in lb's series never contain `"`, `,` or `}`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const kv of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="([^"]*)"/g)) labels[kv[1]!] = kv[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}
function sum(samples: Sample[], name: string, where: Record<string, string> = {}): number {
  let s = 0;
  for (const x of samples) if (x.name === name && Object.entries(where).every(([k, v]) => x.labels[k] === v)) s += x.value;
  return s;
}
function has(samples: Sample[], name: string): boolean {
  return samples.some((x) => x.name === name);
}
async function scrape(port: number): Promise<{ samples: Sample[]; ms: number; status: number; type: string }> {
  const t0 = performance.now();
  const r = await get(port, '/metrics');
  return { samples: r.status === 200 ? parse(r.body) : [], ms: performance.now() - t0, status: r.status, type: String(r.headers['content-type']) };
}

function config(port: number, metricsPort: number, pool: string, opts: { access?: boolean } = {}): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
accept = "round-robin"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
level = "info"
access = ${opts.access ?? false}
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${pool}
`;
}

/** `n` requests, `concurrency` at a time, each on a new connection (so both workers get some). */
async function send(port: number, n: number, concurrency = 8): Promise<number> {
  let next = 0;
  let ok = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        const r = await get(port, `/r${next}`);
        if (r.status === 200) ok++;
      }
    }),
  );
  return ok;
}

async function twoUpstreams(t: Test): Promise<Upstream[]> {
  const ups = await Promise.all([startUpstream('a'), startUpstream('b')]);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  return ups;
}

async function startWith(t: Test, ups: Upstream[], extra = '', opts: { access?: boolean; env?: Record<string, string> } = {}): Promise<{ lb: Lb; port: number; mport: number }> {
  const [port, mport] = [await freePort(), await freePort()];
  const pool = `[pools.app]
algorithm = "round-robin"
retries = 0
backends = ${backends(ups.map((u) => ({ name: u.name, port: u.port })))}
${extra}`;
  const lb = await startLb(config(port, mport, pool, opts), [port, mport], { env: opts.env });
  t.teardown(() => lb.stop());
  return { lb, port, mport };
}

t.test('lb_requests_total summed over labels equals the requests sent through 2 workers, exactly', async (t) => {
  const ups = await twoUpstreams(t);
  const { lb, port, mport } = await startWith(t, ups, '', { access: true });
  const before = await scrape(mport);
  t.equal(before.status, 200);
  t.match(before.type, /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
  t.equal(sum(before.samples, 'lb_requests_total'), 0, 'nothing counted before traffic');
  // Every backend has its gauges before its first request.
  t.equal(sum(before.samples, 'lb_backend_up'), 2);
  t.ok(before.samples.some((s) => s.name === 'lb_backend_inflight' && s.labels.backend === 'b'), 'in-flight gauge exists for every backend');

  const N = 300;
  t.equal(await send(port, N), N, `${N} requests answered 200`);
  // A response's last byte can reach the client a moment before the worker's bookkeeping runs.
  const after = await waitFor(async () => {
    const s = await scrape(mport);
    return sum(s.samples, 'lb_requests_total') >= N ? s : undefined;
  }, 5_000, 'the counters to reach N');
  const samples = after.samples;
  t.equal(sum(samples, 'lb_requests_total'), N, 'lb_requests_total sums to exactly N');
  t.equal(sum(samples, 'lb_requests_total', { code: '200' }), N, 'all with code 200');
  t.equal(sum(samples, 'lb_requests_total', { backend: 'a' }) + sum(samples, 'lb_requests_total', { backend: 'b' }), N);
  t.equal(sum(samples, 'lb_requests_total', { backend: 'a' }), ups[0]!.hits, 'per-backend counts match what upstream a saw');
  t.equal(sum(samples, 'lb_request_duration_seconds_count', { listener: 'web', pool: 'app' }), N, 'histogram count is N');
  t.equal(sum(samples, 'lb_request_duration_seconds_bucket', { le: '+Inf' }), N, '+Inf bucket is N');
  const les = samples.filter((s) => s.name === 'lb_request_duration_seconds_bucket').map((s) => s.labels.le);
  t.ok(les.includes('0.0005') && les.includes('60'), `buckets from sub-ms to a minute (${les.join(' ')})`);
  // Which workers did the work: both (the access log says who served each request).
  const access = await waitFor(() => {
    const l = lb.logs().filter((x) => x.msg === 'access');
    return l.length >= N ? l : undefined;
  }, 3_000, 'N access lines');
  t.same([...new Set(access.map((l) => l.worker))].sort(), [1, 2], 'both workers served requests');
  // Default process metrics, from every process.
  for (const m of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) t.ok(has(samples, m), `${m} present`);
  for (const m of ['lb_config_reloads_total', 'lb_worker_restarts_total', 'lb_metrics_scrape_workers_missing', 'lb_backend_weight', 'lb_backend_admin_drain']) t.ok(has(samples, m), `${m} present`);
  t.equal(sum(samples, 'lb_metrics_scrape_workers_missing'), 0, 'every worker answered');

  const post = await get(mport, '/metrics', { method: 'POST', body: 'x' });
  t.equal(post.status, 405, 'the metrics listener is read-only');
  t.equal((await get(mport, '/nope')).status, 404);
});

t.test('lb_backend_up follows active health checks: 0 after a backend dies, 1 when it returns', async (t) => {
  const a = await startUpstream('a');
  const b = await startUpstream('b');
  t.teardown(() => b.close());
  const { lb, mport } = await startWith(
    t,
    [a, b],
    `[pools.app.health_check]
type = "http"
path = "/"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1`,
  );
  const up = async (v: number): Promise<boolean> => {
    const s = await scrape(mport);
    return sum(s.samples, 'lb_backend_up', { pool: 'app', backend: 'a' }) === v && has(s.samples, 'lb_backend_up');
  };
  await waitFor(() => up(1), 5_000, 'a up');
  await a.close();
  const tDown = Date.now();
  await waitFor(() => up(0), 5_000, 'lb_backend_up{backend="a"} 0');
  t.pass(`lb_backend_up{backend="a"} went to 0 ${Date.now() - tDown}ms after the backend died`);
  const s = await scrape(mport);
  t.equal(sum(s.samples, 'lb_backend_up', { backend: 'b' }), 1, 'b stays up');
  t.ok(sum(s.samples, 'lb_health_checks_total', { backend: 'a', result: 'fail' }) >= 1, 'failed checks counted');
  const back = await startUpstream('a', undefined, a.port);
  t.teardown(() => back.close());
  await waitFor(() => up(1), 5_000, 'lb_backend_up{backend="a"} back to 1');
  t.pass('lb_backend_up{backend="a"} back to 1 after the backend returned');
  const changed = await waitFor(() => {
    const l = lb.logs().filter((x) => x.msg === 'backend state changed' && x.backend === 'a');
    return l.length >= 3 ? l : undefined;
  }, 3_000, 'three state changes of a logged (up, down, up)');
  t.ok(changed.length >= 2 && changed.every((l) => typeof l.reason === 'string' && l.reason !== ''), `health transitions logged with a reason: ${changed.map((l) => l.reason).join(' | ')}`);
});

t.test('a scrape while a worker is blocked answers within its bound and counts the silent worker', async (t) => {
  const ups = await twoUpstreams(t);
  const { lb, port, mport } = await startWith(t, ups, '', { env: { LB_TEST_HOOKS: '1' } });
  const N = 100;
  t.equal(await send(port, N), N);
  await waitFor(async () => sum((await scrape(mport)).samples, 'lb_requests_total') === N, 5_000, 'N counted');
  const blocked = await admin(lb.socket, { cmd: 'test-block', ms: 4000 });
  t.equal(blocked.ok, true, `a worker busy-loops for 4 s (${JSON.stringify(blocked)})`);
  const s = await scrape(mport);
  t.equal(s.status, 200, 'the scrape succeeds');
  t.ok(s.ms < 2_500, `answered in ${Math.round(s.ms)}ms (bound 2.5 s; the blocked worker is given 1 s)`);
  t.equal(sum(s.samples, 'lb_metrics_scrape_workers_missing'), 1, 'lb_metrics_scrape_workers_missing 1');
  t.equal(sum(s.samples, 'lb_requests_total'), N, "the blocked worker's counters come from its last answer: still N");
  // Concurrent scrapes share one round: still bounded.
  const t0 = performance.now();
  const many = await Promise.all(Array.from({ length: 5 }, () => scrape(mport)));
  const ms = performance.now() - t0;
  t.ok(ms < 2_500 && many.every((x) => x.status === 200), `5 concurrent scrapes answered in ${Math.round(ms)}ms`);
  await waitFor(async () => sum((await scrape(mport)).samples, 'lb_metrics_scrape_workers_missing') === 0, 8_000, 'the worker to answer again');
  t.pass('once the worker is free again, missing goes back to 0');
});

t.test('counters do not go backwards when a worker is killed with SIGKILL and respawned', async (t) => {
  const ups = await twoUpstreams(t);
  const { lb, port, mport } = await startWith(t, ups);
  t.equal(await send(port, 200), 200);
  await waitFor(async () => sum((await scrape(mport)).samples, 'lb_requests_total') === 200, 5_000, '200 counted');
  const before = await scrape(mport);
  const total = (s: Sample[]): number => sum(s, 'lb_requests_total');
  const st = (await admin(lb.socket, { cmd: 'status' })).result;
  const victim = st.workers.pids[0] as number;
  // Scrape continuously through the kill and the respawn: every value must be >= the one before.
  const seen: number[] = [total(before.samples)];
  let scraping = true;
  const scraper = (async () => {
    while (scraping) {
      const s = await scrape(mport);
      if (s.status === 200) seen.push(total(s.samples));
    }
  })();
  process.kill(victim, 'SIGKILL');
  await waitFor(
    async () => {
      const r = (await admin(lb.socket, { cmd: 'status' })).result;
      return r.workers.pids.length === 2 && !r.workers.pids.includes(victim);
    },
    10_000,
    'the worker to be respawned',
  );
  t.equal(await send(port, 50), 50, 'the daemon serves after the respawn');
  await waitFor(async () => total((await scrape(mport)).samples) >= total(before.samples) + 50, 5_000, 'new requests counted');
  scraping = false;
  await scraper;
  const after = await scrape(mport);
  t.ok(total(after.samples) >= total(before.samples), `requests total after (${total(after.samples)}) >= before (${total(before.samples)})`);
  t.equal(total(after.samples), 250, 'nothing was counted twice (200 before the kill, 50 after; the victim had been scraped)');
  t.equal(sum(after.samples, 'lb_request_duration_seconds_count'), 250, 'histogram carried over too');
  t.equal(sum(after.samples, 'lb_worker_restarts_total'), 1, 'lb_worker_restarts_total 1');
  const drops = seen.filter((v, i) => i > 0 && v < seen[i - 1]!);
  t.same(drops, [], `no scrape went backwards over ${seen.length} scrapes through the kill`);
  t.equal(lb.proc.exitCode, null, 'the primary survived');
});

t.test('responses lb produces itself are counted and logged with their reason; a client abort is 499 with its backend', async (t) => {
  // Backend "a" answers /slow after 2 s, so a client can reset its connection while the request is in flight.
  const ups = await Promise.all([
    startUpstream('a', (req, res) => {
      if (req.url === '/slow') setTimeout(() => res.end('late'), 2000);
      else res.end('a');
    }),
  ]);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const { lb, port, mport } = await startWith(t, ups, '', { access: true });
  const garbage = [
    'HELLO\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 1\r\n\r\nx',
    'GET / HTTP/1.1\r\nHost: a b\r\n\r\n',
    'GET / HTTP/1.1\r\n\r\n',
  ];
  const N = 40;
  for (let i = 0; i < N; i++) {
    const r = await rawExchange(port, garbage[i % garbage.length]!);
    t.equal(r.status, 400, `garbage ${i % garbage.length} -> 400`);
  }
  const scraped = await waitFor(async () => {
    const s = await scrape(mport);
    return sum(s.samples, 'lb_requests_total', { code: '400' }) >= N ? s : undefined;
  }, 10_000, 'the 400s to be counted');
  t.equal(sum(scraped.samples, 'lb_requests_total', { code: '400' }), N, `lb_requests_total{code="400"} counts all ${N}`);
  t.equal(sum(scraped.samples, 'lb_requests_total', { code: '400', backend: '' }), N, 'with no backend');
  const lines = await waitFor(() => {
    const l = lb.logs().filter((x) => x.msg === 'access' && x.status === 400);
    return l.length >= N ? l : undefined;
  }, 10_000, 'the access log lines');
  t.equal(lines.length, N, 'one access log line each');
  t.ok(lines.every((l) => typeof l.error === 'string' && (l.error as string).length > 0), 'each with its reason');
  t.ok(lines.some((l) => /Connection names content-length/.test(String(l.error))), 'the reason says what was refused');

  // A client that resets its connection while its request is at the backend: 499, the backend named.
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  s.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n');
  await waitFor(() => ups[0]!.hits > 0, 5_000, 'the request to reach the backend');
  s.resetAndDestroy();
  const aborted = await waitFor(() => lb.logs().find((x) => x.msg === 'access' && x.path === '/slow'), 10_000, 'the aborted request logged');
  t.equal(aborted.status, 499, 'a reset client is logged 499');
  t.equal(aborted.backend, 'a', 'with the backend it was sent to');
});

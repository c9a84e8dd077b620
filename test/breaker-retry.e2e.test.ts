// Retries under retry_on, per_try_timeout and an Envoy-style retry budget, through the real daemon: a retry
// storm against backends that answer every request with 503 stays within the budget (attempts counted at
// the backends), while the same pool without a budget multiplies the traffic by 1 + retries; a slow
// attempt is cut by per_try_timeout and retried on another backend; a request with a body is not retried
// on a status.

import http from 'node:http';
import t, { type Test } from 'tap';
import { freePort, get, startLb } from './helpers/lb.js';
import { countingUpstream, scrape, sum, type CountingUpstream } from './helpers/breaker.js';

function config(port: number, metricsPort: number, pool: string): string {
  return `
[daemon]
workers = 1
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

/** `clients` keep-alive clients, each sending `each` GETs back to back; resolves with the statuses seen. */
async function closedLoop(port: number, clients: number, each: number): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; i < each; i++) {
        const r = await get(port, '/', { agent });
        seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
      }
      agent.destroy();
    }),
  );
  return seen;
}

/** Long against a client's own time between requests, so that requests in flight stay near CLIENTS. */
const BACKEND_MS = 50;
const PERCENT = 20;
const MIN_RETRIES = 3;
const RETRIES = 3;
const CLIENTS = 20;
const EACH = 20;

async function storm(t: Test, budget: boolean): Promise<{ requests: number; attempts: number; exhausted: number; retried: number; statuses: Map<number, number> }> {
  const ups = await Promise.all(['a', 'b', 'c', 'd'].map((n) => countingUpstream(n, { delayMs: BACKEND_MS, status: 503 })));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
retries = ${RETRIES}
retry_on = ["503"]
${budget ? `retry_budget = { percent = ${PERCENT}, min_retries = ${MIN_RETRIES} }` : ''}
backends = ${addr(ups)}
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const statuses = await closedLoop(port, CLIENTS, EACH);
  const m = await scrape(mport);
  return {
    requests: CLIENTS * EACH,
    attempts: ups.reduce((a, u) => a + u.hits, 0),
    exhausted: sum(m, 'lb_retry_budget_exhausted_total', { pool: 'app' }),
    retried: sum(m, 'lb_retries_total', { pool: 'app', reason: '503' }),
    statuses,
  };
}

t.test('a retry storm against failing backends stays within the retry budget', async (t) => {
  const r = await storm(t, true);
  // Retries in flight <= PERCENT% of requests in flight, which include them (Envoy counts a retry as an
  // active request too): with attempts of equal length, retry attempts are at most PERCENT / (100 - PERCENT)
  // of first attempts, plus what the min_retries floor lets through when few are in flight (the start and
  // the end of the run). A fifth more for the clients' own time between requests, when fewer than CLIENTS
  // are in flight and the share is taken of less.
  const bound = Math.ceil(r.requests * (1 + PERCENT / (100 - PERCENT)) * 1.2 + MIN_RETRIES * RETRIES * 2);
  t.comment(`with budget: ${r.requests} requests, ${r.attempts} attempts at the backends (bound ${bound}), ${r.retried} retries, ${r.exhausted} refused by the budget`);
  t.equal(r.statuses.get(503), r.requests, 'every client got the 503 (the last attempt passes through)');
  t.ok(r.attempts > r.requests, 'some requests were retried');
  t.ok(r.attempts <= bound, `attempts ${r.attempts} <= ${bound}`);
  t.equal(r.attempts - r.requests, r.retried, 'lb_retries_total{reason="503"} counts the retries');
  t.ok(r.exhausted > 0, 'lb_retry_budget_exhausted_total counts refusals');
});

t.test('without a budget the same storm multiplies the traffic by 1 + retries', async (t) => {
  const r = await storm(t, false);
  t.comment(`without budget: ${r.requests} requests, ${r.attempts} attempts`);
  t.equal(r.attempts, r.requests * (1 + RETRIES), 'every request tried 1 + retries times');
  t.equal(r.exhausted, 0);
});

t.test('per_try_timeout cuts a slow attempt and retries it on another backend', async (t) => {
  const slow = await countingUpstream('slow', { delayMs: 3000 });
  const fast = await countingUpstream('fast');
  t.teardown(() => Promise.all([slow.close(), fast.close()]));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    config(
      port,
      mport,
      `
[pools.app]
retries = 1
retry_on = ["reset"]
per_try_timeout = "300ms"
response_timeout = "10s"
backends = ${addr([slow, fast])}
`,
    ),
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const replies = [];
  for (let i = 0; i < 4; i++) replies.push(await get(port, '/'));
  t.same(replies.map((r) => `${r.status} ${r.body}`), ['200 fast', '200 fast', '200 fast', '200 fast'], 'every answer from the fast backend');
  t.ok(slow.hits >= 1, `the slow backend was tried (${slow.hits})`);
  const m = await scrape(mport);
  t.equal(sum(m, 'lb_retries_total', { pool: 'app', reason: 'timeout' }), slow.hits, 'each timed-out attempt was retried');
});

t.test('a POST with a body is not retried on 503; a GET is', async (t) => {
  const ups = [await countingUpstream('a', { status: 503 }), await countingUpstream('b', { status: 503 })];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, mport, `[pools.app]\nretries = 1\nretry_on = ["gateway-error"]\nbackends = ${addr(ups)}\n`), [port, mport]);
  t.teardown(() => lb.stop());
  const post = await get(port, '/', { method: 'POST', body: 'x=1' });
  t.equal(post.status, 503);
  t.equal(ups[0]!.hits + ups[1]!.hits, 1, 'the POST reached one backend once');
  const g = await get(port, '/');
  t.equal(g.status, 503);
  t.equal(ups[0]!.hits + ups[1]!.hits, 3, 'the GET was tried twice');
});

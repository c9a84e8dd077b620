// Local rate limits through the real daemon: one instance with 2 and then 4 workers holds a limit of
// 200 and of 1,000 req/s within 2 % while over-offered (autocannon in a child process; admissions counted
// from the instance's access log over a fixed window after a warm-up), the refusals are 429 with
// Retry-After and RateLimit-* fields, counted in lb_rate_limited_total and the access log.

import http from 'node:http';
import t from 'tap';
import { LoadGenerator } from '../bench/loadgen.js';
import { AccessLog, countIn, everySlice } from './helpers/access-window.js';
import { freePort, startLb, startUpstream, waitFor, type Lb } from './helpers/lb.js';

const LOAD_MS = 14_000;
/** The window counted, by the instance's clock: from WARMUP_MS after its first admitted request, WINDOW_MS long. */
const WARMUP_MS = 2000;
const WINDOW_MS = 10_000;

function get(port: number, path = '/', headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      })
      .on('error', reject);
  });
}

// burst = 250 ms of the rate: tokens are lost only while the whole instance (every worker and the
// primary) stalls longer than burst / rate, the bucket being full meanwhile (README, local limits).
async function start(t: { teardown(fn: () => unknown): void }, workers: number, rate: number): Promise<{ lb: Lb; port: number; metricsPort: number }> {
  const up = await startUpstream('app');
  t.teardown(() => up.close());
  const port = await freePort();
  const metricsPort = await freePort();
  const lb = await startLb(
    `
[daemon]
workers = ${workers}
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
access = true
[rate_limits.api]
rate = ${rate}
per = "1s"
burst = ${rate / 4}
key = "listener"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
rate_limit = "api"
[pools.app]
backends = [{ address = "127.0.0.1:${up.port}" }]
`,
    [port],
  );
  t.teardown(() => lb.stop());
  return { lb, port, metricsPort };
}

// 200 req/s can be offered at several times over on a loaded 2-CPU machine; 1,000 req/s is the issue's
// figure, which needs the machine to answer a few thousand requests a second.
for (const [rate, workers] of [
  [200, 2],
  [200, 4],
  [1000, 2],
  [1000, 4],
] as const) {
  t.test(`a local limit of ${rate} req/s holds within 2% with ${workers} workers`, async (t) => {
    const { lb, port, metricsPort } = await start(t, workers, rate);
    const gen = LoadGenerator.start();
    t.teardown(() => gen.stop());
    const r = await gen.run({ url: `http://127.0.0.1:${port}/`, connections: 32, durationMs: LOAD_MS, keys: 1 });
    const log = new AccessLog(lb);
    // Access lines are written in batches: wait until the run's last answers are in the log.
    await waitFor(() => log.read().admitted.length + log.refused.length >= r.responses, 10_000, 'the access log of the run');
    const from = Math.min(...log.admitted) + WARMUP_MS;
    const to = from + WINDOW_MS;
    const inWindow = countIn(log.admitted, from, to);
    const refusedIn = countIn(log.refused, from, to);
    const expected = (rate * WINDOW_MS) / 1000;
    const error = (inWindow - expected) / expected;
    const offered = ((inWindow + refusedIn) / WINDOW_MS) * 1000;
    const limited = r.statusCodes['429'] ?? 0;
    t.comment(
      `${rate} req/s, ${workers} workers: offered in the window ${offered.toFixed(0)} req/s (${refusedIn} x 429); admitted in ${WINDOW_MS} ms: ` +
        `${inWindow} (expected ${expected}), error ${(error * 100).toFixed(2)}%; whole run ${r.responses} responses, ${limited} x 429, ${r.errors} errors`,
    );
    // The window means something only when the limit bound all through it: more offered than admitted
    // by a margin, and refusals in every second of it (the bucket empty, every admission a refill; a
    // shorter slice would judge the machine, whose stalls of a few hundred ms leave slices without requests).
    t.ok(offered > 1.25 * rate, `offered ${offered.toFixed(0)} req/s in the window, over 1.25x the limit`);
    t.ok(everySlice(log.refused, from, to, 1000), 'refusals in every second of the window');
    t.ok(Math.max(...log.admitted) >= to, 'the run lasted past the window');
    t.ok(Math.abs(error) <= 0.02, `admitted ${inWindow} in the window, within 2% of ${expected}`);
    t.equal(r.errors, 0, 'no connection errors');
    t.equal(r.responses, (r.statusCodes['200'] ?? 0) + limited, 'every answer is 200 or 429');

    const res = await get(port);
    if (res.status === 429) t.pass('still limited');
    // Counted: /metrics has the refusals summed over the workers.
    const text = await waitFor(async () => {
      const m = await get(metricsPort, '/metrics');
      const line = m.body.split('\n').find((l) => l.startsWith('lb_rate_limited_total{') && l.includes('limit="api"'));
      return line && Number(line.split(' ').pop()) >= limited ? line : undefined;
    }, 10_000, 'lb_rate_limited_total');
    t.match(text, /listener="web"/);
    const logged = await waitFor(() => lb.logs().find((l) => l.msg === 'access' && l.status === 429), 5000, 'a 429 in the access log');
    t.equal(logged.error, 'rate limited (api)');
  });
}

t.test('429 carries Retry-After and the RateLimit fields; a client-ip key limits each address alone', async (t) => {
  const up = await startUpstream('app');
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(
    `
[daemon]
workers = 2
[admin]
socket = "{{socket}}"
[rate_limits.tiny]
rate = 3
per = "10s"
burst = 3
[rate_limits.route]
rate = 1
per = "1m"
key = "header:x-user"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
rate_limit = "tiny"
[[listeners.web.routes]]
path_prefix = "/v1/"
pool = "app"
rate_limit = "route"
[pools.app]
backends = [{ address = "127.0.0.1:${up.port}" }]
`,
    [port],
  );
  t.teardown(() => lb.stop());
  const statuses: number[] = [];
  let refused: Awaited<ReturnType<typeof get>> | undefined;
  for (let i = 0; i < 5; i++) {
    const r = await get(port);
    statuses.push(r.status);
    if (r.status === 429) refused = r;
  }
  t.same(statuses, [200, 200, 200, 429, 429], 'burst of 3 for the whole instance (both workers), then 429');
  t.ok(refused);
  const h = refused!.headers;
  t.ok(Number(h['retry-after']) >= 1 && Number(h['retry-after']) <= 4, `Retry-After ${h['retry-after']} s: one token is ~3.3 s away`);
  t.equal(h['ratelimit-limit'], '3');
  t.equal(h['ratelimit-remaining'], '0');
  t.equal(h['ratelimit-reset'], h['retry-after']);
  t.equal(h['ratelimit-policy'], '3;w=10;burst=3');
  t.match(refused!.body, /429 Too Many Requests: rate limit tiny/);
  // Another address has its own bucket (127.0.0.2 is loopback too).
  const other = await new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/', localAddress: '127.0.0.2', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    }).on('error', reject);
  });
  t.equal(other, 200, 'another client address is not limited by the first one');
});

// Health checking through the real daemon (`lb run`, 2 workers): a killed backend leaves traffic within
// interval x fall and comes back after rise, with retries hiding the kill from idempotent requests; active
// checks run once per interval in the primary, not once per worker; passive ejection of a backend that
// resets every connection, summed over workers, and its re-admission after eject_for.

import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { admin, backends, freePort, httpConfig, startLb, startUpstream, waitFor, type Upstream } from './helpers/lb.js';

interface BackendStatus {
  name: string;
  state: string;
  health: string;
  inflight: number;
  reason: string | null;
  lastCheck: { ok: boolean; detail: string; ageMs: number; ms: number } | null;
  ejectedUntil: string | null;
}

async function backendStatus(socket: string, pool: string, backend: string): Promise<BackendStatus> {
  const r = await admin(socket, { cmd: 'status' });
  const p = (r.result.pools as Array<{ name: string; backends: BackendStatus[] }>).find((x) => x.name === pool);
  const b = p?.backends.find((x) => x.name === backend);
  if (!b) throw new Error(`no ${pool}/${backend} in status`);
  return b;
}

const config = (port: number, pool: string): string => httpConfig(port, pool, 2);

/** An upstream answering its name after `delayMs`, and 200 to /healthz; records health-check arrival times. */
async function app(name: string, port = 0, delayMs = 0): Promise<Upstream & { checks: Array<{ at: number; host?: string; connection?: string }> }> {
  const checks: Array<{ at: number; host?: string; connection?: string }> = [];
  const u = await startUpstream(
    name,
    (req, res) => {
      if (req.url === '/healthz') {
        checks.push({ at: Date.now(), host: req.headers.host, connection: req.headers.connection });
        res.writeHead(200).end('ok');
        return;
      }
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(name);
      }, delayMs);
    },
    port,
  );
  return Object.assign(u, { checks });
}

/**
 * What a dead host looks like from a check and from traffic alike: it accepts, reads the request, and cuts
 * the connection. Each connection is classified by its first bytes: a health check or traffic.
 */
async function deadServer(port: number): Promise<{ checks: number[]; traffic: number[]; close(): Promise<void> }> {
  const checks: number[] = [];
  const traffic: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.once('data', (d: Buffer) => {
      (d.toString('latin1').startsWith('GET /healthz ') ? checks : traffic).push(Date.now());
      s.resetAndDestroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    checks,
    traffic,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

t.test('a killed backend is out within interval x fall, gets no traffic after, is back after rise; retries hide the kill', async (t) => {
  const interval = 200;
  const timeout = 100;
  const rise = 2;
  const fall = 2;
  const u1 = await app('u1', 0, 20);
  const u2 = await app('u2', 0, 20);
  const u1Port = u1.port;
  t.teardown(() => u2.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `[pools.app]
algorithm = "round-robin"
retries = 2
backends = ${backends([{ name: 'u1', port: u1.port }, { name: 'u2', port: u2.port }])}
[pools.app.health_check]
type = "http"
path = "/healthz"
interval = "${interval}ms"
timeout = "${timeout}ms"
rise = ${rise}
fall = ${fall}
`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  await waitFor(async () => (await backendStatus(lb.socket, 'app', 'u1')).health === 'up', 5_000, 'u1 up');
  await waitFor(async () => (await backendStatus(lb.socket, 'app', 'u2')).health === 'up', 5_000, 'u2 up');

  // Steady load: 4 clients, keep-alive, GET / in a loop.
  const results: Array<{ ok: boolean; start: number; end: number; body: string }> = [];
  let running = true;
  const agents: http.Agent[] = [];
  const loop = async (): Promise<void> => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    while (running) {
      const start = Date.now();
      const r = await new Promise<{ ok: boolean; body: string }>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ ok: res.statusCode === 200, body }));
          res.on('error', () => resolve({ ok: false, body: 'response error' }));
        });
        req.on('error', (err) => resolve({ ok: false, body: err.message }));
      });
      results.push({ ...r, start, end: Date.now() });
    }
  };
  const loops = Array.from({ length: 4 }, () => loop());
  await waitFor(() => results.filter((r) => r.body === 'u1').length >= 10, 5_000, 'traffic on u1');

  // Kill u1: every connection cut, then the port answers like a dead host.
  const tKill = Date.now();
  const before = results.length;
  await u1.close();
  const dead = await deadServer(u1Port);
  t.teardown(() => dead.close());

  await waitFor(async () => (await backendStatus(lb.socket, 'app', 'u1')).health === 'down', interval * fall + timeout + 1_500, 'u1 down');
  const tDown = Date.now();
  const budget = interval * fall + timeout + 300;
  t.ok(tDown - tKill <= budget, `marked down ${tDown - tKill}ms after the kill (interval x fall + timeout = ${interval * fall + timeout}ms)`);
  const st = await backendStatus(lb.socket, 'app', 'u1');
  t.equal(st.state, 'down');
  t.match(st.reason, new RegExp(`^check failed ${fall} times: `));
  t.equal(st.lastCheck?.ok, false);

  // No traffic once every worker has it down. A status answer asks every worker over its IPC channel, which
  // is ordered, but reads the primary's state after the answers: the first 'down' may have been decided
  // during that round trip. So: one more status round trip, and nothing picked earlier still in flight to u1.
  await waitFor(
    async () => {
      const s = await backendStatus(lb.socket, 'app', 'u1');
      return s.health === 'down' && s.inflight === 0;
    },
    2_000,
    'u1 down in every worker, nothing in flight to it',
  );
  const tApplied = Date.now();
  await waitFor(() => dead.checks.some((at) => at > tApplied + interval), interval * 3, 'checks continue on the dead backend');
  t.same(dead.traffic.filter((at) => at > tApplied), [], 'no requests reach the dead backend once every worker has it down');

  // Back: the same port answers again; up after `rise` passes.
  await dead.close();
  const tBack = Date.now();
  const u1b = await app('u1', u1Port, 20);
  t.teardown(() => u1b.close());
  await waitFor(async () => (await backendStatus(lb.socket, 'app', 'u1')).health === 'up', interval * (rise + 1) + timeout + 1_500, 'u1 up again');
  const tUp = Date.now();
  t.ok(tUp - tBack >= interval * (rise - 1) - 50, `not before ${rise} passes (${tUp - tBack}ms)`);
  t.ok(tUp - tBack <= interval * (rise + 1) + timeout + 300, `up ${tUp - tBack}ms after it came back`);
  t.equal((await backendStatus(lb.socket, 'app', 'u1')).reason, `check passed ${rise} times`);
  await waitFor(() => results.some((r) => r.start > tUp && r.body === 'u1'), 3_000, 'traffic back on u1');

  running = false;
  await Promise.all(loops);
  for (const a of agents) a.destroy();
  const failed = results.filter((r) => !r.ok);
  // Requests in flight at the kill were GETs without a body that failed before a response byte: retried.
  const inflight = results.filter((r) => r.start <= tKill && r.end >= tKill).length;
  t.ok(failed.length <= inflight, `${failed.length} failed of ${results.length - before} after the kill (${inflight} in flight at the kill): ${JSON.stringify(failed.slice(0, 3))}`);
  t.equal(failed.length, 0, 'retries hid the kill from every idempotent request');
});

t.test('active checks run once per interval in the primary, not once per worker', async (t) => {
  const interval = 250;
  const u1 = await app('u1');
  t.teardown(() => u1.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `[pools.app]
backends = ${backends([{ name: 'u1', port: u1.port }])}
[pools.app.health_check]
type = "http"
path = "/healthz"
interval = "${interval}ms"
timeout = "200ms"
`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());
  await waitFor(() => u1.checks.length >= 1, 5_000, 'first check');
  const t0 = u1.checks[0]!.at;
  const window = 2_000;
  await waitFor(() => Date.now() >= t0 + window + 100, window + 1_000, 'a 2s window');
  const n = u1.checks.filter((c) => c.at >= t0 && c.at < t0 + window).length;
  const expected = window / interval;
  // A check that fires late (a busy primary) is followed by one on the grid: the count, not each gap, is
  // exact to within the slots at the window's edges.
  t.ok(n >= expected - 2 && n <= expected + 2, `${n} checks in ${window}ms at interval ${interval}ms (2 workers would make ${2 * expected})`);
  const gaps = u1.checks.slice(1).map((c, i) => c.at - u1.checks[i]!.at).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)]!;
  t.ok(Math.abs(median - interval) <= 30, `median gap ${median}ms (gaps: ${gaps.join(' ')})`);
  t.equal(u1.checks[0]!.host, `127.0.0.1:${u1.port}`, 'Host defaults to the backend address');
  t.equal(u1.checks[0]!.connection, 'close', 'a fresh connection per check');
});

t.test('passive: a backend that resets every connection is ejected for eject_for, then re-admitted', async (t) => {
  const maxFailures = 3;
  const ejectFor = 1_000;
  const good = await app('good');
  t.teardown(() => good.close());
  const badPort = await freePort();
  const bad = await deadServer(badPort);
  t.teardown(() => bad.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `[pools.app]
algorithm = "round-robin"
retries = 2
backends = ${backends([{ name: 'good', port: good.port }, { name: 'bad', port: badPort }])}
[pools.app.passive]
max_failures = ${maxFailures}
eject_for = "${ejectFor}ms"
`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());

  // Sequential requests on fresh connections: the cluster spreads them over both workers.
  const statuses: number[] = [];
  const request = (): Promise<void> =>
    new Promise((resolve) => {
      http
        .get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
          statuses.push(res.statusCode ?? 0);
          res.resume();
          res.on('end', () => resolve());
        })
        .on('error', () => {
          statuses.push(0);
          resolve();
        });
    });
  const driveUntil = async (cond: () => Promise<boolean>, what: string): Promise<void> => {
    await waitFor(
      async () => {
        if (await cond()) return true;
        await request();
        return false;
      },
      10_000,
      what,
      1,
    );
  };

  await driveUntil(async () => (await backendStatus(lb.socket, 'app', 'bad')).health === 'down', 'bad ejected');
  const tEject = Date.now();
  const st = await backendStatus(lb.socket, 'app', 'bad');
  t.match(st.reason, new RegExp(`^passive: ${maxFailures} consecutive failures \\(last: (reset|connect)\\)$`));
  t.ok(st.ejectedUntil !== null, 'ejectedUntil shown');
  t.ok(bad.traffic.length <= maxFailures + 1, `ejected after ${bad.traffic.length} resets summed over both workers (per-worker counting would need ${2 * maxFailures})`);

  const during = bad.traffic.length;
  for (let i = 0; i < 10; i++) await request();
  t.equal(bad.traffic.length, during, 'no traffic while ejected');
  t.ok(Date.now() - tEject < ejectFor, 'still inside the ejection');

  await waitFor(async () => (await backendStatus(lb.socket, 'app', 'bad')).health === 'up', ejectFor + 2_000, 're-admitted');
  const tBack = Date.now();
  t.ok(tBack - tEject >= ejectFor - 300, `re-admitted ${tBack - tEject}ms after the ejection was seen`);
  t.equal((await backendStatus(lb.socket, 'app', 'bad')).reason, 'ejection over');

  // Still resetting: traffic reaches it again and it is ejected again.
  await driveUntil(async () => (await backendStatus(lb.socket, 'app', 'bad')).health === 'down', 'bad ejected again');
  t.ok(bad.traffic.length > during, 're-admitted backend got traffic');
  t.same(
    statuses.filter((s) => s !== 200),
    [],
    `every one of ${statuses.length} requests succeeded (retries)`,
  );
});

// DNS discovery applied through the real daemon (`lb run`, 2 workers), against dnsmasq: pools with only a
// `discovery` table. A records (hosts file rewritten + SIGHUP): discovered backends serve, an address added
// to DNS starts getting traffic, one removed stops (its in-flight requests finish) and leaves /metrics,
// dnsmasq stopped keeps the last set (counted stale), `lb status` shows source "dns", `lb remove` refuses a
// DNS member and `lb drain` works on it. SRV (dnsmasq restarted with new records): weights, and priority
// tiers failing over when health checks mark the preferred tier down and back when it recovers.

import t from 'tap';
import { startDnsmasq } from './helpers/dnsmasq.js';
import { startApp, type App } from './helpers/dns-apps.js';
import { admin, cli, freePort, get, startLb, waitFor } from './helpers/lb.js';

interface BackendStatus {
  name: string;
  health: string;
  state: string;
  source: string;
  runtime: boolean;
  priority: number;
}

async function poolStatus(socket: string, pool: string): Promise<BackendStatus[]> {
  const r = await admin(socket, { cmd: 'status' });
  return (r.result.pools as Array<{ name: string; backends: BackendStatus[] }>).find((x) => x.name === pool)!.backends;
}

/** Sends `n` requests, a new connection each (so both workers take some), and counts the answers by body. */
async function spread(port: number, n: number, path = '/'): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await get(port, path);
    const k = r.status === 200 ? r.body : `status ${r.status}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

function config(o: { port: number; metricsPort: number; discovery: string; algorithm?: string }): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
[metrics]
listen = "127.0.0.1:${o.metricsPort}"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${o.port}"
pool = "app"
[pools.app]
algorithm = "${o.algorithm ?? 'round-robin'}"
# fall = 2: one slow check on a loaded machine does not take a backend out.
health_check = { type = "http", path = "/healthz", interval = "500ms", timeout = "500ms", rise = 1, fall = 2 }
discovery = ${o.discovery}
`;
}

t.test('A records: discovered backends serve, come and go with DNS, survive a DNS outage', async (t) => {
  const P = await freePort();
  const apps: Record<string, App> = {};
  for (const host of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) {
    apps[host] = await startApp(host, P);
    t.teardown(() => apps[host]!.close());
  }
  const name = (host: string) => `${host}:${P}`;
  const d = await startDnsmasq({ hosts: '127.0.0.2 app.test\n127.0.0.3 app.test\n' });
  t.teardown(() => d.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const lb = await startLb(
    config({ port, metricsPort, discovery: `{ dns = "app.test", type = "A", port = ${P}, resolvers = ["${d.address}"], refresh = "200ms", min_ttl = "100ms", timeout = "300ms" }` }),
    [port],
  );
  t.teardown(() => lb.stop());
  const metrics = async () => (await get(metricsPort, '/metrics')).body;

  await waitFor(async () => {
    const s = await spread(port, 10);
    return s[name('127.0.0.2')] && s[name('127.0.0.3')];
  }, 20_000, 'both discovered backends to serve');
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).every((b) => b.health === 'up'), 20_000, 'health checks to pass');
  const st = await poolStatus(lb.socket, 'app');
  t.same(st.map((b) => [b.name, b.source, b.runtime, b.priority]), [
    [name('127.0.0.2'), 'dns', true, 0],
    [name('127.0.0.3'), 'dns', true, 0],
  ]);
  const table = await cli(['status', '-s', lb.socket]);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, new RegExp(`${name('127.0.0.2').replace(/\./g, '\\.')}.*\\bdns\\b`));
  t.match(await metrics(), new RegExp(`lb_backend_up\\{pool="app",backend="${name('127.0.0.2')}"\\} 1`));

  // An address added to DNS gets traffic.
  await d.setHosts('127.0.0.2 app.test\n127.0.0.3 app.test\n127.0.0.4 app.test\n');
  await waitFor(async () => (await spread(port, 6))[name('127.0.0.4')], 20_000, 'the added address to get traffic');

  // One removed from DNS: requests in flight on it finish; it gets no new ones; its series leave /metrics.
  const slow: Array<ReturnType<typeof get>> = [];
  const held = () => Object.values(apps).reduce((n, a) => n + a.held, 0);
  while (apps['127.0.0.2']!.held === 0 && slow.length < 30) {
    slow.push(get(port, '/slow'));
    await waitFor(() => held() === slow.length, 20_000, 'the slow request to reach a backend');
  }
  t.ok(apps['127.0.0.2']!.held > 0, 'a request is in flight on the backend about to leave');
  const heldOnGone = apps['127.0.0.2']!.held;
  await d.setHosts('127.0.0.3 app.test\n127.0.0.4 app.test\n');
  await waitFor(async () => !(await poolStatus(lb.socket, 'app')).some((b) => b.name === name('127.0.0.2')), 20_000, 'the removed address to leave the pool');
  const hitsGone = apps['127.0.0.2']!.hits;
  const after = await spread(port, 20);
  t.same(Object.keys(after).sort(), [name('127.0.0.3'), name('127.0.0.4')], 'only the remaining backends serve');
  t.equal(apps['127.0.0.2']!.hits, hitsGone, 'the removed backend gets no new request');
  for (const a of Object.values(apps)) a.release();
  const done = await Promise.all(slow);
  t.same(done.map((r) => r.status), done.map(() => 200), 'in-flight requests finish, on the removed backend too');
  t.equal(done.filter((r) => r.body === name('127.0.0.2')).length, heldOnGone);
  await waitFor(async () => !(await metrics()).includes(`backend="${name('127.0.0.2')}"`), 20_000, 'the removed series to go');
  t.match(await metrics(), new RegExp(`lb_backend_up\\{pool="app",backend="${name('127.0.0.3')}"\\} 1`));

  // dnsmasq stopped: the last set keeps serving; stale answers are counted.
  const stale = async () => Number(/^lb_discovery_stale_total\{pool="app"\} (\d+)/m.exec(await metrics())?.[1] ?? 0);
  await d.stop();
  await waitFor(async () => (await stale()) >= 2, 20_000, 'stale answers counted');
  t.same(Object.keys(await spread(port, 10)).sort(), [name('127.0.0.3'), name('127.0.0.4')], 'the last set serves during the outage');
  t.same((await poolStatus(lb.socket, 'app')).map((b) => b.name), [name('127.0.0.3'), name('127.0.0.4')]);
  await d.start();

  // `lb remove` refuses a DNS member (DNS would bring it back); `lb drain` takes it out of traffic.
  const rm = await cli(['remove', `app/${name('127.0.0.3')}`, '-s', lb.socket]);
  t.equal(rm.code, 1);
  t.match(rm.stderr, /NOT_RUNTIME.*dns/);
  const dr = await cli(['drain', `app/${name('127.0.0.3')}`, '-s', lb.socket]);
  t.equal(dr.code, 0, dr.stderr);
  const drained = await spread(port, 10);
  t.same(Object.keys(drained), [name('127.0.0.4')], 'the drained DNS member gets no new traffic', {
    status: await poolStatus(lb.socket, 'app'),
    health: lb.logs().filter((l) => String(l['msg']).includes('health') || l['level'] === 'warn').slice(-10),
  });
  t.same((await poolStatus(lb.socket, 'app')).map((b) => [b.name, b.state]), [
    [name('127.0.0.3'), 'drain'],
    [name('127.0.0.4'), 'up'],
  ]);
  t.equal(await lb.stop(), 0);
});

t.test('SRV: weights and priority tiers from the records', async (t) => {
  const a = await startApp('127.0.0.1', 0);
  const b = await startApp('127.0.0.1', 0);
  const c = await startApp('127.0.0.1', 0);
  for (const x of [a, b, c]) t.teardown(() => x.close());
  a.name = `a.test:${a.port}`;
  b.name = `b.test:${b.port}`;
  c.name = `c.test:${c.port}`;
  const srv = '_http._tcp.app.test';
  const d = await startDnsmasq({
    hosts: '127.0.0.1 a.test\n127.0.0.1 b.test\n127.0.0.1 c.test\n',
    srv: [
      { name: srv, target: 'a.test', port: a.port, priority: 10, weight: 1 },
      { name: srv, target: 'b.test', port: b.port, priority: 10, weight: 3 },
      { name: srv, target: 'c.test', port: c.port, priority: 20, weight: 1 },
    ],
  });
  t.teardown(() => d.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const lb = await startLb(
    config({
      port,
      metricsPort,
      algorithm: 'weighted-round-robin',
      discovery: `{ dns = "${srv}", type = "SRV", resolvers = ["${d.address}"], refresh = "200ms", min_ttl = "100ms", timeout = "300ms" }`,
    }),
    [port],
  );
  t.teardown(() => lb.stop());

  await waitFor(async () => (await poolStatus(lb.socket, 'app')).length === 3 && (await poolStatus(lb.socket, 'app')).every((x) => x.health === 'up'), 20_000, 'three discovered, healthy backends');
  t.same((await poolStatus(lb.socket, 'app')).map((x) => [x.name, x.source, x.priority]), [
    [a.name, 'dns', 10],
    [b.name, 'dns', 10],
    [c.name, 'dns', 20],
  ]);
  const s = await spread(port, 80);
  t.same(Object.keys(s).sort(), [a.name, b.name].sort(), 'only the preferred tier serves');
  t.ok((s[b.name] ?? 0) > (s[a.name] ?? 0), `weight 3 gets more than weight 1 (${JSON.stringify(s)})`);

  // The preferred tier fails its health checks: the next tier takes the traffic, and gives it back.
  a.healthy = b.healthy = false;
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).filter((x) => x.health === 'down').length === 2, 20_000, 'the preferred tier down');
  t.same(Object.keys(await spread(port, 20)), [c.name], 'the lower-priority tier serves when the preferred one has no usable backend');
  a.healthy = true;
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === a.name)!.health === 'up', 20_000, 'a back up');
  t.same(Object.keys(await spread(port, 20)), [a.name], 'traffic goes back to the preferred tier');

  // A record gone from DNS (dnsmasq restarted with the new records): the backend leaves the pool.
  b.healthy = true;
  await d.setSrv([
    { name: srv, target: 'a.test', port: a.port, priority: 10, weight: 1 },
    { name: srv, target: 'c.test', port: c.port, priority: 20, weight: 1 },
  ]);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).length === 2, 20_000, 'b to leave the pool');
  t.same((await poolStatus(lb.socket, 'app')).map((x) => x.name), [a.name, c.name]);
  t.same(Object.keys(await spread(port, 10)), [a.name]);
  t.equal(await lb.stop(), 0);
});

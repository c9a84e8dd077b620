// DNS discovery in the running daemon, against dnsmasq: the primary resolves each pool's discovery name at
// start, logs the set it found and counts it in /metrics, keeps it when dnsmasq stops, restarts a pool's
// discovery when its settings change on reload and drops it (and its series) when they are removed.
// Each set becomes the pool's "dns" members next to its static backends (traffic to discovered backends is
// tested in discovery-e2e.test.ts; the addresses here are not served).

import fs from 'node:fs';
import t from 'tap';
import { startDnsmasq } from './helpers/dnsmasq.js';
import { admin, cli, freePort, get, startLb, startUpstream, waitFor } from './helpers/lb.js';

const SET = 'pool membership changed';

t.test('the primary runs discovery per pool: start, failure, reload, removal', async (t) => {
  const d = await startDnsmasq({ hosts: '10.0.0.1 app.test\n10.0.0.2 app.test\n' });
  t.teardown(() => d.close());
  const up = await startUpstream('static');
  t.teardown(() => up.close());
  const [port, metricsPort] = [await freePort(), await freePort()];
  const config = (discovery: string) => `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${metricsPort}"
[log]
level = "info"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
backends = [ { name = "static", address = "127.0.0.1:${up.port}" } ]
${discovery}
[pools.only-dns]
discovery = { dns = "app.test", type = "A", port = 9000, resolvers = ["${d.address}"], min_ttl = "100ms", max_ttl = "200ms" }
`;
  const lb = await startLb(config(`discovery = { dns = "app.test", type = "A", port = 8080, resolvers = ["${d.address}"], min_ttl = "100ms", max_ttl = "200ms" }`), [port]);
  t.teardown(() => lb.stop());
  // Each applied set, as the discovered backends of the pool afterwards (the static one left out).
  const sets = (pool: string) =>
    lb.logs().filter((l) => l['msg'] === SET && l['pool'] === pool).map((l) => (l['backends'] as string[]).filter((n) => n !== 'static'));
  await waitFor(() => sets('app').length === 1 && sets('only-dns').length === 1, 20_000, 'both pools discovered');
  t.same(sets('app')[0], ['10.0.0.1:8080', '10.0.0.2:8080']);
  t.same(sets('only-dns')[0], ['10.0.0.1:9000', '10.0.0.2:9000']);
  const status = await admin(lb.socket, { cmd: 'status' });
  const app = (status.result.pools as Array<{ name: string; backends: Array<{ name: string; source: string }> }>).find((p) => p.name === 'app')!;
  t.same(app.backends.map((b) => [b.name, b.source]), [['static', 'config'], ['10.0.0.1:8080', 'dns'], ['10.0.0.2:8080', 'dns']], 'the set is applied');

  const metric = async (line: RegExp): Promise<number | undefined> => {
    const text = (await get(metricsPort, '/metrics')).body;
    const m = text.split('\n').find((l) => line.test(l));
    return m === undefined ? undefined : Number(m.split(' ').pop());
  };
  await waitFor(async () => ((await metric(/^lb_discovery_refreshes_total\{pool="app",result="ok"\}/)) ?? 0) >= 2, 20_000, 'refreshes counted');
  t.equal(await metric(/^lb_discovery_backends\{pool="app"\}/), 2);
  t.equal(await metric(/^lb_discovery_changes_total\{pool="app"\}/), 1);

  // dnsmasq stops: failures counted as errors and stale, the set stays (no new set logged).
  await d.stop();
  await waitFor(async () => ((await metric(/^lb_discovery_stale_total\{pool="app"\}/)) ?? 0) >= 2, 20_000, 'stale answers counted');
  t.ok(((await metric(/^lb_discovery_refreshes_total\{pool="app",result="error"\}/)) ?? 0) >= 2);
  t.equal(sets('app').length, 1, 'the set is kept');
  t.equal(await metric(/^lb_discovery_backends\{pool="app"\}/), 2);
  t.ok(lb.logs().some((l) => l['msg'] === 'dns discovery failed: keeping the last answer' && l['pool'] === 'app' && l['level'] === 'warn'));
  await d.start();

  // Reload: app's discovery changes (port) and is restarted; only-dns is unchanged and keeps running.
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('port = 8080', 'port = 8081'));
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /pool app: discovery changed \(re-resolved now\)/);
  t.notMatch(r.stdout, /only-dns/);
  await waitFor(() => sets('app').length === 2, 20_000, 'the restarted discovery');
  t.same(sets('app')[1], ['10.0.0.1:8081', '10.0.0.2:8081']);
  t.equal(sets('only-dns').length, 1, 'an unchanged discovery is not restarted');

  // Reload without app's discovery: its set becomes empty and its series go.
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace(/^discovery = \{ dns = "app.test", type = "A", port = 8081.*$/m, ''));
  const removed = await cli(['reload', '-s', lb.socket]);
  t.equal(removed.code, 0, removed.stderr);
  t.match(removed.stdout, /pool app: discovery removed/);
  await waitFor(() => sets('app').length === 3, 20_000, 'the empty set');
  t.same(sets('app')[2], []);
  t.equal(await metric(/^lb_discovery_backends\{pool="app"\}/), undefined, 'no series for a pool without discovery');
  t.equal(await metric(/^lb_discovery_backends\{pool="only-dns"\}/), 2);

  t.equal(await lb.stop(), 0, 'a clean stop with discovery running');
});

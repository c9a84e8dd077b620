// DNS discovery under load through the real daemon (2 workers), against dnsmasq with refresh = "1s":
// keep-alive clients send requests as fast as they are answered while instances are added to and removed
// from the A records (hosts file rewritten + SIGHUP). Asserted: 0 failed requests, every added instance
// gets traffic, every removed one stops getting it, and at the end only the instances in DNS serve.
// Measured and printed (no wall-clock bound is asserted): from the DNS change (the file write, before the
// SIGHUP) to the first request an added instance answers, and to the last request a removed one answers.

import os from 'node:os';
import t from 'tap';
import { startDnsmasq } from './helpers/dnsmasq.js';
import { startApp, type App } from './helpers/dns-apps.js';
import { admin, freePort, startLb, startLoad, waitFor } from './helpers/lb.js';

const HOSTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];

t.test('instances added to and removed from DNS under load: 0 failures', async (t) => {
  const P = await freePort();
  const apps: Record<string, App> = {};
  for (const host of HOSTS) {
    apps[host] = await startApp(host, P);
    t.teardown(() => apps[host]!.close());
  }
  const hostsFile = (list: string[]) => list.map((h) => `${h} app.test\n`).join('');
  let inDns = ['127.0.0.2', '127.0.0.3'];
  const d = await startDnsmasq({ hosts: hostsFile(inDns) });
  t.teardown(() => d.close());
  const port = await freePort();
  const lb = await startLb(
    `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
discovery = { dns = "app.test", type = "A", port = ${P}, resolvers = ["${d.address}"], refresh = "1s", min_ttl = "100ms", timeout = "500ms" }
`,
    [port],
  );
  t.teardown(() => lb.stop());
  const members = async () =>
    ((await admin(lb.socket, { cmd: 'status' })).result.pools as Array<{ name: string; backends: Array<{ name: string }> }>)
      .find((p) => p.name === 'app')!
      .backends.map((b) => b.name)
      .sort();
  await waitFor(async () => (await members()).length === 2, 20_000, 'the first DNS answer applied');

  const load0 = os.loadavg()[0]!;
  const began = performance.now();
  const load = startLoad(port, { concurrency: 8, keepAlive: true, limitMs: 120_000 });
  t.teardown(() => load.stop());
  await waitFor(() => load.result.ok >= 500, 30_000, 'load running');

  const addMs: number[] = [];
  const removeMs: number[] = [];
  /** Sends at least `n` more requests through the load. */
  const more = async (n: number) => {
    const target = load.result.ok + load.result.failed + n;
    await waitFor(() => load.result.ok + load.result.failed >= target, 60_000, `${n} more requests`);
  };
  // Each cycle adds the instance not in DNS, then removes the oldest one: 3 cycles visit every instance.
  for (let cycle = 0; cycle < 3; cycle++) {
    const add = HOSTS.find((h) => !inDns.includes(h))!;
    const a = apps[add]!;
    a.first = undefined;
    inDns = [...inDns, add];
    const t0 = performance.now();
    await d.setHosts(hostsFile(inDns));
    await waitFor(() => a.first !== undefined, 30_000, `${add} to get traffic`);
    addMs.push(a.first! - t0);

    const gone = inDns[0]!;
    const g = apps[gone]!;
    inDns = inDns.slice(1);
    const t1 = performance.now();
    await d.setHosts(hostsFile(inDns));
    await waitFor(async () => !(await members()).includes(`${gone}:${P}`), 30_000, `${gone} to leave the pool`);
    // In-flight work finishes after the removal; after that and a few hundred more requests, nothing new
    // reaches it, so its last hit is the last request it got.
    await more(400);
    const hits = g.hits;
    await more(400);
    t.equal(g.hits, hits, `${gone} gets no request once removed (cycle ${cycle + 1})`);
    removeMs.push(g.last! - t1);
  }

  // The traffic shape at the end: only the instances in DNS answer.
  const before = Object.fromEntries(HOSTS.map((h) => [h, apps[h]!.hits]));
  await more(1000);
  for (const h of HOSTS) {
    if (inDns.includes(h)) t.ok(apps[h]!.hits > before[h]!, `${h} (in DNS) serves`);
    else t.equal(apps[h]!.hits, before[h], `${h} (not in DNS) gets nothing`);
  }
  const r = await load.stop();
  const secs = (performance.now() - began) / 1000;
  t.equal(r.failed, 0, `no failed request (${r.errors.slice(0, 5).join('; ')})`);
  t.ok(r.ok > 3000, `${r.ok} requests answered`);
  const fmt = (xs: number[]) => xs.map((x) => `${Math.round(x)} ms`).join(', ');
  t.comment(`requests: ${r.ok} ok, ${r.failed} failed in ${secs.toFixed(1)} s (${Math.round(r.ok / secs)} req/s, 8 keep-alive clients)`);
  t.comment(`DNS change -> first request on the added instance: ${fmt(addMs)}`);
  t.comment(`DNS change -> last request on the removed instance: ${fmt(removeMs)}`);
  t.comment(`load average (1 min) ${load0.toFixed(2)} at start, ${os.loadavg()[0]!.toFixed(2)} at end, ${os.cpus().length} CPUs`);
  t.equal(await lb.stop(), 0);
});

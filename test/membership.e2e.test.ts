// Runtime membership through the real daemon (`lb run`, 2 workers) and the real CLI: `lb add` and
// `lb remove` with their admin error codes; health checks of an added backend (a down one gets no traffic
// until it passes); the state file across a restart; /metrics series of a removed backend disappear;
// runtime backends across `lb reload`; priority tiers failing over and back.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import t from 'tap';
import { admin, cli, freePort, get, startLb, startUpstream, waitFor, type Lb, type Upstream } from './helpers/lb.js';

interface BackendStatus {
  name: string;
  address: string;
  state: string;
  health: string;
  source: string;
  runtime: boolean;
  priority: number;
  inflight: number;
  reason: string | null;
}

async function poolStatus(socket: string, pool: string): Promise<BackendStatus[]> {
  const r = await admin(socket, { cmd: 'status' });
  const p = (r.result.pools as Array<{ name: string; backends: BackendStatus[] }>).find((x) => x.name === pool);
  if (!p) throw new Error(`no pool ${pool} in status`);
  return p.backends;
}

/** An upstream that answers its name, and 200 to /healthz. */
function app(name: string, port = 0): Promise<Upstream> {
  return startUpstream(
    name,
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(req.url === '/healthz' ? 'ok' : name);
    },
    port,
  );
}

function config(o: { port: number; metricsPort?: number; pools: string }): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
${o.metricsPort ? `[metrics]\nlisten = "127.0.0.1:${o.metricsPort}"\n` : ''}
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${o.port}"
pool = "app"
${o.pools}
`;
}

/** Which backends answered `n` requests (each on a new connection, so both workers take some), sorted. */
async function who(port: number, n: number): Promise<string[]> {
  return Object.keys(await spread(port, n)).sort();
}

/** Sends `n` requests (a new connection each) and counts the answers by body. */
async function spread(port: number, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await get(port, '/');
    const k = r.status === 200 ? r.body : `status ${r.status}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

const started: Lb[] = [];
const ups: Upstream[] = [];
t.teardown(async () => {
  for (const lb of started) await lb.stop();
  for (const u of ups) await u.close();
});

async function up(name: string, port = 0): Promise<Upstream> {
  const u = await app(name, port);
  ups.push(u);
  return u;
}

t.test('lb add / lb remove, admin error codes, status and the state file across a restart', async (t) => {
  const [a, b] = [await up('a'), await up('b')];
  const port = await freePort();
  const toml = config({ port, pools: `[pools.app]\nalgorithm = "weighted-round-robin"\nbackends = [ { name = "a", address = "127.0.0.1:${a.port}" } ]\n` });
  let lb = await startLb(toml, [port]);
  started.push(lb);
  const sock = ['-s', lb.socket];

  const add = await cli(['add', 'app', 'b', `127.0.0.1:${b.port}`, '--weight', '2', ...sock]);
  t.equal(add.code, 0, add.stderr);
  t.match(add.stdout, /app\/b: added \(127\.0\.0\.1:\d+, weight 2, priority 0; up\)/);
  const share = await spread(port, 60);
  t.same(Object.keys(share).sort(), ['a', 'b'], 'the added backend gets traffic');
  t.ok(share.b! > share.a!, `with its weight (${JSON.stringify(share)})`);

  const st = await poolStatus(lb.socket, 'app');
  t.same(
    st.map((x) => [x.name, x.source, x.runtime]),
    [
      ['a', 'config', false],
      ['b', 'admin', true],
    ],
    'status JSON shows where each backend came from',
  );
  const table = await cli(['status', ...sock]);
  t.match(table.stdout, /SOURCE/);
  t.match(table.stdout, /app\s+b\s+127\.0\.0\.1:\d+\s+admin\s+up/, 'lb status shows the runtime-added backend');

  // Error codes, through the admin socket and the CLI.
  const codes: Array<[unknown, string]> = [
    [{ cmd: 'add', pool: 'nope', backend: 'x', address: '127.0.0.1:1' }, 'UNKNOWN_POOL'],
    [{ cmd: 'add', pool: 'app', backend: 'b', address: '127.0.0.1:1' }, 'BACKEND_EXISTS'],
    [{ cmd: 'add', pool: 'app', backend: 'a', address: '127.0.0.1:1' }, 'BACKEND_EXISTS'],
    [{ cmd: 'add', pool: 'app', backend: 'x', address: '127.0.0.1' }, 'INVALID_ADDRESS'],
    [{ cmd: 'add', pool: 'app', backend: 'x y', address: '127.0.0.1:1' }, 'INVALID_NAME'],
    [{ cmd: 'add', pool: 'app', backend: 'x', address: '127.0.0.1:1', weight: -1 }, 'INVALID_FIELD'],
    [{ cmd: 'add', pool: 'app', backend: 'x', address: '127.0.0.1:1', priority: 1.5 }, 'INVALID_FIELD'],
    [{ cmd: 'add', pool: 'app', backend: 'x' }, 'MISSING_FIELD'],
    [{ cmd: 'remove', pool: 'app', backend: 'a' }, 'NOT_RUNTIME'],
    [{ cmd: 'remove', pool: 'app', backend: 'zz' }, 'UNKNOWN_BACKEND'],
    [{ cmd: 'remove', pool: 'nope', backend: 'zz' }, 'UNKNOWN_POOL'],
    [{ cmd: 'remove', pool: 'app', backend: 'b', drain: 'yes' }, 'INVALID_FIELD'],
  ];
  for (const [req, code] of codes) {
    const r = await admin(lb.socket, req);
    t.equal(r.ok, false, JSON.stringify(req));
    t.equal(r.error?.code, code, `${JSON.stringify(req)} -> ${code}`);
  }
  const refused = await cli(['remove', 'app/a', ...sock]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /NOT_RUNTIME: app\/a comes from the config file/);
  const usage = await cli(['remove', 'app/b', '--wait', ...sock]);
  t.equal(usage.code, 2, '--wait without --drain is a usage error');
  t.same((await poolStatus(lb.socket, 'app')).map((x) => x.name), ['a', 'b'], 'refused commands changed nothing');

  // The state file keeps the added backend (and its runtime state) across a restart.
  t.equal((await cli(['drain', 'app/b', ...sock])).code, 0);
  const saved = JSON.parse(fs.readFileSync(path.join(lb.dir, 'state.json'), 'utf8'));
  t.match(saved.members, [{ pool: 'app', name: 'b', address: `127.0.0.1:${b.port}`, weight: 2, priority: 0 }]);
  t.equal(await lb.stop(), 0);
  lb = await startLb(toml, [port], { dir: lb.dir });
  started.push(lb);
  const after = await poolStatus(lb.socket, 'app');
  t.same(
    after.map((x) => [x.name, x.source, x.state]),
    [
      ['a', 'config', 'up'],
      ['b', 'admin', 'drain'],
    ],
    'after a restart the added backend is back, still drained',
  );
  t.equal((await cli(['ready', 'app/b', ...sock])).code, 0);
  t.same(await who(port, 30), ['a', 'b']);

  const rm = await cli(['remove', 'app/b', ...sock]);
  t.equal(rm.code, 0, rm.stderr);
  t.same(await spread(port, 10), { a: 10 }, 'no request reaches a removed backend');
  const savedAfter = JSON.parse(fs.readFileSync(path.join(lb.dir, 'state.json'), 'utf8'));
  t.equal(savedAfter.members, undefined, 'the removed backend left the state file');
  await lb.stop();
});

t.test('an added backend is health-checked: down gets no traffic, up after its first pass; checks stop on removal', async (t) => {
  const a = await up('a');
  const port = await freePort();
  const latePort = await freePort();
  const toml = config({
    port,
    pools: `[pools.app]\nalgorithm = "round-robin"\nbackends = [ { name = "a", address = "127.0.0.1:${a.port}" } ]\n[pools.app.health_check]\ntype = "http"\npath = "/healthz"\ninterval = "300ms"\ntimeout = "200ms"\n`,
  });
  const lb = await startLb(toml, [port]);
  started.push(lb);
  const add = await cli(['add', 'app', 'late', `127.0.0.1:${latePort}`, '-s', lb.socket]);
  t.equal(add.code, 0, add.stderr);
  t.match(add.stdout, /down: added: no traffic until the first health check passes/);
  t.same(await spread(port, 20), { a: 20 }, 'nothing listens there: it gets no traffic and no request fails');
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'late')?.reason?.startsWith('check failed'), 10_000, 'the checks to fail');
  t.equal((await poolStatus(lb.socket, 'app')).find((x) => x.name === 'late')?.state, 'down');

  const late = await up('late', latePort);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'late')?.state === 'up', 10_000, 'the added backend to pass its checks');
  t.same(await who(port, 20), ['a', 'late'], 'up: it takes its share');

  const checksBefore = late.hits;
  t.equal((await cli(['remove', 'app/late', '-s', lb.socket])).code, 0);
  const stopped = late.hits;
  await new Promise((r) => setTimeout(r, 1_000)); // three check intervals: a check that still ran would show
  t.ok(late.hits - stopped <= 1, `health checks of a removed backend stop (${late.hits - stopped} after removal; one may have been in flight)`);
  t.ok(checksBefore > 0);
  await lb.stop();
});

t.test('metrics series of a removed backend disappear from /metrics', async (t) => {
  const [a, b] = [await up('a'), await up('b')];
  const port = await freePort();
  const metricsPort = await freePort();
  const lb = await startLb(config({ port, metricsPort, pools: `[pools.app]\nalgorithm = "round-robin"\nbackends = [ { name = "a", address = "127.0.0.1:${a.port}" } ]\n[pools.app.passive]\nmax_failures = 50\n` }), [port, metricsPort]);
  started.push(lb);
  const metrics = async (): Promise<string> => (await get(metricsPort, '/metrics')).body;
  t.equal((await cli(['add', 'app', 'gone', `127.0.0.1:${b.port}`, '-s', lb.socket])).code, 0);
  const sent = await spread(port, 20);
  t.same(Object.keys(sent).sort(), ['a', 'b']);
  const before = await metrics();
  t.match(before, new RegExp(`lb_requests_total\\{[^}]*backend="gone"[^}]*\\} ${sent.b}\n`), 'the added backend has its series');
  t.match(before, /lb_backend_up\{pool="app",backend="gone"\} 1/);

  t.equal((await cli(['remove', 'app/gone', '-s', lb.socket])).code, 0);
  const after = await metrics();
  t.notMatch(after, /backend="gone"/, 'every series of the removed backend is gone');
  t.match(after, new RegExp(`lb_requests_total\\{[^}]*backend="a"[^}]*\\} ${sent.a}\n`), "the other backends' series stay");

  // A backend re-added under the same name starts new series.
  t.equal((await cli(['add', 'app', 'gone', `127.0.0.1:${b.port}`, '-s', lb.socket])).code, 0);
  const again = await spread(port, 10);
  t.match(await metrics(), new RegExp(`lb_requests_total\\{[^}]*backend="gone"[^}]*\\} ${again.b}\n`), 'counted from 0');
  await lb.stop();
});

t.test('runtime backends across lb reload: kept, replaced by a config backend of the same name, dropped with their pool', async (t) => {
  const [a, b, c] = [await up('a'), await up('b'), await up('c')];
  const port = await freePort();
  const pools = (extra: string, other = true): string =>
    `[pools.app]\nalgorithm = "round-robin"\nbackends = [ { name = "a", address = "127.0.0.1:${a.port}" }${extra} ]\n` +
    (other ? `[pools.other]\nbackends = [ { name = "a", address = "127.0.0.1:${a.port}" } ]\n` : '');
  const lb = await startLb(config({ port, pools: pools('') }), [port]);
  started.push(lb);
  const sock = ['-s', lb.socket];
  t.equal((await cli(['add', 'app', 'b', `127.0.0.1:${b.port}`, ...sock])).code, 0);
  t.equal((await cli(['add', 'app', 'c', `127.0.0.1:${b.port}`, ...sock])).code, 0);
  t.equal((await cli(['add', 'other', 'x', `127.0.0.1:${c.port}`, ...sock])).code, 0);

  // Plain reload (no change): runtime backends stay, with their state.
  t.equal((await cli(['drain', 'app/c', ...sock])).code, 0);
  const r1 = await cli(['reload', ...sock]);
  t.equal(r1.code, 0, r1.stderr);
  t.match(r1.stdout, /reloaded: no changes/);
  t.same(
    (await poolStatus(lb.socket, 'app')).map((x) => [x.name, x.source, x.state]),
    [
      ['a', 'config', 'up'],
      ['b', 'admin', 'up'],
      ['c', 'admin', 'drain'],
    ],
  );
  // The config now defines "c" (another address) and drops pool "other".
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace(/\[pools\.app\][\s\S]*$/, pools(`, { name = "c", address = "127.0.0.1:${c.port}" }`, false)));
  const r2 = await cli(['reload', ...sock]);
  t.equal(r2.code, 0, r2.stderr);
  const st = await poolStatus(lb.socket, 'app');
  t.same(
    st.map((x) => [x.name, x.source, x.address]),
    [
      ['a', 'config', `127.0.0.1:${a.port}`],
      ['c', 'config', `127.0.0.1:${c.port}`],
      ['b', 'admin', `127.0.0.1:${b.port}`],
    ],
    "the config's backend wins the name; the other runtime backend stays",
  );
  t.same(await who(port, 30), ['a', 'b', 'c']);
  const saved = JSON.parse(fs.readFileSync(path.join(lb.dir, 'state.json'), 'utf8'));
  t.same(
    saved.members.map((m: { pool: string; name: string }) => `${m.pool}/${m.name}`),
    ['app/b'],
    'the state file keeps only the runtime backends that survived',
  );
  const logs = lb.logs().filter((l) => l.msg === 'runtime backend dropped by reload');
  t.same(logs.map((l) => `${l.pool}/${l.backend}`).sort(), ['app/c', 'other/x']);
  await lb.stop();
});

t.test('priority tiers: the lower tier serves; the next one only when it has no usable backend; back when it returns', async (t) => {
  const [b, c] = [await up('b'), await up('c')];
  const aPort = await freePort();
  let a = await up('a', aPort);
  const port = await freePort();
  const lb = await startLb(
    config({
      port,
      pools:
        `[pools.app]\nalgorithm = "round-robin"\nbackends = [ { name = "a", address = "127.0.0.1:${aPort}" }, { name = "b", address = "127.0.0.1:${b.port}", priority = 1 } ]\n` +
        '[pools.app.health_check]\ntype = "http"\npath = "/healthz"\ninterval = "200ms"\ntimeout = "150ms"\nrise = 1\nfall = 1\n',
    }),
    [port],
  );
  started.push(lb);
  const sock = ['-s', lb.socket];
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).every((x) => x.state === 'up'), 10_000, 'both backends up');
  t.same(await spread(port, 10), { a: 10 }, 'priority 0 takes everything; priority 1 is a backup');
  // A runtime backend joins the backup tier.
  t.equal((await cli(['add', 'app', 'c', `127.0.0.1:${c.port}`, '--priority', '1', ...sock])).code, 0);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'c')?.state === 'up', 10_000, 'c up');
  t.same(await spread(port, 10), { a: 10 });

  // Fail over: the only priority-0 backend dies.
  await a.close();
  ups.splice(ups.indexOf(a), 1);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'a')?.state === 'down', 10_000, 'a down');
  t.same(await who(port, 20), ['b', 'c'], 'the next tier serves, spread over its backends');
  // Admin state counts too: with c drained, b takes all.
  t.equal((await cli(['drain', 'app/c', ...sock])).code, 0);
  t.same(await spread(port, 4), { b: 4 });
  // And back: a returns, its tier serves again.
  a = await up('a', aPort);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'a')?.state === 'up', 10_000, 'a up again');
  t.same(await spread(port, 10), { a: 10 }, 'traffic goes back to the preferred tier');
  // A tier of runtime backends can be the preferred one as well.
  t.equal((await cli(['add', 'app', 'z', `127.0.0.1:${c.port}`, '--priority', '0', ...sock])).code, 0);
  await waitFor(async () => (await poolStatus(lb.socket, 'app')).find((x) => x.name === 'z')?.state === 'up', 10_000, 'z up');
  t.same(await who(port, 20), ['a', 'c'], 'the new priority-0 member shares the preferred tier');
  const table = await cli(['status', ...sock]);
  t.match(table.stdout, /PRIO/);
  await lb.stop();
});

// Keeps node:http's default agent from holding the process open.
t.teardown(() => http.globalAgent.destroy());

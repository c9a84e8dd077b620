// Weighted splits through the real daemon: a 5% canary over 100,000 requests, sticky clients that stay on
// one side and move only app -> canary when `lb split` raises the canary, and runtime weights that survive
// `lb reload` and a restart (daemon.state_file).

import t from 'tap';
import net from 'node:net';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { admin, cli, freePort, get, httpConfig, startLb, startUpstream, type Upstream } from './helpers/lb.js';

/** Backends that answer their pool's name as "pool:NAME;" (Content-Length framed, keep-alive). */
async function poolUpstream(name: string): Promise<Upstream> {
  return startUpstream(name, (_req, res) => {
    const body = `pool:${name};`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
}

function config(port: number, app: number, canary: number, extra = ''): string {
  return httpConfig(
    port,
    `[[listeners.web.routes]]
name = "canary"
path_prefix = "/c"
split = [{ pool = "app", weight = 95 }, { pool = "app-canary", weight = 5 }]
${extra}
[pools.app]
backends = [{ address = "127.0.0.1:${app}" }]
[pools.app-canary]
backends = [{ address = "127.0.0.1:${canary}" }]
`,
    2,
  );
}

/**
 * `total` GET requests over `conns` connections, each pipelining `window` requests at a time and waiting for
 * their answers; counts the pool names in the bodies.
 */
async function pipelined(port: number, total: number, conns: number, window: number, headers = ''): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const per = Math.ceil(total / conns);
  const req = `GET /c HTTP/1.1\r\nHost: lb.test\r\n${headers}\r\n`;
  await Promise.all(
    Array.from({ length: conns }, (_, c) =>
      new Promise<void>((resolve, reject) => {
        const n = Math.min(per, total - c * per);
        const s = net.connect(port, '127.0.0.1');
        let sent = 0;
        let seen = 0;
        let tail = '';
        const send = (): void => {
          const k = Math.min(window, n - sent);
          s.write(req.repeat(k));
          sent += k;
        };
        s.setEncoding('latin1');
        s.on('connect', send);
        s.on('data', (d: string) => {
          const text = tail + d;
          const re = /pool:([a-z-]+);/g;
          let m: RegExpExecArray | null;
          let end = 0;
          while ((m = re.exec(text))) {
            counts[m[1]!] = (counts[m[1]!] ?? 0) + 1;
            seen++;
            end = re.lastIndex;
          }
          tail = text.slice(end).slice(-64);
          if (seen === n) {
            s.end();
            resolve();
          } else if (seen === sent) send();
        });
        s.on('error', reject);
        s.on('close', () => (seen === n ? resolve() : reject(new Error(`connection ${c} closed after ${seen} of ${n} answers`))));
        s.setTimeout(60_000, () => s.destroy(new Error('no progress in 60 s')));
      }),
    ),
  );
  return counts;
}

t.test('a 5% canary gets 5% +- 1% of 100,000 requests', async (t) => {
  const app = await poolUpstream('app');
  const canary = await poolUpstream('app-canary');
  t.teardown(() => Promise.all([app.close(), canary.close()]));
  const port = await freePort();
  const lb = await startLb(config(port, app.port, canary.port), [port]);
  t.teardown(() => lb.stop());
  const t0 = Date.now();
  const counts = await pipelined(port, 100_000, 16, 32);
  const seconds = (Date.now() - t0) / 1000;
  const total = (counts['app'] ?? 0) + (counts['app-canary'] ?? 0);
  t.equal(total, 100_000, 'every request answered by one of the two pools');
  const share = (counts['app-canary'] ?? 0) / total;
  t.ok(share >= 0.04 && share <= 0.06, `canary share ${(share * 100).toFixed(3)}% (${counts['app-canary']} of ${total}, ${seconds.toFixed(1)} s)`);
  // Smooth weighted round robin per worker: each worker is exact to within one request per entry.
  t.ok(Math.abs((counts['app-canary'] ?? 0) - 5000) <= 2, `exact interleave: ${counts['app-canary']} canary answers, 5000 expected (+-2 over 2 workers)`);
  const m = await admin(lb.socket, { cmd: 'status' });
  t.same(m.result.listeners[0].routes[0], { name: 'canary', split: [{ pool: 'app', weight: 95, configWeight: 95 }, { pool: 'app-canary', weight: 5, configWeight: 5 }], sticky: null });
});

t.test('sticky users stay on one side; raising the canary with lb split moves users app -> canary only', async (t) => {
  const app = await poolUpstream('app');
  const canary = await poolUpstream('app-canary');
  t.teardown(() => Promise.all([app.close(), canary.close()]));
  const port = await freePort();
  const lb = await startLb(config(port, app.port, canary.port, 'sticky = "header:x-user"'), [port]);
  t.teardown(() => lb.stop());

  // One user, 1,000 requests over 4 connections (both workers): always the same side.
  const one = await pipelined(port, 1000, 4, 25, 'x-user: user-42\r\n');
  t.equal(Object.keys(one).length, 1, `user-42 answered by one pool only: ${JSON.stringify(one)}`);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const sides = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, (_, j) => get(port, '/c', { agent, headers: { 'x-user': `user-${i + j}` } })));
      for (const r of batch) out.push(/pool:([a-z-]+);/.exec(r.body)![1]!);
    }
    return out;
  };
  const before = await sides(2000);
  const canaryBefore = before.filter((s) => s === 'app-canary').length;
  t.ok(canaryBefore > 40 && canaryBefore < 180, `about 5% of 2,000 users on the canary: ${canaryBefore}`);
  t.same(await sides(2000), before, 'every user answered by the same pool again');

  const r = await cli(['split', 'web/canary', 'app=90', 'app-canary=10', '-s', lb.socket]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, 'web/canary: app=95 app-canary=5 -> app=90 app-canary=10\n');
  const after = await sides(2000);
  let toCanary = 0;
  let toApp = 0;
  after.forEach((s, i) => {
    if (before[i] === 'app' && s === 'app-canary') toCanary++;
    if (before[i] === 'app-canary' && s === 'app') toApp++;
  });
  t.equal(toApp, 0, 'no user moved from the canary back to app');
  t.ok(toCanary > 30, `users moved app -> canary: ${toCanary}`);
  const canaryAfter = after.filter((s) => s === 'app-canary').length;
  t.ok(canaryAfter > 120 && canaryAfter < 300, `about 10% of 2,000 users on the canary now: ${canaryAfter}`);
});

t.test('lb split: admin errors, status, reload and restart keep the weights', async (t) => {
  const app = await poolUpstream('app');
  const canary = await poolUpstream('app-canary');
  t.teardown(() => Promise.all([app.close(), canary.close()]));
  const port = await freePort();
  const toml = config(port, app.port, canary.port);
  const lb = await startLb(toml, [port]);
  t.teardown(() => lb.stop());
  const s = ['-s', lb.socket];

  const errors: Array<[unknown, string]> = [
    [{ cmd: 'split', listener: 'nope', route: 'canary', weights: { app: 1 } }, 'UNKNOWN_LISTENER'],
    [{ cmd: 'split', listener: 'web', route: 'nope', weights: { app: 1 } }, 'UNKNOWN_ROUTE'],
    [{ cmd: 'split', listener: 'web', route: 'canary', weights: { other: 1 } }, 'UNKNOWN_POOL'],
    [{ cmd: 'split', listener: 'web', route: 'canary', weights: { app: 0, 'app-canary': 0 } }, 'WEIGHTS_ZERO'],
    [{ cmd: 'split', listener: 'web', route: 'canary', weights: { app: -1 } }, 'INVALID_FIELD'],
    [{ cmd: 'split', listener: 'web', route: 'canary', weights: { app: 1.5 } }, 'INVALID_FIELD'],
    [{ cmd: 'split', listener: 'web', route: 'canary' }, 'MISSING_FIELD'],
    [{ cmd: 'split', listener: 'web' }, 'MISSING_FIELD'],
  ];
  for (const [req, code] of errors) {
    const res = await admin(lb.socket, req);
    t.equal(res.ok, false);
    t.equal(res.error?.code, code, `${JSON.stringify(req)} -> ${code}`);
  }
  const bad = await cli(['split', 'web/canary', 'app=x', ...s]);
  t.equal(bad.code, 2, 'a malformed POOL=WEIGHT is a usage error');

  const count = async (n: number): Promise<number> => {
    const c = await pipelined(port, n, 4, 25);
    return c['app-canary'] ?? 0;
  };
  t.equal((await cli(['split', 'web/canary', 'app-canary=45', 'app=55', ...s])).code, 0);
  const n1 = await count(1000);
  t.ok(Math.abs(n1 - 450) <= 2, `45% of 1,000 after lb split: ${n1}`);
  const saved = JSON.parse(fs.readFileSync(path.join(lb.dir, 'state.json'), 'utf8'));
  t.same(saved.splits, [{ listener: 'web', route: 'canary', weights: { 'app-canary': 45, app: 55 } }], 'kept in the state file');

  const reload = await cli(['reload', ...s]);
  t.equal(reload.code, 0, reload.stderr);
  const n2 = await count(1000);
  t.ok(Math.abs(n2 - 450) <= 2, `still 45% after lb reload: ${n2}`);
  const table = await cli(['status', ...s]);
  t.match(table.stdout, 'split web/canary: app=55 (config 95) 55.0%, app-canary=45 (config 5) 45.0%');

  t.equal(await lb.stop(), 0);
  const again = await startLb(toml, [port], { dir: lb.dir });
  t.teardown(() => again.stop());
  const st = await admin(again.socket, { cmd: 'status' });
  t.same(st.result.listeners[0].routes[0].split, [{ pool: 'app', weight: 55, configWeight: 95 }, { pool: 'app-canary', weight: 45, configWeight: 5 }], 'restored after a restart');
  const n3 = await count(1000);
  t.ok(Math.abs(n3 - 450) <= 2, `45% after a restart: ${n3}`);

  const reset = await cli(['split', 'web/canary', '--reset', '-s', again.socket]);
  t.equal(reset.code, 0, reset.stderr);
  t.equal(reset.stdout, "web/canary: app=55 app-canary=45 -> app=95 app-canary=5 (the config's)\n");
  const n4 = await count(1000);
  t.ok(Math.abs(n4 - 50) <= 2, `back to 5%: ${n4}`);
  t.notOk('splits' in JSON.parse(fs.readFileSync(path.join(lb.dir, 'state.json'), 'utf8')), 'the state file has no splits left');
});

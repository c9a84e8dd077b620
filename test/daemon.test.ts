// The multi-process daemon with 2 workers, driven as operators drive it: the lb CLI, the admin socket,
// real signals. Reload, drain, worker crashes and graceful stop under load.

import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { admin, backends, cli, freePort, get, procState, startLb, startLoad, startUpstream, waitFor, type Upstream, withStateFile } from './helpers/lb.js';

function config(port: number, tcpPort: number, ups: Array<{ name: string; port: number; weight?: number }>, opts: { workers?: number; grace?: string; algorithm?: string } = {}): string {
  return `
[daemon]
workers = ${opts.workers ?? 2}
grace_period = "${opts.grace ?? '10s'}"
[admin]
socket = "{{socket}}"
[log]
level = "info"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[listeners.tcp]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "app"
[pools.app]
algorithm = "${opts.algorithm ?? 'round-robin'}"
retries = 2
backends = ${backends(ups)}
`;
}

/** Upstreams that answer their name, and hold `/slow` requests for `slowMs` (recording who got one). */
const gotSlow = new Set<Upstream>();
/** `slow`: how long /slow is held, in ms, or until the promise settles (a hold no machine load can outlast). */
async function upstreams(names: string[], slow: number | Promise<void> = 1500): Promise<Upstream[]> {
  gotSlow.clear();
  const ups: Upstream[] = await Promise.all(
    names.map((n, i) =>
      startUpstream(n, (req, res) => {
        if (req.url === '/slow') {
          gotSlow.add(ups[i]!);
          if (typeof slow === 'number') setTimeout(() => res.end(`${n} slow done`), slow);
          else void slow.then(() => res.end(`${n} slow done`));
        } else res.end(n);
      }),
    ),
  );
  return ups;
}
function slowHolder(ups: Upstream[]): Upstream | undefined {
  return ups.find((u) => gotSlow.has(u));
}

t.test('20 reloads under continuous load (kept-alive and new connections): no failed request', async (t) => {
  const ups = await upstreams(['a', 'b', 'c']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const all = ups.map((u) => ({ name: u.name, port: u.port }));
  const lb = await startLb(config(port, tcpPort, all), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const kept = startLoad(port, { concurrency: 4, keepAlive: true });
  t.teardown(() => kept.stop());
  const fresh = startLoad(port, { concurrency: 4, keepAlive: false });
  t.teardown(() => fresh.stop());
  const algos = ['round-robin', 'weighted-round-robin', 'least-connections', 'consistent-hash', 'maglev'];
  for (let i = 0; i < 20; i++) {
    // Alternate membership, weights and algorithms: every reload changes something real.
    const members = i % 2 === 0 ? all.slice(0, 2).map((b) => ({ ...b, weight: 1 + (i % 3) })) : all;
    fs.writeFileSync(lb.configFile, withStateFile(config(port, tcpPort, members, { algorithm: algos[i % algos.length] }).replaceAll('{{socket}}', lb.socket), lb.dir));
    const r = await cli(['reload', '-s', lb.socket]);
    t.equal(r.code, 0, `reload ${i + 1} applied (${r.stdout.trim().split('\n')[0]}${r.stderr})`);
  }
  const a = await kept.stop();
  const b = await fresh.stop();
  t.ok(a.ok > 100 && b.ok > 100, `load ran throughout (kept-alive ${a.ok}, new-connection ${b.ok} requests)`);
  t.equal(a.failed, 0, `kept-alive failures: ${a.errors.slice(0, 3).join('; ')}`);
  t.equal(b.failed, 0, `new-connection failures: ${b.errors.slice(0, 3).join('; ')}`);
  const reloads = lb.logs().filter((l) => l.msg === 'config reloaded').length;
  t.equal(reloads, 20, 'the daemon logged 20 applied reloads');
});

t.test('a websocket and a tcp connection opened before a reload keep exchanging data after it', async (t) => {
  const wsServer = http.createServer();
  const wss = new WebSocketServer({ server: wsServer });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
  await new Promise<void>((r) => wsServer.listen(0, '127.0.0.1', r));
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    wss.close();
    wsServer.closeAllConnections();
    wsServer.close();
    echo.close();
  });
  const wsPort = (wsServer.address() as net.AddressInfo).port;
  const echoPort = (echo.address() as net.AddressInfo).port;
  const [port, tcpPort] = [await freePort(), await freePort()];
  const cfg = (extra: string): string => `
[daemon]
workers = 2
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "ws"
[listeners.tcp]
protocol = "tcp"
listen = "127.0.0.1:${tcpPort}"
pool = "echo"
[pools.ws]
backends = ${backends([{ name: 'ws1', port: wsPort }])}
[pools.echo]
backends = ${backends([{ name: 'e1', port: echoPort }])}
${extra}`;
  const lb = await startLb(cfg(''), [port, tcpPort]);
  t.teardown(() => lb.stop());

  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const wsNext = (): Promise<string> => new Promise((r) => ws.once('message', (m) => r(m.toString())));
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('error', j);
  });
  const tcp = net.connect(tcpPort, '127.0.0.1');
  tcp.setEncoding('utf8');
  const tcpNext = (): Promise<string> => new Promise((r) => tcp.once('data', (d: string) => r(d)));
  await new Promise<void>((r) => tcp.once('connect', () => r()));
  ws.send('before');
  t.equal(await wsNext(), 'echo:before');
  tcp.write('before');
  t.equal(await tcpNext(), 'before');

  // Reload with changed pools (a new backend, another algorithm) and a new listener.
  const extraPort = await freePort();
  fs.writeFileSync(
    lb.configFile,
    cfg(`[pools.other]\nalgorithm = "least-connections"\nbackends = ${backends([{ port: echoPort }])}\n[listeners.more]\nprotocol = "tcp"\nlisten = "127.0.0.1:${extraPort}"\npool = "other"\n`).replaceAll('{{socket}}', lb.socket),
  );
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 0, 'reload applied');
  t.match(r.stdout, /listener more: added/);
  t.match(r.stdout, /pool other: added/);

  ws.send('after');
  t.equal(await wsNext(), 'echo:after', 'the websocket opened before the reload still works');
  tcp.write('after');
  t.equal(await tcpNext(), 'after', 'the tcp connection opened before the reload still works');
  ws.close();
  tcp.destroy();
});

t.test('lb drain under load: no new request to the drained backend; --wait returns after its last in-flight request', async (t) => {
  const ups = await upstreams(['a', 'b'], 1500);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, ups.map((u) => ({ name: u.name, port: u.port }))), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const load = startLoad(port, { concurrency: 4, keepAlive: true });
  t.teardown(() => load.stop());
  await waitFor(() => load.result.ok > 50, 10_000, 'load to flow');
  // A slow request: find out which backend holds it, and drain that one.
  const slow = get(port, '/slow');
  const [ua, ub] = ups as [Upstream, Upstream];
  // Both upstreams count /slow in `hits`; find the holder by asking which upstream got /slow.
  const holder = await waitFor(() => slowHolder(ups), 5_000, 'an upstream to receive /slow');
  const other = holder === ua ? ub : ua;
  const wait = cli(['drain', `app/${holder.name}`, '--wait', '10s', '-s', lb.socket]);
  const drained = await waitFor(async () => {
    const st = (await admin(lb.socket, { cmd: 'status' })).result;
    return st.pools[0].backends.find((x: { name: string; state: string }) => x.name === holder.name && x.state === 'drain');
  }, 5_000, 'drain to apply');
  t.ok(drained, 'status shows the backend as drain');
  const hitsAtDrain = holder.hits;
  const otherAtDrain = other.hits;
  await waitFor(() => other.hits > otherAtDrain + 100, 10_000, 'more load on the other backend');
  t.equal(holder.hits, hitsAtDrain, 'the drained backend got no new request while load continued');
  const w = await wait;
  const s = await slow;
  t.equal(s.status, 200, 'the in-flight slow request completed');
  t.equal(s.body, `${holder.name} slow done`);
  t.equal(w.code, 0, `drain --wait exit 0 (${w.stderr})`);
  t.match(w.stdout, /drained, nothing in flight/);
  const res = await load.stop();
  t.equal(res.failed, 0, 'no request failed during the drain');
  const ready = await cli(['ready', `app/${holder.name}`, '-s', lb.socket]);
  t.equal(ready.code, 0);
  const before = holder.hits;
  for (let i = 0; i < 10; i++) await get(port, '/');
  t.ok(holder.hits > before, 'after lb ready the backend gets traffic again');
});

t.test('drain --wait gives up with exit 1 when in-flight work outlasts the duration', async (t) => {
  let release = (): void => {};
  const held = new Promise<void>((r) => (release = r));
  const ups = await upstreams(['a'], held);
  t.teardown(() => {
    release();
    return Promise.all(ups.map((u) => u.close()));
  });
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: ups[0]!.port }]), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const slow = get(port, '/slow');
  await waitFor(() => slowHolder(ups), 5_000, 'the slow request to arrive');
  const w = await cli(['drain', 'app/a', '--wait', '300ms', '-s', lb.socket]);
  t.equal(w.code, 1);
  t.match(w.stderr, /app\/a: still 1 in flight after 300ms/);
  release();
  t.equal((await slow).status, 200);
});

t.test('kill -9 of a worker under load: a new worker appears, failures limited to what was in flight on it', async (t) => {
  const ups = await upstreams(['a', 'b']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, ups.map((u) => ({ name: u.name, port: u.port }))), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const st0 = (await admin(lb.socket, { cmd: 'status' })).result;
  const pids: number[] = st0.workers.pids;
  t.equal(pids.length, 2, 'two workers');
  const concurrency = 8;
  const load = startLoad(port, { concurrency, keepAlive: true });
  t.teardown(() => load.stop());
  await waitFor(() => load.result.ok > 200, 10_000, 'load to flow');
  process.kill(pids[0]!, 'SIGKILL');
  // Status asks every worker for its in-flight counts; right after the kill the primary can still hold the
  // dead worker, and a send to it fails with EPIPE. Those requests must get an answer, not end the primary.
  const burst = await Promise.allSettled(Array.from({ length: 30 }, () => admin(lb.socket, { cmd: 'status' })));
  const answered = burst.filter((r) => r.status === 'fulfilled' && r.value.ok === true).length;
  t.equal(answered, 30, `status requests during the worker's death all answered: ${burst.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason).slice(0, 2).join('; ')}`);
  const st1 = await waitFor(
    async () => {
      const st = (await admin(lb.socket, { cmd: 'status' })).result;
      return st.workers.pids.length === 2 && !st.workers.pids.includes(pids[0]) ? st : undefined;
    },
    10_000,
    'a replacement worker',
  );
  t.ok(!st1.workers.pids.includes(pids[0]), `worker ${pids[0]} replaced by ${st1.workers.pids.join(',')}`);
  const okAtRespawn = load.result.ok;
  await waitFor(() => load.result.ok > okAtRespawn + 200, 10_000, 'load to keep flowing');
  const res = await load.stop();
  t.ok(res.failed <= concurrency, `failed ${res.failed} <= ${concurrency} clients (one in flight each at most): ${res.errors.slice(0, 3).join('; ')}`);
  t.ok(lb.logs().some((l) => l.msg === 'worker died unexpectedly; respawning'), 'the respawn was logged');
});

t.test('kill -9 of the primary under load: every worker exits, none is left serving', async (t) => {
  const ups = await upstreams(['a', 'b']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, ups.map((u) => ({ name: u.name, port: u.port }))), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const pids: number[] = (await admin(lb.socket, { cmd: 'status' })).result.workers.pids;
  t.equal(pids.length, 2, 'two workers');
  // Orphans are reaped by whatever runs as PID 1, which may not reap: a zombie counts as exited.
  const alive = (pid: number): boolean => {
    const state = procState(pid);
    return state !== undefined && state !== 'Z';
  };
  t.teardown(() => {
    for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
  });
  const load = startLoad(port, { concurrency: 4, keepAlive: false });
  t.teardown(() => load.stop());
  await waitFor(() => load.result.ok > 200, 10_000, 'load to flow');
  lb.proc.kill('SIGKILL');
  await lb.exited;
  await waitFor(() => pids.every((p) => !alive(p)), 10_000, `workers ${pids.join(',')} to exit`);
  t.pass('both workers exited');
  await load.stop();
  const listening = await new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
  t.notOk(listening, 'nothing accepts on the listener port');
});

t.test('reload with an invalid file: exit 1, errors printed, old config keeps serving', async (t) => {
  const ups = await upstreams(['a']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: ups[0]!.port }]), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const good = fs.readFileSync(lb.configFile, 'utf8');
  fs.writeFileSync(lb.configFile, good.replace('algorithm = "round-robin"', 'algorithm = "round-robbin"\nwieght = 3'));
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 1);
  t.match(r.stderr, /CONFIG_INVALID: reload refused; the running config keeps serving/);
  t.match(r.stderr, new RegExp(`${lb.configFile.replaceAll('/', '\\/')}:\\d+:\\d+: pools\\.app\\.algorithm: unknown algorithm "round-robbin"`));
  t.match(r.stderr, /pools\.app\.wieght: unknown key "wieght"/);
  t.equal((await get(port, '/')).body, 'a', 'traffic still served by the old config');
  const hup = lb.logs().length;
  lb.proc.kill('SIGHUP');
  await waitFor(() => lb.logs().slice(hup).some((l) => l.msg === 'reload refused: config invalid; the running config keeps serving'), 5_000, 'SIGHUP reload to be refused');
  t.equal((await get(port, '/')).body, 'a', 'still served after a refused SIGHUP');
  fs.writeFileSync(lb.configFile, good);
  lb.proc.kill('SIGHUP');
  await waitFor(() => lb.logs().some((l) => l.msg === 'config reloaded' && (l.source as string) === 'SIGHUP'), 5_000, 'SIGHUP reload to apply');
});

t.test('lb weight and lb drain survive lb reload', async (t) => {
  const ups = await upstreams(['a', 'b']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, ups.map((u) => ({ name: u.name, port: u.port })), { algorithm: 'weighted-round-robin' }), [port, tcpPort]);
  t.teardown(() => lb.stop());
  t.equal((await cli(['weight', 'app/a', '5', '-s', lb.socket])).code, 0);
  t.equal((await cli(['drain', 'app/b', '-s', lb.socket])).code, 0);
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 0);
  const st = JSON.parse((await cli(['status', '--json', '-s', lb.socket])).stdout);
  const [a, b] = st.pools[0].backends;
  t.equal(a.weight, 5, 'runtime weight kept');
  t.equal(a.configWeight, 1);
  t.equal(b.state, 'drain', 'drain kept');
  const table = (await cli(['status', '-s', lb.socket])).stdout;
  t.match(table, /app\s+a\s+127\.0\.0\.1:\d+\s+config\s+up\s+5 \(config 1\)/, 'the table shows the runtime weight');
  t.match(table, /app\s+b\s+127\.0\.0\.1:\d+\s+config\s+drain/);
});

t.test('SIGTERM with a slow request in flight: it completes, then the daemon exits 0', async (t) => {
  const ups = await upstreams(['a'], 1000);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: ups[0]!.port }]), [port, tcpPort]);
  const slow = get(port, '/slow');
  await waitFor(async () => (await admin(lb.socket, { cmd: 'status' })).result.pools[0].backends[0].inflight === 1, 5_000, 'the slow request in flight');
  lb.proc.kill('SIGTERM');
  await waitFor(() => lb.logs().some((l) => String(l.msg).startsWith('stopping')), 5_000, 'stop to begin');
  await t.rejects(get(port, '/'), 'no new connection is accepted while stopping');
  const s = await slow;
  t.equal(s.status, 200);
  t.equal(s.body, 'a slow done', 'the in-flight request completed');
  t.equal(await lb.exited, 0, 'exit 0');
  t.notOk(fs.existsSync(lb.socket), 'admin socket removed');
});

t.test('admin socket and CLI: garbage, unknown pools and backends, bad weights, a second daemon', async (t) => {
  const ups = await upstreams(['a']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const [port, tcpPort] = [await freePort(), await freePort()];
  const lb = await startLb(config(port, tcpPort, [{ name: 'a', port: ups[0]!.port }]), [port, tcpPort]);
  t.teardown(() => lb.stop());
  const cases: Array<[string, string]> = [
    ['not json\n', 'BAD_REQUEST'],
    ['[1,2]\n', 'BAD_REQUEST'],
    ['{"nocmd":1}\n', 'MISSING_FIELD'],
    ['{"cmd":"explode"}\n', 'UNKNOWN_COMMAND'],
    ['{"cmd":"drain","pool":"app"}\n', 'MISSING_FIELD'],
    ['{"cmd":"drain","pool":"nope","backend":"a"}\n', 'UNKNOWN_POOL'],
    ['{"cmd":"drain","pool":"app","backend":"zz"}\n', 'UNKNOWN_BACKEND'],
    ['{"cmd":"weight","pool":"app","backend":"a","weight":-1}\n', 'INVALID_FIELD'],
    ['{"cmd":"weight","pool":"app","backend":"a","weight":"5"}\n', 'INVALID_FIELD'],
    ['{"cmd":"weight","pool":"app","backend":"a","weight":1.5}\n', 'INVALID_FIELD'],
    [`{"cmd":"status","pad":"${'x'.repeat(70_000)}"}\n`, 'LINE_TOO_LONG'],
  ];
  for (const [line, code] of cases) {
    const r = await admin(lb.socket, null, line);
    t.equal(r.ok, false, `${line.slice(0, 40).trim()} -> ok:false`);
    t.equal(r.error.code, code, `${line.slice(0, 40).trim()} -> ${code}`);
  }
  const st = (await admin(lb.socket, { cmd: 'status' })).result;
  t.equal(st.pools[0].backends[0].weight, 1, 'nothing changed');
  t.equal(st.pools[0].backends[0].state, 'up');
  t.equal((await get(port, '/')).body, 'a', 'still serving');

  const bad = await cli(['weight', 'app/a', '-3', '-s', lb.socket]);
  t.equal(bad.code, 2, 'a negative weight is a usage error (exit 2)');
  const nan = await cli(['weight', 'app/a', 'lots', '-s', lb.socket]);
  t.equal(nan.code, 2);
  t.match(nan.stderr, /weight must be an integer from 0 to 1000/);
  const unknown = await cli(['drain', 'app/zz', '-s', lb.socket]);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /UNKNOWN_BACKEND: pool app has no backend zz/);
  const noslash = await cli(['drain', 'app', '-s', lb.socket]);
  t.equal(noslash.code, 2);
  const unreachable = await cli(['status', '-s', `${lb.dir}/nothing.sock`]);
  t.equal(unreachable.code, 1);
  t.match(unreachable.stderr, /cannot reach the lb daemon on admin socket .*nothing\.sock/);

  // A second daemon with the same admin socket: refused, the first one unaffected.
  const port2 = await freePort();
  const second = await cli(['run', '-c', writeSecond(lb.configFile, lb.socket, port, port2)], {}, 20_000);
  t.equal(second.code, 78, 'exit 78 (EX_CONFIG): restarting would not help');
  t.match(second.stderr, /admin socket .* is in use: another lb is running on it/);
  t.equal((await get(port, '/')).body, 'a', 'the first daemon still serves');
  t.equal((await admin(lb.socket, { cmd: 'status' })).ok, true, 'and still answers on its socket');
});

function writeSecond(configFile: string, socket: string, port: number, port2: number): string {
  const f = configFile.replace(/lb\.toml$/, 'second.toml');
  fs.writeFileSync(f, fs.readFileSync(configFile, 'utf8').replace(`127.0.0.1:${port}"`, `127.0.0.1:${port2}"`).replace(/socket = ".*"/, `socket = "${socket}"`));
  return f;
}

// Runtime state as operators meet it: drain, maint and weight kept across a restart through
// daemon.state_file; `lb weight` that takes effect or is refused; `lb maint` stopping health checks; the
// CLI finding its daemon from a broken config; the admin socket answering a client that half-closes.

import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { admin, backends, cli, freePort, get, ROOT, startLb, startUpstream, tmpdir, waitFor, type Lb, type Upstream } from './helpers/lb.js';

const NO_ENV_SOCKET = { LB_ADMIN_SOCKET: '' };

function config(port: number, ups: Array<{ name: string; port: number; weight?: number }>, opts: { algorithm?: string; extra?: string } = {}): string {
  return `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
algorithm = "${opts.algorithm ?? 'weighted-round-robin'}"
backends = ${backends(ups)}
${opts.extra ?? ''}`;
}

async function status(lb: Lb): Promise<Map<string, { state: string; weight: number; configWeight: number; requests?: number; errors?: number; lastChangeAgeMs: number }>> {
  const s = await admin(lb.socket, { cmd: 'status' });
  return new Map(s.result.pools[0].backends.map((b: { name: string }) => [b.name, b]));
}

async function hits(port: number, n: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const r = await get(port, '/');
    out[r.body] = (out[r.body] ?? 0) + 1;
  }
  return out;
}

/**
 * The backends that answered 12 requests. Each worker rotates on its own and the kernel spreads connections
 * unevenly, so exact shares are not fixed; with 12 requests over 2 workers one worker takes at least 6,
 * which covers every backend of a rotation of up to 6.
 */
async function served(port: number): Promise<string[]> {
  return Object.keys(await hits(port, 12)).sort();
}

t.test('drain, weight and maint survive SIGTERM and a new `lb run`, and are applied to traffic', async (t) => {
  const ups = await Promise.all(['a', 'b', 'c'].map((n) => startUpstream(n)));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const toml = config(port, ups.map((u) => ({ name: u.name, port: u.port })));
  const first = await startLb(toml, [port]);
  t.teardown(() => first.stop());
  const s = ['-s', first.socket];
  t.equal((await cli(['drain', 'app/a', ...s])).code, 0);
  t.equal((await cli(['weight', 'app/b', '3', ...s])).code, 0);
  const m = await cli(['maint', 'app/c', ...s]);
  t.equal(m.code, 0, m.stderr);
  t.match(m.stdout, 'app/c: in maintenance');
  const stateFile = path.join(first.dir, 'state.json');
  const saved = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  t.same(saved.backends, [
    { pool: 'app', backend: 'a', admin: 'drain' },
    { pool: 'app', backend: 'b', weight: 3 },
    { pool: 'app', backend: 'c', admin: 'maint' },
  ], 'the state file holds every runtime change');
  t.equal(await first.stop(), 0);

  const second = await startLb(toml, [port], { dir: first.dir });
  t.teardown(() => second.stop());
  const st = await status(second);
  t.equal(st.get('a')!.state, 'drain');
  t.equal(st.get('b')!.weight, 3);
  t.equal(st.get('b')!.configWeight, 1);
  t.equal(st.get('c')!.state, 'maint');
  t.ok(second.logs().some((l) => l.msg === 'runtime state restored from the state file'), 'the restore is logged');
  const before = ups.map((u) => u.hits);
  t.same(await hits(port, 12), { b: 12 }, 'drained and maintenance backends get no traffic after the restart');
  t.same(ups.map((u, i) => u.hits - before[i]!), [0, 12, 0]);

  const table = await cli(['status', '-s', second.socket]);
  t.match(table.stdout, /^app\s+c\s+\S+\s+config\s+maint\s/m, 'lb status shows maint');

  // Leaving both: `lb ready` ends drain and maintenance; --reset drops the runtime weight.
  t.equal((await cli(['ready', 'app/a', '-s', second.socket])).code, 0);
  t.equal((await cli(['ready', 'app/c', '-s', second.socket])).code, 0);
  const reset = await cli(['weight', 'app/b', '--reset', '-s', second.socket]);
  t.equal(reset.code, 0, reset.stderr);
  t.equal(reset.stdout, "app/b: weight 3 -> 1 (the config's)\n");
  const after = await status(second);
  t.same([...after.values()].map((b) => [b.state, b.weight]), [['up', 1], ['up', 1], ['up', 1]]);
  t.same(JSON.parse(fs.readFileSync(stateFile, 'utf8')).backends, [], 'nothing left to keep');
  t.same(await served(port), ['a', 'b', 'c'], 'all three serve again');
});

t.test('a state file that cannot be read is ignored with a warning; one that cannot be written is logged, the change applies', async (t) => {
  const up = await startUpstream('a');
  t.teardown(() => up.close());
  const port = await freePort();
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'state.json'), '{"version":1,"backends":[{"pool":"app",');
  const lb = await startLb(config(port, [{ name: 'a', port: up.port }]), [port], { dir });
  t.teardown(() => lb.stop());
  t.ok(lb.logs().some((l) => l.msg === 'state file ignored: lb starts with the config as written' && l.level === 'warn'), 'a warning');
  t.equal((await status(lb)).get('a')!.state, 'up');
  await lb.stop();

  // daemon.state_file under a regular file: every write fails (mkdir: EEXIST).
  fs.writeFileSync(path.join(dir, 'blocker'), '');
  const bad = config(port, [{ name: 'a', port: up.port }]).replace('[daemon]', `[daemon]\nstate_file = "blocker/state.json"`);
  const lb2 = await startLb(bad, [port], { dir });
  t.teardown(() => lb2.stop());
  const r = await cli(['drain', 'app/a', '-s', lb2.socket]);
  t.equal(r.code, 0, 'the drain itself succeeds');
  t.equal((await status(lb2)).get('a')!.state, 'drain');
  await waitFor(() => lb2.logs().find((l) => String(l.msg).startsWith('state file could not be written') && l.level === 'error' && l.err === 'EEXIST'), 5_000, 'the write failure logged');
});

t.test('lb weight: refused with WEIGHT_UNSUPPORTED where the algorithm ignores weights; 0 and --reset work everywhere', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((n) => startUpstream(n)));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const lb = await startLb(config(port, ups.map((u) => ({ name: u.name, port: u.port })), { algorithm: 'round-robin' }), [port]);
  t.teardown(() => lb.stop());
  const s = ['-s', lb.socket];
  const refused = await cli(['weight', 'app/a', '5', ...s]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /^lb: WEIGHT_UNSUPPORTED: pool app uses round-robin, which ignores weights/);
  t.equal(refused.stdout, '');
  const raw = await admin(lb.socket, { cmd: 'weight', pool: 'app', backend: 'a', weight: 5 });
  t.equal(raw.error.code, 'WEIGHT_UNSUPPORTED');
  t.equal((await status(lb)).get('a')!.weight, 1, 'nothing changed');
  t.notOk(fs.existsSync(path.join(lb.dir, 'state.json')), 'nothing written');

  const zero = await cli(['weight', 'app/a', '0', ...s]);
  t.equal(zero.code, 0, zero.stderr);
  t.equal(zero.stdout, 'app/a: weight 1 -> 0\n');
  t.same(await hits(port, 4), { b: 4 }, 'weight 0: no new traffic, under round-robin too');
  const reset = await cli(['weight', 'app/a', '--reset', ...s]);
  t.equal(reset.stdout, "app/a: weight 0 -> 1 (the config's)\n");
  t.same(await served(port), ['a', 'b'], 'a serves again');
  const usage = await cli(['weight', 'app/a', ...s]);
  t.equal(usage.code, 2, 'neither a weight nor --reset: usage error');
});

t.test('lb reload prints the weights in effect, not the config file diff', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((n) => startUpstream(n)));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const list = (wa: number, wb: number) => [{ name: 'a', port: ups[0]!.port, weight: wa }, { name: 'b', port: ups[1]!.port, weight: wb }];
  const lb = await startLb(config(port, list(1, 1)), [port]);
  t.teardown(() => lb.stop());
  t.equal((await cli(['weight', 'app/b', '3', '-s', lb.socket])).code, 0);
  const text = fs.readFileSync(lb.configFile, 'utf8');
  fs.writeFileSync(lb.configFile, text.replace(/weight = 1 \}, \{ name = "b"(.*)weight = 1 \}/, 'weight = 4 }, { name = "b"$1weight = 2 }'));
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, 'pool app: backend a weight 1 -> 4\n');
  t.match(r.stdout, "pool app: backend b config weight 1 -> 2; the runtime weight 3 stays in effect (lb weight app/b --reset to use the config's)\n");
  t.notMatch(r.stdout, 'backend b weight');
  const st = await status(lb);
  t.same([st.get('a')!.weight, st.get('b')!.weight], [4, 3]);

  // The algorithm changes to one that ignores weights: the runtime weight is dropped, and the diff says so.
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('"weighted-round-robin"', '"round-robin"'));
  const r2 = await cli(['reload', '-s', lb.socket]);
  t.match(r2.stdout, 'pool app: backend b weight 3 -> 2 (round-robin ignores weights other than 0)\n');
  t.equal((await status(lb)).get('b')!.weight, 2);
});

t.test('lb maint: no traffic and no health checks until lb ready', async (t) => {
  const checks = { a: 0, b: 0 };
  const mk = (n: 'a' | 'b'): Promise<Upstream> =>
    startUpstream(n, (req, res) => {
      if (req.url === '/healthz') checks[n]++;
      res.end(n);
    });
  const ups = [await mk('a'), await mk('b')];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const lb = await startLb(
    config(port, ups.map((u) => ({ name: u.name, port: u.port })), { algorithm: 'round-robin', extra: '[pools.app.health_check]\npath = "/healthz"\ninterval = "100ms"\ntimeout = "90ms"\nrise = 1\n' }),
    [port],
  );
  t.teardown(() => lb.stop());
  await waitFor(async () => [...(await status(lb)).values()].every((b) => b.state === 'up'), 10_000, 'both backends up');
  const r = await cli(['maint', 'app/a', '-s', lb.socket]);
  t.equal(r.code, 0, r.stderr);
  t.equal((await status(lb)).get('a')!.state, 'maint');
  // b's checks are the clock: ten of its intervals pass while a sees at most the one probe already sent.
  const a0 = checks.a;
  const b0 = checks.b;
  await waitFor(() => checks.b >= b0 + 10, 20_000, "ten of b's checks");
  t.ok(checks.a <= a0 + 1, `no health checks of a in maintenance (${checks.a - a0} seen while b saw ${checks.b - b0})`);
  const before = ups[0]!.hits;
  t.same(await hits(port, 4), { b: 4 }, 'no traffic to a');
  t.equal(ups[0]!.hits, before);

  t.equal((await cli(['ready', 'app/a', '-s', lb.socket])).code, 0);
  await waitFor(() => checks.a > a0 + 1, 10_000, 'checks of a again');
  await waitFor(async () => (await status(lb)).get('a')!.state === 'up', 10_000, 'a up again');
  t.same(await served(port), ['a', 'b'], 'a serves again');
});

t.test('the admin socket answers a client that half-closes after its request (the socat pattern)', async (t) => {
  const up = await startUpstream('a');
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(config(port, [{ name: 'a', port: up.port }]), [port]);
  t.teardown(() => lb.stop());
  const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const p = spawn('sh', ['-c', `echo '{"cmd":"status"}' | socat - UNIX-CONNECT:"$SOCK"`], { env: { ...process.env, SOCK: lb.socket } });
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.once('exit', (code) => resolve({ code, stdout }));
  });
  t.equal(out.code, 0);
  t.match(out.stdout, /^\{[^\n]*\}\n$/, 'one answer line');
  const res = JSON.parse(out.stdout);
  t.equal(res.ok, true);
  t.equal(res.result.pid, lb.proc.pid);
});

t.test('-c FILE with errors still finds its [admin].socket; when it cannot, lb says so instead of asking the default socket', async (t) => {
  const up = await startUpstream('a');
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(config(port, [{ name: 'a', port: up.port }]), [port]);
  t.teardown(() => lb.stop());
  const good = fs.readFileSync(lb.configFile, 'utf8');

  // TOML that parses but does not validate: reload reaches this daemon, which refuses it with the file's errors.
  fs.writeFileSync(lb.configFile, good.replace('[pools.app]', '[pools.app]\nwieght = 3'));
  const r = await cli(['reload', '-c', lb.configFile], NO_ENV_SOCKET);
  t.equal(r.code, 1);
  t.match(r.stderr, 'CONFIG_INVALID: reload refused');
  t.match(r.stderr, /pools\.app\.wieght: unknown key "wieght"/);
  t.notMatch(r.stderr, 'cannot reach');

  // Not even TOML: [admin].socket is read line by line, relative to the file's directory.
  const dir = path.dirname(lb.configFile);
  fs.writeFileSync(lb.configFile, good.replace(`socket = "${lb.socket}"`, `socket = "${path.basename(lb.socket)}"`).replace('[pools.app]', '[pools.app]\nretries = = 2'));
  const s = await cli(['status', '--json', '-c', lb.configFile], NO_ENV_SOCKET);
  t.equal(s.code, 0, s.stderr);
  t.equal(JSON.parse(s.stdout).pid, lb.proc.pid, 'the daemon of that config answered');
  t.match(s.stderr, `lb: note: ${lb.configFile} has errors`);
  t.equal(path.join(dir, path.basename(lb.socket)), lb.socket);

  // No readable socket: named file, what could not be determined, and -s.
  const broken = path.join(dir, 'broken.toml');
  fs.writeFileSync(broken, '[admin]\nsocket = = "x"\n');
  const n = await cli(['status', '-c', broken], NO_ENV_SOCKET);
  t.equal(n.code, 1);
  t.match(n.stderr, `lb: ${broken} has errors`);
  t.match(n.stderr, 'the admin socket cannot be determined: pass -s PATH');
  t.notMatch(n.stderr, '/run/lb/admin.sock');
  const missing = await cli(['status', '-c', path.join(dir, 'nope.toml')], NO_ENV_SOCKET);
  t.equal(missing.code, 1);
  t.match(missing.stderr, 'nope.toml does not exist, so the admin socket cannot be determined');
});

t.test('lb --version and lb status: versions, per-backend requests, errors and last state change', async (t) => {
  const v = await cli(['--version']);
  t.equal(v.code, 0);
  t.equal(v.stdout, `${JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version}\n`);

  const up = await startUpstream('a', (req, res) => {
    res.statusCode = req.url === '/fail' ? 500 : 200;
    res.end('a');
  });
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(config(port, [{ name: 'a', port: up.port }], { extra: '[metrics]\nlisten = "127.0.0.1:0"\n' }), [port]);
  t.teardown(() => lb.stop());
  for (const p of ['/', '/', '/fail']) await get(port, p);
  const json = await waitFor(async () => {
    const r = await cli(['status', '--json', '-s', lb.socket]);
    const s = JSON.parse(r.stdout);
    return s.pools[0].backends[0].requests === 3 ? s : undefined;
  }, 10_000, 'three requests counted');
  t.equal(json.version, v.stdout.trim());
  t.equal(json.node, process.version);
  t.equal(json.pools[0].backends[0].errors, 1, 'the 500');
  t.type(json.pools[0].backends[0].lastChange, 'string');
  t.equal((await cli(['drain', 'app/a', '-s', lb.socket])).code, 0);
  const table = await cli(['status', '-s', lb.socket]);
  t.match(table.stdout, new RegExp(`^lb ${v.stdout.trim()} \\(node ${process.version.replaceAll('.', '\\.')}\\) pid ${lb.proc.pid}`));
  t.match(table.stdout, /^POOL\s+BACKEND\s+ADDRESS\s+SOURCE\s+STATE\s+WEIGHT\s+PRIO\s+INFLIGHT\s+REQUESTS\s+ERRORS\s+CHANGED\s+LAST CHECK$/m);
  t.match(table.stdout, /^app\s+a\s+\S+\s+config\s+drain\s+1\s+0\s+0\s+3\s+1\s+\d+(ms|s) ago\s+-$/m, table.stdout);
});

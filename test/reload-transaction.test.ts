// lb reload as all or nothing, met as operators meet it: the real `lb run` with 2 workers, the lb CLI, real
// loopback sockets. A reload that cannot be applied in full (an address held by another process, an
// algorithm module that is not one, a module whose create() throws in the workers) is refused, and the
// running generation keeps serving untouched; an applied one bumps the generation every worker reports.

import t, { type Test } from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { backends, cli, freePort, get, startLb, startLoad, startUpstream, type Lb, type Upstream } from './helpers/lb.js';

function config(port: number, ups: Array<{ name: string; port: number }>, opts: { algorithm?: string; extra?: string } = {}): string {
  return `
[daemon]
workers = 2
[admin]
socket = "{{socket}}"
[log]
level = "info"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
algorithm = "${opts.algorithm ?? 'round-robin'}"
backends = ${backends(ups)}
${opts.extra ?? ''}`;
}

async function upstreams(names: string[]): Promise<Upstream[]> {
  return Promise.all(names.map((n) => startUpstream(n)));
}

/** Upstreams a and b, and lb serving a pool of a only; `before` is its first status. */
async function serving(t: Test): Promise<{ ups: Upstream[]; port: number; lb: Lb; before: Status }> {
  const ups = await upstreams(['a', 'b']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const lb = await startLb(config(port, [{ name: 'a', port: ups[0]!.port }]), [port]);
  t.teardown(() => lb.stop());
  return { ups, port, lb, before: await status(lb) };
}

interface Status {
  generation: number;
  workers: { asked: number; answered: number; list: Array<{ pid: number; generation: number | null }> };
  listeners: Array<{ name: string; listen: string }>;
  pools: Array<{ name: string; algorithm: string; backends: Array<{ name: string }> }>;
}

async function status(lb: Lb): Promise<Status> {
  const r = await cli(['status', '--json', '-s', lb.socket]);
  if (r.code !== 0) throw new Error(`lb status exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

/** What status says about the serving config, without counters that move on their own. */
function shape(s: Status): unknown {
  return {
    generation: s.generation,
    workers: s.workers.list.map((w) => w.generation),
    listeners: s.listeners,
    pools: s.pools.map((p) => ({ name: p.name, algorithm: p.algorithm, backends: p.backends.map((b) => b.name) })),
  };
}

function write(lb: Lb, toml: string): void {
  fs.writeFileSync(lb.configFile, toml.replaceAll('{{socket}}', lb.socket));
}

t.test('a reload moving a listener to an address another process holds: refused, the old listener serves throughout', async (t) => {
  const ups = await upstreams(['a', 'b']);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const all = ups.map((u) => ({ name: u.name, port: u.port }));
  const lb = await startLb(config(port, all), [port]);
  t.teardown(() => lb.stop());
  const before = await status(lb);
  t.equal(before.generation, 1, 'generation 1 at start');
  t.same(before.workers.list.map((w) => w.generation), [1, 1], 'on both workers');

  const busy = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const taken = (busy.address() as net.AddressInfo).port;

  const load = startLoad(port, { concurrency: 4, keepAlive: false });
  t.teardown(() => load.stop());
  write(lb, config(taken, all));
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 1, 'lb reload exits 1');
  t.match(r.stderr, /LISTEN_FAILED: reload refused; the running config keeps serving/);
  t.match(
    r.stderr,
    new RegExp(`${lb.configFile.replaceAll('/', '\\/')}:\\d+:\\d+: listeners\\.web\\.listen: listener web: cannot listen on 127\\.0\\.0\\.1:${taken}: EADDRINUSE`),
    `names file, line, key and address (${r.stderr.trim().split('\n')[1]})`,
  );
  const served = await load.stop();
  t.ok(served.ok > 0, `requests ran during the reload (${served.ok})`);
  t.equal(served.failed, 0, `no request failed during the refused reload: ${served.errors.slice(0, 3).join('; ')}`);
  for (let i = 0; i < 4; i++) t.equal((await get(port, '/')).status, 200, `after the refusal, request ${i + 1} on the old address is served`);
  t.same(shape(await status(lb)), shape(before), 'status unchanged: same listeners, pools, generation 1 on every worker');
  t.ok(lb.logs().some((l) => l.msg === 'reload refused: a new address cannot be bound; the running config keeps serving'), 'the refusal is logged');
});

t.test('an algorithm module without create(): lb validate names it, lb reload is refused, the old backends serve', async (t) => {
  const { ups, port, lb, before } = await serving(t);
  fs.writeFileSync(path.join(lb.dir, 'no-create.mjs'), "export default { name: 'no-create', usesKey: false, usesWeights: false };\n");
  // The same reload adds backend b: status must not show it.
  write(lb, config(port, ups.map((u) => ({ name: u.name, port: u.port })), { algorithm: './no-create.mjs' }));

  const v = await cli(['validate', '-c', lb.configFile]);
  t.equal(v.code, 1, 'lb validate exits 1');
  t.match(v.stderr, new RegExp(`^${lb.configFile.replaceAll('/', '\\/')}:\\d+:\\d+: pools\\.app\\.algorithm: algorithm module .*no-create\\.mjs: .*"create" must be a function`, 'm'), v.stderr);

  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 1, 'lb reload exits 1');
  t.match(r.stderr, /CONFIG_INVALID: reload refused/);
  t.match(r.stderr, /pools\.app\.algorithm: .*"create" must be a function/);
  for (let i = 0; i < 4; i++) t.equal((await get(port, '/')).body, 'a', `request ${i + 1}: the old pool (only a) serves`);
  t.same(shape(await status(lb)), shape(before), 'status shows the old backends and generation 1');
});

t.test("a module whose create() throws in the workers: every worker rolls back; fixed on disk, the next reload applies it", async (t) => {
  const { ups, port, lb, before } = await serving(t);
  const module = path.join(lb.dir, 'algo.mjs');
  const algo = (body: string): string =>
    `export default { name: 'first', usesKey: false, usesWeights: false, create(list) { ${body} } };\n`;
  fs.writeFileSync(module, algo("throw new Error('create exploded');"));
  const extraPort = await freePort();
  const extra = `[listeners.extra]\nprotocol = "http"\nlisten = "127.0.0.1:${extraPort}"\npool = "app"\n`;
  write(lb, config(port, ups.map((u) => ({ name: u.name, port: u.port })), { algorithm: './algo.mjs', extra }));

  t.equal((await cli(['validate', '-c', lb.configFile])).code, 0, 'lb validate passes: create() is a function');
  const r = await cli(['reload', '-s', lb.socket]);
  t.equal(r.code, 1, 'lb reload exits 1');
  t.match(r.stderr, /RELOAD_FAILED: reload refused; the running config keeps serving/);
  t.match(r.stderr, /pool app: create exploded/);
  t.equal((await get(port, '/')).body, 'a', 'the old pool serves');
  t.same(shape(await status(lb)), shape(before), 'status unchanged, generation 1 on every worker');
  await t.rejects(get(extraPort, '/'), { code: 'ECONNREFUSED' }, 'the new listener is not open');

  fs.writeFileSync(module, algo('return { pick: (_ctx, usable) => list.find((c, i) => c.name === "b" && usable(c, i)) };'));
  const ok = await cli(['reload', '-s', lb.socket]);
  t.equal(ok.code, 0, `the fixed module is applied (${ok.stderr.trim()})`);
  t.match(ok.stdout, /config generation 2/);
  t.equal((await get(port, '/')).body, 'b', 'the fixed module picks b');
  t.equal((await get(extraPort, '/')).body, 'b', 'the new listener serves');
});

t.test('an applied reload bumps the generation on every worker; lb reload prints it', async (t) => {
  const { ups, port, lb } = await serving(t);
  t.equal((await status(lb)).generation, 1);
  for (const [i, members] of [ups, ups.slice(0, 1)].entries()) {
    write(lb, config(port, members.map((u) => ({ name: u.name, port: u.port }))));
    const r = await cli(['reload', '-s', lb.socket]);
    t.equal(r.code, 0, `reload ${i + 1} applied (${r.stderr.trim()})`);
    t.match(r.stdout, new RegExp(`^config generation ${i + 2}$`, 'm'), r.stdout);
    const s = await status(lb);
    t.equal(s.generation, i + 2, `status: generation ${i + 2}`);
    t.equal(s.workers.list.length, 2);
    t.same(s.workers.list.map((w) => w.generation), [i + 2, i + 2], 'every worker serves it');
  }
  const table = await cli(['status', '-s', lb.socket]);
  t.match(table.stdout, /generation 3\n/, 'the status table shows it');
});

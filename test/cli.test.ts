// The lb command line as users meet it: validate, run's start errors, help and usage errors.

import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { admin, cli, freePort, ROOT, startLb, tmpdir } from './helpers/lb.js';

t.test('lb validate: ok for the shipped example, every problem with FILE:LINE:COL otherwise', async (t) => {
  const ok = await cli(['validate', '-c', path.join(ROOT, 'lb.example.toml')]);
  t.equal(ok.code, 0);
  t.equal(ok.stdout, 'ok\n');
  const dir = tmpdir();
  const f = path.join(dir, 'bad.toml');
  fs.writeFileSync(
    f,
    `[daemon]
workers = 0
[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "ap"
[pools.app]
algorithm = "round-robin"
connect_timeout = "2x"
backends = [ { address = "10.0.0.1:80", wieght = 2 } ]
`,
  );
  const bad = await cli(['validate', '-c', f]);
  t.equal(bad.code, 1);
  const lines = bad.stderr.trim().split('\n');
  t.equal(lines.length, 4, `four problems, one a line:\n${bad.stderr}`);
  t.match(bad.stderr, `${f}:2:1: daemon.workers: expected an integer >= 1 or "auto", got integer 0`);
  t.match(bad.stderr, `${f}:6:1: listeners.web.pool: unknown pool "ap" (did you mean "app"?)`);
  t.match(bad.stderr, `${f}:9:1: pools.app.connect_timeout: invalid duration "2x"`);
  t.match(bad.stderr, /bad\.toml:10:\d+: pools\.app\.backends\[0\]\.wieght: unknown key "wieght" \(did you mean "weight"\?\)/);
  const syntax = path.join(dir, 'syntax.toml');
  fs.writeFileSync(syntax, '[daemon]\nworkers = = 2\n');
  const s = await cli(['validate', '-c', syntax]);
  t.equal(s.code, 1);
  t.match(s.stderr, new RegExp(`^${syntax.replaceAll('/', '\\/')}:2:\\d+: `), 'a syntax error carries line and column');
  const missing = await cli(['validate', '-c', path.join(dir, 'nope.toml')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /nope\.toml: cannot read: ENOENT/);
});

t.test('lb run: invalid config exits 78 (EX_CONFIG) and starts nothing; a listener address in use exits 78 naming it', async (t) => {
  const dir = tmpdir();
  const bad = path.join(dir, 'bad.toml');
  fs.writeFileSync(bad, '[listeners.web]\nprotocol = "udp"\n');
  const r = await cli(['run', '-c', bad], {}, 20_000);
  t.equal(r.code, 78);
  t.match(r.stderr, /bad\.toml:2:\d+: listeners\.web\.protocol: must be one of: http, tcp/);
  t.notOk(fs.existsSync(path.join(dir, 'admin.sock')));

  const busy = net.createServer();
  const port = await freePort();
  await new Promise<void>((res) => busy.listen(port, '127.0.0.1', res));
  t.teardown(() => busy.close());
  const cfg = path.join(dir, 'busy.toml');
  fs.writeFileSync(
    cfg,
    `[daemon]\nworkers = 2\n[admin]\nsocket = "${dir}/admin.sock"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:${port}"\npool = "app"\n[pools.app]\nbackends = [ { address = "127.0.0.1:9" } ]\n`,
  );
  const b = await cli(['run', '-c', cfg], {}, 20_000);
  t.equal(b.code, 78);
  t.match(b.stderr, `listener web: cannot listen on 127.0.0.1:${port}: EADDRINUSE`);
  t.notOk(fs.existsSync(path.join(dir, 'admin.sock')), 'the admin socket is removed again');
});

t.test('lb run: an algorithm module without create() exits 78 naming it; an uncaught error in the primary exits 70', async (t) => {
  const dir = tmpdir();
  fs.writeFileSync(path.join(dir, 'no-create.mjs'), "export default { name: 'x', usesKey: false, usesWeights: false };\n");
  const base = `[daemon]\nworkers = 1\n[admin]\nsocket = "${dir}/admin.sock"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:0"\npool = "app"\n[pools.app]\nbackends = [ { address = "127.0.0.1:9" } ]\n`;
  const cfg = path.join(dir, 'module.toml');
  fs.writeFileSync(cfg, base.replace('[pools.app]\n', '[pools.app]\nalgorithm = "./no-create.mjs"\n'));
  const r = await cli(['run', '-c', cfg], {}, 20_000);
  t.equal(r.code, 78, 'exit 78');
  t.match(r.stderr, /module\.toml:10:1: pools\.app\.algorithm: algorithm module .*no-create\.mjs: .*"create" must be a function/);
  t.notOk(fs.existsSync(path.join(dir, 'admin.sock')), 'nothing started');

  const lb = await startLb(base, [], { dir, env: { LB_TEST_HOOKS: '1' } });
  t.teardown(() => lb.stop('SIGKILL'));
  await admin(lb.socket, { cmd: 'test-throw' });
  const code = await lb.exited;
  t.equal(code, 70, 'a crash exits 70 (EX_SOFTWARE): systemd restarts it');
  t.match(lb.stderr(), /uncaught error in the primary: Error: test-throw/);
});

t.test('--help on every command, usage errors exit 2', async (t) => {
  for (const cmd of ['run', 'validate', 'status', 'reload', 'drain', 'ready', 'weight']) {
    const r = await cli([cmd, '--help']);
    t.equal(r.code, 0, `lb ${cmd} --help exits 0`);
    t.match(r.stdout, new RegExp(`Usage: lb ${cmd}`));
  }
  const top = await cli(['--help']);
  t.equal(top.code, 0);
  t.match(top.stdout, /drain/);
  const unknown = await cli(['frobnicate']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /unknown command 'frobnicate'/);
  const missing = await cli(['weight', 'app/a']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /missing required argument 'n'/);
  const badOpt = await cli(['status', '--bogus']);
  t.equal(badOpt.code, 2);
  const badWait = await cli(['drain', 'app/a', '--wait', 'soon', '-s', '/nonexistent.sock']);
  t.equal(badWait.code, 2);
  t.match(badWait.stderr, /--wait: invalid duration "soon"/);
});

t.test('admin commands find the socket from LB_ADMIN_SOCKET, else the config', async (t) => {
  const dir = tmpdir();
  const viaEnv = await cli(['status'], { LB_ADMIN_SOCKET: path.join(dir, 'env.sock') });
  t.equal(viaEnv.code, 1);
  t.match(viaEnv.stderr, /admin socket .*env\.sock/);
  const cfg = path.join(dir, 'c.toml');
  fs.writeFileSync(cfg, `[admin]\nsocket = "cfg.sock"\n[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:1"\npool = "app"\n[pools.app]\nbackends = [ { address = "127.0.0.1:9" } ]\n`);
  const viaCfg = await cli(['status', '-c', cfg]);
  t.equal(viaCfg.code, 1);
  t.match(viaCfg.stderr, `admin socket ${path.join(dir, 'cfg.sock')}`, 'a relative socket path is resolved against the config file');
});


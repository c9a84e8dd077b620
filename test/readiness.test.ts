// `lb status --wait`, the systemd unit's readiness check (ExecStartPost): run right after `lb run` is
// spawned, it returns 0 only once the daemon answers with every configured worker serving, and exits 1
// naming what it waited for when the time passes.

import t from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cli, freePort, httpConfig, LB, tmpdir } from './helpers/lb.js';

t.test('lb status --wait returns once every worker serves', async (t) => {
  const dir = tmpdir();
  const port = await freePort();
  const socket = path.join(dir, 'admin.sock');
  const file = path.join(dir, 'lb.toml');
  fs.writeFileSync(file, httpConfig(port, '[pools.app]\nbackends = [{ address = "127.0.0.1:9" }]\n', 3).replace('{{socket}}', socket));
  const lb = spawn(process.execPath, [LB, 'run', '-c', file], { stdio: 'ignore' });
  t.teardown(() => {
    lb.kill('SIGTERM');
  });
  // Spawned at once, as systemd runs ExecStartPost: the socket does not exist yet.
  const r = await cli(['status', '-c', file, '--wait', '60s', '--json']);
  t.equal(r.code, 0, r.stderr);
  const st = JSON.parse(r.stdout) as { workers: { configured: number; asked: number; answered: number } };
  t.same([st.workers.configured, st.workers.asked, st.workers.answered], [3, 3, 3], 'all 3 workers serving when it returned');
});

t.test('lb status --wait exits 1 when no daemon comes up in time', async (t) => {
  const dir = tmpdir();
  const r = await cli(['status', '-s', path.join(dir, 'none.sock'), '--wait', '500ms']);
  t.equal(r.code, 1);
  t.match(r.stderr, /not ready after 500ms: .*none\.sock/, 'says what it waited for');
});

// The shipped systemd unit: systemd-analyze accepts it, and it says what the README promises.

import t from 'tap';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from './helpers/lb.js';

const unit = path.join(ROOT, 'deploy', 'lb.service');

t.test('systemd-analyze verify accepts deploy/lb.service', async (t) => {
  const r = await new Promise<{ code: number | null; out: string }>((resolve) =>
    execFile('systemd-analyze', ['verify', unit], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr })),
  );
  t.equal(r.code, 0, `systemd-analyze verify: ${r.out}`);
  t.notMatch(r.out, /Unknown (key|section)|Invalid|Failed/, 'no warnings about the unit');
});

t.test('the unit runs lb the documented way', async (t) => {
  const text = fs.readFileSync(unit, 'utf8');
  for (const line of [
    /^ExecStart=\/usr\/bin\/env lb run -c \/etc\/lb\/lb\.toml$/m,
    // The CLI, not a signal: a refused reload makes `systemctl reload` fail.
    /^ExecReload=\/usr\/bin\/env lb reload -c \/etc\/lb\/lb\.toml$/m,
    // Readiness: `systemctl start` returns once every worker serves (test/readiness.test.ts).
    /^ExecStartPost=\/usr\/bin\/env lb status -c \/etc\/lb\/lb\.toml --wait 60s$/m,
    // lb run exits 78 (EX_CONFIG) for a config or bind error: no restart loop; crashes are restarted.
    /^Restart=on-failure$/m,
    /^RestartPreventExitStatus=78$/m,
    /^RuntimeDirectory=lb$/m,
    /^StateDirectory=lb$/m,
    /^AmbientCapabilities=CAP_NET_BIND_SERVICE$/m,
    /^NoNewPrivileges=yes$/m,
    /^ProtectSystem=strict$/m,
    /^LimitNOFILE=\d+$/m,
    /^KillMode=mixed$/m,
    /^User=lb$/m,
  ]) {
    t.match(text, line);
  }
});

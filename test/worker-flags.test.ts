// The Node flags workers run with: the primary's own, and a fixed-size young generation unless given.

import t from 'tap';
import fs from 'node:fs';
import { workerExecArgv } from '../src/daemon/primary.js';
import { childPids, lbConfig, startRecordingUpstream } from './helpers/hardening.js';
import { freePort, startLb } from './helpers/lb.js';

t.test('workerExecArgv keeps the primary flags and adds the young generation size unless one is given', (t) => {
  t.same(workerExecArgv([]), ['--min-semi-space-size=16']);
  t.same(workerExecArgv(['--enable-source-maps']), ['--enable-source-maps', '--min-semi-space-size=16']);
  t.same(workerExecArgv(['--max-semi-space-size=8']), ['--max-semi-space-size=8'], 'an operator ceiling is left alone');
  t.same(workerExecArgv(['--min-semi-space-size', '4']), ['--min-semi-space-size', '4'], 'so is an operator size');
  t.same(workerExecArgv(['--max-semi-space-sizes=1']), ['--max-semi-space-sizes=1', '--min-semi-space-size=16'], 'only the exact flag counts');
  t.end();
});

t.test('a running worker has the flag on its command line', async (t) => {
  const up = await startRecordingUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [up.port] }), [port]);
  t.teardown(() => lb.stop());
  const workers = childPids(lb.proc.pid!);
  t.ok(workers.length >= 1, `the primary has worker processes (${workers.join(', ')})`);
  for (const pid of workers) {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    t.ok(argv.includes('--min-semi-space-size=16'), `worker ${pid}: ${argv.filter(Boolean).join(' ')}`);
  }
});

// The admin socket is the only way to change the daemon at runtime: a unix socket with mode 0660 in a
// directory lb creates 0750, no TCP endpoint besides the listeners and the read-only metrics listener
// (which refuses POST/PUT/DELETE with 405), and a flood of garbage on the admin socket neither stops nor
// slows the traffic.

import t from 'tap';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { childPids, lbConfig, rawExchange } from './helpers/hardening.js';
import { admin, freePort, startLb, startLoad, startUpstream, tmpdir, waitFor } from './helpers/lb.js';

/** TCP ports the given processes listen on, from /proc/net/tcp{,6} matched by socket inode. */
function listeningPorts(pids: number[]): number[] {
  const inodes = new Set<string>();
  for (const pid of pids) {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
        if (m) inodes.add(m[1]!);
      } catch {
        /* closed meanwhile */
      }
    }
  }
  const ports = new Set<number>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of fs.readFileSync(f, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A' && inodes.has(cols[9]!)) ports.add(parseInt(cols[1]!.split(':')[1]!, 16));
    }
  }
  return [...ports].sort((a, b) => a - b);
}

t.test('admin socket mode 0660 in a 0750 directory; no TCP admin endpoint; metrics refuses writes with 405', async (t) => {
  const up = await startUpstream('u');
  t.teardown(() => up.close());
  const dir = tmpdir('lb-admin-');
  const sockDir = path.join(dir, 'run', 'lb');
  const [port, metricsPort] = [await freePort(), await freePort()];
  const toml = lbConfig({ port, workers: 2, upstreams: [up.port], metricsPort }).replace('socket = "{{socket}}"', `socket = "${path.join(sockDir, 'admin.sock')}"`);
  // startLb looks for DIR/admin.sock: point it at the real socket, which lb creates in run/lb/.
  fs.symlinkSync(path.join(sockDir, 'admin.sock'), path.join(dir, 'admin.sock'));
  const lb = await startLb(toml, [port, metricsPort], { dir });
  t.teardown(() => lb.stop());
  await waitFor(() => admin(path.join(sockDir, 'admin.sock'), { cmd: 'status' }), 5000, 'admin socket at its configured path');
  const st = fs.statSync(path.join(sockDir, 'admin.sock'));
  t.ok(st.isSocket(), 'the admin endpoint is a unix socket');
  t.equal((st.mode & 0o777).toString(8), '660', 'socket mode 0660');
  t.equal((fs.statSync(sockDir).mode & 0o777).toString(8), '750', 'its directory, created by lb, has mode 0750');
  t.equal(st.uid, process.getuid!(), 'owned by the daemon user');

  const pids = [lb.proc.pid!, ...childPids(lb.proc.pid!)];
  t.equal(pids.length, 3, 'primary and 2 workers');
  t.same(listeningPorts(pids), [port, metricsPort].sort((a, b) => a - b), 'lb listens on TCP only on the configured listener and metrics ports');

  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    for (const p of ['/metrics', '/', '/reload', '/status.json']) {
      const r = await rawExchange(metricsPort, `${method} ${p} HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{"cmd":"reload"}`);
      t.equal(r.status, 405, `metrics listener: ${method} ${p} -> 405`);
    }
  }
  const get = await rawExchange(metricsPort, 'GET /metrics HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  t.equal(get.status, 200, 'metrics listener: GET /metrics -> 200');
});

t.test('admin socket flood (200 connections of garbage, 64 KiB+ lines) under load: no failed request', async (t) => {
  const up = await startUpstream('u');
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, workers: 2, upstreams: [up.port] }), [port]);
  t.teardown(() => lb.stop());
  const kept = startLoad(port, { concurrency: 4, keepAlive: true });
  t.teardown(() => kept.stop());
  const fresh = startLoad(port, { concurrency: 2, keepAlive: false });
  t.teardown(() => fresh.stop());

  const big = 'x'.repeat(70 * 1024);
  const payloads = [
    'not json at all\n',
    '{"cmd":\n',
    '[1,2,3]\n',
    '{"cmd":42}\n',
    '{"cmd":"no-such-command"}\n',
    '{"cmd":"drain"}\n',
    '{"cmd":"weight","pool":"app","backend":"127.0.0.1:1","weight":"heavy"}\n',
    `${'['.repeat(100_000)}\n`,
    `${big}\n`, // one line over 64 KiB with its newline
    big, // over 64 KiB and no newline at all
    '\0\xff\xfe garbage \r\n\r\n',
    Array.from({ length: 500 }, (_, i) => `{"cmd":"nope-${i}"}`).join('\n') + '\n',
  ];
  interface Outcome {
    lines: string[];
    closed: boolean;
  }
  const flood = (i: number): Promise<Outcome> =>
    new Promise((resolve) => {
      const c = net.connect(lb.socket);
      let buf = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => (buf += d));
      c.on('error', () => {});
      const timer = setTimeout(() => c.destroy(), 10_000);
      c.once('close', () => {
        clearTimeout(timer);
        resolve({ lines: buf.split('\n').filter(Boolean), closed: true });
      });
      c.once('connect', () => {
        c.write(payloads[i % payloads.length]!);
        // Half-close: the daemon answers what it has and closes (or has closed already).
        c.end();
      });
    });
  // Rounds of 200 concurrent connections for at least 2 s (at most 20 rounds).
  const t0 = performance.now();
  const outcomes: Outcome[] = [];
  for (let round = 0; round < 20 && (round === 0 || performance.now() - t0 < 2000); round++) {
    outcomes.push(...(await Promise.all(Array.from({ length: 200 }, (_, i) => flood(i)))));
  }
  const floodMs = performance.now() - t0;
  const statusDuring = performance.now();
  const s = await admin(lb.socket, { cmd: 'status' });
  const statusMs = performance.now() - statusDuring;
  const a = await kept.stop();
  const b = await fresh.stop();

  t.equal(outcomes.filter((o) => o.closed).length, outcomes.length, `all ${outcomes.length} flood connections ended (${Math.round(floodMs)}ms of flooding)`);
  const answers = outcomes.flatMap((o) => o.lines.map((l) => JSON.parse(l) as { ok: boolean; error?: { code: string } }));
  t.ok(answers.length >= outcomes.length, `answers: ${answers.length}`);
  t.ok(answers.every((x) => x.ok === false && typeof x.error?.code === 'string'), 'every garbage line got ok:false with an error code');
  const codes = new Set(answers.map((x) => x.error!.code));
  for (const c of ['BAD_REQUEST', 'LINE_TOO_LONG', 'MISSING_FIELD', 'UNKNOWN_COMMAND', 'UNKNOWN_BACKEND']) t.ok(codes.has(c), `error code ${c} seen`);
  t.ok([...codes].every((c) => /^[A-Z_]+$/.test(c) && c !== 'INTERNAL'), `only stable codes, never INTERNAL (${[...codes].join(', ')})`);
  t.equal(s.ok, true, `status answers right after the flood (${Math.round(statusMs)}ms)`);
  t.ok(a.ok + b.ok > 200, `traffic flowed during the flood (kept-alive ${a.ok}, new-connection ${b.ok})`);
  t.equal(a.failed + b.failed, 0, `failed requests: ${a.failed + b.failed} (${[...a.errors, ...b.errors].slice(0, 3).join('; ')})`);
  const r = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n');
  t.equal(r.status, 200, 'afterwards: a request succeeds');
});

// Health checking in the primary: the rise/fall state machine step by step, the http and tcp probes
// against real loopback servers, and the HealthMonitor with its timers (active checks, passive ejection,
// slow start, jitter, reload, stop). Time-based assertions wait for conditions with deadlines.

import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';
import type { Address, HealthCheckConfig, LbConfig, PassiveConfig, PoolConfig } from '../config/model.js';
import { StateStore, type BackendRecord } from '../src/daemon/state.js';
import type { Logger } from '../src/log.js';
import { activeStep, checkOffset, countsAsFailure, ejectionReason, initialActive, nextSlot, type ActiveState } from '../src/health/machine.js';
import { HealthMonitor } from '../src/health/monitor.js';
import { formatStatusRanges, probe, probeHttp, probeTcp, statusMatches } from '../src/health/probe.js';
import { Timers } from '../src/health/timers.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** What the helpers need of a tap test. */
interface Teardown {
  teardown(fn: () => unknown): void;
}

// ---- helpers ------------------------------------------------------------------------------------------

function addr(port: number, host = '127.0.0.1'): Address {
  return { host, port, text: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` };
}

function httpCheck(over: Partial<HealthCheckConfig> = {}): HealthCheckConfig {
  return { type: 'http', path: '/healthz', expectStatus: [[200, 399]], intervalMs: 100, timeoutMs: 80, rise: 2, fall: 3, ...over };
}

function poolCfg(name: string, ports: number[], over: Partial<PoolConfig> = {}): PoolConfig {
  return {
    name,
    algorithm: 'round-robin',
    retries: 2,
    connectTimeoutMs: 1000,
    responseTimeoutMs: 1000,
    readTimeoutMs: 1000,
    slowStartMs: 0,
    maxRequests: 0,
    maxQueue: 0,
    queueTimeoutMs: 1000,
    retryOn: { connectFailure: true, reset: true, statuses: [] },
    perTryTimeoutMs: 0,
    backends: ports.map((p, i) => ({ name: `b${i + 1}`, address: addr(p), weight: 1, maxConnections: 0, priority: 0 })),
    ...over,
  };
}

function lbConfig(...pools: PoolConfig[]): LbConfig {
  return {
    file: '/dev/null',
    daemon: { workers: 1, workersSetting: 1, gracePeriodMs: 1000, accept: 'round-robin', stateFile: '' },
    admin: { socket: '/nonexistent/admin.sock' },
    log: { level: 'info', access: false },
    listeners: {},
    pools: Object.fromEntries(pools.map((p) => [p.name, p])),
  };
}

interface Logged {
  level: string;
  fields: Record<string, unknown>;
  msg: string;
}

function fakeLogger(): { logger: Logger; lines: Logged[] } {
  const lines: Logged[] = [];
  const at =
    (level: string) =>
    (fields: Record<string, unknown> | string, msg?: string): void => {
      if (typeof fields === 'string') lines.push({ level, fields: {}, msg: fields });
      else lines.push({ level, fields, msg: msg ?? '' });
    };
  const logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger;
  return { logger, lines };
}

interface Change {
  pool: string;
  backend: string;
  health: string;
  why: string;
  weight: number;
  upSince: number | undefined;
  at: number;
}

/** A StateStore and a HealthMonitor wired like the primary does, recording every `changed` call. */
function harness(t: Teardown, config: LbConfig, onChange?: (r: BackendRecord, why: string) => void) {
  const state = new StateStore();
  const changes: Change[] = [];
  const { logger, lines } = fakeLogger();
  const monitor = new HealthMonitor(
    state,
    (r, why) => {
      changes.push({ pool: r.pool, backend: r.name, health: r.health, why, weight: state.control(r).weight, upSince: r.upSince, at: Date.now() });
      onChange?.(r, why);
    },
    () => logger,
  );
  state.apply(config);
  monitor.apply(config);
  t.teardown(() => monitor.stop());
  const apply = (c: LbConfig): void => {
    state.apply(c);
    monitor.apply(c);
  };
  const rec = (pool: string, backend: string): BackendRecord => {
    const r = state.get(pool, backend);
    if (!r) throw new Error(`no record ${pool}/${backend}`);
    return r;
  };
  const count = (pool: string, backend: string, result: 'pass' | 'fail'): number =>
    monitor.checkCounts().find((c) => c.pool === pool && c.backend === backend && c.result === result)?.value ?? 0;
  return { state, monitor, changes, lines, apply, rec, count };
}

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Upstream {
  port: number;
  /** Status answered from now on. */
  status: number;
  hits: Array<{ at: number; host: string | undefined; connection: string | undefined; url: string | undefined }>;
  close(): Promise<void>;
}

async function upstream(t: Teardown, status = 200): Promise<Upstream> {
  const u: Upstream = {
    port: 0,
    status,
    hits: [],
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
  const server = http.createServer((req, res) => {
    u.hits.push({ at: Date.now(), host: req.headers.host, connection: req.headers.connection, url: req.url });
    res.writeHead(u.status, { 'content-type': 'text/plain' });
    res.end('ok\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  u.port = (server.address() as net.AddressInfo).port;
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return u;
}

/** Accepts connections and never answers; counts them. */
async function blackhole(t: Teardown): Promise<{ port: number; accepted: () => number }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as net.AddressInfo).port, accepted: () => accepted };
}

/** A loopback port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// ---- state machine ------------------------------------------------------------------------------------

/** Feeds "P"/"F" steps; returns the verdict after each step, and the transitions. */
function run(s: ActiveState, steps: string, rise: number, fall: number): { verdicts: string; whys: string[] } {
  let verdicts = '';
  const whys: string[] = [];
  for (const c of steps) {
    const tr = activeStep(s, c === 'P', c === 'P' ? '200' : 'ECONNREFUSED', rise, fall);
    if (tr) whys.push(tr.why);
    verdicts += s.health === 'up' ? 'u' : s.health === 'down' ? 'd' : '?';
  }
  return { verdicts, whys };
}

t.test('state machine', async (t) => {
  t.test('unchecked: the first pass makes it up at once; fall failures make it down', async (t) => {
    t.same(run(initialActive(true), 'P', 2, 3), { verdicts: 'u', whys: ['check passed 1 time'] });
    t.same(run(initialActive(true), 'FFF', 2, 3), { verdicts: '??d', whys: ['check failed 3 times: ECONNREFUSED'] });
    t.same(run(initialActive(true), 'FFPFF', 2, 3).verdicts, '??uuu', 'a pass in between resets the failure streak');
  });

  t.test('fall is exact: down on the fall-th consecutive failure, not before', async (t) => {
    for (const fall of [1, 2, 3, 5]) {
      const s: ActiveState = { health: 'up', passes: 0, fails: 0 };
      const r = run(s, 'F'.repeat(fall + 2), 2, fall);
      t.equal(r.verdicts, 'u'.repeat(fall - 1) + 'd'.repeat(3), `fall=${fall}`);
      t.same(r.whys, [`check failed ${fall} time${fall === 1 ? '' : 's'}: ECONNREFUSED`], 'one transition');
    }
  });

  t.test('rise is exact: up on the rise-th consecutive pass, not before', async (t) => {
    for (const rise of [1, 2, 4]) {
      const s: ActiveState = { health: 'down', passes: 0, fails: 3 };
      const r = run(s, 'P'.repeat(rise + 2), rise, 3);
      t.equal(r.verdicts, 'd'.repeat(rise - 1) + 'u'.repeat(3), `rise=${rise}`);
      t.same(r.whys, [`check passed ${rise} time${rise === 1 ? '' : 's'}`]);
    }
  });

  t.test('a flapping sequence never changes the verdict when rise/fall forbid it', async (t) => {
    const flap = 'FFPFPPFFPPFP'.repeat(6); // runs of at most 2 passes and 2 failures
    const up = run({ health: 'up', passes: 0, fails: 0 }, flap, 3, 3);
    t.equal(up.verdicts, 'u'.repeat(flap.length), 'up stays up (fall=3)');
    t.same(up.whys, []);
    const down = run({ health: 'down', passes: 0, fails: 0 }, flap, 3, 3);
    t.equal(down.verdicts, 'd'.repeat(flap.length), 'down stays down (rise=3)');
    t.same(down.whys, []);
    const alt = run({ health: 'down', passes: 0, fails: 0 }, 'PF'.repeat(50), 2, 2);
    t.equal(alt.verdicts, 'd'.repeat(100), 'PFPF… with rise=2 never rises');
    const altUp = run({ health: 'up', passes: 0, fails: 0 }, 'FP'.repeat(50), 2, 2);
    t.equal(altUp.verdicts, 'u'.repeat(100), 'FPFP… with fall=2 never falls');
  });

  t.test('offsets spread a pool over the interval; slots skip overruns', async (t) => {
    t.same([0, 1, 2, 3].map((i) => checkOffset(i, 4, 2000)), [0, 500, 1000, 1500]);
    t.equal(checkOffset(0, 1, 2000), 0);
    t.equal(nextSlot(1000, 100, 1050), 1100, 'on time: the next slot');
    t.equal(nextSlot(1000, 100, 1100), 1200, 'a slot that is now is already past');
    t.equal(nextSlot(1000, 100, 1350), 1400, 'overran: missed slots are skipped, phase kept');
  });

  t.test('passive helpers', async (t) => {
    t.equal(ejectionReason(5, 'reset'), 'passive: 5 consecutive failures (last: reset)');
    t.equal(ejectionReason(1, 'connect'), 'passive: 1 consecutive failure (last: connect)');
    t.equal(countsAsFailure('5xx', false), false);
    t.equal(countsAsFailure('5xx', true), true);
    t.equal(countsAsFailure('reset', false), true);
  });
});

// ---- probes -------------------------------------------------------------------------------------------

t.test('probes', async (t) => {
  t.test('http: status in range passes with the status as detail; mismatch fails with the ranges', async (t) => {
    const u = await upstream(t, 200);
    const ok = await probeHttp(addr(u.port), { path: '/healthz', expectStatus: [[200, 399]], timeoutMs: 1000 });
    t.equal(ok.ok, true);
    t.equal(ok.detail, '200');
    t.ok(ok.ms >= 0 && ok.ms < 1000, 'duration measured');
    u.status = 503;
    const bad = await probeHttp(addr(u.port), { path: '/healthz', expectStatus: [[200, 399]], timeoutMs: 1000 });
    t.same({ ok: bad.ok, detail: bad.detail }, { ok: false, detail: 'status 503 not in 200-399' });
    u.status = 204;
    const ranges: Array<[number, number]> = [[200, 200], [300, 399]];
    const bad2 = await probeHttp(addr(u.port), { path: '/', expectStatus: ranges, timeoutMs: 1000 });
    t.equal(bad2.detail, 'status 204 not in 200,300-399');
    t.equal(formatStatusRanges(ranges), '200,300-399');
    t.ok(statusMatches(399, ranges) && !statusMatches(400, ranges));
    t.equal(u.hits[0]?.url, '/healthz', 'GET path');
  });

  t.test('http: default Host is the backend address; a custom host is what the server sees; Connection: close', async (t) => {
    const u = await upstream(t);
    await probe(addr(u.port), httpCheck({ timeoutMs: 1000 }));
    await probe(addr(u.port), httpCheck({ timeoutMs: 1000, host: 'health.example.com' }));
    t.equal(u.hits[0]?.host, `127.0.0.1:${u.port}`);
    t.equal(u.hits[1]?.host, 'health.example.com');
    t.equal(u.hits[0]?.connection, 'close');
  });

  t.test('http: a server that accepts and never answers times out at timeout', async (t) => {
    const bh = await blackhole(t);
    const t0 = Date.now();
    const r = await probeHttp(addr(bh.port), { path: '/', expectStatus: [[200, 399]], timeoutMs: 200 });
    const took = Date.now() - t0;
    t.same({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'timeout after 200ms' });
    t.ok(took >= 190 && took < 1000, `took ${took}ms`);
    t.equal(bh.accepted(), 1, 'the connection was accepted');
  });

  t.test('tcp: a closed port fails with ECONNREFUSED; an open one passes', async (t) => {
    const port = await closedPort();
    const r = await probeTcp(addr(port), 1000);
    t.same({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'ECONNREFUSED' });
    const bh = await blackhole(t);
    const ok = await probe(addr(bh.port), httpCheck({ type: 'tcp', timeoutMs: 1000 }));
    t.same({ ok: ok.ok, detail: ok.detail }, { ok: true, detail: 'connected' });
    await until(() => bh.accepted() === 1, 1000, 'the server saw the connect');
  });

  t.test('http: a closed port fails with ECONNREFUSED', async (t) => {
    const port = await closedPort();
    const r = await probeHttp(addr(port), { path: '/', expectStatus: [[200, 399]], timeoutMs: 1000 });
    t.same({ ok: r.ok, detail: r.detail }, { ok: false, detail: 'ECONNREFUSED' });
  });

  t.test('abort ends a probe at once and marks it aborted', async (t) => {
    const bh = await blackhole(t);
    const ac = new AbortController();
    const p = probeHttp(addr(bh.port), { path: '/', expectStatus: [[200, 399]], timeoutMs: 5000 }, ac.signal);
    await until(() => bh.accepted() === 1, 1000, 'connection accepted');
    const t0 = Date.now();
    ac.abort();
    const r = await p;
    t.equal(r.aborted, true);
    t.ok(Date.now() - t0 < 500);
  });
});

// ---- timers -------------------------------------------------------------------------------------------

t.test('Timers: callbacks that throw or reject are reported, not thrown', async (t) => {
  const errors: string[] = [];
  const timers = new Timers((key) => errors.push(key));
  timers.set('sync', 0, () => {
    throw new Error('boom');
  });
  timers.set('async', 0, async () => {
    throw new Error('boom');
  });
  timers.set('replaced', 10_000, () => errors.push('must not run'));
  timers.set('replaced', 0, () => errors.push('ran'));
  await until(() => errors.length === 3, 1000, 'three callbacks');
  t.same(errors.sort(), ['async', 'ran', 'sync']);
  t.equal(timers.size, 0);
  timers.set('x', 10_000, () => {});
  timers.clearAll();
  t.equal(timers.size, 0);
});

// ---- monitor: active checks ---------------------------------------------------------------------------

t.test('active: unchecked -> up on the first pass, down after fall, up after rise; one changed() per transition', async (t) => {
  const u = await upstream(t, 200);
  const check = httpCheck({ intervalMs: 50, timeoutMs: 40, rise: 2, fall: 3 });
  const h = harness(t, lbConfig(poolCfg('app', [u.port], { healthCheck: check })));
  t.equal(h.rec('app', 'b1').health, 'unchecked', 'starts unchecked');
  await until(() => h.rec('app', 'b1').health === 'up', 1000, 'up');
  t.same(h.changes.map((c) => [c.health, c.why]), [['up', 'check passed 1 time']]);
  t.equal(h.rec('app', 'b1').lastCheck?.detail, '200');

  u.status = 503;
  const t0 = Date.now();
  await until(() => h.rec('app', 'b1').health === 'down', 3 * 50 + 40 + 500, 'down after fall');
  t.ok(Date.now() - t0 >= 2 * 50 - 20, 'not before the third failure');
  t.same(h.changes[1], { ...h.changes[1], health: 'down', why: 'check failed 3 times: status 503 not in 200-399' });
  t.equal(h.rec('app', 'b1').reason, 'check failed 3 times: status 503 not in 200-399');
  t.same(
    { ok: h.rec('app', 'b1').lastCheck?.ok, detail: h.rec('app', 'b1').lastCheck?.detail },
    { ok: false, detail: 'status 503 not in 200-399' },
  );

  u.status = 200;
  await until(() => h.rec('app', 'b1').health === 'up', 2 * 50 + 500, 'up after rise');
  t.same(
    h.changes.map((c) => c.why),
    ['check passed 1 time', 'check failed 3 times: status 503 not in 200-399', 'check passed 2 times'],
    'exactly one changed() per transition',
  );
  t.ok(h.count('app', 'b1', 'fail') >= 3);
  t.ok(h.count('app', 'b1', 'pass') >= 3);
});

t.test('active: a backend dead at start is down within interval x fall + timeout', async (t) => {
  const port = await closedPort();
  const bh = await blackhole(t);
  const check = httpCheck({ type: 'tcp', intervalMs: 100, timeoutMs: 50, rise: 2, fall: 2 });
  const t0 = Date.now();
  const h = harness(t, lbConfig(poolCfg('app', [port, bh.port], { healthCheck: check })));
  await until(() => h.rec('app', 'b1').health === 'down', 100 * 2 + 50 + 200, 'dead backend down');
  t.ok(Date.now() - t0 <= 100 * 2 + 50 + 200);
  t.equal(h.changes.find((c) => c.backend === 'b1')?.why, 'check failed 2 times: ECONNREFUSED');
  await until(() => h.rec('app', 'b2').health === 'up', 500, 'live backend up');
});

t.test('active: an http check against a server that never answers fails with the timeout', async (t) => {
  const bh = await blackhole(t);
  const check = httpCheck({ intervalMs: 100, timeoutMs: 60, fall: 1 });
  const h = harness(t, lbConfig(poolCfg('app', [bh.port], { healthCheck: check })));
  await until(() => h.rec('app', 'b1').health === 'down', 1000, 'down');
  t.equal(h.rec('app', 'b1').lastCheck?.detail, 'timeout after 60ms');
  t.ok((h.rec('app', 'b1').lastCheck?.ms ?? 0) >= 55);
  t.equal(h.rec('app', 'b1').reason, 'check failed 1 time: timeout after 60ms');
});

t.test('jitter: the checks of a 4-backend pool are spread over the interval, not fired together', async (t) => {
  const us = await Promise.all([1, 2, 3, 4].map(() => upstream(t)));
  const interval = 400;
  harness(t, lbConfig(poolCfg('app', us.map((u) => u.port), { healthCheck: httpCheck({ intervalMs: interval, timeoutMs: 100 }) })));
  await until(() => us.every((u) => u.hits.length >= 2), interval * 3, 'two checks each');
  const first = us.map((u) => u.hits[0]!.at).sort((a, b) => a - b);
  for (let i = 1; i < first.length; i++) {
    const gap = first[i]! - first[i - 1]!;
    t.ok(gap >= interval / 4 - 40, `first checks ${i - 1} and ${i} are ${gap}ms apart`);
  }
  for (const u of us) {
    const gap = u.hits[1]!.at - u.hits[0]!.at;
    t.ok(gap >= interval - 30 && gap <= interval + 100, `one check per interval per backend (${gap}ms)`);
  }
});

t.test('a changed() handler that throws does not stop the checks', async (t) => {
  const u = await upstream(t, 200);
  const h = harness(t, lbConfig(poolCfg('app', [u.port], { healthCheck: httpCheck({ intervalMs: 30, timeoutMs: 25, fall: 1, rise: 1 }) })), () => {
    throw new Error('handler bug');
  });
  await until(() => h.rec('app', 'b1').health === 'up', 1000, 'up');
  u.status = 500;
  await until(() => h.rec('app', 'b1').health === 'down', 1000, 'down: checks kept running');
  t.ok(h.lines.some((l) => l.level === 'error'), 'the failure was logged');
});

t.test('checkOnce runs one check now and feeds the state machine', async (t) => {
  const u = await upstream(t, 503);
  const h = harness(t, lbConfig(poolCfg('app', [u.port], { healthCheck: httpCheck({ intervalMs: 60_000, timeoutMs: 500, fall: 2 }) })));
  // The first scheduled check fires at offset 0; wait for it, then drive by hand.
  await until(() => h.count('app', 'b1', 'fail') === 1, 1000, 'first scheduled check');
  const r = await h.monitor.checkOnce('app', 'b1');
  t.same({ ok: r?.ok, detail: r?.detail }, { ok: false, detail: 'status 503 not in 200-399' });
  t.equal(h.rec('app', 'b1').health, 'down');
  t.same(h.rec('app', 'b1').lastCheck, r);
  t.equal(await h.monitor.checkOnce('app', 'nope'), undefined);
  t.same(h.monitor.checkCounts(), [
    { pool: 'app', backend: 'b1', result: 'pass', value: 0 },
    { pool: 'app', backend: 'b1', result: 'fail', value: 2 },
  ]);
});

// ---- monitor: passive ejection ------------------------------------------------------------------------

const passive = (over: Partial<PassiveConfig> = {}): PassiveConfig => ({
  maxFailures: 3,
  ejectForMs: 200,
  on5xx: false,
  consecutive5xx: 0,
  consecutiveGatewayErrors: 0,
  maxEjectionPercent: 100,
  maxEjectForMs: 200,
  report5xx: false,
  ...over,
});

t.test('passive: max_failures consecutive failures eject for eject_for, then re-admit', async (t) => {
  const h = harness(t, lbConfig(poolCfg('app', [1, 2], { passive: passive() })));
  const r = h.rec('app', 'b1');
  t.equal(r.health, 'up', 'no active checks: up');
  h.monitor.failure('app', 'b1', 'connect');
  h.monitor.failure('app', 'b1', 'reset');
  h.monitor.recovered('app', 'b1');
  h.monitor.failure('app', 'b1', 'reset');
  h.monitor.failure('app', 'b1', '5xx'); // not counted without on_5xx
  h.monitor.failure('app', 'b1', 'timeout');
  t.equal(r.health, 'up', 'recovered reset the streak; 5xx not counted');
  t.equal(r.passiveStreak, 2);
  const t0 = Date.now();
  h.monitor.failure('app', 'b1', 'reset');
  t.equal(r.health, 'down', 'ejected on the max_failures-th failure');
  t.same(h.changes.map((c) => [c.backend, c.health, c.why]), [['b1', 'down', 'passive: 3 consecutive failures (last: reset)']]);
  t.equal(r.reason, 'passive: 3 consecutive failures (last: reset)');
  t.ok(r.ejectedUntil !== undefined && r.ejectedUntil >= t0 + 200);
  for (let i = 0; i < 10; i++) h.monitor.failure('app', 'b1', 'reset');
  t.equal(h.changes.length, 1, 'failures while ejected change nothing');
  t.equal(h.rec('app', 'b2').health, 'up', 'other backends unaffected');

  await until(() => r.health === 'up', 1000, 're-admitted');
  const took = Date.now() - t0;
  t.ok(took >= 195, `ejected for ${took}ms`);
  t.same(h.changes.map((c) => [c.health, c.why]).slice(1), [['up', 'ejection over']]);
  t.equal(r.ejectedUntil, undefined);
  t.equal(r.passiveStreak, 0);
});

t.test('passive: 5xx counts with on_5xx; failures are summed across reports (workers)', async (t) => {
  const h = harness(t, lbConfig(poolCfg('app', [1], { passive: passive({ maxFailures: 4, on5xx: true, ejectForMs: 10_000 }) })));
  for (const reason of ['5xx', 'protocol', '5xx', 'connect'] as const) h.monitor.failure('app', 'b1', reason);
  t.equal(h.rec('app', 'b1').health, 'down');
  t.equal(h.changes[0]?.why, 'passive: 4 consecutive failures (last: connect)');
  h.monitor.failure('app', 'unknown', 'reset'); // unknown backends are ignored
});

t.test('passive: failures reported before apply() (workers start first) count; apply then starts the checks', async (t) => {
  const u = await upstream(t, 200);
  const config = lbConfig(poolCfg('app', [u.port], { healthCheck: httpCheck({ intervalMs: 30, timeoutMs: 25 }), passive: passive({ maxFailures: 2, ejectForMs: 150 }) }));
  const state = new StateStore();
  const changes: string[] = [];
  const monitor = new HealthMonitor(state, (r, why) => changes.push(`${r.health}: ${why}`), () => fakeLogger().logger);
  t.teardown(() => monitor.stop());
  state.apply(config);
  monitor.failure('app', 'b1', 'connect');
  monitor.failure('app', 'b1', 'connect');
  t.equal(state.get('app', 'b1')?.health, 'down', 'ejected before apply');
  monitor.apply(config);
  await until(() => (monitor.checkCounts().find((c) => c.result === 'pass')?.value ?? 0) >= 2, 1000, 'checks started by apply');
  t.equal(state.get('app', 'b1')?.health, 'down', 'passing checks do not end the ejection');
  await until(() => state.get('app', 'b1')?.health === 'up', 1000, 'ejection over');
  t.same(changes, ['down: passive: 2 consecutive failures (last: connect)', 'up: ejection over']);
});

t.test('passive: while ejected, passing active checks do not re-admit; afterwards the active verdict applies', async (t) => {
  const u = await upstream(t, 200);
  const h = harness(
    t,
    lbConfig(poolCfg('app', [u.port], { healthCheck: httpCheck({ intervalMs: 30, timeoutMs: 25, rise: 1 }), passive: passive({ maxFailures: 2, ejectForMs: 300 }) })),
  );
  const r = h.rec('app', 'b1');
  await until(() => r.health === 'up', 1000, 'up by checks');
  h.monitor.failure('app', 'b1', 'reset');
  h.monitor.failure('app', 'b1', 'reset');
  t.equal(r.health, 'down');
  const passesAtEject = h.count('app', 'b1', 'pass');
  await until(() => h.count('app', 'b1', 'pass') >= passesAtEject + 4, 1000, 'checks keep passing');
  t.equal(r.health, 'down', 'still ejected despite passing checks');
  await until(() => r.health === 'up', 1000, 'ejection over');
  t.same(h.changes.map((c) => c.why), ['check passed 1 time', 'passive: 2 consecutive failures (last: reset)', 'ejection over']);
});

t.test('passive: an ejection that ends while the active checks say down leaves it down', async (t) => {
  const u = await upstream(t, 200);
  const h = harness(
    t,
    lbConfig(poolCfg('app', [u.port], { healthCheck: httpCheck({ intervalMs: 30, timeoutMs: 25, fall: 2 }), passive: passive({ maxFailures: 1, ejectForMs: 200 }) })),
  );
  const r = h.rec('app', 'b1');
  await until(() => r.health === 'up', 1000, 'up');
  h.monitor.failure('app', 'b1', 'timeout');
  u.status = 500;
  await until(() => r.ejectedUntil === undefined, 1000, 'ejection over');
  t.equal(r.health, 'down');
  t.match(r.reason, /^check failed 2 times: status 500/);
  t.same(h.changes.map((c) => c.why), ['check passed 1 time', 'passive: 1 consecutive failure (last: timeout)'], 'no transition at the end');
});

// ---- slow start ---------------------------------------------------------------------------------------

t.test('slow start: down -> up ramps the weight in steps, then clears upSince', async (t) => {
  const h = harness(t, lbConfig(poolCfg('app', [1], { slowStartMs: 300, passive: passive({ maxFailures: 1, ejectForMs: 50 }) })));
  const r = h.rec('app', 'b1');
  r.configWeight = 10;
  h.monitor.failure('app', 'b1', 'reset');
  await until(() => r.health === 'up', 1000, 're-admitted');
  t.ok(r.upSince !== undefined, 'upSince set on down -> up');
  await until(() => r.upSince === undefined, 1000, 'ramp over');
  const ramp = h.changes.filter((c) => c.why === 'slow start');
  t.ok(ramp.length >= 5 && ramp.length <= 11, `${ramp.length} slow start pushes`);
  const weights = [h.changes.find((c) => c.why === 'ejection over')!.weight, ...ramp.map((c) => c.weight)];
  t.ok(weights[0]! < 2, `starts low (${weights[0]})`);
  for (let i = 1; i < weights.length; i++) t.ok(weights[i]! >= weights[i - 1]!, `non-decreasing: ${weights.join(' ')}`);
  t.equal(ramp.at(-1)?.weight, 10, 'the last push has full weight');
  t.equal(ramp.at(-1)?.upSince, undefined);
  const n = h.changes.length;
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.equal(h.changes.length, n, 'no pushes after the ramp');
});

t.test('slow start: going down during the ramp ends it', async (t) => {
  const h = harness(t, lbConfig(poolCfg('app', [1], { slowStartMs: 10_000, passive: passive({ maxFailures: 1, ejectForMs: 30 }) })));
  const r = h.rec('app', 'b1');
  h.monitor.failure('app', 'b1', 'reset');
  await until(() => r.health === 'up' && r.upSince !== undefined, 1000, 'ramping');
  h.monitor.failure('app', 'b1', 'reset');
  t.equal(r.health, 'down');
  t.equal(r.upSince, undefined);
});

// ---- reload and stop ----------------------------------------------------------------------------------

t.test('reload: surviving backends keep state, counters and schedule; removed stop; new start', async (t) => {
  const a = await upstream(t);
  const b = await upstream(t);
  const c = await upstream(t);
  const check = httpCheck({ intervalMs: 40, timeoutMs: 30 });
  const pool = poolCfg('app', [a.port, b.port]);
  const h = harness(t, lbConfig({ ...pool, healthCheck: check, passive: passive({ maxFailures: 100, ejectForMs: 10_000 }) }));
  await until(() => h.count('app', 'b1', 'pass') >= 3 && h.count('app', 'b2', 'pass') >= 3, 2000, 'checks ran');
  h.monitor.failure('app', 'b1', 'reset');
  const before = h.count('app', 'b1', 'pass');
  const last = h.rec('app', 'b1').lastCheck;
  const changesBefore = h.changes.length;

  // b2 removed, b3 added; b1 keeps an identical check config.
  const next = lbConfig({
    ...pool,
    backends: [pool.backends[0]!, { name: 'b3', address: addr(c.port), weight: 1, maxConnections: 0, priority: 0 }],
    healthCheck: { ...check },
    passive: passive({ maxFailures: 100, ejectForMs: 10_000 }),
  });
  h.apply(next);
  const r1 = h.rec('app', 'b1');
  t.equal(r1.health, 'up', 'survivor keeps its state');
  t.equal(r1.passiveStreak, 1, 'and its passive streak');
  t.ok(h.count('app', 'b1', 'pass') >= before, 'counters kept');
  t.ok(r1.lastCheck && last && r1.lastCheck.at >= last.at, 'history kept');
  t.equal(h.changes.length, changesBefore, 'no state change for the survivor');
  t.equal(h.state.get('app', 'b3')?.health, 'unchecked');
  t.notOk(h.monitor.checkCounts().some((x) => x.backend === 'b2'), 'removed backend gone from the counters');

  const bHits = b.hits.length;
  const aBefore = a.hits.length;
  await until(() => h.state.get('app', 'b3')?.health === 'up', 1000, 'new backend checked');
  await until(() => a.hits.length >= aBefore + 5, 1000, 'survivor keeps being checked');
  t.ok(b.hits.length <= bHits + 1, 'removed backend no longer checked');
  const span = a.hits.at(-1)!.at - a.hits[aBefore - 1]!.at;
  t.ok(span >= 5 * 40 - 30, `survivor's cadence unchanged across the reload (${a.hits.length - aBefore} checks in ${span}ms)`);

  // A changed check config restarts the schedule but keeps counters and state.
  const passes = h.count('app', 'b1', 'pass');
  h.apply(lbConfig({ ...next.pools.app!, healthCheck: { ...check, path: '/other' } }));
  await until(() => a.hits.some((x) => x.url === '/other'), 1000, 'new path checked');
  t.ok(h.count('app', 'b1', 'pass') >= passes);
  t.equal(h.rec('app', 'b1').health, 'up');

  // Removing the health check makes it plain `up`; removing passive ends an ejection.
  h.monitor.failure('app', 'b1', 'reset'); // streak 1 → (max 100) still serving
  h.apply(lbConfig({ ...next.pools.app!, healthCheck: undefined, passive: undefined }));
  const hitsAfter = a.hits.length;
  await new Promise((resolve) => setTimeout(resolve, 150));
  t.ok(a.hits.length <= hitsAfter + 1, 'checks stopped when the table was removed');
  t.equal(h.rec('app', 'b1').health, 'up');
});

t.test('reload: removing [health_check] from a down backend makes it up; removing [passive] ends an ejection', async (t) => {
  const port = await closedPort();
  const pool = poolCfg('app', [port, 2], { healthCheck: httpCheck({ type: 'tcp', intervalMs: 30, timeoutMs: 25, fall: 1 }), passive: passive({ maxFailures: 1, ejectForMs: 60_000 }) });
  const h = harness(t, lbConfig(pool));
  await until(() => h.rec('app', 'b1').health === 'down', 1000, 'b1 down by checks');
  h.monitor.failure('app', 'b2', 'reset');
  h.apply(lbConfig({ ...pool, healthCheck: undefined, passive: undefined }));
  t.equal(h.rec('app', 'b1').health, 'up');
  t.equal(h.rec('app', 'b2').health, 'up');
  t.equal(h.rec('app', 'b2').ejectedUntil, undefined);
  t.same(
    h.changes.slice(-2).map((c) => [c.backend, c.health, c.why]),
    [
      ['b1', 'up', 'health check removed'],
      ['b2', 'up', 'passive checks removed'],
    ],
  );
});

t.test('stop: clears every timer and aborts in-flight checks', async (t) => {
  const bh = await blackhole(t);
  const h = harness(
    t,
    lbConfig(poolCfg('app', [bh.port, bh.port, bh.port], { healthCheck: httpCheck({ intervalMs: 60, timeoutMs: 5_000 }), passive: passive({ maxFailures: 1, ejectForMs: 60_000 }) })),
  );
  await until(() => bh.accepted() >= 1, 1000, 'a check in flight');
  h.monitor.failure('app', 'b1', 'reset');
  h.monitor.stop();
  const timers = (h.monitor as unknown as { timers: Timers }).timers;
  t.equal(timers.size, 0, 'no timers left');
  const n = h.changes.length;
  h.monitor.failure('app', 'b2', 'reset');
  t.equal(h.changes.length, n, 'inert after stop');
});

t.test('stop: a process whose monitor is stopped exits', async (t) => {
  const bh = await blackhole(t);
  const monitorUrl = pathToFileURL(path.join(here, '../src/health/monitor.js')).href;
  const stateUrl = pathToFileURL(path.join(here, '../src/daemon/state.js')).href;
  const config = lbConfig(
    poolCfg('app', [bh.port, bh.port], { healthCheck: httpCheck({ intervalMs: 10_000, timeoutMs: 10_000 }), passive: passive({ maxFailures: 1, ejectForMs: 60_000 }), slowStartMs: 60_000 }),
  );
  const script = `
    import { HealthMonitor } from ${JSON.stringify(monitorUrl)};
    import { StateStore } from ${JSON.stringify(stateUrl)};
    const config = ${JSON.stringify(config)};
    const noop = () => {};
    const logger = { debug: noop, info: noop, warn: noop, error: noop };
    const state = new StateStore();
    const m = new HealthMonitor(state, noop, () => logger);
    state.apply(config);
    m.apply(config);
    m.failure('app', 'b2', 'reset');
    setTimeout(() => { m.stop(); process.stdout.write('stopped\\n'); }, 200);
  `;
  const t0 = Date.now();
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  clearTimeout(killer);
  t.equal(code, 0, 'exited by itself');
  t.equal(out, 'stopped\n');
  t.ok(Date.now() - t0 < 4_000, `exited in ${Date.now() - t0}ms`);
  t.ok(bh.accepted() >= 1, 'a check was in flight when it stopped');
});

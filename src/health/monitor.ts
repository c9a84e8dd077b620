// Health of every backend, decided once, in the primary: active checks (`[pools.NAME.health_check]`) and
// passive outlier ejection from the workers' failure reports (`[pools.NAME.passive]`). The primary pushes
// each decision to every worker through `changed`.
//
// Decision (active checks; HAProxy `inter`/`rise`/`fall` semantics, see machine.ts):
// - A backend of a pool with active checks starts `unchecked` and receives traffic. The first passing
//   check makes it `up` at once; `fall` consecutive failures make it `down` (from `unchecked` or `up`);
//   `rise` consecutive passes make a `down` one `up`. A backend dead at start is therefore out of traffic
//   within `interval` x `fall` (+ one `timeout`).
// - Without active checks a backend is `up` (StateStore.apply sets that).
// - Checks run one at a time per backend on the grid `offset + k * interval`; the offsets spread a pool's
//   backends evenly over the interval (HAProxy `spread-checks`). A check that overruns skips the missed
//   slots. Each result is stored in `record.lastCheck`.
//
// Decision (passive; Envoy outlier detection `consecutive_5xx`/`base_ejection_time`, HAProxy `observe`):
// - Workers report each failed request/connection (connect, timeout, reset, protocol; 5xx only with
//   `on_5xx`) and `recovered` after a success. Reports from all workers add up in `record.passiveStreak`;
//   `recovered` resets it. At `max_failures` the backend is ejected for `eject_for`: health `down`,
//   reason "passive: N consecutive failures (last: reset)". Reports during an ejection are ignored.
// - When the ejection ends the backend gets the active verdict back (`up` without active checks).
//   Active checks keep running while it is ejected, but their passes do not re-admit it early.
// - consecutive_5xx, consecutive_gateway_errors, success_rate, max_ejection_percent and the growing
//   ejection time follow Envoy's outlier detection; their rules are in outlier.ts. Workers report 5xx
//   responses (with their status) when any of these or on_5xx is set, and each backend's attempts and
//   successes every second for success_rate.
//
// Slow start (`slow_start`, HAProxy `slowstart`): when a backend goes from `down` to serving,
// `record.upSince` is set; StateStore.control() ramps the weight from it, and `changed(record,
// 'slow start')` is called SLOW_START_STEPS times over the window so that workers get the ramped weight;
// the last call clears `upSince` (full weight). Going `down` ends the ramp.
//
// Maintenance (`lb maint`, record.admin = 'maint'; HAProxy `set server state maint`): no active checks are
// scheduled or run for the backend while it is in maintenance (an in-flight one is aborted). Leaving it
// (`maint(.., false)`) starts over as a new backend does: health `unchecked` with a check at once (with
// active checks), `up` without; an ejection still running keeps it `down` until it ends.
//
// Every change of `record.health` calls `changed(record, why)` exactly once, with the reason, and sets
// `record.reason` to it.
//
// Runtime membership (src/daemon/membership.ts) calls `apply` again with the new backend list: an added
// backend is a new entry (with active checks it waits `down`, StateStore.applyPool, and is checked at once;
// the first pass makes it `up`, with slow start when configured; without checks it is `up` at once and slow
// start ramps it from its addition), a removed one stops like a backend removed by reload.
//
// Reload (`apply` again): backends that survive (same pool and name) keep their state, counters, streaks
// and history; their checks keep their schedule unless the check config changed (then they restart on a
// new offset). Removed backends stop; new ones start. `stop()` clears every timer and aborts in-flight
// checks.

import type { Address, BackendConfig, HealthCheckConfig, LbConfig, PassiveConfig, PoolConfig } from '../../config/model.js';
import type { CheckResult, BackendRecord, StateStore } from '../daemon/state.js';
import type { HealthState } from '../dataplane/backend.js';
import type { FailureReason } from '../dataplane/events.js';
import type { Logger } from '../log.js';
import {
  activeStep,
  checkOffset,
  countsAsFailure,
  effectiveHealth,
  ejectionReason,
  initialActive,
  nextSlot,
  SLOW_START_STEPS,
  type ActiveState,
} from './machine.js';
import { probe } from './probe.js';
import { loadBackendTls, type BackendTls } from '../dataplane/backend-tls.js';
import { decayedCount, ejectionCap, ejectionTime, isGatewayError, successRateOutliers } from './outlier.js';
import { Timers } from './timers.js';

interface Entry {
  pool: string;
  backend: string;
  key: string;
  address: Address;
  check: HealthCheckConfig | undefined;
  /** JSON of `check`; '' without active checks. A change restarts the check schedule. */
  checkSig: string;
  passive: PassiveConfig | undefined;
  /** The pool's TLS to backends: checks do the handshake (a certificate that does not verify fails them). */
  tls: BackendTls | undefined;
  active: ActiveState;
  /** Reason of the last active verdict change, restored when an ejection ends on a `down` verdict. */
  activeWhy: string | undefined;
  passCount: number;
  failCount: number;
  inflight: AbortController | undefined;
  /** Bumped whenever the check schedule restarts or stops: continuations of older checks drop out. */
  gen: number;
  /** consecutive_5xx and consecutive_gateway_errors runs, summed over workers. */
  streak5xx: number;
  streakGateway: number;
  /** Ejections so far (decayed: outlier.ts decayedCount) and when the last one ended (Date.now()). */
  ejections: number;
  readmittedAt: number;
  /** success_rate: attempts and successes reported in the current interval. */
  srTotal: number;
  srOk: number;
}

/** A fresh entry, checks not yet scheduled (`check` unset: `apply` sets it and starts them). */
function newEntry(pool: PoolConfig, b: BackendConfig, key: string): Entry {
  return {
    pool: pool.name,
    backend: b.name,
    key,
    address: b.address,
    check: undefined,
    checkSig: '',
    passive: pool.passive,
    tls: undefined,
    active: initialActive(!!pool.healthCheck),
    activeWhy: undefined,
    passCount: 0,
    failCount: 0,
    inflight: undefined,
    gen: 0,
    streak5xx: 0,
    streakGateway: 0,
    ejections: 0,
    readmittedAt: 0,
    srTotal: 0,
    srOk: 0,
  };
}

export interface CheckCount {
  pool: string;
  backend: string;
  result: 'pass' | 'fail';
  value: number;
}

export class HealthMonitor {
  private readonly entries = new Map<string, Entry>();
  /** Each pool's TLS context (re-read on apply; kept when its files and settings did not change). */
  private readonly tls = new Map<string, BackendTls>();
  private readonly timers: Timers;
  private stopped = false;
  /** Pools judged by success rate, with their interval. */
  private readonly srInterval = new Map<string, number>();
  /** Ejections by entry key, for /metrics. */
  private readonly ejectionCount = new Map<string, number>();

  constructor(
    private readonly state: StateStore,
    private readonly changed: (r: BackendRecord, why: string) => void,
    private readonly logger: () => Logger,
  ) {
    this.timers = new Timers((key, err) => {
      this.logger().error({ timer: key, err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'health monitor: timer callback failed');
    });
  }

  /** Takes a config (at start and after each reload), after StateStore.apply has taken it. */
  apply(config: LbConfig): void {
    if (this.stopped) return;
    const seen = new Set<string>();
    for (const pool of Object.values(config.pools)) {
      const hc = pool.healthCheck;
      const sig = hc ? JSON.stringify(hc) : '';
      const tls = this.poolTls(pool);
      pool.backends.forEach((b, index) => {
        const key = JSON.stringify([pool.name, b.name]);
        seen.add(key);
        const offset = hc ? checkOffset(index, pool.backends.length, hc.intervalMs) : 0;
        let e = this.entries.get(key);
        if (!e) {
          e = newEntry(pool, b, key);
          e.check = hc;
          e.checkSig = sig;
          e.tls = tls;
          this.entries.set(key, e);
          // A runtime backend (membership.ts) waits `down` for its first check: that one runs at once.
          if (hc) this.scheduleCheck(e, Date.now() + (b.source !== undefined ? 0 : offset));
          if (this.state.get(pool.name, b.name)?.upSince !== undefined) this.scheduleRamp(e);
          return;
        }
        e.address = b.address;
        e.passive = pool.passive;
        e.tls = tls;
        if (e.checkSig !== sig) {
          this.stopChecks(e);
          e.check = hc;
          e.checkSig = sig;
          if (hc) {
            this.scheduleCheck(e, Date.now() + offset);
          } else {
            // No more active checks: the backend is `up` unless ejected (StateStore.apply only lifts `unchecked`).
            e.active = initialActive(false);
            e.activeWhy = 'health check removed';
            this.settle(e, 'health check removed');
          }
        }
        const r = this.state.get(e.pool, e.backend);
        if (r?.ejectedUntil !== undefined && !e.passive) this.readmit(e, 'passive checks removed');
        if (r?.upSince !== undefined && !(pool.slowStartMs > 0)) this.rampStep(e);
      });
    }
    // success_rate: one judging timer per pool that has it.
    const judged = new Set<string>();
    for (const pool of Object.values(config.pools)) {
      const sr = pool.passive?.successRate;
      if (!sr) continue;
      judged.add(pool.name);
      const key = `${JSON.stringify(pool.name)}|success-rate`;
      if (this.srInterval.get(pool.name) !== sr.intervalMs || !this.timers.has(key)) {
        this.srInterval.set(pool.name, sr.intervalMs);
        this.scheduleJudging(pool.name, sr.intervalMs);
      }
    }
    for (const name of [...this.srInterval.keys()]) {
      if (judged.has(name)) continue;
      this.srInterval.delete(name);
      this.timers.clear(`${JSON.stringify(name)}|success-rate`);
    }
    for (const [key, e] of this.entries) {
      if (seen.has(key)) continue;
      this.stopChecks(e);
      this.timers.clear(`${key}|eject`);
      this.timers.clear(`${key}|ramp`);
      this.entries.delete(key);
    }
  }

  /**
   * The TLS context of `pool` for its checks. The files were checked just before this config was accepted;
   * one that cannot be read now keeps the previous context (logged).
   */
  private poolTls(pool: PoolConfig): BackendTls | undefined {
    if (!pool.tls) {
      this.tls.delete(pool.name);
      return undefined;
    }
    try {
      const t = loadBackendTls(pool.name, pool.tls, this.tls.get(pool.name));
      this.tls.set(pool.name, t);
      return t;
    } catch (err) {
      this.logger().error({ pool: pool.name, err: (err as Error).message }, 'health checks: cannot load the pool\'s TLS files; keeping the previous ones');
      return this.tls.get(pool.name);
    }
  }

  /**
   * Forgets one backend (its checks stop, its timers clear): a runtime backend replaced at reload by a
   * config backend of the same name, which then starts as a new backend does at the next `apply`.
   */
  forget(pool: string, backend: string): void {
    const key = JSON.stringify([pool, backend]);
    const e = this.entries.get(key);
    if (!e) return;
    this.stopChecks(e);
    this.timers.clear(`${key}|eject`);
    this.timers.clear(`${key}|ramp`);
    this.entries.delete(key);
  }

  /** A worker saw `backend` fail a request or connection; `status` for a '5xx' failure. */
  failure(pool: string, backend: string, reason: FailureReason, status?: number): void {
    if (this.stopped) return;
    const r = this.state.get(pool, backend);
    const e = r && this.entry(pool, backend);
    const p = e?.passive;
    if (!e || !r || !p) return;
    if (r.ejectedUntil !== undefined) return;
    let why: string | undefined;
    if (countsAsFailure(reason, p.on5xx)) {
      r.passiveStreak++;
      this.logger().debug({ pool, backend, reason, streak: r.passiveStreak }, 'passive: failure reported');
      if (r.passiveStreak >= p.maxFailures) why = ejectionReason(r.passiveStreak, reason);
    }
    const last = status !== undefined ? String(status) : reason;
    if (p.consecutive5xx > 0) {
      e.streak5xx++;
      if (e.streak5xx >= p.consecutive5xx) why ??= `passive: ${e.streak5xx} consecutive 5xx or failures (last: ${last})`;
    }
    if (p.consecutiveGatewayErrors > 0) {
      if (reason !== '5xx' || isGatewayError(status)) {
        e.streakGateway++;
        if (e.streakGateway >= p.consecutiveGatewayErrors) why ??= `passive: ${e.streakGateway} consecutive gateway errors (last: ${last})`;
      } else {
        e.streakGateway = 0;
      }
    }
    if (why !== undefined) this.eject(e, r, why);
  }

  /** A worker's attempt counts since its last report (success_rate); [backend, total, ok]. */
  outcomes(pool: string, counts: ReadonlyArray<readonly [string, number, number]>): void {
    if (this.stopped || !this.srInterval.has(pool)) return;
    for (const [backend, total, ok] of counts) {
      const e = this.entries.get(JSON.stringify([pool, backend]));
      if (!e || typeof total !== 'number' || typeof ok !== 'number') continue;
      e.srTotal += total;
      e.srOk += ok;
    }
  }

  /** A worker saw `backend` succeed after a failure: the consecutive-failure streak starts over. */
  recovered(pool: string, backend: string): void {
    if (this.stopped) return;
    const r = this.state.get(pool, backend);
    const e = this.entries.get(JSON.stringify([pool, backend]));
    if (e) e.streak5xx = e.streakGateway = 0;
    if (!r || r.ejectedUntil !== undefined || r.passiveStreak === 0) return;
    this.logger().debug({ pool, backend, streak: r.passiveStreak }, 'passive: recovered');
    r.passiveStreak = 0;
  }

  /**
   * Runs one active check of `backend` now and feeds its result into the state machine, as the scheduler
   * does. Resolves with the result; undefined when the backend has no active check, a check of it is
   * already in flight, or the check was aborted (reload, stop) and its result discarded.
   */
  async checkOnce(pool: string, backend: string): Promise<CheckResult | undefined> {
    const e = this.entries.get(JSON.stringify([pool, backend]));
    if (this.stopped || !e || !e.check || e.inflight || this.inMaint(e)) return undefined;
    const check = e.check;
    const gen = e.gen;
    const ac = new AbortController();
    e.inflight = ac;
    let res;
    try {
      res = await probe(e.address, check, ac.signal, e.tls);
    } finally {
      if (e.inflight === ac) e.inflight = undefined;
    }
    if (res.aborted || this.stopped || gen !== e.gen || this.entries.get(e.key) !== e) return undefined;
    const r = this.state.get(pool, backend);
    if (!r) return undefined;
    const result: CheckResult = { ok: res.ok, detail: res.detail, at: Date.now(), ms: res.ms };
    r.lastCheck = result;
    if (res.ok) e.passCount++;
    else e.failCount++;
    this.logger().debug({ pool, backend, ok: res.ok, detail: res.detail, ms: res.ms }, 'health check');
    const t = activeStep(e.active, res.ok, res.detail, check.rise, check.fall);
    if (t) {
      e.activeWhy = t.why;
      if (r.ejectedUntil !== undefined) {
        this.logger().info({ pool, backend, active: t.to, reason: t.why, ejectedUntil: new Date(r.ejectedUntil).toISOString() }, 'active check verdict changed; backend stays ejected');
      } else {
        // A runtime backend waiting `down` for its first pass (StateStore.applyPool) stays down on failures:
        // the reason says so.
        if (t.to === 'down' && r.health === 'down') r.reason = t.why;
        this.settle(e, t.why);
      }
    }
    return result;
  }

  /** The backend entered (`on`) or left maintenance; StateStore already holds the new admin state. */
  maint(pool: string, backend: string, on: boolean): void {
    if (this.stopped) return;
    const e = this.entry(pool, backend);
    if (!e) return;
    this.stopChecks(e);
    if (on) return;
    e.active = initialActive(!!e.check);
    e.activeWhy = undefined;
    if (e.check) this.scheduleCheck(e, Date.now());
    this.settle(e, 'maintenance over');
  }

  /** Ejections so far by backend (monotonic; lb_outlier_ejections_total). */
  ejectionCounts(): Array<{ pool: string; backend: string; value: number }> {
    const out: Array<{ pool: string; backend: string; value: number }> = [];
    for (const e of this.entries.values()) {
      const value = this.ejectionCount.get(e.key);
      if (value !== undefined) out.push({ pool: e.pool, backend: e.backend, value });
    }
    return out;
  }

  /** Active check results so far (monotonic; kept across reloads for surviving backends). */
  checkCounts(): CheckCount[] {
    const out: CheckCount[] = [];
    for (const e of this.entries.values()) {
      if (!e.check && e.passCount === 0 && e.failCount === 0) continue;
      out.push({ pool: e.pool, backend: e.backend, result: 'pass', value: e.passCount });
      out.push({ pool: e.pool, backend: e.backend, result: 'fail', value: e.failCount });
    }
    return out;
  }

  /** Clears every timer and aborts in-flight checks; the monitor does nothing afterwards. */
  stop(): void {
    this.stopped = true;
    this.timers.clearAll();
    for (const e of this.entries.values()) this.stopChecks(e);
  }

  // ---- internals ----------------------------------------------------------------------------------------

  /**
   * The entry of a backend StateStore knows. Workers may report failures before `apply` has run (the
   * primary applies the config to StateStore first, spawns workers, then calls `apply`): such an entry is
   * created here from StateStore's pool config, and `apply` then starts its checks.
   */
  private entry(pool: string, backend: string): Entry | undefined {
    const key = JSON.stringify([pool, backend]);
    const found = this.entries.get(key);
    if (found) return found;
    const p = this.state.pools[pool];
    const b = p?.backends.find((x) => x.name === backend);
    if (!p || !b) return undefined;
    const e = newEntry(p, b, key);
    this.entries.set(key, e);
    return e;
  }

  private inMaint(e: Entry): boolean {
    return this.state.get(e.pool, e.backend)?.admin === 'maint';
  }

  /** Schedules the next check; none while the backend is in maintenance (`maint` restarts them). */
  private scheduleCheck(e: Entry, at: number): void {
    if (this.inMaint(e)) return;
    const gen = e.gen;
    this.timers.set(`${e.key}|check`, at - Date.now(), async () => {
      await this.checkOnce(e.pool, e.backend);
      if (this.stopped || gen !== e.gen || this.entries.get(e.key) !== e || !e.check) return;
      this.scheduleCheck(e, nextSlot(at, e.check.intervalMs, Date.now()));
    });
  }

  private stopChecks(e: Entry): void {
    e.gen++;
    this.timers.clear(`${e.key}|check`);
    e.inflight?.abort();
    e.inflight = undefined;
  }

  /** Brings `record.health` to the effective verdict; a change goes through `transition`. */
  private settle(e: Entry, why: string): void {
    const r = this.state.get(e.pool, e.backend);
    if (!r) return;
    const to = effectiveHealth(e.active, r.ejectedUntil !== undefined);
    if (r.health !== to) this.transition(e, r, to, why);
  }

  private transition(e: Entry, r: BackendRecord, to: HealthState, why: string): void {
    const from = r.health;
    r.health = to;
    r.reason = why;
    r.changedAt = Date.now();
    if (to === 'down') {
      this.timers.clear(`${e.key}|ramp`);
      r.upSince = undefined;
    } else if (from === 'down' && (this.state.pools[e.pool]?.slowStartMs ?? 0) > 0) {
      r.upSince = Date.now();
      this.scheduleRamp(e);
    }
    this.notify(r, why);
  }

  private notify(r: BackendRecord, why: string): void {
    try {
      this.changed(r, why);
    } catch (err) {
      this.logger().error({ pool: r.pool, backend: r.name, reason: why, err: (err as Error).message }, 'health monitor: state change handler failed');
    }
  }

  /** success_rate: judges a pool's interval, then starts the next one. */
  private scheduleJudging(pool: string, intervalMs: number): void {
    this.timers.set(`${JSON.stringify(pool)}|success-rate`, intervalMs, () => {
      this.judge(pool);
      if (!this.stopped && this.srInterval.get(pool) === intervalMs) this.scheduleJudging(pool, intervalMs);
    });
  }

  private judge(pool: string): void {
    const cfg = this.state.pools[pool]?.passive?.successRate;
    const members = [...this.entries.values()].filter((e) => e.pool === pool);
    const samples = members
      .filter((e) => this.state.get(e.pool, e.backend)?.ejectedUntil === undefined)
      .map((e) => ({ key: e.key, total: e.srTotal, ok: e.srOk }));
    for (const e of members) e.srTotal = e.srOk = 0;
    if (!cfg) return;
    for (const v of successRateOutliers(samples, cfg)) {
      const e = this.entries.get(v.key);
      const r = e && this.state.get(e.pool, e.backend);
      if (!e || !r || r.ejectedUntil !== undefined) continue;
      const pct = (x: number): string => `${x.toFixed(1)}%`;
      this.eject(e, r, `passive: success rate ${pct(v.rate)} below ${pct(v.threshold)} (pool mean ${pct(v.mean)}, stdev ${pct(v.stdev)})`);
    }
  }

  /** Backends of `pool` ejected now. */
  private ejectedIn(pool: string): { ejected: number; size: number } {
    let ejected = 0;
    let size = 0;
    for (const e of this.entries.values()) {
      if (e.pool !== pool) continue;
      size++;
      if (this.state.get(e.pool, e.backend)?.ejectedUntil !== undefined) ejected++;
    }
    return { ejected, size };
  }

  private eject(e: Entry, r: BackendRecord, why: string): void {
    const p = e.passive;
    if (!p) return;
    const { ejected, size } = this.ejectedIn(e.pool);
    const cap = ejectionCap(size, p.maxEjectionPercent);
    if (ejected >= cap) {
      this.logger().debug({ pool: e.pool, backend: e.backend, reason: why, ejected, cap }, 'passive: ejection refused by max_ejection_percent');
      return;
    }
    const now = Date.now();
    e.ejections = decayedCount(e.ejections, now - e.readmittedAt, p.ejectForMs) + 1;
    const ejectFor = ejectionTime(p.ejectForMs, p.maxEjectForMs, e.ejections);
    e.streak5xx = e.streakGateway = 0;
    this.ejectionCount.set(e.key, (this.ejectionCount.get(e.key) ?? 0) + 1);
    r.ejectedUntil = now + ejectFor;
    this.timers.set(`${e.key}|eject`, ejectFor, () => this.readmit(e, 'ejection over'));
    if (r.health === 'down') {
      this.logger().info({ pool: e.pool, backend: e.backend, reason: why, ejectForMs: ejectFor, ejections: e.ejections }, 'backend ejected while already down');
      return;
    }
    this.transition(e, r, 'down', why);
  }

  private readmit(e: Entry, why: string): void {
    this.timers.clear(`${e.key}|eject`);
    const r = this.state.get(e.pool, e.backend);
    if (!r || r.ejectedUntil === undefined) return;
    r.ejectedUntil = undefined;
    r.passiveStreak = 0;
    e.readmittedAt = Date.now();
    if (e.active.health === 'down' && e.activeWhy !== undefined) r.reason = e.activeWhy;
    this.settle(e, why);
  }

  private scheduleRamp(e: Entry): void {
    const r = this.state.get(e.pool, e.backend);
    const window = this.state.pools[e.pool]?.slowStartMs ?? 0;
    if (!r || r.upSince === undefined) return;
    const left = r.upSince + window - Date.now();
    this.timers.set(`${e.key}|ramp`, Math.min(Math.max(1, Math.ceil(window / SLOW_START_STEPS)), Math.max(0, left)), () => this.rampStep(e));
  }

  /** One slow-start push: the ramped weight, or, at the end of the window, full weight (upSince cleared). */
  private rampStep(e: Entry): void {
    this.timers.clear(`${e.key}|ramp`);
    const r = this.state.get(e.pool, e.backend);
    if (!r || r.upSince === undefined) return;
    const window = this.state.pools[e.pool]?.slowStartMs ?? 0;
    if (window <= 0 || Date.now() - r.upSince >= window) {
      r.upSince = undefined;
      this.notify(r, 'slow start');
      return;
    }
    this.notify(r, 'slow start');
    this.scheduleRamp(e);
  }
}

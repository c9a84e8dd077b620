// The primary's authoritative record of every backend: configured weight, runtime overrides from the admin
// socket (drain, maint, weight; they survive reloads for backends that still exist, and restarts through
// daemon.state_file, see state-file.ts), health from active checks and passive ejection, and slow start.
// Workers receive only the effective decision (BackendControl).

import { dirname } from 'node:path';
import { loadAlgorithm } from '../../algorithms/registry.js';
import type { LbConfig, PoolConfig } from '../../config/model.js';
import type { AdminState, BackendControl, HealthState } from '../dataplane/backend.js';
import type { Controls } from './messages.js';
import type { SavedBackend } from './state-file.js';

export interface CheckResult {
  ok: boolean;
  /** What was seen: "200", "timeout after 1000ms", "ECONNREFUSED". */
  detail: string;
  at: number;
  ms: number;
}

export interface BackendRecord {
  pool: string;
  name: string;
  address: string;
  configWeight: number;
  /** Set by `lb weight`; survives reloads. */
  weightOverride?: number;
  admin: AdminState;
  health: HealthState;
  /** Why the health state is what it is ("check: 503", "passive: 5 consecutive failures"). */
  reason?: string;
  lastCheck?: CheckResult;
  /** Passive ejection: consecutive failures reported by workers, and the end of the current ejection. */
  passiveStreak: number;
  ejectedUntil?: number;
  /** When the backend last came up (slow start ramps from here). */
  upSince?: number;
  /** When the state users see (stateOf) last changed, or the record was created (ms since the epoch). */
  changedAt: number;
  /** Priority tier (lower preferred). */
  priority: number;
  /** Where a runtime backend came from ("admin", "dns"); undefined for the config file's. */
  source?: string;
  /** `lb remove --drain`: drained, and removed once nothing is in flight. */
  removing?: boolean;
}

export class StateStore {
  private records = new Map<string, Map<string, BackendRecord>>();
  pools: Record<string, PoolConfig> = {};

  /**
   * Takes a new config: records of backends that still exist (same pool and name) are kept with their
   * runtime state; new ones start `unchecked` (with active checks) or `up` (without).
   */
  apply(config: LbConfig): void {
    const next = new Map<string, Map<string, BackendRecord>>();
    for (const pool of Object.values(config.pools)) next.set(pool.name, this.poolRecords(pool));
    this.records = next;
    this.pools = config.pools;
  }

  /** Takes one pool's new backend list (runtime membership, membership.ts), as apply does for all. */
  applyPool(pool: PoolConfig): void {
    this.records.set(pool.name, this.poolRecords(pool));
    this.pools[pool.name] = pool;
  }

  /**
   * Records of `pool`'s backends: kept (same name) with their runtime state, or new. A new runtime backend
   * (BackendConfig.source) of a pool with active checks starts `down` until its first check passes, so that
   * an address nobody has checked gets no traffic; a config-file backend starts `unchecked` and serves.
   */
  private poolRecords(pool: PoolConfig): Map<string, BackendRecord> {
    const old = this.records.get(pool.name);
    const m = new Map<string, BackendRecord>();
    for (const b of pool.backends) {
      const prev = old?.get(b.name);
      if (prev) {
        prev.address = b.address.text;
        prev.configWeight = b.weight;
        prev.priority = b.priority;
        if (b.source !== undefined) prev.source = b.source;
        else delete prev.source;
        if (!pool.healthCheck && prev.health === 'unchecked') prev.health = 'up';
        m.set(b.name, prev);
        continue;
      }
      const waits = !!pool.healthCheck && b.source !== undefined;
      const now = Date.now();
      m.set(b.name, {
        pool: pool.name,
        name: b.name,
        address: b.address.text,
        configWeight: b.weight,
        admin: 'ready',
        health: waits ? 'down' : pool.healthCheck ? 'unchecked' : 'up',
        ...(waits ? { reason: 'added: no traffic until the first health check passes' } : {}),
        passiveStreak: 0,
        changedAt: now,
        priority: b.priority,
        ...(b.source !== undefined ? { source: b.source } : {}),
        // Slow start ramps an added backend that serves at once (no active checks) from now; one with checks
        // ramps from its first pass (the monitor's down -> up transition).
        ...(b.source !== undefined && !pool.healthCheck && pool.slowStartMs > 0 ? { upSince: now } : {}),
      });
    }
    return m;
  }

  /** Drops one backend's record: the next apply creates it afresh (a runtime backend replaced by the config's). */
  forget(pool: string, backend: string): void {
    this.records.get(pool)?.delete(backend);
  }

  get(pool: string, backend: string): BackendRecord | undefined {
    return this.records.get(pool)?.get(backend);
  }

  hasPool(pool: string): boolean {
    return this.records.has(pool);
  }

  all(): BackendRecord[] {
    const out: BackendRecord[] = [];
    for (const m of this.records.values()) out.push(...m.values());
    return out;
  }

  /** The weight before slow start: the runtime override if set, else the configured weight. */
  baseWeight(r: BackendRecord): number {
    return r.weightOverride ?? r.configWeight;
  }

  /**
   * What workers must do with this backend now. During slow start, `weight` is the ramped weight (used by
   * algorithms that do not hash a key) and `ramp`/`fullWeight` the fraction and the weight after the ramp
   * (used by those that do: they admit a share `ramp` of the backend's keys, see algorithms/ramp.ts).
   */
  control(r: BackendRecord, now = Date.now()): BackendControl {
    const full = this.baseWeight(r);
    const slow = this.pools[r.pool]?.slowStartMs ?? 0;
    if (slow > 0 && r.upSince !== undefined && full > 0) {
      const f = (now - r.upSince) / slow;
      if (f < 1) {
        const ramp = Math.max(0.05, f);
        return { admin: r.admin, health: r.health, weight: Math.round(full * ramp * 1000) / 1000, ramp, fullWeight: full };
      }
    }
    return { admin: r.admin, health: r.health, weight: full };
  }

  controls(now = Date.now()): Controls {
    const out: Controls = {};
    for (const pool of this.records.keys()) out[pool] = this.poolControls(pool, now);
    return out;
  }

  /** What workers must do with each backend of one pool now. */
  poolControls(pool: string, now = Date.now()): Record<string, BackendControl> {
    const p: Record<string, BackendControl> = {};
    for (const r of this.records.get(pool)?.values() ?? []) p[r.name] = this.control(r, now);
    return p;
  }
}

/** The state users see (docs/SPEC.md "Backend states"): admin drain and maint win over health. */
export function stateOf(r: BackendRecord): 'up' | 'down' | 'drain' | 'maint' | 'unchecked' {
  return r.admin === 'ready' ? r.health : r.admin;
}

/** What daemon.state_file keeps: every backend whose admin state or weight differs from its config. */
export function savedState(records: BackendRecord[]): SavedBackend[] {
  const out: SavedBackend[] = [];
  for (const r of records) {
    if ((r.admin === 'ready' && r.weightOverride === undefined) || r.removing) continue;
    out.push({
      pool: r.pool,
      backend: r.name,
      ...(r.admin !== 'ready' ? { admin: r.admin } : {}),
      ...(r.weightOverride !== undefined ? { weight: r.weightOverride } : {}),
    });
  }
  return out;
}

/**
 * Whether a pool's algorithm honours weights other than 0 (`usesWeights` of the Algorithm; weight 0 means
 * "no new traffic" for every algorithm). Module algorithms are imported once per process (ESM cache).
 */
export async function honoursWeights(pool: PoolConfig, configFile: string): Promise<boolean> {
  try {
    return (await loadAlgorithm(pool.algorithm, dirname(configFile))).usesWeights;
  } catch {
    return true; // the config was validated with this algorithm; refuse nothing we cannot check
  }
}

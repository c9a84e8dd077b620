// The primary's DNS discovery: one runner (discovery.ts) per pool with a `discovery` table, started with
// the daemon, restarted on reload for pools whose discovery settings changed (others keep running, with
// their last answer), stopped for removed pools and on stop. Counts each pool's events for /metrics.

import { isDeepStrictEqual } from 'node:util';
import type { DiscoveryConfig, LbConfig } from '../../config/model.js';
import { startDiscovery } from './discovery.js';
import type { ApplyMembers, DiscoveryEvent, DiscoveryHandle, DiscoveryHooks, Member } from './types.js';

export interface PoolDiscoveryCounts {
  ok: number;
  error: number;
  stale: number;
  changes: number;
  /** Members in the last set applied. */
  backends: number;
}

interface Running {
  cfg: DiscoveryConfig;
  handle: DiscoveryHandle;
}

export class DiscoveryManager {
  private readonly running = new Map<string, Running>();
  private readonly tallies = new Map<string, PoolDiscoveryCounts>();
  /** The set each pool's runner last applied: a restarted runner starts from it. */
  private readonly applied = new Map<string, Member[]>();

  constructor(
    private readonly apply: ApplyMembers,
    private readonly log: DiscoveryHooks['log'],
    private readonly start: typeof startDiscovery = startDiscovery,
  ) {}

  /** Brings the runners in line with `config` (at start and after each reload is committed). */
  update(config: LbConfig): void {
    for (const [pool, r] of this.running) {
      const next = config.pools[pool]?.discovery;
      if (next && isDeepStrictEqual(next, r.cfg)) continue;
      r.handle.stop();
      this.running.delete(pool);
      if (!next) {
        // The pool or its discovery is gone: so are its discovered members and its series.
        this.tallies.delete(pool);
        this.applied.delete(pool);
        this.apply(pool, []);
      }
    }
    for (const p of Object.values(config.pools)) {
      if (!p.discovery || this.running.has(p.name)) continue;
      this.running.set(p.name, { cfg: p.discovery, handle: this.start(p.name, p.discovery, this.hooks(p.name), this.applied.get(p.name) ?? []) });
    }
  }

  stop(): void {
    for (const r of this.running.values()) r.handle.stop();
    this.running.clear();
  }

  /** Per pool with discovery. */
  counts(): ReadonlyMap<string, PoolDiscoveryCounts> {
    return this.tallies;
  }

  private hooks(pool: string): DiscoveryHooks {
    const tally = this.tallies.get(pool) ?? { ok: 0, error: 0, stale: 0, changes: 0, backends: 0 };
    this.tallies.set(pool, tally);
    const field: Record<DiscoveryEvent, 'ok' | 'error' | 'stale' | 'changes'> = { refresh: 'ok', error: 'error', stale: 'stale', change: 'changes' };
    return {
      onMembers: (members: Member[]) => {
        tally.backends = members.length;
        this.applied.set(pool, members);
        this.apply(pool, members);
      },
      log: this.log,
      count: (event) => void tally[field[event]]++,
    };
  }
}

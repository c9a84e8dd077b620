// Runtime membership: backends added to and removed from a pool while lb runs, without a reload (HAProxy
// `add server` / `del server`, Envoy EDS). Lives in the primary; every change reaches the workers as one
// `members` IPC message per pool (messages.ts), which rebuilds only the pool's Picker: surviving backends keep
// their health, admin state, runtime weight, in-flight counts and pooled connections.
//
// Contracts:
// - Every backend of a pool has a source: "config" (the config file), "admin" (`lb add`), or whatever a
//   discovery module passes to setSource ("dns"). A name is unique in its pool across sources; the config
//   file wins a clash (a runtime backend of that name is dropped when a reload brings the config's, and a
//   runtime backend cannot take a config backend's name).
// - Order: a pool's backends are the config file's, in file order, then the runtime ones sorted by name
//   (UTF-16 code units, not locale): processes that are given the same members in any order build the same
//   Pickers, so hash placement agrees across lb instances (docs/high-availability.md).
// - Reload: runtime backends survive it in pools that still exist (merge), unless the new config defines a
//   backend of the same name in that pool; a pool removed by reload drops them.
// - Restart: "admin" members are kept in daemon.state_file (state-file.ts); other sources are not (a
//   discovery module finds its members again).

import type { Address, BackendConfig, LbConfig, PoolConfig } from '../../config/model.js';

/** One backend as a source sees it. */
export interface Member {
  name: string;
  address: Address;
  weight: number;
  priority: number;
  /** As a backend's max_connections; default 0 (no cap). */
  maxConnections?: number;
}

export const CONFIG_SOURCE = 'config';
export const ADMIN_SOURCE = 'admin';

/** A refused membership change; `code` is the admin error code (docs/SPEC.md "Admin socket protocol"). */
export class MembershipError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** What Membership needs from the primary. */
export interface MembershipHost {
  /** The config being served: the config file's, merged with the runtime backends (merge()). */
  readonly config: LbConfig;
  /**
   * `pool` has a new backend list (already in `config.pools[pool]`): apply it to the state store, the health
   * monitor, every worker and the metrics; `removed` left the pool.
   */
  poolChanged(pool: string, removed: string[]): void;
  /** A member a source asked for that was not taken (its name belongs to another source). */
  skipped(pool: string, source: string, name: string, why: string): void;
}

/** Backend names: no whitespace and no "/" (config/schema.ts BACKEND_NAME_PATTERN). */
const NAME = /^[^\s/]+$/;

export class Membership {
  /** Runtime backends (every source but "config"), by pool, then name. */
  private readonly runtime = new Map<string, Map<string, BackendConfig>>();

  constructor(private readonly host: MembershipHost) {}

  /**
   * Replaces the backends that came from `source` in `pool` with `members`, diffed by name: new names are
   * added, missing ones removed (retired: in-flight work finishes), and one whose address, weight or priority
   * changed is updated in place (its record, health and connections stay; a new address closes the old
   * address's idle connections). A member whose name the config file or another source already uses in
   * this pool is skipped (host.skipped). Returns the names added and removed. Throws MembershipError on a
   * bad argument (unknown pool, source "config", invalid member); nothing changes then.
   */
  setSource(pool: string, source: string, members: Member[]): { added: string[]; removed: string[] } {
    if (source === CONFIG_SOURCE || source === '') throw new MembershipError('INVALID_FIELD', `source ${JSON.stringify(source)} is reserved`);
    const p = this.pool(pool);
    const seen = new Set<string>();
    for (const m of members) {
      checkMember(m);
      if (seen.has(m.name)) throw new MembershipError('INVALID_FIELD', `member ${m.name} is listed twice`);
      seen.add(m.name);
    }
    const mine = this.runtime.get(pool) ?? new Map<string, BackendConfig>();
    const taken = new Set(p.backends.filter((b) => b.source !== source).map((b) => b.name));
    const next = new Map<string, BackendConfig>();
    for (const [name, b] of mine) if (b.source !== source) next.set(name, b);
    const added: string[] = [];
    let changed = false;
    for (const m of members) {
      if (taken.has(m.name)) {
        this.host.skipped(pool, source, m.name, `pool ${pool} already has a backend ${m.name} from ${p.backends.find((b) => b.name === m.name)?.source ?? CONFIG_SOURCE}`);
        continue;
      }
      const b = backendOf(m, source);
      const old = mine.get(m.name);
      if (!old) added.push(m.name);
      else if (old.address.text !== b.address.text || old.weight !== b.weight || old.priority !== b.priority) changed = true;
      next.set(m.name, b);
    }
    const removed = [...mine.values()].filter((b) => b.source === source && !next.has(b.name)).map((b) => b.name);
    if (added.length === 0 && removed.length === 0 && !changed) return { added, removed };
    this.commit(pool, next, removed);
    return { added, removed };
  }

  /** `lb add`: one backend from `source` (default "admin"). Throws MembershipError (UNKNOWN_POOL, BACKEND_EXISTS, ...). */
  add(pool: string, member: Member, source = ADMIN_SOURCE): void {
    const p = this.pool(pool);
    checkMember(member);
    const clash = p.backends.find((b) => b.name === member.name);
    if (clash) {
      throw new MembershipError('BACKEND_EXISTS', `pool ${pool} already has a backend ${member.name} (from ${clash.source ?? CONFIG_SOURCE}, ${clash.address.text})`);
    }
    const next = new Map(this.runtime.get(pool) ?? []);
    next.set(member.name, backendOf(member, source));
    this.commit(pool, next, []);
  }

  /**
   * `lb remove` (after any drain): takes a runtime backend out of `pool` at once. Throws MembershipError:
   * UNKNOWN_POOL, UNKNOWN_BACKEND, or NOT_RUNTIME for a backend of the config file (remove it there and
   * reload) or of a source other than `source` when one is given.
   */
  remove(pool: string, name: string, source?: string): void {
    this.removable(pool, name, source);
    const next = new Map(this.runtime.get(pool)!);
    next.delete(name);
    this.commit(pool, next, [name]);
  }

  /** Throws as remove() would, changing nothing; returns the backend's source. */
  removable(pool: string, name: string, source?: string): string {
    const p = this.pool(pool);
    const b = p.backends.find((x) => x.name === name);
    if (!b) throw new MembershipError('UNKNOWN_BACKEND', `pool ${pool} has no backend ${name}`);
    if (b.source === undefined) {
      throw new MembershipError(
        'NOT_RUNTIME',
        `${pool}/${name} comes from the config file: remove it there and \`lb reload\` (or \`lb drain\`/\`lb maint\` it to take it out of traffic)`,
      );
    }
    if (source !== undefined && b.source !== source) {
      throw new MembershipError('NOT_RUNTIME', `${pool}/${name} comes from ${b.source}, not ${source}: it is managed there`);
    }
    return b.source;
  }

  /** The source of a backend: "config", "admin", "dns", ...; undefined when the pool has no such backend. */
  sourceOf(pool: string, name: string): string | undefined {
    const b = this.host.config.pools[pool]?.backends.find((x) => x.name === name);
    return b ? (b.source ?? CONFIG_SOURCE) : undefined;
  }

  /** Runtime backends of one source, for daemon.state_file. */
  list(source: string): Array<{ pool: string; backend: BackendConfig }> {
    const out: Array<{ pool: string; backend: BackendConfig }> = [];
    for (const [pool, m] of this.runtime) for (const b of m.values()) if (b.source === source) out.push({ pool, backend: b });
    return out;
  }

  /**
   * `file` (a config as read from its file) with the runtime backends added to the pools that exist in it.
   * Pure: a reload prepares with this and takes it over with adopt(). `dropped` are the runtime backends
   * that do not survive (pool gone, or the file now defines the name).
   */
  merge(file: LbConfig): { config: LbConfig; dropped: Array<{ pool: string; name: string; source: string; why: string }> } {
    const pools: Record<string, PoolConfig> = { ...file.pools };
    const dropped: Array<{ pool: string; name: string; source: string; why: string }> = [];
    for (const [pool, m] of this.runtime) {
      const p = file.pools[pool];
      if (!p) {
        for (const b of m.values()) dropped.push({ pool, name: b.name, source: b.source!, why: 'the pool is gone from the config' });
        continue;
      }
      const names = new Set(p.backends.map((b) => b.name));
      const extra: BackendConfig[] = [];
      for (const b of m.values()) {
        if (names.has(b.name)) dropped.push({ pool, name: b.name, source: b.source!, why: 'the config now defines a backend of that name' });
        else extra.push(b);
      }
      if (extra.length > 0) pools[pool] = { ...p, backends: [...p.backends, ...sortByName(extra)] };
    }
    return { config: { ...file, pools }, dropped };
  }

  /** After a reload committed merge(file): forgets the runtime backends it dropped. */
  adopt(dropped: ReadonlyArray<{ pool: string; name: string }>): void {
    for (const d of dropped) {
      const m = this.runtime.get(d.pool);
      m?.delete(d.name);
      if (m?.size === 0) this.runtime.delete(d.pool);
    }
  }

  private pool(pool: string): PoolConfig {
    const p = this.host.config.pools[pool];
    if (!p) throw new MembershipError('UNKNOWN_POOL', `no pool ${pool}`);
    return p;
  }

  /** Makes `next` the runtime backends of `pool` and has the primary apply the new list. */
  private commit(pool: string, next: Map<string, BackendConfig>, removed: string[]): void {
    if (next.size > 0) this.runtime.set(pool, next);
    else this.runtime.delete(pool);
    const config = this.host.config;
    const p = config.pools[pool]!;
    const fromFile = p.backends.filter((b) => b.source === undefined);
    config.pools[pool] = { ...p, backends: [...fromFile, ...sortByName([...next.values()])] };
    this.host.poolChanged(pool, removed);
  }
}

function sortByName(list: BackendConfig[]): BackendConfig[] {
  return [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function backendOf(m: Member, source: string): BackendConfig {
  return { name: m.name, address: m.address, weight: m.weight, maxConnections: m.maxConnections ?? 0, priority: m.priority, source };
}

function checkMember(m: Member): void {
  if (typeof m.name !== 'string' || !NAME.test(m.name)) {
    throw new MembershipError('INVALID_NAME', `backend name ${JSON.stringify(m.name)} must be non-empty, without whitespace or "/"`);
  }
  if (!Number.isInteger(m.weight) || m.weight < 0 || m.weight > 1000) {
    throw new MembershipError('INVALID_FIELD', `weight must be an integer from 0 to 1000, got ${JSON.stringify(m.weight)}`);
  }
  if (!Number.isInteger(m.priority) || m.priority < 0 || m.priority > 65535) {
    throw new MembershipError('INVALID_FIELD', `priority must be an integer from 0 to 65535, got ${JSON.stringify(m.priority)}`);
  }
  if (!m.address || typeof m.address.host !== 'string' || !Number.isInteger(m.address.port) || m.address.port < 1 || m.address.port > 65535) {
    throw new MembershipError('INVALID_ADDRESS', `member ${m.name}: address must have a host and a port from 1 to 65535`);
  }
}

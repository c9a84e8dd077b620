// The data plane of one worker process: pools and listeners built from a validated config, changed on
// reload in two phases, prepare and commit (primary.ts runs them over every worker: all or nothing).
// Surviving backends keep their state records, connection pools and in-flight work; surviving listeners
// keep their sockets and connections. Fed backend decisions by the control plane.

import path from 'node:path';
import { loadAlgorithm } from '../../algorithms/registry.js';
import type { BackendConfig, LbConfig, ListenerConfig } from '../../config/model.js';
import type { Backend, BackendControl } from './backend.js';
import type { Controls } from '../daemon/messages.js';
import type { DataPlaneEvents } from './events.js';
import { HttpListener } from './http-listener.js';
import type { SplitOverrides } from './route-match.js';
import { ListenError, type Listener } from './listener.js';
import { BackendPool } from './pool.js';
import { TcpListener } from './tcp-listener.js';
import { buildTls } from './tls.js';

/** Per pool, per backend: in-flight requests/connections in this process. */
export type InflightReport = Record<string, Record<string, number>>;

/** A config prepared and not yet committed or aborted: everything the commit swaps in. */
interface Staged {
  generation: number;
  pools: Map<string, BackendPool>;
  listeners: Map<string, Listener>;
  /** Listeners bound for this config: closed again by abort. */
  opened: Listener[];
  /** Kept listeners' in-place updates (listener.ts prepareUpdate). */
  updates: Array<() => void>;
  /** Serving listeners that the new config does not keep: retired by commit. */
  dropped: Listener[];
}

export class DataPlane {
  pools = new Map<string, BackendPool>();
  private listeners = new Map<string, Listener>();
  /** Listeners replaced or removed by a reload, finishing their connections. */
  private retiring = new Set<Listener>();
  private staged: Staged | undefined;
  /** The config generation this process serves (primary.ts numbers them; 0 before the first). */
  generation = 0;
  /** Runtime split weights from the primary (`lb split`); routers built later start from them. */
  private splits: SplitOverrides = {};

  constructor(private readonly events: DataPlaneEvents) {}

  /**
   * First phase of a reload: builds the pools of `config` (sharing backend records by name with the serving
   * ones), checks kept listeners' new settings and certificates, and binds the new listeners, while the
   * serving generation carries on unchanged. Resolves with every problem found; with none, commit() swaps
   * the new generation in, else (or on the primary's word) abort() drops it and nothing has changed.
   *
   * A listener bound here accepts at once (the kernel queues, node:cluster's round-robin hands out):
   * connections that arrive before commit are served by the new generation's pools.
   */
  async prepare(config: LbConfig, generation: number): Promise<{ errors: Error[] }> {
    if (this.staged) this.abort();
    const errors: Error[] = [];
    const staged: Staged = { generation, pools: new Map(), listeners: new Map(), opened: [], updates: [], dropped: [] };
    this.staged = staged;

    const baseDir = path.dirname(config.file);
    for (const p of Object.values(config.pools)) {
      try {
        staged.pools.set(p.name, new BackendPool(p, await loadAlgorithm(p.algorithm, baseDir), this.pools.get(p.name)));
      } catch (err) {
        errors.push(new Error(`pool ${p.name}: ${(err as Error).message}`));
      }
    }
    if (errors.length > 0) return { errors };

    const byAddress = new Map<string, Listener>();
    for (const l of this.listeners.values()) byAddress.set(listenerKey(l.cfg), l);
    for (const cfg of Object.values(config.listeners)) {
      const kept = byAddress.get(listenerKey(cfg));
      if (kept && !kept.cfg.tls === !cfg.tls && kept.cfg.proxyProtocol === cfg.proxyProtocol && !kept.cfg.http2 === !cfg.http2) {
        try {
          staged.updates.push(kept.prepareUpdate(cfg, staged.pools, this.splits));
          byAddress.delete(listenerKey(cfg));
          staged.listeners.set(cfg.name, kept);
        } catch (err) {
          errors.push(tlsError(cfg, err as Error));
        }
        continue;
      }
      let l: Listener;
      try {
        const material = cfg.tls ? buildTls(cfg.tls) : undefined;
        l = cfg.protocol === 'http' ? new HttpListener(cfg, staged.pools, this.events, material, this.splits) : new TcpListener(cfg, staged.pools, this.events, material);
      } catch (err) {
        errors.push(tlsError(cfg, err as Error));
        continue;
      }
      try {
        await l.listen(config.daemon.accept);
        staged.opened.push(l);
        staged.listeners.set(cfg.name, l);
      } catch (err) {
        errors.push(new ListenError(cfg.name, cfg.listen.text, err as Error));
      }
    }
    staged.dropped = [...byAddress.values()];
    // The primary may have sent abort or another prepare while this one awaited a bind.
    if (this.staged !== staged) return { errors: [new Error(`generation ${generation} was aborted while it was prepared`), ...errors] };
    return { errors };
  }

  /** Second phase: the prepared generation serves; `controls` are the primary's decisions for it. False when none is prepared. */
  commit(generation: number, controls: Controls = {}): boolean {
    const staged = this.staged;
    if (!staged || staged.generation !== generation) return false;
    this.staged = undefined;
    for (const [name, pool] of staged.pools) pool.commit(controls[name]);
    for (const [name, old] of this.pools) if (!staged.pools.has(name)) old.close();
    this.pools = staged.pools;
    for (const update of staged.updates) update();
    for (const old of staged.dropped) this.retire(old);
    this.listeners = staged.listeners;
    this.generation = generation;
    return true;
  }

  /** Drops a prepared generation: listeners it bound stop accepting (connections they took finish). */
  abort(): void {
    const staged = this.staged;
    this.staged = undefined;
    for (const l of staged?.opened ?? []) this.retire(l);
  }

  /**
   * prepare, then commit what could be prepared (a worker's first config, or a respawned worker's): listeners
   * that cannot be bound are left out and reported, the rest serves.
   */
  async apply(config: LbConfig, generation: number, controls?: Controls): Promise<{ errors: Error[] }> {
    const { errors } = await this.prepare(config, generation);
    if (errors.every((e) => e instanceof ListenError)) this.commit(generation, controls);
    else this.abort();
    return { errors };
  }

  private retire(l: Listener): void {
    this.retiring.add(l);
    l.stop().then(() => this.retiring.delete(l));
  }

  /** Runtime split weights for every route (the whole set: routes left out take their config weights). */
  setSplits(splits: SplitOverrides): void {
    this.splits = splits;
    for (const l of this.listeners.values()) if (l instanceof HttpListener) l.applySplits(splits);
  }

  /** Applies the control plane's decision for one backend; false when the pool or backend is unknown. */
  control(pool: string, backend: string, c: BackendControl): boolean {
    // A pool only the staged generation has gets its controls with the commit.
    return this.pools.get(pool)?.control(backend, c) ?? false;
  }

  /**
   * Runtime membership of a serving pool (BackendPool.setMembers). Returns the backends that left it, or
   * undefined when the pool is unknown. A generation being prepared is brought up to date by the primary
   * after its commit (another `members` message). Throws, changing nothing, when the algorithm cannot
   * build a picker over the new list.
   */
  members(pool: string, backends: readonly BackendConfig[], controls: Record<string, BackendControl>): Backend[] | undefined {
    return this.pools.get(pool)?.setMembers(backends, controls);
  }

  inflight(): InflightReport {
    const out: InflightReport = {};
    for (const [name, p] of this.pools) {
      const r: Record<string, number> = (out[name] = {});
      for (const b of p.backends) r[b.name] = b.inflight;
    }
    return out;
  }

  connections(): number {
    let n = 0;
    for (const l of this.listeners.values()) n += l.connections;
    for (const l of this.retiring) n += l.connections;
    return n;
  }

  /**
   * Graceful stop: stop accepting everywhere, let open requests and connections finish for up to
   * `graceMs`, then cut what is left. Resolves true when everything finished in time.
   */
  async stop(graceMs: number): Promise<boolean> {
    this.abort();
    const all = [...this.listeners.values(), ...this.retiring];
    let timer: NodeJS.Timeout | undefined;
    const inTime = await Promise.race([
      Promise.all(all.map((l) => l.stop())).then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs))),
    ]);
    clearTimeout(timer);
    if (!inTime) for (const l of all) l.destroy();
    for (const p of this.pools.values()) p.close();
    return inTime;
  }

  /** Immediate stop: every connection is cut. */
  destroy(): void {
    for (const l of [...this.listeners.values(), ...this.retiring]) l.destroy();
  }
}

function tlsError(cfg: ListenerConfig, err: Error): Error {
  return new Error(`listener ${cfg.name} (${cfg.listen.text}): ${err.message}`);
}

function listenerKey(cfg: ListenerConfig): string {
  return `${cfg.protocol} ${cfg.listen.host} ${cfg.listen.port}`;
}

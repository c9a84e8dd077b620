// The data plane of one worker process: pools and listeners built from a validated config, changed in
// place on reload (surviving backends keep their state records, connection pools and in-flight work;
// surviving listeners keep their sockets and connections), fed backend decisions by the control plane.

import path from 'node:path';
import { loadAlgorithm } from '../../algorithms/registry.js';
import type { Algorithm } from '../../algorithms/types.js';
import type { LbConfig, ListenerConfig } from '../../config/model.js';
import type { BackendControl } from './backend.js';
import type { DataPlaneEvents } from './events.js';
import { HttpListener } from './http-listener.js';
import { ListenError, type Listener } from './listener.js';
import { BackendPool } from './pool.js';
import { TcpListener } from './tcp-listener.js';
import { buildTls } from './tls.js';

/** Per pool, per backend: in-flight requests/connections in this process. */
export type InflightReport = Record<string, Record<string, number>>;

export interface ApplyResult {
  /** Listeners that could not be opened (the rest of the config is applied). */
  listenErrors: ListenError[];
}

export class DataPlane {
  pools = new Map<string, BackendPool>();
  private listeners = new Map<string, Listener>();
  /** Listeners replaced or removed by a reload, finishing their connections. */
  private retiring = new Set<Listener>();

  constructor(private readonly events: DataPlaneEvents) {}

  /**
   * Applies a config: builds the new pools (reusing backend records by name), then opens new listeners and
   * updates kept ones before closing removed ones, so no connection is refused during the change.
   */
  async apply(config: LbConfig, controls?: Record<string, Record<string, BackendControl>>): Promise<ApplyResult> {
    const baseDir = path.dirname(config.file);
    const algos = new Map<string, Algorithm>();
    for (const p of Object.values(config.pools)) algos.set(p.name, await loadAlgorithm(p.algorithm, baseDir));

    const pools = new Map<string, BackendPool>();
    for (const p of Object.values(config.pools)) {
      pools.set(p.name, new BackendPool(p, algos.get(p.name)!, this.pools.get(p.name)));
    }
    for (const [name, old] of this.pools) if (!pools.has(name)) old.close();
    this.pools = pools;
    if (controls) {
      for (const [pool, backends] of Object.entries(controls)) {
        for (const [backend, c] of Object.entries(backends)) pools.get(pool)?.control(backend, c);
      }
    }

    const listenErrors: ListenError[] = [];
    const next = new Map<string, Listener>();
    const byAddress = new Map<string, Listener>();
    for (const l of this.listeners.values()) byAddress.set(listenerKey(l.cfg), l);
    for (const cfg of Object.values(config.listeners)) {
      const kept = byAddress.get(listenerKey(cfg));
      if (kept && !kept.cfg.tls === !cfg.tls) {
        try {
          kept.update(cfg, pools);
        } catch (err) {
          // New certificate files that cannot be used: the listener keeps serving the ones it has.
          listenErrors.push(tlsError(cfg, err as Error, 'keeps its previous certificates'));
        }
        byAddress.delete(listenerKey(cfg));
        next.set(cfg.name, kept);
        continue;
      }
      let material;
      try {
        material = cfg.tls ? buildTls(cfg.tls) : undefined;
      } catch (err) {
        listenErrors.push(tlsError(cfg, err as Error, 'not opened'));
        continue;
      }
      const l = cfg.protocol === 'http' ? new HttpListener(cfg, pools, this.events, material) : new TcpListener(cfg, pools, this.events, material);
      try {
        await l.listen(config.daemon.accept);
        next.set(cfg.name, l);
      } catch (err) {
        listenErrors.push(new ListenError(cfg.name, cfg.listen.text, err as Error));
      }
    }
    for (const old of byAddress.values()) this.retire(old);
    this.listeners = next;
    return { listenErrors };
  }

  private retire(l: Listener): void {
    this.retiring.add(l);
    l.stop().then(() => this.retiring.delete(l));
  }

  /** Applies the control plane's decision for one backend; false when the pool or backend is unknown. */
  control(pool: string, backend: string, c: BackendControl): boolean {
    return this.pools.get(pool)?.control(backend, c) ?? false;
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

function tlsError(cfg: ListenerConfig, err: Error, outcome: string): ListenError {
  const e = new ListenError(cfg.name, cfg.listen.text, err);
  e.message = `listener ${cfg.name} (${cfg.listen.text}): ${err.message}; ${outcome}`;
  return e;
}

function listenerKey(cfg: ListenerConfig): string {
  return `${cfg.protocol} ${cfg.listen.host} ${cfg.listen.port}`;
}

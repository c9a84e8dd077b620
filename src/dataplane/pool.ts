// A pool at runtime: its backends (state records kept across reloads), the algorithm's Picker over them,
// and selection with failover. The Picker is immutable in membership and weights; any such change builds a
// new one (see algorithms/types.ts).

import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { nextSpreadDraw, rampDraw } from '../../algorithms/ramp.js';
import type { Algorithm, Picker, PickContext } from '../../algorithms/types.js';
import type { HashKey, PoolConfig } from '../../config/model.js';
import { Backend, type BackendControl, type PoolLoad } from './backend.js';
import { loadBackendTls, type BackendTls } from './backend-tls.js';
import { QueueStats, RequestQueue } from './queue.js';
import { RetryBudget, RetryStats } from './retry-budget.js';

export class BackendPool {
  readonly name: string;
  config: PoolConfig;
  algorithm: Algorithm;
  backends: Backend[] = [];
  private byName = new Map<string, Backend>();
  private picker!: Picker<Backend>;
  /** The hash key to extract from a request, when the algorithm uses one. */
  hashKey: HashKey | undefined;
  /** Every backend's host is an IP address: connecting needs no name lookup. */
  readonly ipOnly: boolean;
  /** TLS to the backends (pools.NAME.tls): files read by the constructor, shared with `previous` when unchanged. */
  readonly tls: BackendTls | undefined;

  private readonly available = (b: Backend): boolean => b.available;
  /**
   * Requests in flight over this pool's backends, kept by Backend.begin/end (each backend points here once
   * this pool serves), for PickContext.inflightTotal: bounded-load hashing reads it in O(1); and the
   * Picker's inflightChanged hook, which begin/end call when it is set.
   */
  private readonly load: PoolLoad = { inflight: 0, changed: undefined, queue: undefined };
  /**
   * Slow start by key admission (algorithms/ramp.ts), for algorithms with usesKey: the number of backends
   * ramping (Backend.ramp < 1; 0 keeps pick() on its plain path), and the current request's draw.
   */
  private ramping = 0;
  private draw = 0;
  private readonly admitted = (b: Backend): boolean => b.available && (b.ramp >= 1 || this.draw < b.ramp);
  /** max_requests / max_queue: admission with a queue (queue.ts); undefined when neither is set. */
  readonly queue: RequestQueue | undefined;
  /** retry_budget (retry-budget.ts); undefined for none. */
  readonly retryBudget: RetryBudget | undefined;
  /** retry_on's statuses (http); undefined when none are retried, so the response path checks one field. */
  readonly retryStatuses: readonly number[] | undefined;
  /** Counters for /metrics, carried over from the pool this one replaces. */
  readonly queueStats: QueueStats;
  readonly retryStats: RetryStats;

  /** The queue of the pool this one replaces; its waiters move here at commit(). */
  private adopt: RequestQueue | undefined;

  /** What commit() changes in backends shared with the pool this one replaces. */
  private pending: Array<() => void> = [];

  /**
   * Builds the pool of a new config. With `previous` (the pool of the same name serving now), backends that
   * keep their name are shared with it, and nothing of `previous` or of a shared backend changes until
   * commit(): a reload that is rolled back leaves the serving pool as it was. Throws when the algorithm's
   * create() does.
   */
  constructor(config: PoolConfig, algorithm: Algorithm, previous?: BackendPool) {
    this.name = config.name;
    this.config = config;
    this.algorithm = algorithm;
    this.hashKey = algorithm.usesKey ? (config.hashKey ?? { kind: 'client-ip' }) : undefined;
    const tls = (this.tls = config.tls ? loadBackendTls(config.name, config.tls, previous?.tls) : undefined);
    const tlsChanged = previous !== undefined && previous.tls !== tls;
    this.queueStats = previous?.queueStats ?? new QueueStats();
    this.retryStats = previous?.retryStats ?? new RetryStats();
    this.queue = config.maxRequests > 0 || config.maxQueue > 0 ? new RequestQueue(this, this.queueStats) : undefined;
    this.load.queue = this.queue;
    const budget = config.retryBudget;
    this.retryBudget = budget ? new RetryBudget(budget.percent, budget.minRetries) : undefined;
    this.retryStatuses = config.retryOn.statuses.length > 0 ? config.retryOn.statuses : undefined;
    const countOutcomes = config.passive?.successRate !== undefined;
    for (const bc of config.backends) {
      let b = previous?.byName.get(bc.name);
      if (b) {
        const kept = b;
        const addressChanged = kept.address.text !== bc.address.text;
        // New TLS settings or files: idle kept-alive connections close, new ones use them (backend-tls.ts).
        const reset = addressChanged || tlsChanged || timeoutsChanged(previous!.config, config);
        this.pending.push(() => {
          kept.poolLoad = this.load;
          kept.tls = tls;
          kept.address = bc.address;
          kept.maxConnections = bc.maxConnections;
          kept.outcomes = countOutcomes ? (kept.outcomes ?? { total: 0, ok: 0 }) : undefined;
          if (reset) kept.resetUpstream();
        });
      } else {
        b = new Backend(bc);
        b.poolLoad = this.load;
        b.tls = tls;
        if (countOutcomes) b.outcomes = { total: 0, ok: 0 };
      }
      this.backends.push(b);
      this.byName.set(b.name, b);
    }
    if (previous) {
      for (const old of previous.backends) if (!this.byName.has(old.name)) this.pending.push(() => old.retire());
      this.adopt = previous.queue;
    }
    // Pickers read names, weights and in-flight counts, none of which commit() changes.
    this.setPicker(algorithm.create(this.backends, config.algorithmOptions));
    this.ipOnly = config.backends.every((bc) => isIP(bc.address.host) !== 0);
  }

  /**
   * Takes over from the pool passed as `previous`: shared backends take their new settings, dropped ones
   * retire, `controls` (the primary's decisions, by backend name) apply. The picker is rebuilt because a
   * control message handled between prepare and commit changed a shared backend's weight under it.
   */
  commit(controls: Record<string, BackendControl> = {}): void {
    for (const f of this.pending) f();
    this.pending = [];
    let inflight = 0;
    for (const b of this.backends) inflight += b.inflight;
    this.load.inflight = inflight;
    for (const [name, c] of Object.entries(controls)) this.byName.get(name)?.control(c, this.algorithm.usesKey);
    this.countRamping();
    try {
      this.setPicker(this.algorithm.create(this.backends, this.config.algorithmOptions));
    } catch {
      // create() succeeded over the same backends in the constructor; keep that picker.
    }
    // Requests waiting in the old pool's queue keep their place in this one's (or are sent or refused), once
    // the in-flight total above is right.
    const adopt = this.adopt;
    this.adopt = undefined;
    if (adopt) adopt.handOver(this.queue, this);
    this.queue?.freed();
  }

  /** Requests and connections in flight over this pool in this worker. */
  get inflight(): number {
    return this.load.inflight;
  }

  /** Some backend may take traffic (usable), whether or not it is at its max_connections. */
  anyUsable(): boolean {
    for (const b of this.backends) if (b.usable) return true;
    return false;
  }

  private setPicker(picker: Picker<Backend>): void {
    this.picker = picker;
    this.load.changed = picker.inflightChanged ? (b) => picker.inflightChanged!(b) : undefined;
  }

  private countRamping(): void {
    let n = 0;
    for (const b of this.backends) if (b.ramp < 1) n++;
    this.ramping = n;
  }

  get(name: string): Backend | undefined {
    return this.byName.get(name);
  }

  /** Applies the primary's decision for one backend; rebuilds the picker when the weight changed. */
  control(name: string, c: BackendControl): boolean {
    const b = this.byName.get(name);
    if (!b) return false;
    if (b.control(c, this.algorithm.usesKey)) this.setPicker(this.algorithm.create(this.backends, this.config.algorithmOptions));
    this.countRamping();
    this.queue?.freed();
    return true;
  }

  /**
   * First choice for a request. While a backend of a key-hashing pool ramps (slow start), a request whose
   * choice is that backend goes there only when its key's admission draw is below the backend's ramp,
   * else to its next choice (algorithms/ramp.ts); if no admitted backend is available, any available one.
   */
  pick(ctx: PickContext): Backend | undefined {
    const at = { key: ctx.key, inflightTotal: this.load.inflight };
    if (this.ramping === 0) return this.picker.pick(at, this.available);
    this.setDraw(ctx.key);
    return this.picker.pick(at, this.admitted) ?? this.picker.pick(at, this.available);
  }

  private setDraw(key: string | undefined): void {
    this.draw = key !== undefined ? rampDraw(key) : nextSpreadDraw(this.draw);
  }

  /**
   * An attempt sent to `b` at `startedAt` (performance.now()) ended, `b.end()` already called: tells the
   * Picker (Picker.done), if it wants to know.
   */
  done(b: Backend, startedAt: number, ok: boolean, status?: number): void {
    const o = b.outcomes;
    if (o !== undefined) {
      o.total++;
      if (ok) o.ok++;
    }
    const picker = this.picker;
    if (picker.done) picker.done(b, { latencyMs: performance.now() - startedAt, ok, ...(status ? { status } : {}) });
  }

  /**
   * A retry's choice: an available backend (Backend.available) not tried yet for this request; when every
   * available one was tried, any available one (a kept-alive connection closed under a request is worth
   * retrying on the same backend).
   */
  pickRetry(ctx: PickContext, tried: readonly Backend[]): Backend | undefined {
    const at = { key: ctx.key, inflightTotal: this.load.inflight };
    if (this.ramping > 0) {
      this.setDraw(ctx.key);
      const b = this.picker.pick(at, (b) => this.admitted(b) && !tried.includes(b));
      if (b) return b;
    }
    return this.picker.pick(at, (b) => b.available && !tried.includes(b)) ?? this.picker.pick(at, this.available);
  }

  /** Closes idle upstream connections of all backends (stop). */
  close(): void {
    this.queue?.shedAll('no_backend', `503 Service Unavailable: pool ${this.name} was removed`);
    for (const b of this.backends) b.retire();
  }
}

function timeoutsChanged(a: PoolConfig, b: PoolConfig): boolean {
  return (
    a.connectTimeoutMs !== b.connectTimeoutMs ||
    a.responseTimeoutMs !== b.responseTimeoutMs ||
    a.perTryTimeoutMs !== b.perTryTimeoutMs ||
    a.readTimeoutMs !== b.readTimeoutMs
  );
}

// A pool at runtime: its backends (state records kept across reloads), the algorithm's Picker over them,
// and selection with failover. The Picker is immutable in membership and weights; any such change builds a
// new one (see algorithms/types.ts).

import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { nextSpreadDraw, rampDraw } from '../../algorithms/ramp.js';
import type { Algorithm, Picker, PickContext } from '../../algorithms/types.js';
import type { BackendConfig, HashKey, PoolConfig } from '../../config/model.js';
import { Backend, type BackendControl, type PoolLoad } from './backend.js';
import { loadBackendTls, type BackendTls } from './backend-tls.js';
import { QueueStats, RequestQueue } from './queue.js';
import { RetryBudget, RetryStats } from './retry-budget.js';

/** One priority tier of a pool: its backends (in pool order) and the Picker over them. */
interface Tier {
  priority: number;
  backends: Backend[];
  picker: Picker<Backend>;
}

/** What selection runs on: the Picker in use, and with several priorities, every tier. */
interface Selection {
  picker: Picker<Backend>;
  /** Lowest priority first; undefined when every backend has the same priority (`picker` covers them all). */
  tiers: Tier[] | undefined;
  /** With tiers: the Picker of each backend's tier (Picker.done goes to the one that picked it). */
  pickerOf: Map<Backend, Picker<Backend>> | undefined;
}

export class BackendPool {
  readonly name: string;
  config: PoolConfig;
  algorithm: Algorithm;
  backends: Backend[] = [];
  private byName = new Map<string, Backend>();
  /** Each backend's priority as configured (parallel to `backends`; shared backends take theirs at commit). */
  private priorities: number[] = [];
  private picker!: Picker<Backend>;
  private tiers: Tier[] | undefined;
  private pickerOf: Map<Backend, Picker<Backend>> | undefined;
  /** The hash key to extract from a request, when the algorithm uses one. */
  hashKey: HashKey | undefined;
  /** Every backend's host is an IP address: connecting needs no name lookup. */
  ipOnly: boolean;
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
          kept.priority = bc.priority;
          if (reset) kept.resetUpstream();
        });
      } else {
        b = new Backend(bc);
        b.poolLoad = this.load;
        b.tls = tls;
        if (countOutcomes) b.outcomes = { total: 0, ok: 0 };
      }
      this.backends.push(b);
      this.priorities.push(bc.priority);
      this.byName.set(b.name, b);
    }
    if (previous) {
      for (const old of previous.backends) if (!this.byName.has(old.name)) this.pending.push(() => old.retire());
      this.adopt = previous.queue;
    }
    // Pickers read names, weights and in-flight counts, none of which commit() changes.
    this.use(this.select(this.backends, this.priorities));
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
      this.use(this.select(this.backends, this.priorities));
    } catch {
      // create() succeeded over the same backends in the constructor; keep that picker.
      this.pickTier();
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

  private countRamping(): void {
    let n = 0;
    for (const b of this.backends) if (b.ramp < 1) n++;
    this.ramping = n;
  }

  /**
   * Runtime membership (src/daemon/membership.ts): the pool's backends become `list`, in that order, without
   * a new pool. Backends that keep their name keep their record (in-flight count, connection pool, state);
   * a changed address closes the old address's idle connections; new ones start with `controls` (the
   * primary's decision for them); dropped ones retire (in-flight work finishes, then their idle connections
   * close). Only the Picker is rebuilt. Returns the retired backends. Throws, changing nothing, when the
   * algorithm's create() does.
   */
  setMembers(list: readonly BackendConfig[], controls: Record<string, BackendControl> = {}): Backend[] {
    const backends: Backend[] = [];
    const priorities: number[] = [];
    const fresh = new Set<Backend>();
    for (const bc of list) {
      let b = this.byName.get(bc.name);
      if (!b) {
        b = new Backend(bc);
        b.tls = this.tls;
        if (this.config.passive?.successRate !== undefined) b.outcomes = { total: 0, ok: 0 };
        const c = controls[bc.name];
        if (c) b.control(c, this.algorithm.usesKey);
        fresh.add(b);
      }
      backends.push(b);
      priorities.push(bc.priority);
    }
    // Built before anything changes: a create() that throws leaves the pool as it was.
    let selection = this.select(backends, priorities);
    const kept = new Set(backends);
    const removed = this.backends.filter((b) => !kept.has(b));
    for (const b of fresh) b.poolLoad = this.load;
    let reweighted = false;
    list.forEach((bc, i) => {
      const b = backends[i]!;
      if (fresh.has(b)) return;
      if (b.address.text !== bc.address.text) {
        b.address = bc.address;
        b.resetUpstream();
      }
      b.maxConnections = bc.maxConnections;
      b.priority = bc.priority;
      const c = controls[bc.name];
      if (c && b.control(c, this.algorithm.usesKey)) reweighted = true;
    });
    if (reweighted) selection = this.select(backends, priorities);
    this.backends = backends;
    this.priorities = priorities;
    this.byName = new Map(backends.map((b) => [b.name, b]));
    this.config = { ...this.config, backends: [...list] };
    this.ipOnly = list.every((bc) => isIP(bc.address.host) !== 0);
    this.use(selection);
    this.countRamping();
    for (const b of removed) {
      b.retire();
      // Its in-flight work still ends through b.end(), which must not lower the pool's total nor reach
      // this pool's Picker or queue.
      this.load.inflight -= b.inflight;
      b.poolLoad = { inflight: b.inflight, changed: undefined, queue: undefined };
    }
    // Queued requests may go to the new members.
    this.queue?.freed();
    return removed;
  }

  get(name: string): Backend | undefined {
    return this.byName.get(name);
  }

  /** Applies the primary's decision for one backend; rebuilds the picker when the weight changed. */
  control(name: string, c: BackendControl): boolean {
    const b = this.byName.get(name);
    if (!b) return false;
    if (b.control(c, this.algorithm.usesKey)) this.use(this.select(this.backends, this.priorities));
    else if (this.tiers) this.pickTier();
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
    const picker = this.pickerOf?.get(b) ?? this.picker;
    if (picker.done) picker.done(b, { latencyMs: performance.now() - startedAt, ok, ...(status ? { status } : {}) });
  }

  /**
   * A retry's choice: an available backend (Backend.available) not tried yet for this request; when every
   * available one was tried, any available one (a kept-alive connection closed under a request is worth
   * retrying on the same backend). Retries stay in the tier in use.
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

  /**
   * Builds the Picker(s) over `backends`. With one priority (the common case) that is one Picker over all of
   * them and selection costs nothing more than before tiers existed. With several, one Picker per tier; which
   * one serves is decided when a backend's state changes (pickTier), never per request.
   */
  private select(backends: Backend[], priorities: number[]): Selection {
    const opts = this.config.algorithmOptions;
    const first = priorities[0];
    if (priorities.every((p) => p === first)) return { picker: this.algorithm.create(backends, opts), tiers: undefined, pickerOf: undefined };
    const groups = new Map<number, Backend[]>();
    backends.forEach((b, i) => {
      const p = priorities[i]!;
      const g = groups.get(p);
      if (g) g.push(b);
      else groups.set(p, [b]);
    });
    const tiers: Tier[] = [...groups.keys()]
      .sort((x, y) => x - y)
      .map((priority) => ({ priority, backends: groups.get(priority)!, picker: this.algorithm.create(groups.get(priority)!, opts) }));
    const pickerOf = new Map<Backend, Picker<Backend>>();
    for (const t of tiers) for (const b of t.backends) pickerOf.set(b, t.picker);
    return { picker: tiers[0]!.picker, tiers, pickerOf };
  }

  /**
   * Serves with `s`. Backend.begin/end tell the Picker of the backend's tier about in-flight changes
   * (Picker.inflightChanged), when that Picker wants to know.
   */
  private use(s: Selection): void {
    this.picker = s.picker;
    this.tiers = s.tiers;
    this.pickerOf = s.pickerOf;
    const pickerOf = s.pickerOf;
    if (pickerOf === undefined) {
      const picker = s.picker;
      this.load.changed = picker.inflightChanged ? (b) => picker.inflightChanged!(b) : undefined;
    } else {
      this.load.changed = s.tiers!.some((t) => t.picker.inflightChanged) ? (b) => pickerOf.get(b)?.inflightChanged?.(b) : undefined;
    }
    this.pickTier();
  }

  /**
   * With tiers: the tier in use is the first (lowest priority) with a usable backend (health not down, admin
   * ready, weight > 0: Backend.usable), else the first. A tier whose backends are all at max_connections
   * stays in use (those requests get 503, as with one tier).
   */
  private pickTier(): void {
    const tiers = this.tiers;
    if (!tiers) return;
    for (const t of tiers) {
      if (t.backends.some((b) => b.usable)) {
        this.picker = t.picker;
        return;
      }
    }
    this.picker = tiers[0]!.picker;
  }
}

/** Settings the backend connections were made with (timeouts, protocol): changed, they are made again. */
function timeoutsChanged(a: PoolConfig, b: PoolConfig): boolean {
  return (
    a.connectTimeoutMs !== b.connectTimeoutMs ||
    a.responseTimeoutMs !== b.responseTimeoutMs ||
    a.perTryTimeoutMs !== b.perTryTimeoutMs ||
    a.readTimeoutMs !== b.readTimeoutMs ||
    a.protocol !== b.protocol ||
    a.h2MaxConnections !== b.h2MaxConnections
  );
}

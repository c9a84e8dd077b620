// Admission to a pool with a request cap and a bounded FIFO queue: `max_requests`, `max_queue`,
// `queue_timeout` (HAProxy `maxconn`, `maxqueue`, `timeout queue`; docs/SPEC.md "Circuit breaking").
//
// Contract:
// - A request is admitted at once when nobody is waiting, the pool's in-flight count (Backend.begin/end,
//   summed over the pool in this worker) is under max_requests (or there is none), and the picker finds an
//   available backend (usable and under its max_connections).
// - Otherwise it waits, in arrival order, unless max_queue requests already wait: then 503 at once
//   ("queue_full"). A pool with no usable backend at all (every one down, drained or weight 0) answers 503
//   at once, as HAProxy does when no server is up: there is nothing to wait for.
// - Waiters are dispatched in order as capacity frees: when an attempt ends (Backend.end), when a backend's
//   state changes, after a reload. The head is picked with its own hash key at that moment; a key whose
//   backend is full goes wherever the algorithm sends keys whose backend is unavailable (HAProxy keeps such
//   a request in the server's own queue instead; lb has one queue per pool).
// - A waiter older than queue_timeout gets 503 ("queue_timeout"), and is never dispatched later than that.
//   One timer per queue, armed for the head: with one timeout for all, the head always expires first.
// - A waiter whose client goes away leaves the queue (remove) and is dispatched nowhere.
//
// Counts are per worker: a cap of L for an instance with W workers is max_requests = L / W.

import type { Backend } from './backend.js';
import type { BackendPool } from './pool.js';
import { DURATION_BUCKETS } from '../metrics/names.js';

/** A request that may wait in a queue; ProxyCall implements it (the links cost no allocation per request). */
export interface Waiter {
  /** The hash key the pool picks with; undefined when the algorithm uses none. */
  readonly key: string | undefined;
  qPrev: Waiter | undefined;
  qNext: Waiter | undefined;
  /** performance.now() when it entered the queue. */
  queuedAt: number;
  /** The queue it waits in; set by the queue, cleared when it leaves. */
  queue: RequestQueue | undefined;
  /** Capacity for it: `b` is picked and not yet begun; the waiter sends to it now (through `pool`). */
  dispatch(pool: BackendPool, b: Backend): void;
  /** Refused: 503 with `why`. */
  shed(reason: ShedReason, why: string): void;
}

export type ShedReason = 'queue_full' | 'queue_timeout' | 'no_backend';

const NB = DURATION_BUCKETS.length;

/** What a queue counts for /metrics (plain numbers, kept across reloads with the pool's name). */
export class QueueStats {
  shedFull = 0;
  shedTimeout = 0;
  /** Per-bucket (not cumulative) counts of the time dispatched waiters spent queued; last slot +Inf. */
  readonly wait = new Float64Array(NB + 1);
  waitSum = 0;
  waitCount = 0;

  observeWait(ms: number): void {
    const sec = ms / 1000;
    this.waitSum += sec;
    this.waitCount++;
    let i = 0;
    while (i < NB && sec > DURATION_BUCKETS[i]!) i++;
    this.wait[i]!++;
  }
}

export class RequestQueue {
  private head: Waiter | undefined;
  private tail: Waiter | undefined;
  length = 0;
  private timer: NodeJS.Timeout | undefined;
  private scheduled = false;

  constructor(
    private readonly pool: BackendPool,
    readonly stats: QueueStats,
  ) {}

  private get maxRequests(): number {
    return this.pool.config.maxRequests;
  }

  /** Under max_requests (or none). */
  underCap(): boolean {
    const max = this.maxRequests;
    return max === 0 || this.pool.inflight < max;
  }

  /** A new request: dispatched, queued or shed (see the contract above). */
  enter(w: Waiter): void {
    const pool = this.pool;
    if (this.length === 0 && this.underCap()) {
      const b = pool.pick({ key: w.key });
      if (b) {
        w.dispatch(pool, b);
        return;
      }
    }
    if (!pool.anyUsable()) {
      w.shed('no_backend', `503 Service Unavailable: no usable backend in pool ${pool.name}`);
      return;
    }
    if (this.length >= pool.config.maxQueue) {
      this.stats.shedFull++;
      w.shed('queue_full', `503 Service Unavailable: pool ${pool.name} is at capacity and its queue is full`);
      return;
    }
    w.queuedAt = performance.now();
    w.queue = this;
    w.qNext = undefined;
    w.qPrev = this.tail;
    if (this.tail) this.tail.qNext = w;
    else this.head = w;
    this.tail = w;
    this.length++;
    if (!this.timer) this.arm();
  }

  /** Takes `w` out (its client went away); nothing is sent for it. */
  remove(w: Waiter): void {
    if (w.queue !== this) return;
    if (w.qPrev) w.qPrev.qNext = w.qNext;
    else this.head = w.qNext;
    if (w.qNext) w.qNext.qPrev = w.qPrev;
    else this.tail = w.qPrev;
    w.qPrev = w.qNext = undefined;
    w.queue = undefined;
    this.length--;
  }

  /**
   * Capacity may have freed (an attempt ended, a backend came back): waiters are dispatched in a microtask,
   * so that a retry decided by the code that ended the attempt takes the slot first.
   */
  freed(): void {
    if (this.length === 0 || this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(this.drain);
  }

  private readonly drain = (): void => {
    this.scheduled = false;
    const pool = this.pool;
    const timeout = pool.config.queueTimeoutMs;
    while (this.head !== undefined && this.underCap()) {
      const w = this.head;
      const waited = performance.now() - w.queuedAt;
      if (waited >= timeout) {
        // Its timer is late (a busy event loop): it is refused as the timer would have, never sent late.
        this.remove(w);
        this.stats.shedTimeout++;
        w.shed('queue_timeout', `503 Service Unavailable: waited ${timeout}ms in the queue of pool ${pool.name}`);
        continue;
      }
      const b = pool.pick({ key: w.key });
      if (!b) break;
      this.remove(w);
      this.stats.observeWait(waited);
      w.dispatch(pool, b);
    }
    if (this.head !== undefined && !pool.anyUsable()) {
      // Every backend went out of service while these waited: nothing will free for them.
      this.shedAll('no_backend', `503 Service Unavailable: no usable backend in pool ${pool.name}`);
    }
  };

  private arm(): void {
    const head = this.head;
    if (!head) {
      this.timer = undefined;
      return;
    }
    const left = head.queuedAt + this.pool.config.queueTimeoutMs - performance.now();
    this.timer = setTimeout(this.expire, Math.max(1, Math.ceil(left)));
  }

  private readonly expire = (): void => {
    const timeout = this.pool.config.queueTimeoutMs;
    const now = performance.now();
    while (this.head !== undefined && now - this.head.queuedAt >= timeout) {
      const w = this.head;
      this.remove(w);
      this.stats.shedTimeout++;
      w.shed('queue_timeout', `503 Service Unavailable: waited ${timeout}ms in the queue of pool ${this.pool.name}`);
    }
    this.arm();
  };

  /** Moves every waiter, in order, to `next` (the pool that replaces this one on reload). */
  handOver(next: RequestQueue | undefined, fallback: BackendPool): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.head !== undefined) {
      const w = this.head;
      this.remove(w);
      if (next) {
        // Keeps its place in line and its deadline.
        const at = w.queuedAt;
        next.enterQueued(w, at);
      } else {
        // The new pool has no queue: dispatched as a new request would be, or refused.
        const b = fallback.pick({ key: w.key });
        if (b) w.dispatch(fallback, b);
        else w.shed('no_backend', `503 Service Unavailable: no available backend in pool ${fallback.name}`);
      }
    }
    next?.freed();
  }

  private enterQueued(w: Waiter, at: number): void {
    this.enter(w);
    if (w.queue === this) w.queuedAt = at;
  }

  /** Every waiter gets 503 (pool removed, daemon stopping, no backend left). */
  shedAll(reason: ShedReason, why: string): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.head !== undefined) {
      const w = this.head;
      this.remove(w);
      w.shed(reason, why);
    }
  }
}

// A worker's side of rate limiting. Every bucket lives in the primary (src/daemon/rate-lease.ts); a worker
// holds, per key, a small lease of tokens taken from it over IPC and admits requests from the lease
// without asking anyone. When the lease is empty the request waits for one IPC round trip (the answer
// also serves every request of that key that arrived meanwhile).
//
// Lease size adapts per key: it starts at 1 token, doubles each time a lease is used up within LEASE_MS
// (a busy key), up to the burst shared over the workers (a busy worker must be able to take, per IPC round
// trip, what the bucket refills meanwhile: with a cap of a few ms of the rate, a round trip slowed by a
// loaded machine capped the admitted rate below the limit); a lease not
// used up within LEASE_MS is given back to the primary and the next one is half as big (an idle worker
// does not sit on tokens a busy one needs). Refused by the primary, a key is refused locally until the
// bucket has refilled the tokens asked for (the primary says when), so an over-limit key costs at most one
// IPC round trip per lease, not one per request.
//
// Failure: a primary that does not answer within ASK_TIMEOUT_MS admits the waiting requests (rate limiting
// never fails requests because of its own machinery) and the next request asks again.

import { createHash } from 'node:crypto';
import type { RateKey, RateLimitConfig } from '../../config/model.js';
import { requestKey, type KeyedRequest } from './request-key.js';

const LEASE_MS = 100;
const ASK_TIMEOUT_MS = 1000;
/** How long a timed-out ask's answer is still credited back when it comes. */
const LATE_MS = 60_000;
const SWEEP_MS = 50;
/** Keys longer than this are replaced by their SHA-256 (a 10 KB header value must not be a map key). */
const MAX_KEY_LENGTH = 128;

/** ok = admitted; otherwise refused for `retryMs` at least. */
export type Decision = (ok: boolean, retryMs: number) => void;

interface Entry {
  key: string;
  tokens: number;
  /** performance.now() after which unused tokens go back to the primary. */
  expires: number;
  deniedUntil: number;
  batch: number;
  /** id of the unanswered ask, 0 when none. */
  asking: number;
  askedAt: number;
  waiters: Decision[] | undefined;
}

export type Send = (m: { t: 'rl-take'; id: number; limit: string; key: string; want: number } | { t: 'rl-return'; limit: string; key: string; n: number }) => void;

export const ADMIT = 1;
export const DENY = 0;
export const PENDING = -1;

export class RateLimiter {
  private readonly entries = new Map<string, Entry>();
  /** Entries holding tokens or an unanswered ask: the sweep's only work. */
  private readonly active = new Set<Entry>();
  private maxBatch: number;
  /** Retry time of the last synchronous DENY. */
  retryMs = 0;
  /** The RateLimit-Limit and RateLimit-Policy values (draft-ietf-httpapi-ratelimit-headers-06). */
  readonly quota: number;
  readonly policy: string;

  constructor(
    readonly cfg: RateLimitConfig,
    workers: number,
    private readonly owner: RateLimiters,
  ) {
    this.maxBatch = Math.max(1, Math.floor(cfg.burst / workers));
    // The draft's quota units are whole seconds: the rate expressed over the nearest whole-second window.
    const w = Math.max(1, Math.round(cfg.perMs / 1000));
    this.quota = Math.max(1, Math.round((cfg.rate * w * 1000) / cfg.perMs));
    this.policy = `${this.quota};w=${w};burst=${cfg.burst}`;
  }

  get name(): string {
    return this.cfg.name;
  }

  /** The bucket key of a request: '' when it lacks the header, cookie or parameter (one shared bucket). */
  key(req: KeyedRequest, listener: string, route: string): string {
    const k = rateKey(this.cfg.key, req, listener, route) ?? '';
    return k.length > MAX_KEY_LENGTH ? createHash('sha256').update(k).digest('base64') : k;
  }

  /**
   * ADMIT or DENY at once (DENY sets `retryMs`), or PENDING: `cb` is called once the primary answers.
   */
  take(key: string, cb: Decision): number {
    const now = performance.now();
    const map = this.entries;
    let e = map.get(key);
    if (e === undefined) {
      if (map.size >= this.cfg.maxKeys) this.evict();
      e = { key, tokens: 0, expires: 0, deniedUntil: 0, batch: 1, asking: 0, askedAt: 0, waiters: undefined };
    } else map.delete(key);
    map.set(key, e);
    if (e.tokens > 0) {
      if (now < e.expires) {
        if (--e.tokens === 0) {
          if (e.asking === 0) this.active.delete(e);
          if (e.batch < this.maxBatch) e.batch = Math.min(this.maxBatch, e.batch * 2);
        }
        return ADMIT;
      }
      this.giveBack(e);
    }
    if (now < e.deniedUntil) {
      this.retryMs = e.deniedUntil - now;
      return DENY;
    }
    (e.waiters ??= []).push(cb);
    if (e.asking === 0) this.ask(e, now);
    return PENDING;
  }

  private ask(e: Entry, now: number): void {
    const id = this.owner.register(this, e);
    e.asking = id;
    e.askedAt = now;
    this.active.add(e);
    this.owner.send({ t: 'rl-take', id, limit: this.cfg.name, key: e.key, want: Math.min(this.maxBatch, Math.max(e.batch, e.waiters?.length ?? 1)) });
  }

  /** The primary's answer to an ask. */
  granted(e: Entry, granted: number, remaining: number, waitMs: number): void {
    const now = performance.now();
    // The bucket still holds more than a lease: leases this size fall behind, take bigger ones.
    if (remaining >= e.batch && e.batch < this.maxBatch) e.batch = Math.min(this.maxBatch, e.batch * 2);
    e.asking = 0;
    e.tokens += granted;
    e.expires = now + LEASE_MS;
    if (granted < 1 || waitMs > 0) e.deniedUntil = now + waitMs;
    const waiters = e.waiters;
    e.waiters = undefined;
    let served = 0;
    if (waiters) {
      // More requests waited than the lease holds: a busy key, whose next lease is bigger.
      if (waiters.length >= e.tokens && e.batch < this.maxBatch) e.batch = Math.min(this.maxBatch, e.batch * 2);
      while (served < waiters.length && e.tokens > 0) {
        e.tokens--;
        waiters[served++]!(true, 0);
      }
      if (served < waiters.length) {
        const rest = waiters.slice(served);
        if (waitMs > 0) for (const cb of rest) cb(false, waitMs);
        else {
          // The bucket had more than this lease: ask again for the requests still waiting.
          e.waiters = rest;
          this.ask(e, now);
          return;
        }
      }
    }
    if (e.tokens > 0) this.active.add(e);
    else this.active.delete(e);
  }

  /** Periodic: unused leases go back, asks the primary left unanswered admit their requests. */
  sweep(now: number): void {
    for (const e of this.active) {
      if (e.asking !== 0 && now - e.askedAt > ASK_TIMEOUT_MS) {
        this.owner.late(e.asking, this.cfg.name, e.key, now);
        e.asking = 0;
        const waiters = e.waiters ?? [];
        e.waiters = undefined;
        for (const cb of waiters) cb(true, 0);
      }
      if (e.tokens > 0 && now >= e.expires) {
        this.giveBack(e);
        e.batch = Math.max(1, e.batch >> 1);
      }
      if (e.tokens === 0 && e.asking === 0) this.active.delete(e);
    }
  }

  private giveBack(e: Entry): void {
    this.owner.send({ t: 'rl-return', limit: this.cfg.name, key: e.key, n: e.tokens });
    e.tokens = 0;
  }

  private evict(): void {
    const oldest = this.entries.values().next().value as Entry;
    this.entries.delete(oldest.key);
    if (oldest.tokens > 0) this.giveBack(oldest);
  }
}

/** A worker's rate limiters by name, and the IPC they share. */
export class RateLimiters {
  private byName = new Map<string, RateLimiter>();
  private readonly asks = new Map<number, [RateLimiter, Entry]>();
  /** Asks timed out and not yet answered, oldest first (see late()). */
  private readonly lateAsks = new Map<number, { limit: string; key: string; at: number }>();
  private nextId = 1;
  private timer: NodeJS.Timeout | undefined;

  /** Set by the worker: sends to the primary. */
  constructor(public send: Send) {}

  /**
   * The limiters of a new config (a worker's first, or a reload being prepared). A limit whose settings
   * did not change keeps its limiter (and the leases it holds); listeners built for the config take theirs
   * with get().
   */
  update(limits: Readonly<Record<string, RateLimitConfig>>, workers: number): void {
    const next = new Map<string, RateLimiter>();
    for (const cfg of Object.values(limits)) {
      const old = this.byName.get(cfg.name);
      next.set(cfg.name, old && JSON.stringify(old.cfg) === JSON.stringify(cfg) ? old : new RateLimiter(cfg, workers, this));
    }
    this.byName = next;
    if (next.size > 0 && !this.timer) {
      this.timer = setInterval(() => {
        const now = performance.now();
        for (const l of this.byName.values()) l.sweep(now);
      }, SWEEP_MS);
      this.timer.unref();
    }
  }

  get(name: string | undefined): RateLimiter | undefined {
    return name === undefined ? undefined : this.byName.get(name);
  }

  register(l: RateLimiter, e: Entry): number {
    const id = this.nextId++;
    this.asks.set(id, [l, e]);
    return id;
  }

  /**
   * An ask the worker stopped waiting for (its requests were let through): the primary may still answer
   * it, and the tokens it grants then are given back to the primary, not lost. Forgotten after LATE_MS.
   */
  late(id: number, limit: string, key: string, now: number): void {
    this.asks.delete(id);
    this.lateAsks.set(id, { limit, key, at: now });
    for (const [old, a] of this.lateAsks) {
      if (now - a.at < LATE_MS) break;
      this.lateAsks.delete(old);
    }
  }

  /** An `rl-grant` from the primary. */
  onGrant(id: number, granted: number, remaining: number, waitMs: number): void {
    const a = this.asks.get(id);
    if (!a) {
      // Answered after the ask timed out: the tokens go back to the primary's bucket.
      const l = this.lateAsks.get(id);
      if (l === undefined) return;
      this.lateAsks.delete(id);
      if (granted > 0) this.send({ t: 'rl-return', limit: l.limit, key: l.key, n: granted });
      return;
    }
    this.asks.delete(id);
    a[0].granted(a[1], granted, remaining, waitMs);
  }
}

/** A rate limit's key from a request (request-key.ts for the hash_key forms). */
export function rateKey(k: RateKey, req: KeyedRequest, listener: string, route: string): string | undefined {
  if (k.kind === 'route') return route;
  if (k.kind === 'listener') return listener;
  return requestKey(k, req);
}

/** The worker's limiters (one per process; worker.ts feeds it configs and the primary's grants). */
export const rateLimiters = new RateLimiters(() => {});

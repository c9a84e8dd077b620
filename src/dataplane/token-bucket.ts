// Token buckets by key, bounded in number. A bucket holds up to `burst` tokens and gains `rate` tokens per
// `perMs`; taking a token admits one request. The map is kept in least-recently-used order (a Map iterates
// in insertion order; a touched key is re-inserted at the end), so at `maxKeys` the bucket used longest ago
// is forgotten: that key starts again with a full bucket, as one never seen. A bucket idle long enough to
// refill completely is the same as a missing one, so forgetting it loses nothing.

import type { RateLimitConfig } from '../../config/model.js';

export interface Bucket {
  tokens: number;
  /** ms (performance.now of this process) of the last refill. */
  at: number;
}

export interface Take {
  granted: number;
  /** Whole tokens left after the take. */
  remaining: number;
  /**
   * ms until `want` tokens, or a quarter of the burst if less (at least one), are there again; 0 when all
   * were granted. The holder refuses requests that long without asking: several holders waiting at once
   * must not let the bucket fill up to `burst` meanwhile, or tokens are lost and the admitted rate falls
   * below the limit.
   */
  waitMs: number;
}

/** Tokens per ms. */
export function ratePerMs(c: Pick<RateLimitConfig, 'rate' | 'perMs'>): number {
  return c.rate / c.perMs;
}

/** The most tokens a refused holder waits for (see Take.waitMs). */
export function refillTarget(burst: number): number {
  return Math.max(1, Math.floor(burst / 4));
}

export class Buckets {
  private readonly map = new Map<string, Bucket>();
  perMs: number;

  constructor(
    public burst: number,
    rate: number,
    public maxKeys: number,
  ) {
    this.perMs = rate;
  }

  get size(): number {
    return this.map.size;
  }

  /** Takes up to `want` tokens of `key`'s bucket. */
  take(key: string, want: number, now: number): Take {
    const b = this.get(key, now);
    const granted = Math.min(want, Math.floor(b.tokens));
    b.tokens -= granted;
    const missing = (granted < want ? Math.min(want, refillTarget(this.burst)) : 0) - b.tokens;
    return { granted, remaining: Math.floor(b.tokens), waitMs: missing > 0 ? Math.ceil(missing / this.perMs) : 0 };
  }

  /** Gives back tokens taken and not used (capped at the bucket size). */
  give(key: string, n: number, now: number): void {
    const b = this.get(key, now);
    b.tokens = Math.min(this.burst, b.tokens + n);
  }

  /** Sets `key`'s bucket to `tokens` (capped at the bucket size) as of `at`; it refills from then on. */
  set(key: string, tokens: number, at: number): void {
    this.map.delete(key);
    if (this.map.size >= this.maxKeys) this.map.delete(this.map.keys().next().value as string);
    this.map.set(key, { tokens: Math.min(this.burst, Math.max(0, tokens)), at });
  }

  private get(key: string, now: number): Bucket {
    const map = this.map;
    let b = map.get(key);
    if (b === undefined) {
      if (map.size >= this.maxKeys) map.delete(map.keys().next().value as string);
      b = { tokens: this.burst, at: now };
    } else {
      map.delete(key);
      const t = b.tokens + (now - b.at) * this.perMs;
      b.tokens = t > this.burst ? this.burst : t;
      b.at = now;
    }
    map.set(key, b);
    return b;
  }
}

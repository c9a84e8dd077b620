// Global rate limits: token buckets in Redis shared by every lb instance that uses the same [redis].
//
// The primary of each instance takes tokens from Redis in batches (one atomic Lua script per batch, run
// with EVALSHA, EVAL when the server does not know it) and hands them on to its workers (rate-lease.ts),
// so a busy key costs one Redis round trip per batch, not per request. Tokens taken and not handed out
// within HOLD_MS are dropped (at most one batch per key). A key's batch starts at ~20 ms of the rate and
// doubles, up to half the burst, while Redis answers that the bucket holds more than was asked (one batch
// per round trip would fall behind the refill, and the bucket, once full, would lose tokens).
//
// Redis unreachable (no connection, or no answer within redis.timeout): requests are decided by a local
// bucket in this instance with the limit divided by the number of lb instances last seen alive in Redis
// (each instance writes a heartbeat every HEARTBEAT_MS), so the instances together stay near the limit.
// Redis never fails or stalls a request beyond one redis.timeout: an unanswered batch is decided locally.
// When Redis answers again, the shared buckets take over.

import { randomBytes } from 'node:crypto';
import type { RateLimitConfig, RedisConfig } from '../../config/model.js';
import { Buckets, ratePerMs, type Take } from '../dataplane/token-bucket.js';
import { RedisClient, type Reply } from '../redis/client.js';

/**
 * KEYS[1]: the bucket; ARGV: tokens per ms, burst, tokens wanted. Returns { granted, remaining, wait ms }
 * (wait: until `want` tokens or a quarter of the burst, as token-bucket.ts refillTarget).
 * Time is the server's (TIME), so instances with skewed clocks share one bucket correctly. Fractional
 * tokens are stored as strings: a Lua number handed to Redis as a reply is cut to an integer.
 */
export const TAKE_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(v[1])
local at = tonumber(v[2])
if tokens == nil or at == nil then
  tokens = burst
elseif now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
if at == nil or now > at then at = now end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
local wait = 0
if granted < want then wait = math.ceil((math.min(want, math.max(1, math.floor(burst / 4))) - tokens) / rate) end
return { granted, math.floor(tokens), wait }
`;

/** KEYS[1]: the instance set; ARGV: this instance, liveness ms. Returns how many instances are alive. */
export const HEARTBEAT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return redis.call('ZCARD', KEYS[1])
`;

const HEARTBEAT_MS = 1000;
const HOLD_MS = 1000;

interface Held {
  tokens: number;
  until: number;
  deniedUntil: number;
  remaining: number;
  asking: Array<() => void> | undefined;
  /** Tokens asked of Redis per round trip for this key (adapts: see take). */
  batch: number;
}

export class RedisLimits {
  readonly client: RedisClient;
  /** lb instances alive at the last heartbeat (>= 1): divides a limit while Redis is unreachable. */
  instances = 1;
  private readonly id = `${process.pid}-${randomBytes(6).toString('hex')}`;
  private readonly heartbeat: NodeJS.Timeout;

  constructor(
    readonly cfg: RedisConfig,
    private readonly onState: (up: boolean) => void,
  ) {
    this.client = new RedisClient(cfg.address.host, cfg.address.port, cfg.timeoutMs);
    this.client.onState = (up) => {
      if (up) this.beat();
      this.onState(up);
    };
    this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  private beat(): void {
    if (!this.client.up) return;
    this.client.eval(HEARTBEAT_SCRIPT, [`${this.cfg.prefix}instances`], [this.id, HEARTBEAT_MS * 3]).then(
      (n) => {
        if (typeof n === 'number' && n >= 1) this.instances = n;
      },
      () => {},
    );
  }

  close(): void {
    clearInterval(this.heartbeat);
    this.client.close();
  }
}

/** One global limit in this instance: Redis batches, a local fallback bucket. */
export class GlobalLimit {
  private readonly held = new Map<string, Held>();
  private fallback: Buckets;
  private fallbackShare = 1;
  /** Smallest and largest batch asked of Redis. */
  private batch: number;
  private maxBatch: number;

  constructor(
    private cfg: RateLimitConfig,
    private readonly redis: RedisLimits,
  ) {
    this.fallback = new Buckets(cfg.burst, ratePerMs(cfg), cfg.maxKeys);
    this.batch = batchSize(cfg, 1);
    this.maxBatch = Math.max(1, Math.floor(cfg.burst / 2));
  }

  update(cfg: RateLimitConfig): void {
    this.cfg = cfg;
    this.fallbackShare = 0;
    this.batch = batchSize(cfg, 1);
    this.maxBatch = Math.max(1, Math.floor(cfg.burst / 2));
  }

  /** Takes up to `want` tokens; calls back once, within one redis.timeout at most. */
  take(key: string, want: number, now: number, cb: (t: Take) => void): void {
    let h = this.held.get(key);
    if (h !== undefined && h.asking !== undefined) {
      h.asking.push(() => this.take(key, want, performance.now(), cb));
      return;
    }
    if (h !== undefined) {
      if (h.tokens > 0 && now < h.until) {
        const granted = Math.min(want, h.tokens);
        h.tokens -= granted;
        cb({ granted, remaining: h.remaining + h.tokens, waitMs: 0 });
        return;
      }
      if (now < h.deniedUntil) {
        cb({ granted: 0, remaining: 0, waitMs: Math.ceil(h.deniedUntil - now) });
        return;
      }
    }
    if (!this.redis.client.up) {
      cb(this.local(key, want, now));
      return;
    }
    if (h === undefined) {
      if (this.held.size >= this.cfg.maxKeys) this.held.delete(this.held.keys().next().value as string);
      h = { tokens: 0, until: 0, deniedUntil: 0, remaining: 0, asking: undefined, batch: this.batch };
      this.held.set(key, h);
    }
    const entry = h;
    entry.asking = [];
    const ask = Math.max(want, entry.batch);
    const c = this.cfg;
    this.redis.client.eval(TAKE_SCRIPT, [`${this.redis.cfg.prefix}rl:${c.name}:${key}`], [ratePerMs(c), c.burst, ask]).then(
      (r: Reply) => {
        const [granted, remaining, wait] = Array.isArray(r) ? (r as number[]) : [0, 0, 0];
        const t = performance.now();
        entry.tokens = (t < entry.until ? entry.tokens : 0) + granted!;
        entry.until = t + HOLD_MS;
        entry.remaining = remaining!;
        // The bucket had more than this batch: a batch per round trip falls behind the refill, so ask for more.
        if (granted === ask && remaining! >= ask) entry.batch = Math.min(this.maxBatch, entry.batch * 2);
        else if (granted! < ask) entry.batch = Math.max(this.batch, entry.batch >> 1);
        entry.deniedUntil = granted! < want ? t + wait! : 0;
        this.settle(entry, key, want, t, cb);
      },
      () => {
        const t = performance.now();
        this.settle(entry, key, want, t, cb, this.local(key, want, t));
      },
    );
  }

  /** Tokens a worker leased and did not use: held again for this instance's workers. */
  give(key: string, n: number, now: number): void {
    const h = this.held.get(key);
    if (h === undefined) return;
    h.tokens = (now < h.until ? h.tokens : 0) + n;
    h.until = now + HOLD_MS;
  }

  private settle(h: Held, key: string, want: number, now: number, cb: (t: Take) => void, local?: Take): void {
    const waiting = h.asking ?? [];
    h.asking = undefined;
    if (local) cb(local);
    else this.take(key, want, now, cb);
    for (const w of waiting) w();
  }

  /** The fallback: this instance's share of the limit. */
  private local(key: string, want: number, now: number): Take {
    const share = Math.max(1, this.redis.instances);
    if (share !== this.fallbackShare) {
      this.fallbackShare = share;
      this.fallback.burst = Math.max(1, Math.floor(this.cfg.burst / share));
      this.fallback.perMs = ratePerMs(this.cfg) / share;
      this.fallback.maxKeys = this.cfg.maxKeys;
    }
    return this.fallback.take(key, want, now);
  }
}

/**
 * Tokens per batch: small enough that a batch is at most ~20 ms of the rate and a fraction of the burst
 * (so `holders` taking batches at once do not empty the bucket for each other), at least 1.
 */
export function batchSize(cfg: RateLimitConfig, holders: number, windowMs = 20): number {
  return Math.max(1, Math.min(Math.floor(cfg.burst / (2 * holders)), Math.ceil(ratePerMs(cfg) * windowMs)));
}

// Global rate limits: token buckets in Redis shared by every lb instance that uses the same [redis].
//
// The primary of each instance takes tokens from Redis in batches (one atomic Lua script per batch, run
// with EVALSHA, EVAL when the server does not know it) and hands them on to its workers (rate-lease.ts),
// so a busy key costs one Redis round trip per batch, not per request. Tokens taken and not handed out
// within HOLD_MS are dropped (at most one batch per key). A key's batch starts at ~20 ms of the rate and
// doubles, up to half the burst, while Redis answers that the bucket holds more than was asked (one batch
// per round trip would fall behind the refill, and the bucket, once full, would lose tokens).
//
// Shared or degraded. An instance is "shared" after a command answered within redis.timeout and until
// one is not (or the connection is lost); otherwise it is degraded: requests are decided by a local
// bucket with the limit divided by the number of lb instances last seen alive in Redis (each instance
// writes a heartbeat every HEARTBEAT_MS, every PROBE_MS while degraded and connected: the probe whose
// answer comes in time makes the instance shared again). Redis never fails or stalls a request beyond
// one redis.timeout: an unanswered batch is decided locally. A batch answered late still counts: Redis
// took its tokens from the bucket, so they are added to what this instance holds for its workers.
//
// Return from degraded mode. What an instance admitted locally is not in the shared bucket; the other
// instances may already be back on it. So the first batch of a key after a return debits the tokens the
// instance admitted locally for that key in the last min(DEBIT_MS, burst / rate) (the bucket may go
// down to -burst, paid back by the refill). Over-admission after a return is therefore bounded by what
// an instance admits locally while the others are already shared, before that window: see README.

import { randomBytes } from 'node:crypto';
import type { RateLimitConfig, RedisConfig } from '../../config/model.js';
import { Buckets, ratePerMs, type Take } from '../dataplane/token-bucket.js';
import { RedisClient, RedisTimeout, type Reply } from '../redis/client.js';

/**
 * KEYS[1]: the bucket; ARGV: tokens per ms, burst, tokens wanted, tokens to debit first (admitted
 * locally while degraded; the bucket goes down to -burst at most). Returns { granted, remaining, wait ms }
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
local debit = tonumber(ARGV[4]) or 0
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(v[1])
local at = tonumber(v[2])
if tokens == nil or at == nil then
  tokens = burst
elseif now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
end
if at == nil or now > at then at = now end
if debit > 0 then tokens = math.max(-burst, tokens - debit) end
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
local wait = 0
if granted < want then wait = math.ceil((math.min(want, math.max(1, math.floor(burst / 4))) - tokens) / rate) end
return { granted, math.max(0, math.floor(tokens)), wait }
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
const PROBE_MS = 100;
const HOLD_MS = 1000;
/** Local admissions remembered per key for the debit on return, in SLOT_MS slots. */
const DEBIT_MS = 2000;
const SLOT_MS = 100;
const SLOTS = DEBIT_MS / SLOT_MS;

interface Held {
  tokens: number;
  until: number;
  deniedUntil: number;
  remaining: number;
  asking: Array<() => void> | undefined;
  /** Tokens asked of Redis per round trip for this key (adapts: see take). */
  batch: number;
  /** Tokens admitted locally per SLOT_MS slot (ring, last slot `slot`), while degraded. */
  localRing: number[] | undefined;
  slot: number;
  /** RedisLimits.generation at this key's last shared batch: another one means a debit is due. */
  gen: number;
  /** RedisLimits.generation when the fallback bucket was last seeded from the shared one. */
  seeded: number;
  /** performance.now() of the last answer from Redis for this key (0: none). */
  answeredAt: number;
}

export class RedisLimits {
  readonly client: RedisClient;
  /** lb instances alive at the last heartbeat (>= 1): divides a limit while Redis is unreachable. */
  instances = 1;
  /** Requests use the shared buckets (see the file comment); false: degraded, decided locally. */
  shared = false;
  /** Times this instance became shared: a key's first batch of each generation carries its debit. */
  generation = 0;
  private readonly id = `${process.pid}-${randomBytes(6).toString('hex')}`;
  private readonly heartbeat: NodeJS.Timeout;
  private probing = false;

  constructor(
    readonly cfg: RedisConfig,
    private readonly onState: (shared: boolean) => void,
  ) {
    this.client = new RedisClient(cfg.address.host, cfg.address.port, cfg.timeoutMs);
    this.client.onState = (up) => {
      if (up) this.beat();
      else this.answered(false);
    };
    this.heartbeat = setInterval(() => {
      if (this.shared) this.beat();
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** A command was answered in time (true) or not (false). */
  answered(inTime: boolean): void {
    if (!inTime) this.probe();
    if (inTime === this.shared) return;
    this.shared = inTime;
    if (inTime) this.generation++;
    else this.probe();
    this.onState(inTime);
  }

  /** While degraded and connected: a heartbeat every PROBE_MS until one is answered in time. */
  private probe(): void {
    if (this.probing) return;
    this.probing = true;
    const t = setInterval(() => {
      if (this.shared || this.closed) {
        clearInterval(t);
        this.probing = false;
      } else this.beat();
    }, PROBE_MS);
    t.unref();
  }

  private closed = false;
  private beating = false;

  private beat(): void {
    if (!this.client.up || this.beating) return;
    this.beating = true;
    const count = (n: Reply): void => {
      if (typeof n === 'number' && n >= 1) this.instances = n;
    };
    this.client.eval(HEARTBEAT_SCRIPT, [`${this.cfg.prefix}instances`], [this.id, HEARTBEAT_MS * 3], count).then(
      (n) => {
        this.beating = false;
        count(n);
        this.answered(true);
      },
      (err) => {
        this.beating = false;
        if (err instanceof RedisTimeout) this.answered(false);
      },
    );
  }

  close(): void {
    this.closed = true;
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

  /** Takes up to `want` tokens; calls back once, within one redis.timeout at most (a late answer's tokens are held, not lost). */
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
    if (h === undefined) {
      if (this.held.size >= this.cfg.maxKeys) this.held.delete(this.held.keys().next().value as string);
      h = { tokens: 0, until: 0, deniedUntil: 0, remaining: 0, asking: undefined, batch: this.batch, localRing: undefined, slot: 0, gen: this.redis.generation, seeded: -1, answeredAt: 0 };
      this.held.set(key, h);
    }
    if (!this.redis.shared || !this.redis.client.up) {
      cb(this.local(h, key, want, now));
      return;
    }
    const entry = h;
    entry.asking = [];
    const ask = Math.max(want, entry.batch);
    let debit = 0;
    if (entry.gen !== this.redis.generation) {
      entry.gen = this.redis.generation;
      debit = this.localSince(entry, now, Math.min(DEBIT_MS, this.cfg.burst / ratePerMs(this.cfg)));
      entry.localRing = undefined;
    }
    const c = this.cfg;
    // A late answer: Redis took these tokens from the bucket; this instance holds them for its workers.
    const late = (r: Reply): void => {
      const granted = Array.isArray(r) && typeof r[0] === 'number' ? r[0] : 0;
      if (granted > 0) this.give(key, granted, performance.now());
    };
    this.redis.client.eval(TAKE_SCRIPT, [`${this.redis.cfg.prefix}rl:${c.name}:${key}`], [ratePerMs(c), c.burst, ask, debit], late).then(
      (r: Reply) => {
        this.redis.answered(true);
        const [granted, remaining, wait] = Array.isArray(r) ? (r as number[]) : [0, 0, 0];
        const t = performance.now();
        entry.tokens = (t < entry.until ? entry.tokens : 0) + granted!;
        entry.until = t + HOLD_MS;
        entry.remaining = remaining!;
        entry.answeredAt = t;
        // The bucket had more than this batch: a batch per round trip falls behind the refill, so ask for more.
        if (granted === ask && remaining! >= ask) entry.batch = Math.min(this.maxBatch, entry.batch * 2);
        else if (granted! < ask) entry.batch = Math.max(this.batch, entry.batch >> 1);
        entry.deniedUntil = granted! < want ? t + wait! : 0;
        this.settle(entry, key, want, t, cb);
      },
      (err) => {
        if (err instanceof RedisTimeout) this.redis.answered(false);
        const t = performance.now();
        this.settle(entry, key, want, t, cb, this.local(entry, key, want, t));
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

  /** The fallback: this instance's share of the limit; what it grants is remembered for the debit. */
  private local(h: Held, key: string, want: number, now: number): Take {
    const share = Math.max(1, this.redis.instances);
    if (share !== this.fallbackShare) {
      this.fallbackShare = share;
      this.fallback.burst = Math.max(1, Math.floor(this.cfg.burst / share));
      this.fallback.perMs = ratePerMs(this.cfg) / share;
      this.fallback.maxKeys = this.cfg.maxKeys;
    }
    // Degraded after shared use of this key: its local bucket starts from this instance's share of what
    // the shared bucket held at the last answer (refilled since), not full; a full one would add burst/N
    // per instance to what the shared bucket had just granted.
    if (h.seeded !== this.redis.generation && h.answeredAt > 0) {
      h.seeded = this.redis.generation;
      this.fallback.set(key, h.remaining / share, h.answeredAt);
    }
    const t = this.fallback.take(key, want, now);
    if (t.granted > 0) {
      const ring = this.advance(h, now);
      ring[h.slot % SLOTS]! += t.granted;
    }
    return t;
  }

  /** The key's ring of local admissions, with the slots older than DEBIT_MS cleared. */
  private advance(h: Held, now: number): number[] {
    const slot = Math.floor(now / SLOT_MS);
    let ring = h.localRing;
    if (ring === undefined || slot - h.slot >= SLOTS) ring = h.localRing = new Array<number>(SLOTS).fill(0);
    else for (let s = h.slot + 1; s <= slot; s++) ring[s % SLOTS] = 0;
    h.slot = slot;
    return ring;
  }

  /** Tokens admitted locally for the key within the last `ms` (whole slots, rounded up). */
  private localSince(h: Held, now: number, ms: number): number {
    if (h.localRing === undefined) return 0;
    const ring = this.advance(h, now);
    let n = 0;
    for (let i = 0; i < Math.min(SLOTS, Math.ceil(ms / SLOT_MS)); i++) n += ring[(h.slot - i + SLOTS) % SLOTS]!;
    return n;
  }
}

/**
 * Tokens per batch: small enough that a batch is at most ~20 ms of the rate and a fraction of the burst
 * (so `holders` taking batches at once do not empty the bucket for each other), at least 1.
 */
export function batchSize(cfg: RateLimitConfig, holders: number, windowMs = 20): number {
  return Math.max(1, Math.min(Math.floor(cfg.burst / (2 * holders)), Math.ceil(ratePerMs(cfg) * windowMs)));
}

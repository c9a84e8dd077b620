// The primary's side of rate limiting: it owns every bucket of the instance and leases tokens to workers
// in small batches over IPC (src/dataplane/rate-limit.ts is the worker's side). Local limits are exact for
// the whole instance: a token is admitted by at most one worker, whichever asked for it, and tokens a
// worker does not use in time are given back. Global limits take their tokens from Redis first
// (rate-global.ts). See README "Rate limiting" for the design and the measured error.

import type { Worker } from 'node:cluster';
import type { LbConfig, RateLimitConfig, RedisConfig } from '../../config/model.js';
import { Buckets, ratePerMs, type Take } from '../dataplane/token-bucket.js';
import type { Logger } from '../log.js';
import { GlobalLimit, RedisLimits } from './rate-global.js';
import { sendToWorker, type FromWorker } from './messages.js';

interface Limit {
  cfg: RateLimitConfig;
  local: Buckets;
  global: GlobalLimit | undefined;
}

export class RateLeaser {
  private readonly limits = new Map<string, Limit>();
  private redis: RedisLimits | undefined;

  constructor(private readonly logger: () => Logger) {}

  /** A validated config (start or reload): limits keep their buckets across a reload when they keep their name. */
  apply(config: LbConfig): void {
    const next = config.rateLimits ?? {};
    const needRedis = Object.values(next).some((c) => c.scope === 'global');
    if (this.redis && (!needRedis || !sameRedis(this.redis.cfg, config.redis))) {
      this.redis.close();
      this.redis = undefined;
    }
    if (needRedis && !this.redis && config.redis) {
      const where = config.redis.address.text;
      this.redis = new RedisLimits(config.redis, (up) => {
        if (up) this.logger().info({ redis: where }, 'redis connected: global rate limits shared');
        else this.logger().warn({ redis: where }, 'redis unreachable or late: global rate limits enforced locally (limit / instances)');
      });
    }
    for (const name of this.limits.keys()) if (!(name in next)) this.limits.delete(name);
    for (const cfg of Object.values(next)) {
      const old = this.limits.get(cfg.name);
      if (old && old.cfg.scope === cfg.scope) {
        old.cfg = cfg;
        old.local.burst = cfg.burst;
        old.local.perMs = ratePerMs(cfg);
        old.local.maxKeys = cfg.maxKeys;
        old.global?.update(cfg);
        continue;
      }
      this.limits.set(cfg.name, {
        cfg,
        local: new Buckets(cfg.burst, ratePerMs(cfg), cfg.maxKeys),
        global: cfg.scope === 'global' && this.redis ? new GlobalLimit(cfg, this.redis) : undefined,
      });
    }
  }

  /** Handles a worker's rate-limit message; false when `msg` is not one. */
  onMessage(w: Worker, msg: FromWorker): boolean {
    if (msg.t === 'rl-take') {
      const { id } = msg;
      this.take(msg.limit, msg.key, msg.want, (t) => sendToWorker(w, { t: 'rl-grant', id, granted: t.granted, remaining: t.remaining, waitMs: t.waitMs }));
      return true;
    }
    if (msg.t === 'rl-return') {
      const l = this.limits.get(msg.limit);
      // Global tokens came from Redis: held again by this instance (rate-global.ts), not given back there.
      if (l?.global) l.global.give(msg.key, msg.n, performance.now());
      else l?.local.give(msg.key, msg.n, performance.now());
      return true;
    }
    return false;
  }

  take(limit: string, key: string, want: number, cb: (t: Take) => void): void {
    const l = this.limits.get(limit);
    // A limit removed by a reload while the worker asked: the worker's next config drops it too.
    if (!l) return cb({ granted: want, remaining: 0, waitMs: 0 });
    const now = performance.now();
    if (l.global) l.global.take(key, want, now, cb);
    else cb(l.local.take(key, want, now));
  }

  close(): void {
    this.redis?.close();
    this.redis = undefined;
  }
}

function sameRedis(a: RedisConfig, b: RedisConfig | undefined): boolean {
  return !!b && a.address.text === b.address.text && a.timeoutMs === b.timeoutMs && a.prefix === b.prefix;
}

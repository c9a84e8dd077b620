// Outlier ejection decisions beyond max_failures, without timers or I/O (monitor.ts applies them), after
// Envoy's outlier detection (envoy.config.cluster.v3.OutlierDetection):
//
// - consecutive_5xx: 5xx responses and failed requests (connect, reset, timeout, protocol) in a row, summed
//   over workers; any other answer ends the run (Envoy consecutive_5xx, local-origin errors counted as 5xx
//   as Envoy does while split_external_local_origin_errors is false).
// - consecutive_gateway_errors: the same with 502, 503 and 504 only; another 5xx ends the run (Envoy
//   consecutive_gateway_failure).
// - success_rate: every `interval`, the backends of a pool with at least `min_requests` attempts in it are
//   judged when at least `min_hosts` of them are; a backend whose success rate is below
//   mean - stdev_factor x stdev (population standard deviation) is ejected (Envoy success_rate_*; its
//   success_rate_stdev_factor is this factor x 1000).
// - max_ejection_percent: at most floor(backends x percent / 100) of a pool ejected at once, but always one
//   (Envoy: "will eject at least one host regardless of the value"). An ejection the cap refuses is not
//   made; the backend's run goes on and the next failure tries again.
// - Ejection time: eject_for x the backend's ejection count, at most max_eject_for (Envoy
//   base_ejection_time x number of ejections, max_ejection_time). The count falls by one for each eject_for
//   the backend served without being ejected (Envoy lowers it once per interval without an ejection).

import type { SuccessRateConfig } from '../../config/model.js';

export interface Outcome {
  key: string;
  total: number;
  ok: number;
}

export interface SuccessRateVerdict {
  key: string;
  /** Success rate of the ejected backend, in percent. */
  rate: number;
  /** mean - stdev_factor x stdev, in percent. */
  threshold: number;
  mean: number;
  stdev: number;
}

/** Backends whose success rate is an outlier among `samples` (an interval's counts); see above. */
export function successRateOutliers(samples: readonly Outcome[], cfg: SuccessRateConfig): SuccessRateVerdict[] {
  const judged = samples.filter((s) => s.total >= cfg.minRequests);
  if (judged.length < cfg.minHosts || judged.length === 0) return [];
  const rates = judged.map((s) => (100 * s.ok) / s.total);
  const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
  const variance = rates.reduce((a, r) => a + (r - mean) * (r - mean), 0) / rates.length;
  const stdev = Math.sqrt(variance);
  const threshold = mean - cfg.stdevFactor * stdev;
  const out: SuccessRateVerdict[] = [];
  judged.forEach((s, i) => {
    if (rates[i]! < threshold) out.push({ key: s.key, rate: rates[i]!, threshold, mean, stdev });
  });
  return out;
}

/** How many backends of a pool of `size` may be ejected at once under max_ejection_percent. */
export function ejectionCap(size: number, percent: number): number {
  return Math.max(1, Math.floor((size * percent) / 100));
}

/** The ejection count after `servedMs` in service since the last ejection ended, before a new one. */
export function decayedCount(count: number, servedMs: number, ejectForMs: number): number {
  if (count === 0 || ejectForMs <= 0) return 0;
  return Math.max(0, count - Math.floor(servedMs / ejectForMs));
}

/** How long ejection number `count` (1 = first) lasts. */
export function ejectionTime(ejectForMs: number, maxEjectForMs: number, count: number): number {
  return Math.min(ejectForMs * Math.max(1, count), Math.max(maxEjectForMs, ejectForMs));
}

/** Gateway errors (Envoy): 502, 503, 504. */
export function isGatewayError(status: number | undefined): boolean {
  return status === 502 || status === 503 || status === 504;
}

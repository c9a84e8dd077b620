// A worker's traffic metrics. The hot path only bumps plain numbers (prom-client's label hashing per
// request costs more than the rest of the proxy's bookkeeping); a scrape turns them into prom-client's
// metrics JSON, which the primary sums over workers with AggregatorRegistry.aggregate.

import { collectDefaultMetrics, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { FailureReason, RequestRecord } from '../dataplane/events.js';
import type { BackendPool } from '../dataplane/pool.js';
import { DURATION_BUCKETS, METRICS } from './names.js';

type Metric = MetricObjectWithValues<MetricValue<string>>;
type Labels = Record<string, string | number>;
interface Series {
  labels: Labels;
  value: number;
}
interface Hist {
  labels: Labels;
  counts: Float64Array;
  sum: number;
  count: number;
}

export class WorkerMetrics {
  private readonly requests = new Map<string, Series>();
  private readonly connections = new Map<string, Series>();
  private readonly failures = new Map<string, Series>();
  private readonly durations = new Map<string, Hist>();
  private readonly registry = new Registry();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Hot path: one finished request or connection. */
  done(r: RequestRecord): void {
    if (r.kind === 'http') {
      const k = `${r.listener}\n${r.pool}\n${r.backend}\n${r.status}`;
      const s = this.requests.get(k);
      if (s) s.value++;
      else this.requests.set(k, { labels: { listener: r.listener, pool: r.pool, backend: r.backend, code: String(r.status) }, value: 1 });
      const hk = `${r.listener}\n${r.pool}`;
      let h = this.durations.get(hk);
      if (!h) {
        h = { labels: { listener: r.listener, pool: r.pool }, counts: new Float64Array(DURATION_BUCKETS.length), sum: 0, count: 0 };
        this.durations.set(hk, h);
      }
      const sec = r.seconds;
      h.sum += sec;
      h.count++;
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        if (sec <= DURATION_BUCKETS[i]!) {
          h.counts[i]!++;
          break;
        }
      }
    } else {
      const k = `${r.listener}\n${r.pool}\n${r.backend}`;
      const s = this.connections.get(k);
      if (s) s.value++;
      else this.connections.set(k, { labels: { listener: r.listener, pool: r.pool, backend: r.backend }, value: 1 });
    }
  }

  failure(pool: string, backend: string, reason: FailureReason): void {
    const k = `${pool}\n${backend}\n${reason}`;
    const s = this.failures.get(k);
    if (s) s.value++;
    else this.failures.set(k, { labels: { pool, backend, reason }, value: 1 });
  }

  /** Pre-creates zero series for every backend, so a scrape shows them before their first request. */
  setPools(pools: ReadonlyMap<string, BackendPool>): void {
    this.pools = pools;
  }
  private pools: ReadonlyMap<string, BackendPool> = new Map();

  async snapshot(pools: ReadonlyMap<string, BackendPool> = this.pools): Promise<Metric[]> {
    const out = (await this.registry.getMetricsAsJSON()) as Metric[];
    const series = (m: { name: string; help: string; type: string }, values: Series[]): Metric =>
      ({ name: m.name, help: m.help, type: m.type, values, aggregator: 'sum' }) as unknown as Metric;
    out.push(series(METRICS.requests, [...this.requests.values()]));
    out.push(series(METRICS.connections, [...this.connections.values()]));
    out.push(series(METRICS.backendFailures, [...this.failures.values()]));
    const inflight: Series[] = [];
    for (const [pool, p] of pools) for (const b of p.backends) inflight.push({ labels: { pool, backend: b.name }, value: b.inflight });
    out.push(series(METRICS.backendInflight, inflight));
    const hv: Array<Series & { metricName: string }> = [];
    const name = METRICS.requestDuration.name;
    for (const h of this.durations.values()) {
      let cum = 0;
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        cum += h.counts[i]!;
        hv.push({ labels: { ...h.labels, le: DURATION_BUCKETS[i]! }, value: cum, metricName: `${name}_bucket` });
      }
      hv.push({ labels: { ...h.labels, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
      hv.push({ labels: h.labels, value: h.sum, metricName: `${name}_sum` });
      hv.push({ labels: h.labels, value: h.count, metricName: `${name}_count` });
    }
    out.push(series(METRICS.requestDuration, hv));
    return out;
  }
}

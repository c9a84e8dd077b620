// A worker's traffic metrics. The hot path (done, failure) only bumps plain numbers in nested maps keyed
// by the strings the data plane already holds (listener, pool and backend names are long-lived strings
// whose hashes V8 caches, the status code is a small integer): no string is built, hashed or allocated per
// request once a series exists. prom-client's own label handling (a sorted-key hash string per inc) costs
// more than the rest of the per-request bookkeeping, so prom-client only sees these counters at scrape
// time: snapshot() turns them into prom-client's metrics JSON, which the primary sums over workers with
// AggregatorRegistry.aggregate (src/metrics/primary.ts).
//
// Measured (node 20, 4 backends, one listener): ~50 ns per done() with nested maps against ~200 ns for
// the former `${listener}\n${pool}\n${backend}\n${status}` key per request.

import { collectDefaultMetrics, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { FailureReason, RequestRecord } from '../dataplane/events.js';
import type { BackendPool } from '../dataplane/pool.js';
import { DURATION_BUCKETS, METRICS } from './names.js';
import { backendTlsErrors } from '../dataplane/backend-tls.js';
import { h2Refused, h2Sessions } from '../dataplane/upstream-h2.js';
import { clientCertVerifications } from '../dataplane/client-cert.js';

type Metric = MetricObjectWithValues<MetricValue<string>>;
type Labels = Record<string, string | number>;
interface Series {
  labels: Labels;
  value: number;
}
interface Hist {
  labels: Labels;
  /** Per-bucket (not cumulative) counts; the last slot is the +Inf bucket. */
  counts: Float64Array;
  sum: number;
  count: number;
}
/** Per listener and pool: the duration histogram and the request counters by backend, then status. */
interface PoolCounters {
  hist: Hist;
  byBackend: Map<string, Map<number, Series>>;
}

const NB = DURATION_BUCKETS.length;

export class WorkerMetrics {
  /** listener -> pool -> counters (http requests). */
  private readonly http = new Map<string, Map<string, PoolCounters>>();
  /** listener -> pool -> backend -> connections (tcp and websocket). */
  private readonly conns = new Map<string, Map<string, Map<string, Series>>>();
  /** listener -> route -> pool -> requests that matched the route. */
  private readonly routes = new Map<string, Map<string, Map<string, Series>>>();
  /** pool -> backend -> reason -> failures. */
  private readonly failures = new Map<string, Map<string, Map<string, Series>>>();
  /** listener -> reason -> connections refused for their PROXY header. */
  private readonly proxyRefusals = new Map<string, Map<string, Series>>();
  /** listener -> HTTP/2 connections closed for flooding resets. */
  private readonly h2Floods = new Map<string, Series>();
  /** listener -> limit -> requests refused by a rate limit. */
  private readonly limited = new Map<string, Map<string, Series>>();
  private readonly registry = new Registry();
  private pools: ReadonlyMap<string, BackendPool> = new Map();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Hot path: one finished request or connection. Must stay cheap and must not throw. */
  done(r: RequestRecord): void {
    if (r.route !== undefined) bump3(this.routes, r.listener, r.route, r.pool, () => ({ listener: r.listener, route: r.route!, pool: r.pool }));
    if (r.kind === 'http') {
      let byPool = this.http.get(r.listener);
      if (byPool === undefined) this.http.set(r.listener, (byPool = new Map()));
      let pc = byPool.get(r.pool);
      if (pc === undefined) {
        pc = { hist: { labels: { listener: r.listener, pool: r.pool }, counts: new Float64Array(NB + 1), sum: 0, count: 0 }, byBackend: new Map() };
        byPool.set(r.pool, pc);
      }
      let byCode = pc.byBackend.get(r.backend);
      if (byCode === undefined) pc.byBackend.set(r.backend, (byCode = new Map()));
      const s = byCode.get(r.status);
      if (s !== undefined) s.value++;
      else byCode.set(r.status, { labels: { listener: r.listener, pool: r.pool, backend: r.backend, code: String(r.status) }, value: 1 });
      const h = pc.hist;
      const sec = r.seconds;
      h.sum += sec;
      h.count++;
      // Linear scan: proxy latencies sit in the first few buckets, so this beats a binary search.
      let i = 0;
      while (i < NB && sec > DURATION_BUCKETS[i]!) i++;
      h.counts[i]!++;
      if (r.limited !== undefined) this.rateLimited(r.listener, r.limited);
    } else {
      bump3(this.conns, r.listener, r.pool, r.backend, () => ({ listener: r.listener, pool: r.pool, backend: r.backend }));
    }
  }

  private rateLimited(listener: string, limit: string): void {
    let m = this.limited.get(listener);
    if (m === undefined) this.limited.set(listener, (m = new Map()));
    const s = m.get(limit);
    if (s !== undefined) s.value++;
    else m.set(limit, { labels: { listener, limit }, value: 1 });
  }

  /** Hot-ish path: a failed request/connection to a backend. */
  failure(pool: string, backend: string, reason: FailureReason): void {
    bump3(this.failures, pool, backend, reason, () => ({ pool, backend, reason }));
  }

  /** A connection closed for its PROXY protocol header. */
  proxyRefused(listener: string, reason: string): void {
    let m = this.proxyRefusals.get(listener);
    if (m === undefined) this.proxyRefusals.set(listener, (m = new Map()));
    const s = m.get(reason);
    if (s !== undefined) s.value++;
    else m.set(reason, { labels: { listener, reason }, value: 1 });
  }

  /** An HTTP/2 connection closed for flooding stream resets. */
  h2Flood(listener: string): void {
    const s = this.h2Floods.get(listener);
    if (s !== undefined) s.value++;
    else this.h2Floods.set(listener, { labels: { listener }, value: 1 });
  }

  /**
   * Backends that left their pool at runtime (membership.ts), by pool then name: their series are dropped
   * at the next snapshot, so metric labels stay bounded while members come and go. An entry stays until
   * the retired backend's in-flight work is over (a request that ends later would recreate a series).
   */
  private readonly gone = new Map<string, Map<string, { inflight: number }>>();

  /** Membership of `pool` changed: `removed` left it, `present` are its backends now. */
  membersChanged(pool: string, removed: ReadonlyArray<{ name: string; inflight: number }>, present: ReadonlyArray<{ name: string }>): void {
    let g = this.gone.get(pool);
    for (const b of removed) {
      if (!g) this.gone.set(pool, (g = new Map()));
      g.set(b.name, b);
    }
    if (g) for (const b of present) g.delete(b.name);
  }

  /** Drops the series of departed backends (see `gone`); scrape time only. */
  private prune(): void {
    for (const [pool, g] of this.gone) {
      for (const [name, b] of g) {
        for (const byPool of this.http.values()) byPool.get(pool)?.byBackend.delete(name);
        for (const byPool of this.conns.values()) byPool.get(pool)?.delete(name);
        this.failures.get(pool)?.delete(name);
        h2Refused.get(pool)?.delete(name);
        const sessions = h2Sessions.get(pool);
        if (sessions?.get(name) === 0) sessions.delete(name);
        if (b.inflight === 0) g.delete(name);
      }
      if (g.size === 0) this.gone.delete(pool);
    }
  }

  /** The pools whose backends' in-flight gauges a snapshot reports (set after every config apply). */
  setPools(pools: ReadonlyMap<string, BackendPool>): void {
    this.pools = pools;
  }

  /** prom-client metrics JSON of this process: default process metrics and lb's traffic series. */
  async snapshot(pools: ReadonlyMap<string, BackendPool> = this.pools): Promise<Metric[]> {
    this.prune();
    const out = (await this.registry.getMetricsAsJSON()) as Metric[];
    const series = (m: { name: string; help: string; type: string }, values: Series[]): Metric =>
      ({ name: m.name, help: m.help, type: m.type, values, aggregator: 'sum' }) as unknown as Metric;
    const requests: Series[] = [];
    const hv: Array<Series & { metricName: string }> = [];
    const name = METRICS.requestDuration.name;
    for (const byPool of this.http.values())
      for (const pc of byPool.values()) {
        for (const byCode of pc.byBackend.values()) for (const s of byCode.values()) requests.push({ labels: s.labels, value: s.value });
        const h = pc.hist;
        let cum = 0;
        for (let i = 0; i < NB; i++) {
          cum += h.counts[i]!;
          hv.push({ labels: { ...h.labels, le: DURATION_BUCKETS[i]! }, value: cum, metricName: `${name}_bucket` });
        }
        hv.push({ labels: { ...h.labels, le: '+Inf' }, value: h.count, metricName: `${name}_bucket` });
        hv.push({ labels: h.labels, value: h.sum, metricName: `${name}_sum` });
        hv.push({ labels: h.labels, value: h.count, metricName: `${name}_count` });
      }
    out.push(series(METRICS.requests, requests));
    out.push(series(METRICS.connections, flatten3(this.conns)));
    out.push(series(METRICS.backendFailures, flatten3(this.failures)));
    const refusals: Series[] = [];
    for (const m of this.proxyRefusals.values()) for (const s of m.values()) refusals.push({ labels: s.labels, value: s.value });
    out.push(series(METRICS.proxyProtocolErrors, refusals));
    out.push(series(METRICS.http2ResetFloods, [...this.h2Floods.values()]));
    out.push(series(METRICS.routeRequests, flatten3(this.routes)));
    const limited: Series[] = [];
    for (const m of this.limited.values()) for (const s of m.values()) limited.push({ labels: s.labels, value: s.value });
    out.push(series(METRICS.rateLimited, limited));
    const inflight: Series[] = [];
    for (const [pool, p] of pools) for (const b of p.backends) inflight.push({ labels: { pool, backend: b.name }, value: b.inflight });
    out.push(series(METRICS.backendInflight, inflight));
    out.push(series(METRICS.requestDuration, hv));
    const tlsErrors: Series[] = [];
    for (const [pool, byBackend] of backendTlsErrors)
      for (const [backend, byReason] of byBackend) for (const [reason, value] of byReason) tlsErrors.push({ labels: { pool, backend, reason }, value });
    out.push(series(METRICS.backendTlsErrors, tlsErrors));
    const sessions: Series[] = [];
    for (const [pool, byBackend] of h2Sessions) for (const [backend, value] of byBackend) sessions.push({ labels: { pool, backend }, value });
    out.push(series(METRICS.backendH2Sessions, sessions));
    const refused: Series[] = [];
    for (const [pool, byBackend] of h2Refused)
      for (const [backend, byReason] of byBackend) for (const [reason, value] of byReason) refused.push({ labels: { pool, backend, reason }, value });
    out.push(series(METRICS.backendH2Refused, refused));
    const verifications: Series[] = [];
    for (const [listener, byResult] of clientCertVerifications) for (const [result, value] of byResult) verifications.push({ labels: { listener, result }, value });
    out.push(series(METRICS.clientCertVerifications, verifications));
    out.push(...breakerSeries(pools, series));
    return out;
  }
}

function bump3(m: Map<string, Map<string, Map<string, Series>>>, a: string, b: string, c: string, labels: () => Labels): void {
  let mb = m.get(a);
  if (mb === undefined) m.set(a, (mb = new Map()));
  let mc = mb.get(b);
  if (mc === undefined) mb.set(b, (mc = new Map()));
  const s = mc.get(c);
  if (s !== undefined) s.value++;
  else mc.set(c, { labels: labels(), value: 1 });
}

/** Copies (a snapshot must not alias counters the hot path keeps bumping). */
function flatten3(m: Map<string, Map<string, Map<string, Series>>>): Series[] {
  const out: Series[] = [];
  for (const mb of m.values()) for (const mc of mb.values()) for (const s of mc.values()) out.push({ labels: s.labels, value: s.value });
  return out;
}

/** Queue, shedding and retry series of every pool (plain numbers kept on the pool: queue.ts, retry-budget.ts). */
function breakerSeries(pools: ReadonlyMap<string, BackendPool>, series: (m: { name: string; help: string; type: string }, values: Series[]) => Metric): Metric[] {
  const length: Series[] = [];
  const shed: Series[] = [];
  const retries: Series[] = [];
  const exhausted: Series[] = [];
  const wait: Array<Series & { metricName: string }> = [];
  const name = METRICS.queueWait.name;
  for (const [pool, p] of pools) {
    const qs = p.queueStats;
    if (p.queue) length.push({ labels: { pool }, value: p.queue.length });
    if (qs.shedFull > 0) shed.push({ labels: { pool, reason: 'queue_full' }, value: qs.shedFull });
    if (qs.shedTimeout > 0) shed.push({ labels: { pool, reason: 'queue_timeout' }, value: qs.shedTimeout });
    if (qs.waitCount > 0) {
      let cum = 0;
      for (let i = 0; i < NB; i++) {
        cum += qs.wait[i]!;
        wait.push({ labels: { pool, le: DURATION_BUCKETS[i]! }, value: cum, metricName: `${name}_bucket` });
      }
      wait.push({ labels: { pool, le: '+Inf' }, value: qs.waitCount, metricName: `${name}_bucket` });
      wait.push({ labels: { pool }, value: qs.waitSum, metricName: `${name}_sum` });
      wait.push({ labels: { pool }, value: qs.waitCount, metricName: `${name}_count` });
    }
    for (const [reason, n] of p.retryStats.byReason) retries.push({ labels: { pool, reason }, value: n });
    if (p.retryBudget || p.retryStats.budgetExhausted > 0) exhausted.push({ labels: { pool }, value: p.retryStats.budgetExhausted });
  }
  return [
    series(METRICS.queueLength, length),
    series(METRICS.queueWait, wait),
    series(METRICS.requestsShed, shed),
    series(METRICS.retries, retries),
    series(METRICS.retryBudgetExhausted, exhausted),
  ];
}

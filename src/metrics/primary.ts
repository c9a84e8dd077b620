// The metrics listener (`metrics.listen`), served by the primary:
//   GET /metrics      Prometheus text format: every worker's series (asked over IPC, 'metrics' message) and
//                     the primary's own, summed with prom-client's AggregatorRegistry.aggregate.
//   GET /status.json  Primary.status() plus per-backend request and error totals (the status page's data).
//   GET /             the status page (status-page.ts). Read-only: anything but GET/HEAD gets 405.
//
// Contracts:
// - Bounded: a collection round never waits longer than SCRAPE_DEADLINE_MS for workers. A worker that is
//   busy or dead is represented by its last answer and counted in lb_metrics_scrape_workers_missing.
//   Concurrent scrapes (and status polls) share one round, so a stuck worker never gets a queue of
//   metrics requests, and at most one request per worker is outstanding.
// - Monotonic: counters (and histograms) never go backwards for a scraper when a worker is replaced. The
//   last answer of a worker that exited is folded into `departed` and added to every later scrape. What
//   the worker counted after its last answer is lost: an undercount, never a dip, which rate() tolerates.
//   An answer that arrives after its worker exited is ignored (departed already holds an earlier one).
//   Workers that are retiring (reload to fewer workers, stop) stay in the sums until they exit.
// - Gauges of a dead process (in-flight, memory) are dropped with it: only counters/histograms carry over.

import cluster, { type Worker } from 'node:cluster';
import http from 'node:http';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Address } from '../../config/model.js';
import type { Primary } from '../daemon/primary.js';
import { stateOf } from '../daemon/state.js';
import { nodeInternals } from '../node-internals/report.js';
import { METRICS } from './names.js';
import type { PoolDiscoveryCounts } from '../discovery/manager.js';
import { statusPage } from './status-page.js';

export const SCRAPE_DEADLINE_MS = 1_000;

type Metric = MetricObjectWithValues<MetricValue<string>>;
type Snapshot = Metric[];

/** Counters and histograms keep their meaning when summed over time; gauges of a dead process do not. */
function monotonic(s: Snapshot): Snapshot {
  return s.filter((m) => String(m.type) === 'counter' || String(m.type) === 'histogram');
}

/**
 * AggregatorRegistry.aggregate, as metrics JSON, synchronously: the aggregated registry's metrics carry
 * their aggregated fields directly (prom-client 15 cluster.js wraps them with Object.assign), so no await
 * of getMetricsAsJSON() is needed. Used where a fold must happen inside a synchronous event handler.
 */
function sumSync(snaps: Snapshot[]): Snapshot {
  return AggregatorRegistry.aggregate(snaps)
    .getMetricsAsArray()
    .map((m) => {
      const x = m as unknown as Metric & { aggregator: string };
      return { name: x.name, help: x.help, type: x.type, values: x.values, aggregator: x.aggregator } as unknown as Metric;
    });
}

/** Per-backend totals since start (monotonic like the counters they come from). */
export interface BackendTotals {
  /** HTTP requests answered plus TCP/websocket connections. */
  requests: number;
  /** HTTP answers with a 5xx status (502, 503, 504, or the backend's own 5xx). */
  errors: number;
}

/** Sums lb_requests_total and lb_connections_total per pool and backend over snapshots. */
export function backendTotals(snaps: Snapshot[]): Map<string, Map<string, BackendTotals>> {
  const out = new Map<string, Map<string, BackendTotals>>();
  const at = (pool: string, backend: string): BackendTotals => {
    let p = out.get(pool);
    if (!p) out.set(pool, (p = new Map()));
    let t = p.get(backend);
    if (!t) p.set(backend, (t = { requests: 0, errors: 0 }));
    return t;
  };
  for (const snap of snaps)
    for (const m of snap) {
      const isReq = m.name === METRICS.requests.name;
      if (!isReq && m.name !== METRICS.connections.name) continue;
      for (const v of m.values) {
        const l = v.labels as Record<string, string | number | undefined>;
        const t = at(String(l.pool ?? ''), String(l.backend ?? ''));
        t.requests += v.value;
        if (isReq && Number(l.code) >= 500) t.errors += v.value;
      }
    }
  return out;
}

interface StatusShape {
  pools: Array<{ name: string; backends: Array<{ name: string } & Record<string, unknown>> }>;
  [k: string]: unknown;
}

export class MetricsServer {
  private server: http.Server | undefined;
  private readonly registry = new Registry();
  /** The last answer of every worker that has not exited, by cluster worker id. */
  private readonly last = new Map<number, Snapshot>();
  /** Counters and histograms of exited workers, summed. */
  private departed: Snapshot = [];
  private missing = 0;
  private round: Promise<Snapshot[]> | undefined;
  private readonly reloadCounts: Record<'applied' | 'refused', number> = { applied: 0, refused: 0 };
  private restartCount = 0;

  constructor(
    private readonly primary: Primary,
    previous?: MetricsServer,
  ) {
    collectDefaultMetrics({ register: this.registry });
    const p = primary;
    const self = this;
    const g = (m: (typeof METRICS)['backendUp' | 'backendDrain' | 'backendMaint' | 'backendWeight'], value: (r: ReturnType<Primary['state']['all']>[number]) => number): Gauge =>
      new Gauge({
        name: m.name,
        help: m.help,
        labelNames: [...m.labels],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const r of p.state.all()) this.set({ pool: r.pool, backend: r.name }, value(r));
        },
      });
    g(METRICS.backendUp, (r) => (r.health === 'down' ? 0 : 1));
    g(METRICS.backendDrain, (r) => (stateOf(r) === 'drain' ? 1 : 0));
    g(METRICS.backendMaint, (r) => (stateOf(r) === 'maint' ? 1 : 0));
    g(METRICS.backendWeight, (r) => p.state.control(r).weight);
    /** A counter or gauge whose series `fill` writes at each scrape (after a reset: departed series go). */
    const collected = (
      kind: 'counter' | 'gauge',
      m: { readonly name: string; readonly help: string; readonly labels: readonly string[] },
      fill: (put: (labels: Record<string, string>, value: number) => void) => void,
    ): void => {
      const opts = { name: m.name, help: m.help, labelNames: [...m.labels], registers: [this.registry] };
      if (kind === 'gauge') {
        new Gauge({
          ...opts,
          collect() {
            this.reset();
            fill((labels, v) => this.set(labels, v));
          },
        });
      } else {
        new Counter({
          ...opts,
          collect() {
            this.reset();
            fill((labels, v) => this.inc(labels, v));
          },
        });
      }
    };
    collected('counter', METRICS.healthChecks, (put) => {
      for (const c of p.health.checkCounts()) put({ pool: c.pool, backend: c.backend, result: c.result }, c.value);
    });
    // DNS discovery, per pool with a discovery table (a pool that loses it loses its series).
    const perPool = (kind: 'counter' | 'gauge', m: (typeof METRICS)['discoveryStale' | 'discoveryChanges' | 'discoveryBackends'], value: (c: PoolDiscoveryCounts) => number): void =>
      collected(kind, m, (put) => {
        for (const [pool, c] of p.discovery.counts()) put({ pool }, value(c));
      });
    perPool('counter', METRICS.discoveryStale, (c) => c.stale);
    perPool('counter', METRICS.discoveryChanges, (c) => c.changes);
    perPool('gauge', METRICS.discoveryBackends, (c) => c.backends);
    collected('counter', METRICS.discoveryRefreshes, (put) => {
      for (const [pool, c] of p.discovery.counts()) {
        put({ pool, result: 'ok' }, c.ok);
        put({ pool, result: 'error' }, c.error);
      }
    });
    collected('counter', METRICS.outlierEjections, (put) => {
      for (const c of p.health.ejectionCounts()) put({ pool: c.pool, backend: c.backend }, c.value);
    });
    // Plain numbers behind the counters: carried synchronously to a successor (metrics.listen moved).
    collected('counter', METRICS.configReloads, (put) => {
      for (const [result, n] of Object.entries(self.reloadCounts)) put({ result }, n);
    });
    new Counter({
      name: METRICS.workerRestarts.name,
      help: METRICS.workerRestarts.help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(self.restartCount);
      },
    });
    new Gauge({
      name: METRICS.scrapeMissing.name,
      help: METRICS.scrapeMissing.help,
      registers: [this.registry],
      collect() {
        this.set(self.missing);
      },
    });
    // Found once at load; workers inherit the primary's Node and environment (node-internals/report.ts).
    const internals = new Gauge({
      name: METRICS.nodeInternal.name,
      help: METRICS.nodeInternal.help,
      labelNames: [...METRICS.nodeInternal.labels],
      registers: [this.registry],
    });
    for (const r of nodeInternals()) internals.set({ name: r.name, mode: r.mode }, 1);
    if (previous) {
      for (const [k, v] of previous.last) this.last.set(k, v);
      this.departed = previous.departed;
      this.reloadCounts.applied = previous.reloadCounts.applied;
      this.reloadCounts.refused = previous.reloadCounts.refused;
      this.restartCount = previous.restartCount;
    }
  }

  reloaded(result: 'applied' | 'refused'): void {
    this.reloadCounts[result]++;
  }

  workerRestarted(): void {
    this.restartCount++;
  }

  /** A worker exited: its last counters stay in the sums. Synchronous (called from cluster's 'exit'). */
  workerGone(id: number): void {
    const snap = this.last.get(id);
    this.last.delete(id);
    if (!snap) return;
    this.departed = sumSync(this.departed.length > 0 ? [this.departed, monotonic(snap)] : [monotonic(snap)]);
  }

  /**
   * A backend left its pool at runtime: its series go from the last answers kept here and from the exited
   * workers' sums (the workers drop theirs, metrics/worker.ts), so labels stay bounded.
   */
  forget(pool: string, backend: string): void {
    const keep = (s: Snapshot): Snapshot =>
      s.map((m) => {
        const values = m.values.filter((v) => !(v.labels.pool === pool && v.labels.backend === backend));
        return values.length === m.values.length ? m : ({ ...m, values } as Metric);
      });
    for (const [id, snap] of this.last) this.last.set(id, keep(snap));
    this.departed = keep(this.departed);
  }

  /** Workers to ask: the primary's live ones, plus retiring ones that answered before and still listen. */
  private targets(): Worker[] {
    const out = new Map<number, Worker>();
    for (const w of this.primary.liveWorkers()) out.set(w.id, w);
    for (const id of [...this.last.keys()]) {
      const w = cluster.workers?.[id];
      // Exited while this server was not registered with the primary (metrics listener being replaced).
      if (!w || w.isDead()) this.workerGone(id);
      else if (!out.has(id) && w.isConnected()) out.set(id, w);
    }
    return [...out.values()];
  }

  /**
   * One collection round over the workers (shared by concurrent callers), bounded by SCRAPE_DEADLINE_MS.
   * Resolves with the latest snapshot of every worker that has not exited (answered now or before).
   */
  private gather(): Promise<Snapshot[]> {
    this.round ??= this.gatherOnce().finally(() => {
      this.round = undefined;
    });
    return this.round;
  }

  private async gatherOnce(): Promise<Snapshot[]> {
    const workers = this.targets();
    const answers = await Promise.all(workers.map((w) => this.primary.request(w, { t: 'metrics', id: 0 }, SCRAPE_DEADLINE_MS)));
    let missing = 0;
    workers.forEach((w, i) => {
      const a = answers[i];
      if (!a || a.t !== 'metrics') missing++;
      // A late answer from a worker that has exited since is dropped: departed has its previous one.
      else if (!w.isDead()) this.last.set(w.id, a.metrics as Snapshot);
    });
    this.missing = missing;
    return [...this.last.values()];
  }

  /** The text exposition of every process's series, summed. */
  async collect(): Promise<string> {
    const snaps = [...(await this.gather())]; // a copy: the round's array is shared by concurrent callers
    snaps.push((await this.registry.getMetricsAsJSON()) as Snapshot);
    if (this.departed.length > 0) snaps.push(this.departed);
    return AggregatorRegistry.aggregate(snaps).metrics();
  }

  /** Primary.status() with `requests` and `errors` totals on every backend, for the status page. */
  async statusWithTotals(): Promise<unknown> {
    const [status, round] = await Promise.all([this.primary.status() as Promise<StatusShape>, this.gather()]);
    const snaps = this.departed.length > 0 ? [...round, this.departed] : round;
    const totals = backendTotals(snaps);
    for (const p of status.pools) {
      for (const b of p.backends) {
        const t = totals.get(p.name)?.get(b.name);
        b.requests = t?.requests ?? 0;
        b.errors = t?.errors ?? 0;
      }
      // 503s with no usable backend are counted under backend "".
      const none = totals.get(p.name)?.get('');
      (p as Record<string, unknown>).unrouted = none ?? { requests: 0, errors: 0 };
    }
    return { ...status, at: Date.now(), metricsWorkersMissing: this.missing };
  }

  listen(addr: Address): Promise<void> {
    const server = http.createServer((req, res) => this.serve(req, res));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('405 Method Not Allowed: the metrics listener is read-only\n');
      return;
    }
    const send = (status: number, type: string, body: string): void => {
      if (res.destroyed) return;
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const failed = (err: Error): void => send(500, 'text/plain', `500: ${err.message}\n`);
    switch (url) {
      case '/metrics':
        this.collect().then((text) => send(200, this.registry.contentType, text), failed);
        return;
      case '/status.json':
        this.statusWithTotals().then((s) => send(200, 'application/json', JSON.stringify(s)), failed);
        return;
      case '/':
      case '/index.html':
        send(200, 'text/html; charset=utf-8', statusPage());
        return;
      default:
        send(404, 'text/plain', '404 Not Found: try /metrics, /status.json or /\n');
    }
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}

// /metrics on `metrics.listen`, served by the primary: every worker's series (asked over IPC) and the
// primary's own, summed with prom-client's AggregatorRegistry.aggregate.
//
// A scrape never waits longer than SCRAPE_DEADLINE_MS for workers: a worker that is busy or dead is
// represented by its last answer and counted in lb_metrics_scrape_workers_missing. Counters never go
// backwards when a worker is replaced: the last snapshot of a worker that exited is kept and added to
// every later scrape (what it counted after its last scrape is lost, which rate() tolerates as a dip-free
// undercount).

import http from 'node:http';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { Address } from '../../config/model.js';
import type { Primary } from '../daemon/primary.js';
import { stateOf } from '../daemon/state.js';
import { METRICS } from './names.js';
import { statusPage } from './status-page.js';

export const SCRAPE_DEADLINE_MS = 1_000;

type Metric = MetricObjectWithValues<MetricValue<string>>;
type Snapshot = Metric[];

/** Counters and histograms keep their meaning when summed over time; gauges of a dead process do not. */
function monotonic(s: Snapshot): Snapshot {
  return s.filter((m) => String(m.type) === 'counter' || String(m.type) === 'histogram');
}

export class MetricsServer {
  private server: http.Server | undefined;
  private readonly registry = new Registry();
  private readonly last = new Map<number, Snapshot>();
  private departed: Snapshot = [];
  private missing = 0;
  private readonly reloads: Counter;
  private readonly restarts: Counter;

  constructor(
    private readonly primary: Primary,
    previous?: MetricsServer,
  ) {
    collectDefaultMetrics({ register: this.registry });
    const p = primary;
    const g = (m: (typeof METRICS)['backendUp' | 'backendDrain' | 'backendWeight'], value: (r: ReturnType<Primary['state']['all']>[number]) => number): Gauge =>
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
    g(METRICS.backendWeight, (r) => p.state.control(r).weight);
    new Counter({
      name: METRICS.healthChecks.name,
      help: METRICS.healthChecks.help,
      labelNames: [...METRICS.healthChecks.labels],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const c of p.health.checkCounts()) this.inc({ pool: c.pool, backend: c.backend, result: c.result }, c.value);
      },
    });
    this.reloads = new Counter({ name: METRICS.configReloads.name, help: METRICS.configReloads.help, labelNames: [...METRICS.configReloads.labels], registers: [this.registry] });
    this.restarts = new Counter({ name: METRICS.workerRestarts.name, help: METRICS.workerRestarts.help, registers: [this.registry] });
    const self = this;
    new Gauge({
      name: METRICS.scrapeMissing.name,
      help: METRICS.scrapeMissing.help,
      registers: [this.registry],
      collect() {
        this.set(self.missing);
      },
    });
    if (previous) {
      // A moved metrics listener keeps the series counted so far.
      for (const [k, v] of previous.last) this.last.set(k, v);
      this.departed = previous.departed;
      this.carry(previous);
    }
  }

  private carry(previous: MetricsServer): void {
    void previous.registry.getMetricsAsJSON().then((json) => {
      for (const m of json as Snapshot) {
        if (m.name === METRICS.configReloads.name) for (const v of m.values) this.reloads.inc(v.labels as Record<string, string>, v.value);
        if (m.name === METRICS.workerRestarts.name) for (const v of m.values) this.restarts.inc(v.value);
      }
    });
  }

  reloaded(result: 'applied' | 'refused'): void {
    this.reloads.inc({ result });
  }

  workerRestarted(): void {
    this.restarts.inc();
  }

  /** A worker exited: its last counters stay in the sums. */
  workerGone(id: number): void {
    const snap = this.last.get(id);
    this.last.delete(id);
    if (!snap) return;
    this.departed = monotonic(AggregatorRegistry.aggregate([this.departed, monotonic(snap)]).getMetricsAsJSON() as unknown as Snapshot);
  }

  /** The text exposition of every process's series, summed. */
  async collect(): Promise<string> {
    const workers = this.primary.liveWorkers();
    const answers = await Promise.all(workers.map((w) => this.primary.request(w, { t: 'metrics', id: 0 }, SCRAPE_DEADLINE_MS)));
    let missing = 0;
    const snaps: Snapshot[] = [];
    workers.forEach((w, i) => {
      const a = answers[i];
      if (a && a.t === 'metrics') this.last.set(w.id, a.metrics as Snapshot);
      else missing++;
      const s = this.last.get(w.id);
      if (s) snaps.push(s);
    });
    this.missing = missing;
    snaps.push((await this.registry.getMetricsAsJSON()) as Snapshot);
    if (this.departed.length > 0) snaps.push(this.departed);
    return AggregatorRegistry.aggregate(snaps).metrics();
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
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const failed = (err: Error): void => send(500, 'text/plain', `500: ${err.message}\n`);
    switch (url) {
      case '/metrics':
        this.collect().then((text) => send(200, this.registry.contentType, text), failed);
        return;
      case '/status.json':
        this.primary.status().then((s) => send(200, 'application/json', JSON.stringify(s)), failed);
        return;
      case '/':
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

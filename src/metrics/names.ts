// Every metric lb exports, in one table (docs/SPEC.md "Metrics"). `where` says which process owns the series:
// workers count traffic, the primary owns health, reloads and backend state. /metrics sums every process.

export const METRICS = {
  requests: {
    name: 'lb_requests_total',
    type: 'counter',
    help: 'HTTP requests answered, by listener, pool, backend and status code (backend "" when none was usable).',
    labels: ['listener', 'pool', 'backend', 'code'],
    where: 'worker',
  },
  requestDuration: {
    name: 'lb_request_duration_seconds',
    type: 'histogram',
    help: 'Time from receiving an HTTP request head to the end of the response, by listener and pool.',
    labels: ['listener', 'pool'],
    where: 'worker',
  },
  connections: {
    name: 'lb_connections_total',
    type: 'counter',
    help: 'TCP connections proxied (tcp listeners) and websocket tunnels, by listener, pool and backend.',
    labels: ['listener', 'pool', 'backend'],
    where: 'worker',
  },
  backendInflight: {
    name: 'lb_backend_inflight',
    type: 'gauge',
    help: 'Requests and connections in flight to a backend, summed over workers.',
    labels: ['pool', 'backend'],
    where: 'worker',
  },
  backendFailures: {
    name: 'lb_backend_failures_total',
    type: 'counter',
    help: 'Failed requests/connections to a backend by reason (connect, timeout, reset, protocol, 5xx).',
    labels: ['pool', 'backend', 'reason'],
    where: 'worker',
  },
  rateLimited: {
    name: 'lb_rate_limited_total',
    type: 'counter',
    help: 'HTTP requests refused with 429 by a rate limit, by listener and limit (rate_limits.NAME).',
    labels: ['listener', 'limit'],
    where: 'worker',
  },
  backendUp: {
    name: 'lb_backend_up',
    type: 'gauge',
    help: '1 when a backend is up or unchecked (serving), 0 when down. Drain is shown by lb_backend_admin_drain.',
    labels: ['pool', 'backend'],
    where: 'primary',
  },
  backendDrain: {
    name: 'lb_backend_admin_drain',
    type: 'gauge',
    help: '1 while a backend is drained by the admin (lb drain), else 0.',
    labels: ['pool', 'backend'],
    where: 'primary',
  },
  backendMaint: {
    name: 'lb_backend_admin_maint',
    type: 'gauge',
    help: '1 while a backend is in maintenance (lb maint: no traffic, no health checks), else 0.',
    labels: ['pool', 'backend'],
    where: 'primary',
  },
  backendWeight: {
    name: 'lb_backend_weight',
    type: 'gauge',
    help: 'Effective weight of a backend (runtime override and slow start applied).',
    labels: ['pool', 'backend'],
    where: 'primary',
  },
  healthChecks: {
    name: 'lb_health_checks_total',
    type: 'counter',
    help: 'Active health checks run, by result (pass, fail).',
    labels: ['pool', 'backend', 'result'],
    where: 'primary',
  },
  configReloads: {
    name: 'lb_config_reloads_total',
    type: 'counter',
    help: 'Config reloads, by result (applied, refused).',
    labels: ['result'],
    where: 'primary',
  },
  workerRestarts: {
    name: 'lb_worker_restarts_total',
    type: 'counter',
    help: 'Workers respawned after exiting unexpectedly.',
    labels: [],
    where: 'primary',
  },
  scrapeMissing: {
    name: 'lb_metrics_scrape_workers_missing',
    type: 'gauge',
    help: 'Workers that did not answer the last /metrics scrape within its deadline (their series are from their last answer).',
    labels: [],
    where: 'primary',
  },
  nodeInternal: {
    name: 'lb_node_internal',
    type: 'gauge',
    help: 'Node internals lb uses when usable (http_parser: the llhttp binding; tcp_wrap: bare TCP handles): 1 for the mode in use, usable or fallback.',
    labels: ['name', 'mode'],
    where: 'primary',
  },
} as const;

/** Histogram buckets for proxy latencies: sub-millisecond to a minute. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

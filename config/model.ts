// The validated, typed configuration that the runtime trusts. The raw TOML (snake_case, strings with units)
// is a different type: config/load.ts turns one into the other once, up front, and reports every problem.
// Durations here are milliseconds; addresses are parsed.

export interface Address {
  /** Host as written, without IPv6 brackets ("127.0.0.1", "::1", "localhost"). */
  host: string;
  port: number;
  /** The address as the user wrote it, for messages and metrics labels ("[::1]:8080"). */
  text: string;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type HashKey =
  | { kind: 'client-ip' }
  | { kind: 'path' }
  | { kind: 'header'; name: string } // name lower-cased
  | { kind: 'cookie'; name: string }
  | { kind: 'query'; name: string };

/** A rate limit's key: a hash key, or one bucket per route / listener. */
export type RateKey = HashKey | { kind: 'route' } | { kind: 'listener' };

export interface RateLimitConfig {
  name: string;
  /** Tokens added per `perMs`. */
  rate: number;
  perMs: number;
  /** Bucket size; default `rate`. */
  burst: number;
  key: RateKey;
  scope: 'local' | 'global';
  /** Most buckets kept (least recently used forgotten past it). */
  maxKeys: number;
}

export interface RedisConfig {
  address: Address;
  timeoutMs: number;
  prefix: string;
}

export interface RequestIdConfig {
  /** Lower-cased. */
  header: string;
  trustIncoming: boolean;
  response: boolean;
}

export interface TraceConfig {
  traceparent: 'propagate' | 'create';
  sampled: boolean;
}

export interface BackendConfig {
  /** Defaults to the address text. Unique within its pool. */
  name: string;
  address: Address;
  /** Integer >= 0; default 1. 0 = no new traffic. */
  weight: number;
  /** In flight at most, per worker process; 0 (default) = no cap. */
  maxConnections: number;
  /**
   * Priority tier, integer >= 0, default 0; lower is preferred (DNS SRV semantics): a pool uses only the
   * lowest tier with a usable backend.
   */
  priority: number;
  /**
   * Where the backend came from when not from the config file: "admin" (`lb add`), "dns" (discovery), ...
   * Undefined for the config file's backends (source "config"). See src/daemon/membership.ts.
   */
  source?: string;
}

export interface HealthCheckConfig {
  type: 'http' | 'tcp' | 'grpc';
  /** grpc only: HealthCheckRequest.service; "" (default) asks about the server as a whole. */
  service?: string;
  /**
   * The HTTP version of http and grpc checks: the pool's `protocol` (grpc on an http1 pool: h2 with `tls`,
   * else h2c). undefined: http1.
   */
  protocol?: BackendProtocol;
  /** http only; default "/". */
  path: string;
  /** http only; optional Host header, default the backend address. */
  host?: string;
  /** http only; inclusive ranges, default [[200, 399]]. */
  expectStatus: Array<[number, number]>;
  /** Default 2s. */
  intervalMs: number;
  /** Default 1s. */
  timeoutMs: number;
  /** Consecutive passes to mark up; default 2. */
  rise: number;
  /** Consecutive failures to mark down; default 3. */
  fall: number;
  /** The pool's send_proxy: a check connection starts with a v2 LOCAL / v1 UNKNOWN PROXY header. */
  sendProxy?: 'v1' | 'v2';
}

export interface PassiveConfig {
  /** Consecutive failed requests/connections that eject a backend; default 5. */
  maxFailures: number;
  /** Default 30s. */
  ejectForMs: number;
  /** Count 5xx responses as failures (http); default false. */
  on5xx: boolean;
  /** Consecutive 5xx responses or failures that eject (Envoy consecutive_5xx); 0 = off. */
  consecutive5xx: number;
  /** Consecutive 502/503/504 responses or failures that eject (Envoy consecutive_gateway_failure); 0 = off. */
  consecutiveGatewayErrors: number;
  /** Share of the pool ejected at once at most, in percent (at least one backend); default 100. */
  maxEjectionPercent: number;
  /** Cap on eject_for x ejection count; default 300s. */
  maxEjectForMs: number;
  successRate?: SuccessRateConfig;
  /** Derived: workers report 5xx responses (on_5xx, consecutive_5xx, consecutive_gateway_errors or success_rate). */
  report5xx: boolean;
}

export interface SuccessRateConfig {
  intervalMs: number;
  minRequests: number;
  minHosts: number;
  stdevFactor: number;
}

/** http retry conditions (`retry_on`); gateway-error sets 502, 503 and 504. */
export interface RetryOn {
  connectFailure: boolean;
  /** Closed, reset or timed out before a response byte. */
  reset: boolean;
  /** Response statuses retried (502, 503, 504). */
  statuses: number[];
}

/** A pool's `discovery` table: backends from DNS (src/discovery/). Durations in milliseconds. */
export interface DiscoveryConfig {
  /** Name queried, as written (no search list is applied), without the trailing dot. */
  dns: string;
  type: 'SRV' | 'A' | 'AAAA';
  /** A/AAAA: the port of every discovered backend. Absent for SRV (the records carry the ports). */
  port?: number;
  /** Resolvers tried in order; empty = the nameservers of /etc/resolv.conf, read when discovery starts. */
  resolvers: Address[];
  /** A fixed re-resolve interval instead of the answer's TTL; absent = follow the TTL. */
  refreshMs?: number;
  /** The TTL is raised to at least this (and retries after a failure start here); default 1s. */
  minTtlMs: number;
  /** The TTL is lowered to at most this (and retry backoff stops growing here); default 60s. */
  maxTtlMs: number;
  /** Per query and resolver; default 2s. */
  timeoutMs: number;
  /** How long NXDOMAIN or an empty answer keeps the last non-empty answer before it is applied; default 30s. */
  holdEmptyMs: number;
  /** A/AAAA: weight of every discovered backend; default 1. SRV takes the records' weights. */
  weight: number;
  /** Per discovered backend, as a backend's max_connections; default 0 (no cap). */
  maxConnections: number;
}

/**
 * `pools.NAME.tls`: lb connects to the pool's backends over TLS (http pools: lb's upstream client; tcp pools:
 * TLS origination) and its health checks do the same handshake. Paths are absolute.
 */
export interface BackendTlsConfig {
  /** PEM CA bundle the backends' certificates are verified against; undefined: Node's (Mozilla's) root store. */
  ca?: string;
  /** SNI and the name verified; undefined: the backend's host when it is a name, no SNI (and the IP verified) for an IP. */
  serverName?: string;
  /** Verify the certificate and name; default true. false is insecure (no protection against an active attacker). */
  verify: boolean;
  /** Client certificate (mTLS to backends), with `key`; both or neither. */
  cert?: string;
  key?: string;
  /** Default "TLSv1.2". */
  minVersion: 'TLSv1.2' | 'TLSv1.3';
}

/** `pools.NAME.protocol`: HTTP/1.1, HTTP/2 over TLS (ALPN h2), or HTTP/2 over TCP with prior knowledge. */
export type BackendProtocol = 'http1' | 'h2' | 'h2c';

export interface PoolConfig {
  name: string;
  /** http: the protocol spoken to the backends; undefined (as the loader leaves it by default): http1. */
  protocol?: BackendProtocol;
  /** protocol h2/h2c: HTTP/2 connections per backend at most, per worker; default 4. */
  h2MaxConnections?: number;
  /** A built-in algorithm name, or a module path (starts with "./", "../" or "/"). */
  algorithm: string;
  /** Present only for algorithms that use a key. Default client-ip for those. */
  hashKey?: HashKey;
  /** `algorithm_options`, as written (validated by the algorithm); passed to Algorithm.create. */
  algorithmOptions?: Readonly<Record<string, unknown>>;
  /** Other backends tried when connecting fails; default 2. */
  retries: number;
  /** Default 2s. */
  connectTimeoutMs: number;
  /** http: until the response head arrives; default 30s. */
  responseTimeoutMs: number;
  /** http: longest wait between two reads of a response body (not while the client holds lb up); default 60s. */
  readTimeoutMs: number;
  /** Ramp a backend's weight linearly over this window after it comes up; 0 = off (default). */
  slowStartMs: number;
  /** In flight over the pool at most, per worker; 0 = no cap (default). */
  maxRequests: number;
  /** http: requests that may wait for capacity, per worker; 0 = none (503 at once). */
  maxQueue: number;
  /** http: longest wait in the queue (then 503); default connect_timeout. */
  queueTimeoutMs: number;
  retryOn: RetryOn;
  /** http: response-head timeout of each attempt; 0 = response_timeout. */
  perTryTimeoutMs: number;
  /** http: retries in flight at most max(minRetries, percent% of requests in flight); per worker. */
  retryBudget?: { percent: number; minRetries: number };
  /** send_proxy: each backend connection starts with a PROXY protocol header of this version. */
  sendProxy?: 'v1' | 'v2';
  /** The static backends; may be empty when `discovery` is set. */
  backends: BackendConfig[];
  /** Backends from DNS, next to the static ones. */
  discovery?: DiscoveryConfig;
  healthCheck?: HealthCheckConfig;
  passive?: PassiveConfig;
  tls?: BackendTlsConfig;
}

/** One condition on a request header, cookie or query parameter (route `headers`, `cookies`, `query`). */
export interface ValueMatch {
  /** Header names lower-cased; cookie and query names as written (case-sensitive). */
  name: string;
  exact?: string;
  prefix?: string;
  /** JavaScript regular expression source, unanchored (a search); checked at load (route-match.ts). */
  regex?: string;
  /** true: the field must be there (any value); false: it must be absent. */
  present?: boolean;
}

export interface SplitEntry {
  pool: string;
  /** Integer >= 0; the route's weights sum to more than 0. */
  weight: number;
}

/** Header rewrites in the order applied: remove, then set (replaces every field of that name), then add. */
export interface HeaderRewrite {
  remove: string[];
  /** [name, value template]; templates may hold ${variable} (rewrite.ts). */
  set: Array<[string, string]>;
  add: Array<[string, string]>;
}

export interface RedirectConfig {
  /** Default: the request's scheme. */
  scheme?: 'http' | 'https';
  /** Default: the request's host (its port dropped when `scheme` or `port` is given). */
  host?: string;
  port?: number;
  /** Replaces the request's path (the query is kept unless stripQuery). */
  path?: string;
  stripQuery: boolean;
  code: 301 | 302 | 303 | 307 | 308;
}

export interface RespondConfig {
  status: number;
  /** The body (from `body`, or read from `body_file` at load). */
  body: string;
  contentType: string;
  headers: Array<[string, string]>;
}

export interface RouteConfig {
  /** As written; routeName() gives the default ("LISTENER#INDEX"). */
  name?: string;
  /** Exact host ("api.example.com") or a leading wildcard ("*.example.com"); lower-cased, no port. */
  host?: string;
  pathPrefix?: string;
  /** Upper-case method names; any of them matches. */
  methods?: string[];
  headers?: ValueMatch[];
  cookies?: ValueMatch[];
  query?: ValueMatch[];
  /** Where matching requests go: exactly one of pool, split, redirect, respond is set. */
  pool?: string;
  split?: SplitEntry[];
  /** Split stickiness: the request key whose hash places a client on one side (same syntax as hash_key). */
  sticky?: HashKey;
  requestHeaders?: HeaderRewrite;
  responseHeaders?: HeaderRewrite;
  /** Removed from the front of the forwarded path when the path starts with it. */
  stripPrefix?: string;
  /** Put in front of the forwarded path (after strip_prefix). */
  addPrefix?: string;
  redirect?: RedirectConfig;
  respond?: RespondConfig;
  /** A rate_limits name. */
  rateLimit?: string;
}

/** A route's name: its `name`, else "LISTENER#INDEX" (0-based, as in the config's routes array). */
export function routeName(listener: string, index: number, r: RouteConfig): string {
  return r.name ?? `${listener}#${index}`;
}

export interface TlsConfig {
  cert: string;
  key: string;
  /** Extra certificates chosen by SNI server name. */
  sni: Array<{ serverName: string; cert: string; key: string }>;
  /** Default "TLSv1.2". */
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  /** Client certificates (mTLS from clients); absent: none asked for. */
  clientAuth?: ClientAuthConfig;
}

/** `listeners.NAME.tls.client_auth`. */
export interface ClientAuthConfig {
  /** PEM CA bundle client certificates are verified against (absolute path). */
  ca: string;
  /** required: no valid certificate, no connection; optional: asked for, the result passed on (X-Client-Verify). */
  mode: 'required' | 'optional';
}

/** `listeners.NAME.http2 = true` and its limits. */
export interface Http2Config {
  /** SETTINGS_MAX_CONCURRENT_STREAMS; default 100. */
  maxConcurrentStreams: number;
  /** SETTINGS_INITIAL_WINDOW_SIZE (and the connection window); default 65535. */
  initialWindowSize: number;
}

export interface ListenerConfig {
  name: string;
  protocol: 'http' | 'tcp';
  listen: Address;
  /** Default pool when no route matches. */
  pool: string;
  /** http only; checked in order. */
  routes: RouteConfig[];
  tls?: TlsConfig;
  /** Cap on concurrent client connections for this listener, per worker; 0 = none (default). */
  maxConnections: number;
  /** http: time allowed to receive a request head; default 10s. */
  clientHeaderTimeoutMs: number;
  /** http: longest wait for the next request-body bytes while lb is ready to read them (then 408); 0 = never; default 60s. */
  clientBodyTimeoutMs: number;
  /** Idle time on a client connection (http keep-alive wait, tcp inactivity) before it is closed; default 60s for http, 0 (off) for tcp. */
  idleTimeoutMs: number;
  /** http: max request head size in bytes; default 16384. */
  maxHeaderSize: number;
  /** Connections must start with a PROXY protocol header (v1 or v2); default false. */
  proxyProtocol: boolean;
  /** http: HTTP/2 to clients (ALPN h2 with tls, h2c prior knowledge without); absent: HTTP/1.1 only. */
  http2?: Http2Config;
  /** http: a rate_limits name. */
  rateLimit?: string;
  requestId?: RequestIdConfig;
  trace?: TraceConfig;
}

export interface LbConfig {
  /** Absolute path of the file this was read from. */
  file: string;
  daemon: {
    /** Resolved worker count (>= 1); "auto" = os.availableParallelism(). */
    workers: number;
    workersSetting: number | 'auto';
    gracePeriodMs: number;
    /** How new connections reach workers (daemon.accept); default "shared" (README: measured against round-robin). */
    accept: 'round-robin' | 'shared' | 'reuseport';
    /** daemon.state_file, absolute (relative paths resolved against the config file's directory). */
    stateFile: string;
  };
  admin: {
    /** Absolute path; relative paths in the file are resolved against the file's directory. */
    socket: string;
  };
  metrics?: { listen: Address };
  log: { level: LogLevel; access: boolean };
  listeners: Record<string, ListenerConfig>;
  pools: Record<string, PoolConfig>;
  /** By name; absent or empty when none is defined. */
  rateLimits?: Record<string, RateLimitConfig>;
  redis?: RedisConfig;
}

/** One problem found in a config file, printed as `FILE:LINE:COL: key.path: message`. */
export interface ConfigIssue {
  file: string;
  line?: number;
  col?: number;
  /** Dotted key path, e.g. "pools.app.backends[1].weight"; empty for file-level problems. */
  path: string;
  message: string;
}

export function formatIssue(i: ConfigIssue): string {
  const loc = i.line !== undefined ? `${i.file}:${i.line}:${i.col ?? 1}` : i.file;
  return i.path ? `${loc}: ${i.path}: ${i.message}` : `${loc}: ${i.message}`;
}

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
  }
}

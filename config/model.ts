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
}

export interface HealthCheckConfig {
  type: 'http' | 'tcp';
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
}

export interface PassiveConfig {
  /** Consecutive failed requests/connections that eject a backend; default 5. */
  maxFailures: number;
  /** Default 30s. */
  ejectForMs: number;
  /** Count 5xx responses as failures (http); default false. */
  on5xx: boolean;
}

export interface PoolConfig {
  name: string;
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
  backends: BackendConfig[];
  healthCheck?: HealthCheckConfig;
  passive?: PassiveConfig;
}

export interface RouteConfig {
  /** Exact host ("api.example.com") or a leading wildcard ("*.example.com"); lower-cased, no port. */
  host?: string;
  pathPrefix?: string;
  pool: string;
  /** A rate_limits name. */
  rateLimit?: string;
}

export interface TlsConfig {
  cert: string;
  key: string;
  /** Extra certificates chosen by SNI server name. */
  sni: Array<{ serverName: string; cert: string; key: string }>;
  /** Default "TLSv1.2". */
  minVersion: 'TLSv1.2' | 'TLSv1.3';
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

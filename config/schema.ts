// The raw TOML config file as a TypeBox schema: snake_case keys, durations and addresses as strings.
// It is the single description of the file's keys: load.ts validates against it, gen-schema.ts turns it
// into config/lb.schema.json for editors. `default` annotations document the defaults that load.ts applies
// (from DEFAULTS below); keys whose default depends on other keys describe it in prose instead.

import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { algorithms } from '../algorithms/registry.js';
import { ADDRESS_PATTERN } from './address.js';
import { DURATION_PATTERN } from './duration.js';

export const DEFAULTS = {
  daemon: { workers: 'auto', grace_period: '30s', accept: 'shared', state_file: '/var/lib/lb/state.json' },
  admin: { socket: '/run/lb/admin.sock' },
  log: { level: 'info', access: false },
  listener: {
    max_connections: 0,
    client_header_timeout: '10s',
    client_body_timeout: '60s',
    idle_timeout_http: '60s',
    idle_timeout_tcp: '0s',
    max_header_size: 16384,
  },
  tls: { min_version: 'TLSv1.2' },
  pool: { algorithm: 'round-robin', retries: 2, connect_timeout: '2s', response_timeout: '30s', read_timeout: '60s', slow_start: '0s' },
  backend: { weight: 1, max_connections: 0 },
  health_check: { type: 'http', path: '/', expect_status: '200-399', interval: '2s', timeout: '1s', rise: 2, fall: 3 },
  passive: { max_failures: 5, eject_for: '30s', on_5xx: false },
  hash_key: 'client-ip',
  rate_limit: { per: '1s', key: 'client-ip', scope: 'local', max_keys: 100000 },
  redis: { timeout: '100ms', prefix: 'lb:' },
  request_id: { header: 'x-request-id', trust_incoming: false, response: true },
  trace: { sampled: true },
} as const;

/** Listener and pool names: they appear in `lb drain POOL/BACKEND`, metric labels and log lines. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]*$';
/** Backend names: no whitespace and no "/", which separates POOL/BACKEND on the command line. */
export const BACKEND_NAME_PATTERN = '^[^\\s/]+$';
/** HTTP token characters (RFC 9110 section 5.6.2), for header and cookie names. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
export const HASH_KEY_PATTERN = `^(?:client-ip|path|header:${TOKEN}|cookie:${TOKEN}|query:[^\\s&=#]+)$`;
const STATUS = '[1-5][0-9]{2}(?:\\s*-\\s*[1-5][0-9]{2})?';
/** A rate limit's key: the hash_key forms, plus "route" and "listener" (one bucket for all their requests). */
export const RATE_KEY_PATTERN = `^(?:client-ip|path|route|listener|header:${TOKEN}|cookie:${TOKEN}|query:[^\\s&=#]+)$`;
/** A header name (RFC 9110 token). */
export const HEADER_NAME_PATTERN = `^${TOKEN}$`;
export const EXPECT_STATUS_PATTERN = `^\\s*${STATUS}(?:\\s*,\\s*${STATUS})*\\s*$`;
export const ROUTE_HOST_PATTERN = '^(?:\\*\\.)?[A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?$';
export const PATH_PREFIX_PATTERN = '^/';
export const MODULE_PATH_PATTERN = '^(?:\\./|\\.\\./|/)';

const closed = { additionalProperties: false } as const;

function duration(description: string, def?: string) {
  return Type.String({
    pattern: DURATION_PATTERN,
    description: `${description} A duration: a number with a unit (ms, s, m, h), e.g. "250ms", "2s", "1m30s".`,
    ...(def !== undefined ? { default: def } : {}),
  });
}

function address(description: string, examples: string[]) {
  return Type.String({
    pattern: ADDRESS_PATTERN,
    description: `${description} host:port; IPv6 hosts in brackets, e.g. "[::1]:8080".`,
    examples,
  });
}

export const ACCEPT_MODES = ['round-robin', 'shared', 'reuseport'] as const;

function oneOf<const T extends readonly string[]>(values: T, options: Record<string, unknown>) {
  return Type.Union(
    values.map((v) => Type.Literal(v)),
    options,
  );
}

const DaemonSchema = Type.Object(
  {
    workers: Type.Optional(
      Type.Union([Type.Integer({ minimum: 1 }), Type.Literal('auto')], {
        description: 'Worker processes: an integer >= 1, or "auto" for one per CPU core (os.availableParallelism()).',
        default: DEFAULTS.daemon.workers,
      }),
    ),
    grace_period: Type.Optional(
      duration(
        'How long a stop or a reload waits for in-flight requests and connections to finish.',
        DEFAULTS.daemon.grace_period,
      ),
    ),
    accept: Type.Optional(
      oneOf(ACCEPT_MODES, {
        description:
          'How new connections reach workers: "round-robin" (the primary accepts and hands each connection to the next worker; ' +
          'even spread), "shared" (workers accept from one shared socket; the kernel picks, often unevenly), "reuseport" ' +
          '(each worker binds its own SO_REUSEPORT socket; Node >= 22.12). Takes effect at start, not on reload.',
        default: DEFAULTS.daemon.accept,
      }),
    ),
    state_file: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Where runtime changes (lb drain, ready, maint, weight) are kept so that they survive a restart; written ' +
          'atomically on every change, read at start. An unreadable file is logged and ignored. ' +
          "A relative path is resolved against the config file's directory.",
        default: DEFAULTS.daemon.state_file,
      }),
    ),
  },
  { ...closed, description: 'Process settings.', default: {} },
);

const AdminSchema = Type.Object(
  {
    socket: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'Unix socket for the lb CLI (created with mode 0660; never a TCP port). ' +
          "A relative path is resolved against the config file's directory.",
        default: DEFAULTS.admin.socket,
      }),
    ),
  },
  { ...closed, description: 'The admin socket used by lb status, reload, drain, ready and weight.', default: {} },
);

const MetricsSchema = Type.Object(
  {
    listen: address('Address of the Prometheus endpoint (GET /metrics, text format).', ['127.0.0.1:9100']),
  },
  { ...closed, description: 'Prometheus metrics. Omit the table to disable metrics.' },
);

const LogSchema = Type.Object(
  {
    level: Type.Optional(
      oneOf(['debug', 'info', 'warn', 'error'] as const, {
        description: 'Lowest level logged. Logs are JSON lines on stdout.',
        default: DEFAULTS.log.level,
      }),
    ),
    access: Type.Optional(
      Type.Boolean({
        description: 'Log one JSON line per HTTP request / TCP connection.',
        default: DEFAULTS.log.access,
      }),
    ),
  },
  { ...closed, description: 'Logging.', default: {} },
);

const RouteSchema = Type.Object(
  {
    host: Type.Optional(
      Type.String({
        pattern: ROUTE_HOST_PATTERN,
        description:
          "Match the request's Host (without port, case-insensitive): an exact name, or a leading wildcard such as " +
          '"*.example.com". Omit to match any host.',
      }),
    ),
    path_prefix: Type.Optional(
      Type.String({
        pattern: PATH_PREFIX_PATTERN,
        description: 'Match request paths starting with this prefix, e.g. "/v1/". Omit to match any path.',
      }),
    ),
    pool: Type.String({ minLength: 1, description: 'Pool that serves the matching requests.' }),
    rate_limit: Type.Optional(
      Type.String({ minLength: 1, description: 'Name of a [rate_limits.NAME] table applied to the requests this route matches (after the listener\'s own).' }),
    ),
  },
  { ...closed, description: 'A route: requests matching every given condition go to `pool`.' },
);

const SniSchema = Type.Object(
  {
    server_name: Type.String({
      pattern: ROUTE_HOST_PATTERN,
      description: 'TLS server name (SNI) this certificate serves: exact, or a leading wildcard such as "*.example.com".',
    }),
    cert: Type.String({
      minLength: 1,
      description: "PEM certificate chain file; relative to the config file's directory.",
    }),
    key: Type.String({ minLength: 1, description: 'PEM private key file; relative to the config file\'s directory.' }),
  },
  { ...closed, description: 'A certificate chosen by SNI server name.' },
);

const TlsSchema = Type.Object(
  {
    cert: Type.String({
      minLength: 1,
      description: 'PEM certificate chain file served by default; relative to the config file\'s directory.',
    }),
    key: Type.String({
      minLength: 1,
      description: "PEM private key file of `cert`; relative to the config file's directory.",
    }),
    sni: Type.Optional(
      Type.Array(SniSchema, {
        description: 'Extra certificates chosen by the client\'s SNI server name.',
        default: [],
      }),
    ),
    min_version: Type.Optional(
      oneOf(['TLSv1.2', 'TLSv1.3'] as const, {
        description: 'Lowest TLS version accepted.',
        default: DEFAULTS.tls.min_version,
      }),
    ),
  },
  { ...closed, description: 'Terminate TLS on this listener. Omit the table for plain text.' },
);

const RequestIdSchema = Type.Object(
  {
    header: Type.Optional(
      Type.String({ pattern: HEADER_NAME_PATTERN, description: 'Header that carries the request ID (case-insensitive).', default: DEFAULTS.request_id.header }),
    ),
    trust_incoming: Type.Optional(
      Type.Boolean({
        description:
          'Keep a request ID the client sent (one field, 1-128 characters of A-Z a-z 0-9 - _ . : + / = @); otherwise, ' +
          'and always when false, lb replaces it with its own (32 lower-case hex characters).',
        default: DEFAULTS.request_id.trust_incoming,
      }),
    ),
    response: Type.Optional(
      Type.Boolean({ description: 'Also send the request ID back to the client (replacing one the backend set).', default: DEFAULTS.request_id.response }),
    ),
  },
  { ...closed, description: 'http: give every request an ID, sent to the backend and written to the access log (request_id).' },
);

const TraceSchema = Type.Object(
  {
    traceparent: oneOf(['propagate', 'create'] as const, {
      description:
        'W3C Trace Context: "propagate" forwards a valid traceparent (and its tracestate) unchanged and drops an ' +
        'invalid one; "create" does the same and also starts a new trace when the request has no valid traceparent.',
    }),
    sampled: Type.Optional(
      Type.Boolean({ description: 'The sampled flag of a traceparent lb creates.', default: DEFAULTS.trace.sampled }),
    ),
  },
  { ...closed, description: 'http: W3C traceparent handling; the trace ID goes to the access log (trace_id).' },
);

const ListenerSchema = Type.Object(
  {
    protocol: oneOf(['http', 'tcp'] as const, {
      description: '"http" (L7: routes, retries of idempotent requests, X-Forwarded-*) or "tcp" (L4: byte streams).',
    }),
    listen: address('Address to accept connections on. Port 0 picks a free port.', ['0.0.0.0:8080', '[::]:443']),
    pool: Type.String({ minLength: 1, description: 'Pool that serves traffic no route matches.' }),
    routes: Type.Optional(
      Type.Array(RouteSchema, {
        description: 'http only: routes checked in order, first match wins.',
        default: [],
      }),
    ),
    tls: Type.Optional(TlsSchema),
    max_connections: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Cap on concurrent client connections, per worker; 0 = no cap.',
        default: DEFAULTS.listener.max_connections,
      }),
    ),
    client_header_timeout: Type.Optional(
      duration('http: time allowed to receive a request head.', DEFAULTS.listener.client_header_timeout),
    ),
    client_body_timeout: Type.Optional(
      duration(
        'http: longest wait for the next bytes of a request body while lb is ready to read them (NGINX\'s ' +
          'client_body_timeout); the request gets 408 and its connection is closed. "0s" = never.',
        DEFAULTS.listener.client_body_timeout,
      ),
    ),
    idle_timeout: Type.Optional(
      duration(
        'Idle time on a client connection (http: keep-alive wait; tcp: no bytes either way) before it is closed; ' +
          `"0s" = never. Default "${DEFAULTS.listener.idle_timeout_http}" for http, ` +
          `"${DEFAULTS.listener.idle_timeout_tcp}" for tcp.`,
      ),
    ),
    max_header_size: Type.Optional(
      Type.Integer({
        minimum: 1024,
        maximum: 1048576,
        description: 'http: largest request head accepted, in bytes (larger heads get 431).',
        default: DEFAULTS.listener.max_header_size,
      }),
    ),
    rate_limit: Type.Optional(
      Type.String({ minLength: 1, description: 'http: name of a [rate_limits.NAME] table applied to every request of this listener.' }),
    ),
    request_id: Type.Optional(RequestIdSchema),
    trace: Type.Optional(TraceSchema),
  },
  { ...closed, description: 'A listener: where clients connect.' },
);

const BackendSchema = Type.Object(
  {
    name: Type.Optional(
      Type.String({
        pattern: BACKEND_NAME_PATTERN,
        description: 'Name used by the lb CLI (POOL/BACKEND), metrics and logs; unique in the pool. Default: the address.',
      }),
    ),
    address: address('Backend address.', ['10.0.0.11:3000']),
    weight: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 1000,
        description: 'Relative share of traffic for algorithms that honour weights; 0 = no new traffic.',
        default: DEFAULTS.backend.weight,
      }),
    ),
    max_connections: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Requests (http) and connections (tcp, websocket) in flight to this backend at most, per worker process ' +
          '(NGINX max_conns without a queue): a backend at its cap is not picked; when every backend is, 503. 0 = no cap.',
        default: DEFAULTS.backend.max_connections,
      }),
    ),
  },
  { ...closed, description: 'A backend server.' },
);

const HealthCheckSchema = Type.Object(
  {
    type: Type.Optional(
      oneOf(['http', 'tcp'] as const, {
        description: '"http": GET `path` and check the status; "tcp": open a connection.',
        default: DEFAULTS.health_check.type,
      }),
    ),
    path: Type.Optional(
      Type.String({
        pattern: PATH_PREFIX_PATTERN,
        description: 'http only: path requested.',
        default: DEFAULTS.health_check.path,
      }),
    ),
    host: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'http only: Host header sent. Default: the backend address.',
      }),
    ),
    expect_status: Type.Optional(
      Type.String({
        pattern: EXPECT_STATUS_PATTERN,
        description: 'http only: statuses that pass: a status, a range or a list, e.g. "200", "200-399", "200,204,300-399".',
        default: DEFAULTS.health_check.expect_status,
      }),
    ),
    interval: Type.Optional(duration('Time between checks of a backend.', DEFAULTS.health_check.interval)),
    timeout: Type.Optional(
      duration('Time a check may take before it fails; at most `interval`.', DEFAULTS.health_check.timeout),
    ),
    rise: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Consecutive passes that mark a backend up.',
        default: DEFAULTS.health_check.rise,
      }),
    ),
    fall: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Consecutive failures that mark a backend down.',
        default: DEFAULTS.health_check.fall,
      }),
    ),
  },
  { ...closed, description: 'Active health checks. Omit the table for none.' },
);

const PassiveSchema = Type.Object(
  {
    max_failures: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Consecutive failed requests/connections that eject a backend.',
        default: DEFAULTS.passive.max_failures,
      }),
    ),
    eject_for: Type.Optional(duration('How long an ejected backend gets no traffic.', DEFAULTS.passive.eject_for)),
    on_5xx: Type.Optional(
      Type.Boolean({
        description: 'http: count 5xx responses as failures.',
        default: DEFAULTS.passive.on_5xx,
      }),
    ),
  },
  { ...closed, description: 'Outlier ejection from live traffic. Omit the table for none.' },
);

const builtInAlgorithms = [...algorithms.keys()];
const keyedAlgorithms = [...algorithms.values()].filter((a) => a.usesKey).map((a) => a.name);

const PoolSchema = Type.Object(
  {
    algorithm: Type.Optional(
      Type.Union([...builtInAlgorithms.map((name) => Type.Literal(name)), Type.String({ pattern: MODULE_PATH_PATTERN })], {
        description:
          'Balancing algorithm: a built-in name, or the path of a module exporting an Algorithm ' +
          '("./", "../" or "/"; relative to the config file\'s directory).',
        default: DEFAULTS.pool.algorithm,
      }),
    ),
    hash_key: Type.Optional(
      Type.String({
        pattern: HASH_KEY_PATTERN,
        description:
          `What hash algorithms (${keyedAlgorithms.join(', ')}) hash: ` +
          'client-ip | header:NAME | cookie:NAME | query:NAME | path. ' +
          `Default "${DEFAULTS.hash_key}" for them; other algorithms take none. tcp listeners have only client-ip.`,
      }),
    ),
    algorithm_options: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description:
          "The algorithm's own parameters, checked by the algorithm (Algorithm.validateOptions): " +
          'consistent-hash and maglev take hash_balance_factor (a number >= 1: bounded load, each backend ' +
          'at most ceil(factor x average) in flight); maglev also table_size (a prime <= 5000011, default the ' +
          'first of 65537, 131101, 262217, ... at least 100 x backends); peak-ewma takes decay (a duration, ' +
          'default "10s"). A module algorithm gets the table as it is.',
      }),
    ),
    retries: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 10,
        description:
          'Other backends tried when connecting fails (and, for http, idempotent requests whose backend failed ' +
          'before sending a response byte).',
        default: DEFAULTS.pool.retries,
      }),
    ),
    connect_timeout: Type.Optional(duration('Time allowed to connect to a backend.', DEFAULTS.pool.connect_timeout)),
    response_timeout: Type.Optional(
      duration('http: time allowed until the response head arrives (then 504).', DEFAULTS.pool.response_timeout),
    ),
    read_timeout: Type.Optional(
      duration(
        'http: longest wait between two reads of a response body (NGINX proxy_read_timeout); past it the response ' +
          'is cut. Time lb spends not reading because the client is slow does not count. "0s" = never.',
        DEFAULTS.pool.read_timeout,
      ),
    ),
    slow_start: Type.Optional(
      duration(
        "Ramp a backend's weight up linearly over this window after it comes up; \"0s\" = off.",
        DEFAULTS.pool.slow_start,
      ),
    ),
    backends: Type.Array(BackendSchema, {
      minItems: 1,
      description: 'The backend servers, e.g. [ { address = "10.0.0.11:3000" } ].',
    }),
    health_check: Type.Optional(HealthCheckSchema),
    passive: Type.Optional(PassiveSchema),
  },
  { ...closed, description: 'A pool of backends and how traffic is spread over them.' },
);

const RateLimitSchema = Type.Object(
  {
    rate: Type.Integer({ minimum: 1, maximum: 1_000_000_000, description: 'Requests admitted per `per`, on average.' }),
    per: Type.Optional(duration('The period `rate` is counted over.', DEFAULTS.rate_limit.per)),
    burst: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1_000_000_000,
        description: 'Bucket size: requests admitted at once after an idle period. Default: `rate`.',
      }),
    ),
    key: Type.Optional(
      Type.String({
        pattern: RATE_KEY_PATTERN,
        description:
          'What gets its own bucket: client-ip, header:NAME, cookie:NAME, query:NAME, path (as hash_key), or ' +
          '"route" / "listener" (one bucket for every request of the route or listener using the limit). ' +
          'Requests without the header, cookie or parameter share one bucket.',
        default: DEFAULTS.rate_limit.key,
      }),
    ),
    scope: Type.Optional(
      oneOf(['local', 'global'] as const, {
        description: '"local": exact for this lb instance (all its workers share each bucket); "global": shared by every lb instance using the same [redis].',
        default: DEFAULTS.rate_limit.scope,
      }),
    ),
    max_keys: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10_000_000,
        description: 'Most buckets kept; past it the least recently used bucket is forgotten (its key starts again with a full bucket).',
        default: DEFAULTS.rate_limit.max_keys,
      }),
    ),
  },
  { ...closed, description: 'A token-bucket rate limit, used by name from listeners and routes (rate_limit = "NAME").' },
);

const RedisSchema = Type.Object(
  {
    address: address('Redis server for global rate limits.', ['127.0.0.1:6379']),
    timeout: Type.Optional(
      duration('Longest wait for a Redis answer before the waiting requests are decided by the local fallback (a late answer still counts: its tokens are held, not lost).', DEFAULTS.redis.timeout),
    ),
    prefix: Type.Optional(Type.String({ description: 'Prefix of every Redis key lb writes.', default: DEFAULTS.redis.prefix })),
  },
  { ...closed, description: 'Redis, for rate limits with scope = "global".' },
);

export const ConfigSchema = Type.Object(
  {
    daemon: Type.Optional(DaemonSchema),
    admin: Type.Optional(AdminSchema),
    metrics: Type.Optional(MetricsSchema),
    log: Type.Optional(LogSchema),
    redis: Type.Optional(RedisSchema),
    rate_limits: Type.Optional(
      Type.Record(Type.String({ pattern: NAME_PATTERN }), RateLimitSchema, {
        ...closed,
        description: 'Rate limits by name ([rate_limits.NAME]).',
        default: {},
      }),
    ),
    listeners: Type.Record(Type.String({ pattern: NAME_PATTERN }), ListenerSchema, {
      ...closed,
      minProperties: 1,
      description: 'Listeners by name ([listeners.NAME]); at least one.',
    }),
    pools: Type.Record(Type.String({ pattern: NAME_PATTERN }), PoolSchema, {
      ...closed,
      minProperties: 1,
      description: 'Backend pools by name ([pools.NAME]); at least one.',
    }),
  },
  { ...closed, title: 'lb configuration', description: 'Configuration of the lb load balancer (TOML).' },
);

export type RawConfig = Static<typeof ConfigSchema>;

/** The JSON Schema document written to config/lb.schema.json (TypeBox schemas are JSON Schema draft 7). */
export function jsonSchema(): Record<string, unknown> {
  const schema: TSchema = ConfigSchema;
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $comment: 'Generated from config/schema.ts by config/gen-schema.ts; do not edit.',
    ...(JSON.parse(JSON.stringify(schema)) as Record<string, unknown>),
  };
}

/** jsonSchema() as the exact text of config/lb.schema.json. */
export function jsonSchemaText(): string {
  return `${JSON.stringify(jsonSchema(), null, 2)}\n`;
}

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
    proxy_protocol: false,
    http2: false,
    http2_max_concurrent_streams: 100,
    http2_initial_window_size: 65535,
  },
  tls: { min_version: 'TLSv1.2' },
  backend_tls: { verify: true, min_version: 'TLSv1.2' },
  client_auth: { mode: 'required' },
  pool: { algorithm: 'round-robin', retries: 2, connect_timeout: '2s', response_timeout: '30s', read_timeout: '60s', slow_start: '0s', protocol: 'http1', h2_max_connections: 4 },
  backend: { weight: 1, max_connections: 0, priority: 0 },
  discovery: { min_ttl: '1s', max_ttl: '60s', timeout: '2s', hold_empty: '30s', weight: 1, max_connections: 0 },
  health_check: { type: 'http', path: '/', expect_status: '200-399', interval: '2s', timeout: '1s', rise: 2, fall: 3 },
  passive: { max_failures: 5, eject_for: '30s', on_5xx: false, max_ejection_percent: 100, max_eject_for: '300s' },
  success_rate: { interval: '10s', min_requests: 100, min_hosts: 5, stdev_factor: 1.9 },
  breaker: { max_requests: 0, max_queue: 0, retry_on: ['connect-failure', 'reset'] },
  retry_budget: { percent: 20, min_retries: 3 },
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
/** A method: an upper-case token. */
export const METHOD_PATTERN = "^[A-Z][A-Z0-9_-]*$";
export const HASH_KEY_PATTERN = `^(?:client-ip|path|header:${TOKEN}|cookie:${TOKEN}|query:[^\\s&=#]+)$`;
const STATUS = '[1-5][0-9]{2}(?:\\s*-\\s*[1-5][0-9]{2})?';
/** A rate limit's key: the hash_key forms, plus "route" and "listener" (one bucket for all their requests). */
export const RATE_KEY_PATTERN = `^(?:client-ip|path|route|listener|header:${TOKEN}|cookie:${TOKEN}|query:[^\\s&=#]+)$`;
/** A header name (RFC 9110 token). */
export const HEADER_NAME_PATTERN = `^${TOKEN}$`;
export const EXPECT_STATUS_PATTERN = `^\\s*${STATUS}(?:\\s*,\\s*${STATUS})*\\s*$`;
export const ROUTE_HOST_PATTERN = '^(?:\\*\\.)?[A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?$';
/** A DNS name for SNI (RFC 6066 section 3: a host name, no wildcard; IP literals are refused by load.ts). */
export const SERVER_NAME_PATTERN = '^[A-Za-z0-9_-]+(?:\\.[A-Za-z0-9_-]+)*\\.?$';
export const PATH_PREFIX_PATTERN = '^/';
export const MODULE_PATH_PATTERN = '^(?:\\./|\\.\\./|/)';
/** A DNS name to discover (RFC 1035 letters, digits and hyphens, plus the "_" of SRV names), trailing dot optional. */
export const DNS_NAME_PATTERN = '^(?=.{1,253}\\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\\.?$';
/** A resolver: an IP address, with an optional port (default 53): "10.0.0.2", "127.0.0.1:8600", "[::1]:53". */
export const RESOLVER_PATTERN = '^(?:\\[[0-9A-Fa-f:.]+\\](?::[0-9]+)?|[0-9.]+(?::[0-9]+)?|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)$';

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
    name: Type.Optional(
      Type.String({
        pattern: NAME_PATTERN,
        description: 'Route name for `lb split`, logs and metrics; unique within the listener. Default "LISTENER#INDEX".',
      }),
    ),
    methods: Type.Optional(
      Type.Array(Type.String({ pattern: METHOD_PATTERN }), {
        minItems: 1,
        description: 'Match these request methods (upper case), e.g. ["GET", "HEAD"].',
      }),
    ),
    headers: Type.Optional(Type.Array(valueMatch('header'), { description: 'Header conditions, all of which must hold.' })),
    cookies: Type.Optional(Type.Array(valueMatch('cookie'), { description: 'Cookie conditions, all of which must hold.' })),
    query: Type.Optional(Type.Array(valueMatch('query parameter'), { description: 'Query parameter conditions, all of which must hold.' })),
    pool: Type.Optional(Type.String({ minLength: 1, description: 'Pool that serves the matching requests.' })),
    split: Type.Optional(
      Type.Array(
        Type.Object(
          {
            pool: Type.String({ minLength: 1, description: 'A pool.' }),
            weight: Type.Integer({ minimum: 0, maximum: 10000, description: 'Share of the traffic: weight / sum of weights.' }),
          },
          closed,
        ),
        { minItems: 1, description: 'Instead of `pool`: traffic split by weight across pools, e.g. [{ pool = "app", weight = 95 }, { pool = "app-canary", weight = 5 }].' },
      ),
    ),
    sticky: Type.Optional(
      Type.String({
        pattern: HASH_KEY_PATTERN,
        description: 'With `split`: the client key (as hash_key: client-ip, header:NAME, cookie:NAME, query:NAME, path) that keeps a client on one side of the split.',
      }),
    ),
    request_headers: Type.Optional(headerRewrite('Request header rewrites, before forwarding.')),
    response_headers: Type.Optional(headerRewrite('Response header rewrites, before answering the client.')),
    strip_prefix: Type.Optional(
      Type.String({ pattern: PATH_PREFIX_PATTERN, description: 'Removed from the front of the forwarded path, e.g. "/api".' }),
    ),
    add_prefix: Type.Optional(
      Type.String({ pattern: PATH_PREFIX_PATTERN, description: 'Put in front of the forwarded path (after strip_prefix): strip + add replaces a prefix.' }),
    ),
    redirect: Type.Optional(
      Type.Object(
        {
          scheme: Type.Optional(oneOf(['http', 'https'] as const, { description: "Default: the request's." })),
          host: Type.Optional(Type.String({ pattern: ROUTE_HOST_PATTERN, description: "Default: the request's Host." })),
          port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Default: none (the scheme\'s).' })),
          path: Type.Optional(Type.String({ pattern: PATH_PREFIX_PATTERN, description: "Replaces the request's path. Default: kept." })),
          strip_query: Type.Optional(Type.Boolean({ description: 'Drop the query string.', default: false })),
          code: Type.Optional(
            Type.Union([301, 302, 303, 307, 308].map((c) => Type.Literal(c)), { description: 'Status code.', default: 302 }),
          ),
        },
        { ...closed, description: 'Answer with a redirect instead of forwarding.' },
      ),
    ),
    rate_limit: Type.Optional(
      Type.String({ minLength: 1, description: 'Name of a [rate_limits.NAME] table applied to the requests this route matches (after the listener\'s own).' }),
    ),
    respond: Type.Optional(
      Type.Object(
        {
          status: Type.Integer({ minimum: 200, maximum: 599, description: 'Status code.' }),
          body: Type.Optional(Type.String({ description: 'Response body.' })),
          body_file: Type.Optional(Type.String({ minLength: 1, description: "Body read from this file at load; relative to the config file's directory." })),
          content_type: Type.Optional(Type.String({ description: 'Content-Type.', default: 'text/plain; charset=utf-8' })),
          headers: Type.Optional(
            Type.Record(Type.String({ pattern: `^${TOKEN}$` }), Type.String(), { description: 'Extra response headers, e.g. { "Retry-After" = "120" }.' }),
          ),
        },
        { ...closed, description: 'Answer with this fixed response instead of forwarding (maintenance page).' },
      ),
    ),
  },
  {
    ...closed,
    description:
      'A route: requests matching every given condition go to `pool` (or `split`), or are answered with `redirect` or `respond`.',
  },
);

/** A header, cookie or query condition: name plus exactly one of exact, prefix, regex, present. */
function valueMatch(what: string) {
  return Type.Object(
    {
      name: Type.String({ minLength: 1, description: `The ${what} name.` }),
      exact: Type.Optional(Type.String({ description: 'The value equals this.' })),
      prefix: Type.Optional(Type.String({ description: 'The value starts with this.' })),
      regex: Type.Optional(
        Type.String({
          minLength: 1,
          description:
            'The value contains a match of this JavaScript regular expression (anchor with ^ and $). Backreferences, ' +
            'lookarounds and quantified groups that hold a quantifier or "|" are refused (catastrophic backtracking).',
        }),
      ),
      present: Type.Optional(Type.Boolean({ description: 'true: the field must be there; false: it must be absent.' })),
    },
    { ...closed, description: `A ${what} condition: name and one of exact, prefix, regex, present.` },
  );
}

function headerRewrite(description: string) {
  const values = Type.Record(Type.String({ pattern: `^${TOKEN}$` }), Type.String(), {
    description: 'name = value; values may use ${client_ip}, ${host}, ${path}, ${method}, ${scheme}, ${route}, ${request_id} ($$ for "$").',
  });
  return Type.Object(
    {
      remove: Type.Optional(Type.Array(Type.String({ pattern: `^${TOKEN}$` }), { description: 'Header names to remove.' })),
      set: Type.Optional(values),
      add: Type.Optional(values),
    },
    { ...closed, description: `${description} Applied as remove, then set (replaces), then add (appends).` },
  );
}

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

const ClientAuthSchema = Type.Object(
  {
    ca: Type.String({
      minLength: 1,
      description: "PEM CA bundle that client certificates must chain to; relative to the config file's directory.",
    }),
    mode: Type.Optional(
      oneOf(['required', 'optional'] as const, {
        description:
          '"required": a client without a certificate fails the handshake (TLS alert), one whose certificate does ' +
          'not verify is disconnected right after it; "optional": a ' +
          'certificate is asked for, the connection proceeds without one (or with one that does not verify) and ' +
          'the result is passed on: X-Client-Verify is SUCCESS, NONE or FAILED:reason (NGINX ssl_verify_client).',
        default: DEFAULTS.client_auth.mode,
      }),
    ),
  },
  {
    ...closed,
    description:
      'Ask clients for a certificate (mTLS). http listeners send the backend X-Client-Verify, and for a verified ' +
      'certificate X-Client-Cert-Subject, X-Client-Cert-Fingerprint and X-Client-Cert-San; these fields are ' +
      'always removed from client requests.',
  },
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
    client_auth: Type.Optional(ClientAuthSchema),
  },
  { ...closed, description: 'Terminate TLS on this listener. Omit the table for plain text.' },
);

const BackendTlsSchema = Type.Object(
  {
    ca: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "PEM CA bundle the backends' certificates are verified against; relative to the config file's directory. " +
          "Default: Node's built-in root store.",
      }),
    ),
    server_name: Type.Optional(
      Type.String({
        pattern: SERVER_NAME_PATTERN,
        description:
          'Name sent as SNI and verified in the certificate. Default: the backend\'s host when it is a name; ' +
          'for an IP address no SNI is sent (RFC 6066 section 3) and the certificate must name that IP.',
      }),
    ),
    verify: Type.Optional(
      Type.Boolean({
        description:
          'Verify the certificate chain against `ca` and the name. false is INSECURE: anyone on the path can ' +
          'impersonate the backend. For tests and migrations only.',
        default: DEFAULTS.backend_tls.verify,
      }),
    ),
    cert: Type.Optional(
      Type.String({
        minLength: 1,
        description: "Client certificate chain (PEM) presented to backends that ask for one; needs `key`. Relative to the config file's directory.",
      }),
    ),
    key: Type.Optional(
      Type.String({ minLength: 1, description: "PEM private key of `cert`; relative to the config file's directory." }),
    ),
    min_version: Type.Optional(
      oneOf(['TLSv1.2', 'TLSv1.3'] as const, {
        description: 'Lowest TLS version offered to backends.',
        default: DEFAULTS.backend_tls.min_version,
      }),
    ),
  },
  {
    ...closed,
    description:
      'Connect to the backends over TLS (http pools and tcp pools; health checks too). Sessions are resumed ' +
      'per backend. Files are re-read on reload. Omit the table for plain text.',
  },
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
      duration(
        'http: time allowed to receive a request head. With proxy_protocol (http or tcp): also the time allowed for ' +
          'the PROXY header, and for a TLS handshake.',
        DEFAULTS.listener.client_header_timeout,
      ),
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
    proxy_protocol: Type.Optional(
      Type.Boolean({
        description:
          'Every connection must start with a PROXY protocol v1 or v2 header (HAProxy accept-proxy; before the TLS ' +
          'handshake on a tls listener) within client_header_timeout, else it is closed; the address it carries is ' +
          'the client (X-Forwarded-For, client-ip hashing, logs). For lb behind an L4 balancer that sends it.',
        default: DEFAULTS.listener.proxy_protocol,
      }),
    ),
    http2: Type.Optional(
      Type.Boolean({
        description:
          'http: also speak HTTP/2 to clients (NGINX `http2 on`, HAProxy `alpn h2,http/1.1`). With tls, ALPN offers ' +
          'h2 and http/1.1; without, a connection that starts with the HTTP/2 preface is taken as h2c (prior knowledge) ' +
          'and any other as HTTP/1.1. Streams take the same routes, limits, balancing and retries as HTTP/1.1 requests.',
        default: DEFAULTS.listener.http2,
      }),
    ),
    http2_max_concurrent_streams: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10000,
        description: 'http2: streams a client may have open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).',
        default: DEFAULTS.listener.http2_max_concurrent_streams,
      }),
    ),
    http2_initial_window_size: Type.Optional(
      Type.Integer({
        minimum: 65535,
        maximum: 2147483647,
        description:
          'http2: bytes of a request body a client may send on one stream before lb reads it (SETTINGS_INITIAL_WINDOW_SIZE); ' +
          'the connection window is the same size.',
        default: DEFAULTS.listener.http2_initial_window_size,
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
    priority: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 65535,
        description:
          'Priority tier, lower = preferred (as in DNS SRV records): a pool sends traffic only to the lowest tier ' +
          'that has a usable backend; the next tier is used only when the better one has none (HAProxy `backup` is ' +
          'the two-tier case: priority = 1).',
        default: DEFAULTS.backend.priority,
      }),
    ),
    max_connections: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'Requests (http) and connections (tcp, websocket) in flight to this backend at most, per worker process ' +
          '(NGINX max_conns): a backend at its cap is not picked; when every backend is, the request waits in the ' +
          "pool's queue (max_queue) or, without one, gets 503. 0 = no cap.",
        default: DEFAULTS.backend.max_connections,
      }),
    ),
  },
  { ...closed, description: 'A backend server.' },
);

const DiscoverySchema = Type.Object(
  {
    dns: Type.String({
      pattern: DNS_NAME_PATTERN,
      description:
        'DNS name whose records are the backends, queried as written (no search domains), e.g. ' +
        '"_http._tcp.app.service.consul" (SRV) or "app.internal" (A/AAAA).',
    }),
    type: oneOf(['SRV', 'A', 'AAAA'] as const, {
      description:
        '"SRV": each record (RFC 2782) is a backend at its target\'s address and port, with its weight and priority; ' +
        '"A" / "AAAA": each address is a backend on `port`.',
    }),
    port: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 65535, description: 'A/AAAA only (required there): the port of every discovered backend.' }),
    ),
    resolvers: Type.Optional(
      Type.Array(Type.String({ pattern: RESOLVER_PATTERN }), {
        minItems: 1,
        description:
          'DNS servers asked in order, each an IP address with an optional port (default 53), e.g. ["127.0.0.1:8600"]. ' +
          'Default: the nameservers of /etc/resolv.conf, read when discovery starts.',
      }),
    ),
    refresh: Type.Optional(
      duration('Re-resolve at this fixed interval instead of following the records\' TTL.'),
    ),
    min_ttl: Type.Optional(
      duration('A TTL shorter than this is raised to it; also the first retry delay after a failure.', DEFAULTS.discovery.min_ttl),
    ),
    max_ttl: Type.Optional(
      duration('A TTL longer than this is lowered to it; also the longest retry delay after failures.', DEFAULTS.discovery.max_ttl),
    ),
    timeout: Type.Optional(duration('Time a query to one resolver may take before the next is asked.', DEFAULTS.discovery.timeout)),
    hold_empty: Type.Optional(
      duration(
        'How long NXDOMAIN or an empty answer keeps the last non-empty answer before it is applied (HAProxy `hold nx`); ' +
          '"0s" applies it at once (Envoy STRICT_DNS). DNS failures never empty the pool.',
        DEFAULTS.discovery.hold_empty,
      ),
    ),
    weight: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        description: 'A/AAAA only: weight of every discovered backend (SRV records carry their own).',
        default: DEFAULTS.discovery.weight,
      }),
    ),
    max_connections: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'max_connections of every discovered backend (per worker process); 0 = no cap.',
        default: DEFAULTS.discovery.max_connections,
      }),
    ),
  },
  {
    ...closed,
    description:
      'Backends from DNS (A, AAAA or SRV records), re-resolved on the TTL, next to the static `backends`. ' +
      'Omit the table for static backends only.',
  },
);

const HealthCheckSchema = Type.Object(
  {
    type: Type.Optional(
      oneOf(['http', 'tcp', 'grpc'] as const, {
        description:
          '"http": GET `path` and check the status (over the pool\'s `protocol`); "tcp": open a connection; ' +
          '"grpc": call grpc.health.v1.Health/Check over HTTP/2 (the pool\'s h2 or h2c; for an http1 pool, h2 ' +
          'when it has `tls`, else h2c) and pass on SERVING.',
        default: DEFAULTS.health_check.type,
      }),
    ),
    service: Type.Optional(
      Type.String({
        description: 'grpc only: the service name asked about (HealthCheckRequest.service). Default "": the server as a whole.',
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

const SuccessRateSchema = Type.Object(
  {
    interval: Type.Optional(duration('How often success rates are compared (Envoy outlier_detection.interval).', DEFAULTS.success_rate.interval)),
    min_requests: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Requests a backend needs in an interval to be judged (Envoy success_rate_request_volume).',
        default: DEFAULTS.success_rate.min_requests,
      }),
    ),
    min_hosts: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: 'Backends with min_requests needed before any is judged (Envoy success_rate_minimum_hosts).',
        default: DEFAULTS.success_rate.min_hosts,
      }),
    ),
    stdev_factor: Type.Optional(
      Type.Number({
        minimum: 0,
        description:
          'A backend whose success rate is below mean - stdev_factor x stdev of the judged backends is ejected ' +
          '(Envoy success_rate_stdev_factor / 1000).',
        default: DEFAULTS.success_rate.stdev_factor,
      }),
    ),
  },
  { ...closed, description: 'http: eject backends whose share of non-5xx answers falls well below the pool\'s (Envoy success_rate outlier detection).' },
);

const RetryBudgetSchema = Type.Object(
  {
    percent: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 100,
        description: "Retries in flight at most this percent of the pool's requests in flight (Envoy retry_budget.budget_percent).",
        default: DEFAULTS.retry_budget.percent,
      }),
    ),
    min_retries: Type.Optional(
      Type.Integer({
        minimum: 0,
        description: 'Retries in flight always allowed, whatever the percent (Envoy retry_budget.min_retry_concurrency).',
        default: DEFAULTS.retry_budget.min_retries,
      }),
    ),
  },
  { ...closed, description: 'http: caps retries so that they cannot multiply an outage. Counts are per worker. Omit for no budget.' },
);

export const RETRY_ON = ['connect-failure', 'reset', '502', '503', '504', 'gateway-error'] as const;

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
    consecutive_5xx: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'http: eject after this many consecutive 5xx responses or failed requests, summed over workers ' +
          '(Envoy outlier_detection.consecutive_5xx). Unset: off.',
      }),
    ),
    consecutive_gateway_errors: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'http: eject after this many consecutive 502/503/504 responses or failed requests ' +
          '(Envoy outlier_detection.consecutive_gateway_failure). Unset: off.',
      }),
    ),
    max_ejection_percent: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 100,
        description:
          'At most this share of the pool ejected at once; at least one backend may always be ejected ' +
          '(Envoy max_ejection_percent, whose default is 10; the default here, 100, is no cap, as HAProxy).',
        default: DEFAULTS.passive.max_ejection_percent,
      }),
    ),
    max_eject_for: Type.Optional(
      duration(
        'An ejection lasts eject_for x the number of times the backend was ejected (less one for each eject_for ' +
          'it then served), at most this (Envoy base_ejection_time and max_ejection_time).',
        DEFAULTS.passive.max_eject_for,
      ),
    ),
    success_rate: Type.Optional(SuccessRateSchema),
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
    max_requests: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          "Requests (http) and connections (tcp) in flight over the pool at most, per worker process (HAProxy maxconn, " +
          'which is per process): for an instance-wide limit L with W workers, set L / W. Past it http requests wait ' +
          'in the queue (max_queue); tcp connections are closed. 0 = no cap.',
        default: DEFAULTS.breaker.max_requests,
      }),
    ),
    max_queue: Type.Optional(
      Type.Integer({
        minimum: 0,
        description:
          'http: requests that may wait, per worker, for max_requests or a backend under max_connections (HAProxy ' +
          'maxqueue); more get 503 at once. Needs max_requests or a backend max_connections. 0 = no queue: 503 at once.',
        default: DEFAULTS.breaker.max_queue,
      }),
    ),
    queue_timeout: Type.Optional(
      duration('http: a queued request waiting longer gets 503 (HAProxy timeout queue). Default: connect_timeout, as HAProxy.'),
    ),
    retry_on: Type.Optional(
      Type.Array(oneOf(RETRY_ON, { description: 'A retry condition.' }), {
        uniqueItems: true,
        description:
          'http: what is retried on another backend, up to `retries` (Envoy x-envoy-retry-on names): connect-failure; ' +
          'reset (the backend closed, reset or timed out before a response byte); 502, 503, 504; gateway-error ' +
          '(502, 503 and 504). Only idempotent requests without a body are retried after anything but a connect failure.',
        default: DEFAULTS.breaker.retry_on,
      }),
    ),
    per_try_timeout: Type.Optional(
      duration(
        'http: time allowed for each attempt until its response head (Envoy per_try_timeout); a timed-out attempt ' +
          'is retried when retry_on has reset, 504 or gateway-error. At most response_timeout, which then bounds ' +
          'the whole request: no attempt starts after it. Default: response_timeout.',
      ),
    ),
    retry_budget: Type.Optional(RetryBudgetSchema),
    backends: Type.Optional(
      Type.Array(BackendSchema, {
        description:
          'The static backend servers, e.g. [ { address = "10.0.0.11:3000" } ]; at least one unless `discovery` is set.',
      }),
    ),
    discovery: Type.Optional(DiscoverySchema),
    send_proxy: Type.Optional(
      oneOf(['v1', 'v2'] as const, {
        description:
          'Start every backend connection with a PROXY protocol header of this version carrying the client\'s ' +
          'address (HAProxy send-proxy / send-proxy-v2). http: such a connection serves one client connection ' +
          'only. Health-check connections start with a v1 UNKNOWN / v2 LOCAL header. Omit for none.',
      }),
    ),
    health_check: Type.Optional(HealthCheckSchema),
    passive: Type.Optional(PassiveSchema),
    tls: Type.Optional(BackendTlsSchema),
    protocol: Type.Optional(
      oneOf(['http1', 'h2', 'h2c'] as const, {
        description:
          'http: the protocol lb speaks to the backends (HAProxy `proto h2`, Envoy http2_protocol_options). ' +
          '"http1": HTTP/1.1; "h2": HTTP/2 over TLS, negotiated by ALPN (needs `tls`; a backend that does not ' +
          'select h2 fails to connect); "h2c": HTTP/2 over plain TCP with prior knowledge (RFC 9113 section 3.3). ' +
          'HTTP/2 streams are multiplexed over at most h2_max_connections connections per backend.',
        default: DEFAULTS.pool.protocol,
      }),
    ),
    h2_max_connections: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 1000,
        description:
          'protocol h2 / h2c: HTTP/2 connections per backend at most, per worker. A request goes on the open ' +
          "connection with the fewest streams; another connection is opened only when each open one is at the " +
          "backend's SETTINGS_MAX_CONCURRENT_STREAMS. Past the bound, requests wait for a stream (within " +
          'response_timeout); max_requests / max_queue and a backend max_connections limit them before that.',
        default: DEFAULTS.pool.h2_max_connections,
      }),
    ),
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

// Config loading: every error kind with the exact line `lb validate` prints, all errors of a file reported
// together, the docs/SPEC.md example, defaults, durations, addresses, the TOML position scanner and the
// checked-in JSON Schema.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { tryParseAddress } from '../config/address.js';
import { formatDuration, parseDuration, tryParseDuration } from '../config/duration.js';
import { formatPath, loadConfigFile, parseConfigText, parseHashKey, parseStatusRanges } from '../config/load.js';
import { createLocator, locate } from '../config/locate.js';
import { ConfigError, formatIssue, type LbConfig } from '../config/model.js';
import { jsonSchemaText } from '../config/schema.js';

/** The lines `lb validate` prints for `text` read from "lb.toml" (empty when valid). */
function lines(text: string): string[] {
  return parseConfigText(text, 'lb.toml').issues.map(formatIssue);
}

/** The config of `text` read from /etc/lb/lb.toml; throws with the printed issues when it is invalid. */
function valid(text: string): LbConfig {
  const r = parseConfigText(text, '/etc/lb/lb.toml');
  if (!r.config) throw new Error(`expected a valid config:\n${r.issues.map(formatIssue).join('\n')}`);
  return r.config;
}

const MIN = `[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "app"

[pools.app]
backends = [ { address = "10.0.0.1:3000" } ]

`;

// The example of docs/SPEC.md, verbatim.
const SPEC_EXAMPLE = `[daemon]
workers = "auto"              # worker processes: integer >= 1, or "auto" (one per CPU core)
grace_period = "30s"          # how long stop and reload wait for in-flight work

[admin]
socket = "/run/lb/admin.sock" # unix socket for the lb CLI; created with mode 0660, never a TCP port

[metrics]
listen = "127.0.0.1:9100"     # Prometheus text format at GET /metrics; omit the table to disable

[log]
level = "info"                # debug | info | warn | error; JSON lines on stdout (journald-friendly)
access = false                # one JSON line per HTTP request / TCP connection

[listeners.web]
protocol = "http"             # "http" (L7) or "tcp" (L4)
listen = "0.0.0.0:8080"
pool = "app"                  # where traffic goes when no route matches

[[listeners.web.routes]]      # http only; checked in order, first match wins
host = "api.example.com"      # optional; exact host, or "*.example.com"
path_prefix = "/v1/"          # optional
pool = "api"

[listeners.db]
protocol = "tcp"
listen = "127.0.0.1:6432"
pool = "postgres"

[pools.app]
algorithm = "weighted-round-robin"
retries = 2                   # other backends tried when connecting fails (and, for http, idempotent
                              # requests whose backend failed before sending a response byte)
connect_timeout = "2s"
response_timeout = "30s"      # http: until the response head arrives
backends = [
  { name = "app-1", address = "10.0.0.11:3000", weight = 3 },
  { name = "app-2", address = "10.0.0.12:3000" },          # weight defaults to 1
]

[pools.app.health_check]      # active checks; omit the table for none
type = "http"                 # "http" or "tcp"
path = "/healthz"             # http only
expect_status = "200-399"     # http only
interval = "2s"
timeout = "1s"
rise = 2                      # consecutive passes to mark a backend up
fall = 3                      # consecutive failures to mark it down

[pools.app.passive]           # outlier ejection from live traffic; omit the table for none
max_failures = 5              # consecutive failed requests/connections
eject_for = "30s"

[pools.api]
algorithm = "consistent-hash"
hash_key = "header:x-user-id" # client-ip | header:NAME | cookie:NAME | query:NAME | path
backends = [ { address = "10.0.0.21:4000" }, { address = "10.0.0.22:4000" } ]
`;

// The SPEC example names a pool "postgres" that it does not define; the fixture adds it.
const SPEC_FIXTURE = `${SPEC_EXAMPLE}
[pools.postgres]
algorithm = "least-connections"
backends = [ { address = "10.0.0.31:5432" } ]
`;

t.test('the docs/SPEC.md example', async (t) => {
  t.same(lines(SPEC_EXAMPLE), ['lb.toml:28:1: listeners.db.pool: unknown pool "postgres" (defined pools: app, api)'],
    'as written, it only lacks the postgres pool');

  const c = valid(SPEC_FIXTURE);
  const workers = availableParallelism();
  t.same(c, {
    file: '/etc/lb/lb.toml',
    daemon: { workers, workersSetting: 'auto', gracePeriodMs: 30_000, accept: 'shared', stateFile: '/var/lib/lb/state.json' },
    admin: { socket: '/run/lb/admin.sock' },
    metrics: { listen: { host: '127.0.0.1', port: 9100, text: '127.0.0.1:9100' } },
    log: { level: 'info', access: false },
    listeners: {
      web: {
        name: 'web',
        protocol: 'http',
        listen: { host: '0.0.0.0', port: 8080, text: '0.0.0.0:8080' },
        pool: 'app',
        routes: [{ host: 'api.example.com', pathPrefix: '/v1/', pool: 'api' }],
        maxConnections: 0,
        clientHeaderTimeoutMs: 10_000,
        clientBodyTimeoutMs: 60_000,
        idleTimeoutMs: 60_000,
        maxHeaderSize: 16384,
        proxyProtocol: false,
      },
      db: {
        name: 'db',
        protocol: 'tcp',
        listen: { host: '127.0.0.1', port: 6432, text: '127.0.0.1:6432' },
        pool: 'postgres',
        routes: [],
        maxConnections: 0,
        clientHeaderTimeoutMs: 10_000,
        clientBodyTimeoutMs: 60_000,
        idleTimeoutMs: 0,
        maxHeaderSize: 16384,
        proxyProtocol: false,
      },
    },
    pools: {
      app: {
        name: 'app',
        algorithm: 'weighted-round-robin',
        retries: 2,
        connectTimeoutMs: 2000,
        responseTimeoutMs: 30_000,
        readTimeoutMs: 60_000,
        slowStartMs: 0,
        maxRequests: 0,
        maxQueue: 0,
        queueTimeoutMs: 2000,
        retryOn: { connectFailure: true, reset: true, statuses: [] },
        perTryTimeoutMs: 0,
        backends: [
          { name: 'app-1', address: { host: '10.0.0.11', port: 3000, text: '10.0.0.11:3000' }, weight: 3, maxConnections: 0, priority: 0 },
          { name: 'app-2', address: { host: '10.0.0.12', port: 3000, text: '10.0.0.12:3000' }, weight: 1, maxConnections: 0, priority: 0 },
        ],
        healthCheck: {
          type: 'http',
          path: '/healthz',
          expectStatus: [[200, 399]],
          intervalMs: 2000,
          timeoutMs: 1000,
          rise: 2,
          fall: 3,
        },
        passive: {
          maxFailures: 5,
          ejectForMs: 30_000,
          on5xx: false,
          consecutive5xx: 0,
          consecutiveGatewayErrors: 0,
          maxEjectionPercent: 100,
          maxEjectForMs: 300_000,
          report5xx: false,
        },
      },
      api: {
        name: 'api',
        algorithm: 'consistent-hash',
        hashKey: { kind: 'header', name: 'x-user-id' },
        retries: 2,
        connectTimeoutMs: 2000,
        responseTimeoutMs: 30_000,
        readTimeoutMs: 60_000,
        slowStartMs: 0,
        maxRequests: 0,
        maxQueue: 0,
        queueTimeoutMs: 2000,
        retryOn: { connectFailure: true, reset: true, statuses: [] },
        perTryTimeoutMs: 0,
        backends: [
          { name: '10.0.0.21:4000', address: { host: '10.0.0.21', port: 4000, text: '10.0.0.21:4000' }, weight: 1, maxConnections: 0, priority: 0 },
          { name: '10.0.0.22:4000', address: { host: '10.0.0.22', port: 4000, text: '10.0.0.22:4000' }, weight: 1, maxConnections: 0, priority: 0 },
        ],
      },
      postgres: {
        name: 'postgres',
        algorithm: 'least-connections',
        retries: 2,
        connectTimeoutMs: 2000,
        responseTimeoutMs: 30_000,
        readTimeoutMs: 60_000,
        slowStartMs: 0,
        maxRequests: 0,
        maxQueue: 0,
        queueTimeoutMs: 2000,
        retryOn: { connectFailure: true, reset: true, statuses: [] },
        perTryTimeoutMs: 0,
        backends: [
          { name: '10.0.0.31:5432', address: { host: '10.0.0.31', port: 5432, text: '10.0.0.31:5432' }, weight: 1, maxConnections: 0, priority: 0 },
        ],
      },
    },
  });
  t.equal(Object.hasOwn(c.pools['app'] ?? {}, 'hashKey'), false, 'no hashKey for key-less algorithms');
});

t.test('defaults of a minimal config', async (t) => {
  const c = valid(MIN);
  t.same(c.daemon, { workers: availableParallelism(), workersSetting: 'auto', gracePeriodMs: 30_000, accept: 'shared', stateFile: '/var/lib/lb/state.json' });
  t.same(c.admin, { socket: '/run/lb/admin.sock' });
  t.equal(c.metrics, undefined, 'no [metrics] = metrics disabled');
  t.same(c.log, { level: 'info', access: false });
  t.same(c.pools['app'], {
    name: 'app',
    algorithm: 'round-robin',
    retries: 2,
    connectTimeoutMs: 2000,
    responseTimeoutMs: 30_000,
    readTimeoutMs: 60_000,
    slowStartMs: 0,
    maxRequests: 0,
    maxQueue: 0,
    queueTimeoutMs: 2000,
    retryOn: { connectFailure: true, reset: true, statuses: [] },
    perTryTimeoutMs: 0,
    backends: [{ name: '10.0.0.1:3000', address: { host: '10.0.0.1', port: 3000, text: '10.0.0.1:3000' }, weight: 1, maxConnections: 0, priority: 0 }],
  });
  t.same(c.listeners['web']?.routes, []);
  t.equal(c.listeners['web']?.tls, undefined);

  const full = valid(`${MIN}
[pools.app.health_check]
[pools.app.passive]
[pools.hash]
algorithm = "maglev"
backends = [ { address = "h:1" } ]
`);
  t.same(full.pools['app']?.healthCheck, {
    type: 'http', path: '/', expectStatus: [[200, 399]], intervalMs: 2000, timeoutMs: 1000, rise: 2, fall: 3,
  });
  t.same(full.pools['app']?.passive, {
          maxFailures: 5,
          ejectForMs: 30_000,
          on5xx: false,
          consecutive5xx: 0,
          consecutiveGatewayErrors: 0,
          maxEjectionPercent: 100,
          maxEjectForMs: 300_000,
          report5xx: false,
        });
  t.same(full.pools['hash']?.hashKey, { kind: 'client-ip' }, 'hash algorithms default to client-ip');
});

t.test('every key of the extensions, set', async (t) => {
  const c = valid(`[daemon]
workers = 3
grace_period = "1m30s"
state_file = "state/lb.json"

[admin]
socket = "run/admin.sock"

[log]
level = "debug"
access = true

[listeners.web]
protocol = "http"
listen = "[::]:8443"
pool = "app"
max_connections = 1000
client_header_timeout = "5s"
client_body_timeout = "30s"
idle_timeout = "2m"
max_header_size = 32768
tls = { cert = "certs/web.pem", key = "/etc/lb/web.key", min_version = "TLSv1.3", sni = [
  { server_name = "API.example.com", cert = "api.pem", key = "api.key" },
], client_auth = { ca = "clients.pem", mode = "optional" } }

[[listeners.web.routes]]
host = "*.Example.COM"
pool = "app"

[[listeners.web.routes]]
path_prefix = "/static/"
pool = "app"

[listeners.raw]
protocol = "tcp"
listen = "0.0.0.0:0"
pool = "tcp"
idle_timeout = "5m"
proxy_protocol = true
client_header_timeout = "3s"

[pools.app]
algorithm = "./algos/mine.js"
hash_key = "cookie:SESSION"
slow_start = "30s"
read_timeout = "45s"
backends = [ { name = "a", address = "localhost:3000", weight = 0, max_connections = 50 } ]
health_check = { host = "health.internal", expect_status = "200,204,300-399" }
passive = { on_5xx = true }
tls = { ca = "ca/backends.pem", server_name = "App.Internal.", verify = false, cert = "client.pem", key = "client.key", min_version = "TLSv1.3" }

[pools.tcp]
algorithm = "consistent-hash"
send_proxy = "v2"
backends = [ { address = "10.0.0.9:5432" } ]
health_check = { type = "tcp" }
`);
  t.same(c.daemon, { workers: 3, workersSetting: 3, gracePeriodMs: 90_000, accept: 'shared', stateFile: '/etc/lb/state/lb.json' });
  t.equal(c.admin.socket, '/etc/lb/run/admin.sock', 'relative to the config file');
  t.same(c.log, { level: 'debug', access: true });
  const web = c.listeners['web'];
  t.same(web?.tls, {
    cert: '/etc/lb/certs/web.pem',
    key: '/etc/lb/web.key',
    sni: [{ serverName: 'api.example.com', cert: '/etc/lb/api.pem', key: '/etc/lb/api.key' }],
    minVersion: 'TLSv1.3',
    clientAuth: { ca: '/etc/lb/clients.pem', mode: 'optional' },
  });
  t.same(web?.routes, [{ host: '*.example.com', pool: 'app' }, { pathPrefix: '/static/', pool: 'app' }]);
  t.same([web?.maxConnections, web?.clientHeaderTimeoutMs, web?.clientBodyTimeoutMs, web?.idleTimeoutMs, web?.maxHeaderSize], [1000, 5000, 30_000, 120_000, 32768]);
  t.same(web?.listen, { host: '::', port: 8443, text: '[::]:8443' });
  t.same(c.listeners['raw']?.listen.port, 0, 'listeners may use port 0');
  t.equal(c.listeners['raw']?.idleTimeoutMs, 300_000);
  t.equal(c.listeners['raw']?.proxyProtocol, true);
  t.equal(c.listeners['raw']?.clientHeaderTimeoutMs, 3000, 'client_header_timeout on a tcp listener with proxy_protocol');
  t.equal(web?.proxyProtocol, false);
  t.equal(c.pools['tcp']?.sendProxy, 'v2');
  t.equal(c.pools['tcp']?.healthCheck?.sendProxy, 'v2', "the pool's send_proxy goes with its health checks");
  t.equal(c.pools['app']?.sendProxy, undefined);
  const app = c.pools['app'];
  t.equal(app?.algorithm, '/etc/lb/algos/mine.js', 'module paths resolved against the config directory');
  t.same(app?.hashKey, { kind: 'cookie', name: 'SESSION' }, 'module algorithms may take a hash_key');
  t.equal(app?.slowStartMs, 30_000);
  t.equal(app?.readTimeoutMs, 45_000);
  t.same(app?.backends, [{ name: 'a', address: { host: 'localhost', port: 3000, text: 'localhost:3000' }, weight: 0, maxConnections: 50, priority: 0 }]);
  t.equal(app?.healthCheck?.host, 'health.internal');
  t.same(app?.healthCheck?.expectStatus, [[200, 200], [204, 204], [300, 399]]);
  t.equal(app?.passive?.on5xx, true);
  t.same(app?.tls, { ca: '/etc/lb/ca/backends.pem', serverName: 'app.internal', verify: false, cert: '/etc/lb/client.pem', key: '/etc/lb/client.key', minVersion: 'TLSv1.3' });
  t.equal(c.pools['tcp']?.tls, undefined);
});

// One case per error kind: the config text and the exact lines printed.
const errorCases: Array<[string, string, string[]]> = [
  ['TOML syntax error', 'a = 1\nb = [1,\n  2,,]\n', ['lb.toml:3:5: Invalid TOML document: invalid value']],
  ['duplicate TOML key', `${MIN}[pools.app]\n`, ['lb.toml:9:2: Invalid TOML document: trying to redefine an already defined table or value']],
  ['no listeners and no pools', '# empty\n', [
    'lb.toml:1:1: missing [listeners]: at least one listener is required, e.g. [listeners.web]',
    'lb.toml:1:1: missing [pools]: at least one pool is required, e.g. [pools.app]',
  ]],
  ['empty listeners and pools tables', 'listeners = {}\npools = {}\n', [
    'lb.toml:1:1: listeners: at least one listener is required, e.g. [listeners.web]',
    'lb.toml:2:1: pools: at least one pool is required, e.g. [pools.app]',
  ]],
  ['unknown key with a suggestion', MIN.replace('{ address', '{ wieght = 2, address'), [
    'lb.toml:7:16: pools.app.backends[0].wieght: unknown key "wieght" (did you mean "weight"?)',
  ]],
  ['unknown key without a suggestion', `[daemon]\ncolour = "blue"\n${MIN}`, [
    'lb.toml:2:1: daemon.colour: unknown key "colour" (allowed: workers, grace_period, accept, state_file)',
  ]],
  ['unknown top-level table', `${MIN}[listener.api]\nprotocol = "http"\n`, [
    'lb.toml:9:2: listener: unknown key "listener" (did you mean "listeners"?)',
  ]],
  ['missing required keys', '[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:80"\n[pools.app]\nbackends = [ {} ]\n', [
    'lb.toml:1:12: listeners.web: missing required key "pool"',
    'lb.toml:5:14: pools.app.backends[0]: missing required key "address"',
  ]],
  ['integer given as a string', MIN.replace('{ address = "10.0.0.1:3000" }', '{ address = "10.0.0.1:3000", weight = "3" }'), [
    'lb.toml:7:43: pools.app.backends[0].weight: expected an integer, got string "3"',
  ]],
  ['integer out of range', `${MIN}retries = 11\n`, ['lb.toml:9:1: pools.app.retries: must be <= 10 (got 11)']],
  ['weight below 0', MIN.replace('{ address = "10.0.0.1:3000" }', '{ address = "10.0.0.1:3000", weight = -1 }'), [
    'lb.toml:7:43: pools.app.backends[0].weight: must be >= 0 (got -1)',
  ]],
  ['max_connections below 0', MIN.replace('{ address = "10.0.0.1:3000" }', '{ address = "10.0.0.1:3000", max_connections = -5 }'), [
    'lb.toml:7:43: pools.app.backends[0].max_connections: must be >= 0 (got -5)',
  ]],
  ['bad read_timeout', `${MIN}read_timeout = "soon"\n`, ['lb.toml:9:1: pools.app.read_timeout: invalid duration "soon": use a number with a unit (ms, s, m, h), e.g. "250ms"']],
  ['float for an integer', `${MIN}[pools.app.health_check]\nrise = 1.5\n`, [
    'lb.toml:10:1: pools.app.health_check.rise: expected an integer, got float 1.5',
  ]],
  ['enum', MIN.replace('protocol = "http"', 'protocol = "udp"'), [
    'lb.toml:2:1: listeners.web.protocol: must be one of: http, tcp (got "udp"; did you mean "tcp"?)',
  ]],
  ['enum with a suggestion', `[log]\nlevel = "warning"\n${MIN}`, [
    'lb.toml:2:1: log.level: must be one of: debug, info, warn, error (got "warning"; did you mean "warn"?)',
  ]],
  ['workers', `[daemon]\nworkers = 0\n${MIN}`, [
    'lb.toml:2:1: daemon.workers: expected an integer >= 1 or "auto", got integer 0',
  ]],
  ['boolean', `[log]\naccess = "yes"\n${MIN}`, ['lb.toml:2:1: log.access: expected true or false, got string "yes"']],
  ['table expected', `daemon = 4\n${MIN}`, ['lb.toml:1:1: daemon: expected a table, got integer 4']],
  ['empty backends', MIN.replace('[ { address = "10.0.0.1:3000" } ]', '[]'), [
    'lb.toml:7:1: pools.app.backends: at least one backend is required, e.g. backends = [ { address = "10.0.0.11:3000" } ], or a discovery table to take them from DNS',
  ]],
  ['no backends and no discovery', MIN.replace('backends = [ { address = "10.0.0.1:3000" } ]', 'retries = 1'), [
    'lb.toml:6:8: pools.app: at least one backend is required, e.g. backends = [ { address = "10.0.0.11:3000" } ], or a discovery table to take them from DNS',
  ]],
  ['discovery: A without port, bad name, unknown key', `${MIN}discovery = { dns = "app..internal", type = "A", ttl = "5s" }
`, [
    'lb.toml:9:1: pools.app.discovery: missing required key "port": type = "A" records have no port, e.g. port = 8080',
    'lb.toml:9:15: pools.app.discovery.dns: invalid DNS name "app..internal": use labels of letters, digits, "-" and "_" separated by ".", e.g. "_http._tcp.app.service.consul"',
    'lb.toml:9:50: pools.app.discovery.ttl: unknown key "ttl" (allowed: dns, type, port, resolvers, refresh, min_ttl, max_ttl, timeout, hold_empty, weight, max_connections)',
  ]],
  ['discovery: SRV with port and weight, bad type', `${MIN}[pools.app.discovery]\ndns = "_http._tcp.app.service.consul"\ntype = "SRV"\nport = 80\nweight = 2\n[pools.b.discovery]\ndns = "b.internal"\ntype = "MX"\n`, [
    'lb.toml:12:1: pools.app.discovery.port: port applies to type = "A" and "AAAA" only: SRV records carry their own',
    'lb.toml:13:1: pools.app.discovery.weight: weight applies to type = "A" and "AAAA" only: SRV records carry their own',
    'lb.toml:16:1: pools.b.discovery.type: must be one of: SRV, A, AAAA (got "MX")',
  ]],
  ['discovery: resolvers and TTL bounds', `${MIN}[pools.app.discovery]\ndns = "app.internal"\ntype = "AAAA"\nport = 8080\nresolvers = ["127.0.0.1:8600", "dns.internal:53", "10.0.0.1:0", "1.2.3"]\nmin_ttl = "10s"\nmax_ttl = "5s"\nrefresh = "0s"\n`, [
    'lb.toml:13:32: pools.app.discovery.resolvers[1]: invalid resolver "dns.internal:53": use an IP address, e.g. "127.0.0.1:8600" (a name would need a resolver itself)',
    'lb.toml:13:51: pools.app.discovery.resolvers[2]: invalid resolver "10.0.0.1:0": port must be 1..65535',
    'lb.toml:13:65: pools.app.discovery.resolvers[3]: invalid resolver "1.2.3": not an IP address, e.g. "10.0.0.2" or "127.0.0.1:8600"',
    'lb.toml:15:1: pools.app.discovery.max_ttl: max_ttl (5s) must not be shorter than min_ttl (10s)',
    'lb.toml:16:1: pools.app.discovery.refresh: must be longer than 0 (got "0s")',
  ]],
  ['invalid duration', `${MIN}connect_timeout = "2x"\n`, [
    'lb.toml:9:1: pools.app.connect_timeout: invalid duration "2x": use a number with a unit (ms, s, m, h), e.g. "250ms"',
  ]],
  ['duration without unit', `${MIN}connect_timeout = "5"\n`, [
    'lb.toml:9:1: pools.app.connect_timeout: invalid duration "5": missing unit; use a number with a unit (ms, s, m, h), e.g. "5s"',
  ]],
  ['duration as a number', `${MIN}connect_timeout = 2\n`, [
    'lb.toml:9:1: pools.app.connect_timeout: expected a duration string such as "2s", got integer 2',
  ]],
  ['negative duration', `[daemon]\ngrace_period = "-1s"\n${MIN}`, [
    'lb.toml:2:1: daemon.grace_period: invalid duration "-1s": must not be negative',
  ]],
  ['sub-millisecond duration', `${MIN}connect_timeout = "1.5ms"\n`, [
    'lb.toml:9:1: pools.app.connect_timeout: invalid duration "1.5ms": the smallest unit is 1ms',
  ]],
  ['duration beyond the timer limit', `${MIN}response_timeout = "600h"\n`, [
    'lb.toml:9:1: pools.app.response_timeout: invalid duration "600h": the maximum is 2147483647ms (about 24.8 days)',
  ]],
  ['zero timeout', `${MIN}connect_timeout = "0s"\n`, ['lb.toml:9:1: pools.app.connect_timeout: must be longer than 0 (got "0s")']],
  ['IPv6 without brackets', MIN.replace('127.0.0.1:8080', '::1:8080'), [
    'lb.toml:3:1: listeners.web.listen: invalid address "::1:8080": put IPv6 addresses in brackets, e.g. "[::1]:8080"',
  ]],
  ['address without port', MIN.replace('10.0.0.1:3000', '10.0.0.1'), [
    'lb.toml:7:16: pools.app.backends[0].address: invalid address "10.0.0.1": missing port; use host:port, e.g. "10.0.0.1:8080"',
  ]],
  ['backend port 0', MIN.replace('10.0.0.1:3000', '10.0.0.1:0'), [
    'lb.toml:7:16: pools.app.backends[0].address: invalid address "10.0.0.1:0": port must be 1..65535',
  ]],
  ['listener port out of range', MIN.replace('127.0.0.1:8080', '127.0.0.1:65536'), [
    'lb.toml:3:1: listeners.web.listen: invalid address "127.0.0.1:65536": port must be 0..65535',
  ]],
  ['unknown listener pool', MIN.replace('pool = "app"', 'pool = "ap"'), [
    'lb.toml:4:1: listeners.web.pool: unknown pool "ap" (did you mean "app"?)',
  ]],
  ['unknown route pool', `${MIN}[[listeners.web.routes]]\npath_prefix = "/api/"\npool = "api"\n`, [
    'lb.toml:11:1: listeners.web.routes[0].pool: unknown pool "api" (did you mean "app"?)',
  ]],
  ['unknown route pool, no close name', `${MIN}[[listeners.web.routes]]\npool = "backend"\n`, [
    'lb.toml:10:1: listeners.web.routes[0].pool: unknown pool "backend" (defined pools: app)',
  ]],
  ['routes on a tcp listener', MIN.replace('"http"', '"tcp"').replace('pool = "app"\n', 'pool = "app"\nroutes = [ { pool = "app" } ]\n'), [
    'lb.toml:5:1: listeners.web.routes: routes apply to http listeners only (this one has protocol = "tcp")',
  ]],
  ['http-only listener keys on a tcp listener', MIN.replace('"http"', '"tcp"').replace('pool = "app"\n', 'pool = "app"\nmax_header_size = 8192\n'), [
    'lb.toml:5:1: listeners.web.max_header_size: max_header_size applies to http listeners only (this one has protocol = "tcp")',
  ]],
  ['client_body_timeout on a tcp listener', MIN.replace('"http"', '"tcp"').replace('pool = "app"\n', 'pool = "app"\nclient_body_timeout = "5s"\n'), [
    'lb.toml:5:1: listeners.web.client_body_timeout: client_body_timeout applies to http listeners only (this one has protocol = "tcp")',
  ]],
  ['client_header_timeout on a tcp listener without proxy_protocol', MIN.replace('"http"', '"tcp"').replace('pool = "app"\n', 'pool = "app"\nclient_header_timeout = "5s"\n'), [
    'lb.toml:5:1: listeners.web.client_header_timeout: client_header_timeout applies to http listeners only (this one has protocol = "tcp")',
  ]],
  ['proxy_protocol not a boolean', MIN.replace('pool = "app"\n', 'pool = "app"\nproxy_protocol = "yes"\n'), [
    'lb.toml:5:1: listeners.web.proxy_protocol: expected true or false, got string "yes"',
  ]],
  ['send_proxy version', `${MIN}send_proxy = "v3"\n`, [
    'lb.toml:9:1: pools.app.send_proxy: must be one of: v1, v2 (got "v3"; did you mean "v1"?)',
  ]],
  ['client_body_timeout that is not a duration', MIN.replace('pool = "app"\n', 'pool = "app"\nclient_body_timeout = "soon"\n'), [
    'lb.toml:5:1: listeners.web.client_body_timeout: invalid duration "soon": use a number with a unit (ms, s, m, h), e.g. "250ms"',
  ]],
  ['backends as an array of tables', `[listeners.web]
protocol = "http"
listen = "127.0.0.1:8080"
pool = "app"

[[pools.app.backends]]
address = "10.0.0.1:3000"

[[pools.app.backends]]
address = "10.0.0.2:3000"
weight = 1.5
`, ['lb.toml:11:1: pools.app.backends[1].weight: expected an integer, got float 1.5']],
  ['duplicate backend names', MIN.replace('[ { address = "10.0.0.1:3000" } ]', `[
  { name = "a", address = "10.0.0.1:3000" },
  { name = "a", address = "10.0.0.2:3000" },
  { address = "10.0.0.3:3000" },
  { address = "10.0.0.3:3000" },
]`), [
    'lb.toml:9:5: pools.app.backends[1].name: duplicate backend name "a" (also pools.app.backends[0])',
    'lb.toml:11:5: pools.app.backends[3].address: duplicate backend name "10.0.0.3:3000" (also pools.app.backends[2]); ' +
      'a backend\'s name defaults to its address: set name = "..." to tell them apart',
  ]],
  ['hash_key on a key-less algorithm', `${MIN}hash_key = "client-ip"\n`, [
    'lb.toml:9:1: pools.app.hash_key: hash_key has no effect with algorithm "round-robin": only consistent-hash and maglev hash a key',
  ]],
  ['hash_key syntax', `${MIN}algorithm = "consistent-hash"\nhash_key = "hdr:x-user"\n`, [
    'lb.toml:10:1: pools.app.hash_key: invalid hash_key "hdr:x-user": use client-ip, path, header:NAME, cookie:NAME or query:NAME',
  ]],
  ['hash_key without a name', `${MIN}algorithm = "maglev"\nhash_key = "header:"\n`, [
    'lb.toml:10:1: pools.app.hash_key: invalid hash_key "header:": use client-ip, path, header:NAME, cookie:NAME or query:NAME; ' +
      'header needs a NAME, e.g. "header:x-user-id"',
  ]],
  ['unknown algorithm', `${MIN}algorithm = "round-robbin"\n`, [
    'lb.toml:9:1: pools.app.algorithm: unknown algorithm "round-robbin" (did you mean "round-robin"?): use one of round-robin, ' +
      'weighted-round-robin, least-connections, consistent-hash, maglev, random, power-of-two-choices, peak-ewma, or a module path ' +
      'starting with "./", "../" or "/"',
  ]],
  ['tcp listener on a pool hashing an http header', MIN.replace('"http"', '"tcp"') + 'algorithm = "consistent-hash"\nhash_key = "header:x-user-id"\n', [
    'lb.toml:4:1: listeners.web.pool: pool "app" hashes on "header:x-user-id", which a tcp listener does not have; ' +
      'use hash_key = "client-ip" in that pool',
  ]],
  ['two listeners on the same address', `${MIN}[listeners.other]\nprotocol = "tcp"\nlisten = "127.0.0.1:8080"\npool = "app"\n`, [
    'lb.toml:11:1: listeners.other.listen: address already used by listeners.web.listen = "127.0.0.1:8080"',
  ]],
  ['a wildcard listener overlapping another', `${MIN}[listeners.other]\nprotocol = "tcp"\nlisten = "0.0.0.0:8080"\npool = "app"\n`, [
    'lb.toml:11:1: listeners.other.listen: overlaps listeners.web.listen = "127.0.0.1:8080": a wildcard address takes the port on every interface',
  ]],
  ['metrics on a listener address', `[metrics]\nlisten = "[::]:8080"\n${MIN}`, [
    'lb.toml:2:1: metrics.listen: overlaps listeners.web.listen = "127.0.0.1:8080": a wildcard address takes the port on every interface',
  ]],
  ['health check timeout longer than interval', `${MIN}[pools.app.health_check]\ninterval = "1s"\ntimeout = "1500ms"\n`, [
    'lb.toml:11:1: pools.app.health_check.timeout: timeout (1.5s) must not be longer than interval (1s)',
  ]],
  ['path on a tcp health check', `${MIN}[pools.app.health_check]\ntype = "tcp"\npath = "/healthz"\nexpect_status = "200"\n`, [
    'lb.toml:11:1: pools.app.health_check.path: path applies to http health checks only (this one has type = "tcp")',
    'lb.toml:12:1: pools.app.health_check.expect_status: expect_status applies to http health checks only (this one has type = "tcp")',
  ]],
  ['expect_status syntax', `${MIN}[pools.app.health_check]\nexpect_status = "2xx"\n`, [
    'lb.toml:10:1: pools.app.health_check.expect_status: invalid expect_status "2xx": use a status, a range or a list, e.g. "200", "200-399" or "200,204,300-399"',
  ]],
  ['expect_status empty range', `${MIN}[pools.app.health_check]\nexpect_status = "399-200"\n`, [
    'lb.toml:10:1: pools.app.health_check.expect_status: invalid expect_status "399-200": 399-200 is an empty range',
  ]],
  ['route host with a port', `${MIN}[[listeners.web.routes]]\nhost = "api.example.com:443"\npool = "app"\n`, [
    'lb.toml:10:1: listeners.web.routes[0].host: invalid host "api.example.com:443": write the host name without a port',
  ]],
  ['route path_prefix without a slash', `${MIN}[[listeners.web.routes]]\npath_prefix = "v1/"\npool = "app"\n`, [
    'lb.toml:10:1: listeners.web.routes[0].path_prefix: must start with "/" (got "v1/")',
  ]],
  ['invalid pool name', MIN.replace('[pools.app]', '[pools."app/v2"]').replace('pool = "app"', 'pool = "app/v2"'), [
    'lb.toml:6:8: pools."app/v2": invalid pool name "app/v2": use letters, digits, "_", "-" and ".", starting with a letter or digit',
  ]],
  ['a pool name that is not a plain key', `${MIN}[pools.__proto__]\nbackends = [ { address = "10.0.0.1:1" } ]\n`, [
    'lb.toml:9:8: pools.__proto__: invalid pool name "__proto__": use letters, digits, "_", "-" and ".", starting with a letter or digit',
  ]],
  ['max_header_size range', MIN.replace('pool = "app"\n', 'pool = "app"\nmax_header_size = 100\n'), [
    'lb.toml:5:1: listeners.web.max_header_size: must be >= 1024 (got 100)',
  ]],
  ['tls min_version', MIN.replace('pool = "app"\n', 'pool = "app"\ntls = { cert = "a.pem", key = "a.key", min_version = "TLSv1.1" }\n'), [
    'lb.toml:5:40: listeners.web.tls.min_version: must be one of: TLSv1.2, TLSv1.3 (got "TLSv1.1"; did you mean "TLSv1.2"?)',
  ]],
  ['pool tls: server_name an IP, cert without key, unknown key', MIN.replace('3000" } ]\n', '3000" } ]\ntls = { server_name = "10.0.0.1", cert = "c.pem", veryfy = false }\n'), [
    'lb.toml:8:9: pools.app.tls.server_name: server_name "10.0.0.1" is an IP address: SNI carries DNS names only (RFC 6066 section 3); leave server_name out and the certificate is verified against the backend\'s IP',
    'lb.toml:8:35: pools.app.tls.cert: cert and key go together: set both for a client certificate, or neither',
    'lb.toml:8:51: pools.app.tls.veryfy: unknown key "veryfy" (did you mean "verify"?)',
  ]],
  ['pool tls: wildcard server_name', MIN.replace('3000" } ]\n', '3000" } ]\ntls = { server_name = "*.internal" }\n'), [
    'lb.toml:8:9: pools.app.tls.server_name: invalid server_name "*.internal": use a DNS name such as "app.internal" (no port, no wildcard)',
  ]],
  ['client_auth mode', MIN.replace('pool = "app"\n', 'pool = "app"\ntls = { cert = "a.pem", key = "a.key", client_auth = { ca = "ca.pem", mode = "on" } }\n'), [
    'lb.toml:5:71: listeners.web.tls.client_auth.mode: must be one of: required, optional (got "on")',
  ]],
  ['empty string', `[admin]\nsocket = ""\n${MIN}`, ['lb.toml:2:1: admin.socket: must not be empty']],
  ['state_file not a string', `[daemon]\nstate_file = 5\n${MIN}`, ['lb.toml:2:1: daemon.state_file: expected a string, got integer 5']],
];

t.test('discovery: the model, with defaults, and a pool of discovered backends only', async (t) => {
  const c = valid(MIN.replace('backends = [ { address = "10.0.0.1:3000" } ]',
    'discovery = { dns = "_http._tcp.app.service.consul.", type = "SRV", resolvers = ["127.0.0.1:8600", "::1", "[fd00::53]:5353", "10.0.0.2"] }'));
  t.same(c.pools['app']?.backends, []);
  t.same(c.pools['app']?.discovery, {
    dns: '_http._tcp.app.service.consul',
    type: 'SRV',
    resolvers: [
      { host: '127.0.0.1', port: 8600, text: '127.0.0.1:8600' },
      { host: '::1', port: 53, text: '[::1]:53' },
      { host: 'fd00::53', port: 5353, text: '[fd00::53]:5353' },
      { host: '10.0.0.2', port: 53, text: '10.0.0.2:53' },
    ],
    minTtlMs: 1000, maxTtlMs: 60_000, timeoutMs: 2000, holdEmptyMs: 30_000, weight: 1, maxConnections: 0,
  });
  const a = valid(`${MIN}[pools.app.discovery]\ndns = "app.internal"\ntype = "A"\nport = 8080\nrefresh = "5s"\nmin_ttl = "500ms"\nmax_ttl = "2m"\ntimeout = "1s"\nhold_empty = "0s"\nweight = 4\nmax_connections = 100\n`);
  t.same(a.pools['app']?.discovery, {
    dns: 'app.internal', type: 'A', port: 8080, resolvers: [], refreshMs: 5000, minTtlMs: 500, maxTtlMs: 120_000,
    timeoutMs: 1000, holdEmptyMs: 0, weight: 4, maxConnections: 100,
  }, 'static backends and discovery together; no resolvers = resolv.conf at start');
  t.equal(a.pools['app']?.backends.length, 1);
});

t.test('each error kind, as printed', async (t) => {
  for (const [name, text, expected] of errorCases) {
    t.same(lines(text), expected, name);
  }
});

t.test('all errors of a file are reported together, in file order', async (t) => {
  const text = `[daemon]
workers = "many"

[listeners.web]
protocol = "http"
listen = "0.0.0.0:80"
pool = "ap"

[listeners.db]
protocol = "tcp"
listen = "0.0.0.0:80"
pool = "app"
routes = [ { pool = "app" } ]

[pools.app]
algorithm = "least-connection"
connect_timeout = "2"
backends = [
  { name = "a", address = "10.0.0.1:3000", wieght = 3 },
  { name = "a", address = "10.0.0.2" },
]

[pools.app.health_check]
type = "tcp"
path = "/"
interval = "1s"
timeout = "2s"
`;
  t.same(lines(text), [
    'lb.toml:2:1: daemon.workers: expected an integer >= 1 or "auto", got string "many"',
    'lb.toml:7:1: listeners.web.pool: unknown pool "ap" (did you mean "app"?)',
    'lb.toml:11:1: listeners.db.listen: address already used by listeners.web.listen = "0.0.0.0:80"',
    'lb.toml:13:1: listeners.db.routes: routes apply to http listeners only (this one has protocol = "tcp")',
    'lb.toml:16:1: pools.app.algorithm: unknown algorithm "least-connection" (did you mean "least-connections"?): use one of ' +
      'round-robin, weighted-round-robin, least-connections, consistent-hash, maglev, random, power-of-two-choices, peak-ewma, ' +
      'or a module path starting with "./", "../" or "/"',
    'lb.toml:17:1: pools.app.connect_timeout: invalid duration "2": missing unit; use a number with a unit (ms, s, m, h), e.g. "2s"',
    'lb.toml:19:44: pools.app.backends[0].wieght: unknown key "wieght" (did you mean "weight"?)',
    'lb.toml:20:5: pools.app.backends[1].name: duplicate backend name "a" (also pools.app.backends[0])',
    'lb.toml:20:17: pools.app.backends[1].address: invalid address "10.0.0.2": missing port; use host:port, e.g. "10.0.0.2:8080"',
    'lb.toml:25:1: pools.app.health_check.path: path applies to http health checks only (this one has type = "tcp")',
    'lb.toml:27:1: pools.app.health_check.timeout: timeout (2s) must not be longer than interval (1s)',
  ]);
  const r = parseConfigText(text, 'lb.toml');
  t.equal(r.config, undefined, 'no config when there are issues');
  const err = new ConfigError(r.issues);
  t.equal(err.message.split('\n').length, 11);
  t.equal(err.code, 'CONFIG_INVALID');
});

t.test('one message per mistake', async (t) => {
  t.same(lines(MIN.replace('10.0.0.1:3000', '10.0.0.1:3000:1')), [
    'lb.toml:7:16: pools.app.backends[0].address: invalid address "10.0.0.1:3000:1": put IPv6 addresses in brackets, e.g. "[::1]:8080"',
  ], 'schema pattern and semantic check do not both report');
  t.same(lines(`${MIN}[pools.app.health_check]\ninterval = "0s"\n`), [
    'lb.toml:10:1: pools.app.health_check.interval: must be longer than 0 (got "0s")',
  ], 'no timeout-vs-interval noise on top');
});

t.test('durations', async (t) => {
  const ok: Array<[string, number]> = [
    ['0s', 0], ['250ms', 250], ['2s', 2000], ['1.5s', 1500], ['0.25s', 250], ['1m', 60_000], ['1h', 3_600_000],
    ['1m30s', 90_000], ['1h15m', 4_500_000], ['1s500ms', 1500], ['2147483647ms', 2_147_483_647],
  ];
  for (const [text, ms] of ok) t.equal(parseDuration(text), ms, text);
  const bad: Array<[string, string]> = [
    ['2', 'invalid duration "2": missing unit; use a number with a unit (ms, s, m, h), e.g. "2s"'],
    ['2x', 'invalid duration "2x": use a number with a unit (ms, s, m, h), e.g. "250ms"'],
    ['', 'invalid duration "": use a number with a unit (ms, s, m, h), e.g. "250ms"'],
    ['-5s', 'invalid duration "-5s": must not be negative'],
    ['2 s', 'invalid duration "2 s": use a number with a unit (ms, s, m, h), e.g. "250ms"'],
    ['.5s', 'invalid duration ".5s": use a number with a unit (ms, s, m, h), e.g. "250ms"'],
    ['1d', 'invalid duration "1d": use a number with a unit (ms, s, m, h), e.g. "250ms"'],
    ['0.5ms', 'invalid duration "0.5ms": the smallest unit is 1ms'],
    ['2147483648ms', 'invalid duration "2147483648ms": the maximum is 2147483647ms (about 24.8 days)'],
  ];
  for (const [text, error] of bad) t.same(tryParseDuration(text), { ok: false, error }, JSON.stringify(text));
  t.throws(() => parseDuration('x'), { message: 'invalid duration "x": use a number with a unit (ms, s, m, h), e.g. "250ms"' });
  for (const [text, ms] of [['0s', 0], ['250ms', 250], ['1.5s', 1500], ['1m', 60_000], ['1m30s', 90_000], ['1h0.5s', 3_600_500]] as const) {
    t.equal(formatDuration(ms), text, `format ${ms}`);
    t.equal(parseDuration(formatDuration(ms)), ms, `round trip ${ms}`);
  }
});

t.test('addresses', async (t) => {
  const ok: Array<[string, string, number]> = [
    ['0.0.0.0:80', '0.0.0.0', 80],
    ['127.0.0.1:8080', '127.0.0.1', 8080],
    ['localhost:3000', 'localhost', 3000],
    ['app-1.internal.example.com:443', 'app-1.internal.example.com', 443],
    ['[::1]:8080', '::1', 8080],
    ['[::]:80', '::', 80],
    ['[fe80::1]:65535', 'fe80::1', 65535],
  ];
  for (const [text, host, port] of ok) t.same(tryParseAddress(text), { ok: true, address: { host, port, text } }, text);
  t.same(tryParseAddress('0.0.0.0:0', { allowPortZero: true }), { ok: true, address: { host: '0.0.0.0', port: 0, text: '0.0.0.0:0' } });
  const bad: Array<[string, string]> = [
    ['::1:8080', 'put IPv6 addresses in brackets, e.g. "[::1]:8080"'],
    ['fe80::1', 'put IPv6 addresses in brackets, e.g. "[::1]:8080"'],
    ['10.0.0.1', 'missing port; use host:port, e.g. "10.0.0.1:8080"'],
    ['10.0.0.1:', 'missing port after ":"'],
    [':80', 'missing host; use "0.0.0.0:80" for every IPv4 interface or "[::]:80" for every interface'],
    ['10.0.0.1:0', 'port must be 1..65535'],
    ['10.0.0.1:70000', 'port must be 1..65535'],
    ['10.0.0.1:http', 'port "http" is not a number'],
    ['300.0.0.1:80', '"300.0.0.1" is not a valid IPv4 address'],
    ['[zz]:80', '"zz" is not a valid IPv6 address'],
    ['[::1]', 'missing port; use [host]:port, e.g. "[::1]:8080"'],
    ['[::1:80', 'missing "]" after the IPv6 address, e.g. "[::1]:8080"'],
    ['bad_host!:80', '"bad_host!" is not a valid host name or IP address'],
    ['http://example.com:80/', 'write host:port without a scheme or path, e.g. "example.com:80"'],
  ];
  for (const [text, why] of bad) t.same(tryParseAddress(text), { ok: false, error: `invalid address ${JSON.stringify(text)}: ${why}` }, text);
});

t.test('hash keys and status ranges', async (t) => {
  t.same(parseHashKey('client-ip'), { ok: true, key: { kind: 'client-ip' } });
  t.same(parseHashKey('path'), { ok: true, key: { kind: 'path' } });
  t.same(parseHashKey('header:X-User-Id'), { ok: true, key: { kind: 'header', name: 'x-user-id' } });
  t.same(parseHashKey('cookie:SID'), { ok: true, key: { kind: 'cookie', name: 'SID' } });
  t.same(parseHashKey('query:user'), { ok: true, key: { kind: 'query', name: 'user' } });
  for (const bad of ['', 'ip', 'header', 'header:', 'header:a b', 'Header:x']) t.equal(parseHashKey(bad).ok, false, JSON.stringify(bad));
  t.same(parseStatusRanges('200'), { ok: true, ranges: [[200, 200]] });
  t.same(parseStatusRanges('200-399'), { ok: true, ranges: [[200, 399]] });
  t.same(parseStatusRanges('200, 204,300 - 399'), { ok: true, ranges: [[200, 200], [204, 204], [300, 399]] });
  for (const bad of ['', '2xx', '600', '200-', '200,,204', '99']) t.equal(parseStatusRanges(bad).ok, false, JSON.stringify(bad));
});

t.test('locate', async (t) => {
  const text = `# a comment with [brackets], "quotes" and key = "value"
title = "a ] string # not a comment"   # comment
lit = 'C:\\path ] " # x'
ml = """
[not.a.table]
key = "\\"""
"""
ml2 = '''
[[nope]]
'''
end = """ends with quotes"" """""
"dotted.quoted" = 1
'lit key'.sub = 2
a.b.c = { d = "}", e = [ "]", { f = 1 } ], "g.h" = 3 }
arr = [
  { name = "x", v = "]" },  # one
  # a comment line
  { name = "y",
    v = 2 },
  [ 1, [2, 3] ],
]
when = 1979-05-27 07:32:00Z
after = true

[[fruit]]
name = "apple"
[fruit.physical]
color = "red"
[[fruit.variety]]
name = "red delicious"
[[fruit.variety]]
name = "granny smith"

[[fruit]]
name = "banana"
[[fruit.variety]]
name = "plantain"

[ x . "y z" . w ]
k = 1
`;
  const at = createLocator(text);
  const cases: Array<[Array<string | number>, number, number]> = [
    [['title'], 2, 1],
    [['lit'], 3, 1],
    [['ml'], 4, 1],
    [['ml2'], 8, 1],
    [['end'], 11, 1],
    [['dotted.quoted'], 12, 1],
    [['lit key'], 13, 1],
    [['lit key', 'sub'], 13, 11],
    [['a', 'b', 'c'], 14, 5],
    [['a', 'b', 'c', 'd'], 14, 11],
    [['a', 'b', 'c', 'e', 0], 14, 26],
    [['a', 'b', 'c', 'e', 1, 'f'], 14, 33],
    [['a', 'b', 'c', 'g.h'], 14, 44],
    [['arr'], 15, 1],
    [['arr', 0, 'v'], 16, 17],
    [['arr', 1], 18, 3],
    [['arr', 1, 'v'], 19, 5],
    [['arr', 2, 1, 0], 20, 9],
    [['when'], 22, 1],
    [['after'], 23, 1],
    [['fruit'], 25, 3],
    [['fruit', 0], 25, 1],
    [['fruit', 0, 'physical', 'color'], 28, 1],
    [['fruit', 0, 'variety', 1], 31, 1],
    [['fruit', 0, 'variety', 1, 'name'], 32, 1],
    [['fruit', 1, 'name'], 35, 1],
    [['fruit', 1, 'variety', 0, 'name'], 37, 1],
    [['x', 'y z', 'w', 'k'], 40, 1],
    // Missing keys: the deepest ancestor that is written.
    [['fruit', 1, 'variety', 0, 'colour'], 36, 1],
    [['arr', 1, 'missing'], 18, 3],
    [['a', 'b', 'c', 'e', 1, 'g'], 14, 31],
    [['not'], 1, 1],
    [['nope'], 1, 1],
  ];
  for (const [path, line, col] of cases) t.same(at(path), { line, col }, JSON.stringify(path));
  t.same(locate('a = 1\r\nb = { c = 2 }\r\n', ['b', 'c']), { line: 2, col: 7 }, 'CRLF line endings');
  t.same(locate('[t]\n  x.y = 1 # c\n', ['t', 'x', 'y']), { line: 2, col: 5 }, 'indented dotted key');
});

t.test('formatPath', async (t) => {
  t.equal(formatPath(['pools', 'app', 'backends', 1, 'weight']), 'pools.app.backends[1].weight');
  t.equal(formatPath(['pools', 'my app', 'retries']), 'pools."my app".retries');
  t.equal(formatPath([]), '');
});

t.test('loadConfigFile', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'lb-config-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const missing = join(dir, 'missing.toml');
  const r1 = await loadConfigFile(missing);
  t.same(r1.issues.map(formatIssue), [`${missing}: cannot read: ENOENT: no such file or directory, open '${missing}'`]);

  const file = join(dir, 'lb.toml');
  await writeFile(file, `\uFEFF[admin]\nsocket = "admin.sock"\n${MIN}`);
  const r2 = await loadConfigFile(file);
  t.same(r2.issues, []);
  t.equal(r2.config?.file, file);
  t.equal(r2.config?.admin.socket, join(dir, 'admin.sock'));

  await writeFile(file, MIN.replace('"http"', '"htp"'));
  const r3 = await loadConfigFile(file);
  t.same(r3.issues.map(formatIssue), [`${file}:2:1: listeners.web.protocol: must be one of: http, tcp (got "htp"; did you mean "http"?)`]);
});

t.test('config/lb.schema.json is what gen-schema.ts writes', async (t) => {
  const checkedIn = await readFile(new URL('../../config/lb.schema.json', import.meta.url), 'utf8');
  t.ok(checkedIn === jsonSchemaText(), 'up to date (regenerate with: node dist/config/gen-schema.js)');
  const schema = JSON.parse(checkedIn) as { properties: Record<string, unknown> };
  t.same(Object.keys(schema.properties), ['daemon', 'admin', 'metrics', 'log', 'redis', 'rate_limits', 'listeners', 'pools']);
  // Editors compile patterns as Unicode regular expressions; every pattern must be valid as one.
  const patterns = [...checkedIn.matchAll(/"pattern": ("(?:[^"\\]|\\.)*")/g)].map((m) => JSON.parse(m[1] as string) as string);
  t.ok(patterns.length >= 8, 'patterns found');
  for (const p of patterns) t.doesNotThrow(() => new RegExp(p, 'u'), p);
});

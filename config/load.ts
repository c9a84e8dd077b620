// Raw TOML text -> validated LbConfig, or every problem found, each with file, line, column and key path.
// Three stages, all of whose issues are reported together: TOML syntax (smol-toml; a syntax error stops
// there), the schema (config/schema.ts, every TypeBox error mapped to a short message), then semantic
// checks that the schema cannot express (cross references, value ranges of durations and addresses,
// combinations of keys). A semantic check is skipped where the schema already reported the same key or
// one of its ancestors, so one mistake gives one message.

import { readFile } from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { availableParallelism } from 'node:os';
import { dirname, resolve } from 'node:path';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parse, TomlError } from 'smol-toml';
import { algorithms, isModulePath, loadAlgorithm } from '../algorithms/registry.js';
import { checkOptions } from '../algorithms/options.js';
import type { Algorithm } from '../algorithms/types.js';
import { loadCertificate, readPem } from '../src/dataplane/tls.js';
import { loadBackendTls, BackendTlsFileError } from '../src/dataplane/backend-tls.js';
import { ADDRESS_PATTERN, tryParseAddress } from './address.js';
import { DURATION_PATTERN, formatDuration, tryParseDuration } from './duration.js';
import { createLocator, type Locator, type PathSegment } from './locate.js';
import { buildRoute } from './routes.js';
import type {
  Address,
  BackendConfig,
  BackendProtocol,
  BackendTlsConfig,
  ClientAuthConfig,
  ConfigIssue,
  DiscoveryConfig,
  HashKey,
  Http2Config,
  HealthCheckConfig,
  LbConfig,
  ListenerConfig,
  LogLevel,
  PassiveConfig,
  RetryOn,
  SuccessRateConfig,
  PoolConfig,
  RateKey,
  RateLimitConfig,
  RedisConfig,
  RouteConfig,
  TlsConfig,
} from './model.js';
import { routeName } from './model.js';
import {
  ConfigSchema,
  DEFAULTS,
  EXPECT_STATUS_PATTERN,
  HASH_KEY_PATTERN,
  METHOD_PATTERN,
  NAME_PATTERN,
  HEADER_NAME_PATTERN,
  MODULE_PATH_PATTERN,
  RATE_KEY_PATTERN,
  PATH_PREFIX_PATTERN,
  ROUTE_HOST_PATTERN,
  BACKEND_NAME_PATTERN,
  DNS_NAME_PATTERN,
  RESOLVER_PATTERN,
  SERVER_NAME_PATTERN,
} from './schema.js';

export interface LoadResult {
  /** Present only when `issues` is empty. */
  config?: LbConfig;
  /** In file order. */
  issues: ConfigIssue[];
  /** The file's text, with `config` from loadAndCheckConfigFile (for issueAt). */
  text?: string;
}

/**
 * Validates config text. `file` is used as written in issues (so messages show the path the user typed)
 * and resolved against the working directory for `config.file` and for the relative paths in the config.
 */
export function parseConfigText(text: string, file: string): LoadResult {
  if (text.startsWith('\uFEFF')) text = text.slice(1);
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    if (err instanceof TomlError) {
      const message = err.message.split('\n')[0] ?? err.message;
      return { issues: [{ file, line: err.line, col: err.column, path: '', message }] };
    }
    return { issues: [{ file, path: '', message: `cannot parse: ${errorText(err)}` }] };
  }
  const issues = new Issues(file, text);
  for (const e of schemaIssues(raw)) issues.add(e.at, e.message, e.display);
  const config = build(raw, issues, resolve(file));
  const list = issues.list();
  return list.length > 0 ? { issues: list } : { config, issues: [] };
}

/** Reads and validates a config file; a read error is one issue without a line. */
export async function loadConfigFile(file: string): Promise<LoadResult> {
  const read = await readConfig(file);
  return typeof read === 'string' ? parseConfigText(read, file) : read;
}

/**
 * loadConfigFile, then the checks that need more than the text (checkConfigFiles): what `lb validate`,
 * `lb run` and `lb reload` check before anything changes.
 */
export async function loadAndCheckConfigFile(file: string): Promise<LoadResult> {
  const read = await readConfig(file);
  if (typeof read !== 'string') return read;
  const r = parseConfigText(read, file);
  if (!r.config) return r;
  const issues = await checkConfigFiles(r.config, read, file);
  return issues.length > 0 ? { issues } : { ...r, text: read };
}

/** One issue at `path` of the config `text` read from `file`, with line and column as parse issues have. */
export function issueAt(file: string, text: string, path: PathSegment[], message: string): ConfigIssue {
  const issues = new Issues(file, text);
  issues.report(path, message);
  return issues.list()[0]!;
}

async function readConfig(file: string): Promise<string | LoadResult> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    return { issues: [{ file, path: '', message: `cannot read: ${errorText(err)}` }] };
  }
}

/**
 * Checks of a valid config (`text` is its source, `file` as the user wrote it) that read other files: every
 * algorithm module is imported and checked (algorithms/registry.ts loadAlgorithm: an export without
 * create() is an issue at the pool's `algorithm` key), and every TLS certificate and key is read and
 * paired (src/dataplane/tls.ts loadCertificate), as the workers will.
 */
export async function checkConfigFiles(config: LbConfig, text: string, file: string): Promise<ConfigIssue[]> {
  const issues = new Issues(file, text);
  for (const p of Object.values(config.pools)) {
    if (!isModulePath(p.algorithm)) continue;
    try {
      const algorithm = await loadAlgorithm(p.algorithm, dirname(config.file));
      if (p.algorithmOptions) {
        reportOptionProblems(issues, ['pools', p.name, 'algorithm_options'], p.algorithmOptions, algorithm, false);
      }
    } catch (err) {
      issues.report(['pools', p.name, 'algorithm'], errorText(err));
    }
  }
  for (const l of Object.values(config.listeners)) {
    if (!l.tls) continue;
    const tls = l.tls;
    const check = (at: PathSegment[], name: string, cert: string, key: string): void => {
      try {
        loadCertificate(name, cert, key, tls.minVersion);
      } catch (err) {
        issues.report(at, errorText(err));
      }
    };
    check(['listeners', l.name, 'tls'], 'the default certificate', tls.cert, tls.key);
    tls.sni.forEach((s, i) => check(['listeners', l.name, 'tls', 'sni', i], s.serverName, s.cert, s.key));
    if (tls.clientAuth) {
      try {
        readPem('client_auth ca', tls.clientAuth.ca, true);
      } catch (err) {
        issues.report(['listeners', l.name, 'tls', 'client_auth', 'ca'], errorText(err));
      }
    }
  }
  for (const p of Object.values(config.pools)) {
    if (!p.tls) continue;
    try {
      loadBackendTls(p.name, p.tls);
    } catch (err) {
      const key = err instanceof BackendTlsFileError ? err.key : undefined;
      issues.report(key ? ['pools', p.name, 'tls', key] : ['pools', p.name, 'tls'], errorText(err));
    }
  }
  return issues.list();
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------------------------------------------------
// Issues

/** `pools.app.backends[1].weight`; keys that are not bare TOML keys are quoted: `pools."my app"`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const s of path) {
    if (typeof s === 'number') out += `[${s}]`;
    else {
      const key = /^[A-Za-z0-9_-]+$/.test(s) ? s : JSON.stringify(s);
      out += out ? `.${key}` : key;
    }
  }
  return out;
}

class Issues {
  private readonly items: ConfigIssue[] = [];
  private locator?: Locator;
  private readonly seen = new Set<string>();
  /** Paths with a schema issue; semantic checks stay quiet at and below them. */
  private readonly schemaPaths: PathSegment[][] = [];

  constructor(
    private readonly file: string,
    private readonly text: string,
  ) {}

  /** A schema issue about `at`, shown at `display` (defaults to `at`). */
  add(at: PathSegment[], message: string, display: PathSegment[] = at): void {
    this.schemaPaths.push(at);
    this.push(display, message);
  }

  /** A semantic issue, unless the schema already reported `at` or an ancestor of it. */
  report(at: PathSegment[], message: string): void {
    if (this.schemaPaths.some((p) => p.length <= at.length && p.every((s, i) => s === at[i]))) return;
    this.push(at, message);
  }

  private push(path: PathSegment[], message: string): void {
    const dotted = formatPath(path);
    const dedupe = `${dotted}\n${message}`;
    if (this.seen.has(dedupe)) return;
    this.seen.add(dedupe);
    this.locator ??= createLocator(this.text);
    const { line, col } = this.locator(path);
    this.items.push({ file: this.file, line, col, path: dotted, message });
  }

  list(): ConfigIssue[] {
    return this.items
      .map((issue, order) => ({ issue, order }))
      .sort(
        (a, b) =>
          (a.issue.line ?? 0) - (b.issue.line ?? 0) || (a.issue.col ?? 0) - (b.issue.col ?? 0) || a.order - b.order,
      )
      .map((x) => x.issue);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Schema errors -> messages

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** How a TOML value reads in a message: `string "3"`, `integer 3`, `a table`. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return `string ${JSON.stringify(v)}`;
  if (typeof v === 'bigint') return `integer ${v}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `integer ${v}` : `float ${v}`;
  if (typeof v === 'boolean') return `boolean ${v}`;
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date-time';
  if (isTable(v)) return 'a table';
  return String(v);
}

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 0; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    const row = d[i] as number[];
    const prev = d[i - 1] as number[];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, ((d[i - 2] as number[])[j - 2] as number) + 1);
      }
      row[j] = v;
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}

/**
 * The candidate closest to `word` within edit distance 2, if any; a candidate of 3 or more characters that
 * `word` starts with (or that starts with `word`) counts as distance 1 ("warning" -> "warn").
 */
export function suggest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const lc = c.toLowerCase();
    const prefix = Math.min(w.length, lc.length) >= 3 && (w.startsWith(lc) || lc.startsWith(w));
    const dist = prefix ? 1 : editDistance(w, lc);
    if (dist < bestDistance && dist < c.length) {
      best = c;
      bestDistance = dist;
    }
  }
  return best;
}

const didYouMean = (word: string, candidates: Iterable<string>): string => {
  const s = suggest(word, candidates);
  return s === undefined ? '' : `did you mean ${JSON.stringify(s)}?`;
};

const NAME_HINT = 'use letters, digits, "_", "-" and ".", starting with a letter or digit';

const STATUS_HINT = 'use a status, a range or a list, e.g. "200", "200-399" or "200,204,300-399"';

/** Messages for strings that fail a `pattern` of the schema, by pattern. */
const PATTERN_MESSAGES: ReadonlyMap<string, (value: string) => string> = new Map([
  [DURATION_PATTERN, (v: string) => errorOf(tryParseDuration(v)) ?? `invalid duration ${JSON.stringify(v)}`],
  [
    ADDRESS_PATTERN,
    (v: string) => errorOf(tryParseAddress(v, { allowPortZero: true })) ?? `invalid address ${JSON.stringify(v)}`,
  ],
  [HASH_KEY_PATTERN, hashKeyError],
  [
    RATE_KEY_PATTERN,
    (v: string) => `invalid key ${JSON.stringify(v)}: use client-ip, route, listener, path, header:NAME, cookie:NAME or query:NAME`,
  ],
  [HEADER_NAME_PATTERN, (v: string) => `invalid header name ${JSON.stringify(v)}`],
  [EXPECT_STATUS_PATTERN, (v: string) => `invalid expect_status ${JSON.stringify(v)}: ${STATUS_HINT}`],
  [ROUTE_HOST_PATTERN, hostError],
  [PATH_PREFIX_PATTERN, (v: string) => `must start with "/" (got ${JSON.stringify(v)})`],
  [SERVER_NAME_PATTERN, (v: string) => `invalid server_name ${JSON.stringify(v)}: use a DNS name such as "app.internal" (no port, no wildcard)`],
  [
    BACKEND_NAME_PATTERN,
    (v: string) => `invalid backend name ${JSON.stringify(v)}: no spaces and no "/" (the lb CLI writes POOL/BACKEND)`,
  ],
  [MODULE_PATH_PATTERN, (v: string) => `invalid module path ${JSON.stringify(v)}`],
  [DNS_NAME_PATTERN, (v: string) => `invalid DNS name ${JSON.stringify(v)}: use labels of letters, digits, "-" and "_" separated by ".", e.g. "_http._tcp.app.service.consul"`],
  [RESOLVER_PATTERN, (v: string) => errorOf(tryParseResolver(v)) ?? `invalid resolver ${JSON.stringify(v)}`],
  [METHOD_PATTERN, (v: string) => `invalid method ${JSON.stringify(v)}: write it in upper case, e.g. "GET"`],
  [NAME_PATTERN, (v: string) => `invalid name ${JSON.stringify(v)}: ${NAME_HINT}`],
]);

function errorOf(r: { ok: true } | { ok: false; error: string }): string | undefined {
  return r.ok ? undefined : r.error;
}

function hashKeyError(v: string): string {
  const kind = /^([a-z-]+):/i.exec(v)?.[1];
  if (kind && ['header', 'cookie', 'query'].includes(kind.toLowerCase()) && kind !== kind.toLowerCase()) {
    return `invalid hash_key ${JSON.stringify(v)}: write ${kind.toLowerCase()}:NAME in lower case`;
  }
  const hint =
    kind && ['header', 'cookie', 'query'].includes(kind) ? `; ${kind} needs a NAME, e.g. "${kind}:x-user-id"` : '';
  return `invalid hash_key ${JSON.stringify(v)}: use client-ip, path, header:NAME, cookie:NAME or query:NAME${hint}`;
}

function hostError(v: string): string {
  if (/:[0-9]*$/.test(v)) return `invalid host ${JSON.stringify(v)}: write the host name without a port`;
  if (v.includes('*')) {
    return `invalid host ${JSON.stringify(v)}: only a leading wildcard is supported, e.g. "*.example.com"`;
  }
  return `invalid host ${JSON.stringify(v)}: use a host name such as "api.example.com" or "*.example.com"`;
}

/** A schema in words, for union messages: `an integer >= 1`, `"auto"`. */
function describeSchema(s: TSchema): string {
  if ('const' in s) return JSON.stringify(s['const']);
  const nouns: Record<string, string> = { integer: 'an integer', string: 'a string', boolean: 'a boolean' };
  const noun = nouns[String(s['type'])] ?? `a ${String(s['type'])}`;
  const range = [
    typeof s['minimum'] === 'number' ? `>= ${s['minimum']}` : '',
    typeof s['maximum'] === 'number' ? `<= ${s['maximum']}` : '',
  ].filter(Boolean);
  return range.length > 0 ? `${noun} ${range.join(' and ')}` : noun;
}

interface SchemaIssue {
  at: PathSegment[];
  display: PathSegment[];
  message: string;
}

/** JSON pointer (RFC 6901) -> path segments, with array indexes as numbers. */
function toSegments(pointer: string, root: unknown): PathSegment[] {
  const out: PathSegment[] = [];
  let node: unknown = root;
  for (const token of pointer.split('/').slice(1)) {
    const key = token.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      out.push(Number(key));
      node = node[Number(key)];
    } else {
      out.push(key);
      node = isTable(node) ? node[key] : undefined;
    }
  }
  return out;
}

const ENTITY: Readonly<Record<string, string>> = { listeners: 'listener', pools: 'pool' };

function schemaIssues(raw: unknown): SchemaIssue[] {
  const errors = [...Value.Errors(ConfigSchema, raw)];
  const missing = new Set(errors.filter((e) => e.type === ValueErrorType.ObjectRequiredProperty).map((e) => e.path));
  const out: SchemaIssue[] = [];
  for (const e of errors) {
    if (missing.has(e.path) && e.type !== ValueErrorType.ObjectRequiredProperty) continue;
    const at = toSegments(e.path, raw);
    const mapped = schemaMessage(e, at);
    out.push({ at, display: mapped.display ?? at, message: mapped.message });
  }
  return out;
}

/** `e.g. [pools.app]` for a missing or empty [pools] / [listeners]. */
const entityExample = (table: string): string => `e.g. [${table}.${table === 'pools' ? 'app' : 'web'}]`;

function schemaMessage(e: ValueError, at: PathSegment[]): { message: string; display?: PathSegment[] } {
  const s = e.schema;
  const v = e.value;
  const last = at[at.length - 1];
  const parent = at.slice(0, -1);
  const got = describeValue(v);
  const entity = parent.length === 0 && typeof last === 'string' ? ENTITY[last] : undefined;
  switch (e.type) {
    case ValueErrorType.ObjectAdditionalProperties: {
      const key = String(last);
      const owner = parent[parent.length - 1];
      if (s['patternProperties'] && !s['properties'] && typeof owner === 'string' && ENTITY[owner]) {
        return { message: `invalid ${ENTITY[owner]} name ${JSON.stringify(key)}: ${NAME_HINT}` };
      }
      if (s['patternProperties'] && !s['properties']) {
        return { message: `invalid header name ${JSON.stringify(key)}: use an HTTP token (RFC 9110 §5.6.2)` };
      }
      const known = Object.keys((s['properties'] ?? {}) as Record<string, unknown>);
      const hint = didYouMean(key, known) || (known.length > 0 ? `allowed: ${known.join(', ')}` : '');
      return { message: `unknown key ${JSON.stringify(key)}${hint ? ` (${hint})` : ''}` };
    }
    case ValueErrorType.ObjectRequiredProperty:
      if (entity) {
        return { message: `missing [${String(last)}]: at least one ${entity} is required, ${entityExample(String(last))}`, display: [] };
      }
      return { message: `missing required key ${JSON.stringify(last)}`, display: parent };
    case ValueErrorType.ObjectMinProperties:
      if (entity) return { message: `at least one ${entity} is required, ${entityExample(String(last))}` };
      return { message: `must have at least ${String(s['minProperties'])} keys` };
    case ValueErrorType.ArrayMinItems:
      return { message: `must have at least ${String(s['minItems'])} elements` };
    case ValueErrorType.Object:
      return { message: `expected a table, got ${got}` };
    case ValueErrorType.Array:
      return { message: `expected an array, got ${got}` };
    case ValueErrorType.String:
      if (s['pattern'] === DURATION_PATTERN) return { message: `expected a duration string such as "2s", got ${got}` };
      if (s['pattern'] === ADDRESS_PATTERN) {
        return { message: `expected an address string such as "10.0.0.1:8080", got ${got}` };
      }
      return { message: `expected a string, got ${got}` };
    case ValueErrorType.StringPattern: {
      const f = PATTERN_MESSAGES.get(String(s['pattern']));
      return { message: f ? f(String(v)) : `invalid value ${JSON.stringify(v)}` };
    }
    case ValueErrorType.StringMinLength:
      return { message: 'must not be empty' };
    case ValueErrorType.Integer:
      return { message: `expected an integer, got ${got}` };
    case ValueErrorType.IntegerMinimum:
      return { message: `must be >= ${String(s['minimum'])} (got ${String(v)})` };
    case ValueErrorType.IntegerMaximum:
      return { message: `must be <= ${String(s['maximum'])} (got ${String(v)})` };
    case ValueErrorType.Number:
      return { message: `expected a number, got ${got}` };
    case ValueErrorType.NumberMinimum:
      return { message: `must be >= ${String(s['minimum'])} (got ${String(v)})` };
    case ValueErrorType.NumberMaximum:
      return { message: `must be <= ${String(s['maximum'])} (got ${String(v)})` };
    case ValueErrorType.Boolean:
      return { message: `expected true or false, got ${got}` };
    case ValueErrorType.Union: {
      // TypeBox reports a union once, with the variants' own errors nested in e.errors; those are not used.
      const variants = (s['anyOf'] ?? []) as TSchema[];
      const literals = variants.filter((x) => 'const' in x).map((x) => String(x['const']));
      if (last === 'algorithm') {
        if (typeof v !== 'string') return { message: `expected an algorithm name, got ${got}` };
        const hint = didYouMean(v, literals);
        return {
          message:
            `unknown algorithm ${JSON.stringify(v)}${hint ? ` (${hint})` : ''}: use one of ${literals.join(', ')}, ` +
            'or a module path starting with "./", "../" or "/"',
        };
      }
      if (literals.length === variants.length) {
        const hint = typeof v === 'string' ? didYouMean(v, literals) : '';
        const gotText = typeof v === 'string' ? JSON.stringify(v) : got;
        return { message: `must be one of: ${literals.join(', ')} (got ${gotText}${hint ? `; ${hint}` : ''})` };
      }
      return { message: `expected ${variants.map(describeSchema).join(' or ')}, got ${got}` };
    }
    default:
      return { message: e.message };
  }
}

// ---------------------------------------------------------------------------------------------------------
// Value parsers that the schema patterns front

export type HashKeyResult = { ok: true; key: HashKey } | { ok: false; error: string };

/** client-ip | path | header:NAME | cookie:NAME | query:NAME; header names are lower-cased. */
export function parseHashKey(text: string): HashKeyResult {
  if (!new RegExp(HASH_KEY_PATTERN).test(text)) return { ok: false, error: hashKeyError(text) };
  if (text === 'client-ip' || text === 'path') return { ok: true, key: { kind: text } };
  const colon = text.indexOf(':');
  const kind = text.slice(0, colon) as 'header' | 'cookie' | 'query';
  const name = text.slice(colon + 1);
  return { ok: true, key: { kind, name: kind === 'header' ? name.toLowerCase() : name } };
}

export type StatusRangesResult = { ok: true; ranges: Array<[number, number]> } | { ok: false; error: string };

/** "200", "200-399", "200,204,300-399" -> inclusive ranges. */
export function parseStatusRanges(text: string): StatusRangesResult {
  const bad = (why: string): StatusRangesResult => ({
    ok: false,
    error: `invalid expect_status ${JSON.stringify(text)}: ${why}`,
  });
  if (!new RegExp(EXPECT_STATUS_PATTERN).test(text)) {
    return bad(STATUS_HINT);
  }
  const ranges: Array<[number, number]> = [];
  for (const part of text.split(',')) {
    const [lo, hi = lo] = part.split('-').map((x) => Number(x.trim())) as [number, number?];
    if (lo > hi) return bad(`${lo}-${hi} is an empty range`);
    ranges.push([lo, hi]);
  }
  return { ok: true, ranges };
}

export type ResolverResult = { ok: true; address: Address } | { ok: false; error: string };

/** A resolver: an IP address with an optional port, default 53 ("10.0.0.2", "127.0.0.1:8600", "::1", "[::1]:5353"). */
export function tryParseResolver(text: string): ResolverResult {
  const bad = (why: string): ResolverResult => ({ ok: false, error: `invalid resolver ${JSON.stringify(text)}: ${why}` });
  if (isIPv6(text)) return { ok: true, address: { host: text, port: 53, text: `[${text}]:53` } };
  if (isIPv4(text)) return { ok: true, address: { host: text, port: 53, text: `${text}:53` } };
  if (!text.includes(':')) return bad('not an IP address, e.g. "10.0.0.2" or "127.0.0.1:8600"');
  const r = tryParseAddress(text);
  if (!r.ok) return bad(r.error.replace(/^invalid address "[^"]*": /, ''));
  if (!isIP(r.address.host)) return bad('use an IP address, e.g. "127.0.0.1:8600" (a name would need a resolver itself)');
  return r;
}

/** Whether binding both addresses would conflict (same port, and the same host or a wildcard host). */
function addressesOverlap(a: Address, b: Address): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  const ha = a.host.toLowerCase();
  const hb = b.host.toLowerCase();
  if (ha === hb || ha === '::' || hb === '::') return true;
  const v6 = (h: string) => h.includes(':');
  return (ha === '0.0.0.0' && !v6(hb)) || (hb === '0.0.0.0' && !v6(ha));
}

// ---------------------------------------------------------------------------------------------------------
// Semantic checks and the model

const keyedAlgorithms = [...algorithms.values()].filter((a) => a.usesKey).map((a) => a.name);

/**
 * Algorithm.validateOptions's problems as issues: at the option's own key when the message starts with
 * "KEY: " and the table has that key, else at the `algorithm_options` table. A validateOptions that throws
 * (a module's) is reported at the table too.
 */
function reportOptionProblems(issues: Issues, at: PathSegment[], options: Readonly<Record<string, unknown>>, algorithm: Algorithm, builtIn: boolean): void {
  // A built-in without validateOptions takes no options; a module without it takes any.
  if (!algorithm.validateOptions && !builtIn) return;
  let problems: string[];
  try {
    problems = algorithm.validateOptions ? algorithm.validateOptions(options) : checkOptions(algorithm.name, options, {});
  } catch (err) {
    issues.report(at, `algorithm ${algorithm.name}: validateOptions failed: ${errorText(err)}`);
    return;
  }
  for (const problem of problems) {
    const m = /^([^:\s]+): ([\s\S]*)$/.exec(problem);
    if (m && Object.hasOwn(options, m[1]!)) issues.report([...at, m[1]!], m[2]!);
    else issues.report(at, problem);
  }
}

/** "a", "a and b", "a, b and c". */
function listWords(words: readonly string[]): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

function build(raw: unknown, issues: Issues, file: string): LbConfig {
  const dir = dirname(file);
  const root = isTable(raw) ? raw : {};

  const str = (t: Table, k: string): string | undefined => (typeof t[k] === 'string' ? (t[k] as string) : undefined);
  const int = (t: Table, k: string): number | undefined =>
    typeof t[k] === 'number' && Number.isInteger(t[k]) ? (t[k] as number) : undefined;
  const bool = (t: Table, k: string): boolean | undefined =>
    typeof t[k] === 'boolean' ? (t[k] as boolean) : undefined;
  const arr = (t: Table, k: string): unknown[] => (Array.isArray(t[k]) ? (t[k] as unknown[]) : []);
  /** A sub-table; a date-time where a table belongs passes the schema's object check, so it is caught here. */
  const sub = (t: Table, k: string, path: PathSegment[]): Table | undefined => {
    const v = t[k];
    if (v instanceof Date) issues.report([...path, k], `expected a table, got ${describeValue(v)}`);
    return isTable(v) ? v : undefined;
  };
  const duration = (t: Table, k: string, path: PathSegment[], def: string, positive: boolean): number => {
    const written = str(t, k);
    const r = tryParseDuration(written ?? def);
    if (!r.ok) {
      issues.report([...path, k], r.error);
      return 0;
    }
    if (positive && r.ms === 0) issues.report([...path, k], `must be longer than 0 (got ${JSON.stringify(written)})`);
    return r.ms;
  };
  /** The parsed address, or undefined when it is missing or invalid (and reported). */
  const address = (t: Table, k: string, path: PathSegment[], allowPortZero: boolean): Address | undefined => {
    const written = str(t, k);
    if (written === undefined) return undefined;
    const r = tryParseAddress(written, { allowPortZero });
    if (!r.ok) issues.report([...path, k], r.error);
    return r.ok ? r.address : undefined;
  };
  const noAddress: Address = { host: '', port: 0, text: '' };

  /** A pool's `discovery` table (config/schema.ts DiscoverySchema) with the checks the schema cannot make. */
  const discoveryConfig = (t: Table | undefined, dpath: PathSegment[]): DiscoveryConfig | undefined => {
    if (!t) return undefined;
    const written = str(t, 'type');
    const type = (written === 'SRV' || written === 'AAAA' ? written : 'A') as DiscoveryConfig['type'];
    const port = int(t, 'port');
    if (type === 'SRV') {
      for (const k of ['port', 'weight']) {
        if (k in t) issues.report([...dpath, k], `${k} applies to type = "A" and "AAAA" only: SRV records carry their own`);
      }
    } else if (!('port' in t) && (written === 'A' || written === 'AAAA')) {
      issues.report(dpath, `missing required key "port": type = "${type}" records have no port, e.g. port = 8080`);
    }
    const resolvers: Address[] = [];
    arr(t, 'resolvers').forEach((v, i) => {
      if (typeof v !== 'string') return;
      const r = tryParseResolver(v);
      if (r.ok) resolvers.push(r.address);
      else issues.report([...dpath, 'resolvers', i], r.error);
    });
    const minTtlMs = duration(t, 'min_ttl', dpath, DEFAULTS.discovery.min_ttl, true);
    const maxTtlMs = duration(t, 'max_ttl', dpath, DEFAULTS.discovery.max_ttl, true);
    if (maxTtlMs < minTtlMs) {
      issues.report([...dpath, 'max_ttl' in t ? 'max_ttl' : 'min_ttl'],
        `max_ttl (${formatDuration(maxTtlMs)}) must not be shorter than min_ttl (${formatDuration(minTtlMs)})`);
    }
    const refreshMs = 'refresh' in t ? duration(t, 'refresh', dpath, '0s', true) : undefined;
    return {
      dns: (str(t, 'dns') ?? '').replace(/\.$/, ''),
      type,
      ...(type !== 'SRV' && port !== undefined ? { port } : {}),
      resolvers,
      ...(refreshMs !== undefined ? { refreshMs } : {}),
      minTtlMs,
      maxTtlMs,
      timeoutMs: duration(t, 'timeout', dpath, DEFAULTS.discovery.timeout, true),
      holdEmptyMs: duration(t, 'hold_empty', dpath, DEFAULTS.discovery.hold_empty, false),
      weight: int(t, 'weight') ?? DEFAULTS.discovery.weight,
      maxConnections: int(t, 'max_connections') ?? DEFAULTS.discovery.max_connections,
    };
  };

  // [daemon], [admin], [metrics], [log]
  const daemonT = sub(root, 'daemon', []) ?? {};
  const workersSetting: number | 'auto' = int(daemonT, 'workers') ?? 'auto';
  const daemon: LbConfig['daemon'] = {
    workers: workersSetting === 'auto' ? availableParallelism() : workersSetting,
    workersSetting,
    gracePeriodMs: duration(daemonT, 'grace_period', ['daemon'], DEFAULTS.daemon.grace_period, false),
    accept: (str(daemonT, 'accept') ?? DEFAULTS.daemon.accept) as LbConfig['daemon']['accept'],
    stateFile: resolve(dir, str(daemonT, 'state_file') ?? DEFAULTS.daemon.state_file),
  };
  if (daemon.accept === 'reuseport' && !supportsReusePort()) {
    issues.report(['daemon', 'accept'], `"reuseport" needs Node >= 22.12 (net.Server listen option reusePort); this is ${process.version}: use "round-robin" or "shared"`);
  }
  const adminT = sub(root, 'admin', []) ?? {};
  const admin = { socket: resolve(dir, str(adminT, 'socket') ?? DEFAULTS.admin.socket) };
  const metricsT = sub(root, 'metrics', []);
  const metrics = metricsT ? { listen: address(metricsT, 'listen', ['metrics'], true) ?? noAddress } : undefined;
  const logT = sub(root, 'log', []) ?? {};
  const log = {
    level: (str(logT, 'level') ?? DEFAULTS.log.level) as LogLevel,
    access: bool(logT, 'access') ?? DEFAULTS.log.access,
  };

  // [pools.NAME]
  const poolsT = sub(root, 'pools', []) ?? {};
  const pools: Record<string, PoolConfig> = {};
  for (const [name, p] of Object.entries(poolsT)) {
    if (!isTable(p)) continue;
    const path: PathSegment[] = ['pools', name];
    const algorithmText = str(p, 'algorithm') ?? DEFAULTS.pool.algorithm;
    const isModule = isModulePath(algorithmText);
    const builtIn = algorithms.get(algorithmText);
    if (!isModule && !builtIn) {
      issues.report([...path, 'algorithm'], `unknown algorithm ${JSON.stringify(algorithmText)}`);
    }

    let hashKey: HashKey | undefined;
    const hashKeyText = str(p, 'hash_key');
    if (hashKeyText !== undefined) {
      const r = parseHashKey(hashKeyText);
      if (!r.ok) issues.report([...path, 'hash_key'], r.error);
      else if (builtIn && !builtIn.usesKey) {
        issues.report(
          [...path, 'hash_key'],
          `hash_key has no effect with algorithm ${JSON.stringify(algorithmText)}: ` +
            `only ${listWords(keyedAlgorithms)} hash a key`,
        );
      } else hashKey = r.key;
    } else if (builtIn?.usesKey) {
      hashKey = { kind: 'client-ip' };
    }

    const backends: BackendConfig[] = [];
    const byName = new Map<string, number>();
    arr(p, 'backends').forEach((b, i) => {
      if (!isTable(b)) return;
      const bpath: PathSegment[] = [...path, 'backends', i];
      const backendAddress = address(b, 'address', bpath, false);
      const written = str(b, 'name');
      const backendName = written ?? backendAddress?.text ?? '';
      const first = byName.get(backendName);
      if (first !== undefined && backendName !== '') {
        const why =
          written === undefined ? '; a backend\'s name defaults to its address: set name = "..." to tell them apart' : '';
        issues.report(
          written === undefined ? [...bpath, 'address'] : [...bpath, 'name'],
          `duplicate backend name ${JSON.stringify(backendName)} (also ${formatPath([...path, 'backends', first])})${why}`,
        );
      } else byName.set(backendName, i);
      backends.push({
        name: backendName,
        address: backendAddress ?? noAddress,
        weight: int(b, 'weight') ?? DEFAULTS.backend.weight,
        maxConnections: int(b, 'max_connections') ?? DEFAULTS.backend.max_connections,
        priority: int(b, 'priority') ?? DEFAULTS.backend.priority,
      });
    });

    const discovery = discoveryConfig(sub(p, 'discovery', path), [...path, 'discovery']);
    if (!discovery && backends.length === 0 && !('discovery' in p)) {
      issues.report(
        'backends' in p ? [...path, 'backends'] : path,
        'at least one backend is required, e.g. backends = [ { address = "10.0.0.11:3000" } ], ' +
          'or a discovery table to take them from DNS',
      );
    }

    const protoText = str(p, 'protocol');
    const protocol: BackendProtocol = protoText === 'h2' || protoText === 'h2c' ? protoText : 'http1';
    if (protocol === 'h2' && !isTable(p['tls'])) {
      issues.report([...path, 'protocol'], 'protocol = "h2" is HTTP/2 over TLS and needs a tls table (tls = {} for the defaults); use "h2c" for HTTP/2 over plain TCP');
    }
    if (protocol === 'h2c' && isTable(p['tls'])) {
      issues.report([...path, 'protocol'], 'protocol = "h2c" is HTTP/2 over plain TCP, but the pool has a tls table; use "h2" for HTTP/2 over TLS');
    }
    if (protocol === 'http1' && 'h2_max_connections' in p) {
      issues.report([...path, 'h2_max_connections'], 'h2_max_connections applies to protocol "h2" or "h2c" pools only');
    }
    if (protocol !== 'http1' && 'send_proxy' in p) {
      issues.report([...path, 'send_proxy'], `send_proxy applies to protocol "http1" pools only (this one has protocol = "${protocol}")`);
    }

    const hcT = sub(p, 'health_check', path);
    let healthCheck: HealthCheckConfig | undefined;
    if (hcT) {
      const hpath = [...path, 'health_check'];
      const typeText = str(hcT, 'type');
      const type = typeText === 'tcp' || typeText === 'grpc' ? typeText : 'http';
      if (type !== 'http') {
        for (const k of ['path', 'expect_status', 'host']) {
          if (k in hcT) {
            issues.report([...hpath, k], `${k} applies to http health checks only (this one has type = "${type}")`);
          }
        }
      }
      if (type !== 'grpc' && 'service' in hcT) {
        issues.report([...hpath, 'service'], `service applies to grpc health checks only (this one has type = "${type}")`);
      }
      if (type === 'grpc' && 'send_proxy' in p) {
        issues.report([...hpath, 'type'], 'grpc health checks do not send a PROXY header; a pool with send_proxy cannot use them');
      }
      const service = str(hcT, 'service');
      let expectStatus: Array<[number, number]> = [[200, 399]];
      const statusText = str(hcT, 'expect_status');
      if (statusText !== undefined) {
        const r = parseStatusRanges(statusText);
        if (r.ok) expectStatus = r.ranges;
        else issues.report([...hpath, 'expect_status'], r.error);
      }
      const intervalMs = duration(hcT, 'interval', hpath, DEFAULTS.health_check.interval, true);
      const timeoutMs = duration(hcT, 'timeout', hpath, DEFAULTS.health_check.timeout, true);
      if (timeoutMs > intervalMs && intervalMs > 0) {
        issues.report([...hpath, 'timeout' in hcT ? 'timeout' : 'interval'],
          `timeout (${formatDuration(timeoutMs)}) must not be longer than interval (${formatDuration(intervalMs)})`);
      }
      const host = str(hcT, 'host');
      const checkProxy = str(p, 'send_proxy');
      healthCheck = {
        type,
        ...(service !== undefined ? { service } : {}),
        // grpc is HTTP/2 whatever the pool speaks: h2 when the pool has TLS, else h2c.
        ...(type === 'grpc' && protocol === 'http1' ? { protocol: isTable(p['tls']) ? 'h2' : 'h2c' } : protocol !== 'http1' ? { protocol } : {}),
        path: str(hcT, 'path') ?? DEFAULTS.health_check.path,
        ...(host !== undefined ? { host } : {}),
        expectStatus,
        intervalMs,
        timeoutMs,
        rise: int(hcT, 'rise') ?? DEFAULTS.health_check.rise,
        fall: int(hcT, 'fall') ?? DEFAULTS.health_check.fall,
        ...(checkProxy === 'v1' || checkProxy === 'v2' ? { sendProxy: checkProxy } : {}),
      };
    }

    const passiveT = sub(p, 'passive', path);
    let passive: PassiveConfig | undefined;
    if (passiveT) {
      const ppath = [...path, 'passive'];
      const srT = sub(passiveT, 'success_rate', ppath);
      const successRate: SuccessRateConfig | undefined = srT && {
        intervalMs: duration(srT, 'interval', [...ppath, 'success_rate'], DEFAULTS.success_rate.interval, true),
        minRequests: int(srT, 'min_requests') ?? DEFAULTS.success_rate.min_requests,
        minHosts: int(srT, 'min_hosts') ?? DEFAULTS.success_rate.min_hosts,
        stdevFactor: typeof srT['stdev_factor'] === 'number' ? srT['stdev_factor'] : DEFAULTS.success_rate.stdev_factor,
      };
      const on5xx = bool(passiveT, 'on_5xx') ?? DEFAULTS.passive.on_5xx;
      const consecutive5xx = int(passiveT, 'consecutive_5xx') ?? 0;
      const consecutiveGatewayErrors = int(passiveT, 'consecutive_gateway_errors') ?? 0;
      const ejectForMs = duration(passiveT, 'eject_for', ppath, DEFAULTS.passive.eject_for, true);
      const maxEjectForMs = duration(passiveT, 'max_eject_for', ppath, DEFAULTS.passive.max_eject_for, true);
      if ('max_eject_for' in passiveT && maxEjectForMs > 0 && maxEjectForMs < ejectForMs) {
        issues.report([...ppath, 'max_eject_for'], `must not be shorter than eject_for (${formatDuration(ejectForMs)})`);
      }
      passive = {
        maxFailures: int(passiveT, 'max_failures') ?? DEFAULTS.passive.max_failures,
        ejectForMs,
        on5xx,
        consecutive5xx,
        consecutiveGatewayErrors,
        maxEjectionPercent: int(passiveT, 'max_ejection_percent') ?? DEFAULTS.passive.max_ejection_percent,
        maxEjectForMs: Math.max(maxEjectForMs, ejectForMs),
        ...(successRate ? { successRate } : {}),
        report5xx: on5xx || consecutive5xx > 0 || consecutiveGatewayErrors > 0 || successRate !== undefined,
      };
    }

    const ptlsT = sub(p, 'tls', path);
    let ptls: BackendTlsConfig | undefined;
    if (ptlsT) {
      const tpath = [...path, 'tls'];
      const serverName = str(ptlsT, 'server_name');
      if (serverName !== undefined && isIP(serverName.replace(/\.$/, '')) !== 0) {
        issues.report([...tpath, 'server_name'],
          `server_name ${JSON.stringify(serverName)} is an IP address: SNI carries DNS names only (RFC 6066 section 3); ` +
            'leave server_name out and the certificate is verified against the backend\'s IP');
      }
      const cert = str(ptlsT, 'cert');
      const key = str(ptlsT, 'key');
      if ((cert === undefined) !== (key === undefined)) {
        issues.report([...tpath, cert === undefined ? 'key' : 'cert'], 'cert and key go together: set both for a client certificate, or neither');
      }
      const ca = str(ptlsT, 'ca');
      ptls = {
        ...(ca !== undefined ? { ca: resolve(dir, ca) } : {}),
        ...(serverName !== undefined ? { serverName: serverName.toLowerCase().replace(/\.$/, '') } : {}),
        verify: bool(ptlsT, 'verify') ?? DEFAULTS.backend_tls.verify,
        ...(cert !== undefined && key !== undefined ? { cert: resolve(dir, cert), key: resolve(dir, key) } : {}),
        minVersion: str(ptlsT, 'min_version') === 'TLSv1.3' ? 'TLSv1.3' : 'TLSv1.2',
      };
    }
    const connectTimeoutMs = duration(p, 'connect_timeout', path, DEFAULTS.pool.connect_timeout, true);
    const responseTimeoutMs = duration(p, 'response_timeout', path, DEFAULTS.pool.response_timeout, true);
    const maxRequests = int(p, 'max_requests') ?? DEFAULTS.breaker.max_requests;
    const maxQueue = int(p, 'max_queue') ?? DEFAULTS.breaker.max_queue;
    if (maxQueue > 0 && maxRequests === 0 && backends.every((b) => b.maxConnections === 0)) {
      issues.report([...path, 'max_queue'], 'has no effect: nothing to wait for (set max_requests, or max_connections on a backend)');
    }
    const queueTimeoutMs = 'queue_timeout' in p ? duration(p, 'queue_timeout', path, '0s', true) : connectTimeoutMs;
    const perTryTimeoutMs = 'per_try_timeout' in p ? duration(p, 'per_try_timeout', path, '0s', true) : 0;
    if (perTryTimeoutMs > responseTimeoutMs && responseTimeoutMs > 0) {
      issues.report([...path, 'per_try_timeout'], `must not be longer than response_timeout (${formatDuration(responseTimeoutMs)})`);
    }
    const retryOnList = Array.isArray(p['retry_on']) ? (p['retry_on'] as unknown[]).filter((x): x is string => typeof x === 'string') : [...DEFAULTS.breaker.retry_on];
    const statuses = new Set<number>();
    for (const r of retryOnList) {
      if (r === 'gateway-error') [502, 503, 504].forEach((c) => statuses.add(c));
      else if (/^5\d\d$/.test(r)) statuses.add(Number(r));
    }
    const retryOn: RetryOn = {
      connectFailure: retryOnList.includes('connect-failure'),
      reset: retryOnList.includes('reset'),
      statuses: [...statuses].sort(),
    };
    const budgetT = sub(p, 'retry_budget', path);
    const retryBudget = budgetT && {
      percent: typeof budgetT['percent'] === 'number' ? budgetT['percent'] : DEFAULTS.retry_budget.percent,
      minRetries: int(budgetT, 'min_retries') ?? DEFAULTS.retry_budget.min_retries,
    };

    const optionsT = sub(p, 'algorithm_options', path);
    if (optionsT && builtIn) reportOptionProblems(issues, [...path, 'algorithm_options'], optionsT, builtIn, true);

    const sendProxy = str(p, 'send_proxy');
    pools[name] = {
      name,
      ...(protocol !== 'http1' ? { protocol, h2MaxConnections: int(p, 'h2_max_connections') ?? DEFAULTS.pool.h2_max_connections } : {}),
      algorithm: isModule ? resolve(dir, algorithmText) : algorithmText,
      ...(hashKey ? { hashKey } : {}),
      ...(optionsT ? { algorithmOptions: optionsT } : {}),
      retries: int(p, 'retries') ?? DEFAULTS.pool.retries,
      connectTimeoutMs,
      responseTimeoutMs,
      readTimeoutMs: duration(p, 'read_timeout', path, DEFAULTS.pool.read_timeout, false),
      slowStartMs: duration(p, 'slow_start', path, DEFAULTS.pool.slow_start, false),
      ...(sendProxy === 'v1' || sendProxy === 'v2' ? { sendProxy } : {}),
      maxRequests,
      maxQueue,
      queueTimeoutMs,
      retryOn,
      perTryTimeoutMs,
      ...(retryBudget ? { retryBudget } : {}),
      backends,
      ...(discovery ? { discovery } : {}),
      ...(healthCheck ? { healthCheck } : {}),
      ...(passive ? { passive } : {}),
      ...(ptls ? { tls: ptls } : {}),
    };
  }

  const poolNames = Object.keys(poolsT);
  const checkPool = (t: Table, path: PathSegment[]): string => {
    const pool = str(t, 'pool') ?? '';
    if (pool !== '' && !Object.hasOwn(poolsT, pool)) {
      const hint = didYouMean(pool, poolNames);
      const known = poolNames.length > 0 ? `defined pools: ${poolNames.join(', ')}` : 'no pools are defined';
      issues.report([...path, 'pool'], `unknown pool ${JSON.stringify(pool)} (${hint || known})`);
    }
    return pool;
  };

  // [redis], [rate_limits.NAME]
  const redisT = sub(root, 'redis', []);
  let redis: RedisConfig | undefined;
  if (redisT) {
    redis = {
      address: address(redisT, 'address', ['redis'], false) ?? noAddress,
      timeoutMs: duration(redisT, 'timeout', ['redis'], DEFAULTS.redis.timeout, true),
      prefix: str(redisT, 'prefix') ?? DEFAULTS.redis.prefix,
    };
  }
  const limitsT = sub(root, 'rate_limits', []) ?? {};
  const rateLimits: Record<string, RateLimitConfig> = {};
  for (const [name, r] of Object.entries(limitsT)) {
    if (!isTable(r)) continue;
    const path: PathSegment[] = ['rate_limits', name];
    const keyText = str(r, 'key') ?? DEFAULTS.rate_limit.key;
    let key: RateKey = { kind: 'client-ip' };
    if (keyText === 'route' || keyText === 'listener') key = { kind: keyText };
    else {
      const k = parseHashKey(keyText);
      if (k.ok) key = k.key;
    }
    const scope = str(r, 'scope') === 'global' ? 'global' : 'local';
    if (scope === 'global' && !redisT) issues.report([...path, 'scope'], 'scope = "global" needs a [redis] table (address = "host:port")');
    const rate = int(r, 'rate') ?? 1;
    rateLimits[name] = {
      name,
      rate,
      perMs: duration(r, 'per', path, DEFAULTS.rate_limit.per, true),
      burst: int(r, 'burst') ?? rate,
      key,
      scope,
      maxKeys: int(r, 'max_keys') ?? DEFAULTS.rate_limit.max_keys,
    };
  }
  const limitNames = Object.keys(limitsT);
  const checkLimit = (t: Table, path: PathSegment[]): string | undefined => {
    const limit = str(t, 'rate_limit');
    if (limit !== undefined && !Object.hasOwn(limitsT, limit)) {
      const hint = didYouMean(limit, limitNames);
      const known = limitNames.length > 0 ? `defined rate limits: ${limitNames.join(', ')}` : 'no [rate_limits] are defined';
      issues.report([...path, 'rate_limit'], `unknown rate limit ${JSON.stringify(limit)} (${hint || known})`);
    }
    return limit;
  };

  // [listeners.NAME]
  const listenersT = sub(root, 'listeners', []) ?? {};
  const listeners: Record<string, ListenerConfig> = {};
  const bound: Array<{ path: PathSegment[]; address: Address }> = [];
  for (const [name, l] of Object.entries(listenersT)) {
    if (!isTable(l)) continue;
    const path: PathSegment[] = ['listeners', name];
    const protocol = str(l, 'protocol') === 'tcp' ? 'tcp' : 'http';
    const listen = address(l, 'listen', path, true) ?? noAddress;
    if (listen.text !== '') bound.push({ path: [...path, 'listen'], address: listen });

    const pool = checkPool(l, path);
    const hashKey = pools[pool]?.hashKey;
    if (protocol === 'tcp' && hashKey && hashKey.kind !== 'client-ip') {
      const text = hashKey.kind === 'path' ? 'path' : `${hashKey.kind}:${hashKey.name}`;
      issues.report(
        [...path, 'pool'],
        `pool ${JSON.stringify(pool)} hashes on ${JSON.stringify(text)}, which a tcp listener does not have; ` +
          'use hash_key = "client-ip" in that pool',
      );
    }
    const poolProtocol = pools[pool]?.protocol;
    if (protocol === 'tcp' && poolProtocol !== undefined && poolProtocol !== 'http1') {
      issues.report([...path, 'pool'], `pool ${JSON.stringify(pool)} speaks ${poolProtocol} to its backends, which a tcp listener cannot carry; use an http listener`);
    }

    if (protocol === 'tcp') {
      // On a tcp listener, client_header_timeout bounds the PROXY protocol header (and the TLS handshake).
      const httpOnly = bool(l, 'proxy_protocol') === true ? ['client_body_timeout', 'max_header_size', 'rate_limit', 'request_id', 'trace', ...HTTP2_KEYS]
          : ['client_header_timeout', 'client_body_timeout', 'max_header_size', 'rate_limit', 'request_id', 'trace', ...HTTP2_KEYS];
      for (const k of httpOnly) {
        if (k in l) issues.report([...path, k], `${k} applies to http listeners only (this one has protocol = "tcp")`);
      }
    }
    const routes: RouteConfig[] = [];
    const routeList = arr(l, 'routes');
    if (protocol === 'tcp' && routeList.length > 0) {
      issues.report([...path, 'routes'], 'routes apply to http listeners only (this one has protocol = "tcp")');
    } else {
      const routeNames = new Map<string, number>();
      const ctx = { report: (at: PathSegment[], m: string) => issues.report(at, m), checkPool, checkLimit, parseHashKey, dir };
      routeList.forEach((r, i) => {
        if (!isTable(r)) return;
        const route = buildRoute(r, [...path, 'routes', i], ctx);
        const rname = routeName(name, i, route);
        const first = routeNames.get(rname);
        if (first !== undefined) issues.report([...path, 'routes', i, 'name'], `duplicate route name ${JSON.stringify(rname)} (also ${formatPath([...path, 'routes', first])})`);
        else routeNames.set(rname, i);
        routes.push(route);
      });
    }

    const tlsT = sub(l, 'tls', path);
    let tls: TlsConfig | undefined;
    if (tlsT) {
      tls = {
        cert: resolve(dir, str(tlsT, 'cert') ?? ''),
        key: resolve(dir, str(tlsT, 'key') ?? ''),
        sni: arr(tlsT, 'sni').filter(isTable).map((s) => ({
          serverName: (str(s, 'server_name') ?? '').toLowerCase().replace(/\.$/, ''),
          cert: resolve(dir, str(s, 'cert') ?? ''),
          key: resolve(dir, str(s, 'key') ?? ''),
        })),
        minVersion: str(tlsT, 'min_version') === 'TLSv1.3' ? 'TLSv1.3' : 'TLSv1.2',
      };
      const caT = sub(tlsT, 'client_auth', [...path, 'tls']);
      if (caT) {
        const clientAuth: ClientAuthConfig = {
          ca: resolve(dir, str(caT, 'ca') ?? ''),
          mode: str(caT, 'mode') === 'optional' ? 'optional' : 'required',
        };
        tls.clientAuth = clientAuth;
      }
    }

    const rateLimit = protocol === 'http' ? checkLimit(l, path) : undefined;
    const ridT = protocol === 'http' ? sub(l, 'request_id', path) : undefined;
    const traceT = protocol === 'http' ? sub(l, 'trace', path) : undefined;
    listeners[name] = {
      name,
      protocol,
      ...(rateLimit !== undefined ? { rateLimit } : {}),
      ...(ridT
        ? {
            requestId: {
              header: (str(ridT, 'header') ?? DEFAULTS.request_id.header).toLowerCase(),
              trustIncoming: bool(ridT, 'trust_incoming') ?? DEFAULTS.request_id.trust_incoming,
              response: bool(ridT, 'response') ?? DEFAULTS.request_id.response,
            },
          }
        : {}),
      ...(traceT
        ? {
            trace: {
              traceparent: str(traceT, 'traceparent') === 'create' ? ('create' as const) : ('propagate' as const),
              sampled: bool(traceT, 'sampled') ?? DEFAULTS.trace.sampled,
            },
          }
        : {}),
      listen,
      pool,
      routes,
      ...(tls ? { tls } : {}),
      maxConnections: int(l, 'max_connections') ?? DEFAULTS.listener.max_connections,
      clientHeaderTimeoutMs: duration(l, 'client_header_timeout', path, DEFAULTS.listener.client_header_timeout, true),
      clientBodyTimeoutMs: duration(l, 'client_body_timeout', path, DEFAULTS.listener.client_body_timeout, false),
      idleTimeoutMs: duration(l, 'idle_timeout', path,
        protocol === 'http' ? DEFAULTS.listener.idle_timeout_http : DEFAULTS.listener.idle_timeout_tcp, false),
      maxHeaderSize: int(l, 'max_header_size') ?? DEFAULTS.listener.max_header_size,
      proxyProtocol: bool(l, 'proxy_protocol') ?? DEFAULTS.listener.proxy_protocol,
      ...(protocol === 'http' ? http2Of(l, path, issues) : {}),
    };
  }

  if (metrics && metrics.listen.text !== '') bound.push({ path: ['metrics', 'listen'], address: metrics.listen });
  bound.forEach((b, j) => {
    const other = bound.slice(0, j).find((a) => addressesOverlap(a.address, b.address));
    if (!other) return;
    const where = `${formatPath(other.path)} = ${JSON.stringify(other.address.text)}`;
    issues.report(b.path, other.address.text === b.address.text
      ? `address already used by ${where}`
      : `overlaps ${where}: a wildcard address takes the port on every interface`);
  });

  return {
    file, daemon, admin, ...(metrics ? { metrics } : {}), log, listeners, pools,
    ...(Object.keys(rateLimits).length > 0 ? { rateLimits } : {}), ...(redis ? { redis } : {}),
  };
}

/** Node gained `reusePort` for net.Server#listen in v23.1.0 and v22.12.0. */
export function supportsReusePort(version = process.versions.node): boolean {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

const HTTP2_KEYS = ['http2', 'http2_max_concurrent_streams', 'http2_initial_window_size'];

/** An http listener's `http2` and its limits; the limits without `http2 = true` are a mistake worth naming. */
function http2Of(l: Table, path: PathSegment[], issues: Issues): { http2?: Http2Config } {
  if (l.http2 !== true) {
    for (const k of HTTP2_KEYS.slice(1)) {
      if (k in l) issues.report([...path, k], `${k} applies only with http2 = true on this listener`);
    }
    return {};
  }
  return {
    http2: {
      maxConcurrentStreams: typeof l.http2_max_concurrent_streams === 'number' ? l.http2_max_concurrent_streams : DEFAULTS.listener.http2_max_concurrent_streams,
      initialWindowSize: typeof l.http2_initial_window_size === 'number' ? l.http2_initial_window_size : DEFAULTS.listener.http2_initial_window_size,
    },
  };
}

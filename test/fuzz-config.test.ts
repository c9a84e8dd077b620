// Fuzzing the config loader (config/load.ts parseConfigText) with fast-check, seeded so that a failure
// reproduces: arbitrary strings, TOML-shaped documents built from real and wrong keys and values, and
// mutations of the repository's lb.example.toml (characters and lines deleted, duplicated, replaced,
// swapped). Property: it never throws and never hangs; it returns either a config and no issues, or no
// config and a non-empty list of issues, each with a message, the file name as given and a sane location;
// a config it returns is internally consistent (every pool referenced exists and has backends).

import t from 'tap';
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { parseConfigText } from '../config/load.js';
import { formatIssue, type LbConfig } from '../config/model.js';
import { ROOT } from './helpers/lb.js';

const FILE = 'fuzz.toml';
const EXAMPLE = fs.readFileSync(path.join(ROOT, 'lb.example.toml'), 'utf8');
const EXAMPLE_LINES = EXAMPLE.split('\n');
/** Slowest single parse seen, to show that nothing comes close to hanging. */
let slowest = 0;

function check(text: string, limitMs = 1000): boolean {
  const t0 = performance.now();
  const r = parseConfigText(text, FILE);
  const ms = performance.now() - t0;
  slowest = Math.max(slowest, ms);
  if (ms > limitMs) throw new Error(`parse took ${Math.round(ms)}ms`);
  if (r.config) {
    if (r.issues.length !== 0) throw new Error('config and issues both present');
    consistent(r.config);
    return true;
  }
  if (r.issues.length === 0) throw new Error('neither a config nor an issue');
  for (const i of r.issues) {
    if (typeof i.message !== 'string' || i.message.trim() === '') throw new Error(`issue without a message: ${JSON.stringify(i)}`);
    if (i.file !== FILE) throw new Error(`issue names file ${JSON.stringify(i.file)}`);
    if (i.line !== undefined && !(Number.isInteger(i.line) && i.line >= 1)) throw new Error(`bad line ${i.line}`);
    if (i.col !== undefined && !(Number.isInteger(i.col) && i.col >= 1)) throw new Error(`bad column ${i.col}`);
    if (typeof formatIssue(i) !== 'string') throw new Error('formatIssue');
  }
  return true;
}

function consistent(c: LbConfig): void {
  for (const l of Object.values(c.listeners)) {
    for (const p of [l.pool, ...l.routes.flatMap((r) => [r.pool, ...(r.split ?? []).map((e) => e.pool)].filter((x) => x !== undefined))]) if (!c.pools[p]) throw new Error(`listener ${l.name} refers to missing pool ${p}`);
    if (!(l.listen.port >= 0 && l.listen.port <= 65535)) throw new Error(`listener ${l.name} port ${l.listen.port}`);
  }
  for (const p of Object.values(c.pools)) {
    if (p.backends.length === 0) throw new Error(`pool ${p.name} without backends`);
    if (!(p.connectTimeoutMs > 0 && p.responseTimeoutMs > 0)) throw new Error(`pool ${p.name} timeouts`);
    for (const b of p.backends) if (!(Number.isInteger(b.weight) && b.weight >= 0)) throw new Error(`weight ${b.weight}`);
  }
  if (!(c.daemon.workers >= 1)) throw new Error(`workers ${c.daemon.workers}`);
}

// --- arbitraries --------------------------------------------------------------------------------------

const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 400 }),
  fc.string({ unit: 'grapheme-ascii', maxLength: 400 }),
  fc.string({ unit: fc.constantFrom('[', ']', '"', "'", '=', '.', '\n', '#', '{', '}', ',', ' ', 'a', '1', '\\', 'listeners', 'pools'), maxLength: 300 }),
);

const keys = ['protocol', 'listen', 'pool', 'algorithm', 'backends', 'address', 'weight', 'retries', 'connect_timeout', 'response_timeout', 'workers', 'grace_period', 'socket', 'level', 'access', 'routes', 'host', 'path_prefix', 'hash_key', 'tls', 'cert', 'key', 'max_connections', 'client_header_timeout', 'idle_timeout', 'max_header_size', 'interval', 'rise', 'fall', 'expect_status', 'max_failures', 'eject_for', 'typo_key'];
const values = fc.oneof(
  fc.constantFrom('"http"', '"tcp"', '"127.0.0.1:8080"', '"[::1]:80"', '"host:99999"', '"2s"', '"0s"', '"-1s"', '"1d"', '"250ms"', '"auto"', '"round-robin"', '"maglev"', '"./algo.mjs"', '"header:x-id"', '"cookie:"', '"200-399"', '"999-100"', 'true', '0', '-1', '1e9', '3.5', '[]', '{}', '[{ address = "127.0.0.1:1" }]', '[{ address = "x" }, { address = "x" }]', '"app"', '"missing"', "'''\nmulti\n'''"),
  fc.integer().map(String),
  fc.string({ maxLength: 20 }).map((s) => JSON.stringify(s)),
);
const tableNames = fc.constantFrom('daemon', 'admin', 'metrics', 'log', 'listeners.web', 'listeners.db', 'pools.app', 'pools.api', 'pools.app.health_check', 'pools.app.passive', 'listeners.web.tls', '[listeners.web.routes]', 'pools."we ird"', 'bogus');
const tomlDoc = fc
  .array(fc.tuple(tableNames, fc.array(fc.tuple(fc.constantFrom(...keys), values), { maxLength: 6 })), { maxLength: 10 })
  .map((tables) => tables.map(([name, kv]) => `[${name}]\n${kv.map(([k, v]) => `${k} = ${v}`).join('\n')}`).join('\n'));

type Mutation = { kind: 'delChar' | 'dupChar' | 'setChar' | 'delLine' | 'dupLine' | 'swapLines' | 'foreignLine' | 'insert'; at: number; at2: number; text: string };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('delChar', 'dupChar', 'setChar', 'delLine', 'dupLine', 'swapLines', 'foreignLine', 'insert'),
  at: fc.nat(),
  at2: fc.nat(),
  text: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('"', '[', ']', '=', '\n', '#', '\0', '\uFEFF', '0', '-', '{', '}', ',', '.', "'")),
});

function mutate(text: string, ms: Mutation[]): string {
  for (const m of ms) {
    if (m.kind.endsWith('Char') || m.kind === 'insert') {
      const i = text.length === 0 ? 0 : m.at % text.length;
      if (m.kind === 'delChar') text = text.slice(0, i) + text.slice(i + 1);
      else if (m.kind === 'dupChar') text = text.slice(0, i) + text.charAt(i) + text.slice(i);
      else if (m.kind === 'setChar') text = text.slice(0, i) + (m.text.charAt(0) || 'x') + text.slice(i + 1);
      else text = text.slice(0, i) + m.text + text.slice(i);
    } else {
      const lines = text.split('\n');
      const i = m.at % lines.length;
      const j = m.at2 % lines.length;
      if (m.kind === 'delLine') lines.splice(i, 1);
      else if (m.kind === 'dupLine') lines.splice(i, 0, lines[i]!);
      else if (m.kind === 'swapLines') [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      else lines.splice(i, 0, EXAMPLE_LINES[m.at2 % EXAMPLE_LINES.length]!);
      text = lines.join('\n');
    }
  }
  return text;
}

// --- properties ---------------------------------------------------------------------------------------

t.test('the example config is valid (the mutation base)', async (t) => {
  const r = parseConfigText(EXAMPLE, FILE);
  t.same(r.issues, [], 'no issues');
  t.ok(r.config, 'a config');
});

t.test('arbitrary text: a config or located issues, never a throw', async (t) => {
  fc.assert(fc.property(anyText, (s) => check(s)), { seed: 42, numRuns: 2000 });
  t.pass('2000 arbitrary strings');
});

t.test('TOML-shaped documents of real and wrong keys: a config or located issues, never a throw', async (t) => {
  fc.assert(fc.property(tomlDoc, (s) => check(s)), { seed: 43, numRuns: 2000 });
  t.pass('2000 generated documents');
});

t.test('mutations of lb.example.toml: a config or located issues, never a throw', async (t) => {
  let valid = 0;
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 6 }), (ms) => {
      const text = mutate(EXAMPLE, ms);
      check(text);
      if (parseConfigText(text, FILE).config) valid++;
      return true;
    }),
    { seed: 44, numRuns: 2000 },
  );
  t.ok(valid > 0 && valid < 2000, `2000 mutants: ${valid} still valid, ${2000 - valid} refused with issues`);
  t.comment(`slowest single parse: ${slowest.toFixed(1)}ms`);
  t.ok(slowest < 1000, 'no parse came near hanging');
});

t.test('deterministic: the same text gives the same issues', async (t) => {
  fc.assert(
    fc.property(fc.array(mutation, { minLength: 1, maxLength: 4 }), (ms) => {
      const text = mutate(EXAMPLE, ms);
      const a = parseConfigText(text, FILE);
      const b = parseConfigText(text, FILE);
      return JSON.stringify(a.issues) === JSON.stringify(b.issues) && !!a.config === !!b.config;
    }),
    { seed: 45, numRuns: 300 },
  );
  t.pass('300 mutants parsed twice');
});

t.test('pathological inputs: deep nesting, huge strings, many keys', async (t) => {
  const cases: Array<[string, string]> = [
    ['arrays nested 100000 deep', `x = ${'['.repeat(100_000)}${']'.repeat(100_000)}`],
    ['inline tables nested 20000 deep', `x = ${'{ a = '.repeat(20_000)}1${' }'.repeat(20_000)}`],
    ['a 1 MB string value', `[daemon]\nworkers = "${'a'.repeat(1 << 20)}"`],
    ['5000 pools', Array.from({ length: 5000 }, (_, i) => `[pools.p${i}]\nalgorithm = "round-robin"\nbackends = [{ address = "127.0.0.1:${1 + (i % 60000)}" }]`).join('\n')],
    ['dotted key 2000 segments', `${Array.from({ length: 2000 }, () => 'a').join('.')} = 1`],
    ['2000 listeners on one address', Array.from({ length: 2000 }, (_, i) => `[listeners.l${i}]\nprotocol = "http"\nlisten = "127.0.0.1:8080"\npool = "app"`).join('\n')],
  ];
  for (const [name, text] of cases) {
    const t0 = performance.now();
    let ok = false;
    try {
      ok = check(text, 10_000);
    } catch (err) {
      t.fail(`${name}: ${(err as Error).message}`);
      continue;
    }
    t.ok(ok, `${name}: handled in ${Math.round(performance.now() - t0)}ms`);
  }
});

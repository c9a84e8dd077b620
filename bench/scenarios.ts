// Part 2 of `lb bench`: scenarios, end to end. For each scenario, mode and algorithm: simulated upstreams
// (bench/upstream.ts, one child process per backend), the real daemon (`node bin/lb.js run -c <generated
// config>`), and autocannon in a child process of its own (bench/loadgen.ts), all on 127.0.0.1. Records
// throughput, latency percentiles, errors and non-2xx answers, and each backend's share as counted at the
// upstreams. Every run starts from fresh upstreams and a fresh lb, so no state (a dead backend, passive
// ejection, warm connections) leaks from one algorithm to the next.
//
// A scenario is a small TOML file (bench/scenarios/*.toml) that users copy and edit; see
// bench/scenarios/README.md for every key. Unknown keys are errors, as in lb's own config.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'smol-toml';
import { parseConfigText } from '../config/load.js';
import { formatIssue } from '../config/model.js';
import { FileChecker, parseTomlFile } from './toml-check.js';
import { LoadGenerator, KEY_HEADER, rateShort, type LoadResult } from './loadgen.js';
import { parseTrace, type Bursts } from './sim-model.js';
import { barChart, SEQUENTIAL } from './svg.js';
import { median, ms, num, pct, PROJECT_ROOT, progress, Report, resolveAlgorithms, slug, table, type BenchAlgorithm } from './report.js';
import { PROFILES, pinned, startUpstreams, type LatencyProfile, type Upstream, type UpstreamSpec } from './upstream.js';

export const SCENARIO_DIR = path.join(PROJECT_ROOT, 'bench', 'scenarios');

export interface BackendScenario extends UpstreamSpec {
  /** lb weight; default 1. */
  weight: number;
}

export interface Scenario {
  name: string;
  /** The file it was read from, when any. */
  file?: string;
  description: string;
  /** Measured run per algorithm and mode. */
  durationMs: number;
  /** Load before the measured run (not counted), so that lb and its upstream connections are warm. */
  warmupMs: number;
  /** Connections of the fixed-concurrency mode (and of the fixed-rate mode). */
  connections: number;
  /** Fixed-rate mode: requests per second; absent = that mode is skipped. */
  rate?: number;
  /** lb worker processes. */
  workers: number;
  /** "all" (the registry) or names and module paths. */
  algorithms: 'all' | string[];
  /** Distinct hash keys the load generator sends (header x-user-id). */
  keys: number;
  /** How each request's key is drawn: uniform or Zipf over `keys`, or the keys of `keyTrace` in order. */
  keyDistribution: 'uniform' | 'zipf' | 'trace';
  keyExponent?: number;
  /** Keys read from the trace file (`key_trace`, "TIME_MS KEY" lines; the times are not used here). */
  keyTrace?: string[];
  /** Fixed-rate mode's arrivals: Poisson, or bursty with these parameters. */
  bursts?: Bursts;
  /** Extra pool settings copied into the generated lb config (retries, passive, health_check, ...). */
  pool: Record<string, unknown>;
  backends: BackendScenario[];
  /** Where module paths in `algorithms` are resolved from (the file's folder). */
  baseDir: string;
}

/** A scenario file's problems, one a line, as `FILE: key: message`. */
export class ScenarioError extends Error {
  override readonly name = 'ScenarioError';
  readonly code = 'SCENARIO_INVALID';
}

const TOP_KEYS = ['description', 'duration', 'warmup', 'connections', 'rate', 'arrivals', 'workers', 'algorithms', 'keys', 'key_distribution', 'key_exponent', 'key_trace', 'profile', 'sigma', 'alpha', 'concurrency', 'pool', 'backends'];
const BACKEND_KEYS = ['name', 'latency', 'weight', 'profile', 'sigma', 'alpha', 'fail_rate', 'die_after', 'concurrency'];

/**
 * Parses and checks a scenario file's text. Throws ScenarioError listing every problem, one a line, as
 * `FILE: key: message`.
 */
export function parseScenario(text: string, file: string, name = path.basename(file).replace(/\.toml$/, '')): Scenario {
  const raw = parseTomlFile(text, file, ScenarioError);
  const check = new FileChecker(file);
  const { problems, bad, unknown, duration, int, real } = check;
  const profile = (v: unknown, key: string, dflt: LatencyProfile): LatencyProfile => {
    if (v === undefined) return dflt;
    if (typeof v !== 'string' || !PROFILES.includes(v as LatencyProfile)) return bad(key, `must be one of ${PROFILES.join(', ')}`), dflt;
    return v as LatencyProfile;
  };

  unknown(raw, TOP_KEYS, '');
  const defaultProfile = profile(raw['profile'], 'profile', 'uniform');
  const defaultSigma = real(raw['sigma'], 'sigma', 0.01, 5);
  const defaultAlpha = real(raw['alpha'], 'alpha', 1.01, 10);
  const defaultSlots = raw['concurrency'] === undefined ? undefined : int(raw['concurrency'], 'concurrency', 0, 1, 100_000);

  let algorithms: Scenario['algorithms'] = 'all';
  const a = raw['algorithms'];
  if (Array.isArray(a) && a.every((x) => typeof x === 'string') && a.length > 0) algorithms = a as string[];
  else if (a !== undefined && a !== 'all') bad('algorithms', '"all" or a non-empty list of algorithm names or module paths');

  const pool = raw['pool'] ?? {};
  if (typeof pool !== 'object' || Array.isArray(pool)) bad('pool', 'must be a table');
  for (const k of ['algorithm', 'backends', 'hash_key']) if (k in (pool as object)) bad(`pool.${k}`, 'is set by the harness');

  const backends: BackendScenario[] = [];
  const list = raw['backends'];
  if (!Array.isArray(list) || list.length === 0) bad('backends', 'must be a non-empty array of tables, e.g. [{ latency = "2ms" }]');
  else {
    list.forEach((b: unknown, i) => {
      const at = `backends[${i}].`;
      if (typeof b !== 'object' || b === null || Array.isArray(b)) return bad(`backends[${i}]`, 'must be a table');
      const o = b as Record<string, unknown>;
      unknown(o, BACKEND_KEYS, at);
      if (o['latency'] === undefined) bad(`${at}latency`, 'is required, e.g. "2ms"');
      const nameV = o['name'] ?? `up-${i + 1}`;
      if (typeof nameV !== 'string' || !/^[A-Za-z0-9._-]+$/.test(nameV)) bad(`${at}name`, 'letters, digits, ".", "_" and "-" only');
      const spec: BackendScenario = {
        name: String(nameV),
        latencyMs: duration(o['latency'], `${at}latency`, 0),
        profile: profile(o['profile'], `${at}profile`, defaultProfile),
        weight: int(o['weight'], `${at}weight`, 1, 0, 1000),
      };
      const sigma = real(o['sigma'], `${at}sigma`, 0.01, 5) ?? defaultSigma;
      const alpha = real(o['alpha'], `${at}alpha`, 1.01, 10) ?? defaultAlpha;
      const failRate = real(o['fail_rate'], `${at}fail_rate`, 0, 1);
      const slots = o['concurrency'] === undefined ? defaultSlots : int(o['concurrency'], `${at}concurrency`, 0, 1, 100_000);
      if (sigma !== undefined) spec.sigma = sigma;
      if (alpha !== undefined) spec.alpha = alpha;
      if (failRate !== undefined) spec.failRate = failRate;
      if (slots !== undefined) spec.slots = slots;
      if (o['die_after'] !== undefined) spec.dieAfterMs = duration(o['die_after'], `${at}die_after`, 0);
      backends.push(spec);
    });
    const names = backends.map((b) => b.name);
    names.forEach((n, i) => names.indexOf(n) !== i && bad(`backends[${i}].name`, `"${n}" is used twice`));
  }
  const durationMs = duration(raw['duration'], 'duration', 5000);
  if (durationMs <= 0 || durationMs > 300_000) bad('duration', 'must be between 1ms and 5m');
  const rate = raw['rate'] === undefined || raw['rate'] === 0 ? undefined : int(raw['rate'], 'rate', 0, 1, 200_000);
  // die_after must fall inside the measured run, or the scenario shows no death (checked again against
  // --duration by runScenarios).
  backends.forEach((b, i) => {
    if (b.dieAfterMs !== undefined && b.dieAfterMs >= durationMs) bad(`backends[${i}].die_after`, `must be shorter than duration (${durationMs} ms)`);
  });
  const keyDistribution = raw['key_distribution'] ?? (raw['key_trace'] !== undefined ? 'trace' : 'uniform');
  if (keyDistribution !== 'uniform' && keyDistribution !== 'zipf' && keyDistribution !== 'trace') bad('key_distribution', 'must be "uniform", "zipf" or "trace"');
  let keyTrace: string[] | undefined;
  if (keyDistribution === 'trace') {
    const f = raw['key_trace'];
    if (typeof f !== 'string') bad('key_trace', 'is required with key_distribution = "trace": a file of "TIME_MS KEY" lines');
    else {
      try {
        keyTrace = parseTrace(fs.readFileSync(path.resolve(path.dirname(path.resolve(file)), f), 'utf8'), f).map((e) => e.key);
      } catch (err) {
        bad('key_trace', (err as Error).message);
      }
    }
  }
  const arrivals = raw['arrivals'] ?? 'poisson';
  let bursts: Bursts | undefined;
  if (arrivals === 'bursty') bursts = { factor: 4, share: 0.2, meanBurstMs: 200 };
  else if (arrivals !== 'poisson') bad('arrivals', 'must be "poisson" or "bursty" (the fixed-rate mode\'s send times)');
  const scenario: Scenario = {
    name,
    file,
    description: typeof raw['description'] === 'string' ? raw['description'] : '',
    durationMs,
    warmupMs: duration(raw['warmup'], 'warmup', 1000),
    connections: int(raw['connections'], 'connections', 32, 1, 1024),
    workers: int(raw['workers'], 'workers', 1, 1, 64),
    algorithms,
    keys: int(raw['keys'], 'keys', 1000, 1, 100_000),
    keyDistribution: keyDistribution as Scenario['keyDistribution'],
    pool: (pool ?? {}) as Record<string, unknown>,
    backends,
    baseDir: path.dirname(path.resolve(file)),
  };
  if (rate !== undefined) scenario.rate = rate;
  if (keyDistribution === 'zipf') scenario.keyExponent = real(raw['key_exponent'], 'key_exponent', 0, 10) ?? 1;
  if (keyTrace) scenario.keyTrace = keyTrace;
  if (bursts) scenario.bursts = bursts;
  if (problems.length > 0) throw new ScenarioError(problems.join('\n'));
  return scenario;
}

/** The scenario files shipped in bench/scenarios, by name. */
export function shippedScenarios(): string[] {
  return fs
    .readdirSync(SCENARIO_DIR)
    .filter((f) => f.endsWith('.toml'))
    .map((f) => f.replace(/\.toml$/, ''))
    .sort();
}

/** A shipped scenario's name ("one-slow"), or a path to a .toml file. */
export function loadScenario(nameOrFile: string): Scenario {
  const file = /[/\\]|\.toml$/.test(nameOrFile) ? path.resolve(nameOrFile) : path.join(SCENARIO_DIR, `${nameOrFile}.toml`);
  if (!fs.existsSync(file)) {
    throw new ScenarioError(`no scenario "${nameOrFile}" (${file} does not exist); shipped: ${shippedScenarios().join(', ')}`);
  }
  return parseScenario(fs.readFileSync(file, 'utf8'), file);
}

// ---- lb as a child process --------------------------------------------------------------------------------

const LB_BIN = path.join(PROJECT_ROOT, 'bin', 'lb.js');
/** Every lb still running, killed (whole process group) if the harness exits early. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) killGroup(c, 'SIGKILL');
});

function killGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (c.pid) process.kill(-c.pid, signal);
  } catch {
    // already gone
  }
}

/** A free TCP port on 127.0.0.1 (asked from the OS; free when this returns, not reserved). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface LbConfigOptions {
  port: number;
  workers: number;
  socket: string;
  algorithm: BenchAlgorithm;
  backends: Array<{ name: string; port: number; weight: number }>;
  /** Extra pool keys (raw TOML names). */
  pool?: Record<string, unknown>;
  /** Adds a tcp listener on this port to the same backends (round-robin), as bench/proxy.sh does. */
  tcpPort?: number;
}

/**
 * The generated lb config: one http listener on 127.0.0.1 and one pool. Key-based algorithms hash the
 * load generator's x-user-id header (`hash_key = "header:x-user-id"`).
 */
export function lbConfigToml(o: LbConfigOptions): string {
  const backends = o.backends.map((b) => ({ name: b.name, address: `127.0.0.1:${b.port}`, weight: b.weight }));
  const config: Record<string, unknown> = {
    daemon: { workers: o.workers, grace_period: '2s' },
    admin: { socket: o.socket },
    log: { level: 'warn', access: false },
    listeners: {
      bench: { protocol: 'http', listen: `127.0.0.1:${o.port}`, pool: 'bench' },
      ...(o.tcpPort ? { 'bench-tcp': { protocol: 'tcp', listen: `127.0.0.1:${o.tcpPort}`, pool: 'bench-tcp' } } : {}),
    },
    pools: {
      bench: {
        algorithm: o.algorithm.spec,
        ...(o.algorithm.algorithm.usesKey ? { hash_key: `header:${KEY_HEADER}` } : {}),
        ...(o.pool ?? {}),
        backends,
      },
      ...(o.tcpPort ? { 'bench-tcp': { algorithm: 'round-robin', backends } } : {}),
    },
  };
  return `# Generated by lb bench.\n${stringify(config)}`;
}

/** A running lb daemon started by the harness. */
export class LbProcess {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly child: ChildProcess,
    private readonly logFile: string,
  ) {}

  /**
   * Validates `configText` (as `lb validate` would), writes it to a temp folder, starts
   * `node bin/lb.js run -c FILE` in its own process group (pinned to `cpu` with taskset when given), and
   * resolves once lb answers HTTP on `port`. Rejects, with the end of lb's output, when it exits or does
   * not answer within 20 s.
   */
  static async start(configText: string, port: number, dir: string, cpu?: number): Promise<LbProcess> {
    const file = path.join(dir, 'lb.toml');
    fs.writeFileSync(file, configText);
    const { issues } = parseConfigText(configText, file);
    if (issues.length > 0) throw new Error(`generated lb config is invalid:\n${issues.map(formatIssue).join('\n')}`);
    const logFile = path.join(dir, 'lb.log');
    const log = fs.openSync(logFile, 'w');
    const [cmd, args] = pinned(cpu, process.execPath, [LB_BIN, 'run', '-c', file]);
    const child = spawn(cmd, args, { stdio: ['ignore', log, log], detached: true, cwd: PROJECT_ROOT });
    fs.closeSync(log);
    running.add(child);
    child.once('exit', () => running.delete(child));
    const lb = new LbProcess(dir, port, child, logFile);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`lb exited (${child.exitCode ?? child.signalCode}) at start:\n${lb.logTail()}`);
      if ((await statusOf(port)) > 0) return lb;
      await sleep(100);
    }
    await lb.stop();
    throw new Error(`lb did not answer on 127.0.0.1:${port} within 20 s:\n${lb.logTail()}`);
  }

  logTail(lines = 20): string {
    try {
      return fs.readFileSync(this.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no output)';
    }
  }

  /** SIGTERM (graceful stop); SIGKILL to the whole process group after 8 s. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode === null && c.signalCode === null) {
      await new Promise<void>((resolve) => {
        const kill = setTimeout(() => killGroup(c, 'SIGKILL'), 8000);
        c.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        c.kill('SIGTERM');
      });
    }
    // Workers that outlived the primary (they should not) go with the group.
    killGroup(c, 'SIGKILL');
  }
}

/** The status of an HTTP GET / on 127.0.0.1:port, or 0 when nothing answers within 1 s. */
export function statusOf(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

export const sleep = (msec: number): Promise<void> => new Promise((r) => setTimeout(r, msec));

// ---- runs -----------------------------------------------------------------------------------------------------

export type Mode = 'concurrency' | 'rate';

export interface ScenarioRun {
  scenario: string;
  algorithm: string;
  mode: Mode;
  /** 1-based repeat number (ScenarioOptions.repeat). */
  repeat: number;
  /** The machine's 1-minute load average when the measured run started (noise from other work). */
  loadAverage: number;
  load: LoadResult;
  /** Per backend, in scenario order: requests counted at the upstream, 500s sent, whether it died. */
  backends: Array<{ name: string; requests: number; failed: number; dead: boolean; diedAtMs?: number }>;
}

export interface ScenarioOptions {
  scenarios: readonly Scenario[];
  /** Overrides every scenario's `algorithms` (names, module paths, "all"); resolved against `baseDir`. */
  algorithms?: string;
  baseDir?: string;
  /** Overrides every scenario's duration. */
  durationMs?: number;
  /**
   * Runs of each scenario, mode and algorithm, interleaved (every algorithm once, then again); the report
   * shows the run with the median p99. Default 1. More repeats resist bursts of other work on the machine.
   */
  repeat?: number;
  /** The command line, printed in the report. */
  command?: string;
  /** Folder for README.md, charts and results.json; nothing is written when absent. */
  out?: string;
}

function modesOf(s: Scenario): Mode[] {
  return s.rate ? ['concurrency', 'rate'] : ['concurrency'];
}

function modeLabel(s: Scenario, m: Mode): string {
  return m === 'concurrency'
    ? `fixed concurrency, ${s.connections} connections`
    : `fixed rate (open loop, ${s.bursts ? 'bursty' : 'Poisson'}), ${num(s.rate)} req/s over at most ${s.connections} connections`;
}

/** One measured run: fresh upstreams, fresh lb, warm-up, counts reset, measured load, counts read. */
export async function runOne(
  s: Scenario,
  alg: BenchAlgorithm,
  mode: Mode,
  loadgen: LoadGenerator,
  durationMs = s.durationMs,
  repeat = 1,
): Promise<ScenarioRun> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-bench-'));
  let upstreams: Upstream[] = [];
  let lb: LbProcess | undefined;
  try {
    upstreams = await startUpstreams(s.backends);
    const port = await freePort();
    const config = lbConfigToml({
      port,
      workers: s.workers,
      socket: path.join(dir, 'admin.sock'),
      algorithm: alg,
      pool: s.pool,
      backends: upstreams.map((u, i) => ({ name: u.spec.name, port: u.port, weight: s.backends[i]!.weight })),
    });
    lb = await LbProcess.start(config, port, dir);
    const url = `http://127.0.0.1:${port}/`;
    const rate = mode === 'rate' ? s.rate : undefined;
    const base = {
      url,
      connections: s.connections,
      keys: s.keys,
      seed: repeat,
      ...(s.keyDistribution === 'trace' ? { traceKeys: s.keyTrace ?? [] } : { keyDistribution: s.keyDistribution }),
      ...(s.keyExponent !== undefined ? { keyExponent: s.keyExponent } : {}),
      ...(rate ? { rate, ...(s.bursts ? { bursts: s.bursts } : {}) } : {}),
    };
    if (s.warmupMs > 0) await loadgen.run({ ...base, seed: repeat + 1000, durationMs: s.warmupMs });
    for (const u of upstreams) u.start();
    const loadAverage = os.loadavg()[0] ?? 0;
    if (loadAverage > os.availableParallelism()) {
      progress('scenarios', `warning: load average ${loadAverage.toFixed(1)} above the ${os.availableParallelism()} cores: other work shares the CPUs, this run is noisy`);
    }
    const load = await loadgen.run({ ...base, durationMs });
    const stats = await Promise.all(upstreams.map((u) => u.stats()));
    return {
      scenario: s.name,
      algorithm: alg.algorithm.name,
      mode,
      repeat,
      loadAverage,
      load,
      backends: stats.map((st, i) => ({ name: upstreams[i]!.spec.name, ...st })),
    };
  } finally {
    await lb?.stop();
    await Promise.all(upstreams.map((u) => u.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A run that failed twice (lb did not start, an upstream crashed, ...); the others go on. */
export interface RunFailure {
  scenario: string;
  algorithm: string;
  mode: Mode;
  repeat: number;
  error: string;
}

export async function runScenarios(opts: ScenarioOptions): Promise<{ runs: ScenarioRun[]; failures: RunFailure[]; report?: string }> {
  const runs: ScenarioRun[] = [];
  const failures: RunFailure[] = [];
  const plan: Array<{ s: Scenario; algs: BenchAlgorithm[] }> = [];
  for (const s of opts.scenarios) {
    const d = opts.durationMs ?? s.durationMs;
    const late = s.backends.filter((b) => b.dieAfterMs !== undefined && b.dieAfterMs >= d);
    if (late.length > 0) {
      throw new ScenarioError(`${s.name}: ${late.map((b) => `${b.name} dies after ${b.dieAfterMs} ms`).join(', ')}, not within the ${d} ms run (--duration)`);
    }
    const algs = opts.algorithms !== undefined ? await resolveAlgorithms(opts.algorithms, opts.baseDir) : await resolveAlgorithms(s.algorithms, s.baseDir);
    plan.push({ s, algs });
  }
  const repeats = opts.repeat ?? 1;
  const total = repeats * plan.reduce((n, p) => n + p.algs.length * modesOf(p.s).length, 0);
  const seconds =
    (repeats * plan.reduce((n, p) => n + p.algs.length * modesOf(p.s).length * ((opts.durationMs ?? p.s.durationMs) + p.s.warmupMs + 1700), 0)) / 1000;
  progress('scenarios', `${total} runs, about ${Math.ceil(seconds / 60)} min`);
  const loadgen = LoadGenerator.start();
  try {
    let k = 0;
    for (const { s, algs } of plan) {
      for (const mode of modesOf(s)) {
        for (let r = 1; r <= repeats; r++) {
          for (const alg of algs) {
            k++;
            let run: ScenarioRun | undefined;
            for (let attempt = 1; attempt <= 2 && !run; attempt++) {
              try {
                run = await runOne(s, alg, mode, loadgen, opts.durationMs, r);
              } catch (err) {
                const error = (err as Error).message;
                progress('scenarios', `[${k}/${total}] ${s.name} · ${mode} · ${alg.algorithm.name}: failed (attempt ${attempt} of 2): ${error}`);
                if (attempt === 2) failures.push({ scenario: s.name, algorithm: alg.algorithm.name, mode, repeat: r, error });
              }
            }
            if (!run) continue;
            runs.push(run);
            const served = run.backends.reduce((a, b) => a + b.requests, 0) || 1;
            progress(
              'scenarios',
              `[${k}/${total}] ${s.name} · ${mode} · ${alg.algorithm.name}${repeats > 1 ? ` #${r}` : ''}: ${num(run.load.rps)} req/s` +
                (rateShort(run.load) ? ` (BELOW the target ${num(run.load.targetRate)} req/s)` : '') +
                ', ' +
                `p50 ${ms(run.load.latency.p50)} ms, p99 ${ms(run.load.latency.p99)} ms, ${run.load.non2xx} non-2xx, ` +
                `${run.load.errors} errors, shares ${run.backends.map((b) => pct(b.requests / served, 0).replace(' ', '')).join('/')}`,
            );
          }
        }
      }
    }
  } finally {
    await loadgen.stop();
  }
  if (!opts.out) return { runs, failures };
  const rep = scenariosReport(opts.scenarios, runs, opts);
  if (failures.length > 0) {
    rep.add('## Failed runs', table(['scenario', 'mode', 'algorithm', 'repeat', 'error'], failures.map((f) => [f.scenario, f.mode, f.algorithm, String(f.repeat), f.error.split('\n')[0]!]), 'lllrl'));
  }
  const report = rep.write(opts.out, { scenarios: opts.scenarios, runs, failures });
  progress('scenarios', `report: ${report}${failures.length ? ` (${failures.length} failed runs)` : ''}`);
  return { runs, failures, report };
}

// ---- report -----------------------------------------------------------------------------------------------------

function backendLine(b: BackendScenario): string[] {
  const shape = b.profile === 'lognormal' ? `σ ${b.sigma ?? 1}` : b.profile === 'pareto' ? `α ${b.alpha ?? 1.5}` : '';
  return [
    b.name,
    `${b.latencyMs} ms`,
    shape ? `${b.profile} (${shape})` : b.profile,
    String(b.weight),
    b.failRate ? pct(b.failRate, 0) : '–',
    b.dieAfterMs !== undefined ? `${b.dieAfterMs / 1000} s` : '–',
    b.slots ? String(b.slots) : 'unlimited',
  ];
}

/** Of the repeats of one scenario, mode and algorithm, the run with the median p99 (the lower middle one). */
export function medianRun(runs: readonly ScenarioRun[]): ScenarioRun | undefined {
  const sorted = [...runs].sort((a, b) => a.load.latency.p99 - b.load.latency.p99);
  return sorted[(sorted.length - 1) >> 1];
}

export function scenariosReport(
  scenarios: readonly Scenario[],
  runs: readonly ScenarioRun[],
  opts: Pick<ScenarioOptions, 'durationMs' | 'repeat' | 'command'> = {},
): Report {
  const rep = new Report('lb bench: scenarios, end to end');
  const durationOverride = opts.durationMs;
  const repeats = Math.max(1, ...runs.map((r) => r.repeat));
  const algs = [...new Set(runs.map((r) => r.algorithm))];
  const find = (s: string, m: Mode, a: string): ScenarioRun | undefined =>
    medianRun(runs.filter((r) => r.scenario === s && r.mode === m && r.algorithm === a));
  if (opts.command) rep.command = opts.command;
  const cores = os.availableParallelism();
  /** min, median, max of f over the repeats of one scenario, mode and algorithm. */
  const over = (s: string, m: Mode, a: string, f: (r: ScenarioRun) => number): { min: number; median: number; max: number } => {
    const v = runs.filter((r) => r.scenario === s && r.mode === m && r.algorithm === a).map(f).filter(Number.isFinite);
    return { min: v.length ? Math.min(...v) : NaN, median: median(v), max: v.length ? Math.max(...v) : NaN };
  };
  const withSpread = (x: { min: number; median: number; max: number }, f: (v: number) => string): string =>
    repeats > 1 && Number.isFinite(x.min) ? `${f(x.median)} [${f(x.min)}–${f(x.max)}]` : f(x.median);
  const noisy = runs.filter((r) => r.loadAverage > cores);
  if (repeats > 1) {
    rep.add(
      `Each scenario, mode and algorithm ran ${repeats} times, interleaved (every algorithm once, then again). Tables ` +
        'give the median with [min–max] over the repeats for p99 and throughput, and the other columns of the run ' +
        'with the median p99; charts draw the median as the bar and min–max as a whisker. results.json holds every run.',
    );
  } else {
    rep.add('**One run per cell**: no spread is known. Run with `--repeat 3` or more to see how much the numbers move.');
  }
  if (noisy.length > 0) {
    rep.add(
      `**Warning:** ${noisy.length} of ${runs.length} runs started with a 1-minute load average above the ${cores} cores ` +
        '(marked ⚠ in the *load avg* column): other work shared the CPUs and those numbers are noisier.',
    );
  }
  rep.add(
    'Each run starts fresh simulated upstreams (one node:http server per backend, each in its own process), the real ' +
      'daemon (`node bin/lb.js run`, config generated per algorithm, log level warn), and the load generator in a separate ' +
      'process, all on 127.0.0.1 of the same machine, so lb, the upstreams and the load generator share its cores: ' +
      'compare algorithms within a scenario, not absolute numbers across machines. After a warm-up the upstream ' +
      'counts are reset and the measured run starts. Shares are counted at the upstreams. Every request carries an ' +
      '`x-user-id` header drawn per request (uniform or Zipf over the scenario\'s `keys`, or a trace\'s keys in ' +
      'order, seeded by the repeat number), which key-based algorithms hash (`hash_key = "header:x-user-id"`); ' +
      '*keys* gives the distinct keys sent and the share of requests sent while the same key was already in flight. ' +
      'Fixed concurrency is autocannon (a closed loop; latency from the request write). Fixed rate is an open loop: ' +
      'Poisson (or bursty) send times drawn in advance, latency from each request\'s *intended* send time, so waiting ' +
      'for a connection or a late send counts (no coordinated omission); a run that answered less than 95 % of its ' +
      'target rate is marked ⚠ and its numbers are not at that rate. *load avg* is the machine\'s 1-minute load ' +
      `average when a run started: above ${cores} (the core count) it is marked ⚠. Regenerate with ` +
      '`lb bench scenarios`; one scenario with `lb bench scenarios --scenario NAME`.',
    '## Summary: p99 latency under fixed concurrency (ms)',
    table(
      ['scenario', ...algs],
      scenarios.map((s) => [s.name, ...algs.map((a) => withSpread(over(s.name, 'concurrency', a, (r) => r.load.latency.p99), ms))]),
    ),
    '## Summary: throughput under fixed concurrency (req/s)',
    table(
      ['scenario', ...algs],
      scenarios.map((s) => [s.name, ...algs.map((a) => withSpread(over(s.name, 'concurrency', a, (r) => r.load.rps), (v) => num(v)))]),
    ),
  );
  const whiskers = (s: string, m: Mode, a: string, f: (r: ScenarioRun) => number) => over(s, m, a, f);
  rep.chart(
    'summary-p99.svg',
    barChart({
      title: 'p99 latency per scenario and algorithm (fixed concurrency)',
      subtitle: `end to end through lb on one machine; ${repeats > 1 ? `median of ${repeats}, whiskers min–max; ` : 'one run each, no spread known; '}lower is better`,
      categories: scenarios.map((s) => s.name),
      series: algs.map((a) => {
        const v = scenarios.map((s) => whiskers(s.name, 'concurrency', a, (r) => r.load.latency.p99));
        return { name: a, values: v.map((x) => (Number.isFinite(x.median) ? x.median : null)), low: v.map((x) => x.min), high: v.map((x) => x.max) };
      }),
      yLabel: 'p99 latency',
      unit: 'ms',
      xLabel: 'scenario',
      log: true,
    }),
    'p99 per scenario and algorithm',
  );

  for (const s of scenarios) {
    const dur = durationOverride ?? s.durationMs;
    rep.add(
      `## ${s.name}`,
      s.description || '',
      `${dur / 1000} s measured after ${s.warmupMs / 1000} s of warm-up per run; lb with ${s.workers} worker${s.workers > 1 ? 's' : ''}` +
        (Object.keys(s.pool).length ? `; pool settings \`${JSON.stringify(s.pool)}\`` : '') +
        (s.file ? `; file \`${path.relative(PROJECT_ROOT, s.file)}\`` : '') +
        '.',
      table(['backend', 'median latency', 'profile', 'weight', 'answers 500', 'dies after', 'served at once'], s.backends.map(backendLine), 'lrlrrrr'),
    );
    for (const m of modesOf(s)) {
      const rows = algs.flatMap((a) => {
        const r = find(s.name, m, a);
        return r ? [r] : [];
      });
      if (rows.length === 0) continue;
      rep.add(
        `### ${s.name}: ${modeLabel(s, m)}`,
        table(
          ['algorithm', 'req/s', 'p50 (ms)', 'p90 (ms)', 'p99 (ms)', 'p99.9 (ms)', 'max (ms)', 'non-2xx', 'errors', 'keys', ...s.backends.map((b) => `share ${b.name}`), 'load avg'],
          rows.map((r) => {
            const served = r.backends.reduce((n, b) => n + b.requests, 0) || 1;
            const short = runs.some((x) => x.scenario === s.name && x.mode === m && x.algorithm === r.algorithm && rateShort(x.load));
            return [
              r.algorithm,
              withSpread(over(s.name, m, r.algorithm, (x) => x.load.rps), (v) => num(v)) + (short ? ` ⚠ target ${num(s.rate)}` : ''),
              ms(r.load.latency.p50),
              ms(r.load.latency.p90),
              withSpread(over(s.name, m, r.algorithm, (x) => x.load.latency.p99), ms),
              ms(r.load.latency.p999),
              ms(r.load.latency.max),
              num(r.load.non2xx),
              num(r.load.errors),
              r.load.keys ? `${num(r.load.keys.distinct)} / ${pct(r.load.keys.sameKeyInFlight, 0)}` : '–',
              ...r.backends.map((b) => pct(b.requests / served, 1) + (b.dead ? ' †' : '')),
              r.loadAverage.toFixed(1) + (r.loadAverage > cores ? ' ⚠' : ''),
            ];
          }),
        ),
      );
      if (rows.some((r) => r.backends.some((b) => b.dead))) rep.add('† the backend died during the run (`die_after`).');
      const id = slug(`${s.name}-${m}`);
      const cats = rows.map((r) => r.algorithm);
      rep.chart(
        `latency-${id}.svg`,
        barChart({
          title: `${s.name}: latency percentiles per algorithm`,
          subtitle: `${modeLabel(s, m)}; ${repeats > 1 ? `run with the median p99, whiskers min–max of ${repeats}` : 'one run, no spread known'}; lower is better`,
          categories: cats,
          series: (['p50', 'p90', 'p99', 'max'] as const).map((p, i) => ({
            name: p,
            values: rows.map((r) => r.load.latency[p]),
            ...(repeats > 1
              ? { low: rows.map((r) => over(s.name, m, r.algorithm, (x) => x.load.latency[p]).min), high: rows.map((r) => over(s.name, m, r.algorithm, (x) => x.load.latency[p]).max) }
              : {}),
            color: SEQUENTIAL[i + 1],
          })),
          yLabel: 'latency',
          unit: 'ms',
          xLabel: 'algorithm',
          log: true,
        }),
        `${s.name} latency percentiles, ${m}`,
      );
      rep.chart(
        `share-${id}.svg`,
        barChart({
          title: `${s.name}: share of requests per backend`,
          subtitle: `${modeLabel(s, m)}; counted at the upstreams`,
          categories: cats,
          series: s.backends.map((b, i) => ({
            name: `${b.name} (${b.latencyMs} ms${b.weight !== 1 ? `, w${b.weight}` : ''}${b.failRate ? `, ${pct(b.failRate, 0)} 500` : ''}${b.dieAfterMs !== undefined ? ', dies' : ''})`,
            values: rows.map((r) => {
              const served = r.backends.reduce((n, x) => n + x.requests, 0) || 1;
              return ((r.backends[i]?.requests ?? 0) / served) * 100;
            }),
          })),
          yLabel: 'share of requests',
          unit: '%',
          xLabel: 'algorithm',
          stacked: true,
          yMax: 100,
        }),
        `${s.name} share per backend, ${m}`,
      );
    }
  }
  return rep;
}

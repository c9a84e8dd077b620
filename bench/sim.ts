// `lb bench sim SCENARIO.toml...`: the balancing algorithms in a discrete-event simulation on a virtual
// clock. No network, no timers, no wall time: a run is a pure function of its scenario and seed, so the same
// seed gives the same numbers on any machine, loaded or not.
//
// The simulator drives the real algorithm code through the registry (algorithms/registry.ts loadAlgorithm:
// built-in names and module paths), never copies. Each of the K balancer instances builds its own Picker
// over its own candidate objects, whose `inflight` counts only that instance's requests (as K lb processes,
// or K workers, each see only their own). A request's completion calls the instance Picker's optional
// `done(candidate, { latencyMs, ok, status })`, which latency-aware pickers depend on. Algorithm options
// (`{ name = "consistent-hash", options = { hash_balance_factor = 1.25 } }`) are passed as create's second
// argument; an algorithm or option this build does not know is reported and its entry skipped.
//
// Model (bench/scenarios/sim/README.md has every key): backends with `capacity` requests served at once
// (the rest wait in a first-come-first-served line, in flight for the balancer) and a service-time
// distribution; events that slow a backend down, kill it or bring it back; open-loop arrivals (Poisson,
// bursty, a recorded trace) or a closed loop of clients; keys uniform, Zipf or from the trace. Latency is
// from a request's intended send time to its answer, so a backlog shows as latency. A dead backend refuses
// at once (the request is retried on another backend up to `retries` times) until an instance's health
// view marks it down, `health_delay` after the death; requests it was serving fail.
//
// Algorithms that draw from Math.random (random, power-of-two-choices) get a seeded Math.random for the
// length of a run (restored afterwards), so that they repeat too.

import fs from 'node:fs';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { loadAlgorithm } from '../algorithms/registry.js';
import type { Algorithm, Candidate, Picker, PickContext, Usable } from '../algorithms/types.js';
import {
  arrivalTimes,
  drawService,
  KEY_DISTRIBUTIONS,
  keyName,
  keySampler,
  MinHeap,
  mulberry32,
  parseTrace,
  SERVICE_DISTRIBUTIONS,
  type Bursts,
  type KeySpec,
  type ServiceTime,
  type TraceEntry,
} from './sim-model.js';
import type { Latency } from './loadgen.js';
import { barChart, SEQUENTIAL } from './svg.js';
import { FileChecker, parseTomlFile } from './toml-check.js';
import { median, ms, num, pct, percentile, PROJECT_ROOT, progress, Report, sig, slug, table } from './report.js';

export const SIM_SCENARIO_DIR = path.join(PROJECT_ROOT, 'bench', 'scenarios', 'sim');

// ---- the algorithm interface, as extended on the algorithm branch ----------------------------------------

/** How a run finished, as Picker.done receives it. */
export interface Outcome {
  latencyMs: number;
  ok: boolean;
  status?: number;
}

/** Picker with the optional completion callback latency-aware algorithms implement. */
type PickerWithDone<B extends Candidate> = Picker<B> & { done?(candidate: B, outcome: Outcome): void };
type CreateWithOptions = <B extends Candidate>(candidates: readonly B[], options?: Readonly<Record<string, unknown>>) => Picker<B>;

/**
 * True when `alg.create` declares a second parameter (the per-pool options). Function.length stops at the
 * first parameter with a default value, so the parameter list of the source text is read too.
 */
export function acceptsOptions(alg: Algorithm): boolean {
  const create = alg.create as (...args: unknown[]) => unknown;
  if (create.length >= 2) return true;
  const params = /^[^(]*\(([^)]*)\)/.exec(Function.prototype.toString.call(create))?.[1] ?? '';
  return params.split(',').filter((p) => p.trim() !== '').length >= 2;
}

/** Builds a Picker, with the options when there are any. */
export function createPicker<B extends Candidate>(alg: Algorithm, candidates: readonly B[], options?: Readonly<Record<string, unknown>>): PickerWithDone<B> {
  if (options && Object.keys(options).length > 0) return (alg.create as CreateWithOptions)(candidates, options) as PickerWithDone<B>;
  return alg.create(candidates) as PickerWithDone<B>;
}

// ---- scenario ------------------------------------------------------------------------------------------

export interface AlgorithmEntry {
  /** Name or module path, as the file gives it. */
  name: string;
  options?: Record<string, unknown>;
  /** How the report names it: the name, with its options when any. */
  label: string;
}

export interface SimBackendSpec {
  name: string;
  weight: number;
  /** Requests served at once; Infinity = a pure delay. */
  capacity: number;
  service: ServiceTime;
}

export interface SimEvent {
  atMs: number;
  backend: string;
  action: 'slow' | 'die' | 'recover';
  /** slow: service-time multiplier. */
  factor: number;
}

export type ArrivalSpec =
  | { process: 'poisson'; ratePerSec: number }
  | { process: 'bursty'; ratePerSec: number; bursts: Bursts }
  | { process: 'closed'; clients: number }
  | { process: 'trace'; file: string; entries: TraceEntry[]; speed: number };

export interface SimScenario {
  name: string;
  file?: string;
  description: string;
  durationMs: number;
  warmupMs: number;
  repeats: number;
  instances: number;
  /** Per instance: delay before its health view follows a death or recovery. */
  healthDelayMs: number[];
  retries: number;
  /** After `duration`, how long the run goes on to let requests finish; the rest count as unfinished. */
  drainMs: number;
  arrivals: ArrivalSpec;
  /** Load as a share of the pool's capacity, when the file gave `load` rather than `rate`. */
  load?: number;
  keys: KeySpec;
  algorithms: AlgorithmEntry[];
  backends: SimBackendSpec[];
  events: SimEvent[];
  /** Backend counts of the static quality section; empty = none. */
  qualitySizes: number[];
  baseDir: string;
}

export class SimScenarioError extends Error {
  override readonly name = 'SimScenarioError';
  readonly code = 'SCENARIO_INVALID';
}

const TOP = ['description', 'duration', 'warmup', 'repeats', 'instances', 'health_delay', 'retries', 'drain', 'arrivals', 'keys', 'algorithms', 'backends', 'events', 'quality'];
const ARRIVAL_KEYS = ['process', 'rate', 'load', 'clients', 'burst_factor', 'burst_share', 'burst_length', 'file', 'speed'];
const BACKEND = ['name', 'count', 'weight', 'capacity', 'service', 'mean', 'sigma', 'alpha'];
const EVENT = ['at', 'backend', 'action', 'factor'];

/** The pool's capacity in requests per ms: sum of capacity / mean service time (Infinity if any is unbounded). */
export function capacityPerMs(backends: readonly SimBackendSpec[]): number {
  return backends.reduce((a, b) => a + b.capacity / b.service.meanMs, 0);
}

/** Parses and checks a sim scenario file; throws SimScenarioError listing every problem as `FILE: key: message`. */
export function parseSimScenario(text: string, file: string, name = path.basename(file).replace(/\.toml$/, '')): SimScenario {
  const raw = parseTomlFile(text, file, SimScenarioError);
  const check = new FileChecker(file);
  const { problems, bad, unknown } = check;
  const table_ = (v: unknown, key: string): Record<string, unknown> => {
    if (v === undefined) return {};
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad(key, 'must be a table'), {};
    return v as Record<string, unknown>;
  };
  const duration = (v: unknown, key: string, dflt: number): number => check.duration(v, key, dflt, true);
  const int = check.int;
  const real = (v: unknown, key: string, dflt: number, min: number, max: number): number => check.real(v, key, min, max) ?? dflt;
  const baseDir = path.dirname(path.resolve(file));

  unknown(raw, TOP, '');
  const durationMs = duration(raw['duration'], 'duration', 10_000);
  if (!(durationMs > 0 && durationMs <= 3_600_000)) bad('duration', 'must be between 1ms and 1h of virtual time');
  const warmupMs = duration(raw['warmup'], 'warmup', 0);
  if (warmupMs >= durationMs) bad('warmup', `must be shorter than duration (${durationMs} ms)`);
  const instances = int(raw['instances'], 'instances', 1, 1, 64);
  let healthDelayMs: number[];
  const hd = raw['health_delay'];
  if (Array.isArray(hd)) {
    if (hd.length !== instances) bad('health_delay', `a list must have one entry per instance (${instances})`);
    healthDelayMs = Array.from({ length: instances }, (_, k) => duration(hd[k] ?? 0, `health_delay[${k}]`, 0));
  } else {
    const d = duration(hd, 'health_delay', 0);
    healthDelayMs = Array.from({ length: instances }, () => d);
  }

  // Backends, `count` replicas each.
  const backends: SimBackendSpec[] = [];
  const list = raw['backends'];
  if (!Array.isArray(list) || list.length === 0) bad('backends', 'must be a non-empty array of tables, e.g. [{ capacity = 4, mean = "2ms" }]');
  else {
    list.forEach((b: unknown, i) => {
      const at = `backends[${i}].`;
      const o = table_(b, `backends[${i}]`);
      unknown(o, BACKEND, at);
      const count = int(o['count'], `${at}count`, 1, 1, 10_000);
      const base = o['name'] ?? `b${i + 1}`;
      if (typeof base !== 'string' || !/^[A-Za-z0-9._-]+$/.test(base)) bad(`${at}name`, 'letters, digits, ".", "_" and "-" only');
      const dist = o['service'] ?? 'exp';
      if (typeof dist !== 'string' || !(SERVICE_DISTRIBUTIONS as readonly string[]).includes(dist)) bad(`${at}service`, `must be one of ${SERVICE_DISTRIBUTIONS.join(', ')}`);
      if (o['mean'] === undefined) bad(`${at}mean`, 'is required: the mean service time, e.g. "2ms"');
      const meanMs = duration(o['mean'], `${at}mean`, 1);
      if (!(meanMs > 0)) bad(`${at}mean`, 'must be more than 0');
      const service: ServiceTime = { dist: dist as ServiceTime['dist'], meanMs };
      if (o['sigma'] !== undefined) service.sigma = real(o['sigma'], `${at}sigma`, 1, 0.01, 5);
      if (o['alpha'] !== undefined) service.alpha = real(o['alpha'], `${at}alpha`, 1.5, 1.01, 10);
      const capacity = o['capacity'] === undefined ? Infinity : int(o['capacity'], `${at}capacity`, 1, 1, 100_000);
      const weight = int(o['weight'], `${at}weight`, 1, 0, 1000);
      for (let r = 0; r < count; r++) backends.push({ name: count > 1 ? `${String(base)}-${r + 1}` : String(base), weight, capacity, service: { ...service } });
    });
    const names = backends.map((b) => b.name);
    names.forEach((n, i) => names.indexOf(n) !== i && bad('backends', `name "${n}" is used twice`));
  }

  const events: SimEvent[] = [];
  const ev = raw['events'] ?? [];
  if (!Array.isArray(ev)) bad('events', 'must be an array of tables');
  else {
    ev.forEach((e: unknown, i) => {
      const at = `events[${i}].`;
      const o = table_(e, `events[${i}]`);
      unknown(o, EVENT, at);
      const atMs = duration(o['at'], `${at}at`, 0);
      if (o['at'] === undefined) bad(`${at}at`, 'is required');
      else if (atMs >= durationMs) bad(`${at}at`, `must be before the end of the run (duration ${durationMs} ms)`);
      const backend = o['backend'];
      if (typeof backend !== 'string' || !backends.some((b) => b.name === backend)) bad(`${at}backend`, `must name a backend (${backends.map((b) => b.name).join(', ')})`);
      const action = o['action'];
      if (action !== 'slow' && action !== 'die' && action !== 'recover') bad(`${at}action`, 'must be "slow", "die" or "recover"');
      const factor = real(o['factor'], `${at}factor`, 1, 0.01, 1000);
      if (action === 'slow' && o['factor'] === undefined) bad(`${at}factor`, 'is required for "slow"');
      events.push({ atMs, backend: String(backend), action: action as SimEvent['action'], factor });
    });
    events.sort((a, b) => a.atMs - b.atMs);
  }

  // Arrivals.
  const a = table_(raw['arrivals'], 'arrivals');
  unknown(a, ARRIVAL_KEYS, 'arrivals.');
  const processName = a['process'] ?? 'poisson';
  let arrivals: ArrivalSpec = { process: 'poisson', ratePerSec: 1 };
  let load: number | undefined;
  const cap = capacityPerMs(backends);
  const rate = (): number => {
    if (a['rate'] !== undefined && a['load'] !== undefined) bad('arrivals', 'give "rate" or "load", not both');
    if (a['load'] !== undefined) {
      load = real(a['load'], 'arrivals.load', 0.8, 0.001, 10);
      if (!Number.isFinite(cap)) return bad('arrivals.load', 'needs a capacity on every backend (load is a share of the pool\'s capacity)'), 1;
      return load * cap * 1000;
    }
    if (a['rate'] === undefined) return bad('arrivals', 'needs "rate" (requests/s) or "load" (share of the capacity)'), 1;
    return real(a['rate'], 'arrivals.rate', 1, 0.001, 10_000_000);
  };
  if (processName === 'poisson') arrivals = { process: 'poisson', ratePerSec: rate() };
  else if (processName === 'bursty') {
    arrivals = {
      process: 'bursty',
      ratePerSec: rate(),
      bursts: {
        factor: real(a['burst_factor'], 'arrivals.burst_factor', 4, 1.01, 1000),
        share: real(a['burst_share'], 'arrivals.burst_share', 0.2, 0.001, 0.999),
        meanBurstMs: duration(a['burst_length'], 'arrivals.burst_length', 200),
      },
    };
  } else if (processName === 'closed') arrivals = { process: 'closed', clients: int(a['clients'], 'arrivals.clients', 32, 1, 100_000) };
  else if (processName === 'trace') {
    const f = a['file'];
    if (typeof f !== 'string') bad('arrivals.file', 'is required for a trace: a file of "TIME_MS KEY" lines');
    else {
      const tf = path.resolve(baseDir, f);
      try {
        arrivals = { process: 'trace', file: tf, entries: parseTrace(fs.readFileSync(tf, 'utf8'), f), speed: real(a['speed'], 'arrivals.speed', 1, 0.001, 1000) };
      } catch (err) {
        bad('arrivals.file', (err as Error).message);
      }
    }
  } else bad('arrivals.process', 'must be one of poisson, bursty, closed, trace');

  const k = table_(raw['keys'], 'keys');
  unknown(k, ['distribution', 'count', 'exponent'], 'keys.');
  const dist = k['distribution'] ?? (arrivals.process === 'trace' ? 'trace' : 'uniform');
  if (typeof dist !== 'string' || !(KEY_DISTRIBUTIONS as readonly string[]).includes(dist)) bad('keys.distribution', `must be one of ${KEY_DISTRIBUTIONS.join(', ')}`);
  if (dist === 'trace' && arrivals.process !== 'trace') bad('keys.distribution', '"trace" needs arrivals.process = "trace"');
  const keys: KeySpec = { distribution: dist as KeySpec['distribution'], count: int(k['count'], 'keys.count', 10_000, 1, 10_000_000) };
  if (dist === 'zipf') keys.exponent = real(k['exponent'], 'keys.exponent', 1, 0, 10);

  const algorithms: AlgorithmEntry[] = [];
  const al = raw['algorithms'];
  if (!Array.isArray(al) || al.length === 0) bad('algorithms', 'must be a non-empty list of names or { name = "...", options = { ... } }');
  else {
    al.forEach((x: unknown, i) => {
      if (typeof x === 'string') return void algorithms.push({ name: x, label: x });
      const o = table_(x, `algorithms[${i}]`);
      unknown(o, ['name', 'options', 'label'], `algorithms[${i}].`);
      if (typeof o['name'] !== 'string') return bad(`algorithms[${i}].name`, 'is required');
      const options = table_(o['options'], `algorithms[${i}].options`);
      const opts = Object.entries(options).map(([k, v]) => `${k}=${String(v)}`).join(', ');
      const label = typeof o['label'] === 'string' ? o['label'] : opts ? `${o['name']} (${opts})` : o['name'];
      algorithms.push({ name: o['name'], ...(Object.keys(options).length ? { options } : {}), label });
    });
  }

  const q = table_(raw['quality'], 'quality');
  unknown(q, ['sizes'], 'quality.');
  const sizes = q['sizes'] ?? [];
  if (!Array.isArray(sizes) || !sizes.every((n) => Number.isInteger(n) && n >= 2 && n <= 10_000)) bad('quality.sizes', 'a list of backend counts from 2 to 10000');

  if (problems.length > 0) throw new SimScenarioError(problems.join('\n'));
  return {
    name,
    file,
    description: typeof raw['description'] === 'string' ? raw['description'] : '',
    durationMs,
    warmupMs,
    repeats: int(raw['repeats'], 'repeats', 5, 1, 100),
    instances,
    healthDelayMs,
    retries: int(raw['retries'], 'retries', 1, 0, 10),
    drainMs: duration(raw['drain'], 'drain', 60_000),
    arrivals,
    ...(load !== undefined ? { load } : {}),
    keys,
    algorithms,
    backends,
    events,
    qualitySizes: sizes as number[],
    baseDir,
  };
}

export function shippedSimScenarios(): string[] {
  return fs
    .readdirSync(SIM_SCENARIO_DIR)
    .filter((f) => f.endsWith('.toml'))
    .map((f) => f.replace(/\.toml$/, ''))
    .sort();
}

/** A shipped sim scenario's name ("hot-keys"), or a path to a .toml file. */
export function loadSimScenario(nameOrFile: string): SimScenario {
  const file = /[/\\]|\.toml$/.test(nameOrFile) ? path.resolve(nameOrFile) : path.join(SIM_SCENARIO_DIR, `${nameOrFile}.toml`);
  if (!fs.existsSync(file)) throw new SimScenarioError(`no sim scenario "${nameOrFile}" (${file} does not exist); shipped: ${shippedSimScenarios().join(', ')}`);
  return parseSimScenario(fs.readFileSync(file, 'utf8'), file);
}

// ---- algorithm entries ----------------------------------------------------------------------------------

export interface ResolvedEntry {
  entry: AlgorithmEntry;
  algorithm: Algorithm;
}

export interface SkippedEntry {
  entry: AlgorithmEntry;
  reason: string;
}

/**
 * Resolves each entry through the registry. An unknown algorithm, options given to an algorithm whose
 * create takes none, or a create that throws on the options (an unknown or invalid option) skips the entry
 * with the reason.
 */
export async function resolveEntries(entries: readonly AlgorithmEntry[], baseDir: string): Promise<{ ok: ResolvedEntry[]; skipped: SkippedEntry[] }> {
  const ok: ResolvedEntry[] = [];
  const skipped: SkippedEntry[] = [];
  for (const entry of entries) {
    let algorithm: Algorithm;
    try {
      algorithm = await loadAlgorithm(entry.name, baseDir);
    } catch (err) {
      skipped.push({ entry, reason: (err as Error).message });
      continue;
    }
    if (entry.options) {
      if (!acceptsOptions(algorithm)) {
        skipped.push({ entry, reason: `algorithm "${algorithm.name}" in this build takes no options (given: ${Object.keys(entry.options).join(', ')})` });
        continue;
      }
      try {
        createPicker(algorithm, [{ name: 'a', weight: 1, inflight: 0 }, { name: 'b', weight: 1, inflight: 0 }], entry.options);
      } catch (err) {
        skipped.push({ entry, reason: `algorithm "${algorithm.name}" rejects the options: ${(err as Error).message}` });
        continue;
      }
    }
    ok.push({ entry, algorithm });
  }
  return { ok, skipped };
}

// ---- the simulation ---------------------------------------------------------------------------------------

interface SimCandidate extends Candidate {
  name: string;
  weight: number;
  inflight: number;
  readonly index: number;
}

interface Job {
  key: string | undefined;
  /** Intended send time (the arrival). */
  sent: number;
  instance: number;
  client: number;
  measured: boolean;
  tried: number[];
  backend: number;
  /** When the balancer sent it to `backend` (Picker.done's latency is from here). */
  dispatched: number;
  /** The backend's epoch when the job reached it: a death bumps the epoch and fails the job. */
  epoch: number;
  finished: boolean;
}

interface Ev {
  t: number;
  seq: number;
  run: () => void;
}

/** Events by (time, insertion order): equal times run in the order they were scheduled. */
class Agenda {
  private readonly heap = new MinHeap<Ev>((x, y) => x.t < y.t || (x.t === y.t && x.seq < y.seq));
  private seq = 0;
  at(t: number, run: () => void): void {
    this.heap.push({ t, seq: this.seq++, run });
  }
  pop(): Ev | undefined {
    return this.heap.pop();
  }
}

export interface SimRun {
  scenario: string;
  algorithm: string;
  seed: number;
  /** Measured requests: intended send time in [warmup, duration). */
  requests: number;
  /** Measured requests answered by a backend (2xx). */
  ok: number;
  /** Measured requests that failed: refused on every try, no usable backend, failed by a death, unfinished. */
  errors: number;
  unfinished: number;
  /** Latency of every measured request from its intended send time (unfinished ones: a lower bound). */
  latency: Latency;
  /** Answers per virtual second over the measured window. */
  throughput: number;
  /** Offered requests per second over the measured window. */
  offered: number;
  backends: Array<{ name: string; served: number; share: number; sentAfterDeath: number; maxLine: number }>;
  keys: { distinct: number; sameKeyInFlight: number; maxSameKey: number };
  /** Virtual time when the run ended, ms. */
  endMs: number;
}

/**
 * One simulation run of `alg` over the scenario with `seed`. Reads no clock and no timer: every time is
 * virtual and every draw comes from the seeded generators.
 */
export function simulate(s: SimScenario, alg: Algorithm, options: Record<string, unknown> | undefined, seed: number, label = alg.name): SimRun {
  const savedRandom = Math.random;
  Math.random = mulberry32((seed ^ 0x5bd1e995) >>> 0);
  try {
    return simulateInner(s, alg, options, seed, label);
  } finally {
    Math.random = savedRandom;
  }
}

function simulateInner(s: SimScenario, alg: Algorithm, options: Record<string, unknown> | undefined, seed: number, label: string): SimRun {
  // Independent streams, so that e.g. a different pick sequence does not change the arrivals.
  const rngArrivals = mulberry32(seed);
  const rngKeys = mulberry32(seed + 0x1000193);
  const rngService = mulberry32(seed + 0x2000193);
  const rngInstance = mulberry32(seed + 0x3000193);
  const agenda = new Agenda();
  let now = 0;
  const n = s.backends.length;
  const K = s.instances;

  const instances = Array.from({ length: K }, () => {
    const candidates: SimCandidate[] = s.backends.map((b, index) => ({ name: b.name, weight: b.weight, inflight: 0, index }));
    return { candidates, picker: createPicker(alg, candidates, options), down: new Uint8Array(n) };
  });
  const backends = s.backends.map((spec) => ({
    spec,
    busy: 0,
    line: [] as Job[],
    lineHead: 0,
    factor: 1,
    dead: false,
    epoch: 0,
    inService: new Set<Job>(),
    served: 0,
    sentAfterDeath: 0,
    maxLine: 0,
  }));

  const samples: number[] = [];
  let requests = 0;
  let okCount = 0;
  let errors = 0;
  const keyInflight = new Map<string, number>();
  const distinct = new Set<string>();
  let sameKey = 0;
  let maxSameKey = 0;
  const live = new Set<Job>();
  const nextKey = s.keys.distribution === 'trace' ? undefined : keySampler(s.keys, rngKeys);

  const finish = (job: Job, ok: boolean): void => {
    if (job.finished) return;
    job.finished = true;
    live.delete(job);
    if (job.key !== undefined) {
      const c = keyInflight.get(job.key)! - 1;
      if (c === 0) keyInflight.delete(job.key);
      else keyInflight.set(job.key, c);
    }
    if (job.measured) {
      samples.push(now - job.sent);
      if (ok) okCount++;
      else errors++;
    }
    if (s.arrivals.process === 'closed' && now < s.durationMs) {
      // The client sends its next request at once after an answer, 1 ms after a failure (a client that
      // retried at once against no usable backend would loop at one instant of virtual time).
      const client = job.client;
      const at = ok ? now : now + 1;
      agenda.at(at, () => arrive(at, undefined, client));
    }
  };

  const release = (job: Job, ok: boolean, status: number): void => {
    const inst = instances[job.instance]!;
    const c = inst.candidates[job.backend]!;
    c.inflight--;
    inst.picker.inflightChanged?.(c);
    inst.picker.done?.(c, { latencyMs: now - job.dispatched, ok, status });
  };

  const startService = (bi: number, job: Job): void => {
    const b = backends[bi]!;
    b.busy++;
    b.inService.add(job);
    const epoch = b.epoch;
    agenda.at(now + drawService(b.spec.service, rngService) * b.factor, () => {
      if (b.epoch !== epoch || job.finished) return;
      b.busy--;
      b.inService.delete(job);
      b.served++;
      release(job, true, 200);
      finish(job, true);
      if (b.lineHead < b.line.length) {
        const next = b.line[b.lineHead]!;
        b.line[b.lineHead++] = undefined as unknown as Job;
        if (b.lineHead > 1024 && b.lineHead * 2 > b.line.length) {
          b.line.splice(0, b.lineHead);
          b.lineHead = 0;
        }
        startService(bi, next);
      }
    });
  };

  const dispatch = (job: Job): void => {
    const inst = instances[job.instance]!;
    const ctx: PickContext = job.key === undefined ? {} : { key: job.key };
    const usable: Usable<SimCandidate> = (c) => inst.down[c.index] === 0 && !job.tried.includes(c.index);
    const c = inst.picker.pick(ctx, usable);
    if (!c) return finish(job, false);
    const bi = c.index;
    const b = backends[bi]!;
    c.inflight++;
    inst.picker.inflightChanged?.(c);
    job.tried.push(bi);
    job.backend = bi;
    job.dispatched = now;
    if (b.dead) {
      // Connection refused: no time spent; another backend while retries remain.
      if (job.measured) b.sentAfterDeath++;
      release(job, false, 502);
      if (job.tried.length <= s.retries) return dispatch(job);
      return finish(job, false);
    }
    job.epoch = b.epoch;
    if (b.busy < b.spec.capacity) startService(bi, job);
    else {
      b.line.push(job);
      b.maxLine = Math.max(b.maxLine, b.line.length - b.lineHead);
    }
  };

  const arrive = (t: number, traceKey: string | undefined, client: number): void => {
    const key = s.keys.distribution === 'trace' ? traceKey : nextKey!();
    const measured = t >= s.warmupMs && t < s.durationMs;
    const instance = s.arrivals.process === 'closed' ? client % K : Math.floor(rngInstance() * K);
    const job: Job = { key, sent: t, instance, client, measured, tried: [], backend: -1, dispatched: t, epoch: 0, finished: false };
    live.add(job);
    if (key !== undefined) {
      const c = keyInflight.get(key) ?? 0;
      if (measured) {
        requests++;
        distinct.add(key);
        if (c > 0) sameKey++;
        maxSameKey = Math.max(maxSameKey, c + 1);
      }
      keyInflight.set(key, c + 1);
    } else if (measured) requests++;
    dispatch(job);
  };

  // Arrivals.
  const arr = s.arrivals;
  if (arr.process === 'poisson' || arr.process === 'bursty') {
    const next = arrivalTimes(arr.ratePerSec / 1000, rngArrivals, arr.process === 'bursty' ? arr.bursts : undefined);
    const schedule = (): void => {
      const t = next();
      if (t >= s.durationMs) return;
      agenda.at(t, () => {
        arrive(t, undefined, 0);
        schedule();
      });
    };
    schedule();
  } else if (arr.process === 'closed') {
    // Clients start 1 µs apart, so that the first picks do not all see the same empty state.
    for (let c = 0; c < arr.clients; c++) agenda.at(c * 0.001, () => arrive(now, undefined, c));
  } else {
    // The trace, replayed at `speed`, looped (shifted by its length plus its mean gap) until `duration`.
    const e = arr.entries;
    const span = e[e.length - 1]!.atMs / arr.speed;
    const period = span + (e.length > 1 ? span / (e.length - 1) : 1);
    let i = 0;
    let loop = 0;
    const schedule = (): void => {
      const t = loop * period + e[i]!.atMs / arr.speed;
      if (t >= s.durationMs) return;
      const key = e[i]!.key;
      if (++i === e.length) (i = 0), loop++;
      agenda.at(t, () => {
        arrive(t, key, 0);
        schedule();
      });
    };
    schedule();
  }

  // Backend events, and each instance's view of them after its health delay.
  for (const e of s.events) {
    const bi = s.backends.findIndex((b) => b.name === e.backend);
    const b = backends[bi]!;
    agenda.at(e.atMs, () => {
      if (e.action === 'slow') b.factor = e.factor;
      else if (e.action === 'recover') {
        b.dead = false;
        b.factor = 1;
      } else if (!b.dead) {
        b.dead = true;
        b.epoch++;
        const failed = [...b.inService, ...b.line.slice(b.lineHead)];
        b.inService.clear();
        b.line = [];
        b.lineHead = 0;
        b.busy = 0;
        for (const job of failed) {
          release(job, false, 502);
          finish(job, false);
        }
      }
    });
    if (e.action !== 'slow') {
      s.healthDelayMs.forEach((d, k) => agenda.at(e.atMs + d, () => void (instances[k]!.down[bi] = e.action === 'die' ? 1 : 0)));
    }
  }

  const end = s.durationMs + s.drainMs;
  for (let ev = agenda.pop(); ev; ev = agenda.pop()) {
    if (ev.t > end) break;
    now = ev.t;
    ev.run();
  }
  let unfinished = 0;
  for (const job of live) {
    if (!job.measured) continue;
    unfinished++;
    errors++;
    samples.push(end - job.sent);
  }
  const sorted = Float64Array.from(samples).sort();
  const total = backends.reduce((a, b) => a + b.served, 0) || 1;
  const windowSec = (s.durationMs - s.warmupMs) / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    scenario: s.name,
    algorithm: label,
    seed,
    requests,
    ok: okCount,
    errors,
    unfinished,
    latency: {
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      mean: sorted.length ? sum / sorted.length : NaN,
    },
    throughput: okCount / windowSec,
    offered: requests / windowSec,
    backends: backends.map((b) => ({ name: b.spec.name, served: b.served, share: b.served / total, sentAfterDeath: b.sentAfterDeath, maxLine: b.maxLine })),
    keys: { distinct: distinct.size, sameKeyInFlight: requests ? sameKey / requests : 0, maxSameKey },
    endMs: now,
  };
}

// ---- static quality (as Envoy's load_balancer_benchmark) -------------------------------------------------

export interface StaticQuality {
  algorithm: string;
  hosts: number;
  /** Build time per host, µs (median of repeated builds; wall clock). */
  buildUsPerHost: number;
  /** Heap retained per host by a built Picker, bytes (after a forced GC; wall-clock-free but VM-dependent). */
  bytesPerHost: number;
  /** Cost of one pick, ns (best of 5 timed batches; wall clock). */
  pickNs: number;
  /** Key-based only: share of keys that move when host N/2 is removed (rebuild); optimum 1/N. */
  movedOnRemoval?: number;
  /** Key-based only: share of keys two instances map differently when one sees host N/2 down; optimum 1/N. */
  disagreement?: number;
}

let gcFn: (() => void) | undefined;
function gc(): void {
  if (!gcFn) {
    v8.setFlagsFromString('--expose-gc');
    gcFn = vm.runInNewContext('gc') as () => void;
  }
  gcFn();
}

const ALL: Usable<Candidate> = () => true;
let sink = 0;

export function staticQuality(r: ResolvedEntry, hosts: number, keyCount = 20_000): StaticQuality {
  const { algorithm: alg, entry } = r;
  const make = (count: number, skip = -1): SimCandidate[] =>
    Array.from({ length: count }, (_, i) => ({ name: `host-${i}`, weight: 1, inflight: 0, index: i })).filter((c) => c.index !== skip);
  const hostsList = make(hosts);
  // Build time: as many builds as fit in ~50 ms (at least 3), median.
  const times: number[] = [];
  const t0 = process.hrtime.bigint();
  while (times.length < 3 || (Number(process.hrtime.bigint() - t0) < 50e6 && times.length < 200)) {
    const a = process.hrtime.bigint();
    createPicker(alg, hostsList, entry.options);
    times.push(Number(process.hrtime.bigint() - a) / 1e3);
  }
  // Memory: 8 pickers kept alive between two forced collections.
  gc();
  const before = process.memoryUsage().heapUsed;
  const kept = Array.from({ length: 8 }, () => createPicker(alg, make(hosts), entry.options));
  gc();
  const bytes = (process.memoryUsage().heapUsed - before) / kept.length / hosts;
  sink += kept.length;
  // Pick cost.
  const picker = createPicker(alg, hostsList, entry.options);
  const ctxs: PickContext[] = Array.from({ length: 4096 }, (_, i) => (alg.usesKey ? { key: keyName(i) } : {}));
  const batch = (count: number): number => {
    const a = process.hrtime.bigint();
    for (let i = 0; i < count; i++) sink += picker.pick(ctxs[i & 4095]!, ALL)?.weight ?? 1;
    return Number(process.hrtime.bigint() - a) / count;
  };
  let count = 2000;
  while (batch(count) * count < 10e6 && count < 1e8) count *= 4;
  const pickNs = Math.min(...Array.from({ length: 5 }, () => batch(count)));
  const out: StaticQuality = { algorithm: entry.label, hosts, buildUsPerHost: median(times) / hosts, bytesPerHost: Math.max(0, bytes), pickNs };
  if (alg.usesKey) {
    const gone = hosts >> 1;
    const full = createPicker(alg, make(hosts), entry.options);
    const less = createPicker(alg, make(hosts, gone), entry.options);
    const other = createPicker(alg, make(hosts), entry.options);
    const downView: Usable<SimCandidate> = (c) => c.index !== gone;
    let moved = 0;
    let differ = 0;
    for (let i = 0; i < keyCount; i++) {
      const ctx = { key: keyName(i) };
      const a = full.pick(ctx, ALL)!.index;
      if (less.pick(ctx, ALL)!.index !== a) moved++;
      if (other.pick(ctx, downView)!.index !== a) differ++;
    }
    out.movedOnRemoval = moved / keyCount;
    out.disagreement = differ / keyCount;
  }
  return out;
}

// ---- the part ------------------------------------------------------------------------------------------

export interface Spread {
  min: number;
  median: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  const v = values.filter(Number.isFinite);
  return { min: v.length ? Math.min(...v) : NaN, median: median(v), max: v.length ? Math.max(...v) : NaN };
}

export interface SimResults {
  scenario: SimScenario;
  seed: number;
  runs: SimRun[];
  skipped: Array<{ label: string; reason: string }>;
  quality: StaticQuality[];
}

export interface SimOptions {
  seed?: number;
  /** Overrides the file's repeats. */
  repeats?: number;
  /** Skip the static quality section (wall-clock timings). */
  quality?: boolean;
  command?: string;
  /** Folder of the report (DIR/NAME for each scenario, and DIR/README.md over every scenario in DIR). */
  out?: string;
}

/** Runs every algorithm entry `repeats` times (seeds seed, seed + 1, ...) over the scenario. */
export async function runSim(s: SimScenario, opts: SimOptions = {}): Promise<{ results: SimResults; report?: string }> {
  const seed = opts.seed ?? 1;
  const repeats = opts.repeats ?? s.repeats;
  const { ok, skipped } = await resolveEntries(s.algorithms, s.baseDir);
  for (const sk of skipped) progress('sim', `${s.name}: skipped ${sk.entry.label}: ${sk.reason}`);
  const runs: SimRun[] = [];
  for (const r of ok) {
    for (let i = 0; i < repeats; i++) runs.push(simulate(s, r.algorithm, r.entry.options, seed + i, r.entry.label));
    const p99 = spread(runs.filter((x) => x.algorithm === r.entry.label).map((x) => x.latency.p99));
    progress('sim', `${s.name} · ${r.entry.label}: p99 ${ms(p99.median)} ms [${ms(p99.min)}–${ms(p99.max)}] over ${repeats} seeds`);
  }
  const quality = opts.quality === false ? [] : s.qualitySizes.flatMap((n) => ok.map((r) => staticQuality(r, n)));
  const results: SimResults = { scenario: s, seed, runs, skipped: skipped.map((x) => ({ label: x.entry.label, reason: x.reason })), quality };
  if (!opts.out) return { results };
  const dir = path.join(opts.out, slug(s.name));
  const report = simReport(results, opts.command).write(dir, { ...results, scenario: { ...s, arrivals: traceless(s.arrivals) } });
  writeSimSummary(opts.out);
  progress('sim', `report: ${report}`);
  return { results, report };
}

/** The arrivals without a trace's entries (results.json stays small). */
function traceless(a: ArrivalSpec): unknown {
  return a.process === 'trace' ? { process: 'trace', file: path.relative(PROJECT_ROOT, a.file), requests: a.entries.length, speed: a.speed } : a;
}

const range = (sp: Spread, f: (v: number) => string): string =>
  sp.min === sp.max ? f(sp.median) : `${f(sp.median)} [${f(sp.min)}–${f(sp.max)}]`;

function arrivalsLine(s: SimScenario): string {
  const a = s.arrivals;
  const load = s.load !== undefined ? ` (${pct(s.load, 0)} of the pool's capacity)` : '';
  if (a.process === 'poisson') return `Poisson arrivals, ${num(a.ratePerSec)} req/s${load}`;
  if (a.process === 'bursty') return `bursty arrivals (Markov-modulated Poisson), mean ${num(a.ratePerSec)} req/s${load}, bursts ${a.bursts.factor}x the calm rate for ${pct(a.bursts.share, 0)} of the time, ${a.bursts.meanBurstMs} ms each on average`;
  if (a.process === 'closed') return `closed loop, ${a.clients} clients each with one request outstanding`;
  return `trace replay of \`${path.relative(PROJECT_ROOT, a.file)}\` (${num(a.entries.length)} requests, looped) at ${a.speed}x`;
}

function keysLine(k: KeySpec): string {
  if (k.distribution === 'none') return 'no hash key';
  if (k.distribution === 'trace') return 'keys from the trace';
  return k.distribution === 'zipf' ? `Zipf(${k.exponent}) over ${num(k.count)} keys` : `uniform over ${num(k.count)} keys`;
}

export function simReport(r: SimResults, command?: string): Report {
  const s = r.scenario;
  const rep = new Report(`lb bench sim: ${s.name}`);
  if (command) rep.command = command;
  const labels = [...new Set(r.runs.map((x) => x.algorithm))];
  const of = (a: string): SimRun[] => r.runs.filter((x) => x.algorithm === a);
  const sp = (a: string, f: (x: SimRun) => number): Spread => spread(of(a).map(f));
  const repeats = Math.max(0, ...labels.map((a) => of(a).length));
  rep.add(
    s.description,
    `A discrete-event simulation on a virtual clock (no network, no wall time): the same seed gives the same numbers on any machine. ` +
      `${(s.durationMs - s.warmupMs) / 1000} s of virtual time measured after ${s.warmupMs / 1000} s of warm-up; ${arrivalsLine(s)}; ` +
      `${keysLine(s.keys)}; ${s.instances} balancer instance${s.instances > 1 ? 's, each with its own in-flight counts and health view (a request goes to one at random)' : ''}; ` +
      `${s.retries} retr${s.retries === 1 ? 'y' : 'ies'} after a refused connection. Every number is the median over ${repeats} seeds ` +
      `(${r.seed}..${r.seed + repeats - 1}) with [min–max] when they differ; charts draw the median as the bar and min–max as a whisker. ` +
      'Latency runs from the intended send time to the answer, so a backlog counts in full. ' +
      (s.file ? `Scenario file: \`${path.relative(PROJECT_ROOT, s.file)}\`.` : ''),
    table(
      ['backend', 'capacity (at once)', 'service time', 'mean', 'weight'],
      s.backends.map((b) => [b.name, Number.isFinite(b.capacity) ? String(b.capacity) : 'unlimited', b.service.dist + (b.service.sigma ? ` σ ${b.service.sigma}` : '') + (b.service.alpha ? ` α ${b.service.alpha}` : ''), `${sig(b.service.meanMs)} ms`, String(b.weight)]),
      'lrlrr',
    ),
  );
  if (s.events.length) {
    rep.add(
      table(['at', 'backend', 'event'], s.events.map((e) => [`${e.atMs / 1000} s`, e.backend, e.action === 'slow' ? `service ×${e.factor}` : e.action]), 'rll'),
      `Each instance's health view follows a death or recovery after ${[...new Set(s.healthDelayMs)].map((d) => `${d} ms`).join(' / ')}` +
        (new Set(s.healthDelayMs).size > 1 ? ` (instances ${s.healthDelayMs.map((d) => `${d} ms`).join(', ')})` : '') +
        '; until then a dead backend refuses connections.',
    );
  }
  if (r.skipped.length) {
    rep.add('**Skipped entries** (not known to the registry of this build):', r.skipped.map((x) => `- \`${x.label}\`: ${x.reason}`).join('\n'));
  }
  rep.add(
    '## Latency and errors',
    table(
      ['algorithm', 'p50 (ms)', 'p99 (ms)', 'p99.9 (ms)', 'max (ms)', 'errors', 'answers/s', 'same key in flight'],
      labels.map((a) => [
        a,
        range(sp(a, (x) => x.latency.p50), ms),
        range(sp(a, (x) => x.latency.p99), ms),
        range(sp(a, (x) => x.latency.p999), ms),
        range(sp(a, (x) => x.latency.max), ms),
        range(sp(a, (x) => x.errors / Math.max(1, x.requests)), (v) => pct(v, 2)),
        range(sp(a, (x) => x.throughput), (v) => num(v)),
        s.keys.distribution === 'none' ? '–' : range(sp(a, (x) => x.keys.sameKeyInFlight), (v) => pct(v, 1)),
      ]),
    ),
    s.keys.distribution === 'none'
      ? ''
      : `*same key in flight*: share of requests that arrived while another with the same key was in flight. Distinct keys sent: ${num(median(r.runs.map((x) => x.keys.distinct)))} (median over runs).`,
  );
  rep.chart(
    'latency.svg',
    barChart({
      title: `${s.name}: tail latency per algorithm`,
      subtitle: `median over ${repeats} seeds, whiskers min–max; virtual clock; lower is better`,
      categories: labels,
      series: (['p50', 'p99', 'p999'] as const).map((p, i) => ({
        name: p === 'p999' ? 'p99.9' : p,
        values: labels.map((a) => sp(a, (x) => x.latency[p]).median),
        low: labels.map((a) => sp(a, (x) => x.latency[p]).min),
        high: labels.map((a) => sp(a, (x) => x.latency[p]).max),
        color: SEQUENTIAL[i + 1],
      })),
      yLabel: 'latency',
      unit: 'ms',
      xLabel: 'algorithm',
      log: true,
    }),
    `${s.name} latency`,
  );
  rep.add(
    '## Share of requests per backend',
    table(
      ['algorithm', ...s.backends.map((b) => b.name), ...(s.events.some((e) => e.action === 'die') ? ['sent to a dead backend'] : []), 'longest line'],
      labels.map((a) => [
        a,
        ...s.backends.map((_, i) => range(sp(a, (x) => x.backends[i]!.share), (v) => pct(v, 1))),
        ...(s.events.some((e) => e.action === 'die') ? [range(sp(a, (x) => x.backends.reduce((n, b) => n + b.sentAfterDeath, 0)), (v) => num(v))] : []),
        range(sp(a, (x) => Math.max(...x.backends.map((b) => b.maxLine))), (v) => num(v)),
      ]),
    ),
    '*sent to a dead backend*: measured connection attempts to a backend after its death (each refused, then retried while retries remain). ' +
      "*longest line*: the most requests waiting at one backend at once (beyond its capacity).",
  );
  if (s.backends.length <= 12) {
    rep.chart(
      'share.svg',
      barChart({
        title: `${s.name}: share of requests per backend`,
        subtitle: `median over ${repeats} seeds`,
        categories: labels,
        series: s.backends.map((b, i) => ({ name: b.name, values: labels.map((a) => sp(a, (x) => x.backends[i]!.share * 100).median) })),
        yLabel: 'share of requests',
        unit: '%',
        xLabel: 'algorithm',
        stacked: true,
        yMax: 100,
      }),
      `${s.name} shares`,
    );
  }
  if (r.quality.length) {
    rep.add(
      '## Static quality (as Envoy\'s load_balancer_benchmark)',
      'Hosts of weight 1. *Build* and *pick* are wall-clock timings on this machine (which may be shared: compare within ' +
        'the table); *memory* is the heap a built Picker retains per host, after a forced GC. *Moved on removal*: share ' +
        'of 20,000 keys that map elsewhere after host N/2 is removed and the Picker rebuilt (optimum 1/N). *Disagreement*: ' +
        'share of keys two instances map differently when one sees host N/2 down and the other does not (optimum 1/N: ' +
        'only that host\'s keys).',
      table(
        ['algorithm', 'hosts', 'build (µs/host)', 'memory (bytes/host)', 'pick (ns)', 'moved on removal', 'disagreement', 'optimum'],
        r.quality.map((q) => [
          q.algorithm,
          num(q.hosts),
          sig(q.buildUsPerHost),
          num(q.bytesPerHost),
          sig(q.pickNs),
          q.movedOnRemoval === undefined ? '–' : pct(q.movedOnRemoval, 2),
          q.disagreement === undefined ? '–' : pct(q.disagreement, 2),
          q.movedOnRemoval === undefined ? '–' : pct(1 / q.hosts, 2),
        ]),
      ),
    );
  }
  return rep;
}

/** DIR/README.md: p99 and errors per scenario and algorithm, from every DIR/NAME/results.json. */
export function writeSimSummary(dir: string): string {
  const all: Array<{ name: string; description: string; runs: SimRun[] }> = [];
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const f = path.join(dir, d.name, 'results.json');
    if (!d.isDirectory() || !fs.existsSync(f)) continue;
    const j = JSON.parse(fs.readFileSync(f, 'utf8')) as { results: { scenario: { name: string; description: string }; runs: SimRun[] } };
    all.push({ name: d.name, description: j.results.scenario.description, runs: j.results.runs });
  }
  all.sort((a, b) => a.name.localeCompare(b.name));
  const labels = [...new Set(all.flatMap((x) => x.runs.map((r) => r.algorithm)))];
  const cell = (runs: SimRun[], a: string, f: (r: SimRun) => number, fmt: (v: number) => string): string => {
    const v = runs.filter((r) => r.algorithm === a).map(f);
    return v.length ? range(spread(v), fmt) : '–';
  };
  const rep = new Report('lb bench sim: every scenario');
  rep.add(
    'Each scenario on a virtual clock (`lb bench sim`); median over the seeds with [min–max]. Details, charts and ' +
      'the static quality numbers in each scenario\'s folder.',
    all.map((x) => `- [${x.name}](${x.name}/README.md): ${x.description}`).join('\n'),
    '## p99 latency (ms)',
    table(['scenario', ...labels], all.map((x) => [x.name, ...labels.map((a) => cell(x.runs, a, (r) => r.latency.p99, ms))])),
    '## p99.9 latency (ms)',
    table(['scenario', ...labels], all.map((x) => [x.name, ...labels.map((a) => cell(x.runs, a, (r) => r.latency.p999, ms))])),
    '## Errors (share of requests)',
    table(['scenario', ...labels], all.map((x) => [x.name, ...labels.map((a) => cell(x.runs, a, (r) => r.errors / Math.max(1, r.requests), (v) => pct(v, 2)))])),
  );
  rep.chart(
    'summary-p99.svg',
    barChart({
      title: 'p99 latency per scenario and algorithm (simulation)',
      subtitle: 'median over seeds, whiskers min–max; virtual clock; lower is better',
      categories: all.map((x) => x.name),
      series: labels.map((a) => {
        const v = all.map((x) => spread(x.runs.filter((r) => r.algorithm === a).map((r) => r.latency.p99)));
        return { name: a, values: v.map((q) => (Number.isFinite(q.median) ? q.median : null)), low: v.map((q) => q.min), high: v.map((q) => q.max) };
      }),
      yLabel: 'p99 latency',
      unit: 'ms',
      xLabel: 'scenario',
      log: true,
      height: 440,
    }),
    'p99 per scenario and algorithm',
  );
  return rep.write(dir, { scenarios: all.map((x) => x.name) });
}

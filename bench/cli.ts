// `lb bench [PART] [options]`: the algorithm comparison harness (src/cli.ts hands it every argument after
// `bench`). Each part runs alone and writes a markdown report with SVG charts into its folder; see
// bench/README.md. Returns the exit code: 0 done, 1 a part failed, 2 usage error.

import path from 'node:path';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseDuration } from '../config/duration.js';
import { parseAnchors, proxyReport, runOverhead } from './overhead.js';
import { runQuality } from './quality.js';
import { PROJECT_ROOT, resolveAlgorithms } from './report.js';
import { loadScenario, runScenarios, shippedScenarios } from './scenarios.js';
import { runStale, STALE_PROXIES, summaryTable } from './stale.js';
import { loadSimScenario, runSim, shippedSimScenarios } from './sim.js';

const PARTS = ['quality', 'scenarios', 'overhead', 'sim', 'all'] as const;
type Part = (typeof PARTS)[number];

export const usage = (): string => `Usage: lb bench [PART] [options]

Parts (default: all):
  quality      in process, no network: ns per pick, shares against weights, keys moved
               by a membership change, a closed loop with one slow backend
  scenarios    end to end: simulated upstreams, the real daemon, autocannon
               (scenario files: bench/scenarios/*.toml)
  overhead     lb against direct and the reference proxies of bench/anchors
  sim [FILE...] a discrete-event simulation on a virtual clock, reproducible from a seed
               (scenario files: bench/scenarios/sim/*.toml; default: every shipped one)
  all          quality, scenarios and overhead, one after the other
  stale        (not in "all") requests lost to kept-alive backend connections that the
               backend closed while idle: lb, HAProxy and NGINX before one backend

Options:
  --out DIR             report folder (default bench/results/PART in a clone, else
                        ./lb-bench-results/PART; with "all": DIR/PART)
  --algorithms LIST     comma-separated built-in names and module paths (./my-algo.js);
                        "all" = every registered algorithm (default; scenarios: the file's list)
  --sizes LIST          quality: backend counts (default 10,100,1000)
  --batches N           quality: timed batches per algorithm and size, the best kept (default 7;
                        more, and shorter, on a loaded machine)
  --batch-ms N          quality: length of one timed batch in ms (default 40)
  --scenario NAME|FILE  scenarios: a shipped scenario or a .toml file; repeatable
                        (default: every shipped one: ${shippedList()})
  --repeat N            scenarios: runs per scenario, mode and algorithm, interleaved;
                        the report shows the median-p99 run (default 1)
  --duration DURATION   scenarios: measured time per run, overriding the files (e.g. 5s);
                        overhead: per target and round (default 4s)
  --rounds N            overhead: interleaved rounds (default 3)
  --seed N              sim: the first seed (default 1); runs use seed .. seed+repeats-1
  --repeats N           sim: seeds per algorithm, overriding the files
  --no-quality          sim: skip the static quality section (wall-clock timings)
  --autocannon          overhead: use autocannon even when wrk is installed
  --requests N          stale: GETs and as many POSTs per proxy (default 20000)
  --connections N       stale: kept-alive client connections (default 32)
  --idle MS|MIN-MAX     stale: the backend's idle close, fixed or uniform (default 2-32)
  --think MIN-MAX       stale: client think time before each request, ms (default 0-40)
  --proxies LIST        stale: rows to run (default ${STALE_PROXIES.join(',')})
  -h, --help            this text

Reports: README.md, one SVG per chart and results.json in the report folder.
`;

class UsageError extends Error {}

function shippedList(): string {
  try {
    return shippedScenarios().join(', ');
  } catch {
    return 'none found';
  }
}

/** Where reports go without --out: bench/results/PART in a clone (the folder is checked in), else
 * ./lb-bench-results/PART under the current directory (an installed package ships no results folder, and
 * its install directory is usually not writable). */
function resultsRoot(): string {
  const inClone = path.join(PROJECT_ROOT, 'bench', 'results');
  return fs.existsSync(inClone) ? inClone : path.resolve('lb-bench-results');
}

function defaultOut(part: Exclude<Part, 'all'>, out: string | undefined, all: boolean): string {
  if (out === undefined) return path.join(resultsRoot(), part);
  return all ? path.join(path.resolve(out), part) : path.resolve(out);
}

export async function benchMain(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        out: { type: 'string' },
        algorithms: { type: 'string' },
        sizes: { type: 'string' },
        batches: { type: 'string' },
        'batch-ms': { type: 'string' },
        scenario: { type: 'string', multiple: true },
        duration: { type: 'string' },
        rounds: { type: 'string' },
        seed: { type: 'string' },
        repeats: { type: 'string' },
        'no-quality': { type: 'boolean' },
        repeat: { type: 'string' },
        autocannon: { type: 'boolean' },
        http: { type: 'string' },
        requests: { type: 'string' },
        connections: { type: 'string' },
        idle: { type: 'string' },
        think: { type: 'string' },
        proxies: { type: 'string' },
        l4: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    process.stderr.write(`lb bench: ${(err as Error).message}\nRun "lb bench --help" for usage.\n`);
    return 2;
  }
  const { values: o, positionals } = parsed;
  if (o.help) {
    process.stdout.write(usage());
    return 0;
  }
  // Ctrl-C: exit through process 'exit' so that the lb daemons the harness started are killed.
  const onSignal = (): void => process.exit(130);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (positionals[0] === 'proxy-report') return proxyReportCommand(o.http, o.l4, o.out);
    if (positionals[0] === 'stale') {
      if (positionals.length > 1) throw new UsageError(`expected one part, got "${positionals.join(' ')}"`);
      return await staleCommand(o, ['lb bench', ...args].join(' '));
    }
    if (positionals[0] === 'sim') return await simCommand(positionals.slice(1), o, ['lb bench', ...args].join(' '));
    if (positionals.length > 1) throw new UsageError(`expected one part, got "${positionals.join(' ')}"`);
    const part = (positionals[0] ?? 'all') as Part;
    if (!PARTS.includes(part)) throw new UsageError(`unknown part "${part}": expected ${PARTS.join(', ')}`);
    const all = part === 'all';
    const durationMs = o.duration !== undefined ? duration(o.duration) : undefined;
    const sizes = o.sizes?.split(',').map((s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new UsageError(`--sizes: "${s}" is not an integer from 1 to 100000`);
      return n;
    });
    const repeat = o.repeat !== undefined ? Number(o.repeat) : undefined;
    if (repeat !== undefined && !(Number.isInteger(repeat) && repeat >= 1 && repeat <= 10)) throw new UsageError('--repeat: an integer from 1 to 10');
    const command = ['lb bench', ...args].join(' ');
    const rounds = o.rounds !== undefined ? Number(o.rounds) : undefined;
    if (rounds !== undefined && !(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) throw new UsageError('--rounds: an integer from 1 to 20');

    const batches = o.batches !== undefined ? Number(o.batches) : undefined;
    if (batches !== undefined && !(Number.isInteger(batches) && batches >= 1 && batches <= 1000)) throw new UsageError('--batches: an integer from 1 to 1000');
    const batchMs = o['batch-ms'] !== undefined ? Number(o['batch-ms']) : undefined;
    if (batchMs !== undefined && !(Number.isInteger(batchMs) && batchMs >= 1 && batchMs <= 1000)) throw new UsageError('--batch-ms: an integer from 1 to 1000');

    if (part === 'quality' || all) {
      const algorithms = await resolveAlgorithms(o.algorithms);
      await runQuality({
        algorithms,
        ...(sizes ? { sizes } : {}),
        ...(batches !== undefined ? { batches } : {}),
        ...(batchMs !== undefined ? { batchMs } : {}),
        command,
        out: defaultOut('quality', o.out, all),
      });
    }
    if (part === 'scenarios' || all) {
      const scenarios = (o.scenario ?? shippedScenarios()).map(loadScenario);
      await runScenarios({
        scenarios,
        ...(o.algorithms !== undefined ? { algorithms: o.algorithms, baseDir: process.cwd() } : {}),
        ...(durationMs !== undefined ? { durationMs } : {}),
        ...(repeat !== undefined ? { repeat } : {}),
        command,
        out: defaultOut('scenarios', o.out, all),
      });
    }
    if (part === 'overhead' || all) {
      await runOverhead({
        ...(rounds !== undefined ? { rounds } : {}),
        ...(durationMs !== undefined ? { durationMs } : {}),
        autocannon: Boolean(o.autocannon),
        command,
        out: defaultOut('overhead', o.out, all),
      });
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`lb bench: ${err.message}\nRun "lb bench --help" for usage.\n`);
      return 2;
    }
    const e = err as Error & { code?: string };
    process.stderr.write(`lb bench: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function simCommand(
  files: string[],
  o: { out?: string | undefined; seed?: string | undefined; repeats?: string | undefined; 'no-quality'?: boolean | undefined },
  command: string,
): Promise<number> {
  const seed = o.seed !== undefined ? Number(o.seed) : 1;
  if (!(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32)) throw new UsageError('--seed: an integer from 0 to 2^32 - 1');
  const repeats = o.repeats !== undefined ? Number(o.repeats) : undefined;
  if (repeats !== undefined && !(Number.isInteger(repeats) && repeats >= 1 && repeats <= 100)) throw new UsageError('--repeats: an integer from 1 to 100');
  const out = o.out !== undefined ? path.resolve(o.out) : path.join(resultsRoot(), 'sim');
  const scenarios = (files.length ? files : shippedSimScenarios()).map(loadSimScenario);
  for (const s of scenarios) {
    await runSim(s, { seed, ...(repeats !== undefined ? { repeats } : {}), quality: !o['no-quality'], command, out });
  }
  return 0;
}

function duration(text: string): number {
  try {
    return parseDuration(text);
  } catch (err) {
    throw new UsageError(`--duration: ${(err as Error).message}`);
  }
}

function int(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name}: an integer from ${min} to ${max}`);
  return n;
}

/** "10" (fixed) or "2-32" (a range), in ms. */
function range(name: string, text: string | undefined): [number, number] | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?$/.exec(text.trim());
  const lo = Number(m?.[1]);
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || !(lo >= 0 && hi >= lo && hi <= 60_000)) throw new UsageError(`--${name}: milliseconds, "N" or "MIN-MAX" (MIN <= MAX <= 60000)`);
  return [lo, hi];
}

/** `lb bench stale`: see bench/stale.ts. */
async function staleCommand(o: Record<string, string | boolean | string[] | undefined>, command: string): Promise<number> {
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const requests = int('requests', str('requests'), 1, 1_000_000);
  const connections = int('connections', str('connections'), 1, 1000);
  const idleMs = range('idle', str('idle'));
  if (idleMs && idleMs[0] < 1) throw new UsageError('--idle: at least 1 ms');
  const thinkMs = range('think', str('think'));
  const proxies = str('proxies')?.split(',').map((p) => p.trim()).filter(Boolean);
  for (const p of proxies ?? []) if (!(STALE_PROXIES as readonly string[]).includes(p)) throw new UsageError(`--proxies: unknown "${p}": expected ${STALE_PROXIES.join(', ')}`);
  const results = await runStale({
    ...(requests !== undefined ? { gets: requests, posts: requests } : {}),
    ...(connections !== undefined ? { connections } : {}),
    ...(idleMs ? { idleMs } : {}),
    ...(thinkMs ? { thinkMs } : {}),
    ...(proxies ? { proxies } : {}),
    command,
    out: str('out') !== undefined ? path.resolve(str('out')!) : path.join(resultsRoot(), 'stale'),
  });
  process.stdout.write(summaryTable(results) + '\n');
  return 0;
}

/** `lb bench proxy-report --http FILE --l4 FILE --out DIR` (what bench/proxy.sh calls). */
function proxyReportCommand(httpFile: string | undefined, l4File: string | undefined, out: string | undefined): number {
  if (!httpFile || !l4File) throw new UsageError('proxy-report needs --http FILE and --l4 FILE (run-anchors.sh output)');
  const dir = out ? path.resolve(out) : path.join(resultsRoot(), 'proxy');
  const httpText = fs.readFileSync(httpFile, 'utf8');
  const l4Text = fs.readFileSync(l4File, 'utf8');
  const file = proxyReport(httpText, l4Text).write(dir, { http: parseAnchors(httpText), l4: parseAnchors(l4Text) });
  process.stderr.write(`[bench proxy] report: ${file}\n`);
  return 0;
}

// Part 3 of `lb bench`: what lb costs on the request path. lb (1 worker, round-robin) against the same
// upstreams reached directly, and against the reference proxies of bench/anchors when that folder
// exists (node:http + undici Pool, http-proxy-3 as its README shows, the hand-written node:http proxy;
// HAProxy and NGINX when installed), in one run with interleaved rounds so that machine drift hits every
// row alike. Reported as ratios to "direct" and to the undici proxy, which are what carries over between
// machines; absolute numbers do not.
//
// Rig (as bench/anchors/run-anchors.sh): two upstreams on 127.0.0.1:19001 and :19002 (the anchors'
// proxies have those ports built in) answering "hello world\n"; 64 kept-alive connections; the proxy under
// test pinned to CPU 0 and the load generator and upstreams to CPU 1 (with taskset, on 2 or more cores).
// Load generator: wrk when installed, else autocannon. The upstreams are node:http servers started here
// (the anchors use nginx, so the "direct" row is a lower ceiling than the anchors' table shows); when
// both ports are taken and answer 200 (a rig already up), the part measures against those instead.
//
// Also `proxyReport`: the table `bench/proxy.sh` writes from run-anchors.sh's output.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LoadGenerator, type LoadResult } from './loadgen.js';
import { freePort, lbConfigToml, LbProcess, sleep, statusOf } from './scenarios.js';
import { barChart, SEQUENTIAL } from './svg.js';
import { machine, median, ms, num, PROJECT_ROOT, progress, Report, table } from './report.js';
import { commandExists, hasTaskset, pinned, startUpstreams, stopChild, type Upstream } from './upstream.js';
import { algorithms } from '../algorithms/registry.js';

/** The reference proxies' files (bench/anchors; not part of the npm package). */
export const ANCHORS_DIR = path.join(PROJECT_ROOT, 'bench', 'anchors');
/** The ports the anchors' proxies send to. */
export const ANCHOR_UPSTREAM_PORTS = [19001, 19002] as const;

export interface OverheadOptions {
  /** Interleaved rounds; default 3. */
  rounds?: number;
  /** Measured seconds per target and round; default 4 s. */
  durationMs?: number;
  /** Per target, once, before the first round; default 2 s. */
  warmupMs?: number;
  /** Default 64, as the anchors. */
  connections?: number;
  /** Use autocannon even when wrk is installed. */
  autocannon?: boolean;
  /** The command line, printed in the report. */
  command?: string;
  out?: string;
}

export interface Measurement {
  rps: number;
  p50: number;
  p99: number;
  /** Non-2xx answers plus socket errors. */
  errors: number;
}

export interface OverheadResults {
  loadGenerator: 'wrk' | 'autocannon';
  pinned: boolean;
  /** What served 127.0.0.1:19001/19002. */
  upstreams: string;
  rounds: number;
  durationMs: number;
  connections: number;
  targets: string[];
  /** Targets skipped, with why (not installed, failed to start). */
  skipped: Array<{ target: string; reason: string }>;
  /** measurements[round][target] */
  measurements: Array<Record<string, Measurement>>;
}

interface Target {
  name: string;
  port: number;
  stop: () => Promise<void>;
}

/** Starts a reference proxy command pinned to CPU 0 and waits until it answers on `port`. */
async function startProxy(name: string, port: number, cmd: string, args: string[], env: NodeJS.ProcessEnv, cpu: number | undefined): Promise<Target> {
  const [c, a] = pinned(cpu, cmd, args);
  const child: ChildProcess = spawn(c, a, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const stop = (): Promise<void> => stopChild(child, 2000);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}): ${stderr.trim().split('\n').slice(-3).join(' ')}`);
    if ((await statusOf(port)) === 200) return { name, port, stop };
    await sleep(100);
  }
  await stop();
  throw new Error(`${name} did not answer on 127.0.0.1:${port} within 10 s`);
}

/** Parses a wrk duration ("812.00us", "1.23ms", "2.01s") to milliseconds. */
export function wrkMs(text: string | undefined): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text ?? '');
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000;
}

/** Parses `wrk --latency` output. */
export function parseWrk(out: string): Measurement {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const p50 = wrkMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1]);
  const p99 = wrkMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1]);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return { rps, p50, p99, errors: non2xx + socketErrors };
}

function runWrk(port: number, durationMs: number, connections: number, cpu: number | undefined): Promise<Measurement> {
  const secs = Math.max(1, Math.round(durationMs / 1000));
  const [c, a] = pinned(cpu, 'wrk', ['-t1', `-c${connections}`, `-d${secs}s`, '--latency', `http://127.0.0.1:${port}/`]);
  return new Promise((resolve, reject) => {
    const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(parseWrk(out)) : reject(new Error(`wrk exited ${code}: ${out}`))));
  });
}

function fromAutocannon(r: LoadResult): Measurement {
  return { rps: r.rps, p50: r.latency.p50, p99: r.latency.p99, errors: r.non2xx + r.errors };
}

export async function runOverhead(opts: OverheadOptions = {}): Promise<{ results: OverheadResults; report?: string }> {
  const rounds = opts.rounds ?? 3;
  const durationMs = opts.durationMs ?? 4000;
  const warmupMs = opts.warmupMs ?? 2000;
  const connections = opts.connections ?? 64;
  const useWrk = !opts.autocannon && commandExists('wrk');
  const pin = os.availableParallelism() >= 2 && hasTaskset();
  const proxyCpu = pin ? 0 : undefined;
  const loadCpu = pin ? 1 : undefined;
  const skipped: OverheadResults['skipped'] = [];
  const targets: Target[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-overhead-'));
  let upstreams: Upstream[] = [];
  let loadgen: LoadGenerator | undefined;
  const measurements: OverheadResults['measurements'] = [];
  let upstreamNote = '';

  const tryStart = async (name: string, start: () => Promise<Target>): Promise<void> => {
    try {
      targets.push(await start());
      progress('overhead', `${name} ready`);
    } catch (err) {
      skipped.push({ target: name, reason: (err as Error).message.split('\n')[0]! });
      progress('overhead', `${name} skipped: ${(err as Error).message.split('\n')[0]}`);
    }
  };

  try {
    upstreamNote = 'node:http servers started by the harness, answering "hello world\\n" at once';
    try {
      upstreams = await startUpstreams(
        ANCHOR_UPSTREAM_PORTS.map((port, i) => ({ name: `up-${i + 1}`, latencyMs: 0, profile: 'constant' as const, port })),
        loadCpu,
      );
    } catch (err) {
      // The ports are taken: when both already answer 200 (an anchors rig that is up), measure against them.
      const taken = await Promise.all(ANCHOR_UPSTREAM_PORTS.map(async (p) => (await statusOf(p)) === 200));
      if (!taken.every(Boolean)) {
        throw new Error(
          `overhead: the upstreams need 127.0.0.1:19001 and :19002, the ports the anchors' proxies send to ` +
            `(is run-anchors.sh or another benchmark running?): ${(err as Error).message}`,
        );
      }
      upstreamNote = 'servers that already listened on 127.0.0.1:19001/19002 and answered 200 (not started by the harness)';
      progress('overhead', `127.0.0.1:19001 and :19002 are taken and answer 200: measuring against them`);
    }
    targets.push({ name: 'direct', port: ANCHOR_UPSTREAM_PORTS[0], stop: async () => {} });

    await tryStart('lb', async () => {
      const port = await freePort();
      const config = lbConfigToml({
        port,
        workers: 1,
        socket: path.join(tmp, 'admin.sock'),
        algorithm: { spec: 'round-robin', algorithm: algorithms.get('round-robin')! },
        backends: ANCHOR_UPSTREAM_PORTS.map((port, i) => ({ name: `up-${i + 1}`, port, weight: 1 })),
      });
      const lb = await LbProcess.start(config, port, tmp, proxyCpu);
      return { name: 'lb', port, stop: () => lb.stop() };
    });

    if (!fs.existsSync(ANCHORS_DIR)) {
      skipped.push({ target: 'reference proxies', reason: `${ANCHORS_DIR} not found` });
    } else {
      for (const [name, file] of [
        ['node-undici', 'node-undici-proxy.mjs'],
        ['http-proxy-3', 'node-httpproxy3.mjs'],
        ['node-http-bare', 'node-bare-proxy.mjs'],
      ] as const) {
        await tryStart(name, async () => {
          const port = await freePort();
          return startProxy(name, port, process.execPath, [path.join(ANCHORS_DIR, file)], { PORT: String(port) }, proxyCpu);
        });
      }
      if (commandExists('haproxy')) {
        await tryStart('haproxy', () => startProxy('haproxy', 18080, 'haproxy', ['-f', path.join(ANCHORS_DIR, 'haproxy-http.cfg'), '-db'], {}, proxyCpu));
      } else skipped.push({ target: 'haproxy', reason: 'not installed' });
      if (commandExists('nginx')) {
        await tryStart('nginx', () => {
          const conf = fs.readFileSync(path.join(ANCHORS_DIR, 'nginx-proxy.conf'), 'utf8').replaceAll('@WORKDIR@', tmp);
          fs.writeFileSync(path.join(tmp, 'nginx-proxy.conf'), conf);
          return startProxy('nginx', 18082, 'nginx', ['-c', path.join(tmp, 'nginx-proxy.conf')], {}, proxyCpu);
        });
      } else skipped.push({ target: 'nginx', reason: 'not installed' });
    }

    loadgen = useWrk ? undefined : LoadGenerator.start(loadCpu);
    const measure = async (t: Target, ms: number): Promise<Measurement> =>
      useWrk
        ? runWrk(t.port, ms, connections, loadCpu)
        : fromAutocannon(await loadgen!.run({ url: `http://127.0.0.1:${t.port}/`, connections, durationMs: ms, keys: 1 }));

    const total = (targets.length * (warmupMs + rounds * durationMs)) / 1000;
    progress('overhead', `${targets.length} targets × ${rounds} rounds × ${durationMs / 1000} s with ${useWrk ? 'wrk' : 'autocannon'}${pin ? ', proxies pinned to CPU 0' : ''}: about ${Math.ceil(total)} s`);
    for (const t of targets) await measure(t, warmupMs);
    for (let r = 0; r < rounds; r++) {
      const row: Record<string, Measurement> = {};
      for (const t of targets) {
        row[t.name] = await measure(t, durationMs);
        progress('overhead', `round ${r + 1} ${t.name}: ${num(row[t.name]!.rps)} req/s, p50 ${ms(row[t.name]!.p50)} ms, p99 ${ms(row[t.name]!.p99)} ms`);
      }
      measurements.push(row);
    }
  } finally {
    await loadgen?.stop();
    for (const t of targets) await t.stop();
    await Promise.all(upstreams.map((u) => u.stop()));
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  const results: OverheadResults = {
    loadGenerator: useWrk ? 'wrk' : 'autocannon',
    pinned: pin,
    upstreams: upstreamNote,
    rounds,
    durationMs,
    connections,
    targets: targets.map((t) => t.name),
    skipped,
    measurements,
  };
  if (!opts.out) return { results };
  const rep = overheadReport(results);
  if (opts.command) rep.command = opts.command;
  const report = rep.write(opts.out, results);
  progress('overhead', `report: ${report}`);
  return { results, report };
}

/** Median over rounds of a target's value, and of its ratio to a reference target in the same round. */
function summarize(r: OverheadResults, target: string, pick: (m: Measurement) => number, ref?: string): number {
  const values = r.measurements.flatMap((row) => {
    const m = row[target];
    if (!m) return [];
    if (!ref) return [pick(m)];
    const base = row[ref];
    return base ? [pick(m) / pick(base)] : [];
  });
  return median(values);
}

export function overheadReport(r: OverheadResults): Report {
  const rep = new Report('lb bench: proxy overhead');
  const hasUndici = r.targets.includes('node-undici');
  rep.add(
    `lb (1 worker, round-robin) against the same two upstreams reached directly and through the reference proxies of ` +
      '`bench/anchors`, one run, ' +
      `${r.rounds} interleaved rounds of ${r.durationMs / 1000} s per target, ${r.connections} kept-alive connections, ` +
      `load from ${r.loadGenerator}${r.pinned ? '; the proxy under test pinned to CPU 0, the load generator and the upstreams to CPU 1' : ' (not pinned: taskset or a second core is missing)'}. ` +
      `Upstreams: ${r.upstreams}. Values are medians over rounds; ` +
      'ratios are taken within each round, then the median. Read the ratios, not the absolutes. Regenerate with `lb bench overhead`.',
  );
  if (r.loadGenerator === 'autocannon') {
    rep.add(
      'autocannon is a Node process on one core, like the proxies, so the fastest targets are limited by the load ' +
        'generator: the direct row is the rig ceiling, and ratios near 1 mean "at least as fast as the rig can tell". ' +
        'Install wrk for a higher ceiling.',
    );
  }
  const headers = ['target', 'req/s', 'p50 (ms)', 'p99 (ms)', 'errors', 'req/s vs direct', 'p99 vs direct', ...(hasUndici ? ['req/s vs node-undici', 'p99 vs node-undici'] : [])];
  const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');
  rep.add(
    table(
      headers,
      r.targets.map((t) => [
        t,
        num(summarize(r, t, (m) => m.rps)),
        ms(summarize(r, t, (m) => m.p50)),
        ms(summarize(r, t, (m) => m.p99)),
        num(r.measurements.reduce((n, row) => n + (row[t]?.errors ?? 0), 0)),
        x(summarize(r, t, (m) => m.rps, 'direct')),
        x(summarize(r, t, (m) => m.p99, 'direct')),
        ...(hasUndici ? [x(summarize(r, t, (m) => m.rps, 'node-undici')), x(summarize(r, t, (m) => m.p99, 'node-undici'))] : []),
      ]),
    ),
  );
  if (r.skipped.length > 0) rep.add('Not measured: ' + r.skipped.map((s) => `${s.target} (${s.reason})`).join('; ') + '.');
  rep.add(
    '<details><summary>Every round</summary>\n\n' +
      table(
        ['round', ...r.targets],
        r.measurements.map((row, i) => [String(i + 1), ...r.targets.map((t) => (row[t] ? `${num(row[t]!.rps)} req/s, p99 ${ms(row[t]!.p99)} ms` : '–'))]),
      ) +
      '\n\n</details>',
  );
  rep.chart(
    'throughput.svg',
    barChart({
      title: 'Requests per second through each proxy',
      subtitle: `${r.connections} kept-alive connections, ${r.loadGenerator}; median of ${r.rounds} interleaved rounds; higher is better`,
      categories: r.targets,
      series: [{ name: 'req/s', values: r.targets.map((t) => summarize(r, t, (m) => m.rps)) }],
      yLabel: 'throughput',
      unit: 'req/s',
      xLabel: 'target',
    }),
    'requests per second per target',
  );
  rep.chart(
    'latency.svg',
    barChart({
      title: 'Latency through each proxy',
      subtitle: `${r.connections} kept-alive connections, ${r.loadGenerator}; median of ${r.rounds} interleaved rounds; lower is better`,
      categories: r.targets,
      series: [
        { name: 'p50', values: r.targets.map((t) => summarize(r, t, (m) => m.p50)), color: SEQUENTIAL[1] },
        { name: 'p99', values: r.targets.map((t) => summarize(r, t, (m) => m.p99)), color: SEQUENTIAL[3] },
      ],
      yLabel: 'latency',
      unit: 'ms',
      xLabel: 'target',
    }),
    'latency per target',
  );
  return rep;
}

// ---- bench/proxy.sh: run-anchors.sh output -> report ---------------------------------------------------------------

/** Parses wrk's Transfer/sec ("1.55GB", "660.12MB") to bytes per second. */
export function transferBytes(text: string | undefined): number {
  const m = /^([\d.]+)([KMG]?B)$/.exec(text ?? '');
  if (!m) return NaN;
  const unit = { B: 1, KB: 2 ** 10, MB: 2 ** 20, GB: 2 ** 30 }[m[2] as 'B' | 'KB' | 'MB' | 'GB'];
  return Number(m[1]) * unit;
}

interface AnchorRow {
  round: number;
  kind: 'http' | 'bulk' | 'new-conn';
  target: string;
  value: number;
  p99?: number;
}

/** Parses the lines run-anchors.sh prints ("round=1 lb rps=... p50=... p99=...", "round=1 bulk lb-tcp transfer_per_s=..."). */
export function parseAnchors(text: string): AnchorRow[] {
  const rows: AnchorRow[] = [];
  for (const line of text.split('\n')) {
    const http = /^round=(\d+) (\S+) rps=(\S*) p50=(\S*) p99=(\S*)/.exec(line);
    if (http) {
      rows.push({ round: Number(http[1]), kind: 'http', target: http[2]!, value: Number(http[3]), p99: wrkMs(http[5]) });
      continue;
    }
    const bulk = /^round=(\d+) bulk (\S+) transfer_per_s=(\S+)/.exec(line);
    if (bulk) {
      rows.push({ round: Number(bulk[1]), kind: 'bulk', target: bulk[2]!, value: transferBytes(bulk[3]) });
      continue;
    }
    const nc = /^round=(\d+) new-conn (\S+) rps=(\S*)/.exec(line);
    if (nc) rows.push({ round: Number(nc[1]), kind: 'new-conn', target: nc[2]!, value: Number(nc[3]) });
  }
  return rows;
}

/** Median over rounds of target/ref (same round, same kind). */
function anchorRatio(rows: AnchorRow[], kind: AnchorRow['kind'], target: string, ref: string, pick: (r: AnchorRow) => number = (r) => r.value): number {
  const rounds = [...new Set(rows.map((r) => r.round))];
  return median(
    rounds.flatMap((n) => {
      const a = rows.find((r) => r.round === n && r.kind === kind && r.target === target);
      const b = rows.find((r) => r.round === n && r.kind === kind && r.target === ref);
      return a && b ? [pick(a) / pick(b)] : [];
    }),
  );
}

/** The report of bench/proxy.sh: medians per target, and lb's ratios to the reference proxies. */
export function proxyReport(httpText: string, l4Text: string): Report {
  const rep = new Report('lb bench: lb beside the reference proxies (bench/proxy.sh)', machine());
  const h = parseAnchors(httpText);
  const l = parseAnchors(l4Text);
  const targets = (rows: AnchorRow[], kind: AnchorRow['kind']): string[] => [...new Set(rows.filter((r) => r.kind === kind).map((r) => r.target))];
  const med = (rows: AnchorRow[], kind: AnchorRow['kind'], t: string, pick: (r: AnchorRow) => number = (r) => r.value): number =>
    median(rows.filter((r) => r.kind === kind && r.target === t).map(pick));
  const x = (v: number): string => (Number.isFinite(v) ? `${v.toFixed(2)}×` : '–');
  rep.add(
    '`bench/anchors/run-anchors.sh` with lb added (`EXTRA="lb 8080"`, `EXTRA="lb-tcp 8081"`): nginx upstreams on ' +
      '127.0.0.1:19001/19002, every proxy pinned to CPU 0, wrk and the upstreams on CPU 1, interleaved rounds. lb ' +
      'runs 1 worker (`taskset -c 0`), round-robin, started afresh for each of the two modes as the rig starts its own ' +
      'proxies. Values are medians over rounds; ratios are taken within each ' +
      'round, then the median. Regenerate with `npm run bench:proxy`.',
    '## Ratios',
    table(
      ['ratio', 'value'],
      [
        ['L7 req/s: lb / node-undici', x(anchorRatio(h, 'http', 'lb', 'node-undici'))],
        ['L7 req/s: lb / http-proxy-3', x(anchorRatio(h, 'http', 'lb', 'http-proxy-3'))],
        ['L7 req/s: lb / haproxy', x(anchorRatio(h, 'http', 'lb', 'haproxy'))],
        ['L7 p99: lb / node-undici', x(anchorRatio(h, 'http', 'lb', 'node-undici', (r) => r.p99 ?? NaN))],
        ['L4 bulk: lb-tcp / node-tcp-bare', x(anchorRatio(l, 'bulk', 'lb-tcp', 'node-tcp-bare'))],
        ['L4 new connection per request: lb-tcp / node-tcp-bare', x(anchorRatio(l, 'new-conn', 'lb-tcp', 'node-tcp-bare'))],
      ],
    ),
    '## L7, 64 kept-alive connections',
    table(
      ['target', 'req/s', 'p99 (ms)'],
      targets(h, 'http').map((t) => [t, num(med(h, 'http', t)), ms(med(h, 'http', t, (r) => r.p99 ?? NaN))]),
    ),
    '## L4',
    table(
      ['target', 'bulk 1 MiB responses (GiB/s, wrk\'s "GB")', 'new connection per request (conn/s)'],
      [...new Set([...targets(l, 'bulk'), ...targets(l, 'new-conn')])].map((t) => [t, (med(l, 'bulk', t) / 2 ** 30).toFixed(2), num(med(l, 'new-conn', t))]),
    ),
    '<details><summary>Raw output of run-anchors.sh</summary>\n\n```\n' + httpText.trim() + '\n\n' + l4Text.trim() + '\n```\n\n</details>',
  );
  return rep;
}

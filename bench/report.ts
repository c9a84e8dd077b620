// What every bench part shares: the machine description that heads each report, number formatting,
// markdown tables, progress lines, and writing a report folder (README.md, the SVG charts it links, and
// results.json with the raw numbers).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { algorithms, isModulePath, loadAlgorithm } from '../algorithms/registry.js';
import type { Algorithm } from '../algorithms/types.js';

/** The project root (this file is dist/bench/report.js once compiled). */
export const PROJECT_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface Machine {
  cpuModel: string;
  cores: number;
  node: string;
  os: string;
  memoryGiB: number;
  /** 1-minute load average when the report object was made (0 where the OS has none): before the run for the benches that make it first, after it for `bench proxy-report`. */
  loadAverage: number;
  date: string;
}

export function machine(): Machine {
  const cpus = os.cpus();
  return {
    cpuModel: cpus[0]?.model.trim() ?? 'unknown CPU',
    cores: typeof os.availableParallelism === 'function' ? os.availableParallelism() : cpus.length,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadAverage: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

/** The report header's machine lines. */
export function machineMarkdown(m: Machine): string {
  return [
    `- **Machine:** ${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB RAM, ${m.os}`,
    `- **Node:** ${m.node}`,
    `- **Date:** ${m.date} (1-minute load average when the report was created: ${m.loadAverage})`,
  ].join('\n');
}

// ---- algorithm lists ----------------------------------------------------------------------------------

/** An algorithm under test and how a pool config names it (a built-in name, or an absolute module path). */
export interface BenchAlgorithm {
  spec: string;
  algorithm: Algorithm;
}

/**
 * The algorithms a part runs: every entry of the registry for undefined or "all", else the listed ones,
 * where "all" expands to the registry and a module path ("./", "../", "/") is loaded with loadAlgorithm,
 * relative to `baseDir` (the current directory for the command line, the scenario file's folder for
 * scenarios). Duplicates (by name) are dropped. Throws AlgorithmError for an unknown name or a bad module.
 */
export async function resolveAlgorithms(list: string | readonly string[] | undefined, baseDir = process.cwd()): Promise<BenchAlgorithm[]> {
  const items = list === undefined ? ['all'] : typeof list === 'string' ? list.split(',') : [...list];
  const out: BenchAlgorithm[] = [];
  const add = (b: BenchAlgorithm): void => {
    if (!out.some((o) => o.algorithm.name === b.algorithm.name)) out.push(b);
  };
  for (const raw of items.map((s) => s.trim()).filter(Boolean)) {
    if (raw === 'all') {
      for (const [name, algorithm] of algorithms) add({ spec: name, algorithm });
    } else if (isModulePath(raw)) {
      add({ spec: path.resolve(baseDir, raw), algorithm: await loadAlgorithm(raw, baseDir) });
    } else {
      add({ spec: raw, algorithm: await loadAlgorithm(raw, baseDir) });
    }
  }
  return out;
}

// ---- numbers -------------------------------------------------------------------------------------------

/** 12345.6 -> "12,346"; digits after the point as given. */
export function num(v: number | null | undefined, digits = 0): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Three significant digits, for values of any magnitude (ns, ratios): 0.000123 -> "0.000123", 1234 -> "1,234". */
export function sig(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 100 || a === 0) return num(v, 0);
  return String(Number(v.toPrecision(3)));
}

/** A fraction as a percentage: 0.1234 -> "12.34 %" (digits as given). */
export function pct(v: number | null | undefined, digits = 2): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return `${(v * 100).toFixed(digits)} %`;
}

/** Milliseconds with a precision that suits the magnitude: 0.42 -> "0.42", 12.3 -> "12.3", 250 -> "250". */
export function ms(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v >= 100 ? num(v, 0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

/** The median of a non-empty list (mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  const s = [...values].filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Percentile p (0..100) of an ascending array by the nearest-rank method; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

// ---- markdown ------------------------------------------------------------------------------------------

/** A markdown table; `align` per column: 'l' (default for the first column) or 'r' (default for the rest). */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, align?: string): string {
  const al = headers.map((_, i) => align?.[i] ?? (i === 0 ? 'l' : 'r'));
  const esc = (c: string): string => c.replace(/\|/g, '\\|');
  const line = (cells: readonly string[]): string => `| ${cells.map(esc).join(' | ')} |`;
  return [line(headers), `|${al.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`, ...rows.map(line)].join('\n');
}

/** Prints one progress line on stderr, prefixed with the part's name. */
export function progress(part: string, message: string): void {
  process.stderr.write(`[bench ${part}] ${message}\n`);
}

/**
 * A report being assembled: markdown blocks in order, charts written beside README.md and linked from it.
 * `write` creates the folder (and parents) and overwrites README.md, the charts and results.json.
 */
export class Report {
  private readonly blocks: string[] = [];
  private readonly charts = new Map<string, string>();
  /** The command line that produced the report, printed under the machine. */
  command?: string;

  constructor(
    readonly title: string,
    readonly machineInfo: Machine = machine(),
  ) {}

  add(...markdown: string[]): this {
    this.blocks.push(...markdown);
    return this;
  }

  /** Adds `svg` as `file` (a plain name such as "latency-one-slow.svg") and an image link to it. */
  chart(file: string, svg: string, alt: string): this {
    if (!/^[\w.-]+\.svg$/.test(file)) throw new Error(`chart file name must be a plain *.svg name, got ${file}`);
    this.charts.set(file, svg);
    this.blocks.push(`![${alt.replace(/[[\]]/g, '')}](${file})`);
    return this;
  }

  markdown(): string {
    const head = machineMarkdown(this.machineInfo) + (this.command ? `\n- **Command:** \`${this.command}\`` : '');
    return [`# ${this.title}`, head, ...this.blocks].join('\n\n') + '\n';
  }

  /** Writes the report; returns the path of README.md. */
  write(dir: string, results: unknown): string {
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, svg] of this.charts) fs.writeFileSync(path.join(dir, file), svg);
    // Paths inside the project are written relative to it: a report names files, not one machine's layout.
    const root = path.resolve(PROJECT_ROOT) + path.sep;
    const relative = (_k: string, v: unknown): unknown => (typeof v === 'string' && v.startsWith(root) ? path.relative(root, v) : v);
    fs.writeFileSync(path.join(dir, 'results.json'), JSON.stringify({ machine: this.machineInfo, results }, relative, 2) + '\n');
    const readme = path.join(dir, 'README.md');
    fs.writeFileSync(readme, this.markdown());
    return readme;
  }
}

/** A file-name-safe slug: "one-slow / least-connections" -> "one-slow-least-connections". */
export function slug(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
}

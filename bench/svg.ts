// Minimal SVG charts for the bench reports: grouped or stacked bars, and lines, with a title, axes, ticks,
// an axis label carrying the unit, and a legend, so that a chart reads on its own, without the text beside
// it. No dependency; the output is a standalone SVG document (white background, so it stays legible in
// dark-mode markdown viewers). Every bar and point has a <title> tooltip with its exact value.
//
// Contract: pure functions of their options; values that are null, NaN or (on a log axis) <= 0 are not
// drawn. Text is XML-escaped. A log axis starts far enough below the smallest value that its bar is at
// least a third of a decade tall (a bar on a log axis has no zero: its length depends on where the axis
// starts, so a value just above a decade must not draw as nothing).

export interface Series {
  name: string;
  /** One value per category (bars) or per x position (lines); null = no data. */
  values: ReadonlyArray<number | null>;
  /** CSS colour; defaults to the palette in order. */
  color?: string;
  /**
   * Bars only: the spread of each value (e.g. min and max over repeats), drawn as a whisker; null or
   * absent = none. The axis makes room for them.
   */
  low?: ReadonlyArray<number | null>;
  high?: ReadonlyArray<number | null>;
}

export interface ChartOptions {
  title: string;
  /** One line under the title, e.g. the scenario's parameters. */
  subtitle?: string;
  /** Category (bars) or x position (lines) labels. */
  categories: readonly string[];
  series: readonly Series[];
  /** What the y axis measures, e.g. "latency"; printed with the unit: "latency (ms)". */
  yLabel: string;
  /** Unit of the values, e.g. "ms", "%", "req/s", "ns". */
  unit: string;
  /** Label under the x axis, e.g. "algorithm". */
  xLabel?: string;
  /** Logarithmic y axis (base 10). Default false. */
  log?: boolean;
  /** Fixed y-axis maximum (linear axes), e.g. 100 for shares in %. */
  yMax?: number;
  /**
   * Linear grouped bars: when a value exceeds this, the axis stops near it and taller bars are cut at the
   * top with their value printed above them (one outlier then does not flatten every other bar).
   */
  clipAt?: number;
  /** Default 760 x 380 (CSS pixels). */
  width?: number;
  height?: number;
}

/**
 * Okabe & Ito's colour-blind-safe palette (Color Universal Design, 2002), with its yellow darkened (the
 * original is unreadable as a thin line on white) and grey added.
 */
export const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#000000', '#A08C00', '#7F7F7F'];
/** Light to dark blues, for ordered series such as latency percentiles (p50 < p90 < p99 < max). */
export const SEQUENTIAL = ['#c6dbef', '#6baed6', '#2171b5', '#08306b', '#041a3a'];

const FONT = 'system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif';
/** Average glyph width of the 12px font, for layout estimates (no text measurement in SVG at build time). */
const CHAR_W = 6.6;

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

/** Compact tick label: 1500 -> "1.5k", 2e6 -> "2M", 0.25 -> "0.25". */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  const trim = (x: number, d: number): string => String(Number(x.toFixed(d)));
  if (a >= 1e9) return `${trim(v / 1e9, 2)}G`;
  if (a >= 1e6) return `${trim(v / 1e6, 2)}M`;
  if (a >= 1e4) return `${trim(v / 1e3, 2)}k`;
  if (a >= 1) return trim(v, 2);
  if (a === 0) return '0';
  return trim(v, 4);
}

/** Full-precision value for tooltips. */
function formatValue(v: number, unit: string): string {
  const a = Math.abs(v);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3;
  return `${v.toLocaleString('en-US', { maximumFractionDigits: digits })} ${unit}`;
}

const usable = (v: number | null | undefined, log: boolean): v is number =>
  v !== null && v !== undefined && Number.isFinite(v) && (!log || v > 0);

interface Axis {
  /** Value -> y pixel. */
  y(v: number): number;
  ticks: number[];
  /** Value bars start from. */
  base: number;
}

/** Linear axis from 0 to a "nice" maximum (1, 2 or 5 times a power of ten per step), about 5 steps. */
function linearAxis(max: number, top: number, bottom: number, fixedMax?: number): Axis {
  const hi = fixedMax ?? (max > 0 ? max : 1);
  const raw = hi / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  const end = fixedMax ?? Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let t = 0; t <= end + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return { y: (v) => bottom - (v / end) * (bottom - top), ticks, base: 0 };
}

/**
 * Log10 axis from the decade below the smallest value up to the first 1, 2 or 5 times a power of ten that
 * leaves 10 % headroom above the largest; ticks at decades, and at 2 and 5 too when it spans 2.5 decades
 * or less.
 */
function logAxis(min: number, max: number, top: number, bottom: number): Axis {
  // The decade at or below min / 2 (log10 2 ≈ 0.3 decade of bar at least).
  let lo = Math.floor(Math.log10(min / 2));
  if (!Number.isFinite(lo)) lo = 0;
  let end = 10 ** (lo + 1);
  for (let e = lo; end < max * 1.1 && e < lo + 30; e++) {
    end = [1, 2, 5, 10].map((m) => m * 10 ** e).find((v) => v >= max * 1.1) ?? 10 ** (e + 1);
  }
  const hi = Math.log10(end);
  const dense = hi - lo <= 2.5;
  const ticks: number[] = [];
  for (let e = lo; e <= Math.ceil(hi); e++) {
    for (const m of dense ? [1, 2, 5] : [1]) {
      const v = Number((m * 10 ** e).toPrecision(12));
      if (v <= end * (1 + 1e-9)) ticks.push(v);
    }
  }
  if ((ticks[ticks.length - 1] ?? 0) < end * (1 - 1e-9)) ticks.push(Number(end.toPrecision(12)));
  const y = (v: number): number => bottom - ((Math.log10(v) - lo) / (hi - lo)) * (bottom - top);
  return { y, ticks, base: 10 ** lo };
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
  /** Rotate category labels (too long for their band). */
  rotate: boolean;
  legendRows: Array<Array<{ name: string; color: string; x: number }>>;
  parts: string[];
}

/** Lays out title, legend and margins; draws the background, title, legend. */
function frame(o: ChartOptions, colors: string[]): Frame {
  const width = o.width ?? 760;
  const height = o.height ?? 380;
  const left = 72;
  const right = width - 20;
  // Legend rows: items laid left to right, wrapped at the plot width.
  const rows: Frame['legendRows'] = [[]];
  let x = left;
  o.series.forEach((s, i) => {
    const w = 18 + s.name.length * CHAR_W + 16;
    if (x + w > right && (rows[rows.length - 1]?.length ?? 0) > 0) {
      rows.push([]);
      x = left;
    }
    rows[rows.length - 1]!.push({ name: s.name, color: colors[i]!, x });
    x += w;
  });
  const titleH = o.subtitle ? 44 : 28;
  // Room above the plot for the values of cut bars (clipAt), in two staggered rows.
  const top = titleH + rows.length * 18 + 14 + (o.clipAt !== undefined ? 22 : 0);
  const band = (right - left) / Math.max(1, o.categories.length);
  const longest = Math.max(0, ...o.categories.map((c) => c.length));
  const rotate = longest * CHAR_W > band - 4;
  // A label rotated by 30 degrees rises by half its length.
  const labelH = rotate ? Math.min(110, longest * CHAR_W * 0.5 + 18) : 20;
  const bottom = height - labelH - (o.xLabel ? 22 : 6);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      `font-family='${FONT}' font-size="12" role="img" aria-label="${escapeXml(o.title)}">`,
    `<title>${escapeXml(o.title)}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${left}" y="20" font-size="15" font-weight="600" fill="#111">${escapeXml(o.title)}</text>`,
  ];
  if (o.subtitle) parts.push(`<text x="${left}" y="38" fill="#555">${escapeXml(o.subtitle)}</text>`);
  rows.forEach((row, r) => {
    const y = titleH + 4 + r * 18;
    for (const item of row) {
      parts.push(
        `<rect x="${item.x}" y="${y}" width="12" height="12" fill="${item.color}" stroke="#333" stroke-width="0.5"/>`,
        `<text x="${item.x + 17}" y="${y + 10.5}" fill="#222">${escapeXml(item.name)}</text>`,
      );
    }
  });
  return { width, height, left, right, top, bottom, rotate, legendRows: rows, parts };
}

/** Grid lines, y ticks and labels, the y-axis title with its unit, the x axis and category labels. */
function axes(f: Frame, o: ChartOptions, axis: Axis, xs: number[]): void {
  for (const t of axis.ticks) {
    const y = axis.y(t).toFixed(1);
    f.parts.push(
      `<line x1="${f.left}" x2="${f.right}" y1="${y}" y2="${y}" stroke="#e3e3e3"/>`,
      `<text x="${f.left - 6}" y="${y}" dy="4" text-anchor="end" fill="#333">${formatTick(t)}</text>`,
    );
  }
  const mid = (f.top + f.bottom) / 2;
  const yTitle = `${o.yLabel} (${o.unit})${o.log ? ', log scale' : ''}`;
  f.parts.push(
    `<text transform="translate(16 ${mid.toFixed(1)}) rotate(-90)" text-anchor="middle" fill="#222">${escapeXml(yTitle)}</text>`,
    `<line x1="${f.left}" x2="${f.left}" y1="${f.top}" y2="${f.bottom}" stroke="#333"/>`,
    `<line x1="${f.left}" x2="${f.right}" y1="${f.bottom}" y2="${f.bottom}" stroke="#333"/>`,
  );
  o.categories.forEach((c, i) => {
    const x = xs[i]!.toFixed(1);
    const y = f.bottom + 15;
    f.parts.push(
      f.rotate
        ? `<text transform="translate(${x} ${y - 4}) rotate(-30)" text-anchor="end" fill="#222">${escapeXml(c)}</text>`
        : `<text x="${x}" y="${y}" text-anchor="middle" fill="#222">${escapeXml(c)}</text>`,
    );
  });
  if (o.xLabel) {
    f.parts.push(
      `<text x="${((f.left + f.right) / 2).toFixed(1)}" y="${f.height - 6}" text-anchor="middle" fill="#222">${escapeXml(o.xLabel)}</text>`,
    );
  }
}

function colorsOf(series: readonly Series[], palette: readonly string[]): string[] {
  return series.map((s, i) => s.color ?? palette[i % palette.length]!);
}

/**
 * Bars per category: side by side (grouped, the default) or on top of each other (stacked: shares, counts).
 * A stacked chart is always on a linear axis.
 */
export function barChart(o: ChartOptions & { stacked?: boolean }): string {
  const log = Boolean(o.log) && !o.stacked;
  const colors = colorsOf(o.series, PALETTE);
  const f = frame({ ...o, log }, colors);
  const n = o.categories.length;
  const band = (f.right - f.left) / Math.max(1, n);
  const xs = o.categories.map((_, i) => f.left + band * (i + 0.5));

  let axis: Axis;
  if (o.stacked) {
    const totals = o.categories.map((_, i) => o.series.reduce((s, se) => s + (usable(se.values[i], false) ? se.values[i]! : 0), 0));
    axis = linearAxis(Math.max(0, ...totals), f.top, f.bottom, o.yMax);
  } else {
    const all = o.series.flatMap((s) => [...s.values, ...(s.low ?? []), ...(s.high ?? [])].filter((v): v is number => usable(v, log)));
    const top = Math.max(0, ...all);
    axis = log
      ? logAxis(all.length ? Math.min(...all) : 1, all.length ? Math.max(...all) : 10, f.top, f.bottom)
      : linearAxis(o.clipAt !== undefined && top > o.clipAt ? o.clipAt : top, f.top, f.bottom, o.yMax);
  }
  axes(f, { ...o, log }, axis, xs);
  const axisEnd = axis.ticks[axis.ticks.length - 1] ?? 0;

  const inner = band * 0.8;
  const groups = o.stacked ? 1 : Math.max(1, o.series.length);
  const barW = inner / groups;
  const clampY = (y: number): number => Math.max(f.top, Math.min(f.bottom, y));
  o.categories.forEach((cat, i) => {
    let acc = 0;
    o.series.forEach((s, j) => {
      const v = s.values[i];
      if (!usable(v, log)) return;
      const x0 = f.left + band * i + (band - inner) / 2 + (o.stacked ? 0 : j * barW);
      const from = o.stacked ? acc : axis.base;
      const to = o.stacked ? acc + v : v;
      acc = to;
      const y1 = clampY(axis.y(to));
      const y0 = clampY(axis.y(from));
      const h = Math.max(0.5, y0 - y1);
      if (!log && !o.stacked && v > axisEnd * 1.0001) {
        f.parts.push(
          `<text x="${(x0 + barW / 2).toFixed(1)}" y="${f.top - (j % 2 ? 14 : 3)}" text-anchor="middle" font-size="10" fill="#222">${formatTick(v)}↑</text>`,
        );
      }
      f.parts.push(
        `<rect x="${x0.toFixed(1)}" y="${y1.toFixed(1)}" width="${Math.max(1, barW - 1).toFixed(1)}" height="${h.toFixed(1)}" ` +
          `fill="${colors[j]}" stroke="#ffffff" stroke-width="0.5"><title>${escapeXml(`${cat} · ${s.name}: ${formatValue(v, o.unit)}`)}</title></rect>`,
      );
      const lo = s.low?.[i];
      const hi = s.high?.[i];
      if (!o.stacked && usable(lo, log) && usable(hi, log)) {
        const cx = (x0 + barW / 2).toFixed(1);
        const ya = clampY(axis.y(lo)).toFixed(1);
        const yb = clampY(axis.y(hi)).toFixed(1);
        const w = Math.min(6, barW / 3);
        f.parts.push(
          `<g stroke="#111" stroke-width="1.2"><title>${escapeXml(`${cat} · ${s.name}: ${formatValue(lo, o.unit)} to ${formatValue(hi, o.unit)}`)}</title>` +
            `<line x1="${cx}" x2="${cx}" y1="${ya}" y2="${yb}"/>` +
            `<line x1="${(x0 + barW / 2 - w).toFixed(1)}" x2="${(x0 + barW / 2 + w).toFixed(1)}" y1="${ya}" y2="${ya}"/>` +
            `<line x1="${(x0 + barW / 2 - w).toFixed(1)}" x2="${(x0 + barW / 2 + w).toFixed(1)}" y1="${yb}" y2="${yb}"/></g>`,
        );
      }
    });
  });
  f.parts.push('</svg>');
  return f.parts.join('\n') + '\n';
}

/** One polyline per series over equally spaced x positions (e.g. 10, 100, 1000 backends), with markers. */
export function lineChart(o: ChartOptions): string {
  const log = Boolean(o.log);
  const colors = colorsOf(o.series, PALETTE);
  const f = frame(o, colors);
  const n = o.categories.length;
  const band = (f.right - f.left) / Math.max(1, n);
  const xs = o.categories.map((_, i) => f.left + band * (i + 0.5));
  const all = o.series.flatMap((s) => s.values.filter((v): v is number => usable(v, log)));
  const axis = log
    ? logAxis(all.length ? Math.min(...all) : 1, all.length ? Math.max(...all) : 10, f.top, f.bottom)
    : linearAxis(Math.max(0, ...all), f.top, f.bottom, o.yMax);
  axes(f, o, axis, xs);
  o.series.forEach((s, j) => {
    const pts = s.values.flatMap((v, i) => (usable(v, log) ? [{ x: xs[i]!, y: axis.y(v), v, i }] : []));
    if (pts.length > 1) {
      const line = pts.map((p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(' ');
      f.parts.push(`<polyline points="${line}" fill="none" stroke="${colors[j]}" stroke-width="2"/>`);
    }
    for (const p of pts) {
      const tip = `${s.name} · ${o.categories[p.i]}: ${formatValue(p.v, o.unit)}`;
      f.parts.push(
        `<circle cx="${p.x.toFixed(1)}" cy="${p.y.toFixed(1)}" r="3.5" fill="${colors[j]}"><title>${escapeXml(tip)}</title></circle>`,
      );
    }
  });
  f.parts.push('</svg>');
  return f.parts.join('\n') + '\n';
}

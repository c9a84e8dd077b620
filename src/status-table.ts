// `lb status` as a table for people (`--json` prints the admin answer as it is).

export interface StatusBackend {
  name: string;
  address: string;
  state: string;
  weight: number;
  configWeight: number;
  /** Priority tier and where the backend came from ("config", "admin", "dns"); absent from older daemons. */
  priority?: number;
  source?: string;
  removing?: boolean;
  inflight: number;
  reason: string | null;
  lastCheck: { ok: boolean; detail: string; ageMs: number; ms: number } | null;
  /** Age of the last change of `state`. */
  lastChangeAgeMs?: number;
  /** Totals since start, summed over workers; present only with [metrics] (HAProxy `show stat` req_tot, eresp). */
  requests?: number;
  errors?: number;
}
export interface StatusResult {
  config: string;
  version?: string;
  node?: string;
  pid: number;
  /** Node internals in use (node-internals/report.ts); absent from daemons before it existed. */
  nodeInternals?: Array<{ name: string; mode: string; reason: string | null }>;
  uptimeSeconds: number;
  generation: number;
  workers: { configured: number; answered: number; asked: number; list: Array<{ pid: number | null; generation: number | null }> };
  pools: Array<{ name: string; algorithm: string; healthCheck: string | null; backends: StatusBackend[] }>;
  /** Routes per listener; `split` routes list each pool's weight in effect and the config's. */
  listeners?: Array<{ name: string; routes?: Array<{ name: string; split?: Array<{ pool: string; weight: number; configWeight: number }>; sticky?: string | null }> }>;
}

export function renderStatus(s: StatusResult): string {
  const rows: string[][] = [['POOL', 'BACKEND', 'ADDRESS', 'SOURCE', 'STATE', 'WEIGHT', 'PRIO', 'INFLIGHT', 'REQUESTS', 'ERRORS', 'CHANGED', 'LAST CHECK']];
  for (const p of s.pools) {
    for (const b of p.backends) {
      const weight = b.weight === b.configWeight ? String(b.weight) : `${b.weight} (config ${b.configWeight})`;
      const check = b.lastCheck ? `${b.lastCheck.ok ? 'pass' : 'fail'} ${b.lastCheck.detail}, ${formatAge(b.lastCheck.ageMs)} ago` : p.healthCheck ? 'pending' : '-';
      const changed = b.lastChangeAgeMs === undefined ? '-' : `${formatAge(b.lastChangeAgeMs)} ago`;
      const state = b.removing ? `${b.state} (removing)` : b.state;
      rows.push([p.name, b.name, b.address, b.source ?? 'config', state, weight, String(b.priority ?? 0), String(b.inflight), String(b.requests ?? '-'), String(b.errors ?? '-'), changed, check]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
  const missing = s.workers.asked - s.workers.answered;
  // A worker on another generation than the primary is one that did not confirm a commit (logged).
  const behind = s.workers.list.filter((w) => w.generation !== null && w.generation !== s.generation).map((w) => `pid ${w.pid} at ${w.generation}`);
  const head = `lb ${s.version ?? ''} (node ${s.node ?? '?'}) pid ${s.pid}, up ${formatAge(s.uptimeSeconds * 1000)}, ${s.workers.asked} workers${missing ? ` (${missing} did not answer: in-flight counts partial)` : ''}, config ${s.config} generation ${s.generation}${behind.length ? ` (workers ${behind.join(', ')})` : ''}`;
  const internals = s.nodeInternals?.length ? `node internals: ${s.nodeInternals.map((i) => (i.reason ? `${i.name} ${i.mode} (${i.reason})` : `${i.name} ${i.mode}`)).join(', ')}\n` : '';
  const splits: string[] = [];
  for (const l of s.listeners ?? []) {
    for (const r of l.routes ?? []) {
      if (!r.split) continue;
      const total = r.split.reduce((a, e) => a + e.weight, 0);
      const parts = r.split.map((e) => `${e.pool}=${e.weight}${e.weight !== e.configWeight ? ` (config ${e.configWeight})` : ''} ${total > 0 ? ((100 * e.weight) / total).toFixed(1) : '0.0'}%`);
      splits.push(`split ${l.name}/${r.name}: ${parts.join(', ')}${r.sticky ? `, sticky ${r.sticky}` : ''}`);
    }
  }
  const splitText = splits.length ? `${splits.join('\n')}\n` : '';
  return `${head}\n${internals}${lines.join('\n')}\n${splitText}`;
}

function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s}s`;
  const m = Math.round(s / 60);
  return m < 120 ? `${m}m` : `${Math.round(m / 60)}h`;
}

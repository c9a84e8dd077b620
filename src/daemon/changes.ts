// What a reload changes, in words an operator reads in `lb reload` output and the log.

import type { LbConfig } from '../../config/model.js';

/**
 * Runtime weights around the reload, keyed "POOL/BACKEND": the weight in effect before and after it (the
 * runtime override if one is set, else the config's), and the pools whose algorithm (after it) ignores
 * weights other than 0. Without it, weight lines compare the config files only.
 */
export interface WeightsInEffect {
  before: Map<string, number>;
  after: Map<string, number>;
  ignoring: Set<string>;
}

export function describeChanges(a: LbConfig, b: LbConfig, weights?: WeightsInEffect): string[] {
  const out: string[] = [];
  const keys = <T>(x: Record<string, T>): Set<string> => new Set(Object.keys(x));
  for (const name of keys(b.listeners)) {
    const o = a.listeners[name];
    const n = b.listeners[name]!;
    if (!o) out.push(`listener ${name}: added (${n.protocol} on ${n.listen.text})`);
    else if (JSON.stringify(o) !== JSON.stringify(n)) {
      if (o.listen.text !== n.listen.text) out.push(`listener ${name}: moved ${o.listen.text} -> ${n.listen.text}`);
      if (o.pool !== n.pool) out.push(`listener ${name}: pool ${o.pool} -> ${n.pool}`);
      if (JSON.stringify(o.routes) !== JSON.stringify(n.routes)) out.push(`listener ${name}: routes changed`);
      if (JSON.stringify(o.tls) !== JSON.stringify(n.tls)) out.push(`listener ${name}: tls changed`);
    }
  }
  for (const name of keys(a.listeners)) if (!b.listeners[name]) out.push(`listener ${name}: removed`);
  for (const name of keys(b.pools)) {
    const o = a.pools[name];
    const n = b.pools[name]!;
    if (!o) {
      out.push(`pool ${name}: added (${n.backends.length} backends, ${n.algorithm})`);
      continue;
    }
    if (o.algorithm !== n.algorithm) out.push(`pool ${name}: algorithm ${o.algorithm} -> ${n.algorithm}`);
    const ob = new Map(o.backends.map((x) => [x.name, x]));
    const nb = new Map(n.backends.map((x) => [x.name, x]));
    for (const [bn, x] of nb) {
      const y = ob.get(bn);
      if (!y) out.push(`pool ${name}: backend ${bn} added (${x.address.text}, weight ${x.weight})`);
      else {
        if (y.address.text !== x.address.text) out.push(`pool ${name}: backend ${bn} address ${y.address.text} -> ${x.address.text}`);
        const k = `${name}/${bn}`;
        const was = weights?.before.get(k) ?? y.weight;
        const now = weights?.after.get(k) ?? x.weight;
        const ignored = weights?.ignoring.has(name) && now > 0 ? ` (${n.algorithm} ignores weights other than 0)` : '';
        if (was !== now) out.push(`pool ${name}: backend ${bn} weight ${was} -> ${now}${ignored}`);
        else if (y.weight !== x.weight) {
          out.push(`pool ${name}: backend ${bn} config weight ${y.weight} -> ${x.weight}; the runtime weight ${now} stays in effect (lb weight ${k} --reset to use the config's)`);
        }
      }
    }
    for (const bn of ob.keys()) if (!nb.has(bn)) out.push(`pool ${name}: backend ${bn} removed`);
    if (JSON.stringify(o.discovery) !== JSON.stringify(n.discovery)) {
      const what = !o.discovery ? 'added' : !n.discovery ? 'removed' : 'changed (re-resolved now)';
      out.push(`pool ${name}: discovery ${what}`);
    }
    const rest = (p: typeof o): string => JSON.stringify({ ...p, backends: undefined, algorithm: undefined, discovery: undefined });
    if (rest(o) !== rest(n)) out.push(`pool ${name}: settings changed`);
  }
  for (const name of keys(a.pools)) if (!b.pools[name]) out.push(`pool ${name}: removed`);
  if (a.daemon.workers !== b.daemon.workers) out.push(`daemon.workers: ${a.daemon.workers} -> ${b.daemon.workers}`);
  if (a.daemon.gracePeriodMs !== b.daemon.gracePeriodMs) out.push(`daemon.grace_period: ${a.daemon.gracePeriodMs}ms -> ${b.daemon.gracePeriodMs}ms`);
  if (a.log.level !== b.log.level || a.log.access !== b.log.access) out.push('log settings changed');
  if (a.metrics?.listen.text !== b.metrics?.listen.text) out.push(`metrics.listen: ${a.metrics?.listen.text ?? 'off'} -> ${b.metrics?.listen.text ?? 'off'}`);
  if (a.daemon.accept !== b.daemon.accept) out.push(`daemon.accept: ${a.daemon.accept} -> ${b.daemon.accept}: takes effect at the next restart`);
  if (a.daemon.stateFile !== b.daemon.stateFile) out.push(`daemon.state_file: ${a.daemon.stateFile} -> ${b.daemon.stateFile} (the runtime state is written there now)`);
  if (a.admin.socket !== b.admin.socket) out.push('admin.socket changed: takes effect at the next restart');
  return out;
}

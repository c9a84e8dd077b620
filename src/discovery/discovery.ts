// Per-pool DNS discovery: resolves a pool's `discovery` name, turns the answer into Members and hands a
// changed set to hooks.onMembers, re-resolving on the answer's TTL.
//
// Policy (README "Backends from DNS"):
// - Re-resolve after the smallest TTL of the records used, raised to min_ttl and lowered to max_ttl, or
//   after `refresh` when it is set (HAProxy `hold valid` / Envoy `dns_refresh_rate` with respect_dns_ttl).
// - A failure (timeout, network error, SERVFAIL, REFUSED, malformed answer, from every resolver) never
//   changes the set: the last good answer is served stale, the failure logged and counted, and the name
//   retried after min_ttl, doubling up to max_ttl (or `refresh`). This is what HAProxy (`hold other`,
//   `hold refused`, `hold timeout`) and Envoy's STRICT_DNS (hosts kept on a failed resolution) do.
// - NXDOMAIN and an empty NOERROR answer are answers, not failures: the name has no endpoints now. They
//   replace a non-empty set only once they have lasted `hold_empty` (HAProxy `hold nx`, default 30s);
//   until then the last set is kept (counted as stale). hold_empty = "0s" applies them at once, as Envoy's
//   STRICT_DNS does with an empty resolution.
// - The SRV/A answer is the whole set: a refresh that returns the same endpoints calls nothing.

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Address, DiscoveryConfig } from '../../config/model.js';
import { DnsError, formatServer, normalizeName, NXDOMAIN, resolve, type ResolveOptions, type ResourceRecord } from './dns.js';
import type { DiscoveryHandle, DiscoveryHooks, Member } from './types.js';

/** RFC 2782: weights are 0..65535. Backend weights are 1..1000 here (0 would mean "no new traffic" in lb). */
export const MAX_BACKEND_WEIGHT = 1000;

/**
 * SRV weights -> backend weights, for the records of one answer. RFC 2782 gives weight 0 "a very small
 * chance of being selected" next to others; lb weights are integers where 0 means no traffic, so 0 maps to
 * 1, the smallest share. When every weight is <= 1000 they are kept as they are (ratios exact); otherwise
 * all are scaled by 1000 / the largest and rounded, at least 1. (HAProxy maps each weight alone to
 * weight / 256 + 1, which loses the ratio of small weights such as 1 and 3.)
 */
export function weightsFromSrv(weights: readonly number[]): number[] {
  const max = Math.max(0, ...weights);
  if (max <= MAX_BACKEND_WEIGHT) return weights.map((w) => Math.max(1, w));
  return weights.map((w) => Math.max(1, Math.round((w * MAX_BACKEND_WEIGHT) / max)));
}

export function memberAddress(ip: string, port: number): Address {
  const text = formatServer({ host: ip, port, text: '' });
  return { host: ip, port, text };
}

export interface Answer {
  /** Sorted by name. */
  members: Member[];
  /** Smallest TTL of the records used, in seconds; for an empty answer the negative TTL (RFC 2308), if given. */
  ttl: number | undefined;
  nxdomain: boolean;
  /** Whether any query of this lookup fell back to TCP. */
  tcp: boolean;
  /** SRV targets that had no address (skipped). */
  unresolved: string[];
}

/** RFC 2308 section 5: the TTL of a negative answer is the smaller of the SOA's TTL and its MINIMUM field. */
function negativeTtl(authority: ResourceRecord[]): number | undefined {
  const soa = authority.find((r) => r.type === 'SOA');
  return soa && soa.type === 'SOA' ? Math.min(soa.ttl, soa.minimum) : undefined;
}

const minOf = (a: number | undefined, b: number): number => (a === undefined ? b : Math.min(a, b));

/** Resolves `cfg.dns` once into Members. Throws a DnsError when any query needed fails. */
export async function lookup(cfg: DiscoveryConfig, opts: ResolveOptions): Promise<Answer> {
  const m = await resolve(cfg.dns, cfg.type, opts);
  let tcp = m.tcp;
  let ttl: number | undefined;
  // Records of other types in the answer section (a CNAME chain) count for the TTL too.
  for (const r of m.answers) ttl = minOf(ttl, r.ttl);
  const unresolved: string[] = [];
  const members = new Map<string, Member>();
  if (cfg.type !== 'SRV') {
    for (const r of m.answers) {
      if (r.type !== cfg.type) continue;
      const address = memberAddress(r.address, cfg.port ?? 0);
      members.set(address.text, { name: address.text, address, weight: cfg.weight, priority: 0 });
    }
  } else {
    // One member per target:port. RFC 2782's "." target means the service is not available there.
    const srv = new Map<string, { target: string; port: number; priority: number; weight: number }>();
    for (const r of m.answers) {
      if (r.type !== 'SRV' || r.target === '') continue;
      const key = `${r.target}:${r.port}`;
      const seen = srv.get(key);
      if (!seen || r.priority < seen.priority || (r.priority === seen.priority && r.weight > seen.weight)) {
        srv.set(key, { target: r.target, port: r.port, priority: r.priority, weight: r.weight });
      }
    }
    const records = [...srv.entries()];
    const weights = weightsFromSrv(records.map(([, r]) => r.weight));
    const targets = [...new Set(records.map(([, r]) => r.target))];
    const addresses = new Map<string, string | undefined>();
    await Promise.all(
      targets.map(async (target) => {
        const found = await targetAddress(target, m.additional, opts);
        if (found.ttl !== undefined) ttl = minOf(ttl, found.ttl);
        tcp ||= found.tcp;
        addresses.set(target, found.ip);
      }),
    );
    records.forEach(([name, r], i) => {
      const ip = addresses.get(r.target);
      if (ip === undefined) {
        if (!unresolved.includes(r.target)) unresolved.push(r.target);
        return;
      }
      members.set(name, { name, address: memberAddress(ip, r.port), weight: weights[i]!, priority: r.priority });
    });
  }
  if (members.size === 0 && ttl === undefined) ttl = negativeTtl(m.authority);
  const list = [...members.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { members: list, ttl, nxdomain: m.rcode === NXDOMAIN, tcp, unresolved };
}

/**
 * The address of an SRV target: an A record of the additional section, else an AAAA one there, else an A
 * query, else an AAAA query. Of several addresses the smallest in text order is taken, so that a resolver
 * that rotates its answers does not move the member. A target that is an IP literal is itself.
 */
async function targetAddress(target: string, additional: ResourceRecord[], opts: ResolveOptions): Promise<{ ip?: string; ttl?: number; tcp: boolean }> {
  if (net.isIP(target)) return { ip: target, tcp: false };
  const pick = (records: ResourceRecord[], type: 'A' | 'AAAA', names: ReadonlySet<string>) => {
    const own = records.filter((r) => r.type === type && names.has(r.name)) as Array<ResourceRecord & { address: string }>;
    if (own.length === 0) return undefined;
    return { ip: own.map((r) => r.address).sort()[0]!, ttl: Math.min(...own.map((r) => r.ttl)) };
  };
  const self = new Set([target]);
  const fromAdditional = pick(additional, 'A', self) ?? pick(additional, 'AAAA', self);
  if (fromAdditional) return { ...fromAdditional, tcp: false };
  let tcp = false;
  for (const type of ['A', 'AAAA'] as const) {
    const m = await resolve(target, type, opts);
    tcp ||= m.tcp;
    // The addresses may belong to the end of a CNAME chain in the answer.
    const names = new Set([target]);
    for (const r of m.answers) if (r.type === 'CNAME' && names.has(r.name)) names.add(r.target);
    const found = pick(m.answers, type, names);
    if (found) return { ...found, ttl: Math.min(found.ttl, ...m.answers.map((r) => r.ttl)), tcp };
  }
  return { tcp };
}

/** The nameservers of resolv.conf (port 53), as the system resolver uses them; 127.0.0.1:53 when there are none. */
export function systemResolvers(file = '/etc/resolv.conf'): Address[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // no resolv.conf: the resolver library's default below
  }
  const out: Address[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const host = m?.[1]?.replace(/%.*$/, '');
    if (host && net.isIP(host)) out.push(memberAddress(host, 53));
  }
  return out.length > 0 ? out : [memberAddress('127.0.0.1', 53)];
}

const sameMembers = (a: readonly Member[], b: readonly Member[]): boolean =>
  a.length === b.length &&
  a.every((m, i) => {
    const o = b[i]!;
    return m.name === o.name && m.address.text === o.address.text && m.weight === o.weight && m.priority === o.priority;
  });

/** When the next resolution runs after a successful one, in ms. */
export function refreshDelay(cfg: DiscoveryConfig, ttlSeconds: number | undefined): number {
  if (cfg.refreshMs !== undefined) return cfg.refreshMs;
  const ttlMs = (ttlSeconds ?? 0) * 1000;
  return Math.min(cfg.maxTtlMs, Math.max(cfg.minTtlMs, ttlMs));
}

/** When the next resolution runs after `failures` failed ones in a row: min_ttl doubling, up to max_ttl (or refresh). */
export function retryDelay(cfg: DiscoveryConfig, failures: number): number {
  const cap = cfg.refreshMs ?? cfg.maxTtlMs;
  return Math.min(cap, cfg.minTtlMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
}

/**
 * Starts resolving `cfg.dns` for `pool` at once and then on the TTL, until stop(). `hooks.onMembers` gets
 * the full set each time it changes (never an empty set because of a DNS failure). `initial` is the set in
 * effect now (a runner restarted by a reload): answers are compared with it, so an empty first answer is held
 * for hold_empty like any other, and an unchanged one changes nothing.
 */
export function startDiscovery(pool: string, cfg: DiscoveryConfig, hooks: DiscoveryHooks, initial: Member[] = []): DiscoveryHandle {
  const resolvers = cfg.resolvers.length > 0 ? cfg.resolvers : systemResolvers();
  const opts: ResolveOptions = { resolvers, timeoutMs: cfg.timeoutMs };
  const fields = { pool, dns: cfg.dns, type: cfg.type };
  let current: Member[] = initial;
  let failures = 0;
  let emptySince: number | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const schedule = (ms: number): void => {
    if (stopped) return;
    timer = setTimeout(() => void tick(), ms);
    timer.unref();
  };

  const apply = (members: Member[]): void => {
    const before = new Set(current.map((m) => m.name));
    const after = new Set(members.map((m) => m.name));
    const added = members.filter((m) => !before.has(m.name)).map((m) => m.name);
    const removed = current.filter((m) => !after.has(m.name)).map((m) => m.name);
    current = members;
    hooks.log('info', 'dns discovery: members changed', { ...fields, members: members.length, added, removed });
    hooks.count('change');
    try {
      hooks.onMembers(members);
    } catch (err) {
      hooks.log('error', 'dns discovery: applying the members failed', { ...fields, error: err instanceof Error ? err.message : String(err) });
    }
  };

  const tick = async (): Promise<void> => {
    timer = undefined;
    let answer: Answer;
    try {
      answer = await lookup(cfg, opts);
    } catch (err) {
      if (stopped) return;
      failures++;
      const delay = retryDelay(cfg, failures);
      const error = err instanceof Error ? err.message : String(err);
      const kind = err instanceof DnsError ? err.kind : 'network';
      hooks.count('error');
      if (current.length > 0) hooks.count('stale');
      hooks.log('warn', current.length > 0 ? 'dns discovery failed: keeping the last answer' : 'dns discovery failed', {
        ...fields, error, kind, failures, members: current.length, retry_in_ms: delay,
      });
      schedule(delay);
      return;
    }
    if (stopped) return;
    hooks.count('refresh');
    if (failures > 0) hooks.log('info', 'dns discovery recovered', { ...fields, failures, members: answer.members.length });
    failures = 0;
    if (answer.unresolved.length > 0) {
      hooks.log('warn', 'dns discovery: SRV targets without an address are left out', { ...fields, targets: answer.unresolved });
    }
    const delay = refreshDelay(cfg, answer.ttl);
    if (answer.members.length === 0 && current.length > 0) {
      const now = performance.now();
      emptySince ??= now;
      const left = cfg.holdEmptyMs - (now - emptySince);
      if (left > 0) {
        hooks.count('stale');
        hooks.log('warn', 'dns discovery: empty answer, keeping the last one until hold_empty passes', {
          ...fields, rcode: answer.nxdomain ? 'NXDOMAIN' : 'NOERROR', members: current.length, hold_left_ms: Math.round(left),
        });
        schedule(Math.min(delay, Math.ceil(left)));
        return;
      }
    }
    emptySince = undefined;
    if (!sameMembers(current, answer.members)) apply(answer.members);
    schedule(delay);
  };

  hooks.log('info', 'dns discovery started', { ...fields, resolvers: resolvers.map((r) => r.text) });
  void tick();
  return {
    stop(): void {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}

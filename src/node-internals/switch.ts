// LB_NODE_FALLBACK: forces the fallback of Node internals that lb otherwise uses when they are usable
// (docs/SPEC.md, README "Node internals"). A comma-separated list of `http_parser`, `tcp_wrap`, or `all`.
// Read once, at load, by every process (workers inherit the primary's environment).

export const INTERNALS = ['http_parser', 'tcp_wrap'] as const;
export type InternalName = (typeof INTERNALS)[number];

export interface FallbackSwitch {
  forced: ReadonlySet<InternalName>;
  /** Names in the variable that are not internals (reported, otherwise ignored). */
  unknown: string[];
}

export function parseFallbackSwitch(value: string | undefined): FallbackSwitch {
  const forced = new Set<InternalName>();
  const unknown: string[] = [];
  for (const raw of (value ?? '').split(',')) {
    const name = raw.trim().toLowerCase();
    if (name === '') continue;
    if (name === 'all') INTERNALS.forEach((n) => forced.add(n));
    else if ((INTERNALS as readonly string[]).includes(name)) forced.add(name as InternalName);
    else unknown.push(raw.trim());
  }
  return { forced, unknown };
}

export const FALLBACK_SWITCH: FallbackSwitch = parseFallbackSwitch(process.env.LB_NODE_FALLBACK);

/** The reason given when the switch forced a fallback. */
export const FORCED_REASON = 'forced by LB_NODE_FALLBACK';

/** What a process found at load for one internal. */
export interface Capability {
  mode: 'usable' | 'fallback';
  /** Why the fallback is used; null when the internal is usable. */
  reason: string | null;
}

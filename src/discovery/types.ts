// What DNS discovery hands to the rest of lb. `Member` is the shape the runtime membership module takes
// (setSource(pool, 'dns', members)); it is defined here so that discovery builds and is tested on its own.

import type { Address } from '../../config/model.js';

/** One discovered endpoint. `name` is its stable identity: the same endpoint gets the same name on every refresh. */
export interface Member {
  /** "target:port" for SRV (target without the trailing dot), "ip:port" ("[ip]:port" for IPv6) for A/AAAA. */
  name: string;
  address: Address;
  /** Backend weight, 1..1000 (see weightsFromSrv for SRV). */
  weight: number;
  /** SRV priority (RFC 2782: lower is preferred); 0 for A/AAAA. */
  priority: number;
}

/** Applies a pool's discovered members (the full set, replacing the previous one). */
export type ApplyMembers = (pool: string, members: Member[]) => void;

export type DiscoveryEvent = 'refresh' | 'error' | 'stale' | 'change';

export interface DiscoveryHooks {
  /** Called with the full new set whenever it differs from the last one applied (never twice with the same set). */
  onMembers(members: Member[]): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void;
  /**
   * refresh: a resolution answered (NOERROR or NXDOMAIN); error: it failed (timeout, SERVFAIL, REFUSED, network,
   * malformed answer); stale: the previous set was kept instead of the answer (error, or an empty answer
   * within hold_empty); change: onMembers was called.
   */
  count(event: DiscoveryEvent): void;
}

export interface DiscoveryHandle {
  stop(): void;
}

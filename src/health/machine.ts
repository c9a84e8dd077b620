// The health decisions, without timers or I/O, so that tests drive them step by step. The rules are
// documented at the top of monitor.ts; this file is their only implementation.

import type { HealthState } from '../dataplane/backend.js';
import type { FailureReason } from '../dataplane/events.js';

/** What the active checks alone say about a backend (HAProxy `rise`/`fall` counters). */
export interface ActiveState {
  health: HealthState;
  /** Consecutive passes since the last failure. */
  passes: number;
  /** Consecutive failures since the last pass. */
  fails: number;
}

export function initialActive(hasCheck: boolean): ActiveState {
  return { health: hasCheck ? 'unchecked' : 'up', passes: 0, fails: 0 };
}

export interface Transition {
  to: HealthState;
  why: string;
}

const times = (n: number): string => `${n} time${n === 1 ? '' : 's'}`;

/**
 * Feeds one check result into `s` (mutated). Returns the transition when the active verdict changes:
 * - a pass from `unchecked` makes the backend `up` at once;
 * - `rise` consecutive passes make a `down` backend `up`;
 * - `fall` consecutive failures make an `up` or `unchecked` backend `down`.
 * Anything else (a flapping sequence that never reaches rise or fall) leaves the verdict as it is.
 */
export function activeStep(s: ActiveState, ok: boolean, detail: string, rise: number, fall: number): Transition | undefined {
  if (ok) {
    s.fails = 0;
    s.passes++;
    if (s.health === 'unchecked' || (s.health === 'down' && s.passes >= rise)) {
      s.health = 'up';
      return { to: 'up', why: `check passed ${times(s.passes)}` };
    }
    return undefined;
  }
  s.passes = 0;
  s.fails++;
  if (s.health !== 'down' && s.fails >= fall) {
    s.health = 'down';
    return { to: 'down', why: `check failed ${times(s.fails)}: ${detail}` };
  }
  return undefined;
}

/** Why a passive ejection happened: "passive: 5 consecutive failures (last: reset)". */
export function ejectionReason(streak: number, last: FailureReason): string {
  return `passive: ${streak} consecutive failure${streak === 1 ? '' : 's'} (last: ${last})`;
}

/**
 * Whether a failure report counts toward passive ejection: 5xx responses count only with `on_5xx`
 * (workers already filter them; the primary does not rely on it).
 */
export function countsAsFailure(reason: FailureReason, on5xx: boolean): boolean {
  return reason !== '5xx' || on5xx;
}

/** The health workers act on: `down` while ejected, else the active verdict (`up` without checks). */
export function effectiveHealth(active: ActiveState, ejected: boolean): HealthState {
  return ejected ? 'down' : active.health;
}

/**
 * Where in the interval the checks of backend `index` of `count` start: evenly spread, deterministic, so
 * a pool's checks never fire together (HAProxy spreads its checks the same way, `spread-checks`).
 */
export function checkOffset(index: number, count: number, intervalMs: number): number {
  if (count <= 1) return 0;
  return Math.floor((intervalMs * index) / count);
}

/**
 * The first check slot strictly after `now` on the grid `planned + k * interval`: a check that overran
 * its slot skips the missed ones rather than bunching up.
 */
export function nextSlot(planned: number, intervalMs: number, now: number): number {
  let next = planned + intervalMs;
  if (next <= now) next += (Math.floor((now - next) / intervalMs) + 1) * intervalMs;
  return next;
}

/** Slow start: weight pushes per window, after the first one at the transition. */
export const SLOW_START_STEPS = 10;

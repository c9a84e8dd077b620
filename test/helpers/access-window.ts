// Counting what an lb instance admitted and refused over a window of time, from its own access log:
// every line carries the instance's `time` (ISO 8601, milliseconds, at the end of the response),
// `duration_ms` (from the request head) and `status`; a request is placed at its head's arrival,
// `time - duration_ms`, so a slow backend answer does not move it across a window's edge. Counting by the
// instance's clock, not by when a busy test process got round to a backend's request, keeps the window
// honest on a loaded machine. Reads stdout incrementally (lb.logs() reparses everything on each call).

import type { Lb } from './lb.js';

export class AccessLog {
  private off = 0;
  /** Arrival times (ms since the epoch, the instance's clock) of requests answered 200, and 429. */
  readonly admitted: number[] = [];
  readonly refused: number[] = [];
  /** Every line that is not an access line. */
  readonly other: Array<Record<string, unknown>> = [];

  constructor(private readonly lb: Lb) {}

  read(): this {
    const out = this.lb.stdout();
    const end = out.lastIndexOf('\n') + 1;
    if (end <= this.off) return this;
    for (const line of out.slice(this.off, end).split('\n')) {
      if (!line.startsWith('{')) continue;
      const l = JSON.parse(line) as Record<string, unknown>;
      if (l.msg !== 'access') this.other.push(l);
      else if (l.status === 200) this.admitted.push(arrival(l));
      else if (l.status === 429) this.refused.push(arrival(l));
    }
    this.off = end;
    return this;
  }

  /** Times of the non-access lines whose msg starts with `prefix`. */
  times(prefix: string): number[] {
    return this.read().other.filter((l) => String(l.msg).startsWith(prefix)).map((l) => Date.parse(String(l.time)));
  }
}

function arrival(l: Record<string, unknown>): number {
  return Date.parse(String(l.time)) - Number(l.duration_ms ?? 0);
}

/** How many of `times` fall in [from, to). */
export function countIn(times: readonly number[], from: number, to: number): number {
  let n = 0;
  for (const x of times) if (x >= from && x < to) n++;
  return n;
}

/** Every `sliceMs` slice of [from, to) holds at least one of `times` (the limit refused throughout). */
export function everySlice(times: readonly number[], from: number, to: number, sliceMs: number): boolean {
  for (let s = from; s + sliceMs <= to; s += sliceMs) if (countIn(times, s, s + sliceMs) === 0) return false;
  return true;
}

// Duration strings of the config file: a number with a unit, "250ms", "2s", "1.5s", "1m", "1h", and sums of
// those written together, Go-style ("1m30s", "1h15m"). Results are whole milliseconds.

/** JSON Schema pattern accepted by parseDuration (editors flag everything else). */
export const DURATION_PATTERN = '^(?:[0-9]+(?:\\.[0-9]+)?(?:ms|h|m|s))+$';

/** Node's timers hold at most a signed 32-bit millisecond count; longer delays fire after 1ms. */
export const MAX_DURATION_MS = 2_147_483_647;

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)/y;

const HINT = 'use a number with a unit (ms, s, m, h), e.g. "250ms"';

export type DurationResult = { ok: true; ms: number } | { ok: false; error: string };

export function tryParseDuration(text: string): DurationResult {
  const bad = (why: string): DurationResult => ({ ok: false, error: `invalid duration ${JSON.stringify(text)}: ${why}` });
  if (/^\s*-/.test(text)) return bad('must not be negative');
  if (/^[0-9]+(?:\.[0-9]+)?$/.test(text)) {
    return bad(`missing unit; use a number with a unit (ms, s, m, h), e.g. "${text}s"`);
  }
  if (text.length === 0) return bad(HINT);
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const m = PART.exec(text);
    if (!m) return bad(HINT);
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  }
  const ms = Math.round(total);
  if (Math.abs(total - ms) > 1e-6) return bad('the smallest unit is 1ms');
  if (ms > MAX_DURATION_MS) return bad(`the maximum is ${MAX_DURATION_MS}ms (about 24.8 days)`);
  return { ok: true, ms };
}

/** Milliseconds, or throws an Error whose message is the one tryParseDuration gives. */
export function parseDuration(text: string): number {
  const r = tryParseDuration(text);
  if (!r.ok) throw new Error(r.error);
  return r.ms;
}

/** The shortest string parseDuration maps back to `ms`: 250 → "250ms", 1500 → "1.5s", 90000 → "1m30s". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return `${ms}ms`;
  ms = Math.round(ms);
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${ms / 1000}s`;
  let out = '';
  let rest = ms;
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000]] as const) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  if (rest > 0) out += `${rest / 1000}s`;
  return out;
}

// Checking a pool's `algorithm_options` table (Algorithm.validateOptions, see types.ts). Each message starts
// with the option's key, so that config loading can point at it ("table_size: must be a prime ...").

/** Checks one option's value; returns what is wrong with it, or undefined. */
export type OptionCheck = (value: unknown) => string | undefined;

/**
 * Problems of `options` against `known` (key -> check), for algorithm `name`: unknown keys, and each
 * known key's check. Empty when all is well.
 */
export function checkOptions(name: string, options: Readonly<Record<string, unknown>>, known: Readonly<Record<string, OptionCheck>>): string[] {
  const problems: string[] = [];
  const keys = Object.keys(known);
  for (const [k, v] of Object.entries(options)) {
    const check = known[k];
    if (!check) {
      problems.push(
        `${k}: unknown option for algorithm ${name}` + (keys.length > 0 ? ` (known: ${keys.join(', ')})` : ' (it takes none)'),
      );
      continue;
    }
    const why = check(v);
    if (why !== undefined) problems.push(`${k}: ${why}`);
  }
  return problems;
}

/** A finite number >= min (and <= max when given). */
export function numberAtLeast(min: number, max = Infinity): OptionCheck {
  return (v) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) return `expected a number, got ${describe(v)}`;
    if (v < min) return `must be >= ${min} (got ${v})`;
    if (v > max) return `must be <= ${max} (got ${v})`;
    return undefined;
  };
}

/** `hash_balance_factor` of the hash algorithms: absent, or a number >= 1 (HAProxy and Envoy take >= 1.0). */
export const checkBalanceFactor: OptionCheck = numberAtLeast(1);

/** The option's value when it passed validateOptions, else undefined (create never throws on options). */
export function numberOption(options: Readonly<Record<string, unknown>> | undefined, key: string): number | undefined {
  const v = options?.[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  return typeof v === 'object' ? 'a table' : `${typeof v} ${String(v)}`;
}

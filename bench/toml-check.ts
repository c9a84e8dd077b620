// Checks for the bench's own TOML files (end-to-end scenarios, sim scenarios): every problem is collected as
// `FILE: key: message`, so that one run reports all of a file's mistakes at once, as lb's config does.

import { parse } from 'smol-toml';
import { tryParseDuration } from '../config/duration.js';

/** Parses TOML text; a syntax error becomes `new Err("FILE: first line of the message")`. */
export function parseTomlFile(text: string, file: string, Err: new (message: string) => Error): Record<string, unknown> {
  try {
    return parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new Err(`${file}: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** Value readers that record a problem and return the default when a value is wrong. */
export class FileChecker {
  readonly problems: string[] = [];
  constructor(readonly file: string) {}

  bad = (key: string, message: string): void => void this.problems.push(`${this.file}: ${key}: ${message}`);

  unknown = (obj: Record<string, unknown>, allowed: readonly string[], at: string): void => {
    for (const k of Object.keys(obj)) if (!allowed.includes(k)) this.bad(at + k, `unknown key (expected one of ${allowed.join(', ')})`);
  };

  /** A duration string ("5s"); with `numbersAreMs`, a plain number of milliseconds too (fractions allowed). */
  duration = (v: unknown, key: string, dflt: number, numbersAreMs = false): number => {
    if (v === undefined) return dflt;
    if (numbersAreMs && typeof v === 'number' && v >= 0 && Number.isFinite(v)) return v;
    if (typeof v !== 'string') return this.bad(key, `must be a duration string such as "5s"${numbersAreMs ? ' (or a number of ms)' : ''}`), dflt;
    const r = tryParseDuration(v);
    return r.ok ? r.ms : (this.bad(key, r.error), dflt);
  };

  int = (v: unknown, key: string, dflt: number, min: number, max: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return this.bad(key, `must be an integer from ${min} to ${max}`), dflt;
    return v;
  };

  real = (v: unknown, key: string, min: number, max: number): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !(v >= min && v <= max)) return this.bad(key, `must be a number from ${min} to ${max}`), undefined;
    return v;
  };
}

// daemon.state_file: the runtime changes made through the admin socket (drain, maint, weight) kept across
// restarts, as HAProxy's server-state-file keeps `set server` changes.
//
// Contracts:
// - Written on every change, atomically: the whole file to FILE.tmp-PID, fsync, rename over FILE, fsync of
//   the directory. A reader sees the old file or the new one, never a mix; after a crash the file holds
//   the last change that returned.
// - Only backends that differ from their config are written: admin state other than `ready`, and a
//   runtime weight. A backend missing from the file is `ready` with its config weight.
// - Read at start, before workers or health checks start. A file that is missing is no state; one that
//   cannot be read or parsed is reported to the caller (logged as a warning) and ignored; entries that are
//   malformed are skipped one by one, each reported.
//
// - Backends added with `lb add` (membership.ts, source "admin") are kept in "members" and added back at
//   start, before the "backends" entries (which may name them) apply. A member whose pool is gone, or whose
//   name the config now gives a backend of that pool, is dropped with a log line.
//
// Format (version 1; "members" is optional, so files written before it existed still read):
//   {"version":1,"written":"2025-01-01T00:00:00.000Z",
//    "backends":[{"pool":"app","backend":"app-1","admin":"drain","weight":5}],
//    "members":[{"pool":"app","name":"app-9","address":"10.0.0.19:3000","weight":1,"priority":0}],
//    "splits":[{"listener":"web","route":"canary","weights":{"app-canary":10}}]}
//   `splits` (runtime split weights, `lb split`) is written only when there are some; a file without it
//   has none.

import fs from 'node:fs';
import path from 'node:path';

export const STATE_FILE_VERSION = 1;
export type SavedAdmin = 'drain' | 'maint';

export interface SavedBackend {
  pool: string;
  backend: string;
  admin?: SavedAdmin;
  weight?: number;
}

/** A backend added at runtime (`lb add`). */
export interface SavedMember {
  pool: string;
  name: string;
  address: string;
  weight: number;
  priority: number;
}

/** A route's runtime split weights: only the pools whose weight differs from the config's. */
export interface SavedSplit {
  listener: string;
  route: string;
  weights: Record<string, number>;
}

export interface ReadResult {
  entries: SavedBackend[];
  members: SavedMember[];
  splits: SavedSplit[];
  /** Why the file as a whole was ignored (unreadable, not JSON, wrong shape); undefined when it was read. */
  error?: string;
  /** Entries skipped, each with the reason. */
  skipped: string[];
}

/** Reads the state file; never throws. A missing file is an empty state without error. */
export function readStateFile(file: string): ReadResult {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { entries: [], members: [], splits: [], skipped: [] };
    return { entries: [], members: [], splits: [], skipped: [], error: `cannot read ${file}: ${code ?? (err as Error).message}` };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { entries: [], members: [], splits: [], skipped: [], error: `${file} is not valid JSON: ${(err as Error).message}` };
  }
  const d = doc as { version?: unknown; backends?: unknown; members?: unknown; splits?: unknown };
  if (typeof doc !== 'object' || doc === null || d.version !== STATE_FILE_VERSION || !Array.isArray(d.backends)) {
    return { entries: [], members: [], splits: [], skipped: [], error: `${file} is not an lb state file (expected {"version":${STATE_FILE_VERSION},"backends":[...]})` };
  }
  const entries: SavedBackend[] = [];
  const skipped: string[] = [];
  d.backends.forEach((raw: unknown, i: number) => {
    const e = raw as Record<string, unknown>;
    const bad = (why: string): void => void skipped.push(`backends[${i}]: ${why}`);
    if (typeof raw !== 'object' || raw === null) return bad('not an object');
    if (typeof e.pool !== 'string' || typeof e.backend !== 'string') return bad('needs "pool" and "backend" strings');
    if (e.admin !== undefined && e.admin !== 'drain' && e.admin !== 'maint') return bad(`"admin" must be "drain" or "maint", got ${JSON.stringify(e.admin)}`);
    if (e.weight !== undefined && !(typeof e.weight === 'number' && Number.isInteger(e.weight) && e.weight >= 0 && e.weight <= 1000)) {
      return bad(`"weight" must be an integer from 0 to 1000, got ${JSON.stringify(e.weight)}`);
    }
    entries.push({
      pool: e.pool,
      backend: e.backend,
      ...(e.admin !== undefined ? { admin: e.admin as SavedAdmin } : {}),
      ...(e.weight !== undefined ? { weight: e.weight as number } : {}),
    });
  });
  const members: SavedMember[] = [];
  if (d.members !== undefined && !Array.isArray(d.members)) skipped.push('members: not an array');
  (Array.isArray(d.members) ? d.members : []).forEach((raw: unknown, i: number) => {
    const e = raw as Record<string, unknown>;
    const bad = (why: string): void => void skipped.push(`members[${i}]: ${why}`);
    if (typeof raw !== 'object' || raw === null) return bad('not an object');
    if (typeof e.pool !== 'string' || typeof e.name !== 'string' || typeof e.address !== 'string') return bad('needs "pool", "name" and "address" strings');
    const intIn = (v: unknown, max: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
    if (!intIn(e.weight, 1000)) return bad(`"weight" must be an integer from 0 to 1000, got ${JSON.stringify(e.weight)}`);
    if (!intIn(e.priority, 65535)) return bad(`"priority" must be an integer from 0 to 65535, got ${JSON.stringify(e.priority)}`);
    members.push({ pool: e.pool, name: e.name, address: e.address, weight: e.weight as number, priority: e.priority as number });
  });
  const splits: SavedSplit[] = [];
  const rawSplits = d.splits === undefined ? [] : Array.isArray(d.splits) ? (d.splits as unknown[]) : null;
  if (rawSplits === null) skipped.push('splits: not an array');
  (rawSplits ?? []).forEach((raw: unknown, i: number) => {
    const e = raw as Record<string, unknown>;
    const bad = (why: string): void => void skipped.push(`splits[${i}]: ${why}`);
    if (typeof raw !== 'object' || raw === null) return bad('not an object');
    if (typeof e.listener !== 'string' || typeof e.route !== 'string') return bad('needs "listener" and "route" strings');
    const w = e.weights as Record<string, unknown>;
    if (typeof w !== 'object' || w === null || Array.isArray(w)) return bad('"weights" must be an object');
    for (const [pool, n] of Object.entries(w)) {
      if (!(typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= 10000)) return bad(`weight of ${pool} must be an integer from 0 to 10000, got ${JSON.stringify(n)}`);
    }
    splits.push({ listener: e.listener, route: e.route, weights: w as Record<string, number> });
  });
  return { entries, members, splits, skipped };
}

/** Writes the state file atomically (see the contract above); throws on failure (the caller logs it). */
export function writeStateFile(file: string, entries: SavedBackend[], members: SavedMember[] = [], splits: SavedSplit[] = []): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o750 });
  const tmp = `${file}.tmp-${process.pid}`;
  const doc = {
    version: STATE_FILE_VERSION,
    written: new Date().toISOString(),
    backends: entries,
    ...(members.length > 0 ? { members } : {}),
    ...(splits.length > 0 ? { splits } : {}),
  };
  const body = JSON.stringify(doc, null, 1) + '\n';
  const fd = fs.openSync(tmp, 'w', 0o640);
  try {
    fs.writeSync(fd, body);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  // The rename itself is durable only once the directory is synced.
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

// Config name -> Algorithm. A new built-in is one file in algorithms/ and one line in BUILT_INS; the
// conformance test (test/algorithms.conformance.test.ts) covers every entry with no change.
// `algorithm = "./path/to/module.js"` in a pool loads a user algorithm instead (see loadAlgorithm).

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { consistentHash } from './consistent-hash.js';
import { leastConnections } from './least-connections.js';
import { maglev } from './maglev.js';
import { peakEwma } from './peak-ewma.js';
import { powerOfTwoChoices } from './power-of-two-choices.js';
import { random } from './random.js';
import { roundRobin } from './round-robin.js';
import type { Algorithm } from './types.js';
import { weightedRoundRobin } from './weighted-round-robin.js';

const BUILT_INS: readonly Algorithm[] = [
  roundRobin,
  weightedRoundRobin,
  leastConnections,
  consistentHash,
  maglev,
  random,
  powerOfTwoChoices,
  peakEwma,
];

/** The built-in algorithms, keyed by config name. */
export const algorithms: ReadonlyMap<string, Algorithm> = new Map(BUILT_INS.map((a) => [a.name, a]));

/** Stable codes of AlgorithmError, printed by `lb validate` / `lb reload`. */
export type AlgorithmErrorCode = 'ALGORITHM_UNKNOWN' | 'ALGORITHM_INVALID';

export class AlgorithmError extends Error {
  override readonly name = 'AlgorithmError';
  constructor(
    readonly code: AlgorithmErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** True when a pool's `algorithm` value names a module rather than a built-in. */
export function isModulePath(nameOrPath: string): boolean {
  return nameOrPath.startsWith('./') || nameOrPath.startsWith('../') || nameOrPath.startsWith('/');
}

/**
 * Resolves a pool's `algorithm` value: a built-in name, or a module path ("./", "../" or "/"), resolved
 * against `baseDir` (the config file's directory), whose `default` export, else its `algorithm` export, is
 * an Algorithm. Called once per config load (validate, run, reload), never on the request path.
 *
 * A module is imported under a URL that carries a hash of its file's content: ESM caches modules by URL
 * for the life of the process, so without it a module fixed (or broken) on disk would be seen as it was at
 * its first load by every later `lb reload`. Same content, same URL: repeated loads share one instance.
 *
 * Throws AlgorithmError: ALGORITHM_UNKNOWN for a name that is neither a built-in nor a path;
 * ALGORITHM_INVALID when the module cannot be imported (the import error is the `cause`) or its export
 * lacks `name` (string), `create` (function), `usesKey` or `usesWeights` (booleans).
 */
export async function loadAlgorithm(nameOrPath: string, baseDir: string): Promise<Algorithm> {
  if (!isModulePath(nameOrPath)) {
    const builtIn = algorithms.get(nameOrPath);
    if (builtIn) return builtIn;
    throw new AlgorithmError(
      'ALGORITHM_UNKNOWN',
      `unknown algorithm "${nameOrPath}": expected one of ${[...algorithms.keys()].join(', ')}, ` +
        `or a module path starting with "./", "../" or "/"`,
    );
  }

  const file = resolve(baseDir, nameOrPath);
  let mod: Record<string, unknown>;
  try {
    const url = pathToFileURL(file);
    // An unreadable file is left to import() to report, so the message is the same either way.
    const content = await readFile(file).catch(() => undefined);
    if (content) url.search = `content=${createHash('sha256').update(content).digest('hex').slice(0, 16)}`;
    mod = (await import(url.href)) as Record<string, unknown>;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new AlgorithmError('ALGORITHM_INVALID', `algorithm module ${file} cannot be loaded: ${reason}`, {
      cause: err,
    });
  }
  const exported = mod['default'] ?? mod['algorithm'];
  const problems = checkAlgorithm(exported);
  if (problems.length > 0) {
    throw new AlgorithmError(
      'ALGORITHM_INVALID',
      `algorithm module ${file}: its default export (or export "algorithm") must be an Algorithm: ` +
        problems.join('; '),
    );
  }
  return exported as Algorithm;
}

/** What `value` lacks to be an Algorithm (see types.ts); empty when nothing. */
function checkAlgorithm(value: unknown): string[] {
  if (value === undefined) return ['there is no such export'];
  if (typeof value !== 'object' || value === null) return [`got ${value === null ? 'null' : typeof value}`];
  const a = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof a['name'] !== 'string' || a['name'] === '') problems.push('"name" must be a non-empty string');
  if (typeof a['create'] !== 'function') problems.push('"create" must be a function');
  if (typeof a['usesKey'] !== 'boolean') problems.push('"usesKey" must be a boolean');
  if (typeof a['usesWeights'] !== 'boolean') problems.push('"usesWeights" must be a boolean');
  if (a['validateOptions'] !== undefined && typeof a['validateOptions'] !== 'function') {
    problems.push('"validateOptions" must be a function when present');
  }
  return problems;
}

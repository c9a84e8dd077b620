// IPC between the primary and its workers (node:cluster's process channel). Every message is a plain
// object with a `t` tag; requests that expect an answer carry an `id` the answer echoes.

import type { Worker } from 'node:cluster';
import type { BackendConfig, LbConfig } from '../../config/model.js';
import type { BackendControl } from '../dataplane/backend.js';
import type { FailureReason } from '../dataplane/events.js';
import type { InflightReport } from '../dataplane/dataplane.js';
import type { SplitOverrides } from '../dataplane/route-match.js';

export type Controls = Record<string, Record<string, BackendControl>>;

/**
 * Primary → worker. A config is numbered by its generation (1 at start, +1 per committed reload).
 * `config`: a worker's first config, prepared and committed at once (DataPlane.apply). A reload is
 * `prepare` to every worker, then `commit` to every worker when all prepared, else `abort` to every one.
 */
export type ToWorker =
  | { t: 'config'; id: number; generation: number; config: LbConfig; controls: Controls; splits?: SplitOverrides }
  | { t: 'prepare'; id: number; generation: number; config: LbConfig }
  | { t: 'commit'; id: number; generation: number; controls: Controls; splits?: SplitOverrides }
  /** Runtime split weights (`lb split`): the whole set, replacing the one before. */
  | { t: 'splits'; splits: SplitOverrides }
  | { t: 'abort'; id: number; generation: number }
  | { t: 'control'; pool: string; backend: string; control: BackendControl }
  /**
   * Runtime membership (membership.ts): `pool`'s backends are now `backends`, in that order; `controls` holds
   * the decision for each of them. Backends not listed leave the pool (retired: in-flight work finishes).
   */
  | { t: 'members'; pool: string; backends: BackendConfig[]; controls: Record<string, BackendControl> }
  | { t: 'inflight'; id: number }
  | { t: 'metrics'; id: number }
  | { t: 'stop'; graceMs: number }
  | { t: 'test-block'; ms: number }
  /** Answer to `rl-take` (rate-lease.ts): tokens leased, tokens left in the bucket, ms until more. */
  | { t: 'rl-grant'; id: number; granted: number; remaining: number; waitMs: number };

/** Worker → primary. */
export type FromWorker =
  | { t: 'hello' }
  /** Answer to `config`: what could not be applied (a listener that cannot bind is left out, the rest serves). */
  | { t: 'applied'; id: number; errors: string[] }
  /** Answer to `prepare`: empty `errors` means ready to commit. */
  | { t: 'prepared'; id: number; generation: number; errors: string[] }
  /** Answer to `commit` and `abort`: the generation the worker serves now. */
  | { t: 'committed'; id: number; generation: number }
  | { t: 'inflight'; id: number; inflight: InflightReport; connections: number; generation: number }
  | { t: 'metrics'; id: number; metrics: unknown }
  /** `status`: the response status of a '5xx' failure. */
  | { t: 'failure'; pool: string; backend: string; reason: FailureReason; status?: number }
  /** Attempts and successes per backend ([name, total, ok]) since the last report (passive.success_rate). */
  | { t: 'outcomes'; pool: string; counts: Array<[string, number, number]> }
  | { t: 'recovered'; pool: string; backend: string }
  /** Rate limiting (src/dataplane/rate-limit.ts): a batch of tokens asked for, or unused ones given back. */
  | { t: 'rl-take'; id: number; limit: string; key: string; want: number }
  | { t: 'rl-return'; limit: string; key: string; n: number }
  | { t: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> };

export function isMessage(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

/**
 * Sends one message to a worker. A worker can die (kill -9, OOM) before the primary has handled its
 * 'disconnect' and 'exit'; a send then fails with EPIPE (or ERR_IPC_CHANNEL_CLOSED once the channel is
 * known closed). That failure goes to `onFail` (default: ignored, since the 'exit' handler respawns the
 * worker), never to a throw or an 'error' event, which with no listener would end the primary.
 */
export function sendToWorker(worker: Worker, msg: ToWorker, onFail: (err: Error) => void = () => {}): void {
  if (!worker.isConnected()) {
    onFail(Object.assign(new Error('worker IPC channel closed'), { code: 'ERR_IPC_CHANNEL_CLOSED' }));
    return;
  }
  try {
    worker.send(msg, (err: Error | null) => {
      if (err) onFail(err);
    });
  } catch (err) {
    onFail(err as Error);
  }
}

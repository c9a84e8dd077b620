// A worker process: owns the listeners and the data plane, takes config and backend decisions from the
// primary over IPC, reports in-flight counts, passive failures and metrics back.
//
// Exit codes: 0 after a requested stop, 70 (EX_SOFTWARE) on an uncaught error; the primary respawns
// workers that exit without being asked to.

import cluster from 'node:cluster';
import { accessLog, createLogger, type Logger } from '../log.js';
import { DataPlane } from '../dataplane/dataplane.js';
import type { DataPlaneEvents, RequestRecord } from '../dataplane/events.js';
import { isMessage, type FromWorker, type ToWorker } from './messages.js';
import { WorkerMetrics } from '../metrics/worker.js';
import { rateLimiters } from '../dataplane/rate-limit.js';

/** How often a worker reports attempt outcomes for success-rate outlier detection. */
const OUTCOME_REPORT_MS = 1000;

export function runWorker(): void {
  // A send that fails because the primary is gone is dropped: node:cluster ends a worker whose channel
  // closes unexpectedly, and without the callback the failure would be an uncaught 'error' first.
  const send = (m: FromWorker): void => {
    if (process.connected) process.send!(m, () => {});
  };
  let logger: Logger = createLogger('info', { role: 'worker', worker: cluster.worker?.id });
  let access = false;
  const metrics = new WorkerMetrics();

  const events: DataPlaneEvents = {
    get needsClient() {
      return access;
    },
    done(r: RequestRecord) {
      metrics.done(r);
      if (access) accessLog(logger, r);
    },
    failure(pool, backend, reason, status) {
      metrics.failure(pool, backend, reason);
      send(status === undefined ? { t: 'failure', pool, backend, reason } : { t: 'failure', pool, backend, reason, status });
    },
    recovered(pool, backend) {
      send({ t: 'recovered', pool, backend });
    },
    proxyRefused(listener, reason, client, detail) {
      metrics.proxyRefused(listener, reason);
      // A connection closed before sending a byte is what L4 balancers' TCP health checks do: not a warning.
      logger[reason === 'empty' ? 'debug' : 'warn']({ listener, reason, client, detail }, 'proxy protocol: connection refused');
    },
    h2Flood(listener, client, resets) {
      metrics.h2Flood(listener);
      logger.warn({ listener, client, resets }, 'http2: connection closed for resetting too many streams (GOAWAY ENHANCE_YOUR_CALM)');
    },
  };
  const dp = new DataPlane(events);
  rateLimiters.send = send;
  let stopping = false;
  // Success-rate outlier detection: each second, every backend's attempts and successes since the last
  // report go to the primary, which judges them over passive.success_rate.interval (src/health/outlier.ts).
  setInterval(() => {
    for (const pool of dp.pools.values()) {
      if (!pool.config.passive?.successRate) continue;
      const counts: Array<[string, number, number]> = [];
      for (const b of pool.backends) {
        const o = b.outcomes;
        if (o === undefined || o.total === 0) continue;
        counts.push([b.name, o.total, o.ok]);
        o.total = 0;
        o.ok = 0;
      }
      if (counts.length > 0) send({ t: 'outcomes', pool: pool.name, counts });
    }
  }, OUTCOME_REPORT_MS).unref();
  /** Set while the first config is being applied: `control` and `members` messages wait for it. */
  let starting: Promise<void> | undefined;

  process.on('message', (m: unknown) => {
    if (!isMessage(m)) return;
    const msg = m as ToWorker;
    switch (msg.t) {
      case 'config':
      case 'prepare': {
        const level = msg.config.log.level;
        if (logger.level !== level) logger = createLogger(level, { role: 'worker', worker: cluster.worker?.id });
        access = msg.config.log.access;
        // Before the listeners of this config are built: they take their limiters from it.
        rateLimiters.update(msg.config.rateLimits ?? {}, msg.config.daemon.workers);
        const messages = (errors: Error[]): string[] => errors.map((e) => e.message);
        const failed = (err: Error): string[] => [err.stack ?? err.message];
        if (msg.t === 'config') {
          if (msg.splits) dp.setSplits(msg.splits);
          const applying = dp.apply(msg.config, msg.generation, msg.controls);
          starting = applying.then(
            () => {
              starting = undefined;
            },
            () => {
              starting = undefined;
            },
          );
          applying.then(
            (r) => {
              metrics.setPools(dp.pools);
              send({ t: 'applied', id: msg.id, errors: messages(r.errors) });
            },
            (err: Error) => send({ t: 'applied', id: msg.id, errors: failed(err) }),
          );
        } else {
          const { id, generation } = msg;
          dp.prepare(msg.config, generation).then(
            (r) => send({ t: 'prepared', id, generation, errors: messages(r.errors) }),
            (err: Error) => send({ t: 'prepared', id, generation, errors: failed(err) }),
          );
        }
        break;
      }
      case 'commit':
        if (dp.commit(msg.generation, msg.controls)) metrics.setPools(dp.pools);
        if (msg.splits) dp.setSplits(msg.splits);
        send({ t: 'committed', id: msg.id, generation: dp.generation });
        break;
      case 'abort':
        dp.abort();
        send({ t: 'committed', id: msg.id, generation: dp.generation });
        break;
      case 'splits':
        dp.setSplits(msg.splits);
        break;
      case 'rl-grant':
        rateLimiters.onGrant(msg.id, msg.granted, msg.remaining, msg.waitMs);
        break;
      case 'control':
        // Before the first config is applied there is no pool to control: wait for it (IPC order kept).
        if (starting) void starting.then(() => dp.control(msg.pool, msg.backend, msg.control));
        else dp.control(msg.pool, msg.backend, msg.control);
        break;
      case 'members': {
        const apply = (): void => {
          try {
            const removed = dp.members(msg.pool, msg.backends, msg.controls);
            if (removed) metrics.membersChanged(msg.pool, removed, msg.backends);
          } catch (err) {
            send({ t: 'log', level: 'error', msg: 'membership change not applied: the algorithm cannot build a picker', fields: { pool: msg.pool, err: (err as Error).message } });
          }
        };
        if (starting) void starting.then(apply);
        else apply();
        break;
      }
      case 'inflight':
        send({ t: 'inflight', id: msg.id, inflight: dp.inflight(), connections: dp.connections(), generation: dp.generation });
        break;
      case 'metrics':
        metrics.snapshot(dp.pools).then((metricsJson) => send({ t: 'metrics', id: msg.id, metrics: metricsJson }));
        break;
      case 'stop':
        if (stopping) {
          dp.destroy();
          process.exit(0);
        }
        stopping = true;
        dp.stop(msg.graceMs).then((inTime) => {
          logger.info({ inTime }, 'worker stopped');
          // Let the last log line and IPC message leave before exiting.
          setTimeout(() => process.exit(0), 20);
        });
        break;
      case 'test-block': {
        // Test hook (LB_TEST_HOOKS=1 only): busy-loop this worker's event loop.
        if (process.env.LB_TEST_HOOKS === '1') {
          const until = Date.now() + msg.ms;
          while (Date.now() < until);
        }
        break;
      }
    }
  });

  // Signals go to the primary, which tells workers what to do; a worker ignores the terminal's ^C.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.on('SIGHUP', () => {});
  // The primary waits for this before sending the config: IPC messages that arrive before a 'message'
  // listener exists are dropped, and an ESM worker is 'online' well before its modules have loaded.
  send({ t: 'hello' });
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception in worker');
    process.exit(70);
  });
}

// The primary process: reads and validates the config, owns the admin socket, the authoritative backend
// state, health checking and /metrics, and supervises the workers (spawn, respawn with backoff, retire).
//
// Exit codes (what systemd sees, docs/SPEC.md "Command line"): 0 after a requested stop; 78 (EX_CONFIG, from
// sysexits.h) when at start the config is invalid (schema, algorithm modules, TLS files), a listener or
// the metrics listener cannot bind, or the admin socket cannot be created: restarting will not help;
// 70 (EX_SOFTWARE) on an uncaught error or a worker that dies while starting: a crash, worth a restart.
//
// Config generations: the config applied at start is generation 1, each committed reload adds 1. A reload
// is all or nothing (docs/SPEC.md): the primary checks what it can (config, modules, TLS files, that each new
// address can be bound), every worker then prepares the new generation next to the serving one
// (dataplane.ts prepare), and only when all have prepared does the primary commit it everywhere; any
// failure aborts it everywhere and nothing has changed.

import cluster, { type Worker } from 'node:cluster';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { issueAt, loadAndCheckConfigFile } from '../../config/load.js';
import { formatIssue, type Address, type LbConfig, type RouteConfig } from '../../config/model.js';
import { AdminError, AdminServer, str, type AdminContext, type AdminRequest } from '../admin/server.js';
import type { Peer } from '../admin/peer.js';
import { createLogger, who, type Logger } from '../log.js';
import type { FailureReason } from '../dataplane/events.js';
import type { InflightReport } from '../dataplane/dataplane.js';
import { isMessage, sendToWorker as send, type FromWorker, type ToWorker } from './messages.js';
import { RateLeaser } from './rate-lease.js';
import { honoursWeights, savedState, StateStore, stateOf, type BackendRecord } from './state.js';
import { readStateFile, writeStateFile, type ReadResult } from './state-file.js';
import { ADMIN_SOURCE, Membership, MembershipError, type Member } from './membership.js';
import { tryParseAddress } from '../../config/address.js';
import { applySplitCommand, effectiveWeights, fromSaved, keepFitting, toSaved } from './splits.js';
import type { SplitOverrides } from '../dataplane/route-match.js';
import { routeName } from '../../config/model.js';
import { describeChanges, type WeightsInEffect } from './changes.js';
import { LB_VERSION } from '../version.js';
import type { AdminState } from '../dataplane/backend.js';
import { HealthMonitor } from '../health/monitor.js';
import { DiscoveryManager } from '../discovery/manager.js';
import { MetricsServer } from '../metrics/primary.js';
import { nodeInternals, nodeInternalsLog } from '../node-internals/report.js';

interface WorkerSlot {
  worker: Worker;
  /** Asked to stop (retired by a smaller `workers` count, or daemon stop): not respawned. */
  retiring: boolean;
  ready: boolean;
}

interface Pending {
  resolve: (m: FromWorker) => void;
  timer: NodeJS.Timeout;
}

const WORKER_ENTRY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker-main.js');

/**
 * Node flags for workers: the primary's own (so flags an operator puts on the command line, e.g. in the
 * systemd unit's ExecStart, reach the workers), plus a young generation held at 16 MiB per semi-space, V8's
 * own ceiling on 64-bit, unless a semi-space size is already given. V8 otherwise shrinks the young
 * generation while a worker is idle and regrows it under load; in the anchors rig, where each proxy idles
 * between its runs, this cost lb up to a fifth of its req/s at the start of a run (six rounds in two runs,
 * the fixed size ahead in all six). It costs resident memory: a worker idle after load measured 115 MB
 * against 102 MB without it.
 */
export function workerExecArgv(own: readonly string[]): string[] {
  if (own.some((a) => /^--(min|max)-semi-space-size(=|$)/.test(a))) return [...own];
  return [...own, '--min-semi-space-size=16'];
}
/** sysexits.h: configuration error (bad config, address that cannot be bound). */
export const EX_CONFIG = 78;
/** sysexits.h: internal software error (an uncaught error in the primary). */
export const EX_SOFTWARE = 70;

/** How long a worker may take to prepare or commit a generation before the reload is aborted. */
const PREPARE_TIMEOUT_MS = 30_000;

/** Respawn backoff: 100 ms doubling to 30 s; more than 5 crashes in 60 s is logged as a crash loop. */
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 30_000;
const CRASH_WINDOW_MS = 60_000;
const CRASH_LOOP = 5;

export class Primary {
  config!: LbConfig;
  readonly state = new StateStore();
  private logger: Logger;
  private slots = new Map<number, WorkerSlot>();
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private admin!: AdminServer;
  private crashes: number[] = [];
  private stopping = false;
  private stopAt = 0;
  /** Reloads and respawns, one at a time: a worker never starts from a config that a running reload replaces. */
  private serial: Promise<unknown> = Promise.resolve();
  /** The config generation being served (see the head of this file). */
  generation = 0;
  private readonly started = Date.now();
  readonly health: HealthMonitor;
  readonly discovery: DiscoveryManager;
  private metrics: MetricsServer | undefined;
  /** Runtime membership (`lb add`/`lb remove`, discovery modules): see membership.ts. */
  readonly membership: Membership;
  /** Set once health checks run: before that, membership changes leave the checks to start(). */
  private serving = false;
  /** While the state file's members are added back at start: nothing to write back. */
  private restoring = false;
  /** Polls the in-flight counts of backends being removed with --drain (one timer for all). */
  private removalTimer: NodeJS.Timeout | undefined;
  private removalBusy = false;
  /** Runtime split weights (`lb split`), pushed to every worker and kept in the state file. */
  private splits: SplitOverrides = {};
  /** Rate-limit buckets of this instance, leased to workers. */
  private readonly rates = new RateLeaser(() => this.logger);

  constructor(private readonly configFile: string) {
    this.logger = createLogger('info', { role: 'primary' });
    this.health = new HealthMonitor(this.state, (r, why) => this.onStateChange(r, why), () => this.logger);
    this.discovery = new DiscoveryManager(
      (pool, members) => this.applyDiscovered(pool, members),
      (level, msg, fields) => this.logger[level](fields, msg),
    );
    const self = this;
    this.membership = new Membership({
      get config() {
        return self.config;
      },
      poolChanged: (pool, removed) => this.poolChanged(pool, removed),
      skipped: (pool, source, name, why) => this.logger.warn({ pool, source, backend: name, reason: why }, 'membership: member skipped'),
    });
  }

  /** Starts everything; resolves when the daemon serves, or exits the process (see the head of this file). */
  async start(): Promise<void> {
    process.on('uncaughtException', (err) => {
      process.stderr.write(`lb: uncaught error in the primary: ${err.stack ?? err.message}\n`);
      this.logger.fatal({ err }, 'uncaught error in the primary');
      process.exit(EX_SOFTWARE);
    });
    const { config, issues } = await loadAndCheckConfigFile(this.configFile);
    if (!config) {
      for (const i of issues) process.stderr.write(formatIssue(i) + '\n');
      process.exit(EX_CONFIG);
    }
    this.config = config;
    this.generation = 1;
    this.logger = createLogger(config.log.level, { role: 'primary' });
    this.state.apply(config);
    this.rates.apply(config);
    const saved = readStateFile(config.daemon.stateFile);
    this.restoring = true;
    this.restoreMembers(saved);
    this.restoring = false;
    await this.restoreState(saved);

    this.admin = new AdminServer(config.admin.socket, (req, ctx) => this.command(req, ctx));
    try {
      await this.admin.start();
    } catch (err) {
      this.fatal((err as Error).message, EX_CONFIG);
    }

    // daemon.accept: fixed for the life of the primary (node:cluster reads it at the first fork).
    cluster.schedulingPolicy = config.daemon.accept === 'round-robin' ? cluster.SCHED_RR : cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: WORKER_ENTRY, execArgv: workerExecArgv(process.execArgv), args: [], silent: false });
    cluster.on('message', (w, m) => this.onMessage(w, m));
    cluster.on('exit', (w, code, signal) => this.onExit(w, code, signal));

    const spawned = await Promise.all(Array.from({ length: config.daemon.workers }, () => this.spawn()));
    const errors = [...new Set(spawned.flatMap((r) => r.errors))];
    if (errors.length > 0) {
      for (const s of this.slots.values()) s.worker.kill('SIGKILL');
      await this.admin.close();
      this.fatal(errors.join('\n'), spawned.every((r) => r.started) ? EX_CONFIG : EX_SOFTWARE);
    }
    if (config.metrics) {
      this.metrics = new MetricsServer(this);
      try {
        await this.metrics.listen(config.metrics.listen);
      } catch (err) {
        for (const s of this.slots.values()) s.worker.kill('SIGKILL');
        await this.admin.close();
        this.fatal(`metrics: cannot listen on ${config.metrics.listen.text}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, EX_CONFIG);
      }
    }
    this.health.apply(this.config);
    this.serving = true;
    this.discovery.update(this.config);

    process.on('SIGHUP', () => {
      this.reload('SIGHUP').catch(() => {});
    });
    process.on('SIGTERM', () => this.stop('SIGTERM'));
    process.on('SIGINT', () => this.stop('SIGINT'));

    this.logger.info(
      {
        config: config.file,
        workers: config.daemon.workers,
        generation: this.generation,
        listeners: Object.values(config.listeners).map((l) => ({ name: l.name, protocol: l.protocol, listen: l.listen.text })),
        admin: config.admin.socket,
        metrics: config.metrics?.listen.text,
        node: process.version,
        version: LB_VERSION,
        stateFile: config.daemon.stateFile,
      },
      'lb started',
    );
    // What this process found at load; workers run the same Node with the same environment.
    this.logger.info(nodeInternalsLog(), 'node internals');
  }

  private fatal(message: string, code: number): never {
    process.stderr.write(`lb: ${message}\n`);
    this.logger.error(message);
    process.exit(code);
  }

  /**
   * Forks one worker and sends it the serving config; resolves with what it could not apply (empty when it
   * serves everything). `started` is false when the worker died or did not answer.
   */
  private async spawn(): Promise<{ started: boolean; errors: string[] }> {
    const worker = cluster.fork({ LB_WORKER: '1' });
    // A send to a worker that died before its 'exit' was handled fails with EPIPE; `send` below reports
    // that to its caller, and this keeps any other IPC error from being an unhandled 'error' event.
    worker.on('error', (err) => this.logger.warn({ worker: worker.id, err: err.message }, 'worker IPC error'));
    const slot: WorkerSlot = { worker, retiring: false, ready: false };
    this.slots.set(worker.id, slot);
    const hello = await new Promise<boolean>((resolve) => {
      const onMessage = (m: unknown): void => {
        if (isMessage(m) && m.t === 'hello') done(true);
      };
      const done = (ok: boolean): void => {
        worker.removeListener('message', onMessage);
        worker.removeListener('exit', onExit);
        resolve(ok);
      };
      const onExit = (): void => done(false);
      worker.on('message', onMessage);
      worker.once('exit', onExit);
    });
    if (!hello) return { started: false, errors: [`worker ${worker.id} exited during start`] };
    const generation = this.generation;
    const answer = await this.request(worker, { t: 'config', id: 0, generation, config: this.config, controls: this.state.controls(), splits: this.splits }, PREPARE_TIMEOUT_MS);
    if (!answer || answer.t !== 'applied') return { started: false, errors: [`worker ${worker.id} did not start`] };
    slot.ready = true;
    this.logger.info({ worker: worker.id, workerPid: worker.process.pid, generation }, 'worker started');
    return { started: true, errors: answer.errors };
  }

  /** Sends a request to one worker; resolves with its answer, or undefined after `timeoutMs`. */
  request(worker: Worker, msg: ToWorker & { id: number }, timeoutMs: number): Promise<FromWorker | undefined> {
    const id = this.nextId++;
    msg.id = id;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.pending.set(id, { resolve, timer });
      send(worker, msg, () => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(undefined);
      });
    });
  }

  /** Live (not retiring, connected) workers. */
  liveWorkers(): Worker[] {
    const out: Worker[] = [];
    for (const s of this.slots.values()) if (!s.retiring && s.ready && s.worker.isConnected()) out.push(s.worker);
    return out;
  }

  private onMessage(w: Worker, m: unknown): void {
    if (!isMessage(m)) return;
    const msg = m as FromWorker;
    if (msg.t === 'rl-take' || msg.t === 'rl-return') {
      this.rates.onMessage(w, msg);
      return;
    }
    if ('id' in msg && typeof msg.id === 'number') {
      const p = this.pending.get(msg.id);
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(msg.id);
        p.resolve(msg);
      }
      return;
    }
    switch (msg.t) {
      case 'failure':
        this.health.failure(msg.pool, msg.backend, msg.reason as FailureReason, typeof msg.status === 'number' ? msg.status : undefined);
        break;
      case 'outcomes':
        if (Array.isArray(msg.counts)) this.health.outcomes(msg.pool, msg.counts);
        break;
      case 'recovered':
        this.health.recovered(msg.pool, msg.backend);
        break;
      case 'log':
        this.logger[msg.level]({ worker: w.id, ...msg.fields }, msg.msg);
        break;
    }
  }

  private onExit(w: Worker, code: number | null, signal: string | null): void {
    const slot = this.slots.get(w.id);
    this.slots.delete(w.id);
    this.metrics?.workerGone(w.id);
    if (!slot || slot.retiring || this.stopping) {
      this.logger.info({ worker: w.id, code, signal }, 'worker exited');
      return;
    }
    const now = Date.now();
    this.crashes = this.crashes.filter((t) => now - t < CRASH_WINDOW_MS);
    this.crashes.push(now);
    const n = this.crashes.length;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (n - 1));
    if (n > CRASH_LOOP) {
      this.logger.error({ worker: w.id, code, signal, crashesInWindow: n, respawnInMs: delay }, 'worker crash loop: respawning with backoff');
    } else {
      this.logger.warn({ worker: w.id, code, signal, respawnInMs: delay }, 'worker died unexpectedly; respawning');
    }
    this.metrics?.workerRestarted();
    setTimeout(() => {
      void this.exclusive(async () => {
        if (this.stopping || this.liveCount() >= this.config.daemon.workers) return;
        const { errors } = await this.spawn();
        for (const e of errors) this.logger.error({ error: e }, 'respawned worker could not open a listener');
      });
    }, delay).unref();
  }

  private liveCount(): number {
    let n = 0;
    for (const s of this.slots.values()) if (!s.retiring) n++;
    return n;
  }

  /** Pushes the effective state of one backend to every worker. */
  pushControl(r: BackendRecord): void {
    const control = this.state.control(r);
    for (const s of this.slots.values()) {
      send(s.worker, { t: 'control', pool: r.pool, backend: r.name, control });
    }
  }

  private onStateChange(r: BackendRecord, why: string): void {
    this.pushControl(r);
    this.logger.info({ pool: r.pool, backend: r.name, state: stateOf(r), health: r.health, reason: why }, 'backend state changed');
  }

  /**
   * In-flight counts summed over workers. Because IPC is ordered, an answer also proves the worker has
   * applied every control message sent to it before the question.
   */
  async inflight(timeoutMs = 2_000): Promise<{ inflight: InflightReport; connections: number; answered: number; asked: number; workers: WorkerInfo[] }> {
    const workers = this.liveWorkers();
    const answers = await Promise.all(workers.map((w) => this.request(w, { t: 'inflight', id: 0 }, timeoutMs)));
    const sum: InflightReport = {};
    let connections = 0;
    let answered = 0;
    const info: WorkerInfo[] = [];
    for (const [i, a] of answers.entries()) {
      const w = workers[i]!;
      info.push({ id: w.id, pid: w.process.pid ?? null, generation: a?.t === 'inflight' ? a.generation : null });
      if (!a || a.t !== 'inflight') continue;
      answered++;
      connections += a.connections;
      for (const [pool, bs] of Object.entries(a.inflight)) {
        const p = (sum[pool] ??= {});
        for (const [b, n] of Object.entries(bs)) p[b] = (p[b] ?? 0) + n;
      }
    }
    return { inflight: sum, connections, answered, asked: workers.length, workers: info };
  }

  // ---- admin commands -------------------------------------------------------------------------------

  private async command(req: AdminRequest, ctx: AdminContext): Promise<unknown> {
    switch (req.cmd) {
      case 'status':
        // Per-backend request and error totals come from the workers' counters, collected by the metrics
        // server; without [metrics] the status has no totals.
        return this.metrics ? this.metrics.statusWithTotals() : this.status();
      case 'reload':
        return this.reload('admin', ctx.peer());
      case 'drain':
      case 'ready':
      case 'maint': {
        const r = this.backend(req);
        const peer = ctx.peer();
        // `lb ready` on a backend being removed with --drain calls the removal off.
        if (req.cmd === 'ready' && r.removing) {
          r.removing = undefined;
          this.saveState();
        }
        const changed = this.setAdmin(r, req.cmd);
        const { inflight } = await this.inflight();
        this.logger.info({ pool: r.pool, backend: r.name, admin: r.admin, changed, by: who(await peer) }, `admin: ${req.cmd}`);
        return { pool: r.pool, backend: r.name, state: stateOf(r), changed, inflight: inflight[r.pool]?.[r.name] ?? 0 };
      }
      case 'weight':
        return this.setWeight(req, ctx);
      case 'add':
        return this.addBackend(req, ctx);
      case 'remove':
        return this.removeBackend(req, ctx);
      case 'split':
        return this.setSplit(req, ctx);
      case 'inflight':
        return this.inflight();
      case 'test-throw': {
        // Test hook (LB_TEST_HOOKS=1 only): an uncaught error in the primary, as a bug would raise.
        if (process.env.LB_TEST_HOOKS !== '1') break;
        setImmediate(() => {
          throw new Error('test-throw: an uncaught error in the primary');
        });
        return {};
      }
      case 'test-block': {
        if (process.env.LB_TEST_HOOKS !== '1') break;
        const ms = Number(req.ms ?? 1000);
        // `pid`: that worker, retiring ones included (tests of a stopping worker); else the first live one.
        const pid = Number(req.pid ?? 0);
        const w = pid ? [...this.slots.values()].find((s) => s.worker.process.pid === pid)?.worker : this.liveWorkers()[0];
        if (w) send(w, { t: 'test-block', ms });
        return { worker: w?.id, ms };
      }
    }
    throw new AdminError('UNKNOWN_COMMAND', `unknown command ${JSON.stringify(req.cmd)}; commands: status, reload, drain, ready, maint, weight, add, remove, split`);
  }

  /** Sets a backend's admin state; true when it changed. Maintenance stops and restarts its health checks. */
  private setAdmin(r: BackendRecord, admin: AdminState): boolean {
    const before = r.admin;
    if (before === admin) return false;
    r.admin = admin;
    r.changedAt = Date.now();
    if ((before === 'maint') !== (admin === 'maint')) this.health.maint(r.pool, r.name, admin === 'maint');
    this.pushControl(r);
    this.saveState();
    return true;
  }

  /**
   * `weight`: sets (or with "reset": true, drops) a backend's runtime weight. Refused with
   * WEIGHT_UNSUPPORTED when the pool's algorithm ignores weights and the weight is not 0 (0 = no new
   * traffic, honoured by every algorithm): lb never reports a change that does not take effect.
   */
  private async setWeight(req: AdminRequest, ctx: AdminContext): Promise<unknown> {
    const r = this.backend(req);
    const reset = req.reset === true;
    if (req.reset !== undefined && typeof req.reset !== 'boolean') throw new AdminError('INVALID_FIELD', '"reset" must be true or false');
    const w = req.weight;
    if (!reset) {
      if (w === undefined) throw new AdminError('MISSING_FIELD', '"weight" needs "weight" (or "reset": true)');
      if (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > 1000) {
        throw new AdminError('INVALID_FIELD', `"weight" must be an integer from 0 to 1000, got ${JSON.stringify(w)}`);
      }
    } else if (w !== undefined) {
      throw new AdminError('INVALID_FIELD', '"weight" and "reset" exclude each other');
    }
    const pool = this.config.pools[r.pool]!;
    if (!reset && w !== 0 && !(await honoursWeights(pool, this.config.file))) {
      throw new AdminError(
        'WEIGHT_UNSUPPORTED',
        `pool ${r.pool} uses ${pool.algorithm}, which ignores weights: weight ${w} would change nothing. ` +
          'Weight 0 (no new traffic) works with every algorithm; other weights need an algorithm that honours them (e.g. weighted-round-robin)',
        { algorithm: pool.algorithm },
      );
    }
    const peer = ctx.peer();
    const before = this.state.baseWeight(r);
    r.weightOverride = reset ? undefined : (w as number);
    const weight = this.state.baseWeight(r);
    this.pushControl(r);
    this.saveState();
    await this.inflight();
    this.logger.info({ pool: r.pool, backend: r.name, weight, before, reset, by: who(await peer) }, 'admin: weight');
    return { pool: r.pool, backend: r.name, weight, before, configWeight: r.configWeight, reset };
  }

  /**
   * A pool's backend list changed at runtime (membership.ts; the new list is in this.config): the state
   * store keeps the records of backends that stay and makes new ones, health checks start and stop, every
   * worker gets the list (one `members` message: only the pool's Picker is rebuilt), and the series of
   * departed backends leave /metrics.
   */
  private poolChanged(pool: string, removed: string[]): void {
    const p = this.config.pools[pool]!;
    this.state.applyPool(p);
    if (this.serving) this.health.apply(this.config);
    const msg = { t: 'members' as const, pool, backends: p.backends, controls: this.state.poolControls(pool) };
    for (const s of this.slots.values()) send(s.worker, msg);
    for (const name of removed) this.metrics?.forget(pool, name);
    if (!this.restoring) this.saveState();
    this.logger.info({ pool, backends: p.backends.map((b) => b.name), removed }, 'pool membership changed');
  }

  /** `add`: a backend added to a pool at runtime (HAProxy `add server`); answers once every worker has it. */
  private async addBackend(req: AdminRequest, ctx: AdminContext): Promise<unknown> {
    const pool = str(req, 'pool');
    const name = str(req, 'backend');
    const parsed = tryParseAddress(str(req, 'address'));
    if (!parsed.ok) throw new AdminError('INVALID_ADDRESS', parsed.error);
    const weight = intField(req, 'weight', 1000, 1);
    const priority = intField(req, 'priority', 65535, 0);
    const p = this.config.pools[pool];
    if (p && weight !== 0 && weight !== 1 && !(await honoursWeights(p, this.config.file))) {
      throw new AdminError('WEIGHT_UNSUPPORTED', `pool ${pool} uses ${p.algorithm}, which ignores weights: weight ${weight} would change nothing (0 or 1 work)`, { algorithm: p.algorithm });
    }
    const member: Member = { name, address: parsed.address, weight, priority };
    const peer = ctx.peer();
    try {
      this.membership.add(pool, member);
    } catch (err) {
      throw adminError(err);
    }
    // An answer proves the worker applied the change (IPC is ordered).
    await this.inflight();
    const r = this.state.get(pool, name)!;
    this.logger.info({ pool, backend: name, address: parsed.address.text, weight, priority, by: who(await peer) }, 'admin: add');
    return { pool, backend: name, address: r.address, weight, priority, source: ADMIN_SOURCE, state: stateOf(r), reason: r.reason ?? null };
  }

  /**
   * `remove`: takes a runtime backend out of its pool (HAProxy `del server`). Without "drain" at once: no
   * new traffic from the answer on, in-flight work finishes, then its idle connections close. With "drain":
   * drained first (no new traffic), removed when its in-flight count over all workers is 0; the answer says
   * whether that already happened (`removed`). Backends of the config file are refused (NOT_RUNTIME).
   */
  private async removeBackend(req: AdminRequest, ctx: AdminContext): Promise<unknown> {
    const pool = str(req, 'pool');
    const name = str(req, 'backend');
    if (req.drain !== undefined && typeof req.drain !== 'boolean') throw new AdminError('INVALID_FIELD', '"drain" must be true or false');
    const peer = ctx.peer();
    let source: string;
    try {
      // Only `lb add` members: a "dns" one would stay out until the DNS answer changed (its runner still
      // lists it) and come back then; docs/SPEC.md gives NOT_RUNTIME for it ("change it there").
      source = this.membership.removable(pool, name, ADMIN_SOURCE);
    } catch (err) {
      throw adminError(err);
    }
    const r = this.state.get(pool, name)!;
    if (req.drain !== true) {
      this.membership.remove(pool, name);
      await this.inflight();
      this.logger.info({ pool, backend: name, source, by: who(await peer) }, 'admin: remove');
      return { pool, backend: name, removed: true, inflight: 0 };
    }
    if (!r.removing) {
      r.removing = true;
      if (!this.setAdmin(r, 'drain')) this.saveState();
    }
    const { inflight, answered, asked } = await this.inflight();
    const n = inflight[pool]?.[name] ?? 0;
    this.logger.info({ pool, backend: name, source, inflight: n, by: who(await peer) }, 'admin: remove --drain');
    if (n === 0 && answered === asked && this.state.get(pool, name) === r && r.removing) {
      this.finishRemoval(r);
      await this.inflight();
      return { pool, backend: name, removed: true, inflight: 0 };
    }
    this.watchRemovals();
    return { pool, backend: name, removed: false, draining: true, inflight: n };
  }

  private finishRemoval(r: BackendRecord): void {
    try {
      this.membership.remove(r.pool, r.name);
      this.logger.info({ pool: r.pool, backend: r.name }, 'backend removed after draining');
    } catch (err) {
      this.logger.warn({ pool: r.pool, backend: r.name, err: (err as Error).message }, 'drained backend could not be removed');
    }
  }

  /** Removes each draining backend once every worker reports nothing in flight for it. */
  private watchRemovals(): void {
    if (this.removalTimer) return;
    this.removalTimer = setInterval(() => {
      if (this.removalBusy) return;
      this.removalBusy = true;
      this.checkRemovals().finally(() => (this.removalBusy = false));
    }, 100);
  }

  private async checkRemovals(): Promise<void> {
    const pending = this.state.all().filter((r) => r.removing);
    if (pending.length === 0 || this.stopping) {
      clearInterval(this.removalTimer);
      this.removalTimer = undefined;
      return;
    }
    const { inflight, answered, asked } = await this.inflight();
    if (answered !== asked) return;
    for (const r of pending) {
      if (this.state.get(r.pool, r.name) === r && r.removing && (inflight[r.pool]?.[r.name] ?? 0) === 0) this.finishRemoval(r);
    }
  }

  /** At start: backends added with `lb add` before the restart (daemon.state_file "members"). */
  private restoreMembers({ members }: ReadResult): void {
    const file = this.config.daemon.stateFile;
    const restored: string[] = [];
    for (const m of members) {
      const parsed = tryParseAddress(m.address);
      try {
        if (!parsed.ok) throw new MembershipError('INVALID_ADDRESS', parsed.error);
        this.membership.add(m.pool, { name: m.name, address: parsed.address, weight: m.weight, priority: m.priority });
        restored.push(`${m.pool}/${m.name} ${m.address}`);
      } catch (err) {
        this.logger.warn({ stateFile: file, pool: m.pool, backend: m.name, err: (err as Error).message }, 'state file: runtime backend not restored');
      }
    }
    if (restored.length > 0) this.logger.info({ stateFile: file, backends: restored }, 'runtime backends restored from the state file');
  }

  /**
   * `split`: sets (or with "reset": true, drops) a route's runtime split weights, in every worker; returns
   * once every live worker has applied them (the ordered channel: an answer to `inflight` sent after the
   * `splits` message proves it).
   */
  private async setSplit(req: AdminRequest, ctx: AdminContext): Promise<unknown> {
    const { next, listener, route, before, after } = applySplitCommand(this.config, this.splits, req);
    const peer = ctx.peer();
    this.splits = next;
    for (const s of this.slots.values()) send(s.worker, { t: 'splits', splits: next });
    this.saveState();
    await this.inflight();
    this.logger.info({ listener, route, before, after, reset: req.reset === true, by: who(await peer) }, 'admin: split');
    return { listener, route, before, weights: after, reset: req.reset === true };
  }

  /** Writes daemon.state_file; a failure is logged and the change stays in effect. */
  private saveState(): void {
    const file = this.config.daemon.stateFile;
    try {
      const members = this.membership
        .list(ADMIN_SOURCE)
        .filter(({ pool, backend }) => !this.state.get(pool, backend.name)?.removing)
        .map(({ pool, backend: b }) => ({ pool, name: b.name, address: b.address.text, weight: b.weight, priority: b.priority }));
      writeStateFile(file, savedState(this.state.all()), members, toSaved(this.splits));
    } catch (err) {
      this.logger.error({ stateFile: file, err: (err as NodeJS.ErrnoException).code ?? (err as Error).message }, 'state file could not be written; the change applies until the next restart');
    }
  }

  /** At start: applies daemon.state_file to the backends that still exist; a bad file is logged and ignored. */
  private async restoreState({ entries, splits, error, skipped }: ReadResult): Promise<void> {
    const file = this.config.daemon.stateFile;
    if (error) this.logger.warn({ stateFile: file, error }, 'state file ignored: lb starts with the config as written');
    for (const why of skipped) this.logger.warn({ stateFile: file, entry: why }, 'state file entry ignored');
    const { kept, dropped } = keepFitting(this.config, fromSaved(splits));
    this.splits = kept;
    for (const why of dropped) this.logger.info({ stateFile: file, reason: why }, 'state file: split weights ignored');
    if (splits.length > dropped.length) this.logger.info({ stateFile: file, splits: toSaved(kept) }, 'runtime split weights restored from the state file');
    const applied: string[] = [];
    for (const e of entries) {
      const r = this.state.get(e.pool, e.backend);
      if (!r) {
        this.logger.info({ stateFile: file, pool: e.pool, backend: e.backend }, 'state file: backend no longer in the config; entry ignored');
        continue;
      }
      if (e.admin) r.admin = e.admin;
      if (e.weight !== undefined) {
        if (e.weight > 0 && !(await honoursWeights(this.config.pools[e.pool]!, this.config.file))) {
          this.logger.info({ stateFile: file, pool: e.pool, backend: e.backend, weight: e.weight }, 'state file: weight ignored: the pool\'s algorithm ignores weights');
        } else {
          r.weightOverride = e.weight;
        }
      }
      applied.push(`${e.pool}/${e.backend}${e.admin ? ` ${e.admin}` : ''}${r.weightOverride !== undefined ? ` weight ${r.weightOverride}` : ''}`);
    }
    if (applied.length > 0) this.logger.info({ stateFile: file, backends: applied }, 'runtime state restored from the state file');
  }

  /** Runtime weights in effect now, keyed "POOL/BACKEND" (for the reload diff). */
  private weightsInEffect(): Map<string, number> {
    return new Map(this.state.all().map((r) => [`${r.pool}/${r.name}`, this.state.baseWeight(r)]));
  }

  /**
   * After a reload: runtime weights other than 0 on pools whose (new) algorithm ignores weights are dropped
   * (they would not take effect). Returns those pools' names.
   */
  private async dropIgnoredWeights(): Promise<Set<string>> {
    const ignoring = new Set<string>();
    for (const pool of Object.values(this.config.pools)) {
      if (await honoursWeights(pool, this.config.file)) continue;
      ignoring.add(pool.name);
      for (const b of pool.backends) {
        const r = this.state.get(pool.name, b.name);
        if (r?.weightOverride === undefined || r.weightOverride === 0) continue;
        this.logger.warn({ pool: pool.name, backend: b.name, weight: r.weightOverride, algorithm: pool.algorithm }, 'runtime weight dropped: the algorithm ignores weights');
        r.weightOverride = undefined;
      }
    }
    return ignoring;
  }

  private backend(req: AdminRequest): BackendRecord {
    const pool = str(req, 'pool');
    const backend = str(req, 'backend');
    if (!this.state.hasPool(pool)) throw new AdminError('UNKNOWN_POOL', `no pool ${pool}`);
    const r = this.state.get(pool, backend);
    if (!r) throw new AdminError('UNKNOWN_BACKEND', `pool ${pool} has no backend ${backend}`);
    return r;
  }

  async status(): Promise<unknown> {
    const { inflight, answered, asked, workers } = await this.inflight(1_000);
    const now = Date.now();
    return {
      config: this.config.file,
      version: LB_VERSION,
      node: process.version,
      pid: process.pid,
      nodeInternals: nodeInternals(),
      uptimeSeconds: Math.round((now - this.started) / 1000),
      generation: this.generation,
      // list: each worker's pid and the config generation it serves (null: it did not answer in time).
      workers: { configured: this.config.daemon.workers, answered, asked, pids: workers.map((w) => w.pid), list: workers },
      listeners: Object.values(this.config.listeners).map((l) => ({
        name: l.name,
        protocol: l.protocol,
        listen: l.listen.text,
        pool: l.pool,
        tls: !!l.tls,
        routes: l.routes.map((r, i) => {
          const name = routeName(l.name, i, r);
          const action = r.pool !== undefined ? { pool: r.pool } : r.split ? { split: effectiveWeights(r, this.splits[l.name]?.[name]), sticky: r.sticky ? stickyText(r.sticky) : null } : r.redirect ? { redirect: r.redirect.code } : { respond: r.respond?.status ?? 0 };
          return { name, ...action };
        }),
      })),
      pools: Object.values(this.config.pools).map((p) => ({
        name: p.name,
        algorithm: p.algorithm,
        healthCheck: p.healthCheck ? p.healthCheck.type : null,
        backends: p.backends.map((b) => {
          const r = this.state.get(p.name, b.name)!;
          const c = this.state.control(r, now);
          return {
            name: r.name,
            address: r.address,
            state: stateOf(r),
            health: r.health,
            admin: r.admin,
            weight: c.weight,
            ...(c.ramp !== undefined ? { ramp: Math.round(c.ramp * 1000) / 1000 } : {}),
            configWeight: r.configWeight,
            priority: r.priority,
            // Where the backend came from: "config" (the file), "admin" (`lb add`), "dns", ...
            source: r.source ?? 'config',
            runtime: r.source !== undefined,
            removing: r.removing === true,
            inflight: inflight[p.name]?.[r.name] ?? 0,
            reason: r.reason ?? null,
            lastCheck: r.lastCheck ? { ok: r.lastCheck.ok, detail: r.lastCheck.detail, ageMs: now - r.lastCheck.at, ms: r.lastCheck.ms } : null,
            ejectedUntil: r.ejectedUntil ? new Date(r.ejectedUntil).toISOString() : null,
            lastChange: new Date(r.changedAt).toISOString(),
            lastChangeAgeMs: now - r.changedAt,
          };
        }),
      })),
    };
  }

  /** Re-reads the config file; applies it as the next generation when every part can be, else refuses. */
  reload(source: string, peer?: Promise<Peer | undefined>): Promise<unknown> {
    return this.exclusive(() => this.doReload(source, peer));
  }

  /** Runs `fn` after every reload and respawn queued before it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.serial.then(fn);
    this.serial = run.catch(() => {});
    return run;
  }

  private refuse(source: string, by: ReturnType<typeof who> | undefined, code: string, why: string, lines: string[]): never {
    this.metrics?.reloaded('refused');
    this.logger.warn({ source, by, generation: this.generation, issues: lines }, `reload refused: ${why}; the running config keeps serving`);
    throw new AdminError(code, `${why}, reload refused:\n${lines.join('\n')}`, { issues: lines });
  }

  private async doReload(source: string, peer?: Promise<Peer | undefined>): Promise<unknown> {
    const by = peer ? who(await peer) : undefined;
    // 1. Everything the primary can check, before any worker is asked.
    const { config: fileConfig, issues, text } = await loadAndCheckConfigFile(this.configFile);
    if (!fileConfig) this.refuse(source, by, 'CONFIG_INVALID', 'config invalid', issues.map(formatIssue));
    // Runtime backends survive a reload (membership.ts); workers prepare the merged config.
    const prepared = this.membership.merge(fileConfig).config;
    let config = prepared;
    const old = this.config;
    const bindIssues = await this.checkNewAddresses(old, config, text ?? '');
    let metrics: MetricsServer | undefined;
    const metricsMoved = config.metrics?.listen.text !== old.metrics?.listen.text;
    if (bindIssues.length === 0 && config.metrics && metricsMoved) {
      // The new metrics listener is opened now and the old one closed at commit.
      metrics = new MetricsServer(this, this.metrics);
      try {
        await metrics.listen(config.metrics.listen);
      } catch (err) {
        const message = `metrics: cannot listen on ${config.metrics.listen.text}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
        bindIssues.push(formatIssue(issueAt(this.configFile, text ?? '', ['metrics', 'listen'], message)));
        metrics = undefined;
      }
    }
    if (bindIssues.length > 0) this.refuse(source, by, 'LISTEN_FAILED', 'a new address cannot be bound', bindIssues);

    // 2. Every worker prepares the next generation next to the serving one.
    const generation = this.generation + 1;
    const workers = this.liveWorkers();
    const answers = await Promise.all(workers.map((w) => this.request(w, { t: 'prepare', id: 0, generation, config }, PREPARE_TIMEOUT_MS)));
    const failures = new Set<string>();
    answers.forEach((a, i) => {
      if (a?.t !== 'prepared' || a.generation !== generation) failures.add(`worker ${workers[i]!.id}: no answer to prepare within ${PREPARE_TIMEOUT_MS / 1000}s`);
      else for (const e of a.errors) failures.add(e);
    });
    if (failures.size > 0) {
      await Promise.all(workers.map((w) => this.request(w, { t: 'abort', id: 0, generation }, PREPARE_TIMEOUT_MS)));
      await metrics?.close();
      this.refuse(source, by, 'RELOAD_FAILED', 'a worker could not prepare the new config', [...failures]);
    }

    // 3. Commit: from here on nothing is refused. Membership may have changed while workers prepared: merge
    // again, and bring the pools that differ from what was prepared up to date after the commit.
    const before = this.weightsInEffect();
    const merged = this.membership.merge(fileConfig);
    config = merged.config;
    this.membership.adopt(merged.dropped);
    for (const d of merged.dropped) this.logger.warn({ pool: d.pool, backend: d.name, source: d.source, reason: d.why }, 'runtime backend dropped by reload');
    // A runtime backend replaced by a config backend of the same name: the config's starts fresh.
    for (const d of merged.dropped) {
      this.state.forget(d.pool, d.name);
      this.health.forget(d.pool, d.name);
    }
    this.config = config;
    this.generation = generation;
    if (old.log.level !== config.log.level) this.logger = createLogger(config.log.level, { role: 'primary' });
    this.state.apply(config);
    this.rates.apply(config);
    const ignoring = await this.dropIgnoredWeights();
    const { kept: splits, dropped: splitsDropped } = keepFitting(config, this.splits);
    this.splits = splits;
    for (const why of splitsDropped) this.logger.warn({ reason: why }, 'runtime split weights dropped by the reload');
    const changes = describeChanges(old, config, { before, after: this.weightsInEffect(), ignoring } satisfies WeightsInEffect);
    // Entries of removed backends leave the file (one re-added later under the same name starts fresh).
    if (savedState(this.state.all()).length > 0 || splitsDropped.length > 0 || fs.existsSync(config.daemon.stateFile)) this.saveState();
    const controls = this.state.controls();
    const committed = await Promise.all(workers.map((w) => this.request(w, { t: 'commit', id: 0, generation, controls, splits }, PREPARE_TIMEOUT_MS)));
    committed.forEach((a, i) => {
      // A worker that prepared and then died is respawned with this generation (onExit).
      if (a?.t !== 'committed' || a.generation !== generation) this.logger.warn({ worker: workers[i]!.id, generation }, 'worker did not confirm the commit');
    });
    for (const [name, p] of Object.entries(config.pools)) {
      if (JSON.stringify(prepared.pools[name]?.backends) === JSON.stringify(p.backends)) continue;
      const msg = { t: 'members' as const, pool: name, backends: p.backends, controls: this.state.poolControls(name) };
      for (const w of workers) send(w, msg);
    }
    for (const d of merged.dropped) this.metrics?.forget(d.pool, d.name);
    this.health.apply(config);
    this.discovery.update(config);
    if (metricsMoved) {
      const previous = this.metrics;
      this.metrics = metrics;
      await previous?.close();
    }
    // Worker count: spawn the missing ones, retire the extra ones (they finish their connections first).
    const listenErrors = new Set<string>();
    const live = [...this.slots.values()].filter((s) => !s.retiring);
    if (live.length < config.daemon.workers) {
      const spawned = await Promise.all(Array.from({ length: config.daemon.workers - live.length }, () => this.spawn()));
      for (const e of spawned.flatMap((r) => r.errors)) listenErrors.add(e);
    } else {
      for (const s of live.slice(config.daemon.workers)) {
        s.retiring = true;
        send(s.worker, { t: 'stop', graceMs: config.daemon.gracePeriodMs });
      }
    }
    this.metrics?.reloaded('applied');
    this.logger.info({ source, by, generation, changes, listenErrors: [...listenErrors] }, 'config reloaded');
    return { generation, changes, listenErrors: [...listenErrors] };
  }

  /**
   * Binds, and closes again, every listen address of `next` that `current` does not already serve (same host
   * and port), so that an address taken by another process or not permitted refuses the reload before any
   * worker is asked. Port 0 (any free port) is not checked. Returns issue lines.
   */
  private async checkNewAddresses(current: LbConfig, next: LbConfig, text: string): Promise<string[]> {
    const serving = new Set(Object.values(current.listeners).map((l) => addressKey(l.listen)));
    const out: string[] = [];
    for (const l of Object.values(next.listeners)) {
      if (l.listen.port === 0 || serving.has(addressKey(l.listen))) continue;
      const error = await tryBind(l.listen);
      if (error) out.push(formatIssue(issueAt(this.configFile, text, ['listeners', l.name, 'listen'], `listener ${l.name}: cannot listen on ${l.listen.text}: ${error}`)));
    }
    return out;
  }

  /**
   * A pool's DNS discovery answered with a new set (src/discovery/): it replaces the pool's "dns" members
   * (membership.ts), each with the pool's discovery max_connections. A pool that no longer exists (a reload
   * removed it while the answer was on its way) is logged and ignored.
   */
  private applyDiscovered(pool: string, members: Member[]): void {
    const maxConnections = this.config.pools[pool]?.discovery?.maxConnections ?? 0;
    try {
      const { added, removed } = this.membership.setSource(
        pool,
        'dns',
        members.map((m) => ({ ...m, maxConnections })),
      );
      if (added.length > 0 || removed.length > 0) this.logger.info({ pool, added, removed }, 'dns discovery: pool members changed');
    } catch (err) {
      this.logger.warn({ pool, err: (err as Error).message }, 'dns discovery: set not applied');
    }
  }


  /** Graceful stop; a second signal stops at once. */
  stop(signal: string): void {
    // The same signal delivered twice at once (to the process and to its group, as `timeout` and some
    // supervisors do) is one request; a second signal counts from 200 ms after the first.
    if (this.stopping && Date.now() - this.stopAt < 200) return;
    if (this.stopping) {
      this.logger.warn({ signal }, 'second stop signal: stopping at once');
      for (const s of this.slots.values()) s.worker.kill('SIGKILL');
      this.admin.close().finally(() => process.exit(0));
      return;
    }
    this.stopping = true;
    this.stopAt = Date.now();
    const grace = this.config.daemon.gracePeriodMs;
    this.logger.info({ signal, gracePeriodMs: grace }, 'stopping: no new connections; in-flight work finishes');
    this.health.stop();
    this.discovery.stop();
    if (this.removalTimer) clearInterval(this.removalTimer);
    for (const s of this.slots.values()) {
      s.retiring = true;
      send(s.worker, { t: 'stop', graceMs: grace });
    }
    const done = (): void => {
      this.metrics?.close();
      this.admin.close().finally(() => {
        this.logger.info('lb stopped');
        setTimeout(() => process.exit(0), 20);
      });
    };
    if (this.slots.size === 0) return done();
    const check = setInterval(() => {
      if (this.slots.size === 0) {
        clearInterval(check);
        clearTimeout(hard);
        done();
      }
    }, 20);
    // Workers cut what is left at the grace period; this is the backstop if one cannot.
    const hard = setTimeout(() => {
      for (const s of this.slots.values()) s.worker.kill('SIGKILL');
    }, grace + 5_000);
  }

  get workerCount(): number {
    return this.config.daemon.workers;
  }
}

export interface WorkerInfo {
  id: number;
  pid: number | null;
  /** The config generation the worker serves; null when it did not answer. */
  generation: number | null;
}

/** An optional integer field from 0 to `max`; `dflt` when absent. */
function intField(req: AdminRequest, field: string, max: number, dflt: number): number {
  const v = req[field];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new AdminError('INVALID_FIELD', `"${field}" must be an integer from 0 to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function adminError(err: unknown): Error {
  return err instanceof MembershipError ? new AdminError(err.code, err.message) : (err as Error);
}

function stickyText(k: NonNullable<RouteConfig['sticky']>): string {
  return k.kind === 'client-ip' || k.kind === 'path' ? k.kind : `${k.kind}:${k.name}`;
}

function addressKey(a: Address): string {
  return `${a.host} ${a.port}`;
}

/** Binds `addr` exclusively (not through node:cluster) and closes it; resolves with the error code, if any. */
function tryBind(addr: Address): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen({ host: addr.host, port: addr.port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
}

export async function runPrimary(configFile: string): Promise<void> {
  if (!cluster.isPrimary) throw new Error('runPrimary in a worker');
  const p = new Primary(configFile);
  await p.start();
}

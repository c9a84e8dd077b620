// The `lb` command line (docs/SPEC.md "Command line"). Usage errors exit 2 with commander's message.

import cluster from 'node:cluster';
import fs from 'node:fs';
import path from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { Command, CommanderError, Option } from 'commander';
import { loadAndCheckConfigFile, loadConfigFile } from '../config/load.js';
import { formatIssue } from '../config/model.js';
import { adminRequest, AdminUnreachable } from './admin/client.js';
import type { AdminResponse } from './admin/server.js';
import { parseDuration } from '../config/duration.js';
import { renderStatus, type StatusResult } from './status-table.js';
import { LB_VERSION } from './version.js';

export const DEFAULT_CONFIG = '/etc/lb/lb.toml';
export const DEFAULT_SOCKET = '/run/lb/admin.sock';

/**
 * -s, else $LB_ADMIN_SOCKET, else [admin].socket of the -c config, else the default path (only when -c is
 * the default and that file does not exist). A -c file with errors still names its daemon's socket when
 * [admin].socket can be read from it (adminSocketOf); when it cannot, the CLI says so and exits 1 rather
 * than ask the default socket, which may belong to another daemon.
 */
let resolvedSocket: Promise<string> | undefined;
function socketPath(opts: { socket?: string; config: string }): Promise<string> {
  // Once per process: `drain --wait` asks many times, and notes about the config are printed once.
  return (resolvedSocket ??= findSocket(opts));
}

async function findSocket(opts: { socket?: string; config: string }): Promise<string> {
  if (opts.socket) return opts.socket;
  if (process.env.LB_ADMIN_SOCKET) return process.env.LB_ADMIN_SOCKET;
  if (!fs.existsSync(opts.config)) {
    if (opts.config === DEFAULT_CONFIG) return DEFAULT_SOCKET;
    cliFail(`config file ${opts.config} does not exist, so the admin socket cannot be determined: pass -s PATH (or set LB_ADMIN_SOCKET)`);
  }
  const { config, issues } = await loadConfigFile(opts.config);
  if (config) return config.admin.socket;
  const loose = adminSocketOf(opts.config);
  const first = issues[0] ? formatIssue(issues[0]) : 'it is invalid';
  if (loose === undefined) {
    cliFail(`${opts.config} has errors (${first}) and its [admin].socket cannot be read, so the admin socket cannot be determined: pass -s PATH (or set LB_ADMIN_SOCKET)`);
  }
  process.stderr.write(`lb: note: ${opts.config} has errors (${first}); using its [admin].socket ${loose}\n`);
  return loose;
}

/**
 * [admin].socket of a config file that does not validate, resolved against the file's directory as
 * config/load.ts does: from the TOML when it parses (the default socket when the key is absent), else from a
 * `socket = "..."` line in an `[admin]` table found line by line. Undefined when neither works.
 */
export function adminSocketOf(file: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch {
    return undefined;
  }
  const dir = path.dirname(path.resolve(file));
  try {
    const doc = parseToml(text) as { admin?: { socket?: unknown } };
    const sock = doc.admin?.socket ?? DEFAULT_SOCKET;
    return typeof sock === 'string' && sock !== '' ? path.resolve(dir, sock) : undefined;
  } catch {
    // not TOML: scan for the table and the key below
  }
  let table = '';
  for (const line of text.split(/\r?\n/)) {
    const header = /^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$/.exec(line);
    if (header) {
      table = header[1]!;
      continue;
    }
    if (table !== 'admin') continue;
    const kv = /^\s*socket\s*=\s*(?:"([^"\\]*)"|'([^']*)')\s*(#.*)?$/.exec(line);
    const sock = kv?.[1] ?? kv?.[2];
    if (sock) return path.resolve(dir, sock);
  }
  return undefined;
}

function cliFail(message: string): never {
  process.stderr.write(`lb: ${message}\n`);
  process.exit(1);
}

async function call(opts: { socket?: string; config: string }, req: Record<string, unknown>, timeoutMs?: number): Promise<AdminResponse> {
  const sock = await socketPath(opts);
  try {
    return await adminRequest(sock, req, timeoutMs);
  } catch (err) {
    if (err instanceof AdminUnreachable) {
      process.stderr.write(`lb: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

/**
 * Polls `status` until the daemon answers with every configured worker started (what systemd's start waits
 * for through the unit's ExecStartPost), or exits 1 after `ms`.
 */
async function waitReady(opts: { socket?: string; config: string }, ms: number): Promise<AdminResponse> {
  const sock = await socketPath(opts);
  const deadline = Date.now() + ms;
  let last = 'no answer yet';
  for (;;) {
    try {
      const res = await adminRequest(sock, { cmd: 'status' }, 5_000);
      const w = res.ok ? (res.result as StatusResult).workers : undefined;
      if (!res.ok || (w && w.asked === w.configured && w.answered === w.asked)) return res;
      last = `${w?.asked ?? 0} of ${w?.configured ?? '?'} workers serving`;
    } catch (err) {
      if (!(err instanceof AdminUnreachable)) throw err;
      last = err.message;
    }
    if (Date.now() > deadline) {
      process.stderr.write(`lb: not ready after ${ms}ms: ${last}\n`);
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Prints an `ok:false` answer as `lb: CODE: message` (and each issue line for CONFIG_INVALID) and exits 1. */
function failWith(res: AdminResponse): never {
  if (res.ok) process.exit(0);
  const e = res.error;
  if (Array.isArray(e.issues)) {
    process.stderr.write(`lb: ${e.code}: reload refused; the running config keeps serving\n`);
    for (const line of e.issues as string[]) process.stderr.write(line + '\n');
  } else {
    process.stderr.write(`lb: ${e.code}: ${e.message}\n`);
  }
  process.exit(1);
}

function cliInt(flag: string, text: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw new CommanderError(2, 'lb.int', `error: ${flag} must be an integer from 0 to ${max}, got "${text}"`);
  return Number(text);
}

function target(spec: string): { pool: string; backend: string } {
  const slash = spec.indexOf('/');
  if (slash <= 0 || slash === spec.length - 1) {
    throw new CommanderError(2, 'lb.target', `error: expected POOL/BACKEND, got "${spec}"`);
  }
  return { pool: spec.slice(0, slash), backend: spec.slice(slash + 1) };
}

export function buildProgram(): Command {
  const program = new Command('lb')
    .description('lb: an L4/L7 load balancer daemon')
    .version(LB_VERSION)
    .showHelpAfterError()
    .exitOverride();

  const configOpt = (): Option => new Option('-c, --config <file>', 'config file').default(DEFAULT_CONFIG);
  const socketOpt = (): Option => new Option('-s, --socket <path>', 'admin socket (default: $LB_ADMIN_SOCKET, else [admin].socket of the config)');

  program
    .command('run')
    .description('run the daemon in the foreground (what systemd ExecStart calls)')
    .addOption(configOpt())
    .action(async (opts: { config: string }) => {
      const { runPrimary } = await import('./daemon/primary.js');
      await runPrimary(opts.config);
    });

  program
    .command('validate')
    .description('check a config file without starting anything')
    .addOption(configOpt())
    .action(async (opts: { config: string }) => {
      // Algorithm modules are imported and TLS files read too, as `lb run` and `lb reload` do.
      const { config, issues } = await loadAndCheckConfigFile(opts.config);
      if (config && issues.length === 0) {
        process.stdout.write('ok\n');
        return;
      }
      for (const i of issues) process.stderr.write(formatIssue(i) + '\n');
      process.exit(1);
    });

  program
    .command('status')
    .description('pools, backends, state, weight, in-flight, last health check')
    .option('--json', 'print the status as JSON')
    .option('--wait [duration]', 'wait until the daemon answers and every configured worker serves (default up to 60s; exit 1 when the time passes): the unit\'s readiness check')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (opts: { json?: boolean; wait?: string | boolean; config: string; socket?: string }) => {
      const res = opts.wait === undefined ? await call(opts, { cmd: 'status' }) : await waitReady(opts, opts.wait === true ? 60_000 : parseDuration(String(opts.wait)));
      if (!res.ok) failWith(res);
      process.stdout.write(opts.json ? JSON.stringify(res.result, null, 2) + '\n' : renderStatus(res.result as StatusResult));
    });

  program
    .command('reload')
    .description('make the daemon re-read its config file; prints what changed')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (opts: { config: string; socket?: string }) => {
      const res = await call(opts, { cmd: 'reload' }, 120_000);
      if (!res.ok) failWith(res);
      const r = res.result as { changes: string[]; listenErrors: string[]; generation: number };
      process.stdout.write(r.changes.length ? r.changes.map((c) => `${c}\n`).join('') : 'reloaded: no changes\n');
      process.stdout.write(`config generation ${r.generation}\n`);
      for (const e of r.listenErrors) process.stderr.write(`lb: ${e}\n`);
      if (r.listenErrors.length > 0) process.exit(1);
    });

  program
    .command('drain')
    .description('send no new requests/connections to a backend; in-flight ones finish')
    .argument('<pool/backend>', 'the backend, as POOL/BACKEND')
    .option('--wait [duration]', 'block until the backend has no in-flight work, summed over all workers (default up to 5m; exit 1 when the time passes)')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, opts: { wait?: string | boolean; config: string; socket?: string }) => {
      const t = target(spec);
      let waitMs: number | undefined;
      if (opts.wait !== undefined) {
        try {
          waitMs = opts.wait === true ? 300_000 : parseDuration(String(opts.wait));
        } catch (err) {
          throw new CommanderError(2, 'lb.duration', `error: --wait: ${(err as Error).message}`);
        }
      }
      const res = await call(opts, { cmd: 'drain', ...t });
      if (!res.ok) failWith(res);
      const r = res.result as { inflight: number };
      if (waitMs === undefined) {
        process.stdout.write(`${spec}: draining (${r.inflight} in flight)\n`);
        return;
      }
      const deadline = Date.now() + waitMs;
      let inflight = r.inflight;
      while (inflight > 0) {
        if (Date.now() >= deadline) {
          process.stderr.write(`lb: ${spec}: still ${inflight} in flight after ${opts.wait === true ? '5m' : opts.wait}\n`);
          process.exit(1);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        const q = await call(opts, { cmd: 'inflight' });
        if (!q.ok) failWith(q);
        const report = q.result as { inflight: Record<string, Record<string, number>> };
        inflight = report.inflight[t.pool]?.[t.backend] ?? 0;
      }
      process.stdout.write(`${spec}: drained, nothing in flight\n`);
    });

  program
    .command('add')
    .description('add a backend to a pool at runtime (HAProxy "add server"); kept across reloads and restarts')
    .argument('<pool>', 'the pool')
    .argument('<name>', 'the new backend\'s name (unique in the pool)')
    .argument('<address>', 'host:port ([::1]:8080 for IPv6)')
    .option('--weight <n>', 'weight, an integer from 0 to 1000', '1')
    .option('--priority <n>', 'priority tier, an integer from 0 to 65535 (lower is preferred)', '0')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (pool: string, name: string, address: string, opts: { weight: string; priority: string; config: string; socket?: string }) => {
      const weight = cliInt('--weight', opts.weight, 1000);
      const priority = cliInt('--priority', opts.priority, 65535);
      const res = await call(opts, { cmd: 'add', pool, backend: name, address, weight, priority });
      if (!res.ok) failWith(res);
      const r = res.result as { state: string; reason: string | null };
      process.stdout.write(`${pool}/${name}: added (${address}, weight ${weight}, priority ${priority}; ${r.state}${r.reason ? `: ${r.reason}` : ''})\n`);
    });

  program
    .command('remove')
    .description('remove a backend added at runtime (HAProxy "del server"); in-flight work finishes')
    .argument('<pool/backend>', 'the backend, as POOL/BACKEND')
    .option('--drain', 'first send it no new traffic; it is removed once nothing is in flight (summed over all workers)')
    .option('--wait [duration]', 'with --drain: block until it is removed (default up to 5m; exit 1 when the time passes)')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, opts: { drain?: boolean; wait?: string | boolean; config: string; socket?: string }) => {
      const t = target(spec);
      if (opts.wait !== undefined && !opts.drain) throw new CommanderError(2, 'lb.remove', 'error: --wait needs --drain (without it the backend is removed at once)');
      let waitMs: number | undefined;
      if (opts.wait !== undefined) {
        try {
          waitMs = opts.wait === true ? 300_000 : parseDuration(String(opts.wait));
        } catch (err) {
          throw new CommanderError(2, 'lb.duration', `error: --wait: ${(err as Error).message}`);
        }
      }
      const res = await call(opts, { cmd: 'remove', ...t, ...(opts.drain ? { drain: true } : {}) });
      if (!res.ok) failWith(res);
      let r = res.result as { removed: boolean; inflight: number };
      if (r.removed) {
        process.stdout.write(`${spec}: removed${opts.drain ? ', nothing in flight' : ' (in-flight work finishes)'}\n`);
        return;
      }
      if (waitMs === undefined) {
        process.stdout.write(`${spec}: draining (${r.inflight} in flight); removed when nothing is in flight\n`);
        return;
      }
      const deadline = Date.now() + waitMs;
      for (;;) {
        if (Date.now() >= deadline) {
          process.stderr.write(`lb: ${spec}: still ${r.inflight} in flight after ${opts.wait === true ? '5m' : opts.wait}; it is removed when that reaches 0\n`);
          process.exit(1);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
        const q = await call(opts, { cmd: 'status' });
        if (!q.ok) failWith(q);
        const b = (q.result as StatusResult).pools.find((p) => p.name === t.pool)?.backends.find((x) => x.name === t.backend);
        if (!b) break;
        r = { removed: false, inflight: b.inflight };
      }
      process.stdout.write(`${spec}: drained and removed\n`);
    });

  program
    .command('ready')
    .description('put a drained backend, or one in maintenance, back in service')
    .argument('<pool/backend>', 'the backend, as POOL/BACKEND')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, opts: { config: string; socket?: string }) => {
      const res = await call(opts, { cmd: 'ready', ...target(spec) });
      if (!res.ok) failWith(res);
      process.stdout.write(`${spec}: ready\n`);
    });

  program
    .command('weight')
    .description('set a backend weight at runtime (0 = no new traffic); refused for algorithms that ignore weights')
    .argument('<pool/backend>', 'the backend, as POOL/BACKEND')
    .argument('[n]', 'the weight, an integer from 0 to 1000')
    .option('--reset', "drop the runtime weight: back to the config's")
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, n: string | undefined, opts: { reset?: boolean; config: string; socket?: string }) => {
      const t = target(spec);
      if (opts.reset && n !== undefined) throw new CommanderError(2, 'lb.weight', 'error: give either a weight or --reset, not both');
      if (!opts.reset && n === undefined) throw new CommanderError(2, 'lb.weight', "error: missing required argument 'n' (or --reset)");
      if (n !== undefined && (!/^\d+$/.test(n) || Number(n) > 1000)) throw new CommanderError(2, 'lb.weight', `error: weight must be an integer from 0 to 1000, got "${n}"`);
      const res = await call(opts, opts.reset ? { cmd: 'weight', ...t, reset: true } : { cmd: 'weight', ...t, weight: Number(n) });
      if (!res.ok) failWith(res);
      const r = res.result as { weight: number; before: number };
      process.stdout.write(`${spec}: weight ${r.before} -> ${r.weight}${opts.reset ? " (the config's)" : ''}\n`);
    });

  program
    .command('split')
    .description("set a route's split weights at runtime, in every worker, kept across reloads and restarts (e.g. a canary ramp)")
    .argument('<listener/route>', 'the route, as LISTENER/ROUTE (ROUTE: its name, or LISTENER#INDEX)')
    .argument('[weights...]', 'POOL=WEIGHT for each pool to change; pools not named keep their weight')
    .option('--reset', "drop the runtime weights: back to the config's")
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, args: string[], opts: { reset?: boolean; config: string; socket?: string }) => {
      const slash = spec.indexOf('/');
      if (slash <= 0 || slash === spec.length - 1) throw new CommanderError(2, 'lb.target', `error: expected LISTENER/ROUTE, got "${spec}"`);
      const where = { listener: spec.slice(0, slash), route: spec.slice(slash + 1) };
      if (opts.reset && args.length > 0) throw new CommanderError(2, 'lb.split', 'error: give either weights or --reset, not both');
      if (!opts.reset && args.length === 0) throw new CommanderError(2, 'lb.split', 'error: missing POOL=WEIGHT arguments (or --reset)');
      const weights: Record<string, number> = {};
      for (const a of args) {
        const m = /^(.+)=(\d+)$/.exec(a);
        if (!m) throw new CommanderError(2, 'lb.split', `error: expected POOL=WEIGHT (an integer), got "${a}"`);
        weights[m[1]!] = Number(m[2]);
      }
      const res = await call(opts, opts.reset ? { cmd: 'split', ...where, reset: true } : { cmd: 'split', ...where, weights });
      if (!res.ok) failWith(res);
      const r = res.result as { before: Array<{ pool: string; weight: number }>; weights: Array<{ pool: string; weight: number; configWeight: number }> };
      const text = (l: Array<{ pool: string; weight: number }>): string => l.map((e) => `${e.pool}=${e.weight}`).join(' ');
      process.stdout.write(`${spec}: ${text(r.before)} -> ${text(r.weights)}${opts.reset ? " (the config's)" : ''}\n`);
    });

  program
    .command('maint')
    .description('maintenance: no traffic and no health checks for a backend until `lb ready` (HAProxy "set server state maint")')
    .argument('<pool/backend>', 'the backend, as POOL/BACKEND')
    .addOption(configOpt())
    .addOption(socketOpt())
    .action(async (spec: string, opts: { config: string; socket?: string }) => {
      const res = await call(opts, { cmd: 'maint', ...target(spec) });
      if (!res.ok) failWith(res);
      const r = res.result as { inflight: number };
      process.stdout.write(`${spec}: in maintenance (${r.inflight} in flight; \`lb ready ${spec}\` to end it)\n`);
    });

  program
    .command('demo')
    .description('run lb with three demo upstreams on 127.0.0.1:9001-9003 (what `npm start` runs)')
    .addOption(configOpt().default('lb.example.toml'))
    .action(async (opts: { config: string }) => {
      const { runDemo } = await import('./demo.js');
      await runDemo(opts.config);
    });

  program
    .command('bench')
    .description('the algorithm comparison harness (see bench/README.md); `lb bench --help` for its parts')
    .allowUnknownOption()
    .helpOption(false)
    .argument('[args...]')
    .action(async (args: string[]) => {
      const { benchMain } = await import('../bench/cli.js');
      process.exitCode = await benchMain(args);
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      if (err.code.startsWith('lb.')) process.stderr.write(err.message + '\n');
      process.exit(2);
    }
    process.stderr.write(`lb: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  }
}

if (cluster.isPrimary) void main(process.argv);

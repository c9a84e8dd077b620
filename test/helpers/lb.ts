// Test helpers that meet lb the way users do: the real `lb` binary spawned as a process, real loopback
// sockets, real signals. Every wait has a deadline; nothing sleeps blindly.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const LB = path.join(ROOT, 'bin', 'lb.js');

export function tmpdir(prefix = 'lb-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Polls `cond` until it returns a truthy value; throws after `timeoutMs` with `what` in the message. */
export async function waitFor<T>(cond: () => T | Promise<T>, timeoutMs: number, what: string, everyMs = 20): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await cond();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A port that was free a moment ago on 127.0.0.1. */
/** Ports freePort() has handed out in this process: the kernel may offer a closed one again at once. */
const handedOut = new Set<number>();

/** A loopback port that was free just now and that this process has not been given before. */
/** The state letter of process `pid` from /proc/PID/stat ('Z': exited, not reaped), or undefined when there is none. */
export function procState(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
  } catch {
    return undefined;
  }
}

export async function freePort(): Promise<number> {
  for (;;) {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

export interface Upstream {
  port: number;
  name: string;
  hits: number;
  server: http.Server;
  close(): Promise<void>;
}

/**
 * An HTTP upstream on 127.0.0.1 that answers `name` (the default handler) and counts requests.
 * Close cuts every connection, as a dying backend does.
 */
export async function startUpstream(name: string, handler?: http.RequestListener, port = 0): Promise<Upstream> {
  const u: Partial<Upstream> = { name, hits: 0 };
  const server = http.createServer((req, res) => {
    u.hits!++;
    if (handler) return handler(req, res);
    res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': name });
    res.end(name);
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  u.port = (server.address() as net.AddressInfo).port;
  u.server = server;
  u.close = () =>
    new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    });
  return u as Upstream;
}

export interface Lb {
  proc: ChildProcess;
  dir: string;
  configFile: string;
  socket: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  /** Logged JSON lines (stdout) parsed. */
  logs(): Array<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * `toml` with `daemon.state_file` set to state.json in `dir` unless it sets one: tests never write the
 * default /var/lib/lb/state.json (nor read another run's state).
 */
export function withStateFile(toml: string, dir: string): string {
  if (/^\s*state_file\s*=/m.test(toml)) return toml;
  const line = `state_file = ${JSON.stringify(path.join(dir, 'state.json'))}`;
  if (/^\[daemon\][ \t]*$/m.test(toml)) return toml.replace(/^\[daemon\][ \t]*$/m, `[daemon]\n${line}`);
  return `[daemon]\n${line}\n\n${toml}`;
}

/**
 * Writes `toml` (with `{{socket}}` replaced by a socket path in a fresh temp dir, and daemon.state_file in
 * that dir unless it sets one) and runs `lb run -c` on it.
 * Resolves once the admin socket answers `status` and every port in `ports` accepts connections.
 */
export async function startLb(toml: string, ports: number[], opts: { env?: Record<string, string>; dir?: string } = {}): Promise<Lb> {
  const dir = opts.dir ?? tmpdir();
  const socket = path.join(dir, 'admin.sock');
  const configFile = path.join(dir, 'lb.toml');
  fs.writeFileSync(configFile, withStateFile(toml.replaceAll('{{socket}}', socket), dir));
  const proc = spawn(process.execPath, [LB, 'run', '-c', configFile], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  const lb: Lb = {
    proc,
    dir,
    configFile,
    socket,
    stdout: () => out,
    stderr: () => err,
    exited,
    logs: () =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (!gone) proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
  await waitFor(
    async () => {
      if (gone) throw new Error(`lb exited early: ${err}`);
      const st = await admin(socket, { cmd: 'status' });
      // Every configured worker has started (the admin socket answers before the workers are up).
      if (st.result.workers.asked !== st.result.workers.configured) return false;
      // A run with the fallbacks forced (test/fallback-*.test.ts) must not pass on the internals' path.
      const forced = opts.env?.LB_NODE_FALLBACK ?? process.env.LB_NODE_FALLBACK;
      if (forced === 'all' && !(st.result.nodeInternals as Array<{ mode: string }>).every((i) => i.mode === 'fallback')) {
        throw new Error(`lb was started with LB_NODE_FALLBACK=all but reports ${JSON.stringify(st.result.nodeInternals)}`);
      }
      for (const p of ports) await connectOnce(p);
      return true;
    },
    20_000,
    'lb to start',
    50,
  );
  return lb;
}

export function connectOnce(port: number, host = '127.0.0.1'): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    s.once('connect', () => {
      s.destroy();
      resolve();
    });
    s.once('error', reject);
  });
}

/** One admin request over the unix socket; resolves with the parsed response line. */
export function admin(socket: string, req: unknown, raw?: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let buf = '';
    c.setEncoding('utf8');
    c.once('connect', () => c.write(raw ?? JSON.stringify(req) + '\n'));
    c.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl !== -1) {
        c.destroy();
        resolve(JSON.parse(buf.slice(0, nl)));
      }
    });
    c.once('error', reject);
    c.once('close', () => reject(new Error(`admin connection closed; got ${JSON.stringify(buf)}`)));
    c.setTimeout(10_000, () => c.destroy(new Error('admin timeout')));
  });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI: `lb ...args`. */
export function cli(args: string[], env: Record<string, string> = {}, timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [LB, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A plain HTTP request through node:http (a new connection unless `agent` is given). */
export function get(port: number, pathname = '/', opts: { headers?: Record<string, string>; agent?: http.Agent | false; method?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: pathname, method: opts.method ?? 'GET', headers: opts.headers, agent: opts.agent ?? false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    // A bound for tests whose daemon stopped answering: no test request legitimately takes a minute.
    req.setTimeout(60_000, () => req.destroy(new Error('no response in 60 s')));
    req.end(opts.body);
  });
}

/** Backends as a TOML inline array. */
export function backends(list: Array<{ name?: string; port: number; weight?: number }>): string {
  return `[${list
    .map((b) => `{ ${b.name ? `name = "${b.name}", ` : ''}address = "127.0.0.1:${b.port}"${b.weight !== undefined ? `, weight = ${b.weight}` : ''} }`)
    .join(', ')}]`;
}

export interface LoadResult {
  ok: number;
  failed: number;
  errors: string[];
}

/**
 * Closed-loop load: `concurrency` clients each send requests back to back until `stop()` is called, or
 * by themselves after `limitMs` (default 60 s) so that a test that fails before its `stop()` ends anyway.
 * `keepAlive` clients reuse one connection each; the others open a new connection per request.
 * `errors` keeps the first 100 messages.
 */
export function startLoad(port: number, opts: { concurrency: number; keepAlive: boolean; path?: string; limitMs?: number }): { stop: () => Promise<LoadResult>; result: LoadResult } {
  const result: LoadResult = { ok: 0, failed: 0, errors: [] };
  let running = true;
  const limit = setTimeout(() => (running = false), opts.limitMs ?? 60_000);
  limit.unref();
  const clients = Array.from({ length: opts.concurrency }, async () => {
    const agent = opts.keepAlive ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : false;
    while (running) {
      try {
        const r = await get(port, opts.path ?? '/', { agent });
        if (r.status === 200) result.ok++;
        else {
          result.failed++;
          if (result.errors.length < 100) result.errors.push(`status ${r.status}: ${r.body.slice(0, 100)}`);
        }
      } catch (err) {
        result.failed++;
        if (result.errors.length < 100) result.errors.push((err as Error).message);
      }
    }
    if (agent) agent.destroy();
  });
  return {
    result,
    stop: async () => {
      running = false;
      clearTimeout(limit);
      await Promise.all(clients);
      return result;
    },
  };
}

/**
 * A config with one http listener `web` on 127.0.0.1:`port` whose default pool is `app`, the admin socket
 * as `{{socket}}` (startLb fills it in) and log level warn; `tables` follows the listener (routes, pools).
 */
/** `log`: the [log] table's keys. */
export function httpConfig(port: number, tables: string, workers = 1, log = 'level = "warn"'): string {
  return `
[daemon]
workers = ${workers}
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
${log}
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
${tables}
`;
}

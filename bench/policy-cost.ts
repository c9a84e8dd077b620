// `npm run bench:policy`: what rate limiting and request IDs cost a worker, as CPU time per request.
//
// Four lb daemons (1 worker each) in front of one upstream: plain (neither feature), a local rate limit
// that never refuses (rate 100,000,000/s per client address: every request goes through the lease, none
// gets 429), request_id = {} with trace = "create" (an ID and a traceparent made per request), and both.
// For each round and each daemon in turn: 5,000 warm-up requests, then REQUESTS requests (autocannon, 32
// connections, keep-alive), with the worker's CPU time (utime + stime from /proc/PID/stat) read before
// and after. CPU time per request, unlike requests per second, holds its meaning on a machine whose
// cores are shared with other work. The primary's CPU (the token leases it answers) is reported apart.
// Writes bench/results/policy/results.json and README.md.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const AUTOCANNON = path.join(ROOT, 'node_modules', '.bin', 'autocannon');
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const REQUESTS = Number(process.env.REQUESTS ?? 40_000);
const TICK = 100; // USER_HZ: /proc/PID/stat counts clock ticks of 10 ms

const VARIANTS = [
  { name: 'plain', extra: '' },
  { name: 'rate-limit', extra: 'rate_limit = "wide"\n' },
  { name: 'request-id+trace', extra: 'request_id = {}\ntrace = { traceparent = "create" }\n' },
  { name: 'both', extra: 'rate_limit = "wide"\nrequest_id = {}\ntrace = { traceparent = "create" }\n' },
] as const;

function cpuMs(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / TICK;
}

function children(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function load(port: number, amount: number): void {
  execFileSync(AUTOCANNON, ['-c', '32', '-a', String(amount), '-j', `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

async function main(): Promise<void> {
  // The upstream runs in a child process of its own so that it does not share this process's event loop.
  const upPort = await freePort();
  const up = spawn(process.execPath, ['-e', `require('http').createServer((q,s)=>s.end('ok')).listen(${upPort},'127.0.0.1')`], { stdio: 'ignore' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lb-policy-'));
  const daemons: Array<{ name: string; port: number; proc: ChildProcess; worker: number }> = [];
  try {
    await waitPort(upPort);
    for (const v of VARIANTS) {
      const port = await freePort();
      const file = path.join(dir, `${v.name}.toml`);
      fs.writeFileSync(
        file,
        `[daemon]\nworkers = 1\nstate_file = "${dir}/${v.name}.json"\n[admin]\nsocket = "${dir}/${v.name}.sock"\n` +
          `[rate_limits.wide]\nrate = 100000000\nkey = "client-ip"\n` +
          `[listeners.web]\nprotocol = "http"\nlisten = "127.0.0.1:${port}"\npool = "app"\n${v.extra}` +
          `[pools.app]\nbackends = [ { address = "127.0.0.1:${upPort}" } ]\n`,
      );
      const proc = spawn(process.execPath, [path.join(ROOT, 'bin', 'lb.js'), 'run', '-c', file], { stdio: ['ignore', 'ignore', 'inherit'] });
      await waitPort(port);
      let worker = 0;
      for (let i = 0; i < 100 && !worker; i++) {
        worker = children(proc.pid!)[0] ?? 0;
        if (!worker) await new Promise((r) => setTimeout(r, 50));
      }
      daemons.push({ name: v.name, port, proc, worker });
    }
    const rows: Record<string, { worker: number[]; primary: number[] }> = {};
    for (let round = 1; round <= ROUNDS; round++) {
      for (const d of daemons) {
        load(d.port, 5000);
        const w0 = cpuMs(d.worker);
        const p0 = cpuMs(d.proc.pid!);
        load(d.port, REQUESTS);
        const w = ((cpuMs(d.worker) - w0) * 1000) / REQUESTS;
        const p = ((cpuMs(d.proc.pid!) - p0) * 1000) / REQUESTS;
        (rows[d.name] ??= { worker: [], primary: [] }).worker.push(w);
        rows[d.name]!.primary.push(p);
        console.log(`round=${round} ${d.name} worker_us_per_request=${w.toFixed(2)} primary_us_per_request=${p.toFixed(2)}`);
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const base = median(rows.plain!.worker);
    const summary = VARIANTS.map((v) => {
      const r = rows[v.name]!;
      return { variant: v.name, workerUsPerRequest: median(r.worker), primaryUsPerRequest: median(r.primary), ratioToPlain: median(r.worker) / base, rounds: r.worker };
    });
    const out = path.join(ROOT, 'bench', 'results', 'policy');
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, 'results.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadavg: os.loadavg(), requests: REQUESTS, rounds: ROUNDS, summary }, null, 2) + '\n');
    const table = summary.map((s) => `| ${s.variant} | ${s.workerUsPerRequest.toFixed(2)} | ${s.ratioToPlain.toFixed(3)} | ${s.primaryUsPerRequest.toFixed(3)} |`).join('\n');
    fs.writeFileSync(
      path.join(out, 'README.md'),
      `# Cost of rate limits and request IDs (\`npm run bench:policy\`)\n\nCPU time of the lb worker per request (median of ${ROUNDS} rounds of ${REQUESTS} requests, 1 worker, ` +
        `autocannon -c 32, keep-alive), and of the primary (token leases). Load average at the end: ${os.loadavg().map((x) => x.toFixed(1)).join(', ')} on ${os.cpus().length} CPUs.\n\n` +
        `| variant | worker µs/request | ratio to plain | primary µs/request |\n|---|---|---|---|\n${table}\n`,
    );
    console.log(table);
  } finally {
    for (const d of daemons) d.proc.kill('SIGTERM');
    up.kill();
    await new Promise((r) => setTimeout(r, 500));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

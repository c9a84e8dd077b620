// HTTP/2 in front, against real clients and beside HAProxy (`bind ... proto h2`) and NGINX (`listen ...
// http2`), each h2c with prior knowledge to an HTTP/1.1 backend that records what it got:
// - h2load (nghttp2) runs a short bounded load through lb with 0 failed requests;
// - the same requests through all three: cookie crumbs, a Host field that disagrees with :authority, an
//   upper-case field name; lb's answers are asserted, the anchors' recorded beside them (test output
//   comments; the differences are written down in the README, "HTTP/2 from clients").

import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import http2 from 'node:http2';
import { spawn, type ChildProcess } from 'node:child_process';
import { connectOnce, freePort, httpConfig, startLb, startUpstream, tmpdir, waitFor, type Upstream } from './helpers/lb.js';
import { findBinary } from './helpers/differential.js';
import { h2request, run } from './helpers/h2.js';
import { RawH2 } from './helpers/h2raw.js';

interface Seen {
  host?: string;
  cookie?: string;
  upper?: string;
}

/** A backend that records the last request's Host, Cookie and X-Upper, and answers 200 "ok". */
async function recorder(): Promise<{ up: Upstream; seen: Seen[] }> {
  const seen: Seen[] = [];
  const up = await startUpstream('rec', (req, res) => {
    seen.push({ host: req.headers.host, cookie: req.headers.cookie, upper: req.headers['x-upper'] as string | undefined });
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  return { up, seen };
}

interface Front {
  name: 'lb' | 'haproxy' | 'nginx';
  port: number;
  seen: Seen[];
  stop(): Promise<void>;
}

async function spawnAnchor(name: 'haproxy' | 'nginx', conf: (dir: string, port: number, be: number) => string): Promise<Front> {
  const { up, seen } = await recorder();
  const port = await freePort();
  const dir = tmpdir(`lb-h2diff-${name}-`);
  const file = path.join(dir, `${name}.conf`);
  fs.writeFileSync(file, conf(dir, port, up.port));
  const args = name === 'haproxy' ? ['-db', '-f', file] : ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', file];
  const proc: ChildProcess = spawn(findBinary(name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`${name} exited: ${out}`);
    await connectOnce(port);
    return true;
  }, 15_000, `${name} to listen`);
  return {
    name,
    port,
    seen,
    async stop() {
      proc.kill('SIGTERM');
      const k = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(k);
      await up.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const haproxy = (): Promise<Front> =>
  spawnAnchor('haproxy', (_dir, port, be) => `global
  maxconn 512
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend fe
  bind 127.0.0.1:${port} proto h2
  default_backend be
backend be
  server s1 127.0.0.1:${be}
`);

const nginx = (): Promise<Front> =>
  spawnAnchor('nginx', (dir, port, be) => `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream be { server 127.0.0.1:${be}; keepalive 16; }
  server {
    listen 127.0.0.1:${port} http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }
  }
}
`);

async function lbFront(): Promise<Front> {
  const { up, seen } = await recorder();
  const port = await freePort();
  const lb = await startLb(httpConfig(port, `http2 = true\n[pools.app]\nbackends = [{ address = "127.0.0.1:${up.port}" }]`), [port]);
  return {
    name: 'lb',
    port,
    seen,
    async stop() {
      await lb.stop();
      await up.close();
    },
  };
}

t.test('h2load through lb (h2c): a bounded run with 0 failed', async (t) => {
  const { up } = await recorder();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(httpConfig(port, `http2 = true\n[pools.app]\nbackends = [{ address = "127.0.0.1:${up.port}" }]`), [port]);
  t.teardown(() => lb.stop());
  const r = await run('h2load', ['-n', '3000', '-c', '4', '-m', '10', '-t', '1', `http://127.0.0.1:${port}/load`]);
  t.equal(r.code, 0, `h2load exits 0 ${r.err}`);
  const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(r.out);
  t.ok(m, `h2load reports its requests: ${r.out.slice(0, 400)}`);
  t.equal(Number(m?.[4]), 3000, '3000 succeeded');
  t.equal(Number(m?.[5]), 0, '0 failed');
  t.match(r.out, /status codes: 3000 2xx/, 'all 2xx');
});

t.test('the same HTTP/2 requests through lb, HAProxy and NGINX', async (t) => {
  const fronts = [await lbFront(), await haproxy(), await nginx()];
  t.teardown(async () => {
    for (const f of fronts) await f.stop();
  });
  const results: Record<string, Record<string, string>> = {};
  for (const f of fronts) {
    const r: Record<string, string> = {};
    results[f.name] = r;
    const s = http2.connect(`http://127.0.0.1:${f.port}`);
    s.on('error', () => {});
    // Cookie crumbs (RFC 9113 §8.2.3): one Cookie field to an HTTP/1.1 backend.
    const before = f.seen.length;
    const c = await h2request(s, { ':path': '/c', ':authority': 'site.test', cookie: ['a=1', 'b=2'] });
    r.cookie = `${c.status} backend cookie=${JSON.stringify(f.seen[before]?.cookie)} host=${JSON.stringify(f.seen[before]?.host)}`;
    // Host that disagrees with :authority (RFC 9113 §8.3.1).
    const n = f.seen.length;
    const h = await h2request(s, { ':path': '/h', ':authority': 'site.test', host: 'other.test' }).catch((e: Error) => ({ status: -1, body: e.message }));
    r.conflictingHost = `${h.status}${f.seen.length > n ? ` backend host=${JSON.stringify(f.seen[n]?.host)}` : ' (not forwarded)'}`;
    s.close();
    // An upper-case field name (RFC 9113 §8.2.1: malformed), and a well-formed stream after it.
    const raw = await RawH2.connect(f.port);
    const base: Array<[string, string]> = [[':method', 'GET'], [':scheme', 'http'], [':path', '/u'], [':authority', 'site.test']];
    const m = f.seen.length;
    raw.headers(1, [...base, ['X-Upper', '1']]);
    raw.headers(3, base);
    await raw.responseOn(3);
    const rst = raw.frames.find((x) => x.type === 3 && x.stream === 1);
    const answered = raw.frames.some((x) => x.type === 1 && x.stream === 1);
    r.upperCase = rst ? `RST_STREAM ${rst.payload.readUInt32BE(0)}` : answered ? `answered; backend X-Upper=${JSON.stringify(f.seen.slice(m).find((x) => x.upper !== undefined)?.upper)}` : 'nothing';
    raw.close();
    t.comment(`${f.name}: ${JSON.stringify(r)}`);
  }
  const lb = results.lb!;
  t.equal(lb.cookie, '200 backend cookie="a=1; b=2" host="site.test"', 'lb: crumbs joined, :authority as Host');
  t.equal(lb.conflictingHost, '400 (not forwarded)', 'lb: Host against :authority is refused');
  t.equal(lb.upperCase, 'RST_STREAM 1', 'lb: an upper-case name resets the stream (PROTOCOL_ERROR)');
  // The anchors answered the well-formed requests (they are only compared, not judged).
  t.match(results.haproxy!.cookie, /^200 /, 'haproxy answered');
  t.match(results.nginx!.cookie, /^200 /, 'nginx answered');
});

// Differential HTTP/1.1 harness: the same raw client bytes go through lb, HAProxy and NGINX, each in front of
// its own recording backend, and the harness records what each backend parsed (and every byte it received
// per connection) and what each client got back (raw, parsed into responses) and whether the client
// connection was closed. Cases run one at a time per proxy; the three proxies run side by side.
//
// Everything is real: `lb run` spawned by startLb, /usr/sbin/haproxy -db, /usr/sbin/nginx with master_process
// off, net servers and sockets on 127.0.0.1. Every wait has a deadline; a proxy that keeps a connection open
// costs a case its deadline, never a hang.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { freePort, startLb, tmpdir, waitFor, connectOnce, type Lb } from './lb.js';
import { lbConfig } from './hardening.js';

// ------------------------------------------------------------------------------------------------------
// Cases

/** What the client does, in order. `{id}` in sent bytes is replaced by the case id. */
export type Step =
  | { send: string | Buffer }
  /** Wait until the client has received `n` final (non-1xx) responses, or the connection closed. */
  | { responses: number }
  /** Wait until an interim response with this status arrived (or a final one, or close). */
  | { interim: number }
  /** Wait until the backend has seen a connection close during this case (the stale keep-alive cases). */
  | { backendClosed: number }
  /** Wait until the client has received a 101 and then `bytes` more bytes of tunnel. */
  | { tunnel: number };

/** How the backend answers each request it parses during a case. */
export type Reply =
  /** 200 with a JSON echo of what was parsed (the default). */
  | { kind: 'echo'; delayMs?: number }
  /** `status` with a short body; `close` adds Connection: close and closes after writing. */
  | { kind: 'status'; status: number; close?: boolean; headers?: string }
  /** 101 Switching Protocols, then the connection echoes bytes back (prefixed "echo:"). */
  | { kind: 'switch' }
  /** Raw interim heads (e.g. "103 Early Hints\r\nLink: </a>; rel=preload") before the 200 echo. */
  | { kind: 'interim'; heads: string[] }
  /** A chunked 200 carrying the trailer `X-Resp-Trailer: yes`. */
  | { kind: 'trailers' }
  /** A 200 with Transfer-Encoding: gzip, chunked (GZIP_BODY gzipped, in two chunks). */
  | { kind: 'gzip-chunked' }
  /** Answers `status` with Connection: close as soon as the head is parsed, then either half-closes and drains ('linger') or destroys the socket ('close'). */
  | { kind: 'early'; status: number; mode: 'linger' | 'close' }
  /** The echo, then the backend closes the (idle, kept-alive) connection: FIN or RST, `afterMs` later. */
  | { kind: 'close-idle'; mode: 'fin' | 'rst'; afterMs: number }
  /** Exactly these bytes as the response. */
  | { kind: 'raw'; bytes: string };

export const GZIP_BODY = 'gzip payload '.repeat(20);

export interface Case {
  id: string;
  group: string;
  title: string;
  steps: Step[];
  /** Backend behaviour; default echo. A function chooses per request (index within the case). */
  reply?: Reply | ((index: number) => Reply);
  /** Final-response indexes that answer HEAD requests (no body). */
  head?: number[];
  /** lb's expected outcome. */
  expect: Expect;
  /** Why lb's expected outcome is right where it differs from both HAProxy and NGINX (RFC section). */
  why?: string;
  /** Seconds of deadline for each wait (default 1). */
  deadline?: number;
}

export interface Expect {
  /** Final statuses the client receives, in order; several arrays = any of them. */
  final?: number[] | number[][];
  /** Interim (1xx other than 101) statuses, in order. */
  interim?: number[];
  /** The client connection is closed at the end (true) or still open (false). */
  closed?: boolean;
  /** What the backend parsed: 'METHOD /target' with the `/{id}` prefix removed, in order; or a count. */
  forwarded?: string[] | number;
  /** Extra checks; each returns a failure message or undefined. */
  checks?: Array<(o: Outcome) => string | undefined>;
}

// ------------------------------------------------------------------------------------------------------
// Outcomes

/** Header fields, body and trailer fields of a message, either direction. */
interface Fields {
  /** [name lowercased, value] in order. */
  headers: Array<[string, string]>;
  body: Buffer;
  trailers: Array<[string, string]>;
}

export interface Message extends Fields {
  status: number;
  /** Transfer-Encoding was chunked (last coding). */
  chunked: boolean;
}

export interface BackendRequest extends Fields {
  method: string;
  target: string;
  version: string;
  /** Index of the backend connection (within the case) that carried it. */
  conn: number;
}

export interface Outcome {
  proxy: string;
  caseId: string;
  /** Client side: every response, interim ones included, in order. */
  responses: Message[];
  /** Bytes after a 101, latin1. */
  tunnel: string;
  clientRaw: string;
  /** The client bytes could not be parsed as responses (garbage after a response, say). */
  clientError?: string;
  closed: boolean;
  backend: {
    /** Bytes each backend connection received during the case, latin1. */
    conns: string[];
    requests: BackendRequest[];
    /** Most requests the backend held unanswered at once. */
    maxOutstanding: number;
    /** Backend connections that closed during the case. */
    closes: number;
  };
}

export const header = (m: { headers: Array<[string, string]> }, name: string): string | undefined => {
  const all = m.headers.filter(([n]) => n === name).map(([, v]) => v);
  return all.length ? all.join(', ') : undefined;
};
export const finals = (o: Outcome): Message[] => o.responses.filter((r) => r.status >= 200 || r.status === 101);
export const interims = (o: Outcome): number[] => o.responses.filter((r) => r.status < 200 && r.status !== 101).map((r) => r.status);
/** 'METHOD /target' with the case prefix removed. */
export const forwardedList = (o: Outcome): string[] => o.backend.requests.map((r) => `${r.method} ${stripId(r.target, o.caseId)}`);
export const stripId = (s: string, id: string): string => s.replaceAll(`/${id}`, '') || '/';

/** One line for the comparison table: statuses, close, what the backend parsed. */
export function summary(o: Outcome): string {
  const st = o.responses.map((r) => String(r.status)).join(',') || 'none';
  const be = forwardedList(o);
  return `${st}${o.closed ? ' close' : ''}${o.clientError ? ' GARBAGE' : ''} | be:${be.length ? be.join(';') : '-'}`;
}

/** Every failed expectation of `c` for outcome `o` (empty: lb behaved as expected). */
export function failures(c: Case, o: Outcome): string[] {
  const e = c.expect;
  const out: string[] = [];
  const f = finals(o).map((r) => r.status);
  if (e.final) {
    const alts = Array.isArray(e.final[0]) ? (e.final as number[][]) : [e.final as number[]];
    if (!alts.some((a) => a.length === f.length && a.every((s, i) => s === f[i]))) out.push(`final statuses ${JSON.stringify(f)}, expected ${alts.map((a) => JSON.stringify(a)).join(' or ')}`);
  }
  if (e.interim && JSON.stringify(interims(o)) !== JSON.stringify(e.interim)) out.push(`interim ${JSON.stringify(interims(o))}, expected ${JSON.stringify(e.interim)}`);
  if (e.closed !== undefined && o.closed !== e.closed) out.push(e.closed ? 'client connection left open' : 'client connection closed');
  if (o.clientError) out.push(`client stream: ${o.clientError}`);
  if (e.forwarded !== undefined) {
    const got = forwardedList(o);
    if (typeof e.forwarded === 'number') {
      if (got.length !== e.forwarded) out.push(`backend parsed ${got.length} requests ${JSON.stringify(got)}, expected ${e.forwarded}`);
    } else if (JSON.stringify(got) !== JSON.stringify(e.forwarded)) out.push(`backend parsed ${JSON.stringify(got)}, expected ${JSON.stringify(e.forwarded)}`);
  }
  for (const chk of e.checks ?? []) {
    let m: string | undefined;
    try {
      m = chk(o);
    } catch (err) {
      m = `check threw: ${(err as Error).message}`;
    }
    if (m) out.push(m);
  }
  return out;
}

// ------------------------------------------------------------------------------------------------------
// Message parsing (both directions). Strict enough for the tests: CRLF lines, CL or chunked bodies.

type Head = { line: string; headers: Array<[string, string]>; end: number };

function parseHead(buf: Buffer, at: number): Head | undefined | 'bad' {
  const end = buf.indexOf('\r\n\r\n', at);
  if (end === -1) return buf.length - at > 65536 ? 'bad' : undefined;
  const lines = buf.subarray(at, end).toString('latin1').split('\r\n');
  const headers: Array<[string, string]> = [];
  for (const l of lines.slice(1)) {
    const c = l.indexOf(':');
    if (c <= 0) return 'bad';
    headers.push([l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()]);
  }
  return { line: lines[0] ?? '', headers, end: end + 4 };
}

/** Reads a chunked body from `at`; undefined when incomplete. */
function parseChunked(buf: Buffer, at: number): { body: Buffer; trailers: Array<[string, string]>; end: number } | undefined | 'bad' {
  const parts: Buffer[] = [];
  for (;;) {
    const nl = buf.indexOf('\r\n', at);
    if (nl === -1) return undefined;
    const sizeText = buf.subarray(at, nl).toString('latin1').split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) return 'bad';
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      // trailers up to an empty line
      const trailers: Array<[string, string]> = [];
      let p = nl + 2;
      for (;;) {
        const e = buf.indexOf('\r\n', p);
        if (e === -1) return undefined;
        if (e === p) return { body: Buffer.concat(parts), trailers, end: e + 2 };
        const l = buf.subarray(p, e).toString('latin1');
        const c = l.indexOf(':');
        if (c <= 0) return 'bad';
        trailers.push([l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()]);
        p = e + 2;
      }
    }
    if (buf.length < nl + 2 + size + 2) return undefined;
    parts.push(buf.subarray(nl + 2, nl + 2 + size));
    at = nl + 2 + size + 2;
  }
}

const isChunked = (headers: Array<[string, string]>): boolean => {
  const te = header({ headers }, 'transfer-encoding');
  if (!te) return false;
  const codings = te.toLowerCase().split(',').map((s) => s.trim());
  return codings[codings.length - 1] === 'chunked';
};

/** Parses a client-received byte stream into responses. `headIdx`: final responses to HEAD requests. */
export function parseResponses(buf: Buffer, closed: boolean, headIdx: number[] = []): { responses: Message[]; tunnel: string; error?: string; complete: number } {
  const responses: Message[] = [];
  let at = 0;
  let finalsSeen = 0;
  while (at < buf.length) {
    const h = parseHead(buf, at);
    if (h === 'bad') return { responses, tunnel: '', error: `unparseable at ${at}: ${JSON.stringify(buf.subarray(at, at + 60).toString('latin1'))}`, complete: finalsSeen };
    if (!h) {
      if (closed) return { responses, tunnel: '', error: `truncated head: ${JSON.stringify(buf.subarray(at, at + 60).toString('latin1'))}`, complete: finalsSeen };
      break;
    }
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(h.line);
    if (!m) return { responses, tunnel: '', error: `not a status line: ${JSON.stringify(h.line.slice(0, 60))}`, complete: finalsSeen };
    const status = Number(m[1]);
    const msg: Message = { status, headers: h.headers, body: Buffer.alloc(0), trailers: [], chunked: false };
    if (status === 101) {
      responses.push(msg);
      return { responses, tunnel: buf.subarray(h.end).toString('latin1'), complete: finalsSeen + 1 };
    }
    if (status < 200) {
      responses.push(msg);
      at = h.end;
      continue;
    }
    const isHead = headIdx.includes(finalsSeen);
    if (isHead || status === 204 || status === 304) {
      at = h.end;
    } else if (isChunked(h.headers)) {
      const c = parseChunked(buf, h.end);
      if (c === 'bad') return { responses, tunnel: '', error: 'bad chunked response body', complete: finalsSeen };
      if (!c) {
        if (closed) return { responses, tunnel: '', error: 'truncated chunked response', complete: finalsSeen };
        break;
      }
      msg.body = c.body;
      msg.trailers = c.trailers;
      msg.chunked = true;
      at = c.end;
    } else if (header(msg, 'content-length') !== undefined) {
      const n = Number(header(msg, 'content-length'));
      if (buf.length < h.end + n) {
        if (closed) return { responses, tunnel: '', error: 'truncated response body', complete: finalsSeen };
        break;
      }
      msg.body = buf.subarray(h.end, h.end + n);
      at = h.end + n;
    } else {
      if (!closed) break; // close-delimited, not over yet
      msg.body = buf.subarray(h.end);
      at = buf.length;
    }
    responses.push(msg);
    finalsSeen++;
  }
  return { responses, tunnel: '', complete: finalsSeen };
}

// ------------------------------------------------------------------------------------------------------
// The recording backend

interface CaseState {
  id: string;
  reply: Case['reply'];
  conns: Buffer[][];
  requests: BackendRequest[];
  outstanding: number;
  maxOutstanding: number;
  closes: number;
  index: number;
}

export interface Backend {
  port: number;
  begin(c: Case): void;
  end(): Outcome['backend'];
  /** Backend connections closed so far in the current case. */
  peekCloses(): number;
  /** Time of the last byte received. */
  lastByte(): number;
  close(): Promise<void>;
}

const echoBody = (r: BackendRequest, n: number): string =>
  JSON.stringify({ n, m: r.method, t: r.target, host: header(r, 'host') ?? null, len: r.body.length, xff: header(r, 'x-forwarded-for') ?? null });

export async function startBackend(): Promise<Backend> {
  let cur: CaseState = { id: '', reply: undefined, conns: [], requests: [], outstanding: 0, maxOutstanding: 0, closes: 0, index: 0 };
  let last = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => s.destroy());
    // A connection belongs to the case during which it opened, for its bytes; a kept-alive one is re-filed
    // under each later case when it receives data.
    let state = cur;
    let log: Buffer[] = [];
    state.conns.push(log);
    let connIndex = state.conns.length - 1;
    s.once('close', () => {
      sockets.delete(s);
      cur.closes++;
    });
    let buf: Buffer = Buffer.alloc(0);
    let mode: 'http' | 'tunnel' | 'drain' = 'http';
    let continued = false;
    let earlyDone = false;
    s.on('data', (d: Buffer) => {
      last = Date.now();
      if (state !== cur) {
        state = cur;
        log = [];
        state.conns.push(log);
        connIndex = state.conns.length - 1;
      }
      log.push(d);
      if (mode === 'drain') return;
      if (mode === 'tunnel') {
        s.write(`echo:${d.toString('latin1')}`);
        return;
      }
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const h = parseHead(buf, 0);
        if (h === 'bad') {
          mode = 'drain';
          s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        if (!h) return;
        const [method = '', target = '', version = ''] = h.line.split(' ');
        const req: BackendRequest = { method, target, version, headers: h.headers, body: Buffer.alloc(0), trailers: [], conn: connIndex };
        const index = state.index;
        const replyOf = (): Reply => (typeof state.reply === 'function' ? state.reply(index) : state.reply) ?? { kind: 'echo' };
        const reply = replyOf();
        if (reply.kind === 'early') {
          if (earlyDone) return;
          earlyDone = true;
          state.index++;
          state.requests.push(req);
          s.write(`HTTP/1.1 ${reply.status} Early\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly`);
          if (reply.mode === 'linger') {
            mode = 'drain';
            s.end();
            setTimeout(() => s.destroy(), 3000).unref();
          } else s.destroy();
          return;
        }
        let end = h.end;
        if (isChunked(h.headers)) {
          const c = parseChunked(buf, h.end);
          if (c === 'bad') {
            mode = 'drain';
            s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
            return;
          }
          if (!c) return maybeContinue(h);
          req.body = Buffer.from(c.body);
          req.trailers = c.trailers;
          end = c.end;
        } else if (header(req, 'content-length') !== undefined) {
          const n = Number(header(req, 'content-length'));
          if (!Number.isSafeInteger(n) || n < 0) {
            mode = 'drain';
            s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
            return;
          }
          if (buf.length < h.end + n) return maybeContinue(h);
          req.body = Buffer.from(buf.subarray(h.end, h.end + n));
          end = h.end + n;
        }
        buf = buf.subarray(end);
        continued = false;
        state.index++;
        state.requests.push(req);
        state.outstanding++;
        state.maxOutstanding = Math.max(state.maxOutstanding, state.outstanding);
        const st = state;
        const done = (): void => {
          st.outstanding--;
        };
        const connClose = /close/i.test(header(req, 'connection') ?? '') || (version === 'HTTP/1.0' && !/keep-alive/i.test(header(req, 'connection') ?? ''));
        const echo = (extra = ''): string => {
          const body = echoBody(req, index);
          return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}${connClose ? 'Connection: close\r\n' : ''}\r\n${method === 'HEAD' ? '' : body}`;
        };
        const finish = (bytes: string): void => {
          done();
          if (!s.destroyed) s.write(bytes);
          if (connClose) s.end();
        };
        switch (reply.kind) {
          case 'echo':
            if (reply.delayMs) setTimeout(() => finish(echo()), reply.delayMs);
            else finish(echo());
            break;
          case 'status': {
            const body = `status ${reply.status}`;
            done();
            s.write(`HTTP/1.1 ${reply.status} Status\r\nContent-Length: ${body.length}\r\n${reply.headers ?? ''}${reply.close || connClose ? 'Connection: close\r\n' : ''}\r\n${body}`);
            if (reply.close || connClose) s.end();
            break;
          }
          case 'switch':
            done();
            s.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${header(req, 'upgrade') ?? 'websocket'}\r\n${header(req, 'sec-websocket-key') ? 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n' : ''}\r\n`);
            mode = 'tunnel';
            if (buf.length) {
              s.write(`echo:${buf.toString('latin1')}`);
              buf = Buffer.alloc(0);
            }
            return;
          case 'interim':
            for (const h1 of reply.heads) s.write(`HTTP/1.1 ${h1}\r\n\r\n`);
            finish(echo());
            break;
          case 'trailers': {
            const body = echoBody(req, index);
            done();
            s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Resp-Trailer\r\n${connClose ? 'Connection: close\r\n' : ''}\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\nX-Resp-Trailer: yes\r\n\r\n`);
            if (connClose) s.end();
            break;
          }
          case 'gzip-chunked': {
            const gz = zlib.gzipSync(GZIP_BODY);
            const a = gz.subarray(0, 10);
            const b = gz.subarray(10);
            done();
            s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Type: text/plain\r\n${connClose ? 'Connection: close\r\n' : ''}\r\n`);
            s.write(Buffer.concat([Buffer.from(`${a.length.toString(16)}\r\n`), a, Buffer.from(`\r\n${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n0\r\n\r\n')]));
            if (connClose) s.end();
            break;
          }
          case 'close-idle':
            finish(echo());
            setTimeout(() => (reply.mode === 'rst' ? s.resetAndDestroy() : s.end()), reply.afterMs);
            break;
          case 'raw':
            done();
            s.write(reply.bytes);
            break;
        }
        if (mode !== 'http' || s.destroyed) return;
      }
      function maybeContinue(h: Head): void {
        if (!continued && /100-continue/i.test(header(h, 'expect') ?? '')) {
          continued = true;
          s.write('HTTP/1.1 100 Continue\r\n\r\n');
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    begin(c) {
      cur = { id: c.id, reply: c.reply, conns: [], requests: [], outstanding: 0, maxOutstanding: 0, closes: 0, index: 0 };
    },
    end() {
      const s = cur;
      cur = { id: '', reply: undefined, conns: [], requests: [], outstanding: 0, maxOutstanding: 0, closes: 0, index: 0 };
      return { conns: s.conns.map((c) => Buffer.concat(c).toString('latin1')).filter((c) => c.length > 0), requests: s.requests, maxOutstanding: s.maxOutstanding, closes: s.closes };
    },
    lastByte: () => last,
    peekCloses: () => cur.closes,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

// ------------------------------------------------------------------------------------------------------
// The proxies

export interface Proxy {
  name: 'lb' | 'haproxy' | 'nginx';
  port: number;
  backend: Backend;
  stop(): Promise<void>;
  lb?: Lb;
}

/** The binary, from $PATH or Debian's /usr/sbin; a clear error naming the package when it is missing. */
export function findBinary(name: 'haproxy' | 'nginx'): string {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  const pkg = name === 'nginx' ? 'nginx-light' : 'haproxy';
  throw new Error(`${name} is not installed (the differential tests compare lb with it): apt-get install ${pkg}`);
}

function spawnLogged(cmd: string, args: string[]): { proc: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  return { proc, output: () => out, exited };
}

async function waitListening(port: number, what: string, exited: Promise<number | null>, output: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  await waitFor(
    async () => {
      if (gone) throw new Error(`${what} exited: ${output()}`);
      await connectOnce(port);
      return true;
    },
    15_000,
    `${what} to listen on ${port}`,
    30,
  );
}

async function stopProc(proc: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(t);
}

export async function startLbProxy(extra: { listener?: string; pool?: string; config?: string } = {}): Promise<Proxy> {
  const backend = await startBackend();
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [backend.port], listener: extra.listener, pool: extra.pool ?? 'retries = 2\nresponse_timeout = "5s"', extra: extra.config }), [port]);
  return {
    name: 'lb',
    port,
    backend,
    lb,
    async stop() {
      await lb.stop();
      await backend.close();
    },
  };
}

/** Starts an anchor proxy from a config rendered into a fresh temp dir, in front of a new recording backend. */
async function startAnchor(
  name: 'haproxy' | 'nginx',
  render: (dir: string, port: number, backendPort: number) => string,
  args: (dir: string, conf: string) => string[],
): Promise<Proxy> {
  const bin = findBinary(name);
  const backend = await startBackend();
  const port = await freePort();
  const dir = tmpdir(`lb-diff-${name}-`);
  const conf = path.join(dir, `${name}.conf`);
  fs.writeFileSync(conf, render(dir, port, backend.port));
  const p = spawnLogged(bin, args(dir, conf));
  const errorLog = path.join(dir, 'error.log');
  await waitListening(port, name, p.exited, () => p.output() + (fs.existsSync(errorLog) ? fs.readFileSync(errorLog, 'utf8') : ''));
  return {
    name,
    port,
    backend,
    async stop() {
      await stopProc(p.proc, p.exited);
      await backend.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * HAProxy in HTTP mode with keep-alive on both sides, defaults otherwise. `h2`: the frontend speaks HTTP/2
 * with prior knowledge (`proto h2`); the backend stays HTTP/1.1.
 */
export function startHaproxy(opts: { h2?: boolean } = {}): Promise<Proxy> {
  return startAnchor(
    'haproxy',
    (_dir, port, backendPort) => `global
  maxconn 512
defaults
  mode http
  option http-keep-alive
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout http-request 5s
  timeout tunnel 10s
frontend fe
  bind 127.0.0.1:${port}${opts.h2 ? ' proto h2' : ''}
  default_backend be
backend be
  server s1 127.0.0.1:${backendPort}
`,
    (_dir, conf) => ['-db', '-f', conf],
  );
}

/**
 * NGINX as the usual reverse proxy: HTTP/1.1 upstream keep-alive, websocket-capable Connection mapping.
 * `h2`: the server speaks HTTP/2 with prior knowledge (`listen ... http2`).
 */
export function startNginx(opts: { h2?: boolean } = {}): Promise<Proxy> {
  return startAnchor(
    'nginx',
    (dir, port, backendPort) => `daemon off;
master_process off;
worker_processes 1;
user root;
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
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream be {
    server 127.0.0.1:${backendPort};
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port}${opts.h2 ? ' http2' : ''};
    location / {
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`,
    (dir, conf) => ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', conf],
  );
}

// ------------------------------------------------------------------------------------------------------
// Running a case

const sub = (s: string | Buffer, id: string): Buffer => (typeof s === 'string' ? Buffer.from(s.replaceAll('{id}', id), 'latin1') : s);

/** Runs one case through one proxy; never rejects. */
export async function runCase(p: Proxy, c: Case): Promise<Outcome> {
  p.backend.begin(c);
  const chunks: Buffer[] = [];
  let closed = false;
  const s = net.connect(p.port, '127.0.0.1');
  let sockError: string | undefined;
  s.on('error', (err) => (sockError ??= err.message));
  s.on('data', (d: Buffer) => chunks.push(d));
  const closedP = new Promise<void>((r) => s.once('close', () => ((closed = true), r())));
  await new Promise<void>((r) => {
    s.once('connect', r);
    s.once('close', r);
  });
  const parsed = () => parseResponses(Buffer.concat(chunks), closed, c.head);
  const until = async (cond: () => boolean, ms: number): Promise<void> => {
    const deadline = Date.now() + ms;
    while (!cond() && !closed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  };
  const deadline = (c.deadline ?? 1) * 1000;
  for (const step of c.steps) {
    if ('send' in step) {
      if (!closed) s.write(sub(step.send, c.id));
    } else if ('responses' in step) {
      await until(() => parsed().complete >= step.responses, deadline);
    } else if ('interim' in step) {
      await until(() => parsed().responses.some((r) => r.status === step.interim || r.status >= 200), deadline);
    } else if ('backendClosed' in step) {
      const want = step.backendClosed;
      await until(() => p.backend.peekCloses() >= want, deadline);
    } else if ('tunnel' in step) {
      await until(() => parsed().tunnel.length >= step.tunnel, deadline);
    }
  }
  // Final wait: as many final responses as lb is expected to give (or close), then a quiet moment for stray bytes.
  const want = c.expect.final ? (Array.isArray(c.expect.final[0]) ? Math.max(...(c.expect.final as number[][]).map((a) => a.length)) : (c.expect.final as number[]).length) : 1;
  await until(() => parsed().complete >= want, deadline);
  if (c.expect.closed) await until(() => false, Math.min(deadline, 500));
  let quietSince = Date.now();
  let lastLen = -1;
  await until(() => {
    const len = chunks.reduce((a, b) => a + b.length, 0);
    if (len !== lastLen || p.backend.lastByte() > quietSince) {
      lastLen = len;
      quietSince = Date.now();
    }
    return Date.now() - quietSince >= 30;
  }, deadline);
  const wasClosed = closed;
  s.destroy();
  await closedP;
  const buf = Buffer.concat(chunks);
  const r = parseResponses(buf, wasClosed, c.head);
  return { proxy: p.name, caseId: c.id, responses: r.responses, tunnel: r.tunnel, clientRaw: buf.toString('latin1'), clientError: r.error ?? (sockError && !chunks.length ? `socket: ${sockError}` : undefined), closed: wasClosed, backend: p.backend.end() };
}

// Active health probes: one `http` GET or one `tcp` connect against one backend. Contract: a probe never
// rejects and never throws; it resolves exactly once with a verdict, what was seen and how long it took,
// within `timeoutMs` (connect, request and the whole response included), or when `signal` aborts.
//
// Every probe uses a fresh connection (`agent: false`, `Connection: close`), as HAProxy's `option httpchk`
// and Envoy's HTTP health checker do by default, so a check never rides on, nor keeps, a pooled connection.
//
// A pool with send_proxy expects its backends to require a PROXY header: each check connection starts with
// one that names no client (v2 LOCAL, v1 "PROXY UNKNOWN"), as HAProxy's check-send-proxy does, so the
// backend takes the check for the balancer's own connection.
//
// A pool with `tls`: both check types do the TLS handshake with the pool's settings (CA, name, client
// certificate), a full one each time (no session resumed: the certificate is verified as it is now). A
// certificate that does not verify fails the check with the reason as detail ("tls: UNABLE_TO_VERIFY_LEAF_SIGNATURE").
//
// A pool with protocol h2 / h2c: http checks speak HTTP/2 on a new session each (h2: ALPN over TLS). `grpc`
// checks call grpc.health.v1.Health/Check over HTTP/2 (probeGrpc).

import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import tlsModule from 'node:tls';
import { tlsFailure, type BackendTls } from '../dataplane/backend-tls.js';
import { performance } from 'node:perf_hooks';
import type { Address, HealthCheckConfig } from '../../config/model.js';
import { buildProxyHeader } from '../dataplane/proxy-protocol.js';

export interface ProbeResult {
  ok: boolean;
  /** What was seen: "200", "status 503 not in 200-399", "timeout after 1000ms", "ECONNREFUSED", "connected". */
  detail: string;
  /** Duration in milliseconds, 0.1 ms resolution. */
  ms: number;
  /** True when `signal` ended the probe: the result says nothing about the backend. */
  aborted?: boolean;
}

export interface HttpProbeOptions {
  path: string;
  /** Host header; default the backend address as written ("10.0.0.1:3000", "[::1]:8080"). */
  host?: string;
  /** Inclusive status ranges that pass. */
  expectStatus: Array<[number, number]>;
  timeoutMs: number;
  /** Start the connection with a PROXY header of this version (LOCAL / UNKNOWN). */
  sendProxy?: 'v1' | 'v2';
}

export const USER_AGENT = 'lb-health-check';

/** "200-399", "200,204", "200-299,404". */
export function formatStatusRanges(ranges: Array<[number, number]>): string {
  return ranges.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',');
}

export function statusMatches(status: number, ranges: Array<[number, number]>): boolean {
  return ranges.some(([a, b]) => status >= a && status <= b);
}

function errorDetail(err: unknown, tls?: BackendTls): string {
  const e = err as NodeJS.ErrnoException | undefined;
  const code = e?.code ?? e?.message ?? String(err);
  return tls && e?.code && tlsFailure(e) ? `tls: ${code}` : code;
}

/**
 * Runs `body` with a settle-once callback, a deadline of `timeoutMs` and the abort signal wired in;
 * `cleanup` runs once, whichever way the probe ends.
 */
function guarded(
  timeoutMs: number,
  signal: AbortSignal | undefined,
  body: (settle: (ok: boolean, detail: string) => void, onCleanup: (fn: () => void) => void) => void,
  onTimeout: () => string = () => `timeout after ${timeoutMs}ms`,
): Promise<ProbeResult> {
  const t0 = performance.now();
  return new Promise<ProbeResult>((resolve) => {
    let done = false;
    const cleanups: Array<() => void> = [];
    const finish = (r: Omit<ProbeResult, 'ms'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      for (const fn of cleanups) {
        try {
          fn();
        } catch {
          // cleanup of a finished probe: nothing left to report
        }
      }
      resolve({ ...r, ms: Math.round((performance.now() - t0) * 10) / 10 });
    };
    const onAbort = (): void => finish({ ok: false, detail: 'aborted', aborted: true });
    const timer = setTimeout(() => finish({ ok: false, detail: onTimeout() }), timeoutMs);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      body(
        (ok, detail) => finish({ ok, detail }),
        (fn) => cleanups.push(fn),
      );
    } catch (err) {
      finish({ ok: false, detail: errorDetail(err) });
    }
  });
}

/**
 * GET `path`; passes when the status is in `expectStatus`. The response body is read to its end (within
 * the same deadline) so the server sees an orderly close rather than a reset.
 */
export function probeHttp(address: Address, opts: HttpProbeOptions, signal?: AbortSignal, tls?: BackendTls): Promise<ProbeResult> {
  let status: number | undefined;
  return guarded(
    opts.timeoutMs,
    signal,
    (settle, onCleanup) => {
      const req = (tls ? https : http).request({
        ...(tls ? tls.options(address.host, address.port, false) : {}),
        host: address.host,
        port: address.port,
        method: 'GET',
        path: opts.path,
        // No agent: with createConnection alone, node:http uses that connection (with agent: false it would
        // make an Agent, which ignores createConnection).
        ...(opts.sendProxy
          ? { agent: undefined, createConnection: () => (tls ? tlsConnect(tls, address, opts.sendProxy) : proxiedConnection(address, opts.sendProxy!)) }
          : { agent: false }),
        headers: {
          host: opts.host ?? address.text,
          connection: 'close',
          'user-agent': USER_AGENT,
          accept: '*/*',
        },
      });
      onCleanup(() => req.destroy());
      req.on('error', (err) => settle(false, errorDetail(err, tls)));
      req.on('response', (res) => {
        status = res.statusCode ?? 0;
        const code = status;
        const verdict = (): void =>
          statusMatches(code, opts.expectStatus)
            ? settle(true, `${code}`)
            : settle(false, `status ${code} not in ${formatStatusRanges(opts.expectStatus)}`);
        res.on('end', verdict);
        res.on('error', (err) => settle(false, errorDetail(err)));
        res.on('close', () => {
          if (!res.complete) settle(false, `status ${code}, response cut short`);
        });
        res.resume();
      });
      req.end();
    },
    () => (status === undefined ? `timeout after ${opts.timeoutMs}ms` : `timeout after ${opts.timeoutMs}ms reading the body (status ${status})`),
  );
}

/** A connection that starts with a PROXY header naming no client (written once connected, before anything else). */
function proxiedConnection(address: Address, version: 'v1' | 'v2'): net.Socket {
  const sock = net.connect({ host: address.host, port: address.port });
  sock.write(buildProxyHeader(version));
  return sock;
}

/**
 * TCP connect (with `tls`, and the TLS handshake; with `sendProxy`, a PROXY header naming no client first,
 * in the clear); passes once connected (and the header written), then closes the connection.
 */
export function probeTcp(address: Address, timeoutMs: number, signal?: AbortSignal, tls?: BackendTls, sendProxy?: 'v1' | 'v2'): Promise<ProbeResult> {
  return guarded(timeoutMs, signal, (settle, onCleanup) => {
    const sock = tls ? tlsConnect(tls, address, sendProxy) : net.connect({ host: address.host, port: address.port });
    onCleanup(() => sock.destroy());
    if (tls) sock.on('secureConnect', () => settle(true, 'connected (TLS)'));
    else if (sendProxy) sock.write(buildProxyHeader(sendProxy), (err) => (err ? settle(false, errorDetail(err)) : settle(true, 'connected')));
    else sock.on('connect', () => settle(true, 'connected'));
    sock.on('error', (err) => settle(false, errorDetail(err, tls)));
  });
}

/** A TLS connection with the pool's settings; with `sendProxy`, over a connection that starts with the PROXY header. */
function tlsConnect(tls: BackendTls, address: Address, sendProxy?: 'v1' | 'v2'): net.Socket {
  const raw = sendProxy ? { socket: proxiedConnection(address, sendProxy) } : {};
  return tlsModule.connect({ ...tls.options(address.host, address.port, false), ...raw });
}

/**
 * A new HTTP/2 session for one check: h2c (prior knowledge) or, with `tls`, TLS with ALPN h2 and the
 * pool's settings (a full handshake, as the HTTP/1.1 checks do). A TLS backend that does not select h2
 * fails the check ("ALPN_NOT_H2").
 */
function h2Session(address: Address, tls: BackendTls | undefined, fail: (detail: string) => void): http2.ClientHttp2Session {
  const authority = `${tls ? 'https' : 'http'}://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
  const session = http2.connect(authority, {
    settings: { enablePush: false },
    createConnection: () => {
      if (!tls) return net.connect({ host: address.host, port: address.port });
      const socket = tlsModule.connect({ ...tls.options(address.host, address.port, false), ALPNProtocols: ['h2'] });
      socket.once('secureConnect', () => {
        if (socket.alpnProtocol !== 'h2') fail(`ALPN_NOT_H2 (backend selected ${socket.alpnProtocol || 'none'})`);
      });
      return socket;
    },
  });
  session.on('error', (err) => fail(errorDetail(err, tls)));
  return session;
}

/** probeHttp over HTTP/2 (a pool with protocol h2 or h2c): GET `path`, the status checked, the body read. */
export function probeHttp2(address: Address, opts: HttpProbeOptions, signal?: AbortSignal, tls?: BackendTls): Promise<ProbeResult> {
  let status: number | undefined;
  return guarded(
    opts.timeoutMs,
    signal,
    (settle, onCleanup) => {
      const session = h2Session(address, tls, (d) => settle(false, d));
      onCleanup(() => session.destroy());
      const stream = session.request(
        { ':method': 'GET', ':path': opts.path, ':authority': opts.host ?? address.text, 'user-agent': USER_AGENT, accept: '*/*' },
        { endStream: true },
      );
      stream.on('error', (err) => settle(false, errorDetail(err, tls)));
      stream.on('response', (headers) => {
        const code = (status = Number(headers[':status']));
        stream.on('end', () =>
          statusMatches(code, opts.expectStatus)
            ? settle(true, `${code}`)
            : settle(false, `status ${code} not in ${formatStatusRanges(opts.expectStatus)}`),
        );
        stream.resume();
      });
      stream.on('close', () => settle(false, status === undefined ? 'stream closed without a response' : `status ${status}, response cut short`));
    },
    () => (status === undefined ? `timeout after ${opts.timeoutMs}ms` : `timeout after ${opts.timeoutMs}ms reading the body (status ${status})`),
  );
}

/** grpc.health.v1 HealthCheckResponse.ServingStatus names. */
const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];

/**
 * grpc.health.v1.Health/Check (https://github.com/grpc/grpc/blob/master/doc/health-checking.md) over a new
 * HTTP/2 session: passes when the call ends with grpc-status 0 and the response's status is SERVING (1);
 * NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, a non-OK grpc-status or a transport error fail. The request
 * carries `grpc-timeout` set to the check's timeout. Messages are encoded by hand (two fields).
 */
export function probeGrpc(address: Address, service: string, timeoutMs: number, signal?: AbortSignal, tls?: BackendTls): Promise<ProbeResult> {
  return guarded(timeoutMs, signal, (settle, onCleanup) => {
    const session = h2Session(address, tls, (d) => settle(false, d));
    onCleanup(() => session.destroy());
    const stream = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      ':authority': address.text,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': `${timeoutMs}m`,
      'user-agent': USER_AGENT,
    });
    stream.on('error', (err) => settle(false, errorDetail(err, tls)));
    let httpStatus = 0;
    let headersGrpc: string | undefined;
    const chunks: Buffer[] = [];
    stream.on('response', (h) => {
      httpStatus = Number(h[':status']);
      // Trailers-Only responses carry grpc-status in the headers.
      if (h['grpc-status'] !== undefined) headersGrpc = String(h['grpc-status']);
    });
    stream.on('data', (c: Buffer) => chunks.push(c));
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on('trailers', (tr) => (trailers = tr));
    stream.on('end', () => {
      if (httpStatus !== 200) return settle(false, `HTTP status ${httpStatus}`);
      const grpcStatus = trailers['grpc-status'] !== undefined ? String(trailers['grpc-status']) : headersGrpc;
      if (grpcStatus !== '0') {
        const message = trailers['grpc-message'] ?? '';
        return settle(false, `grpc-status ${grpcStatus ?? 'missing'}${message ? `: ${decodeURIComponent(String(message))}` : ''}`);
      }
      const serving = decodeHealthResponse(Buffer.concat(chunks));
      if (serving === undefined) return settle(false, 'malformed HealthCheckResponse');
      settle(serving === 1, SERVING_STATUS[serving] ?? `status ${serving}`);
    });
    stream.on('close', () => settle(false, 'stream closed without a complete response'));
    stream.end(encodeHealthRequest(service));
  });
}

/** One gRPC message (RFC-less framing of gRPC over HTTP/2: flag byte, 4-byte length) holding HealthCheckRequest{service}. */
export function encodeHealthRequest(service: string): Buffer {
  const name = Buffer.from(service, 'utf8');
  const msg = name.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a]), varint(name.length), name]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(msg.length, 1);
  return Buffer.concat([head, msg]);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** HealthCheckResponse.status from a framed message (field 1, varint; absent = 0 UNKNOWN); undefined if malformed. */
export function decodeHealthResponse(buf: Buffer): number | undefined {
  if (buf.length < 5 || buf[0] !== 0) return undefined;
  const len = buf.readUInt32BE(1);
  if (buf.length < 5 + len) return undefined;
  let i = 5;
  const end = 5 + len;
  let status = 0;
  while (i < end) {
    const tag = buf[i++]!;
    const wire = tag & 7;
    let v = 0;
    let shift = 0;
    if (wire === 0) {
      for (;;) {
        if (i >= end) return undefined;
        const b = buf[i++]!;
        v += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) break;
      }
      if (tag >> 3 === 1) status = v;
    } else if (wire === 2) {
      let l = 0;
      for (;;) {
        if (i >= end) return undefined;
        const b = buf[i++]!;
        l += (b & 0x7f) * 2 ** shift;
        shift += 7;
        if ((b & 0x80) === 0) break;
      }
      i += l;
    } else {
      return undefined;
    }
  }
  return i === end ? status : undefined;
}

/** The probe a pool's `[health_check]` table asks for; `tls`: the pool's TLS to backends. */
export function probe(address: Address, check: HealthCheckConfig, signal?: AbortSignal, tls?: BackendTls): Promise<ProbeResult> {
  if (check.type === 'tcp') return probeTcp(address, check.timeoutMs, signal, tls, check.sendProxy);
  if (check.type === 'grpc') return probeGrpc(address, check.service ?? '', check.timeoutMs, signal, check.protocol === 'h2' ? tls : undefined);
  const opts: HttpProbeOptions = { path: check.path, expectStatus: check.expectStatus, timeoutMs: check.timeoutMs };
  if (check.protocol === 'h2' || check.protocol === 'h2c') {
    if (check.host !== undefined) opts.host = check.host;
    return probeHttp2(address, opts, signal, check.protocol === 'h2' ? tls : undefined);
  }
  if (check.sendProxy) opts.sendProxy = check.sendProxy;
  if (check.host !== undefined) opts.host = check.host;
  return probeHttp(address, opts, signal, tls);
}

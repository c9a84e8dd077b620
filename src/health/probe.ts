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

import http from 'node:http';
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

/** The probe a pool's `[health_check]` table asks for; `tls`: the pool's TLS to backends. */
export function probe(address: Address, check: HealthCheckConfig, signal?: AbortSignal, tls?: BackendTls): Promise<ProbeResult> {
  if (check.type === 'tcp') return probeTcp(address, check.timeoutMs, signal, tls, check.sendProxy);
  const opts: HttpProbeOptions = { path: check.path, expectStatus: check.expectStatus, timeoutMs: check.timeoutMs };
  if (check.sendProxy) opts.sendProxy = check.sendProxy;
  if (check.host !== undefined) opts.host = check.host;
  return probeHttp(address, opts, signal, tls);
}

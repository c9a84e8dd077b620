// Request IDs and W3C Trace Context (https://www.w3.org/TR/trace-context/) for an http listener with
// `request_id` or `trace` set. Works on the header list scanRequest (http-proxy.ts) built, after it has
// removed the fields the client's Connection header named: a client that names x-request-id or
// traceparent in Connection has them removed as hop-by-hop, and lb then acts as if they were absent.
//
// Request ID: one incoming field of 1-128 characters from [A-Za-z0-9._:+/=@-] is kept when the listener
// trusts it (trust_incoming); anything else (absent, repeated, too long, other characters, not trusted)
// is replaced by 32 lower-case hex characters (128 random bits, the form of NGINX's $request_id).
//
// traceparent: lb forwards spans it does not record, so a valid traceparent is passed on unchanged (a
// new parent-id would name a span no tracing system ever receives, cutting the backend's span from its
// real parent). Valid: exactly one field; version 2 hex digits other than ff; version 00 is exactly
// 00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>, later versions may add "-..." after that;
// lower-case hex only; trace-id and parent-id not all zeros. An invalid one is dropped with its
// tracestate (the spec: a tracestate is not used without a valid traceparent); with "create", a request
// without a valid traceparent gets a new one (random trace-id and parent-id, flags 01 when `sampled`).

import { randomFillSync } from 'node:crypto';
import type { RequestIdConfig, TraceConfig } from '../../config/model.js';

const VALID_ID = /^[A-Za-z0-9._:+/=@-]{1,128}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?$/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_PARENT = '0000000000000000';
const MAX_TRACEPARENT = 512;

/** What the access log and the response need to know of a request's IDs. */
export interface RequestTags {
  requestId: string | undefined;
  traceId: string | undefined;
  /** The response header name for the request ID; undefined when it is not sent back. */
  responseHeader: string | undefined;
}

/** Random bytes as hex, from a refilled pool (one getrandom call per 256 IDs, not one per request). */
const pool = Buffer.allocUnsafe(4096);
let poolAt = pool.length;
export function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const s = pool.toString('hex', poolAt, poolAt + bytes);
  poolAt += bytes;
  return s;
}

/** The trace-id of a valid traceparent value, else undefined. */
export function traceIdOf(v: string): string | undefined {
  if (v.length > MAX_TRACEPARENT) return undefined;
  const m = TRACEPARENT.exec(v);
  if (!m) return undefined;
  const version = m[1]!;
  if (version === 'ff') return undefined;
  if (version === '00' && m[4] !== undefined) return undefined;
  if (m[2] === ZERO_TRACE || m[3] === ZERO_PARENT) return undefined;
  return m[2];
}

export class RequestIds {
  private readonly idName: string | undefined;
  private readonly trust: boolean;
  private readonly respond: boolean;
  private readonly trace: TraceConfig | undefined;

  constructor(rid: RequestIdConfig | undefined, trace: TraceConfig | undefined) {
    this.idName = rid?.header;
    this.trust = rid?.trustIncoming ?? false;
    this.respond = rid?.response ?? false;
    this.trace = trace;
  }

  /** Removes the client's request ID / trace fields from `headers` (flat name, value list) and adds lb's. */
  apply(headers: string[]): RequestTags {
    const idName = this.idName;
    const idLen = idName?.length ?? -1;
    const tracing = this.trace !== undefined;
    let ids = 0;
    let id: string | undefined;
    let parents = 0;
    let parent: string | undefined;
    let states: string[] | undefined;
    let w = 0;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      const len = name.length;
      if (len === idLen || (tracing && (len === 11 || len === 10))) {
        const lower = name.toLowerCase();
        if (lower === idName) {
          ids++;
          id = value;
          continue;
        }
        if (tracing && lower === 'traceparent') {
          parents++;
          parent = value;
          continue;
        }
        if (tracing && lower === 'tracestate') {
          (states ??= []).push(value);
          continue;
        }
      }
      headers[w++] = name;
      headers[w++] = value;
    }
    headers.length = w;

    let requestId: string | undefined;
    if (idName !== undefined) {
      requestId = this.trust && ids === 1 && VALID_ID.test(id!) ? id! : randomHex(16);
      headers.push(idName, requestId);
    }
    let traceId: string | undefined;
    const t = this.trace;
    if (t !== undefined) {
      traceId = parents === 1 ? traceIdOf(parent!) : undefined;
      if (traceId !== undefined) {
        headers.push('traceparent', parent!);
        if (states) for (const s of states) headers.push('tracestate', s);
      } else if (t.traceparent === 'create') {
        do traceId = randomHex(16);
        while (traceId === ZERO_TRACE);
        let span: string;
        do span = randomHex(8);
        while (span === ZERO_PARENT);
        headers.push('traceparent', `00-${traceId}-${span}-${t.sampled ? '01' : '00'}`);
      }
    }
    return { requestId, traceId, responseHeader: this.respond ? idName : undefined };
  }
}

/** Response headers with the request ID set (a field of that name the backend sent is replaced). */
export function withRequestId(headers: string[], tags: RequestTags): string[] {
  const name = tags.responseHeader;
  if (name === undefined || tags.requestId === undefined) return headers;
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i]!.length === name.length && headers[i]!.toLowerCase() === name) headers.splice(i, 2);
  }
  headers.push(name, tags.requestId);
  return headers;
}

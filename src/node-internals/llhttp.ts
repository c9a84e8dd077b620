// Node's own binding of llhttp (the parser node:http uses), shared by lb's HTTP/1.1 server (http-server.ts)
// and its upstream client (upstream.ts). Always initialized in strict mode (kLenientNone).
//
// node:_http_common is one of Node's legacy public modules (like _http_agent); its HTTPParser is not
// documented, so its shape is checked here, at load, rather than found wrong on the first request. When it
// is missing, has another shape, or LB_NODE_FALLBACK names http_parser, HTTPParser is lb's own strict
// JavaScript parser (http-parser.ts) with the same interface, and httpParserCapability says why.

import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { FALLBACK_METHODS, FallbackHTTPParser } from './http-parser.js';
import { FALLBACK_SWITCH, FORCED_REASON, type Capability } from './switch.js';

export interface ParserInstance {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  /** Reads straight from a libuv stream handle, as node:http's server does: no 'data' events. */
  consume(handle: unknown): void;
  unconsume(): void;
  /** The buffer of the read being parsed (to find the bytes after an upgrade request's head). */
  getCurrentBuffer(): Buffer;
  close(): void;
  [key: number]: unknown;
}

/** The parts of a net.Socket's libuv handle used when the parser consumes it (node:http does the same). */
export interface StreamHandle {
  isStreamBase?: boolean;
  _consumed?: boolean;
  reading?: boolean;
  readStart(): number;
  readStop(): number;
}

interface ParserClass {
  new (): ParserInstance;
  REQUEST: number;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kOnExecute: number;
  kLenientNone: number;
}

/** Node's binding, or why it cannot be used. */
function loadBinding(): { cls: ParserClass; methods: string[] } | string {
  if (FALLBACK_SWITCH.forced.has('http_parser')) return FORCED_REASON;
  let common: { HTTPParser?: ParserClass; methods?: string[] };
  try {
    common = createRequire(import.meta.url)('_http_common') as typeof common;
  } catch (err) {
    return `_http_common cannot be loaded: ${(err as Error).message}`;
  }
  const cls = common.HTTPParser;
  if (typeof cls !== 'function') return '_http_common has no HTTPParser';
  const numbers = ['REQUEST', 'RESPONSE', 'kOnMessageBegin', 'kOnHeaders', 'kOnHeadersComplete', 'kOnBody', 'kOnMessageComplete', 'kOnExecute', 'kLenientNone'] as const;
  const missing = numbers.filter((k) => typeof cls[k] !== 'number');
  if (missing.length > 0) return `HTTPParser has no ${missing.join(', ')}`;
  const methods = ['initialize', 'execute', 'finish', 'consume', 'unconsume', 'getCurrentBuffer', 'close'].filter((m) => typeof (cls.prototype as unknown as Record<string, unknown>)[m] !== 'function');
  if (methods.length > 0) return `HTTPParser.prototype has no ${methods.join(', ')}`;
  if (!Array.isArray(common.methods)) return '_http_common has no methods list';
  return { cls, methods: common.methods };
}

const binding = loadBinding();
/** Whether lb parses HTTP with Node's llhttp binding or with its own JavaScript parser (http-parser.ts). */
export const httpParserCapability: Capability = typeof binding === 'string' ? { mode: 'fallback', reason: binding } : { mode: 'usable', reason: null };
const usingBinding = typeof binding !== 'string';
export const HTTPParser: ParserClass = typeof binding === 'string' ? (FallbackHTTPParser as unknown as ParserClass) : binding.cls;
/** llhttp's method numbers to names. */
export const METHODS: readonly string[] = typeof binding === 'string' ? FALLBACK_METHODS : binding.methods;
export const K_MESSAGE_BEGIN = HTTPParser.kOnMessageBegin | 0;
export const K_HEADERS = HTTPParser.kOnHeaders | 0;
export const K_HEADERS_COMPLETE = HTTPParser.kOnHeadersComplete | 0;
export const K_BODY = HTTPParser.kOnBody | 0;
export const K_MESSAGE_COMPLETE = HTTPParser.kOnMessageComplete | 0;
export const K_EXECUTE = HTTPParser.kOnExecute | 0;

/**
 * Has `parser` read `socket`'s handle directly, in C++, calling back only for parsed events (no Buffer or
 * stream machinery per read); EOF and errors still reach the socket's own listeners. Returns the handle,
 * or undefined when the socket has none that can be consumed (a TCP or TLS stream not consumed yet): then
 * the caller feeds the parser from 'data' events.
 */
export function consumeSocket(parser: ParserInstance, socket: object): StreamHandle | undefined {
  // The fallback parser is fed from 'data' events only.
  if (!usingBinding) return undefined;
  const handle = (socket as { _handle?: StreamHandle | null })._handle;
  if (!handle || !handle.isStreamBase || handle._consumed) return undefined;
  handle._consumed = true;
  parser.consume(handle);
  return handle;
}

/** Stops reading `socket`: its consumed handle (keeping `reading` as node's stream code does), or the stream. */
export function stopReading(socket: Duplex, handle: StreamHandle | undefined): void {
  if (!handle) socket.pause();
  else if (handle.reading !== false && !socket.destroyed) {
    handle.reading = false;
    handle.readStop();
  }
}

/** Undoes stopReading. */
export function startReading(socket: Duplex, handle: StreamHandle | undefined): void {
  if (!handle) socket.resume();
  else if (!handle.reading && !socket.destroyed) {
    handle.reading = true;
    handle.readStart();
  }
}

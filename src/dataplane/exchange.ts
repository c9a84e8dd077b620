// What routing, request policy, rewrites and forwarding (http-listener.ts, request-policy.ts, rewrite.ts,
// route-match.ts, http-proxy.ts) use of a client request and its response. Two servers implement it: lb's
// HTTP/1.1 server (http-server.ts: FrontRequest, FrontResponse) and its HTTP/2 front (h2-front.ts: one
// request and response per stream), so that a stream takes the same path as an HTTP/1.1 request. Both
// responses keep their listeners in OnceEvents.

import type net from 'node:net';
import type { Readable } from 'node:stream';

/** A request body: read as the backend accepts it; `trailers` (flat name, value list) set before its end. */
export type RequestBodyStream = Readable & { trailers?: string[] | undefined };

export interface HttpRequest {
  /** The client connection (a TLSSocket on tls listeners); shared by every stream of an HTTP/2 connection. */
  readonly socket: net.Socket;
  readonly method: string;
  /** The request target: origin-form, absolute-form or "*" (HTTP/2: `:path`). */
  readonly url: string;
  /** 1 for HTTP/1.x (with its minor version), 2 for HTTP/2 (minor 0). */
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  /** flat name, value list as received (HTTP/2: `:authority` as Host first, no pseudo-header fields) */
  readonly rawHeaders: string[];
  /** Header values by lower-cased name; repeated fields joined with ", " (Cookie with "; "). */
  readonly headers: Record<string, string>;
  /** the body as a stream; null when the request has none */
  readonly body: RequestBodyStream | null;
  /** how the body is delimited to the backend: its Content-Length (>= 0), CHUNKED, or NO_BODY (http-server.ts) */
  readonly framing: number;
  /** an HTTP/1.1 Upgrade request (never for HTTP/2) */
  readonly upgrade: boolean;
  /** Whether any of the body has been read. */
  readonly readableDidRead: boolean;
}

export interface HttpResponse {
  headersSent: boolean;
  destroyed: boolean;
  ended: boolean;
  /** false: the connection closes after this response (HTTP/1.x only; HTTP/2 ignores it) */
  shouldKeepAlive: boolean;
  /** Transfer codings other than chunked that the backend's body carries (HTTP/1.1 passes them on). */
  transferCodings: string | undefined;
  writeHead(status: number, reason?: string | Record<string, string | number>, list?: string[]): this;
  /** An interim (1xx) response before the final head. */
  writeInformational(status: number, text: string, headers: string[]): void;
  /** false: stop writing until 'drain'. */
  write(chunk: Buffer): boolean;
  /** Ends the response, with trailer fields (flat name, value list) where the protocol can carry them. */
  end(chunk?: Buffer | string, trailers?: string[]): this;
  /** A 101 to an HTTP/1.1 Upgrade request: the client socket and the bytes it sent after the request. */
  switchProtocols(text: string, headers: string[]): { socket: net.Socket; head: Buffer } | undefined;
  /** Cuts the response (the client must not take a truncated body for a whole one). */
  destroy(err?: Error): void;
  /** 'drain' after write() returned false; 'close' when the client went away before the response ended. */
  once(event: 'drain' | 'close', listener: () => void): this;
  removeListener(event: 'drain' | 'close', listener: () => void): this;
}

/** Listeners of one event: none, one, or several (in the order added). */
type Listeners = (() => void) | (() => void)[] | undefined;

/**
 * A response's 'drain' and 'close' listeners (HttpResponse's `once` and `removeListener`), kept in two
 * fields rather than an EventEmitter per request: each runs once, as `once` listeners do, and is removed
 * before it runs. Both servers' responses extend it.
 */
export class OnceEvents {
  private drainListeners: Listeners = undefined;
  private closeListeners: Listeners = undefined;

  once(event: 'drain' | 'close', listener: () => void): this {
    if (event === 'drain') this.drainListeners = add(this.drainListeners, listener);
    else this.closeListeners = add(this.closeListeners, listener);
    return this;
  }

  removeListener(event: 'drain' | 'close', listener: () => void): this {
    if (event === 'drain') this.drainListeners = remove(this.drainListeners, listener);
    else this.closeListeners = remove(this.closeListeners, listener);
    return this;
  }

  /** Runs the listeners of `event`, forgotten first. */
  protected fire(event: 'drain' | 'close'): void {
    let list: Listeners;
    if (event === 'drain') {
      list = this.drainListeners;
      this.drainListeners = undefined;
    } else {
      list = this.closeListeners;
      this.closeListeners = undefined;
    }
    if (typeof list === 'function') list();
    else if (list !== undefined) for (const fn of list) fn();
  }
}

function add(list: Listeners, fn: () => void): Listeners {
  if (list === undefined) return fn;
  if (typeof list === 'function') return [list, fn];
  list.push(fn);
  return list;
}

function remove(list: Listeners, fn: () => void): Listeners {
  if (list === fn) return undefined;
  if (typeof list !== 'object') return list;
  // As EventEmitter: the most recently added match goes.
  const i = list.lastIndexOf(fn);
  if (i >= 0) list.splice(i, 1);
  return list;
}

// What the data plane tells the rest of its process: finished requests and connections (metrics, access
// log) and backend failures (passive health, reported to the primary). The data plane calls these on its
// hot path; implementations must be cheap and must not throw.

import type { ClientCert } from './client-cert.js';

export type FailureReason = 'connect' | 'timeout' | 'reset' | 'protocol' | '5xx';

export interface RequestRecord {
  readonly kind: 'http' | 'tcp' | 'websocket';
  readonly listener: string;
  readonly pool: string;
  /** Backend name; '' when none was picked (503). */
  readonly backend: string;
  /** HTTP status sent to the client (101 for a websocket, 0 for tcp; 499 when the client went away first). */
  readonly status: number;
  readonly method: string;
  readonly path: string;
  readonly client: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly seconds: number;
  /** Backends tried before the one that answered (retries). */
  readonly retries: number;
  readonly error?: string;
  /** The client certificate's verification, on listeners with client_auth (client-cert.ts). */
  readonly clientCert?: ClientCert | undefined;
  /** http: the name of the route that matched; undefined when none did (the listener's pool served). */
  readonly route?: string;
  /** The rate limit that refused the request (429). */
  readonly limited?: string | undefined;
  /** Request and trace IDs (request_id, trace on the listener). */
  readonly requestId?: string | undefined;
  readonly traceId?: string | undefined;
  /** "h2" for an HTTP/2 stream; undefined for HTTP/1.x. */
  readonly proto?: 'h2' | undefined;
}

export interface DataPlaneEvents {
  /** Whether done() uses `client` (the access log); when false, tcp records may leave it empty. */
  readonly needsClient: boolean;
  done(r: RequestRecord): void;
  /**
   * A backend failed a request or connection (connect error, reset, timeout, 5xx when counted); `status`
   * is the response status of a '5xx' failure (outlier ejection tells 502/503/504 apart).
   */
  failure(pool: string, backend: string, reason: FailureReason, status?: number): void;
  /** A backend that had failed succeeded again (sent only after a failure, never per request). */
  recovered(pool: string, backend: string): void;
  /**
   * A connection to a proxy_protocol listener was closed without a valid PROXY header; `client` is the real
   * peer, `reason` one of proxy-protocol.ts ProxyErrorReason.
   */
  proxyRefused?(listener: string, reason: string, client: string, detail: string): void;
  /** An HTTP/2 client reset more streams than lb allows (rapid reset): its connection got GOAWAY and was closed. */
  h2Flood?(listener: string, client: string, resets: number): void;
}

export const noEvents: DataPlaneEvents = {
  needsClient: false,
  done() {},
  failure() {},
  recovered() {},
};

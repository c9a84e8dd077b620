// Extracts a pool's hash key (config `hash_key`) from an HTTP request, for key-based algorithms.
// Returns undefined when the request has no such key; the algorithm then falls back (algorithms/types.ts).

import type { HashKey } from '../../config/model.js';

/** What a key is read from (a request of lb's HTTP server). */
export interface KeyedRequest {
  readonly socket: { readonly remoteAddress?: string | undefined };
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly url: string;
}

export function requestKey(hk: HashKey, req: KeyedRequest): string | undefined {
  switch (hk.kind) {
    case 'client-ip':
      return req.socket.remoteAddress;
    case 'header':
      return req.headers[hk.name];
    case 'cookie':
      return cookieValue(req.headers.cookie, hk.name);
    case 'query':
      return queryValue(req.url, hk.name);
    case 'path': {
      const url = req.url;
      const q = url.indexOf('?');
      return q === -1 ? url : url.slice(0, q);
    }
  }
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function queryValue(url: string, name: string): string | undefined {
  const q = url.indexOf('?');
  if (q === -1) return undefined;
  const v = new URLSearchParams(url.slice(q + 1)).get(name);
  return v ?? undefined;
}

// The libuv handles under net.Socket and net.Server (their `_handle`, undocumented), for the few things
// lb does with them directly. Each helper returns a "could not" answer when the handle is not there or
// has another shape, and its caller has a path for that.

import type net from 'node:net';
import type { TcpHandle } from './tcp-wrap.js';

interface Handle {
  fd?: number;
  setNoDelay?: (on: boolean) => number;
  onconnection?: unknown;
}

function handleOf(o: net.Socket | net.Server): Handle | undefined {
  const h = (o as unknown as { _handle?: Handle | null })._handle;
  return h ?? undefined;
}

/** The file descriptor of a connected socket, or undefined (no handle, or not a fd-backed one). */
export function socketFd(socket: net.Socket): number | undefined {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Sets TCP_NODELAY on a listening socket (Linux copies it to every accepted socket). False when the server
 * has no socket of its own (cluster round-robin) or the call failed.
 */
export function setListenerNoDelay(server: net.Server): boolean {
  const h = handleOf(server);
  return typeof h?.setNoDelay === 'function' && h.setNoDelay(true) === 0;
}

/**
 * Takes the connections a listening net.Server accepts as bare TCP handles, before it wraps them in a
 * net.Socket (its handle's onconnection, which node:cluster's round-robin handle calls too). False when
 * the server has no such handle: it keeps emitting 'connection'.
 */
export function takeAcceptedHandles(server: net.Server, onHandle: (handle: TcpHandle) => void): boolean {
  const h = handleOf(server);
  if (!h || typeof h.onconnection !== 'function') return false;
  h.onconnection = (err: number, client: TcpHandle | undefined) => {
    if (err || !client) return;
    onHandle(client);
  };
  return true;
}

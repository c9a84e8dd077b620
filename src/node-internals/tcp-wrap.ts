// Node's TCP handle binding (tcp_wrap, stream_wrap: what net.Socket is built on), for tcp listeners that
// splice plain connections without a net.Socket per side: no stream state, event emitter or nextTick per
// read, write or close. Measured under the anchors rig's new-connection load (2 cores, Node 20, /proc): lb's
// tcp listener used 13-14 µs of user CPU per connection on these handles, 33-55 µs on net.Socket.
//
// socket-write.ts uses its write request (newWrite, lastWriteAsync) to write HTTP heads on net.Sockets' handles.
//
// These are Node internals reached through process.binding (on its allow-list in Node 20, 22 and 24). They are
// checked for the expected shape once, at load; when anything differs (or LB_NODE_FALLBACK names tcp_wrap),
// `tcpWrap` is undefined, tcp listeners keep using net.Socket, and tcpWrapCapability says why.

import { getSystemErrorName } from 'node:util';
import { FALLBACK_SWITCH, FORCED_REASON, type Capability } from './switch.js';

/** A libuv TCP stream handle as node's tcp_wrap exposes it (the methods lb uses). */
export interface TcpHandle {
  onread: ((this: TcpHandle, arrayBuffer: ArrayBuffer | undefined) => void) | null;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: WriteReq, data: Uint8Array): number;
  shutdown(req: ShutdownReq): number;
  close(cb?: () => void): void;
  connect(req: ConnectReq, address: string, port: number): number;
  connect6(req: ConnectReq, address: string, port: number): number;
  getpeername(out: { address?: string; port?: number }): number;
  getsockname(out: { address?: string; port?: number }): number;
  setNoDelay(on: boolean): number;
}

export interface WriteReq {
  handle: TcpHandle;
  oncomplete: (this: WriteReq, status: number) => void;
}
export interface ShutdownReq {
  handle: TcpHandle;
  oncomplete: (this: ShutdownReq, status: number) => void;
}
export interface ConnectReq {
  oncomplete: (this: ConnectReq, status: number) => void;
}

export interface TcpWrap {
  newSocket(): TcpHandle;
  newWrite(): WriteReq;
  newShutdown(): ShutdownReq;
  newConnect(): ConnectReq;
  /** Bytes read by the read that is being called back, or a negative libuv error (UV_EOF at end). */
  readBytes(): number;
  /** Where that read's bytes start in its ArrayBuffer. */
  readOffset(): number;
  /** Whether the last writeBuffer() left bytes to be written later (its req's oncomplete will be called). */
  lastWriteAsync(): boolean;
  readonly UV_EOF: number;
}

type Ctor<T> = new (arg?: number) => T;

function load(): TcpWrap | string {
  if (FALLBACK_SWITCH.forced.has('tcp_wrap')) return FORCED_REASON;
  try {
    const binding = (process as unknown as { binding(name: string): Record<string, unknown> }).binding;
    const tcp = binding('tcp_wrap') as { TCP?: Ctor<TcpHandle>; TCPConnectWrap?: Ctor<ConnectReq>; constants?: { SOCKET?: number } };
    const stream = binding('stream_wrap') as {
      WriteWrap?: Ctor<WriteReq>;
      ShutdownWrap?: Ctor<ShutdownReq>;
      streamBaseState?: Int32Array;
      kReadBytesOrError?: number;
      kArrayBufferOffset?: number;
      kLastWriteWasAsync?: number;
    };
    const uv = binding('uv') as { UV_EOF?: number };
    const { TCP, TCPConnectWrap, constants } = tcp;
    const { WriteWrap, ShutdownWrap, streamBaseState: state, kReadBytesOrError: kBytes, kArrayBufferOffset: kOffset, kLastWriteWasAsync: kAsync } = stream;
    if (typeof TCP !== 'function' || typeof TCPConnectWrap !== 'function' || typeof constants?.SOCKET !== 'number') return 'tcp_wrap has no TCP, TCPConnectWrap or constants.SOCKET';
    if (typeof WriteWrap !== 'function' || typeof ShutdownWrap !== 'function' || !(state instanceof Int32Array)) return 'stream_wrap has no WriteWrap, ShutdownWrap or streamBaseState';
    if (typeof kBytes !== 'number' || typeof kOffset !== 'number' || typeof kAsync !== 'number' || typeof uv.UV_EOF !== 'number') return 'stream_wrap or uv has another shape (stream state indices, UV_EOF)';
    const methods = ['readStart', 'readStop', 'writeBuffer', 'shutdown', 'close', 'connect', 'connect6', 'getpeername', 'getsockname', 'setNoDelay'];
    const absent = methods.filter((m) => typeof (TCP.prototype as unknown as Record<string, unknown>)[m] !== 'function');
    if (absent.length > 0) return `TCP handles have no ${absent.join(', ')}`;
    const SOCKET = constants.SOCKET;
    return {
      newSocket: () => new TCP(SOCKET),
      newWrite: () => new WriteWrap(),
      newShutdown: () => new ShutdownWrap(),
      newConnect: () => new TCPConnectWrap(),
      readBytes: () => state[kBytes]!,
      readOffset: () => state[kOffset]!,
      lastWriteAsync: () => state[kAsync] !== 0,
      UV_EOF: uv.UV_EOF,
    };
  } catch (err) {
    return `process.binding refused: ${(err as Error).message}`;
  }
}

const loaded = load();
/** The bare handle binding; undefined when it cannot be used (tcp listeners then use net.Socket). */
export const tcpWrap: TcpWrap | undefined = typeof loaded === 'string' ? undefined : loaded;
/** Whether tcp listeners splice bare handles, or net.Socket (the fallback), and why. */
export const tcpWrapCapability: Capability = typeof loaded === 'string' ? { mode: 'fallback', reason: loaded } : { mode: 'usable', reason: null };

/** A libuv error number as an Error with node's code for it (ECONNREFUSED, ...). */
export function uvError(status: number, what: string): Error & { code: string } {
  let code: string;
  try {
    code = getSystemErrorName(status);
  } catch {
    code = `UV${status}`;
  }
  return Object.assign(new Error(`${what}: ${code}`), { code });
}

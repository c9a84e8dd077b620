// The PROXY protocol, versions 1 and 2 (HAProxy's proxy-protocol.txt): a header at the very start of a TCP
// connection, sent by the peer that accepted the client's connection, saying whose connection it is.
//
// Receiving (`proxy_protocol = true` on a listener): every connection must start with a v1 or v2 header,
// told apart by their signatures ("PROXY " / the 12-byte v2 signature), complete within the listener's
// client_header_timeout; anything else closes the connection (HAProxy's accept-proxy does the same: there is
// no protocol to answer in). Its source address then stands for the client everywhere (X-Forwarded-For,
// client-ip hashing, the access log): the socket's remoteAddress, remotePort and remoteFamily are replaced.
// The real peer's address is kept for a v2 LOCAL command (the balancer's own health checks), a v1 UNKNOWN,
// and v2 families other than TCP over IPv4/IPv6 (UNSPEC, UNIX, UDP), as the specification asks. TLVs are
// skipped. Limits: a v1 line is at most 107 bytes (the specification's maximum); a v2 header at most
// MAX_V2_BYTES in all (16 bytes plus the announced length, which may reach 65535: a larger header than
// HAProxy's default 16 KiB buffer can take is refused).
//
// Sending (`send_proxy = "v1" | "v2"` on a pool): buildProxyHeader, one header at the start of each backend
// connection; on health-check connections a v2 LOCAL / v1 UNKNOWN header (HAProxy's check-send-proxy).

import net from 'node:net';

/** The v2 signature: \r\n\r\n\0\r\nQUIT\n. */
const V2_SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V1_SIG = Buffer.from('PROXY ', 'latin1');
/** A v1 line, "PROXY" to CRLF included, is at most 107 bytes (proxy-protocol.txt, 2.1). */
export const MAX_V1_BYTES = 107;
/** A v2 header, fixed part included, is refused above this size. */
export const MAX_V2_BYTES = 16384;

/**
 * Label values of lb_proxy_protocol_errors_total{reason}: not a valid header; a v1 line or v2 header over
 * the limits; no complete header within the timeout; closed (or reset) in the middle of one; closed before
 * sending any byte (an L4 balancer's TCP health check: connect and close).
 */
export type ProxyErrorReason = 'invalid' | 'too_long' | 'timeout' | 'closed' | 'empty';

export interface ProxyError {
  reason: ProxyErrorReason;
  detail: string;
}

export interface ProxyEndpoint {
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
}

export interface ProxyInfo {
  version: 1 | 2;
  /** The header's addresses; absent for LOCAL, UNKNOWN and families other than TCP4/TCP6 (the real peer stands). */
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
  /** Length of the header in the stream. */
  bytes: number;
}

const MORE = { more: true } as const;
export type ParseResult = typeof MORE | ProxyError | ProxyInfo;

function invalid(detail: string): ProxyError {
  return { reason: 'invalid', detail };
}

/** Parses the header at the start of `buf`: MORE while it may still be one, an error as soon as it cannot. */
export function parseProxyHeader(buf: Buffer): ParseResult {
  const n = buf.length;
  if (n === 0) return MORE;
  if (buf[0] === 0x0d) return parseV2(buf);
  const m = Math.min(n, V1_SIG.length);
  if (buf.compare(V1_SIG, 0, m, 0, m) !== 0) return invalid('not a PROXY protocol header');
  return parseV1(buf);
}

function parseV2(buf: Buffer): ParseResult {
  const n = buf.length;
  const m = Math.min(n, V2_SIG.length);
  if (buf.compare(V2_SIG, 0, m, 0, m) !== 0) return invalid('not a PROXY protocol header');
  if (n < 16) return MORE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return invalid(`v2 header with version ${verCmd >> 4}`);
  const command = verCmd & 0x0f;
  if (command > 1) return invalid(`v2 header with command ${command}`);
  const famByte = buf[13]!;
  const family = famByte >> 4;
  const transport = famByte & 0x0f;
  if (family > 3 || transport > 2) return invalid(`v2 header with address family byte 0x${famByte.toString(16).padStart(2, '0')}`);
  const len = buf.readUInt16BE(14);
  const bytes = 16 + len;
  if (bytes > MAX_V2_BYTES) return { reason: 'too_long', detail: `v2 header of ${bytes} bytes (at most ${MAX_V2_BYTES})` };
  if (n < bytes) return MORE;
  // LOCAL: the balancer's own connection (a health check): the real peer stands. So do families other
  // than TCP over IPv4/IPv6 (proxy-protocol.txt 2.2: UNSPEC and UNIX carry nothing lb can use).
  if (command === 0 || transport !== 1 || family === 0 || family === 3) return { version: 2, bytes };
  if (family === 1) {
    if (len < 12) return invalid(`v2 TCP4 header with ${len} bytes of addresses (12 needed)`);
    return {
      version: 2,
      bytes,
      source: { address: ipv4(buf, 16), port: buf.readUInt16BE(24), family: 'IPv4' },
      destination: { address: ipv4(buf, 20), port: buf.readUInt16BE(26), family: 'IPv4' },
    };
  }
  if (len < 36) return invalid(`v2 TCP6 header with ${len} bytes of addresses (36 needed)`);
  return {
    version: 2,
    bytes,
    source: { address: formatIPv6(buf.subarray(16, 32)), port: buf.readUInt16BE(48), family: 'IPv6' },
    destination: { address: formatIPv6(buf.subarray(32, 48)), port: buf.readUInt16BE(50), family: 'IPv6' },
  };
}

const PORT = /^(?:0|[1-9][0-9]{0,4})$/;

function parseV1(buf: Buffer): ParseResult {
  const end = buf.subarray(0, MAX_V1_BYTES).indexOf(0x0a);
  if (end === -1) {
    return buf.length >= MAX_V1_BYTES ? { reason: 'too_long', detail: `v1 line without CRLF in ${MAX_V1_BYTES} bytes` } : MORE;
  }
  if (end === 0 || buf[end - 1] !== 0x0d) return invalid('v1 line not ended by CRLF');
  const line = buf.toString('latin1', 0, end - 1);
  const parts = line.split(' ');
  const proto = parts[1];
  const bytes = end + 1;
  // "UNKNOWN": the sender could not tell; the rest of the line is ignored (proxy-protocol.txt 2.1).
  if (proto === 'UNKNOWN') return { version: 1, bytes };
  if (proto !== 'TCP4' && proto !== 'TCP6') return invalid(`v1 protocol ${JSON.stringify(proto ?? '')}`);
  if (parts.length !== 6) return invalid('v1 line is not "PROXY TCPx SRC DST SPORT DPORT"');
  const [, , src, dst, sport, dport] = parts as [string, string, string, string, string, string];
  const v = proto === 'TCP4' ? 4 : 6;
  if (net.isIP(src) !== v || net.isIP(dst) !== v) return invalid(`v1 ${proto} line with addresses that are not IPv${v}`);
  if (!PORT.test(sport) || !PORT.test(dport) || +sport > 65535 || +dport > 65535) return invalid('v1 line with an invalid port');
  const family = v === 4 ? 'IPv4' : 'IPv6';
  const canon = (a: string): string => (v === 6 ? formatIPv6(parseIPv6(a)) : a);
  return {
    version: 1,
    bytes,
    source: { address: canon(src), port: +sport, family },
    destination: { address: canon(dst), port: +dport, family },
  };
}

function ipv4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** 16 bytes as text the way inet_ntop(3) writes it (RFC 5952; ::ffff:a.b.c.d for IPv4-mapped), as Node shows peers. */
export function formatIPv6(b: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((b[i]! << 8) | b[i + 1]!);
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  // The longest run of two or more zero groups (the first of equals) becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(':');
  return best === -1 ? hex(0, 8) : `${hex(0, best)}::${hex(best + bestLen, 8)}`;
}

/** IPv6 text (net.isIPv6 true; no zone) to its 16 bytes. */
export function parseIPv6(text: string): Buffer {
  let s = text;
  const lastColon = s.lastIndexOf(':');
  const last = s.slice(lastColon + 1);
  if (last.includes('.')) {
    // A trailing dotted quad is the last two groups.
    const [a, b, c, d] = last.split('.').map(Number) as [number, number, number, number];
    s = `${s.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const groups = (part: string): number[] => (part === '' ? [] : part.split(':').map((h) => parseInt(h, 16)));
  const dbl = s.indexOf('::');
  let words: number[];
  if (dbl === -1) words = groups(s);
  else {
    const head = groups(s.slice(0, dbl));
    const rest = groups(s.slice(dbl + 2));
    words = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  }
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

/** An address as IPv4 text when it is IPv4 or IPv4-mapped IPv6, else undefined. */
function asIPv4(address: string): string | undefined {
  if (net.isIPv4(address)) return address;
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m && net.isIPv4(m[1]!) ? m[1] : undefined;
}

export interface Endpoints {
  src: { address: string; port: number };
  dst: { address: string; port: number };
}

/**
 * The header a backend connection starts with. With `ends`, TCP4 when both addresses are IPv4 (IPv4-mapped
 * IPv6 included, as a dual-stack listener reports them), else TCP6 (an IPv4 one mapped); without (health
 * checks) or when an address is missing, v1 "PROXY UNKNOWN" / v2 LOCAL: the receiver uses the real peer.
 */
export function buildProxyHeader(version: 'v1' | 'v2', ends?: Endpoints): Buffer {
  const src = ends?.src.address ?? '';
  const dst = ends?.dst.address ?? '';
  if (!ends || net.isIP(src) === 0 && asIPv4(src) === undefined || net.isIP(dst) === 0 && asIPv4(dst) === undefined) {
    return version === 'v1' ? Buffer.from('PROXY UNKNOWN\r\n', 'latin1') : Buffer.concat([V2_SIG, Buffer.from([0x20, 0x00, 0x00, 0x00])]);
  }
  const s4 = asIPv4(src);
  const d4 = asIPv4(dst);
  const sp = ends.src.port;
  const dp = ends.dst.port;
  if (s4 !== undefined && d4 !== undefined) {
    if (version === 'v1') return Buffer.from(`PROXY TCP4 ${s4} ${d4} ${sp} ${dp}\r\n`, 'latin1');
    const b = Buffer.alloc(28);
    V2_SIG.copy(b);
    b[12] = 0x21;
    b[13] = 0x11;
    b.writeUInt16BE(12, 14);
    Buffer.from(s4.split('.').map(Number)).copy(b, 16);
    Buffer.from(d4.split('.').map(Number)).copy(b, 20);
    b.writeUInt16BE(sp, 24);
    b.writeUInt16BE(dp, 26);
    return b;
  }
  const s6 = parseIPv6(s4 !== undefined ? `::ffff:${s4}` : src);
  const d6 = parseIPv6(d4 !== undefined ? `::ffff:${d4}` : dst);
  if (version === 'v1') return Buffer.from(`PROXY TCP6 ${formatIPv6(s6)} ${formatIPv6(d6)} ${sp} ${dp}\r\n`, 'latin1');
  const b = Buffer.alloc(52);
  V2_SIG.copy(b);
  b[12] = 0x21;
  b[13] = 0x21;
  b.writeUInt16BE(36, 14);
  s6.copy(b, 16);
  d6.copy(b, 32);
  b.writeUInt16BE(sp, 48);
  b.writeUInt16BE(dp, 50);
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// Sockets

const kProxy = Symbol('lb.proxy');

interface Proxied {
  [kProxy]?: ProxyInfo;
  _parent?: Proxied;
}

/**
 * Reads the header a connection must start with, within `timeoutMs`, then calls `done` once: with an error
 * (the caller closes the socket), or with the header, the socket paused and what followed the header put
 * back into it (unshift) for whoever reads next.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number, done: (err: ProxyError | null, info?: ProxyInfo) => void): void {
  let buf: Buffer | undefined;
  let finished = false;
  const finish = (r: ProxyError | ProxyInfo): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', onEnd);
    if ('reason' in r) {
      // An error after this is the closing socket's own: nothing is listening for it any more.
      socket.on('error', () => {});
      socket.removeListener('error', onError);
      done(r);
      return;
    }
    socket.pause();
    socket.removeListener('error', onError);
    if (buf && r.bytes < buf.length) socket.unshift(buf.subarray(r.bytes));
    adopt(socket, r);
    done(null, r);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf ? Buffer.concat([buf, chunk]) : chunk;
    const r = parseProxyHeader(buf);
    if (!('more' in r)) finish(r);
  };
  const onEnd = (): void => {
    finish(buf ? { reason: 'closed', detail: `closed after ${buf.length} bytes of an incomplete header` } : { reason: 'empty', detail: 'closed before sending any byte' });
  };
  const onError = (err: Error & { code?: string }): void => {
    finish({ reason: 'closed', detail: `${err.code ?? err.message} before a complete header` });
  };
  const timer = setTimeout(() => {
    finish({ reason: 'timeout', detail: `no complete header within ${timeoutMs}ms${buf ? ` (${buf.length} bytes came)` : ''}` });
  }, timeoutMs);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onEnd);
  socket.on('error', onError);
}

/** The header's source stands for the client on this socket (see the file's header). */
function adopt(socket: net.Socket, info: ProxyInfo): void {
  (socket as unknown as Proxied)[kProxy] = info;
  const src = info.source;
  if (!src) return;
  Object.defineProperties(socket, {
    remoteAddress: { value: src.address, configurable: true },
    remotePort: { value: src.port, configurable: true },
    remoteFamily: { value: src.family, configurable: true },
  });
}

/**
 * A TLS socket made (by tls.Server) from a plain socket that had a PROXY header: the header's addresses
 * stand for this one too. False when the plain socket cannot be found or had none (then the connection
 * must not be served: its client address would be the balancer's).
 */
export function adoptFromParent(tlsSocket: net.Socket): boolean {
  // tls.TLSSocket keeps the socket it wraps as `_parent` (Node 20-24).
  const info = (tlsSocket as unknown as Proxied)._parent?.[kProxy];
  if (!info) return false;
  adopt(tlsSocket, info);
  return true;
}

/** The client connection's two ends: from its accepted PROXY header if it had one with addresses, else the socket's. */
export function clientEndpoints(socket: net.Socket): Endpoints {
  const info = (socket as unknown as Proxied)[kProxy];
  if (info?.source && info.destination) return { src: info.source, dst: info.destination };
  return {
    src: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
    dst: { address: socket.localAddress ?? '', port: socket.localPort ?? 0 },
  };
}

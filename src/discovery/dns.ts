// A small DNS stub resolver for discovery: RFC 1035 wire format over UDP, with TCP when an answer is
// truncated (TC bit, RFC 7766), A (RFC 1035), AAAA (RFC 3596), SRV (RFC 2782), CNAME and SOA (for the
// negative-caching TTL of RFC 2308).
//
// Why not node:dns: its Resolver returns no TTL for SRV records (resolveSrv), only for A/AAAA with
// {ttl: true}, and folds the response code into error strings (ESERVFAIL, ENOTFOUND for NXDOMAIN and
// ENODATA for an empty answer) after c-ares has applied its own retries and search rules. Discovery needs
// the TTL of every record it uses, NXDOMAIN and NODATA told apart from failures (one is an answer, the
// other is not), the additional section of an SRV answer, and its own retry policy across the configured
// resolvers. Those take a few hundred lines here.
//
// Safety of answers (RFC 5452): each query uses a fresh random id and a new socket with a kernel-chosen
// source port, connected to the resolver (the kernel drops datagrams from other addresses); an answer is
// accepted only with the query's id, QR set, and the same question (name compared case-insensitively,
// type and class). Anything else on the socket is ignored and the query keeps waiting until its timeout.

import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import type { Address } from '../../config/model.js';

export const TYPE = { A: 1, CNAME: 5, SOA: 6, AAAA: 28, SRV: 33, OPT: 41 } as const;
export type QueryType = 'A' | 'AAAA' | 'SRV';

export const RCODE_NAMES: Readonly<Record<number, string>> = {
  0: 'NOERROR', 1: 'FORMERR', 2: 'SERVFAIL', 3: 'NXDOMAIN', 4: 'NOTIMP', 5: 'REFUSED',
};
export const NOERROR = 0;
export const NXDOMAIN = 3;

/** UDP payload size advertised with EDNS(0) (RFC 6891): 1232 bytes, the DNS Flag Day 2020 value. */
export const EDNS_UDP_SIZE = 1232;

export type RecordData =
  | { type: 'A' | 'AAAA'; address: string }
  | { type: 'SRV'; priority: number; weight: number; port: number; target: string }
  | { type: 'CNAME'; target: string }
  | { type: 'SOA'; minimum: number }
  | { type: 'other'; code: number };

export type ResourceRecord = RecordData & { name: string; ttl: number };

export interface DnsMessage {
  id: number;
  rcode: number;
  truncated: boolean;
  question?: { name: string; type: number; class: number };
  answers: ResourceRecord[];
  authority: ResourceRecord[];
  additional: ResourceRecord[];
}

/** A query that got no usable answer: network error, timeout, malformed answer, or an rcode other than NOERROR/NXDOMAIN. */
export class DnsError extends Error {
  constructor(
    message: string,
    /** 'timeout' | 'network' | 'malformed' | 'SERVFAIL' | 'REFUSED' | other rcode names */
    readonly kind: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Wire format

/** Lower-case, without the trailing dot: the form names are compared and shown in. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function encodeName(name: string): Buffer {
  const labels = normalizeName(name).split('.').filter((l) => l !== '');
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(l, 'ascii');
    if (b.length > 63) throw new DnsError(`label ${JSON.stringify(l)} is longer than 63 bytes`, 'malformed');
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new DnsError(`name ${JSON.stringify(name)} is longer than 255 bytes`, 'malformed');
  return out;
}

/** A recursive query (RD) for `name` `type` IN, with an EDNS(0) OPT record. */
export function encodeQuery(id: number, name: string, type: QueryType): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(1, 10); // ARCOUNT: the OPT record
  const question = Buffer.alloc(4);
  question.writeUInt16BE(TYPE[type], 0);
  question.writeUInt16BE(1, 2); // IN
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(TYPE.OPT, 1); // root name (0), then TYPE
  opt.writeUInt16BE(EDNS_UDP_SIZE, 3); // CLASS = UDP payload size; TTL (ext. rcode, version, flags) and RDLEN 0
  return Buffer.concat([header, encodeName(name), question, opt]);
}

class Reader {
  constructor(
    readonly buf: Buffer,
    public off = 0,
  ) {}

  need(n: number): void {
    if (this.off + n > this.buf.length) throw new DnsError('answer ends inside a record', 'malformed');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.off++]!;
  }
  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }

  /** A domain name with compression pointers (RFC 1035 section 4.1.4); pointer loops are refused. */
  name(): string {
    const labels: string[] = [];
    let off = this.off;
    let jumped = false;
    let length = 0;
    for (let hops = 0; ; ) {
      if (off >= this.buf.length) throw new DnsError('name runs past the end of the answer', 'malformed');
      const len = this.buf[off]!;
      if (len === 0) {
        if (!jumped) this.off = off + 1;
        break;
      }
      if ((len & 0xc0) === 0xc0) {
        if (off + 1 >= this.buf.length) throw new DnsError('truncated compression pointer', 'malformed');
        if (++hops > 64) throw new DnsError('compression pointer loop', 'malformed');
        if (!jumped) this.off = off + 2;
        jumped = true;
        off = ((len & 0x3f) << 8) | this.buf[off + 1]!;
        continue;
      }
      if ((len & 0xc0) !== 0) throw new DnsError(`unknown label type 0x${len.toString(16)}`, 'malformed');
      if (off + 1 + len > this.buf.length) throw new DnsError('label runs past the end of the answer', 'malformed');
      length += len + 1;
      if (length > 255) throw new DnsError('name longer than 255 bytes', 'malformed');
      labels.push(this.buf.toString('latin1', off + 1, off + 1 + len).toLowerCase());
      off += 1 + len;
    }
    return labels.join('.');
  }
}

/** RFC 5952 text of a 16-byte IPv6 address: lower-case hex, the longest run of two or more zero groups as "::". */
export function formatIPv6(b: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i));
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestAt < 0) return hex(groups);
  return `${hex(groups.slice(0, bestAt))}::${hex(groups.slice(bestAt + bestLen))}`;
}

function readRecord(r: Reader): ResourceRecord {
  const name = r.name();
  const type = r.u16();
  r.u16(); // class
  const rawTtl = r.u32();
  // RFC 2181 section 8: a TTL with the most significant bit set is treated as zero.
  const ttl = rawTtl > 0x7fffffff ? 0 : rawTtl;
  const rdlength = r.u16();
  r.need(rdlength);
  const end = r.off + rdlength;
  let data: RecordData;
  const bad = (what: string) => new DnsError(`${what} record of ${rdlength} bytes`, 'malformed');
  if (type === TYPE.A) {
    if (rdlength !== 4) throw bad('A');
    data = { type: 'A', address: [...r.buf.subarray(r.off, end)].join('.') };
  } else if (type === TYPE.AAAA) {
    if (rdlength !== 16) throw bad('AAAA');
    data = { type: 'AAAA', address: formatIPv6(r.buf.subarray(r.off, end)) };
  } else if (type === TYPE.SRV) {
    if (rdlength < 7) throw bad('SRV');
    const priority = r.u16();
    const weight = r.u16();
    const port = r.u16();
    data = { type: 'SRV', priority, weight, port, target: r.name() };
  } else if (type === TYPE.CNAME) {
    data = { type: 'CNAME', target: r.name() };
  } else if (type === TYPE.SOA) {
    r.name();
    r.name();
    r.need(20);
    data = { type: 'SOA', minimum: r.buf.readUInt32BE(r.off + 16) };
  } else {
    data = { type: 'other', code: type };
  }
  if (r.off > end) throw bad(`type ${type}`);
  r.off = end;
  return { ...data, name, ttl };
}

/** Parses a whole DNS message; throws DnsError('malformed') on anything that does not fit. */
export function decodeMessage(buf: Buffer): DnsMessage {
  const r = new Reader(buf);
  const id = r.u16();
  const flags = r.u16();
  const qd = r.u16();
  const an = r.u16();
  const ns = r.u16();
  const ar = r.u16();
  if ((flags & 0x8000) === 0) throw new DnsError('not a response (QR is 0)', 'malformed');
  let question: DnsMessage['question'];
  for (let i = 0; i < qd; i++) {
    const q = { name: r.name(), type: r.u16(), class: r.u16() };
    if (i === 0) question = q;
  }
  const section = (n: number) => Array.from({ length: n }, () => readRecord(r));
  const answers = section(an);
  const authority = section(ns);
  const additional = section(ar);
  return { id, rcode: flags & 0x0f, truncated: (flags & 0x0200) !== 0, ...(question ? { question } : {}), answers, authority, additional };
}

// ---------------------------------------------------------------------------------------------------------
// Transport

export function formatServer(a: Address): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

interface Pending {
  id: number;
  name: string;
  type: QueryType;
}

/** The answer if it belongs to `q` (id, QR, question), else undefined; a malformed message is undefined too. */
function matching(buf: Buffer, q: Pending): DnsMessage | undefined {
  let m: DnsMessage;
  try {
    m = decodeMessage(buf);
  } catch {
    return undefined;
  }
  if (m.id !== q.id || !m.question) return undefined;
  if (m.question.name !== normalizeName(q.name) || m.question.type !== TYPE[q.type] || m.question.class !== 1) return undefined;
  return m;
}

function udpQuery(server: Address, q: Pending, timeoutMs: number): Promise<DnsMessage> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(server.host) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: Error | undefined, m?: DnsMessage) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(m!);
    };
    const timer = setTimeout(
      () => finish(new DnsError(`${formatServer(server)}: no answer within ${timeoutMs}ms`, 'timeout')),
      timeoutMs,
    );
    socket.on('error', (err) => finish(new DnsError(`${formatServer(server)}: ${err.message}`, 'network')));
    socket.on('message', (buf) => {
      const m = matching(buf, q);
      if (m) finish(undefined, m);
    });
    socket.connect(server.port, server.host, () => {
      if (!done) socket.send(encodeQuery(q.id, q.name, q.type));
    });
  });
}

/** DNS over TCP (RFC 1035 section 4.2.2, RFC 7766): each message prefixed by its 2-byte length. */
function tcpQuery(server: Address, q: Pending, timeoutMs: number): Promise<DnsMessage> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.host, port: server.port });
    let got = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | undefined, m?: DnsMessage) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(m!);
    };
    const timer = setTimeout(
      () => finish(new DnsError(`${formatServer(server)} (tcp): no answer within ${timeoutMs}ms`, 'timeout')),
      timeoutMs,
    );
    socket.on('error', (err) => finish(new DnsError(`${formatServer(server)} (tcp): ${err.message}`, 'network')));
    socket.on('close', () => finish(new DnsError(`${formatServer(server)} (tcp): connection closed before an answer`, 'network')));
    socket.on('connect', () => {
      const query = encodeQuery(q.id, q.name, q.type);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(query.length);
      socket.end(Buffer.concat([len, query]));
    });
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 2) return;
      const len = got.readUInt16BE(0);
      if (got.length < 2 + len) return;
      const m = matching(got.subarray(2, 2 + len), q);
      finish(m ? undefined : new DnsError(`${formatServer(server)} (tcp): answer does not match the query`, 'malformed'), m);
    });
  });
}

/** One query to one server: UDP, then TCP (with a fresh timeout) when the UDP answer is truncated. */
export async function queryServer(server: Address, name: string, type: QueryType, timeoutMs: number): Promise<DnsMessage & { tcp: boolean }> {
  const q: Pending = { id: randomInt(0, 0x10000), name, type };
  const m = await udpQuery(server, q, timeoutMs);
  if (!m.truncated) return { ...m, tcp: false };
  const t = await tcpQuery(server, { ...q, id: randomInt(0, 0x10000) }, timeoutMs);
  return { ...t, tcp: true };
}

export interface ResolveOptions {
  resolvers: Address[];
  /** Per try. */
  timeoutMs: number;
  /** How many times the resolver list is gone through (resolv.conf's `attempts`); default 2. */
  rounds?: number;
}

/**
 * `name` `type` from the first resolver that answers NOERROR or NXDOMAIN. A timeout, network error,
 * malformed answer or another rcode (SERVFAIL, REFUSED, ...) moves on to the next resolver, going through
 * the list `rounds` times; when none answers, throws a DnsError of the last failure's kind naming every one.
 */
export async function resolve(name: string, type: QueryType, opts: ResolveOptions): Promise<DnsMessage & { tcp: boolean }> {
  const failures: DnsError[] = [];
  const rounds = opts.rounds ?? 2;
  for (let round = 0; round < rounds; round++) {
    for (const server of opts.resolvers) {
      try {
        const m = await queryServer(server, name, type, opts.timeoutMs);
        if (m.rcode === NOERROR || m.rcode === NXDOMAIN) return m;
        const rcode = RCODE_NAMES[m.rcode] ?? `rcode ${m.rcode}`;
        failures.push(new DnsError(`${formatServer(server)}: ${rcode}`, rcode));
      } catch (err) {
        failures.push(err instanceof DnsError ? err : new DnsError(String(err), 'network'));
      }
    }
  }
  const last = failures[failures.length - 1];
  const seen = [...new Set(failures.map((f) => f.message))];
  throw new DnsError(`${name} ${type}: ${seen.join('; ')}`, last?.kind ?? 'network');
}

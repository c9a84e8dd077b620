// A minimal Redis client (RESP2, https://redis.io/docs/latest/develop/reference/protocol-spec/) over
// node:net, for global rate limits. Commands are pipelined on one connection and answered in order.
//
// Contract: a caller never waits longer than `timeoutMs`. Without a connection a command fails at once.
// A late answer does not drop the connection: the command's promise is rejected with RedisTimeout at
// `timeoutMs`, and the answer, when it comes, goes to the command's `late` callback (what Redis did for
// it, such as tokens granted, is not lost). Only a connection that has answered nothing for HUNG_MS
// (or 20 x timeoutMs, the longer) is dropped (every pending command fails) and made again, with backoff
// (100 ms doubling to 1 s).
//
// The timeout is checked after the event loop's next poll phase (setImmediate from the timer): a
// primary whose loop stalled past the deadline reads an answer already waiting in the socket before it
// declares the command late (Node runs timers before polling I/O in each loop iteration).

import net from 'node:net';
import { createHash } from 'node:crypto';

export type Reply = string | number | null | Reply[] | RedisError;

export class RedisError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedisError';
  }
}

export class RedisTimeout extends Error {
  constructor() {
    super('redis timeout');
    this.name = 'RedisTimeout';
  }
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout | undefined;
  /** Rejected with RedisTimeout; the answer goes to `late`. */
  timedOut: boolean;
  late: ((r: Reply) => void) | undefined;
}

const MIN_BACKOFF_MS = 100;
export const MAX_BACKOFF_MS = 1000;
const HUNG_MS = 2000;

export class RedisClient {
  private socket: net.Socket | undefined;
  private connected = false;
  private readonly pending: Pending[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private backoff = MIN_BACKOFF_MS;
  private retry: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly shas = new Map<string, string>();
  /** Called when the connection comes up or goes down. */
  onState: (up: boolean) => void = () => {};

  constructor(
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
  ) {
    this.connect();
  }

  get up(): boolean {
    return this.connected;
  }

  private connect(): void {
    this.retry = undefined;
    if (this.closed) return;
    const s = net.connect({ host: this.host, port: this.port, noDelay: true });
    this.socket = s;
    const timer = setTimeout(() => s.destroy(new Error('connect timeout')), Math.max(this.timeoutMs, 1000));
    s.once('connect', () => {
      clearTimeout(timer);
      this.connected = true;
      this.backoff = MIN_BACKOFF_MS;
      this.onState(true);
    });
    s.on('data', (d: Buffer) => this.onData(d));
    s.on('error', () => {});
    s.once('close', () => {
      clearTimeout(timer);
      const was = this.connected;
      this.connected = false;
      this.socket = undefined;
      this.buf = Buffer.alloc(0);
      this.failAll(new Error('redis connection closed'));
      if (was) this.onState(false);
      if (!this.closed) {
        this.retry = setTimeout(() => this.connect(), this.backoff);
        this.retry.unref();
        this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
      }
    });
  }

  private failAll(err: Error): void {
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      if (!p.timedOut) p.reject(err);
    }
  }

  /**
   * Sends one command; resolves with its reply (a RedisError reply is a rejection), or rejects with
   * RedisTimeout after `timeoutMs`, in which case the reply, when it comes, is passed to `late`.
   */
  command(args: ReadonlyArray<string | number>, late?: (r: Reply) => void): Promise<Reply> {
    const s = this.socket;
    if (!this.connected || !s) return Promise.reject(new Error('redis not connected'));
    let out = `*${args.length}\r\n`;
    for (const a of args) {
      const v = String(a);
      out += `$${Buffer.byteLength(v)}\r\n${v}\r\n`;
    }
    return new Promise<Reply>((resolve, reject) => {
      const p: Pending = { resolve, reject, timer: undefined, timedOut: false, late };
      p.timer = setTimeout(() => {
        p.timer = undefined;
        setImmediate(() => {
          if (p.timedOut || !this.pending.includes(p)) return;
          p.timedOut = true;
          reject(new RedisTimeout());
          // Answered nothing for HUNG_MS: a hung server or a dead path; drop it (fails every pending command).
          p.timer = setTimeout(() => s.destroy(new Error('redis hung')), Math.max(HUNG_MS, 20 * this.timeoutMs) - this.timeoutMs);
          p.timer.unref();
        });
      }, this.timeoutMs);
      this.pending.push(p);
      s.write(out);
    });
  }

  /** EVALSHA, with EVAL when the server does not know the script (NOSCRIPT: a restarted or flushed server). */
  async eval(script: string, keys: readonly string[], args: ReadonlyArray<string | number>, late?: (r: Reply) => void): Promise<Reply> {
    let sha = this.shas.get(script);
    if (!sha) this.shas.set(script, (sha = createHash('sha1').update(script).digest('hex')));
    // A late NOSCRIPT ran nothing: the script is sent again (its late answer still goes to `late`).
    const lateSha =
      late &&
      ((r: Reply) => {
        if (!(r instanceof RedisError)) late(r);
        else if (r.message.startsWith('NOSCRIPT')) this.command(['EVAL', script, keys.length, ...keys, ...args], late).then(late, () => {});
      });
    try {
      return await this.command(['EVALSHA', sha, keys.length, ...keys, ...args], lateSha);
    } catch (err) {
      if (!(err instanceof RedisError) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.command(['EVAL', script, keys.length, ...keys, ...args], late);
    }
  }

  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.socket?.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    let off = 0;
    for (;;) {
      let r: [Reply, number] | undefined;
      try {
        r = parse(this.buf, off);
      } catch (err) {
        this.socket?.destroy(err as Error);
        return;
      }
      if (r === undefined) break;
      off = r[1];
      const p = this.pending.shift();
      if (!p) continue;
      clearTimeout(p.timer);
      if (p.timedOut) {
        // Rejected already; what the server did for it still counts.
        if (p.late) p.late(r[0]);
      } else if (r[0] instanceof RedisError) p.reject(r[0]);
      else p.resolve(r[0]);
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : this.buf.subarray(off);
  }
}

/** One RESP2 value at `off`: [value, next offset], or undefined when the buffer does not hold all of it. */
export function parse(buf: Buffer, off: number): [Reply, number] | undefined {
  if (off >= buf.length) return undefined;
  const eol = buf.indexOf('\r\n', off);
  if (eol === -1) return undefined;
  const type = buf[off];
  const line = buf.toString('latin1', off + 1, eol);
  const next = eol + 2;
  switch (type) {
    case 43 /* + */:
      return [line, next];
    case 45 /* - */:
      return [new RedisError(line), next];
    case 58 /* : */:
      return [Number(line), next];
    case 36 /* $ */: {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (buf.length < next + n + 2) return undefined;
      return [buf.toString('utf8', next, next + n), next + n + 2];
    }
    case 42 /* * */: {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items: Reply[] = [];
      let at = next;
      for (let i = 0; i < n; i++) {
        const r = parse(buf, at);
        if (r === undefined) return undefined;
        items.push(r[0]);
        at = r[1];
      }
      return [items, at];
    }
    default:
      throw new Error(`redis: unexpected reply type ${String.fromCharCode(type ?? 0)}`);
  }
}

// The admin socket (docs/SPEC.md "Admin socket protocol"): newline-delimited JSON over a unix socket, one
// response line per request line, requests on one connection answered in order. The socket is created with
// mode 0660 (owner and group may use it: that is who may change the daemon at runtime); a stale socket file
// left by a dead daemon is replaced, a live one (another lb answering on it) is an error.
//
// A client may half-close (shut down its sending side) right after its request, as
// `echo '{"cmd":"status"}' | socat - UNIX-CONNECT:PATH` does: the connection is half-open (allowHalfOpen),
// every request line received is answered, then the server closes its side.
//
// Malformed input never stops or slows the daemon: a line that is not JSON, not an object, an unknown command
// or missing fields gets an `ok:false` answer with a stable code; a line over 64 KiB gets LINE_TOO_LONG and
// the connection is closed.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { peerOf, type Peer } from './peer.js';

export const MAX_LINE = 64 * 1024;

export class AdminError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

export type AdminRequest = Record<string, unknown> & { cmd: string };
/** Per connection: who is on the other end (src/admin/peer.ts), looked up on first call, then memoized. */
export interface AdminContext {
  peer(): Promise<Peer | undefined>;
}
export type AdminHandler = (req: AdminRequest, ctx: AdminContext) => Promise<unknown>;
const NO_PEER: AdminContext = { peer: async () => undefined };

export type AdminResponse =
  | { ok: true; result: unknown }
  | { ok: false; error: { code: string; message: string } & Record<string, unknown> };

export class AdminServer {
  private server: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();

  constructor(
    readonly socketPath: string,
    private readonly handler: AdminHandler,
  ) {}

  async start(): Promise<void> {
    await fs.promises.mkdir(path.dirname(this.socketPath), { recursive: true, mode: 0o750 });
    if (fs.existsSync(this.socketPath)) {
      if (await isLive(this.socketPath)) {
        throw new AdminError('ADMIN_SOCKET_IN_USE', `admin socket ${this.socketPath} is in use: another lb is running on it`);
      }
      fs.unlinkSync(this.socketPath);
    }
    const server = net.createServer({ allowHalfOpen: true }, (c) => this.onConnection(c));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: Error & { code?: string }) =>
        reject(new AdminError('ADMIN_SOCKET_FAILED', `cannot create admin socket ${this.socketPath}: ${err.code ?? err.message}`)),
      );
      // umask 0o117 while binding: the socket is never world-accessible, not even for an instant.
      const old = process.umask(0o117);
      server.listen(this.socketPath, () => {
        process.umask(old);
        resolve();
      });
    });
    fs.chmodSync(this.socketPath, 0o660);
  }

  private onConnection(c: net.Socket): void {
    this.conns.add(c);
    c.once('close', () => this.conns.delete(c));
    c.on('error', () => c.destroy());
    c.setEncoding('utf8');
    let buf = '';
    let queue = Promise.resolve();
    let peer: Promise<Peer | undefined> | undefined;
    const ctx: AdminContext = { peer: () => (peer ??= peerOf(c, this.socketPath)) };
    c.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.length > MAX_LINE) return this.tooLong(c);
        if (line.trim() === '') continue;
        queue = queue.then(() => this.answer(c, line, ctx));
      }
      if (buf.length > MAX_LINE) this.tooLong(c);
    });
    c.on('end', () => {
      if (buf.trim() !== '') {
        const line = buf;
        buf = '';
        queue = queue.then(() => this.answer(c, line, ctx));
      }
      queue.then(() => c.end());
    });
  }

  private tooLong(c: net.Socket): void {
    c.removeAllListeners('data');
    c.end(JSON.stringify({ ok: false, error: { code: 'LINE_TOO_LONG', message: `request line over ${MAX_LINE} bytes` } }) + '\n');
  }

  private async answer(c: net.Socket, line: string, ctx: AdminContext): Promise<void> {
    const res = await this.handle(line, ctx);
    if (!c.destroyed && c.writable) c.write(JSON.stringify(res) + '\n');
  }

  /** Parses and runs one request line; never throws. */
  async handle(line: string, ctx: AdminContext = NO_PEER): Promise<AdminResponse> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      return fail('BAD_REQUEST', 'request is not valid JSON');
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) return fail('BAD_REQUEST', 'request must be a JSON object');
    const cmd = (req as { cmd?: unknown }).cmd;
    if (typeof cmd !== 'string') return fail('MISSING_FIELD', 'request needs "cmd" (a string)');
    try {
      return { ok: true, result: await this.handler(req as AdminRequest, ctx) };
    } catch (err) {
      if (err instanceof AdminError) return { ok: false, error: { code: err.code, message: err.message, ...err.details } };
      return fail('INTERNAL', thrownMessage(err));
    }
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      /* already gone */
    }
  }
}

function fail(code: string, message: string): AdminResponse {
  return { ok: false, error: { code, message } };
}

/** A message for anything a handler threw or rejected with (not only Errors: `null`, `{}`, a Symbol). */
function thrownMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : undefined;
  if (typeof m === 'string' && m !== '') return m;
  try {
    return `internal error: ${String(err)}`;
  } catch {
    return 'internal error';
  }
}

/** True when something accepts connections on the unix socket at `p`. */
function isLive(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Field helpers for command handlers: each throws an AdminError with a stable code. */
export function str(req: AdminRequest, field: string): string {
  const v = req[field];
  if (v === undefined) throw new AdminError('MISSING_FIELD', `"${req.cmd}" needs "${field}"`);
  if (typeof v !== 'string' || v === '') throw new AdminError('INVALID_FIELD', `"${field}" must be a non-empty string`);
  return v;
}

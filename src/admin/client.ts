// The CLI's side of the admin socket: one request line out, one response line back.

import net from 'node:net';
import type { AdminResponse } from './server.js';

export class AdminUnreachable extends Error {
  constructor(
    readonly socketPath: string,
    override readonly cause: Error & { code?: string },
  ) {
    super(`cannot reach the lb daemon on admin socket ${socketPath}: ${cause.code ?? cause.message}`);
  }
}

export function adminRequest(socketPath: string, req: Record<string, unknown>, timeoutMs = 30_000): Promise<AdminResponse> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socketPath);
    let buf = '';
    let answered = false;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new AdminUnreachable(socketPath, Object.assign(new Error(`no answer within ${timeoutMs}ms`), { code: 'ETIMEDOUT' })));
    }, timeoutMs);
    c.setEncoding('utf8');
    c.once('connect', () => c.write(JSON.stringify(req) + '\n'));
    c.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl === -1) return;
      answered = true;
      clearTimeout(timer);
      c.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as AdminResponse);
      } catch {
        reject(new Error(`daemon sent a malformed answer: ${buf.slice(0, 200)}`));
      }
    });
    c.once('error', (err) => {
      clearTimeout(timer);
      if (!answered) reject(new AdminUnreachable(socketPath, err));
    });
    c.once('close', () => {
      clearTimeout(timer);
      if (!answered) reject(new AdminUnreachable(socketPath, Object.assign(new Error('connection closed without an answer'), { code: 'ECONNRESET' })));
    });
  });
}

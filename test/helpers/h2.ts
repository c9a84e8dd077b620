// HTTP/2 client helpers for tests: one request on a node:http2 session with its whole answer, and a
// command run to completion (curl, h2load).

import http2 from 'node:http2';
import { spawn } from 'node:child_process';

export interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
  trailers?: http2.IncomingHttpHeaders;
}

export function h2request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  body?: string | Buffer,
): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const s = session.request(headers, { endStream: body === undefined });
    let status = 0;
    let h: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    s.on('response', (r) => {
      h = r;
      status = Number(r[':status']);
    });
    s.on('trailers', (tr) => (trailers = tr));
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve({ status, headers: h, body: Buffer.concat(chunks).toString(), trailers }));
    s.on('error', reject);
    if (body !== undefined) s.end(body);
  });
}

export function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

// A client that resets its connection (RST, ECONNRESET at lb) before lb has decided what the connection
// speaks: in the middle of the HTTP/2 preface on a plain listener with `http2 = true`, in the middle of a
// PROXY header, or of an HTTP/1.1 head. Until the connection is handed on, only the code reading those first
// bytes listens to the socket; an error with no listener is an uncaught exception that ends the worker, and
// with it every other connection it holds. The worker must live on: after the resets, a request is answered
// by the same worker process.

import t from 'tap';
import net from 'node:net';
import { admin, waitFor } from './helpers/lb.js';
import { startLbProxy } from './helpers/differential.js';

const PP = 'PROXY TCP4 192.0.2.1 192.0.2.2 1000 80\r\n';
const VARIANTS: Array<{ name: string; listener: string; partial: string; request: string }> = [
  { name: 'h2c sniffing (http2 = true, plain)', listener: 'http2 = true', partial: 'PRI * HT', request: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' },
  { name: 'PROXY header (proxy_protocol = true)', listener: 'proxy_protocol = true', partial: 'PROXY TCP4 192.', request: `${PP}GET / HTTP/1.1\r\nHost: x\r\n\r\n` },
  { name: 'PROXY header, then the preface (both)', listener: 'proxy_protocol = true\nhttp2 = true', partial: `${PP}PRI * HT`, request: `${PP}GET / HTTP/1.1\r\nHost: x\r\n\r\n` },
  { name: 'HTTP/1.1 head (neither)', listener: '', partial: 'GET / HT', request: 'GET / HTTP/1.1\r\nHost: x\r\n\r\n' },
];

async function workerPids(socket: string): Promise<number[]> {
  const r = await admin(socket, { cmd: 'status' });
  return (r.result.workers.list as Array<{ pid: number | null }>).map((w) => w.pid ?? 0);
}

/** Connects, writes `bytes`, waits until lb has read them (the connection is idle on lb's side), resets. */
async function resetAfter(port: number, bytes: string): Promise<void> {
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  await new Promise<void>((resolve) => s.write(bytes, () => resolve()));
  // The bytes are in lb's socket buffer once written on loopback; give lb's read a chance first by a round
  // trip of our own: a second connection's connect completes only after lb's event loop has turned.
  const probe = net.connect(port, '127.0.0.1');
  probe.on('error', () => {});
  await new Promise<void>((resolve) => probe.once('connect', () => resolve()).once('error', () => resolve()));
  probe.destroy();
  s.resetAndDestroy();
}

/** One request on a new connection; the status line's code, or the error. */
function answer(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(request));
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(got);
      if (m) {
        s.destroy();
        resolve(m[1]!);
      }
    });
    s.on('error', (err: Error & { code?: string }) => resolve(err.code ?? err.message));
    s.on('close', () => resolve(`closed: ${got}`));
  });
}

for (const v of VARIANTS) {
  t.test(`a reset in the middle of the ${v.name} does not end the worker`, async (t) => {
    const p = await startLbProxy({ listener: v.listener });
    t.teardown(() => p.stop());
    const lb = p.lb!;
    t.equal(await answer(p.port, v.request), '200', 'a request is answered before');
    const before = await workerPids(lb.socket);
    for (let i = 0; i < 5; i++) await resetAfter(p.port, v.partial);
    t.equal(await answer(p.port, v.request), '200', 'a request is answered after five resets');
    const after = await waitFor(() => workerPids(lb.socket), 10_000, 'lb status');
    t.same(after, before, `the same worker answered (${before.join(',')} → ${after.join(',')})`);
    t.notOk(
      lb.logs().some((l) => l.level === 'fatal'),
      'no uncaught exception in a worker',
    );
  });
}

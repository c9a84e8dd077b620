// Many lb instances agree (docs/high-availability.md), shared by test/instances-agree-*.e2e.test.ts: three
// daemons started from the same config (only their listen port, admin socket and state file differ), with
// the same backends added at runtime in a different order on each, must send each key to the same backend
// (100,000 keys over the two hash algorithms).
//
// The keys go in an `x-key` header, pipelined over many keep-alive connections; each backend is a small raw
// HTTP server that answers its own name, so a key's backend is read from the response body.

import net from 'node:net';
import type { Test } from 'tap';
import { admin, freePort, httpConfig, startLb, type Lb } from './lb.js';

/**
 * Keys per algorithm: 50,000 for consistent-hash and 50,000 others for maglev, 100,000 in all, each sent
 * through all three instances (150,000 proxied requests per file). 100,000 per algorithm took 287 s (maglev) and
 * over 300 s (consistent-hash) per file on a 2-core machine at load average ~50; this keeps each well within
 * the 300 s budget.
 */
export const KEYS = 50_000;

/** A backend answering every request with its name (requests carry no body). */
async function nameServer(name: string): Promise<{ port: number; close(): Promise<void> }> {
  const response = Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${name.length}\r\n\r\n${name}`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    let pending = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      pending += d;
      let n = 0;
      let at: number;
      while ((at = pending.indexOf('\r\n\r\n')) !== -1) {
        pending = pending.slice(at + 4);
        n++;
      }
      if (n === 1) s.write(response);
      else if (n > 1) s.write(Buffer.concat(Array.from({ length: n }, () => response)));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/**
 * Sends `GET /` with `x-key: KEY` for every key, `depth` requests pipelined per write over `conns`
 * keep-alive connections; resolves with the body (backend name) answered for each key, by index.
 */
async function route(port: number, keys: string[], conns: number, depth: number): Promise<string[]> {
  const out: string[] = new Array(keys.length);
  let next = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      s.setEncoding('latin1');
      s.on('error', reject);
      let batch: number[] = [];
      let buf = '';
      const send = (): void => {
        batch = [];
        let req = '';
        while (batch.length < depth && next < keys.length) {
          const i = next++;
          batch.push(i);
          req += `GET / HTTP/1.1\r\nhost: lb\r\nx-key: ${keys[i]}\r\n\r\n`;
        }
        if (batch.length === 0) {
          s.end();
          s.removeAllListeners('close');
          resolve();
          return;
        }
        s.write(req);
      };
      let got = 0;
      s.on('data', (d: string) => {
        buf += d;
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end === -1) break;
          const head = buf.slice(0, end);
          const m = /\r\ncontent-length: *(\d+)/i.exec(head);
          if (!m || !head.startsWith('HTTP/1.1 200')) {
            reject(new Error(`unexpected response: ${head.slice(0, 200)}`));
            s.destroy();
            return;
          }
          const len = Number(m[1]);
          if (buf.length < end + 4 + len) break;
          out[batch[got++]!] = buf.slice(end + 4, end + 4 + len);
          buf = buf.slice(end + 4 + len);
          if (got === batch.length) {
            got = 0;
            send();
          }
        }
      });
      s.on('close', () => {
        if (batch.length > 0) reject(new Error(`connection closed with ${batch.length - got} of ${batch.length} pipelined requests unanswered`));
      });
      s.on('connect', send);
    });
  await Promise.all(Array.from({ length: conns }, one));
  return out;
}

function config(algorithm: string, port: number, backends: Array<{ name: string; port: number; weight: number }>): string {
  const list = backends.map((b) => `{ name = "${b.name}", address = "127.0.0.1:${b.port}", weight = ${b.weight} }`).join(', ');
  return httpConfig(port, `[pools.app]\nalgorithm = "${algorithm}"\nhash_key = "header:x-key"\nbackends = [ ${list} ]\n`);
}

/**
 * Starts three daemons with `algorithm` over four config backends (c1 with weight 2) and adds four more at
 * runtime (r2 with weight 3) in a different order on each, the last one also adding and removing an extra
 * backend; sends every key through each and checks they agree.
 */
export async function instancesAgree(t: Test, algorithm: string, firstKey: number): Promise<void> {
  const servers = await Promise.all(['c1', 'c2', 'c3', 'c4', 'r1', 'r2', 'r3', 'r4'].map(async (name) => ({ name, ...(await nameServer(name)) })));
  t.teardown(async () => {
    for (const s of servers) await s.close();
  });
  const configured = servers.filter((s) => s.name.startsWith('c')).map((s, i) => ({ name: s.name, port: s.port, weight: i === 0 ? 2 : 1 }));
  const runtime = servers.filter((s) => s.name.startsWith('r'));
  const daemons: Array<{ lb: Lb; port: number }> = [];
  t.teardown(async () => {
    for (const d of daemons) await d.lb.stop();
  });
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    daemons.push({ lb: await startLb(config(algorithm, port, configured), [port]), port });
  }
  const orders = [
    [0, 1, 2, 3],
    [3, 1, 0, 2],
    [2, 0, 3, 1],
  ];
  for (const [i, d] of daemons.entries()) {
    if (i === 2) t.equal((await admin(d.lb.socket, { cmd: 'add', pool: 'app', backend: 'tmp', address: `127.0.0.1:${runtime[0]!.port}` })).ok, true, 'instance 3: add app/tmp');
    for (const k of orders[i]!) {
      const r = runtime[k]!;
      const res = await admin(d.lb.socket, { cmd: 'add', pool: 'app', backend: r.name, address: `127.0.0.1:${r.port}`, weight: r.name === 'r2' ? 3 : 1 });
      t.equal(res.ok, true, `instance ${i + 1}: add app/${r.name}${res.ok ? '' : `: ${JSON.stringify(res.error)}`}`);
    }
    if (i === 2) t.equal((await admin(d.lb.socket, { cmd: 'remove', pool: 'app', backend: 'tmp' })).ok, true, 'instance 3: remove app/tmp');
  }

  const keys = Array.from({ length: KEYS }, (_, k) => {
    const i = firstKey + k;
    return `user-${i}-${(i * 2654435761) >>> 0}`;
  });
  const started = Date.now();
  // The three instances at once: each has one worker, so together they use every core.
  const answers = await Promise.all(daemons.map((d) => route(d.port, keys, 24, 64)));
  const secs = (Date.now() - started) / 1000;
  let differ = 0;
  const examples: string[] = [];
  const share = new Map<string, number>();
  for (let i = 0; i < KEYS; i++) {
    const [x, y, z] = [answers[0]![i], answers[1]![i], answers[2]![i]];
    share.set(x!, (share.get(x!) ?? 0) + 1);
    if (x === undefined || x !== y || x !== z) {
      differ++;
      if (examples.length < 5) examples.push(`${keys[i]}: ${x} / ${y} / ${z}`);
    }
  }
  t.equal(differ, 0, `${algorithm}: every key went to the same backend on all three instances ${examples.join('; ')}`);
  t.same([...share.keys()].sort(), ['c1', 'c2', 'c3', 'c4', 'r1', 'r2', 'r3', 'r4'], `${algorithm}: every backend, runtime-added ones included, got keys`);
  t.ok((share.get('r2') ?? 0) > (share.get('r1') ?? 0), `${algorithm}: weights are honoured (r2 weight 3: ${share.get('r2')}, r1: ${share.get('r1')})`);
  t.comment(`${algorithm}: ${KEYS} keys x 3 instances in ${secs.toFixed(1)} s; keys per backend ${JSON.stringify(Object.fromEntries([...share].sort()))}`);
}

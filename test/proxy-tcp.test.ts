// TCP (L4) proxying through the real daemon: echo with half-close, connect retry, distribution.

import t from 'tap';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { backends, freePort, startLb, waitFor } from './helpers/lb.js';

/** An upstream that reads until the client's FIN, then answers with what it got and closes. */
async function halfCloseEcho(name: string): Promise<{ port: number; close: () => Promise<void>; conns: number }> {
  const sockets = new Set<net.Socket>();
  const st = { port: 0, conns: 0, close: async () => {} };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    st.conns++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => {
      // The client has half-closed; this direction is still open.
      s.end(`${name}:${Buffer.concat(chunks).toString()}`);
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  st.port = (server.address() as net.AddressInfo).port;
  st.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return st;
}

/** lb, 1 worker, with one tcp listener on `port` over a round-robin pool of the given backend ports. */
function tcpLb(port: number, retries: number, connectTimeout: string, ports: number[]): ReturnType<typeof startLb> {
  return startLb(
    `
[daemon]
workers = 1
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.db]
protocol = "tcp"
listen = "127.0.0.1:${port}"
pool = "db"
[pools.db]
algorithm = "round-robin"
retries = ${retries}
connect_timeout = "${connectTimeout}"
backends = ${backends(ports.map((p) => ({ port: p })))}
`,
    [port],
  );
}

function exchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => {
      s.write(payload);
      s.end();
    });
    let b = '';
    s.on('data', (d) => (b += d));
    s.on('end', () => resolve(b));
    s.on('error', reject);
  });
}

t.test('tcp echo with half-close, connect retry to another backend', async (t) => {
  const a = await halfCloseEcho('a');
  const b = await halfCloseEcho('b');
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const dead = await freePort();
  const port = await freePort();
  const lb = await tcpLb(port, 2, '500ms', [a.port, dead, b.port]);
  t.teardown(() => lb.stop());
  const big = 'x'.repeat(200_000);
  const replies: string[] = [];
  for (let i = 0; i < 9; i++) replies.push(await exchange(port, i === 0 ? big : `msg${i}`));
  t.ok(replies[0] === `a:${big}` || replies[0] === `b:${big}`, 'a 200 KB message crossed both ways after the client half-closed');
  for (let i = 1; i < 9; i++) t.match(replies[i], new RegExp(`^[ab]:msg${i}$`), `connection ${i} answered in full`);
  // The readiness probe of startLb also made one connection.
  t.ok(a.conns >= 4 && b.conns >= 4, `the dead backend's turns went to the live ones (a=${a.conns}, b=${b.conns})`);
});

/**
 * A backend whose connects hang: a child process listens with backlog 1 and then blocks its event loop (for
 * 60 s at most, then exits), so it never accepts; once its accept queue is full (filled here), the kernel
 * drops further SYNs.
 */
async function hangingBackend(): Promise<{ port: number; close: () => void }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('node:net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
         process.stdout.write(String(s.address().port) + '\\n', () => { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000); process.exit(0); });
       });`,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.once('exit', () => reject(new Error('hanging backend exited')));
  });
  const fillers: net.Socket[] = [];
  for (let i = 0; i < 4; i++) fillers.push(net.connect({ port, host: '127.0.0.1' }).on('error', () => {}));
  // The queue is full when a further connect does not complete in 300 ms.
  await waitFor(
    async () =>
      new Promise<boolean>((resolve) => {
        const probe = net.connect({ port, host: '127.0.0.1' }).on('error', () => resolve(false));
        const timer = setTimeout(() => {
          probe.destroy();
          resolve(true);
        }, 300);
        probe.once('connect', () => {
          clearTimeout(timer);
          fillers.push(probe);
          resolve(false);
        });
      }),
    10_000,
    'the hanging backend stops completing connects',
  );
  return {
    port,
    close: () => {
      for (const s of fillers) s.destroy();
      child.kill('SIGKILL');
    },
  };
}

t.test('what a client sends while the backend connect is pending (data and FIN) reaches the backend that accepts', async (t) => {
  const live = await halfCloseEcho('live');
  const hang = await hangingBackend();
  t.teardown(() => {
    hang.close();
    return live.close();
  });
  const port = await freePort();
  const lb = await tcpLb(port, 1, '400ms', [hang.port, live.port]);
  t.teardown(() => lb.stop());
  // Round-robin alternates, so one of two connections waits out connect_timeout on the hanging backend
  // first; its 100 KB and FIN, sent at once, must all reach the live backend after the retry.
  const payload = 'y'.repeat(100_000);
  const took: number[] = [];
  for (let i = 0; i < 2; i++) {
    const t0 = Date.now();
    t.equal(await exchange(port, payload), `live:${payload}`, `connection ${i + 1}: everything sent crossed, then the FIN`);
    took.push(Date.now() - t0);
  }
  t.ok(Math.max(...took) >= 400, `one connection waited for the connect timeout first (${took.join(' ms, ')} ms)`);
});

// TCP (L4) proxying through the real daemon: echo with half-close, connect retry, distribution.

import t from 'tap';
import net from 'node:net';
import { backends, freePort, startLb } from './helpers/lb.js';

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
  const lb = await startLb(
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
retries = 2
connect_timeout = "500ms"
backends = ${backends([{ port: a.port }, { port: dead }, { port: b.port }])}
`,
    [port],
  );
  t.teardown(() => lb.stop());
  const big = 'x'.repeat(200_000);
  const replies: string[] = [];
  for (let i = 0; i < 9; i++) replies.push(await exchange(port, i === 0 ? big : `msg${i}`));
  t.ok(replies[0] === `a:${big}` || replies[0] === `b:${big}`, 'a 200 KB message crossed both ways after the client half-closed');
  for (let i = 1; i < 9; i++) t.match(replies[i], new RegExp(`^[ab]:msg${i}$`), `connection ${i} answered in full`);
  // The readiness probe of startLb also made one connection.
  t.ok(a.conns >= 4 && b.conns >= 4, `the dead backend's turns went to the live ones (a=${a.conns}, b=${b.conns})`);
});

// TCP (L4) proxying through the real daemon: echo with half-close, connect retry, distribution.

import t, { type Test } from 'tap';
import crypto from 'node:crypto';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { admin, backends, freePort, startLb, waitFor } from './helpers/lb.js';

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

/**
 * lb, 1 worker, with one tcp listener "db" on `port` over pool "db"; `pool` is the rest of [pools.db], and
 * `listener` / `daemon` add keys to those tables.
 */
function lbTcp(port: number, pool: string, more: { listener?: string; daemon?: string } = {}): ReturnType<typeof startLb> {
  return startLb(
    `
[daemon]
workers = 1
${more.daemon ?? ''}
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.db]
protocol = "tcp"
listen = "127.0.0.1:${port}"
pool = "db"
${more.listener ?? ''}
[pools.db]
${pool}
`,
    [port],
  );
}

/** lb with one tcp listener on `port` over a round-robin pool of the given backend ports. */
function tcpLb(port: number, retries: number, connectTimeout: string, ports: number[]): ReturnType<typeof startLb> {
  return lbTcp(
    port,
    `algorithm = "round-robin"
retries = ${retries}
connect_timeout = "${connectTimeout}"
backends = ${backends(ports.map((p) => ({ port: p })))}`,
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

t.test('a client that stops reading stops lb reading its backend; every byte arrives once it reads again', async (t) => {
  // 64 MiB, written by the backend as fast as its socket takes it. While the client reads nothing, what the
  // backend can hand over is bounded by the four kernel buffers between them (a few MiB each on loopback),
  // unless lb keeps reading the backend into its own memory.
  const total = 64 * 1024 * 1024;
  const chunk = crypto.randomBytes(64 * 1024);
  // Served once the client has sent a byte: startLb's readiness probe sends none.
  let handed = 0;
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    let started = false;
    s.once('data', () => {
      started = true;
      push();
    });
    // The probe's connection: answer its FIN with ours.
    s.on('end', () => {
      if (!started) s.end();
    });
    const push = (): void => {
      while (handed < total) {
        handed += chunk.length;
        if (!s.write(chunk)) {
          s.once('drain', push);
          return;
        }
      }
      s.end();
    };
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = await freePort();
  const lb = await tcpLb(port, 0, '1s', [(server.address() as net.AddressInfo).port]);
  t.teardown(() => lb.stop());
  const client = net.connect({ port, host: '127.0.0.1' });
  client.pause();
  await new Promise((r) => client.once('connect', r));
  client.write('go');
  // Reading resumes when what the backend hands over has stayed the same for 300 ms.
  let last = -1;
  await waitFor(
    () => {
      const still = handed === last && handed > 0;
      last = handed;
      return still;
    },
    20_000,
    'the backend blocked on a client that does not read',
    300,
  );
  const stalledAt = handed;
  t.ok(stalledAt < total / 2, `the backend stalled after ${(stalledAt / 2 ** 20).toFixed(1)} MiB of 64`);
  const hash = crypto.createHash('sha256');
  let got = 0;
  client.on('data', (d: Buffer) => {
    hash.update(d);
    got += d.length;
  });
  client.resume();
  await new Promise((r) => client.once('end', r));
  client.destroy();
  const want = crypto.createHash('sha256');
  for (let i = 0; i < total / chunk.length; i++) want.update(chunk);
  t.equal(got, total, 'all 64 MiB arrived');
  t.equal(hash.digest('hex'), want.digest('hex'), 'intact and in order');
});

/** A backend that echoes what it reads (half-close passed back), closed at the end of test `t`. */
async function echoBackend(t: Test): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as net.AddressInfo).port;
}

t.test('20 MiB each way at once through an echo backend arrive intact', async (t) => {
  const echoPort = await echoBackend(t);
  const port = await freePort();
  const lb = await tcpLb(port, 0, '1s', [echoPort]);
  t.teardown(() => lb.stop());
  const payload = crypto.randomBytes(20 * 1024 * 1024);
  const back = await new Promise<Buffer>((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(payload));
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
  t.equal(back.length, payload.length, 'as many bytes came back as went out');
  t.ok(back.equals(payload), 'the same bytes, in order');
});

t.test('a client that resets while its backend connect is pending leaves no connection counted on that backend', async (t) => {
  const hang = await hangingBackend();
  t.teardown(() => hang.close());
  const port = await freePort();
  // connect_timeout is far longer than the test: only the resets can end these attempts.
  const lb = await lbTcp(
    port,
    `retries = 0
connect_timeout = "60s"
backends = ${backends([{ name: 'hang', port: hang.port }])}`,
    { daemon: 'grace_period = "1s"' },
  );
  t.teardown(() => lb.stop());
  const inflight = async (): Promise<number> => (await admin(lb.socket, { cmd: 'ready', pool: 'db', backend: 'hang' })).result.inflight;
  // startLb's readiness probe sent a FIN, which lb holds for the backend: its attempt stays counted.
  const before = await inflight();
  const clients: net.Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const c = net.connect({ port, host: '127.0.0.1' }).on('error', () => {});
    await new Promise((r) => c.once('connect', r));
    clients.push(c);
  }
  await waitFor(async () => (await inflight()) === before + 3 || undefined, 5_000, 'three more connects pending on the backend');
  for (const c of clients) c.resetAndDestroy();
  await waitFor(async () => (await inflight()) === before || undefined, 5_000, 'the reset clients\' attempts no longer counted');
  t.pass(`3 pending connects counted (${before} -> ${before + 3}), then no longer once their clients reset`);
});

t.test('a tcp pool whose backend is a host name: resolved, spliced with half-close', async (t) => {
  const a = await halfCloseEcho('named');
  t.teardown(() => a.close());
  const port = await freePort();
  const lb = await lbTcp(port, `backends = [ { address = "localhost:${a.port}" } ]`);
  t.teardown(() => lb.stop());
  const big = 'z'.repeat(300_000);
  t.equal(await exchange(port, big), `named:${big}`, '300 KB crossed both ways after the client half-closed');
  t.equal(await exchange(port, 'again'), 'named:again', 'a second connection too');
});

t.test('tcp idle_timeout: a silent connection is closed on time, one with traffic in either direction is not', async (t) => {
  const echoPort = await echoBackend(t);
  const port = await freePort();
  const lb = await lbTcp(port, `backends = ${backends([{ port: echoPort }])}`, { listener: 'idle_timeout = "1s"' });
  t.teardown(() => lb.stop());
  const open = async (): Promise<{ s: net.Socket; closed: Promise<number> }> => {
    const s = net.connect({ port, host: '127.0.0.1' }).on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    return { s, closed: new Promise((r) => s.once('close', () => r(performance.now()))) };
  };
  // Resolves on the echo, or when the connection is gone instead.
  const echo = (s: net.Socket, text: string): Promise<void> =>
    new Promise((resolve) => {
      if (s.destroyed) return resolve();
      s.once('data', () => resolve());
      s.once('close', () => resolve());
      s.write(text);
    });
  const within5s = (closed: Promise<number>): Promise<number> =>
    Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(Infinity), 5_000))]);

  const mute = await open();
  const opened = performance.now();
  const quiet = await open();
  await echo(quiet.s, 'once');
  const lastByte = performance.now();
  // The busy one talks every 300 ms for 2.4 s: twice the timeout in all, never 1 s silent.
  const busy = await open();
  let busyClosed = false;
  void busy.closed.then(() => (busyClosed = true));
  for (let i = 0; i < 8; i++) {
    await echo(busy.s, `tick${i}`);
    await new Promise((r) => setTimeout(r, 300));
  }
  const ms = (await within5s(quiet.closed)) - lastByte;
  const muteMs = (await within5s(mute.closed)) - opened;
  quiet.s.destroy();
  mute.s.destroy();
  t.ok(ms >= 900 && ms < 2500, `the silent connection was closed ${Math.round(ms)} ms after its last byte (idle_timeout 1s)`);
  t.ok(muteMs >= 900 && muteMs < 2500, `a connection that never sent a byte was closed ${Math.round(muteMs)} ms after it opened`);
  t.notOk(busyClosed, 'the connection with traffic every 300 ms stayed open for 2.4 s');
  busy.s.destroy();
});

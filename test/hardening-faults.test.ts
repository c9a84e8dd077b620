// Faults under load, each bounded in time and request count, each with the number of failed requests
// asserted against what is unavoidable, and the daemon checked healthy afterwards (status answers, a
// request succeeds): backends killed and restarted, a backend that accepts and never answers, a backend
// that resets mid-response, and a reload every second for 10 s. (A worker killed with SIGKILL is covered
// by test/daemon.test.ts.)

import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import { lbConfig, timedGet } from './helpers/hardening.js';
import { admin, cli, freePort, startLb, startLoad, startUpstream, waitFor, type Lb, type Upstream, withStateFile } from './helpers/lb.js';

/** Status answers and a request succeeds (of `tries` sequential ones, for pools with a broken backend). */
async function healthy(t: { equal: (a: unknown, b: unknown, m: string) => void }, lb: Lb, port: number, tries = 1): Promise<void> {
  const s = await admin(lb.socket, { cmd: 'status' });
  t.equal(s.ok, true, 'afterwards: status answers');
  const statuses: number[] = [];
  for (let i = 0; i < tries; i++) statuses.push((await timedGet(port, '/after', false, 5000)).status);
  t.equal(statuses.includes(200), true, `afterwards: a request succeeds (${statuses.join(', ')})`);
}

t.test('backends killed and restarted under load: no failed request', async (t) => {
  const ups: Upstream[] = [await startUpstream('a'), await startUpstream('b')];
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, workers: 2, upstreams: ups.map((u) => u.port), pool: 'retries = 2\nconnect_timeout = "500ms"' }), [port]);
  t.teardown(() => lb.stop());
  const kept = startLoad(port, { concurrency: 4, keepAlive: true });
  t.teardown(() => kept.stop());
  const fresh = startLoad(port, { concurrency: 4, keepAlive: false });
  t.teardown(() => fresh.stop());
  const served = (): number => kept.result.ok + fresh.result.ok;
  for (const round of [0, 1, 0, 1]) {
    const victim = ups[round]!;
    const mark = served();
    await victim.close(); // cuts every connection, kept-alive and in-flight, as a dying process does
    await waitFor(() => served() > mark + 1000, 10_000, `traffic to flow with backend ${victim.name} down`);
    ups[round] = await startUpstream(victim.name, undefined, victim.port);
    const back = ups[round]!.hits;
    await waitFor(() => ups[round]!.hits > back + 50, 10_000, `backend ${victim.name} to get traffic again after its restart`);
  }
  const a = await kept.stop();
  const b = await fresh.stop();
  t.ok(a.ok + b.ok > 1000, `load ran throughout (kept-alive ${a.ok}, new-connection ${b.ok})`);
  // Every request is an idempotent GET without a body: a connect failure or a reset before the response
  // is retried on the other backend, so no failure is unavoidable.
  t.equal(a.failed + b.failed, 0, `failed requests: ${a.failed + b.failed} (${[...a.errors, ...b.errors].slice(0, 3).join('; ')})`);
  await healthy(t, lb, port);
});

t.test('a backend that accepts and never answers: 504 at response_timeout; requests to the other backend unaffected', async (t) => {
  const good = await startUpstream('good');
  t.teardown(() => good.close());
  const held = new Set<net.Socket>();
  const hole = net.createServer((s) => {
    held.add(s);
    s.on('error', () => {});
    s.once('close', () => held.delete(s));
  });
  await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (held.forEach((s) => s.destroy()), hole.close(() => r()))));
  const holePort = (hole.address() as net.AddressInfo).port;
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [holePort, good.port], pool: 'retries = 2\nresponse_timeout = "500ms"' }), [port]);
  t.teardown(() => lb.stop());
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => timedGet(port, `/r${i}`, false, 5000)));
  const timeouts = results.filter((r) => r.status === 504);
  const ok = results.filter((r) => r.status === 200);
  t.equal(timeouts.length + ok.length, 40, `every request is 504 or 200 (${results.map((r) => r.status).join(',')})`);
  t.ok(timeouts.length >= 15 && timeouts.length <= 25, `round-robin: about half went to the silent backend and got 504 (${timeouts.length})`);
  // The response timer is armed when the request is written: 504 at 500 ms, plus scheduling slack.
  t.ok(timeouts.every((r) => r.ms >= 450 && r.ms < 1000), `each 504 came at response_timeout (${timeouts.map((r) => Math.round(r.ms)).join(',')}ms)`);
  t.ok(ok.every((r) => r.ms < 400 && r.body === 'good'), `each request to the good backend answered promptly (max ${Math.round(Math.max(...ok.map((r) => r.ms)))}ms)`);
  t.match(timeouts[0]?.body ?? '', /504 Gateway Timeout/, '504 body says why');
  await healthy(t, lb, port, 2);
});

t.test('a backend that resets mid-response: the client sees a cut response, never a short body taken as whole', async (t) => {
  // Answers a head announcing more than it sends, then resets; /chunked the same with chunked framing.
  const up = net.createServer((s) => {
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      if (buf.startsWith('GET /ok ') || buf.startsWith('GET /after ')) {
        s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      } else if (buf.startsWith('GET /chunked ')) {
        s.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n${'c'.repeat(1024)}\r\n`);
        setTimeout(() => s.resetAndDestroy(), 50);
      } else {
        s.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`);
        setTimeout(() => s.resetAndDestroy(), 50);
      }
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => up.close(() => r())));
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [(up.address() as net.AddressInfo).port] }), [port]);
  t.teardown(() => lb.stop());
  for (const p of ['/length', '/chunked']) {
    for (let i = 0; i < 5; i++) {
      const r = await new Promise<{ status: number; bytes: number; complete: boolean; error?: string }>((resolve) => {
        const req = http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
          let bytes = 0;
          res.on('data', (d: Buffer) => (bytes += d.length));
          res.on('end', () => resolve({ status: res.statusCode!, bytes, complete: res.complete }));
          res.on('error', (err) => resolve({ status: res.statusCode!, bytes, complete: res.complete, error: err.message }));
          res.on('aborted', () => resolve({ status: res.statusCode!, bytes, complete: false, error: 'aborted' }));
        });
        req.on('error', (err) => resolve({ status: 0, bytes: 0, complete: false, error: err.message }));
        req.setTimeout(5000, () => req.destroy(new Error('timeout')));
      });
      t.equal(r.complete, false, `${p} #${i + 1}: the response is seen as cut (status ${r.status}, ${r.bytes} bytes, ${r.error})`);
    }
  }
  const ok = await timedGet(port, '/ok', false);
  t.equal(ok.status, 200, 'the next request to the same backend succeeds');
  await healthy(t, lb, port);
});

t.test('a backend that stops mid-body: the client sees the response cut at read_timeout; the next request is served', async (t) => {
  const held = new Set<net.Socket>();
  const up = net.createServer((s) => {
    held.add(s);
    s.on('error', () => {});
    s.once('close', () => held.delete(s));
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n\r\n')) return;
      if (buf.startsWith('GET /ok ')) s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      else s.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`); // then nothing
    });
  });
  await new Promise<void>((r) => up.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => (held.forEach((s) => s.destroy()), up.close(() => r()))));
  const port = await freePort();
  const lb = await startLb(lbConfig({ port, upstreams: [(up.address() as net.AddressInfo).port], pool: 'read_timeout = "500ms"' }), [port]);
  t.teardown(() => lb.stop());
  const t0 = performance.now();
  const r = await new Promise<{ status: number; bytes: number; complete: boolean }>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/stall', agent: false }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      const done = (): void => resolve({ status: res.statusCode!, bytes, complete: res.complete });
      res.on('end', done);
      res.on('error', done);
      res.on('aborted', done);
    });
    req.on('error', () => resolve({ status: 0, bytes: 0, complete: false }));
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
  });
  const ms = performance.now() - t0;
  t.same([r.status, r.bytes, r.complete], [200, 1000, false], 'the head and the 1000 bytes that came, then a cut response');
  t.ok(ms >= 450 && ms < 1500, `cut ${Math.round(ms)} ms after the request (read_timeout 500 ms)`);
  await waitFor(() => held.size === 0, 2000, 'lb to close its connection to the stalled backend');
  t.pass('lb closed its connection to the stalled backend');
  const ok = await timedGet(port, '/ok', false);
  t.equal(ok.status, 200, 'the next request is served');
});

t.test('a reload every second for 10 s under load: no failed request', async (t) => {
  const ups: Upstream[] = await Promise.all(['a', 'b', 'c'].map((n) => startUpstream(n)));
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const cfg = (i: number): string =>
    lbConfig({ port, workers: 2, upstreams: (i % 2 ? ups : ups.slice(0, 2)).map((u) => u.port), pool: `retries = 2\nconnect_timeout = "${1 + (i % 3)}s"` });
  const lb = await startLb(cfg(0), [port]);
  t.teardown(() => lb.stop());
  const kept = startLoad(port, { concurrency: 4, keepAlive: true });
  t.teardown(() => kept.stop());
  const fresh = startLoad(port, { concurrency: 2, keepAlive: false });
  t.teardown(() => fresh.stop());
  const t0 = Date.now();
  let applied = 0;
  for (let i = 1; i <= 10; i++) {
    fs.writeFileSync(lb.configFile, withStateFile(cfg(i).replaceAll('{{socket}}', lb.socket), lb.dir));
    const r = await cli(['reload', '-s', lb.socket]);
    if (r.code === 0) applied++;
    const next = t0 + i * 1000;
    await waitFor(() => Date.now() >= next, 2000, 'the next second');
  }
  const a = await kept.stop();
  const b = await fresh.stop();
  t.equal(applied, 10, '10 reloads applied, one a second');
  t.ok(a.ok + b.ok > 500, `load ran throughout (kept-alive ${a.ok}, new-connection ${b.ok})`);
  t.equal(a.failed + b.failed, 0, `failed requests: ${a.failed + b.failed} (${[...a.errors, ...b.errors].slice(0, 3).join('; ')})`);
  await healthy(t, lb, port);
});

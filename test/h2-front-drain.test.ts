// HTTP/2 flow control end to end, and GOAWAY with in-flight streams finished, through the real daemon:
// - a 64 MiB response to an h2 client that stops reading, then reads slowly: the backend is held back
//   (lb does not buffer the response): the worker's RSS (/proc) barely moves while the client does not
//   read, and the backend is never far ahead of the client while it reads slowly;
// - `lb reload` (real CLI) that keeps the listener: the stream in flight goes on; one that moves the
//   listener elsewhere: the old connection gets GOAWAY and its stream in flight completes whole;
// - SIGTERM: GOAWAY, the stream in flight completes with its full body, lb exits 0.

import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import { cli, freePort, httpConfig, startLb, startUpstream, waitFor } from './helpers/lb.js';
import { childPids, procStats } from './helpers/hardening.js';

const MiB = 1024 * 1024;

t.test('a slow HTTP/2 client reading 64 MiB: back-pressure to the backend, bounded worker RSS', async (t) => {
  const TOTAL = 64 * MiB;
  const chunk = Buffer.alloc(MiB, 120);
  const state = { written: 0, waiting: false };
  const up = await startUpstream('big', (req, res) => {
    if (req.url !== '/big') {
      res.end('warm');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': TOTAL });
    const pump = (): void => {
      state.waiting = false;
      while (state.written < TOTAL) {
        state.written += chunk.length;
        if (!res.write(chunk)) {
          state.waiting = true;
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  });
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(httpConfig(port, `http2 = true\n[pools.app]\nbackends = [{ address = "127.0.0.1:${up.port}" }]`), [port]);
  t.teardown(() => lb.stop());
  const [worker] = await waitFor(() => {
    const c = childPids(lb.proc.pid!);
    return c.length === 1 ? c : undefined;
  }, 10_000, 'the worker');
  const s = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => s.close());
  // Warm the path once (the first request's allocations are not the response's).
  await new Promise<void>((resolve) => {
    const w = s.request({ ':path': '/warm' });
    w.resume();
    w.on('close', () => resolve());
  });
  const base = procStats(worker!)!.rssKiB;

  const st = s.request({ ':path': '/big' });
  st.on('error', (err) => t.fail(`the stream failed: ${err.message}`));
  let received = 0;
  st.on('data', (d: Buffer) => (received += d.length));
  st.pause();
  // Not reading: the backend must end up waiting for lb to take more, far short of the whole body.
  let last = -1;
  await waitFor(() => {
    const stalled = state.waiting && state.written === last;
    last = state.written;
    return stalled;
  }, 60_000, 'the backend to be held back', 300);
  const heldAt = state.written;
  let peak = procStats(worker!)!.rssKiB;
  t.ok(heldAt < TOTAL / 2, `the backend was held back after ${heldAt / MiB} MiB of ${TOTAL / MiB} MiB`);
  const held = (peak - base) / 1024;
  t.ok(held < 16, `worker RSS while the client does not read: ${held.toFixed(1)} MiB over its ${(base / 1024).toFixed(1)} MiB baseline`);
  // Now read, slowly: a pause after every chunk. What the backend has written beyond what the client has
  // read is what sits in lb and the kernel's socket buffers between them: it stays bounded all along.
  let ahead = 0;
  const done = new Promise<void>((resolve) => st.on('end', () => resolve()));
  st.on('data', () => {
    st.pause();
    ahead = Math.max(ahead, state.written - received);
    peak = Math.max(peak, procStats(worker!)?.rssKiB ?? 0);
    setImmediate(() => st.resume());
  });
  st.resume();
  await done;
  t.equal(received, TOTAL, 'the whole 64 MiB arrived');
  t.ok(ahead < TOTAL / 4, `the backend was never more than ${(ahead / MiB).toFixed(1)} MiB ahead of the slow client`);
  // Chunks that passed through are garbage until V8 collects them (Buffers are external memory, which
  // forces a GC only past 64 MiB of growth), so the peak while reading is reported, not judged.
  t.comment(`worker RSS peak while reading: ${((peak - base) / 1024).toFixed(1)} MiB over the baseline`);
});

/** A backend that answers /slow with 10 parts of 10 KiB over about a second; anything else at once. */
async function slowUpstream() {
  const state = { started: 0 };
  const up = await startUpstream('slow', (req, res) => {
    if (req.url !== '/slow') {
      res.end('quick');
      return;
    }
    state.started++;
    res.writeHead(200, { 'content-type': 'text/plain' });
    let n = 0;
    const timer = setInterval(() => {
      res.write(Buffer.alloc(10 * 1024, 48 + n));
      if (++n === 10) {
        clearInterval(timer);
        res.end();
      }
    }, 100);
    res.on('close', () => clearInterval(timer));
  });
  return { up, state };
}

/** Starts a /slow stream; resolves with its status and body length once it ends (or rejects on a reset). */
function slowStream(s: http2.ClientHttp2Session): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const st = s.request({ ':path': '/slow' });
    let status = 0;
    let bytes = 0;
    st.on('response', (h) => (status = Number(h[':status'])));
    st.on('data', (d: Buffer) => (bytes += d.length));
    st.on('end', () => resolve({ status, bytes }));
    st.on('error', reject);
  });
}

t.test('lb reload: streams in flight complete; a moved listener sends GOAWAY first', async (t) => {
  const { up, state } = await slowUpstream();
  t.teardown(() => up.close());
  const [port, port2] = [await freePort(), await freePort()];
  const pools = (retries: number) => `[pools.app]\nretries = ${retries}\nbackends = [{ address = "127.0.0.1:${up.port}" }]`;
  const lb = await startLb(httpConfig(port, `http2 = true\n${pools(2)}`), [port]);
  t.teardown(() => lb.stop());

  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on('error', () => {});
  t.teardown(() => s.close());
  let goaway: number | undefined;
  s.on('goaway', (code) => (goaway = code));

  // A reload that keeps the listener: nothing happens to the connection.
  const first = slowStream(s);
  await waitFor(() => state.started === 1, 10_000, 'the first stream at the backend');
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace('retries = 2', 'retries = 1'));
  const r1 = await cli(['reload', '-s', lb.socket]);
  t.equal(r1.code, 0, `lb reload exits 0 ${r1.stderr}`);
  t.same(await first, { status: 200, bytes: 100 * 1024 }, 'the stream in flight across the reload completed whole');
  t.equal(goaway, undefined, 'no GOAWAY when the listener is kept');

  // A reload that moves the listener: the old one drains.
  const second = slowStream(s);
  await waitFor(() => state.started === 2, 10_000, 'the second stream at the backend');
  fs.writeFileSync(lb.configFile, fs.readFileSync(lb.configFile, 'utf8').replace(`127.0.0.1:${port}"`, `127.0.0.1:${port2}"`));
  const r2 = await cli(['reload', '-s', lb.socket]);
  t.equal(r2.code, 0, `lb reload exits 0 ${r2.stderr}`);
  await waitFor(() => goaway !== undefined, 10_000, 'GOAWAY on the old listener\'s connection');
  t.equal(goaway, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY NO_ERROR');
  t.same(await second, { status: 200, bytes: 100 * 1024 }, 'the stream in flight completed whole after the GOAWAY');
  const s2 = http2.connect(`http://127.0.0.1:${port2}`);
  t.teardown(() => s2.close());
  const q = await new Promise<number>((resolve, reject) => {
    const st = s2.request({ ':path': '/q' });
    st.on('response', (h) => resolve(Number(h[':status'])));
    st.on('error', reject);
    st.resume();
  });
  t.equal(q, 200, 'the moved listener serves HTTP/2');
});

t.test('SIGTERM: GOAWAY, the stream in flight completes, lb exits 0', async (t) => {
  const { up, state } = await slowUpstream();
  t.teardown(() => up.close());
  const port = await freePort();
  const lb = await startLb(httpConfig(port, `http2 = true\n[pools.app]\nbackends = [{ address = "127.0.0.1:${up.port}" }]`), [port]);
  t.teardown(() => lb.stop());
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on('error', () => {});
  t.teardown(() => s.destroy());
  let goaway: number | undefined;
  s.on('goaway', (code) => (goaway = code));
  const inflight = slowStream(s);
  await waitFor(() => state.started === 1, 10_000, 'the stream at the backend');
  lb.proc.kill('SIGTERM');
  await waitFor(() => goaway !== undefined, 10_000, 'GOAWAY after SIGTERM');
  t.equal(goaway, http2.constants.NGHTTP2_NO_ERROR, 'GOAWAY NO_ERROR');
  t.same(await inflight, { status: 200, bytes: 100 * 1024 }, 'the stream in flight completed with its full body');
  t.equal(await lb.exited, 0, 'lb exits 0');
  // An HTTP/1.1 request was not part of this; the listener is gone.
  await new Promise<void>((resolve) => {
    http.get({ port, host: '127.0.0.1', path: '/', agent: false }).on('error', () => resolve()).on('response', () => resolve());
  });
});

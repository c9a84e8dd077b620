// The primary's sends to workers (src/daemon/messages.ts sendToWorker) when a worker has died and the
// primary has not yet seen it go: the failure reaches the caller and nothing is thrown or emitted.

import t from 'tap';
import cluster, { type Worker } from 'node:cluster';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { sendToWorker } from '../src/daemon/messages.js';
import { procState } from './helpers/lb.js';

const fixture = fileURLToPath(new URL('../../test/fixtures/idle-worker.mjs', import.meta.url));

function fork(): Promise<Worker> {
  cluster.setupPrimary({ exec: fixture, silent: true });
  const w = cluster.fork();
  return new Promise((resolve, reject) => {
    w.once('online', () => resolve(w));
    w.once('exit', () => reject(new Error('fixture worker exited during start')));
  });
}

/**
 * Whether `pid` has been torn down but not reaped, read synchronously from /proc: its thread-group leader
 * is a zombie and every other thread is gone. Only then are its files, the IPC channel among them, closed
 * (the leader shows 'Z' while the process's other threads may still be exiting).
 */
function torn(pid: number): boolean {
  return procState(pid) === 'Z' && fs.readdirSync(`/proc/${pid}/task`).length === 1;
}

t.test('a send to a worker killed before the event loop saw it fails to the caller, not as an error event', { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
  const w = await fork();
  const pid = w.process.pid!;
  const exited = new Promise((r) => w.once('exit', r));
  const errors: Error[] = [];
  w.on('error', (e) => errors.push(e)); // only to observe: sendToWorker must not make one
  process.kill(pid, 'SIGKILL');
  // Synchronous wait (the event loop must not run, or it would handle the disconnect): the worker is a
  // torn down once the kernel has closed its end of the IPC channel.
  const deadline = Date.now() + 5_000;
  while (!torn(pid) && Date.now() < deadline);
  t.ok(torn(pid), 'the worker is dead and not reaped');
  t.ok(w.isConnected(), 'the primary still sees the worker connected');
  // Either outcome ends the wait: the failure reported to the caller, or an 'error' event.
  const err = await new Promise<Error | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 5_000);
    w.once('error', () => resolve(undefined));
    sendToWorker(w, { t: 'stop', graceMs: 0 }, (e) => {
      clearTimeout(timer);
      resolve(e);
    });
  });
  t.match((err as NodeJS.ErrnoException | undefined)?.code, /^(EPIPE|ECONNRESET)$/, `the send failed to its caller (${err?.message})`);
  t.same(errors.map((e) => e.message), [], 'no error event');
  await exited;
  const closed = await new Promise<Error>((resolve) => sendToWorker(w, { t: 'stop', graceMs: 0 }, resolve));
  t.equal((closed as NodeJS.ErrnoException).code, 'ERR_IPC_CHANNEL_CLOSED', 'after exit, a send reports the closed channel');
  // The default onFail ignores the failure: no throw, no error event.
  sendToWorker(w, { t: 'stop', graceMs: 0 });
  await new Promise((r) => setImmediate(r));
  t.same(errors.map((e) => e.message), [], 'still no error event');
});

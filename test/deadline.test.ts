// Deadline (src/dataplane/deadline.ts): the timeout the HTTP server and client re-arm per request. It
// records each arm() and lets its one timer run to the moment it was set for, then waits for the rest:
// what is checked here is that it never fires before the last arm()'s duration has passed, fires once
// after it, and not at all after clear().

import t, { type Test } from 'tap';
import { Deadline } from '../src/dataplane/deadline.js';
import { waitFor } from './helpers/lb.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Keeps the process alive while a test waits on unref'd timers. */
function hold(t: Test): void {
  const keep = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(keep));
}

t.test('re-armed again and again, it fires once, a full duration after the last arm', async (t) => {
  hold(t);
  const fired: number[] = [];
  const d = new Deadline(() => fired.push(performance.now()));
  let lastArm = 0;
  // Re-armed every 20 ms for 300 ms with a 100 ms duration: the first timer fires while the wait is not over.
  for (let i = 0; i < 15; i++) {
    d.arm(100);
    lastArm = performance.now();
    await sleep(20);
    t.equal(fired.length, 0, `not fired while re-armed (arm ${i + 1})`);
  }
  await waitFor(() => fired.length > 0, 5000, 'the deadline fires');
  // Node timers run on a millisecond clock: allow it 1 ms.
  t.ok(fired[0]! - lastArm >= 99, `fired ${(fired[0]! - lastArm).toFixed(1)} ms after the last arm (duration 100 ms)`);
  await sleep(250);
  t.equal(fired.length, 1, 'fired once');
});

t.test('clear() stops a deadline that was re-armed; arm() after it starts a new one', async (t) => {
  hold(t);
  let fired = 0;
  const d = new Deadline(() => fired++);
  d.arm(50);
  await sleep(30);
  d.arm(50);
  d.clear();
  await sleep(150);
  t.equal(fired, 0, 'cleared: not fired');
  const armed = performance.now();
  d.arm(50);
  await waitFor(() => fired > 0, 5000, 'armed again, it fires');
  t.ok(performance.now() - armed >= 49, 'armed again: fired after its duration');
});

t.test('a new duration replaces the wait; 0 never fires', async (t) => {
  hold(t);
  const fired: number[] = [];
  const d = new Deadline(() => fired.push(performance.now()));
  d.arm(120_000);
  const armed = performance.now();
  d.arm(60);
  // Had the first duration held, it would fire only after 120 s.
  await waitFor(() => fired.length > 0, 60_000, 'the shorter duration ends the wait');
  t.ok(fired[0]! - armed >= 59, 'the shorter duration ended the wait, not before it');
  d.arm(40);
  d.arm(0);
  await sleep(150);
  t.equal(fired.length, 1, 'arm(0): never fires');
});

t.test('the callback may re-arm it (a wait extended from inside its own timeout)', async (t) => {
  hold(t);
  let fired = 0;
  const d = new Deadline(() => {
    fired++;
    if (fired < 3) d.arm(30);
  });
  d.arm(30);
  await waitFor(() => fired === 3, 5000, 'three fires');
  await sleep(100);
  t.equal(fired, 3, 'fired once per arm');
});

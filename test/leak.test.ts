// No leaks (CI version): 50,000 requests through a 2-worker lb in two equal rounds — kept-alive
// (autocannon), one per new connection, and aborted mid-way (client gone while the upstream answers,
// uploads cut short, half heads, requests abandoned before the answer). After each round lb must be idle
// again (no open client connection, nothing in flight, its upstream keep-alive pool drained) and every
// process's open fds back to where they started (exact signals), and RSS within a coarse bound (it wanders
// with V8's heap sizing; the soak run is the RSS trend check).
// The long version (1,000,000 requests, 10 rounds) is test/leak-soak.mjs.

import t from 'tap';
import { formatLeakReport, leakRun } from './helpers/hardening.js';

const MB = 1024;

t.test('50,000 requests, some aborted: fds back to their start, RSS level, in the primary and every worker', async (t) => {
  const r = await leakRun({ keepAlive: 40_000, fresh: 6_000, aborted: 4_000, rounds: 2, log: (l) => t.comment(l) });
  for (const line of formatLeakReport(r).split('\n')) t.comment(line);
  t.equal(r.requests.failed, 0, `no failed request (${r.requests.errors.join('; ')})`);
  t.equal(r.requests.keepAlive + r.requests.fresh + r.requests.aborted, 50_000, 'all 50,000 sent');
  // About 30 s on 2 cores when run alone; more under tap coverage and a parallel test file.
  t.ok(r.seconds < 90, `load took ${r.seconds.toFixed(1)} s`);
  t.equal(r.openConnections, 0, 'no client connection left open in lb');
  t.equal(r.inflight, 0, 'no request left in flight');
  t.equal(r.processes.length, 3, 'primary and 2 workers measured');
  for (const p of r.processes) {
    t.ok(p.rounds.every((x) => x.fds <= p.start.fds + 2), `${p.role}: fds ${p.start.fds} at start, ${p.rounds.map((x) => x.fds).join(', ')} after the rounds (peak ${p.peak.fds})`);
    // RSS at this scale is a coarse check: idle figures wander by ±30 MB with V8's heap sizing (seen: one
    // worker 137 MB after round 1, 167 MB after round 2; the other 160 then 137). A leak of 1.6 KB a request
    // or more fails this; smaller ones are for the soak (10 rounds of 100,000: it compares the trend).
    t.ok(p.end.rssKiB - p.start.rssKiB < 80 * MB, `${p.role}: RSS ${(p.start.rssKiB / MB).toFixed(1)} MB at start, ${p.rounds.map((x) => (x.rssKiB / MB).toFixed(1)).join(' and ')} MB idle after the rounds (< 80 MB more), peak ${(p.peak.rssKiB / MB).toFixed(1)} MB`);
  }
});

#!/usr/bin/env node
// The long leak check: 1,000,000 requests (by default) through a 2-worker lb in 10 rounds — kept-alive
// (autocannon), one per new connection, and aborted mid-way — with RSS and open fds of the primary and each
// worker after the warm-up, at the peak, and after every round (lb idle each time). Not run by CI (it takes
// minutes); CI runs the 50,000-request version, test/leak.test.ts. Build first (npm run build), then:
//
//   node test/leak-soak.mjs [TOTAL] [ROUNDS]
//
// Exit code 1 when a request failed, lb was not idle afterwards, an fd count did not come back, or a
// process's idle RSS in the second half of the rounds rose more than 10 MB above its highest RSS under load
// in the first half (a leak climbs round after round; V8's heap sizing only wanders).

import { formatLeakReport, leakRun } from '../dist/test/helpers/hardening.js';

const total = Number(process.argv[2] ?? 1_000_000);
const rounds = Number(process.argv[3] ?? 10);
const started = Date.now();
const r = await leakRun({
  keepAlive: Math.round(total * 0.85),
  fresh: Math.round(total * 0.1),
  aborted: total - Math.round(total * 0.85) - Math.round(total * 0.1),
  rounds,
  log: (l) => console.log(`[${((Date.now() - started) / 1000).toFixed(0)}s] ${l}`),
});
console.log(formatLeakReport(r));
const problems = [];
if (r.requests.failed > 0) problems.push(`${r.requests.failed} failed requests: ${r.requests.errors.join('; ')}`);
if (r.openConnections !== 0 || r.inflight !== 0) problems.push('lb not idle afterwards');
for (const p of r.processes) {
  if (p.end.fds > p.start.fds + 2) problems.push(`${p.role}: fds ${p.start.fds} -> ${p.end.fds}`);
  // Idle RSS in the second half of the rounds vs. the load peaks of the first half: a leak climbs over them.
  const half = Math.max(1, Math.floor(p.rounds.length / 2));
  const firstPeak = Math.max(...p.roundPeaks.slice(0, half));
  const laterIdle = Math.max(...p.rounds.slice(half).map((x) => x.rssKiB), p.end.rssKiB);
  console.log(`${p.role}: idle RSS in rounds ${half + 1}-${p.rounds.length} at most ${(laterIdle / 1024).toFixed(1)} MB; peak in rounds 1-${half} ${(firstPeak / 1024).toFixed(1)} MB`);
  if (laterIdle > firstPeak + 10 * 1024) problems.push(`${p.role}: idle RSS ${(laterIdle / 1024).toFixed(1)} MB above the first half's peak ${(firstPeak / 1024).toFixed(1)} MB + 10 MB`);
}
console.log(problems.length ? `LEAK CHECK FAILED:\n${problems.join('\n')}` : 'leak check passed');
process.exit(problems.length ? 1 : 0);

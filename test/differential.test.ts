// Differential HTTP/1.1 suite: every case of test/differential-corpus.ts goes through lb, HAProxy 2.6 and
// NGINX 1.22 (each in front of its own recording backend). lb's outcome is asserted against the case's
// expectation (RFC 9110/9112); the anchors' outcomes are recorded beside it, and only sanity-checked.
//
// The comparison table (case, expectation, lb, haproxy, nginx) is written when asked:
//   node dist/test/differential.test.js --table out.md      (or LB_DIFF_TABLE=out.md)
// LB_DIFF_ONLY=regex runs the matching case ids only.
//
// HAProxy and NGINX must be installed (Debian: apt-get install haproxy nginx-light); without them the test
// fails with a message saying so.

import fs from 'node:fs';
import t from 'tap';
import { CASES } from './differential-corpus.js';
import { failures, runCase, startHaproxy, startLbProxy, startNginx, summary, type Case, type Outcome, type Proxy } from './helpers/differential.js';

const argTable = process.argv.indexOf('--table');
const tableFile = argTable > 0 ? process.argv[argTable + 1] : process.env.LB_DIFF_TABLE;
const only = process.env.LB_DIFF_ONLY ? new RegExp(process.env.LB_DIFF_ONLY) : undefined;
const cases = only ? CASES.filter((c) => only.test(c.id)) : CASES;

/** Plain requests every proxy must answer 200: the anchors' sanity check that they ran at all. */
const SANITY = ['conn-keep_alive-none', 'conn-x_foo-cl', 'pipe-post-get', 'host-ok-0'];

function cell(o: Outcome | undefined): string {
  return o ? summary(o).replaceAll('|', '\\|') : 'not run';
}

function expectationText(c: Case): string {
  const e = c.expect;
  const parts: string[] = [];
  if (e.interim) parts.push(`1xx ${JSON.stringify(e.interim)}`);
  if (e.final) parts.push(Array.isArray(e.final[0]) ? (e.final as number[][]).map((a) => a.join(',')).join(' or ') : (e.final as number[]).join(','));
  if (e.closed !== undefined) parts.push(e.closed ? 'close' : 'open');
  if (e.forwarded !== undefined) parts.push(`be:${typeof e.forwarded === 'number' ? e.forwarded : e.forwarded.join(';') || '-'}`);
  if (e.checks?.length) parts.push(`+${e.checks.length} checks`);
  return parts.join(' ');
}

export function writeTable(file: string, results: Map<string, Record<string, Outcome>>, fails: Map<string, string[]>): void {
  const lines = [
    '# lb differential comparison',
    '',
    'Outcome cells: client statuses in order (1xx included), `close` when the proxy closed the client connection, then `be:` what the backend parsed (method and target, case prefix removed).',
    '',
    '| case | group | expected (lb) | lb ok | lb | haproxy | nginx | why |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const c of cases) {
    const r = results.get(c.id) ?? {};
    const f = fails.get(c.id) ?? [];
    lines.push(`| ${c.id} | ${c.group} | ${expectationText(c)} | ${f.length ? 'FAIL: ' + f.join('; ').replaceAll('|', '\\|').slice(0, 200) : 'ok'} | ${cell(r.lb)} | ${cell(r.haproxy)} | ${cell(r.nginx)} | ${(c.why ?? '').replaceAll('|', '\\|')} |`);
  }
  const differ = cases.filter((c) => {
    const r = results.get(c.id) ?? {};
    return r.lb && r.haproxy && r.nginx && summary(r.lb) !== summary(r.haproxy) && summary(r.lb) !== summary(r.nginx);
  });
  lines.push('', `## Where lb differs from both anchors (${differ.length} of ${cases.length})`, '');
  for (const c of differ) lines.push(`- ${c.id}: ${c.why ? c.why : '(no why)'}`);
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

// Waits are bounded per case (a second or so each); run directly with node, tap's default 30 s would cut the run.
t.setTimeout(300_000);

t.test('differential corpus: lb against HAProxy and NGINX', async (t) => {
  t.setTimeout(240_000);
  // All three at once: a missing anchor is an error naming the package to install.
  const proxies: Proxy[] = [];
  t.teardown(async () => {
    for (const p of proxies) await p.stop();
  });
  // LANES instances of each proxy share the cases: most of a case's time is spent waiting for a deadline
  // (an anchor that keeps a connection open), not on CPU.
  const lanes = Number(process.env.LB_DIFF_LANES ?? 3);
  const started = await Promise.allSettled(Array.from({ length: lanes }, () => [startLbProxy(), startHaproxy(), startNginx()]).flat());
  for (const s of started) if (s.status === 'fulfilled') proxies.push(s.value);
  const missing = started.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (missing.length) {
    t.fail(`the differential suite needs lb, HAProxy and NGINX: ${missing.map((m) => (m.reason as Error).message).join('; ')}`);
    return;
  }

  const results = new Map<string, Record<string, Outcome>>();
  const t0 = Date.now();
  await Promise.all(
    proxies.map(async (p, i) => {
      const lane = Math.floor(i / 3);
      for (const c of cases.filter((_, k) => k % lanes === lane)) {
        const o = await runCase(p, c);
        const r = results.get(c.id) ?? {};
        r[p.name] = o;
        results.set(c.id, r);
      }
    }),
  );
  t.comment(`${cases.length} cases through ${proxies.length} proxies in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // lb survived the corpus (a crash shows as ECONNREFUSED in every later case).
  for (const lbProxy of proxies.filter((p) => p.name === 'lb')) {
    t.equal(lbProxy.lb!.proc.exitCode, null, 'lb is still running after the corpus');
    const crashes = lbProxy.lb!.stdout().split('\n').filter((l) => /worker died|uncaught|fatal/i.test(l));
    t.same(crashes, [], 'no lb worker died during the corpus');
  }

  const fails = new Map<string, string[]>();
  for (const c of cases) {
    const lbOut = results.get(c.id)!.lb!;
    fails.set(c.id, failures(c, lbOut));
  }
  if (tableFile) writeTable(tableFile, results, fails);

  // The anchors ran: plain requests answered 200 by both.
  for (const id of SANITY.filter((id) => cases.some((c) => c.id === id))) {
    for (const name of ['haproxy', 'nginx']) {
      const o = results.get(id)![name]!;
      t.ok(o.responses.length > 0 && o.responses.every((r) => r.status === 200), `${name} answered ${id} with 200s (${summary(o)})`);
    }
  }
  t.ok(cases.length >= (only ? 1 : 300), `the corpus has ${cases.length} cases`);

  const groups = new Map<string, Case[]>();
  for (const c of cases) groups.set(c.group, [...(groups.get(c.group) ?? []), c]);
  for (const [group, list] of groups) {
    t.test(group, async (t) => {
      for (const c of list) {
        const r = results.get(c.id)!;
        const f = fails.get(c.id)!;
        t.same(f, [], `${c.id}: ${c.title}`, { lb: summary(r.lb!), haproxy: summary(r.haproxy!), nginx: summary(r.nginx!), lbRaw: r.lb!.clientRaw.slice(0, 300) });
      }
    });
  }
  const bad = cases.filter((c) => fails.get(c.id)!.length);
  t.comment(`lb: ${cases.length - bad.length}/${cases.length} cases as expected${bad.length ? `; failing: ${bad.map((c) => c.id).join(' ')}` : ''}`);
});

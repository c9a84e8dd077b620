// DNS discovery against a real dnsmasq: A, AAAA and SRV answers become Members (ports, weights,
// priorities, stable names), the TTL drives re-resolution within min_ttl/max_ttl, failures (server
// stopped, a forwarded zone that never answers, REFUSED) keep the last answer and recover, NXDOMAIN is
// held for hold_empty, and a truncated UDP answer is fetched again over TCP. A small responder at the end
// stands in for what dnsmasq does not do: SERVFAIL, and answers that belong to another query.

import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import t, { type Test } from 'tap';
import type { Address, DiscoveryConfig } from '../config/model.js';
import { decodeMessage, DnsError, formatIPv6, resolve } from '../src/discovery/dns.js';
import { lookup, refreshDelay, retryDelay, startDiscovery, systemResolvers, weightsFromSrv } from '../src/discovery/discovery.js';
import type { DiscoveryEvent, Member } from '../src/discovery/types.js';
import { startDnsmasq, type Dnsmasq } from './helpers/dnsmasq.js';
import { tmpdir, waitFor } from './helpers/lb.js';

const server = (d: Dnsmasq): Address => ({ host: '127.0.0.1', port: d.port, text: d.address });

function cfg(d: Dnsmasq, over: Partial<DiscoveryConfig>): DiscoveryConfig {
  return {
    dns: 'app.test', type: 'A', port: 8080, resolvers: [server(d)], minTtlMs: 100, maxTtlMs: 1000,
    timeoutMs: 300, holdEmptyMs: 0, weight: 1, maxConnections: 0, ...over,
  };
}

/** Runs discovery with hooks that record every call; stopped in teardown. */
function run(tt: Test, pool: string, c: DiscoveryConfig, initial: Member[] = []) {
  const sets: Member[][] = [];
  const events: Array<{ event: DiscoveryEvent; at: number }> = [];
  const logs: Array<{ level: string; msg: string; fields: Record<string, unknown> }> = [];
  const h = startDiscovery(pool, c, {
    onMembers: (m) => sets.push(m),
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    count: (event) => events.push({ event, at: performance.now() }),
  }, initial);
  tt.teardown(() => h.stop());
  const n = (e: DiscoveryEvent) => events.filter((x) => x.event === e).length;
  const names = () => (sets.length ? sets[sets.length - 1]!.map((m) => m.name) : []);
  return { sets, events, logs, n, names, handle: h };
}

const hosts = (...lines: string[]) => lines.join('\n') + '\n';

t.test('A and AAAA answers become members on the configured port, named ip:port', async (t) => {
  const d = await startDnsmasq({ hosts: hosts('10.0.0.2 app.test', '10.0.0.1 app.test', 'fd00::1 six.test', 'fd00::2 six.test') });
  t.teardown(() => d.close());
  const a = run(t, 'a', cfg(d, { weight: 3 }));
  await waitFor(() => a.sets.length === 1, 10_000, 'the A members');
  t.same(a.sets[0], [
    { name: '10.0.0.1:8080', address: { host: '10.0.0.1', port: 8080, text: '10.0.0.1:8080' }, weight: 3, priority: 0 },
    { name: '10.0.0.2:8080', address: { host: '10.0.0.2', port: 8080, text: '10.0.0.2:8080' }, weight: 3, priority: 0 },
  ]);
  const six = run(t, 'six', cfg(d, { dns: 'six.test', type: 'AAAA', port: 443 }));
  await waitFor(() => six.sets.length === 1, 10_000, 'the AAAA members');
  t.same(six.sets[0]!.map((m) => [m.name, m.address.host, m.address.port]), [['[fd00::1]:443', 'fd00::1', 443], ['[fd00::2]:443', 'fd00::2', 443]]);

  // Refreshes with the same endpoints (even listed in another order) change nothing.
  const before = a.n('refresh');
  await d.setHosts(hosts('10.0.0.1 app.test', '10.0.0.2 app.test', 'fd00::1 six.test', 'fd00::2 six.test'));
  await waitFor(() => a.n('refresh') >= before + 3, 10_000, 'three more refreshes');
  t.equal(a.sets.length, 1, 'onMembers is not called again for the same set');
  t.equal(a.n('change'), 1);

  // One endpoint leaves, one arrives: the full new set, with the survivor's name unchanged.
  await d.setHosts(hosts('10.0.0.1 app.test', '10.0.0.3 app.test'));
  await waitFor(() => a.sets.length === 2, 10_000, 'the changed set');
  t.same(a.names(), ['10.0.0.1:8080', '10.0.0.3:8080']);
  const changed = a.logs.find((l) => l.msg === 'dns discovery: members changed' && (l.fields['added'] as string[]).includes('10.0.0.3:8080'));
  t.same(changed?.fields['removed'], ['10.0.0.2:8080']);
});

t.test('SRV answers: target:port names, ports, weights and priorities; targets from the additional section or by query', async (t) => {
  const d = await startDnsmasq({
    hosts: hosts('10.0.1.1 t1.test', '10.0.1.2 t2.test'),
    srv: [
      { name: '_http._tcp.svc.test', target: 't1.test', port: 8081, priority: 10, weight: 5 },
      { name: '_http._tcp.svc.test', target: 't2.test', port: 8082, priority: 20, weight: 0 },
      { name: '_http._tcp.svc.test', target: 'alias.test', port: 8083, priority: 10, weight: 7 },
      { name: '_http._tcp.svc.test', target: 'gone.test', port: 8084, priority: 10, weight: 1 },
    ],
    extra: ['cname=alias.test,t1.test'],
  });
  t.teardown(() => d.close());
  const s = run(t, 'srv', cfg(d, { dns: '_http._tcp.svc.test', type: 'SRV' }));
  await waitFor(() => s.sets.length === 1, 10_000, 'the SRV members');
  t.same(s.sets[0]!.map((m) => [m.name, m.address.text, m.weight, m.priority]), [
    ['alias.test:8083', '10.0.1.1:8083', 7, 10], // CNAME target: resolved by an A query, following the chain
    ['t1.test:8081', '10.0.1.1:8081', 5, 10],
    ['t2.test:8082', '10.0.1.2:8082', 1, 20], // SRV weight 0 -> 1, the smallest share
  ]);
  const warn = s.logs.find((l) => l.msg.includes('without an address'));
  t.same(warn?.fields['targets'], ['gone.test'], 'a target without an address is left out and logged');

  // SRV records live in dnsmasq's config file: the helper restarts it on the same port.
  await d.setSrv([
    { name: '_http._tcp.svc.test', target: 't1.test', port: 8081, priority: 10, weight: 50 },
    { name: '_http._tcp.svc.test', target: 't2.test', port: 8082, priority: 10, weight: 20000 },
  ]);
  await waitFor(() => s.sets.length === 2, 10_000, 'the new SRV weights');
  // A weight over 1000 scales the answer's weights by 1000 / 20000 (50 -> 2.5 -> 3).
  t.same(s.sets[1]!.map((m) => [m.name, m.weight, m.priority]), [['t1.test:8081', 3, 10], ['t2.test:8082', 1000, 10]]);
});

t.test('SRV weights map to backend weights', async (t) => {
  t.same(weightsFromSrv([0, 1, 3, 1000]), [1, 1, 3, 1000], 'kept when all fit (0 -> 1)');
  t.same(weightsFromSrv([65535, 32768, 10, 0]), [1000, 500, 1, 1], 'scaled by 1000 / the largest, at least 1');
  t.same(weightsFromSrv([]), []);
});

t.test('the TTL drives re-resolution, bounded by min_ttl and max_ttl, or a fixed refresh', async (t) => {
  const base = { dns: 'x', type: 'A', resolvers: [], minTtlMs: 1000, maxTtlMs: 60_000, timeoutMs: 1, holdEmptyMs: 0, weight: 1, maxConnections: 0 } as DiscoveryConfig;
  t.equal(refreshDelay(base, 30), 30_000);
  t.equal(refreshDelay(base, 0), 1000, 'raised to min_ttl');
  t.equal(refreshDelay(base, 86400), 60_000, 'lowered to max_ttl');
  t.equal(refreshDelay(base, undefined), 1000, 'no TTL (empty answer without SOA): min_ttl');
  t.equal(refreshDelay({ ...base, refreshMs: 5000 }, 30), 5000, 'a fixed refresh wins');
  t.same([1, 2, 3, 4, 7, 50].map((n) => retryDelay(base, n)), [1000, 2000, 4000, 8000, 60_000, 60_000], 'retries back off up to max_ttl');
  t.equal(retryDelay({ ...base, refreshMs: 5000 }, 10), 5000, 'or up to refresh');

  // Against dnsmasq: TTL 1 s within [100 ms, 10 s] -> refreshes at least 1 s apart.
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test'), ttl: 1 });
  t.teardown(() => d.close());
  const ttl = run(t, 'ttl', cfg(d, { minTtlMs: 100, maxTtlMs: 10_000 }));
  await waitFor(() => ttl.n('refresh') >= 3, 20_000, 'three refreshes on a 1 s TTL');
  const at = ttl.events.filter((e) => e.event === 'refresh').map((e) => e.at);
  for (let i = 1; i < at.length; i++) t.ok(at[i]! - at[i - 1]! >= 990, `refresh ${i} came ${Math.round(at[i]! - at[i - 1]!)} ms after the one before`);
  // A change is seen on the next refresh.
  await d.setHosts(hosts('10.0.0.9 app.test'));
  await waitFor(() => ttl.names()[0] === '10.0.0.9:8080', 10_000, 'the change on the next refresh');

  // TTL 1 s lowered to max_ttl 200 ms: many refreshes within the 1 s TTL's time; raised to min_ttl 1.5 s.
  const capped = run(t, 'capped', cfg(d, { minTtlMs: 50, maxTtlMs: 200 }));
  await waitFor(() => capped.n('refresh') >= 6, 20_000, 'refreshes every 200 ms');
  const raised = run(t, 'raised', cfg(d, { minTtlMs: 1500, maxTtlMs: 10_000 }));
  await waitFor(() => raised.n('refresh') >= 2, 20_000, 'two refreshes on min_ttl');
  const r = raised.events.filter((e) => e.event === 'refresh').map((e) => e.at);
  t.ok(r[1]! - r[0]! >= 1490, `min_ttl raised the 1 s TTL (${Math.round(r[1]! - r[0]!)} ms)`);
});

t.test('dnsmasq stopped: the last answer is kept, the failure counted, and the change applied when it is back', async (t) => {
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test', '10.0.0.2 app.test') });
  t.teardown(() => d.close());
  const a = run(t, 'down', cfg(d, { minTtlMs: 100, maxTtlMs: 400 }));
  await waitFor(() => a.sets.length === 1, 10_000, 'the first answer');
  await d.stop();
  await waitFor(() => a.n('error') >= 3 && a.n('stale') >= 3, 20_000, 'failed refreshes counted as errors and stale');
  t.equal(a.sets.length, 1, 'no set applied while the server is down');
  const warn = a.logs.find((l) => l.msg === 'dns discovery failed: keeping the last answer');
  t.match(warn?.fields, { pool: 'down', members: 2, kind: 'network' });
  t.match(String(warn?.fields['error']), /ECONNREFUSED/);
  // The retry delay backs off: min_ttl, doubling, up to max_ttl.
  const delays = a.logs.filter((l) => l.msg.startsWith('dns discovery failed')).map((l) => l.fields['retry_in_ms']);
  t.same(delays.slice(0, 3), [100, 200, 400]);

  await d.start();
  await d.setHosts(hosts('10.0.0.2 app.test', '10.0.0.3 app.test'));
  await waitFor(() => a.sets.length === 2, 20_000, 'the answer after the server came back');
  t.same(a.names(), ['10.0.0.2:8080', '10.0.0.3:8080']);
  t.ok(a.logs.some((l) => l.msg === 'dns discovery recovered'), 'recovery is logged');
});

t.test('a forwarded zone that never answers (timeout) and REFUSED keep the last answer', async (t) => {
  // dnsmasq answers names in its hosts file itself, and forwards the rest of dead.test to a port where
  // nothing listens (it then answers nothing: a timeout), and refuses names outside its domains.
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.dead.test', '10.0.0.5 app.elsewhere'), extra: ['server=/dead.test/127.0.0.1#9'] });
  t.teardown(() => d.close());
  const dead = run(t, 'dead', cfg(d, { dns: 'app.dead.test', timeoutMs: 200, minTtlMs: 100, maxTtlMs: 300 }));
  const refused = run(t, 'refused', cfg(d, { dns: 'app.elsewhere', minTtlMs: 100, maxTtlMs: 300 }));
  await waitFor(() => dead.sets.length === 1 && refused.sets.length === 1, 10_000, 'the first answers');
  await d.setHosts('');
  await waitFor(() => dead.n('stale') >= 2 && refused.n('stale') >= 2, 20_000, 'stale answers');
  t.equal(dead.sets.length, 1);
  t.equal(refused.sets.length, 1);
  t.same(dead.names(), ['10.0.0.1:8080']);
  t.match(dead.logs.find((l) => l.level === 'warn')?.fields, { kind: 'timeout' });
  t.match(refused.logs.find((l) => l.level === 'warn')?.fields, { kind: 'REFUSED' });
});

t.test('a restarted runner (reload) compares its answers with the set in effect', async (t) => {
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test') });
  t.teardown(() => d.close());
  const inEffect: Member[] = [{ name: '10.0.0.1:8080', address: { host: '10.0.0.1', port: 8080, text: '10.0.0.1:8080' }, weight: 1, priority: 0 }];
  const same = run(t, 'same', cfg(d, {}), inEffect);
  // The new settings name nothing (NXDOMAIN): an empty first answer, held for hold_empty as any other, then applied.
  const gone = run(t, 'gone', cfg(d, { dns: 'gone.test', holdEmptyMs: 300 }), inEffect);
  await waitFor(() => same.n('refresh') >= 2, 10_000, 'two answers for the unchanged name');
  t.equal(same.sets.length, 0, 'the same set as in effect: onMembers not called');
  await waitFor(() => gone.sets.length === 1, 10_000, 'the empty set applied after hold_empty');
  t.same(gone.sets[0], []);
  t.ok(gone.n('stale') >= 1, 'held (stale) before it was applied');
});

t.test('NXDOMAIN and empty answers: applied after hold_empty, at once with "0s"', async (t) => {
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test', '10.0.0.1 other.test') });
  t.teardown(() => d.close());
  const now = run(t, 'now', cfg(d, { holdEmptyMs: 0 }));
  const held = run(t, 'held', cfg(d, { holdEmptyMs: 1500 }));
  const nodata = run(t, 'nodata', cfg(d, { dns: 'other.test', holdEmptyMs: 0 }));
  await waitFor(() => now.sets.length === 1 && held.sets.length === 1 && nodata.sets.length === 1, 10_000, 'the first answers');
  // app.test leaves (NXDOMAIN under --local=/test/); other.test keeps only an AAAA record (NOERROR, no A).
  await d.setHosts(hosts('fd00::9 other.test'));
  const t0 = performance.now();
  await waitFor(() => now.sets.length === 2 && nodata.sets.length === 2, 10_000, 'the empty sets applied');
  t.same(now.sets[1], []);
  t.same(nodata.sets[1], []);
  await waitFor(() => held.sets.length === 2, 10_000, 'the held empty set applied');
  t.ok(performance.now() - t0 >= 1400, 'not before hold_empty');
  t.ok(held.n('stale') >= 1, 'the held answer counted as stale');
  t.match(held.logs.find((l) => l.msg.startsWith('dns discovery: empty answer'))?.fields, { rcode: 'NXDOMAIN', members: 1 });

  // The name coming back within hold_empty keeps the set as it was.
  const short = run(t, 'short', cfg(d, { dns: 'again.test', holdEmptyMs: 60_000 }));
  await d.setHosts(hosts('10.0.0.7 again.test'));
  await waitFor(() => short.sets.length === 1, 10_000, 'again.test');
  await d.setHosts('');
  await waitFor(() => short.n('stale') >= 2, 10_000, 'held NXDOMAIN');
  await d.setHosts(hosts('10.0.0.7 again.test'));
  const refreshes = short.n('refresh');
  await waitFor(() => short.n('refresh') >= refreshes + 2, 10_000, 'refreshes after it came back');
  t.equal(short.sets.length, 1, 'never emptied');
});

t.test('a truncated UDP answer is asked again over TCP', async (t) => {
  const many = Array.from({ length: 150 }, (_, i) => `10.2.${i >> 8}.${(i & 255) + 1} many.test`);
  const d = await startDnsmasq({ hosts: hosts(...many) });
  t.teardown(() => d.close());
  const m = await resolve('many.test', 'A', { resolvers: [server(d)], timeoutMs: 2000 });
  t.equal(m.tcp, true, 'fell back to TCP');
  t.equal(m.answers.length, 150);
  const answer = await lookup(cfg(d, { dns: 'many.test' }), { resolvers: [server(d)], timeoutMs: 2000 });
  t.equal(answer.members.length, 150);
  t.equal(answer.tcp, true);
});

t.test('resolvers are tried in order; all failing is one error naming each', async (t) => {
  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test') });
  t.teardown(() => d.close());
  const stopped = await startDnsmasq({});
  await stopped.stop();
  t.teardown(() => stopped.close());
  const m = await resolve('app.test', 'A', { resolvers: [server(stopped), server(d)], timeoutMs: 500 });
  t.equal(m.answers.length, 1, 'the second resolver answered after the first refused the connection');
  const err = await resolve('app.test', 'A', { resolvers: [server(stopped)], timeoutMs: 500 }).catch((e: unknown) => e);
  t.ok(err instanceof DnsError);
  t.match((err as Error).message, new RegExp(`^app.test A: 127.0.0.1:${stopped.port}: .*ECONNREFUSED`));
});

t.test('wire format: malformed answers are refused, IPv6 text is RFC 5952', async (t) => {
  // A response (QR set) whose question name is a compression pointer to itself.
  const loop = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  t.throws(() => decodeMessage(loop), /compression pointer loop/);
  t.throws(() => decodeMessage(Buffer.from([0, 1, 0x81])), /ends inside/);
  t.throws(() => decodeMessage(Buffer.from([0, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0])), /not a response/);
  const v6 = (s: string) => formatIPv6(Buffer.from(s.replace(/:/g, ''), 'hex'));
  t.equal(v6('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  t.equal(v6('2001:0db8:0000:0001:0000:0000:0000:0001'), '2001:db8:0:1::1', 'the longest zero run');
  t.equal(v6('2001:0db8:0000:0001:0001:0001:0001:0001'), '2001:db8:0:1:1:1:1:1', 'a single zero group stays');
  t.equal(v6('0000:0000:0000:0000:0000:0000:0000:0000'), '::');
});

t.test('system resolvers come from resolv.conf', async (t) => {
  const dir = tmpdir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'resolv.conf');
  fs.writeFileSync(f, '# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bad\n');
  t.same(systemResolvers(f).map((a) => a.text), ['10.0.0.2:53', '[fe80::1]:53']);
  t.same(systemResolvers(path.join(dir, 'missing')).map((a) => a.text), ['127.0.0.1:53'], "the resolver library's default");
});

/**
 * A DNS responder for what dnsmasq will not do: answer SERVFAIL (dnsmasq 2.90 stays silent for a dead
 * upstream and says REFUSED for unknown zones), and send answers that do not belong to the query.
 * `mode()` picks the reply to each query: 'a' (NOERROR, one A record 10.9.9.9, TTL 0), 'servfail', or
 * 'spoofed' (a wrong id, then the right id with another question, then SERVFAIL).
 */
async function responder(t: Test, mode: () => 'a' | 'servfail' | 'spoofed'): Promise<Address> {
  const dgram = await import('node:dgram');
  const s = dgram.createSocket('udp4');
  s.on('message', (q, rinfo) => {
    const qEnd = q.indexOf(0, 12) + 5; // header, name (to its root label), type and class; the OPT record dropped
    const reply = (id: number, rcode: number, question: Buffer, answer?: Buffer) => {
      const h = Buffer.alloc(12);
      h.writeUInt16BE(id, 0);
      h.writeUInt16BE(0x8180 | rcode, 2);
      h.writeUInt16BE(1, 4);
      h.writeUInt16BE(answer ? 1 : 0, 6);
      s.send(Buffer.concat([h, question, answer ?? Buffer.alloc(0)]), rinfo.port, rinfo.address);
    };
    const id = q.readUInt16BE(0);
    const question = q.subarray(12, qEnd);
    const a = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 9, 9, 9]);
    const m = mode();
    if (m === 'a') return reply(id, 0, question, a);
    if (m === 'spoofed') {
      reply((id + 1) & 0xffff, 0, question, a);
      const other = Buffer.from(question);
      other[1] = other[1] === 0x78 ? 0x79 : 0x78; // another first letter of the name
      reply(id, 0, other, a);
    }
    reply(id, 2, question);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => s.close());
  const port = (s.address() as { port: number }).port;
  return { host: '127.0.0.1', port, text: `127.0.0.1:${port}` };
}

t.test('SERVFAIL moves on to the next resolver and keeps the last answer; answers to another query are ignored', async (t) => {
  let mode: 'a' | 'servfail' | 'spoofed' = 'spoofed';
  const fake = await responder(t, () => mode);
  const err = await resolve('app.test', 'A', { resolvers: [fake], timeoutMs: 2000, rounds: 1 }).catch((e: unknown) => e);
  t.match(err, { kind: 'SERVFAIL', message: `app.test A: ${fake.text}: SERVFAIL` }, 'the wrong id and the wrong question were not taken');

  const d = await startDnsmasq({ hosts: hosts('10.0.0.1 app.test') });
  t.teardown(() => d.close());
  mode = 'servfail';
  const m = await resolve('app.test', 'A', { resolvers: [fake, server(d)], timeoutMs: 2000 });
  t.same(m.answers.map((r) => r.type === 'A' && r.address), ['10.0.0.1'], 'the next resolver answered');

  mode = 'a';
  const a = run(t, 'servfail', { ...cfg(d, {}), resolvers: [fake] });
  await waitFor(() => a.sets.length === 1, 10_000, 'the first answer');
  t.same(a.names(), ['10.9.9.9:8080']);
  mode = 'servfail';
  await waitFor(() => a.n('stale') >= 2, 10_000, 'SERVFAIL answers kept stale');
  t.equal(a.sets.length, 1);
  t.match(a.logs.find((l) => l.level === 'warn')?.fields, { kind: 'SERVFAIL', members: 1 });
});

// peak-ewma and bounded-load hashing through the real daemon (`lb run`, one worker): the data plane's
// Picker.done calls feed peak-ewma, and the pool's in-flight total bounds a hot key.

import http from 'node:http';
import t from 'tap';
import { backends, freePort, get, httpConfig, startLb, startUpstream, waitFor, type Upstream } from './helpers/lb.js';

t.test('peak-ewma sends sequential requests to the fast backend once it has seen both', async (t) => {
  const fast = await startUpstream('fast');
  // The slow backend answers after 200 ms (its behaviour, not a wait of the test).
  const slow = await startUpstream('slow', (_req, res) => {
    setTimeout(() => res.end('slow'), 200);
  });
  t.teardown(() => Promise.all([fast.close(), slow.close()]));
  const port = await freePort();
  const lb = await startLb(
    httpConfig(port, `[pools.app]\nalgorithm = "peak-ewma"\nalgorithm_options = { decay = "30s" }\nbackends = ${backends([{ port: fast.port }, { port: slow.port }])}\n`),
    [port],
  );
  t.teardown(() => lb.stop());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const seen: Record<string, number> = {};
  for (let i = 0; i < 40; i++) {
    const r = await get(port, '/', { agent });
    t.equal(r.status, 200);
    seen[r.body] = (seen[r.body] ?? 0) + 1;
  }
  // Two candidates: both are drawn every time. Until the slow one has answered once its cost is 0 (tried);
  // from then on its cost (>= 200 ms, decaying by e^(-t/30s)) stays above the fast one's. Without done()
  // the costs would stay 0 and the picks split ~20/20.
  t.ok((seen['slow'] ?? 0) <= 2, `the slow backend got ${seen['slow'] ?? 0} of 40 (at most 2)`);
});

t.test('consistent-hash with hash_balance_factor = 1.25 spreads a hot key within ceil(1.25 x average)', async (t) => {
  const held: Array<{ name: string; res: http.ServerResponse }> = [];
  const ups: Upstream[] = await Promise.all(
    ['u1', 'u2', 'u3', 'u4'].map((name) =>
      startUpstream(name, (_req, res) => {
        held.push({ name, res });
      }),
    ),
  );
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const port = await freePort();
  const list = backends(ups.map((u) => ({ port: u.port })));
  const lb = await startLb(
    httpConfig(
      port,
      `[[listeners.web.routes]]\npath_prefix = "/plain/"\npool = "plain"\n` +
        `[pools.app]\nalgorithm = "consistent-hash"\nhash_key = "header:x-user"\nalgorithm_options = { hash_balance_factor = 1.25 }\nbackends = ${list}\n` +
        `[pools.plain]\nalgorithm = "consistent-hash"\nhash_key = "header:x-user"\nbackends = ${list}\n`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());

  const burst = async (path: string): Promise<Record<string, number>> => {
    held.length = 0;
    const replies = Array.from({ length: 20 }, () => get(port, path, { headers: { 'x-user': 'hot' } }));
    await waitFor(() => held.length === 20, 20_000, '20 requests held by the upstreams');
    const at: Record<string, number> = {};
    for (const h of held) at[h.name] = (at[h.name] ?? 0) + 1;
    for (const h of held) h.res.end(h.name);
    for (const r of await Promise.all(replies)) t.equal(r.status, 200);
    return at;
  };

  const plain = await burst('/plain/x');
  t.same(Object.values(plain), [20], `without the option all 20 go to one backend (${JSON.stringify(plain)})`);
  const bounded = await burst('/');
  const most = Math.max(...Object.values(bounded));
  t.ok(most <= Math.ceil((1.25 * 20) / 4), `at most ceil(1.25 x 20 / 4) = 7 on one backend (${JSON.stringify(bounded)})`);
  t.equal(Object.keys(bounded).length, 4, 'the hot key spread over all four');
  t.ok(Object.keys(plain)[0]! in bounded && bounded[Object.keys(plain)[0]!] === most, "the key's own backend is filled up to the bound first");
});

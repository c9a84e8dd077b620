// Runtime membership without a daemon: BackendPool.setMembers keeps surviving backend records and retires
// removed ones; priority tiers switch on state changes; Membership diffs a source's members by name, orders
// runtime backends by name and merges them into a reloaded config.

import t from 'tap';
import { loadAlgorithm } from '../algorithms/registry.js';
import type { BackendConfig, LbConfig, PoolConfig } from '../config/model.js';
import { Membership, type Member } from '../src/daemon/membership.js';
import { BackendPool } from '../src/dataplane/pool.js';

const addr = (port: number): BackendConfig['address'] => ({ host: '127.0.0.1', port, text: `127.0.0.1:${port}` });
const bc = (name: string, port: number, priority = 0, weight = 1): BackendConfig => ({ name, address: addr(port), weight, maxConnections: 0, priority });
const pool = (backends: BackendConfig[], algorithm = 'round-robin'): PoolConfig => ({
  name: 'app',
  algorithm,
  retries: 2,
  connectTimeoutMs: 1000,
  responseTimeoutMs: 1000,
  readTimeoutMs: 1000,
  slowStartMs: 0,
  maxRequests: 0,
  maxQueue: 0,
  queueTimeoutMs: 1000,
  retryOn: { connectFailure: true, reset: true, statuses: [] },
  perTryTimeoutMs: 0,
  backends,
});
const up = { admin: 'ready', health: 'up', weight: 1 } as const;
const down = { admin: 'ready', health: 'down', weight: 1 } as const;

function picks(p: BackendPool, n: number): string[] {
  const out = new Set<string>();
  for (let i = 0; i < n; i++) out.add(p.pick({})?.name ?? '-');
  return [...out].sort();
}

t.test('setMembers keeps surviving records, adds new ones, retires removed ones', async (t) => {
  const p = new BackendPool(pool([bc('a', 1), bc('b', 2)]), await loadAlgorithm('round-robin', '.'));
  p.commit();
  const a = p.get('a')!;
  const b = p.get('b')!;
  a.begin();
  b.begin();
  p.control('a', { admin: 'drain', health: 'up', weight: 1 });
  const removed = p.setMembers([bc('a', 1), bc('c', 3)], { c: up });
  t.same(removed.map((x) => x.name), ['b']);
  t.equal(p.get('a'), a, 'the surviving backend is the same record');
  t.equal(a.admin, 'drain', 'with its admin state');
  t.equal(a.inflight, 1, 'and its in-flight count');
  t.equal(b.retired, true, 'the removed one is retired');
  t.same(picks(p, 10), ['c'], 'a is drained, b gone: only c');
  b.end();
  t.equal(b.inflight, 0);
  t.same(
    p.backends.map((x) => x.name),
    ['a', 'c'],
  );
});

t.test('priority tiers: lowest usable tier serves, switched on control, not per request', async (t) => {
  const p = new BackendPool(pool([bc('a', 1, 0), bc('b', 2, 1), bc('c', 3, 1)]), await loadAlgorithm('round-robin', '.'));
  p.commit();
  t.same(picks(p, 10), ['a']);
  p.control('a', down);
  t.same(picks(p, 10), ['b', 'c'], 'tier 0 has no usable backend: tier 1');
  p.control('a', up);
  t.same(picks(p, 10), ['a'], 'and back');
  p.setMembers([bc('a', 1, 0), bc('b', 2, 1), bc('c', 3, 1), bc('z', 4, 0)], { z: up });
  t.same(picks(p, 10), ['a', 'z'], 'a runtime member joins tier 0');
  p.setMembers([bc('b', 2, 1), bc('c', 3, 1)], {});
  t.same(picks(p, 10), ['b', 'c'], 'one priority left: no tiers');
});

function lbConfig(pools: PoolConfig[]): LbConfig {
  return { file: '/x/lb.toml', pools: Object.fromEntries(pools.map((p) => [p.name, p])) } as unknown as LbConfig;
}

t.test('Membership: setSource diffs by name, orders by name, config wins on reload', async (t) => {
  let config = lbConfig([pool([bc('a', 1)])]);
  const changes: Array<[string, string[]]> = [];
  const skipped: string[] = [];
  const m = new Membership({
    get config() {
      return config;
    },
    poolChanged: (p, removed) => changes.push([p, removed]),
    skipped: (_p, _s, name) => skipped.push(name),
  });
  const member = (name: string, port: number, weight = 1): Member => ({ name, address: addr(port), weight, priority: 0 });
  t.same(m.setSource('app', 'dns', [member('z', 9), member('x', 8), member('a', 7)]), { added: ['z', 'x'], removed: [] });
  t.same(skipped, ['a'], 'a config backend name is not taken');
  t.same(
    config.pools.app!.backends.map((b) => `${b.name}:${b.source ?? 'config'}`),
    ['a:config', 'x:dns', 'z:dns'],
    'config first, then runtime by name',
  );
  t.same(m.setSource('app', 'dns', [member('z', 9), member('x', 8)]), { added: [], removed: [] });
  t.equal(changes.length, 1, 'an unchanged answer changes nothing');
  t.same(m.setSource('app', 'dns', [member('z', 9, 5)]), { added: [], removed: ['x'] });
  t.equal(config.pools.app!.backends.find((b) => b.name === 'z')!.weight, 5, 'a changed weight is updated in place');
  m.add('app', member('y', 6));
  t.throws(() => m.add('app', member('y', 6)), { code: 'BACKEND_EXISTS' });
  t.throws(() => m.remove('app', 'a'), { code: 'NOT_RUNTIME' });
  t.throws(() => m.remove('app', 'z', 'admin'), { code: 'NOT_RUNTIME' }, "another source's backend");
  t.throws(() => m.setSource('nope', 'dns', []), { code: 'UNKNOWN_POOL' });
  t.throws(() => m.setSource('app', 'config', []), { code: 'INVALID_FIELD' });

  // Reload: the new file defines "y"; the pool survives.
  const file = lbConfig([pool([bc('a', 1), bc('y', 2)])]);
  const merged = m.merge(file);
  t.same(merged.dropped.map((d) => d.name), ['y']);
  t.same(
    merged.config.pools.app!.backends.map((b) => `${b.name}:${b.source ?? 'config'}`),
    ['a:config', 'y:config', 'z:dns'],
  );
  m.adopt(merged.dropped);
  config = merged.config;
  t.same(m.list('admin'), [], 'the admin member replaced by the config is forgotten');
  // A reload without the pool drops its runtime backends.
  const gone = m.merge(lbConfig([]));
  t.same(gone.dropped.map((d) => d.name), ['z']);
});

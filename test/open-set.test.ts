// OpenSet: the listeners' list of open connections.

import t from 'tap';
import { OpenSet } from '../src/dataplane/open-set.js';

t.test('add, delete from the middle, the ends and twice; order and size', (t) => {
  const s = new OpenSet<string>();
  t.same(s.values(), []);
  const a = s.add('a');
  const b = s.add('b');
  const c = s.add('c');
  const d = s.add('d');
  t.equal(s.size, 4);
  t.same(s.values(), ['a', 'b', 'c', 'd']);
  s.delete(b);
  t.same(s.values(), ['a', 'c', 'd'], 'middle');
  s.delete(b);
  t.equal(s.size, 3, 'deleting twice changes nothing');
  s.delete(a);
  t.same(s.values(), ['c', 'd'], 'head');
  s.delete(d);
  t.same(s.values(), ['c'], 'tail');
  s.delete(c);
  t.same(s.values(), [], 'last one');
  t.equal(s.size, 0);
  s.delete(c);
  t.equal(s.size, 0, 'deleting from an empty set changes nothing');
  const e = s.add('e');
  t.same(s.values(), ['e'], 'usable again after emptying');
  s.delete(e);
  t.end();
});

t.test('deleting while iterating the values snapshot', (t) => {
  const s = new OpenSet<number>();
  const nodes = [1, 2, 3, 4, 5].map((v) => s.add(v));
  const seen: number[] = [];
  for (const v of s.values()) {
    seen.push(v);
    s.delete(nodes[v - 1]!);
  }
  t.same(seen, [1, 2, 3, 4, 5]);
  t.equal(s.size, 0);
  t.end();
});

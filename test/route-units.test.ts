// The pure parts of routing, on their own: the regex safety check, header value templates, path prefix
// rewriting, redirect Locations, the query reader against URLSearchParams, and the sticky split's promise
// (raising the second entry moves keys from the first only).

import t from 'tap';
import fc from 'fast-check';
import type net from 'node:net';
import { firstQueryValue, regexProblem, Split } from '../src/dataplane/route-match.js';
import { parseTemplate, redirectLocation, render, rewritePath } from '../src/dataplane/rewrite.js';
import { FrontRequest } from '../src/dataplane/http-server.js';
import type { BackendPool } from '../src/dataplane/pool.js';

t.test('regexProblem', async (t) => {
  for (const ok of ['^v[0-9]+\\.[0-9]+$', '^(foo|bar)$', '(ab)+', 'a{2,5}', '[(+*)]+', '^\\d{8}$', '(?:x)?y+', '(?<n>a)b*']) {
    t.equal(regexProblem(ok), undefined, `${ok} accepted`);
  }
  for (const [bad, why] of [
    ['(a+)+$', /repeated group/],
    ['(a|aa)*', /repeated group/],
    ['(x(a*))+', /repeated group/],
    ['(\\d+){2}', /repeated group/],
    ['^(a)\\1$', /backreferences/],
    ['(?<n>a)\\k<n>', /backreferences/],
    ['a(?=b)', /lookarounds/],
    ['(?<!a)b', /lookarounds/],
    ['(', /invalid regular expression/],
  ] as const) {
    t.match(regexProblem(bad), why, `${bad} refused`);
  }
});

t.test('templates', async (t) => {
  const socket = { remoteAddress: '10.0.0.9' } as unknown as net.Socket;
  const req = new FrontRequest(socket, 'GET', '/a/b?c=1', 1, 1, [], null, -1, false);
  const ctx = { req, headers: ['X-Request-Id', 'r-1'], host: 'h.test', tls: true, route: 'web#2' };
  const r = (text: string): string | undefined => {
    const p = parseTemplate(text);
    if (!p.ok) throw new Error(p.error);
    return render(p.template, ctx);
  };
  t.equal(r('${client_ip}|${host}|${path}|${method}|${scheme}|${route}|${request_id}'), '10.0.0.9|h.test|/a/b|GET|https|web#2|r-1');
  t.equal(r('cost $$5 and $x {host}'), 'cost $5 and $x {host}', '"$$" is "$"; "$" not before "{" is literal');
  t.match(parseTemplate('${nope}'), { ok: false, error: /unknown variable/ });
  t.match(parseTemplate('${host'), { ok: false, error: /unclosed/ });
  t.match(parseTemplate('a\r\nb: c'), { ok: false, error: /control character/ });
  const evil = { ...ctx, host: 'h\r\nx-injected: 1' };
  const p = parseTemplate('${host}');
  t.equal(p.ok && render(p.template, evil), undefined, 'a value with CR/LF from a variable is not written');
});

t.test('rewritePath', async (t) => {
  t.equal(rewritePath('/api/v1/x?q=1', '/api', undefined), '/v1/x?q=1');
  t.equal(rewritePath('/api', '/api', undefined), '/');
  t.equal(rewritePath('/api?q', '/api', undefined), '/?q');
  t.equal(rewritePath('/apix/y', '/api', undefined), '/apix/y', 'only at a segment boundary');
  t.equal(rewritePath('/api/', '/api/', undefined), '/');
  t.equal(rewritePath('/x', undefined, '/v2'), '/v2/x');
  t.equal(rewritePath('/x', undefined, '/v2/'), '/v2/x');
  t.equal(rewritePath('/api/x', '/api', '/internal'), '/internal/x', 'strip + add replaces a prefix');
});

t.test('redirectLocation', async (t) => {
  const base = { stripQuery: false, code: 301 as const };
  t.equal(redirectLocation({ ...base, scheme: 'https' }, '/p?q=1', 'a.test:8080', false), 'https://a.test/p?q=1');
  t.equal(redirectLocation({ ...base, scheme: 'https' }, '/p', '[::1]:8080', false), 'https://[::1]/p');
  t.equal(redirectLocation({ ...base, port: 8443 }, '/p', '[::1]:8080', true), 'https://[::1]:8443/p');
  t.equal(redirectLocation({ ...base, path: '/x' }, '/p?q', 'a.test:81', false), 'http://a.test:81/x?q');
  t.equal(redirectLocation({ ...base, host: 'b.test', stripQuery: true }, '/p?q', 'a.test', false), 'http://b.test/p');
  t.equal(redirectLocation({ ...base, scheme: 'https' }, '/p', undefined, false), undefined, 'no host to keep');
  t.equal(redirectLocation({ ...base, scheme: 'https' }, '//evil.test/x', 'a.test', false), 'https://a.test//evil.test/x', 'a path stays a path');
});

t.test('firstQueryValue agrees with URLSearchParams', async () => {
  const part = fc.stringMatching(/^[a-z%+0-9=&]{0,12}$/);
  fc.assert(
    fc.property(part, fc.constantFrom('v', 'a', 'v v'), (q, name) => {
      let want: string | null;
      try {
        want = new URLSearchParams(q).get(name);
      } catch {
        return true;
      }
      const got = firstQueryValue(`/p?${q}`, name);
      if ((want ?? undefined) !== got) throw new Error(`${JSON.stringify(q)} ${name}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
      return true;
    }),
    { numRuns: 3000 },
  );
});

t.test('sticky split: raising the second entry moves keys from the first only', async (t) => {
  const pools = new Map(['app', 'canary'].map((n) => [n, { name: n } as unknown as BackendPool]));
  const split = new Split([{ pool: 'app', weight: 95 }, { pool: 'canary', weight: 5 }], (n) => pools.get(n)!, { kind: 'header', name: 'x-user' });
  const socket = { remoteAddress: '127.0.0.1' } as unknown as net.Socket;
  const side = (user: string): string => split.pick(new FrontRequest(socket, 'GET', '/', 1, 1, ['x-user', user], null, -1, false)).name;
  const users = Array.from({ length: 5000 }, (_, i) => `u${i}`);
  let before = users.map(side);
  for (const w of [10, 25, 50, 90, 100]) {
    split.setWeights({ app: 100 - w, canary: w });
    const after = users.map(side);
    const back = after.filter((s, i) => s === 'app' && before[i] === 'canary').length;
    const share = after.filter((s) => s === 'canary').length / users.length;
    t.equal(back, 0, `canary ${w}%: nobody moved back to app`);
    t.ok(Math.abs(share - w / 100) < 0.03, `canary ${w}%: share ${share}`);
    before = after;
  }
  // Not sticky without the key: the interleave, exact per window.
  split.setWeights(undefined);
  const plain = Array.from({ length: 1000 }, () => split.pick(new FrontRequest(socket, 'GET', '/', 1, 1, [], null, -1, false)).name);
  t.equal(plain.filter((s) => s === 'canary').length, 50);
});

// Which Node internals lb uses (src/node-internals/report.ts), through `lb run`: the `node internals` info
// line at start, `lb status` (text and --json), the lb_node_internal gauge, and LB_NODE_FALLBACK forcing
// a fallback (with unknown names reported, not fatal) while lb keeps serving.

import t, { type Test } from 'tap';
import { cli, freePort, get, startLb, startUpstream } from './helpers/lb.js';

async function run(t: Test, fallback: string): Promise<{ logs: Array<Record<string, unknown>>; status: any; text: string; metrics: string; body: string }> {
  const up = await startUpstream('u1');
  t.teardown(() => up.close());
  const [port, mport] = [await freePort(), await freePort()];
  const toml = `
[daemon]
workers = 1
grace_period = "1s"
[admin]
socket = "{{socket}}"
[log]
level = "info"
[metrics]
listen = "127.0.0.1:${mport}"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[pools.app]
backends = [{ address = "127.0.0.1:${up.port}" }]
`;
  const lb = await startLb(toml, [port], { env: { LB_NODE_FALLBACK: fallback } });
  t.teardown(() => lb.stop());
  const json = await cli(['status', '--json', '-s', lb.socket]);
  const text = await cli(['status', '-s', lb.socket]);
  const metrics = await get(mport, '/metrics');
  const reply = await get(port, '/x');
  t.equal(reply.status, 200, `LB_NODE_FALLBACK=${JSON.stringify(fallback)}: lb serves HTTP`);
  return { logs: lb.logs(), status: JSON.parse(json.stdout), text: text.stdout, metrics: metrics.body, body: reply.body };
}

t.test('without LB_NODE_FALLBACK: both internals usable on the supported Node versions, and said so', async (t) => {
  const r = await run(t, '');
  const line = r.logs.find((l) => l.msg === 'node internals');
  t.ok(line, 'one node internals line at start');
  t.equal(r.logs.filter((l) => l.msg === 'node internals').length, 1, 'logged once');
  t.match(line, { level: 'info', http_parser: 'usable', tcp_wrap: 'usable' }, 'both usable');
  t.same(r.status.nodeInternals, [
    { name: 'http_parser', mode: 'usable', reason: null },
    { name: 'tcp_wrap', mode: 'usable', reason: null },
  ], 'lb status --json');
  t.match(r.text, /^node internals: http_parser usable, tcp_wrap usable$/m, 'lb status');
  t.match(r.metrics, /^lb_node_internal\{name="http_parser",mode="usable"\} 1$/m, 'gauge: http_parser usable');
  t.match(r.metrics, /^lb_node_internal\{name="tcp_wrap",mode="usable"\} 1$/m, 'gauge: tcp_wrap usable');
  t.notMatch(r.metrics, /mode="fallback"/, 'no fallback series');
});

t.test('LB_NODE_FALLBACK=http_parser,bogus: the parser fallback is used and reported; the unknown name is reported', async (t) => {
  const r = await run(t, 'http_parser,bogus');
  const line = r.logs.find((l) => l.msg === 'node internals');
  t.match(line, { http_parser: 'fallback: forced by LB_NODE_FALLBACK', tcp_wrap: 'usable', ignored: ['bogus'], LB_NODE_FALLBACK: 'http_parser,bogus' }, 'log line');
  t.same(r.status.nodeInternals[0], { name: 'http_parser', mode: 'fallback', reason: 'forced by LB_NODE_FALLBACK' }, 'lb status --json');
  t.match(r.text, /^node internals: http_parser fallback \(forced by LB_NODE_FALLBACK\), tcp_wrap usable$/m, 'lb status');
  t.match(r.metrics, /^lb_node_internal\{name="http_parser",mode="fallback"\} 1$/m, 'gauge: http_parser fallback');
  t.notMatch(r.metrics, /name="http_parser",mode="usable"/, 'and not usable');
});

t.test('LB_NODE_FALLBACK=all: both fallbacks', async (t) => {
  const r = await run(t, 'all');
  t.same(r.status.nodeInternals.map((i: { mode: string }) => i.mode), ['fallback', 'fallback'], 'lb status --json');
  t.match(r.metrics, /^lb_node_internal\{name="tcp_wrap",mode="fallback"\} 1$/m, 'gauge: tcp_wrap fallback');
});

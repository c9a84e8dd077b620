// A plain host + path_prefix route: the Router of one build against another's, in one process, interleaved
// rounds (best of 5). Usage: node plain-route-ab.mjs OLD_DIST NEW_DIST (each a build's dist/ directory;
// OLD is a build from before route conditions, whose route() takes (host, url)).
import path from 'node:path';
const [oldDist, newDist] = process.argv.slice(2).map((d) => path.resolve(d));
const { Router: Old } = await import(`${oldDist}/src/dataplane/router.js`);
const { Router: New } = await import(`${newDist}/src/dataplane/router.js`);
const { FrontRequest } = await import(`${newDist}/src/dataplane/http-server.js`);
const cfg = { name: 'web', pool: 'app', routes: [{ host: 'bench.test', pathPrefix: '/api/', pool: 'app' }] };
const pools = new Map([['app', { name: 'app' }]]);
const o = new Old(cfg, pools), n = new New(cfg, pools);
const RAW = ['Host', 'bench.test:8080', 'User-Agent', 'wrk'];
const socket = { remoteAddress: '127.0.0.1' };
const url = '/api/items?v=2';
const fo = () => { const req = new FrontRequest(socket, 'GET', url, 1, 1, RAW, null, -1, false); return o.route('bench.test:8080', url); };
const fn = () => { const req = new FrontRequest(socket, 'GET', url, 1, 1, RAW, null, -1, false); const r = n.route('bench.test:8080', url, req); return r === undefined ? n.fallback : r.plain ? r.pool : null; };
const N = 3_000_000; let sink;
for (let i = 0; i < N; i++) { sink = fo(); sink = fn(); }
const best = { old: Infinity, new: Infinity };
for (let r = 0; r < 5; r++) for (const [k, f] of [['old', fo], ['new', fn]]) { const t0 = process.hrtime.bigint(); for (let i = 0; i < N; i++) sink = f(); best[k] = Math.min(best[k], Number(process.hrtime.bigint() - t0) / N); }
console.log(`plain host+prefix route, best of 5 rounds of ${N}: old ${best.old.toFixed(1)} ns, new ${best.new.toFixed(1)} ns`);

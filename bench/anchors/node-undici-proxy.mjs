// node:http in, undici Pool out (stream API), round robin.
import http from 'node:http';
import { createRequire } from 'node:module';
// undici and http-proxy-3 are devDependencies of this project, resolved from its node_modules.
const require = createRequire(import.meta.url);
const { Pool } = require('undici');
const pools = [19001, 19002].map((p) => new Pool(`http://127.0.0.1:${p}`, { connections: 128, pipelining: 1 }));
let i = 0;
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host']);
http.createServer((req, res) => {
  const pool = pools[i++ % pools.length];
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k)) headers[k] = v;
  pool.stream({ path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req },
    ({ statusCode, headers }) => { res.writeHead(statusCode, headers); return res; },
    (err) => { if (err && !res.headersSent) { res.statusCode = 502; res.end(); } });
}).listen(Number(process.env.PORT || 18088), '127.0.0.1');

// http-proxy-3 used as its README shows: one ProxyServer, keep-alive agent, round robin.
import http from 'node:http';
import { createRequire } from 'node:module';
// undici and http-proxy-3 are devDependencies of this project, resolved from its node_modules.
const require = createRequire(import.meta.url);
const { createProxyServer } = require('http-proxy-3');
const upstreams = ['http://127.0.0.1:19001', 'http://127.0.0.1:19002'];
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const proxy = createProxyServer({ agent });
proxy.on('error', (e, req, res) => { try { res.statusCode = 502; res.end(); } catch {} });
let i = 0;
http.createServer((req, res) => proxy.web(req, res, { target: upstreams[i++ % upstreams.length] }))
  .listen(Number(process.env.PORT || 18086), '127.0.0.1');

// Demo upstreams for `lb demo`: each port answers "hello from upstream PORT" (and /healthz with 200),
// echoes websocket-free plain HTTP only. Tells its parent when every port listens.

import http from 'node:http';

const ports = process.argv.slice(2).map(Number);
let listening = 0;
for (const port of ports) {
  http
    .createServer((req, res) => {
      if (req.url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      }
      const body = `hello from upstream ${port}: ${req.method} ${req.url} (x-forwarded-for: ${req.headers['x-forwarded-for'] ?? '-'})\n`;
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': String(port) }).end(body);
    })
    .listen(port, '127.0.0.1', () => {
      if (++listening === ports.length) process.send?.('ready');
    })
    .on('error', (err) => {
      process.stderr.write(`demo upstream ${port}: ${err.message}\n`);
      process.exit(1);
    });
}
process.on('disconnect', () => process.exit(0));

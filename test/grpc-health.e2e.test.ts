// gRPC health checks (health_check.type = "grpc"): the real daemon checks real @grpc/grpc-js servers with
// grpc.health.v1.Health/Check (messages encoded by hand: no proto files), over h2c on an h2c pool, over
// h2c on an http1 pool (the documented choice), and over TLS with ALPN h2 on an h2 pool. The servers'
// status is flipped by the test; `lb status` (the real CLI) shows the backend go down and come back, and
// a service name the server does not know (SERVICE_UNKNOWN, or grpc-status NOT_FOUND) fails the check.

import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { cli, freePort, startLb, tmpdir, waitFor, type Lb } from './helpers/lb.js';
import { makeCa, makeLeaf } from './helpers/pki.js';

/** HealthCheckRequest { string service = 1 }, as an object (grpc-js takes a falsy message for none). */
function decodeRequest(buf: Buffer): { service: string } {
  return { service: decodeService(buf) };
}

function decodeService(buf: Buffer): string {
  if (buf.length === 0) return '';
  if (buf[0] !== 0x0a) throw new Error('bad HealthCheckRequest');
  let len = 0;
  let shift = 0;
  let i = 1;
  for (;;) {
    const b = buf[i++]!;
    len |= (b & 0x7f) << shift;
    shift += 7;
    if ((b & 0x80) === 0) break;
  }
  return buf.subarray(i, i + len).toString('utf8');
}

/** HealthCheckResponse { ServingStatus status = 1 } (UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3) */
function encodeResponse(status: number): Buffer {
  return status === 0 ? Buffer.alloc(0) : Buffer.from([0x08, status]);
}

interface HealthServer {
  port: number;
  /** Status per service name ("" = the server as a whole); a name missing is NOT_FOUND, as grpc-health does. */
  status: Map<string, number>;
  checks: number;
  close(): Promise<void>;
}

async function startHealthServer(creds = grpc.ServerCredentials.createInsecure()): Promise<HealthServer> {
  const server = new grpc.Server();
  const h: HealthServer = {
    port: 0,
    status: new Map([['', 1]]),
    checks: 0,
    close: () => new Promise<void>((r) => server.tryShutdown(() => r())),
  };
  server.addService(
    {
      Check: {
        path: '/grpc.health.v1.Health/Check',
        requestStream: false,
        responseStream: false,
        requestSerialize: (r: { service: string }) => Buffer.from(r.service),
        requestDeserialize: decodeRequest,
        responseSerialize: encodeResponse,
        responseDeserialize: (b: Buffer) => b[1] ?? 0,
      },
    } as grpc.ServiceDefinition,
    {
      Check: (call: grpc.ServerUnaryCall<{ service: string }, number>, cb: grpc.sendUnaryData<number>) => {
        h.checks++;
        const s = h.status.get(call.request.service);
        if (s === undefined) cb({ code: grpc.status.NOT_FOUND, details: `unknown service ${call.request.service}` });
        else cb(null, s);
      },
    },
  );
  h.port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(port))));
  return h;
}

async function health(lb: Lb, pool: string, backend: string): Promise<{ health: string; detail: string }> {
  const r = await cli(['status', '--json', '-s', lb.socket]);
  const st = JSON.parse(r.stdout) as { pools: Array<{ name: string; backends: Array<{ name: string; state: string; lastCheck?: { detail?: string } }> }> };
  const b = st.pools.find((p) => p.name === pool)!.backends.find((x) => x.name === backend)!;
  return { health: b.state, detail: JSON.stringify(b) };
}

function config(port: number, pools: string): string {
  return `
[daemon]
workers = 1
grace_period = "2s"
[admin]
socket = "{{socket}}"
[log]
level = "warn"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "h2c"
${pools}
`;
}

const CHECK = 'interval = "200ms", timeout = "150ms", rise = 1, fall = 1';

t.test('grpc checks over h2c (h2c pool and http1 pool) follow the server status', async (t) => {
  const a = await startHealthServer();
  t.teardown(() => a.close());
  const b = await startHealthServer();
  b.status.set('app.Orders', 1);
  t.teardown(() => b.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `[pools.h2c]
protocol = "h2c"
backends = [ { name = "a", address = "127.0.0.1:${a.port}" } ]
health_check = { type = "grpc", ${CHECK} }
[pools.plain]
backends = [ { name = "b", address = "127.0.0.1:${b.port}" } ]
health_check = { type = "grpc", service = "app.Orders", ${CHECK} }
[pools.unknown]
protocol = "h2c"
backends = [ { name = "c", address = "127.0.0.1:${b.port}" } ]
health_check = { type = "grpc", service = "no.Such", ${CHECK} }`,
    ),
    [port],
  );
  t.teardown(() => lb.stop());

  await waitFor(async () => (await health(lb, 'h2c', 'a')).health === 'up', 20_000, 'a up (SERVING over h2c)');
  await waitFor(async () => (await health(lb, 'plain', 'b')).health === 'up', 20_000, 'b up (service app.Orders, h2c on an http1 pool)');
  await waitFor(async () => (await health(lb, 'unknown', 'c')).health === 'down', 20_000, 'c down (service unknown to the server)');
  t.match((await health(lb, 'unknown', 'c')).detail, /grpc-status 5/, 'NOT_FOUND named in the check detail');

  a.status.set('', 2); // NOT_SERVING
  await waitFor(async () => (await health(lb, 'h2c', 'a')).health === 'down', 20_000, 'a down on NOT_SERVING');
  t.match((await health(lb, 'h2c', 'a')).detail, /NOT_SERVING/);
  a.status.set('', 1);
  await waitFor(async () => (await health(lb, 'h2c', 'a')).health === 'up', 20_000, 'a up again on SERVING');
  b.status.set('app.Orders', 0); // UNKNOWN
  await waitFor(async () => (await health(lb, 'plain', 'b')).health === 'down', 20_000, 'b down on UNKNOWN');
  t.ok(a.checks > 3 && b.checks > 3, `the servers answered ${a.checks} and ${b.checks} checks`);

  // A stopped server: transport errors fail the check.
  await a.close();
  await waitFor(async () => (await health(lb, 'h2c', 'a')).health === 'down', 20_000, 'a down once its server is gone');
  t.pass('down on a stopped server');
});

t.test('grpc check over TLS (ALPN h2) on an h2 pool', async (t) => {
  const dir = tmpdir();
  makeCa(dir, 'ca');
  makeLeaf(dir, 'ca', 'srv', '/CN=grpc.internal', ['DNS:grpc.internal', 'IP:127.0.0.1']);
  const creds = grpc.ServerCredentials.createSsl(null, [
    { cert_chain: fs.readFileSync(path.join(dir, 'srv.pem')), private_key: fs.readFileSync(path.join(dir, 'srv.key')) },
  ]);
  const s = await startHealthServer(creds);
  t.teardown(() => s.close());
  const port = await freePort();
  const lb = await startLb(
    config(
      port,
      `[pools.h2c]
protocol = "h2"
tls = { ca = "ca.pem", server_name = "grpc.internal" }
backends = [ { name = "s", address = "127.0.0.1:${s.port}" } ]
health_check = { type = "grpc", ${CHECK} }`,
    ),
    [port],
    { dir },
  );
  t.teardown(() => lb.stop());
  await waitFor(async () => (await health(lb, 'h2c', 's')).health === 'up', 20_000, 's up over TLS');
  s.status.set('', 2);
  await waitFor(async () => (await health(lb, 'h2c', 's')).health === 'down', 20_000, 's down on NOT_SERVING over TLS');
  s.status.set('', 1);
  await waitFor(async () => (await health(lb, 'h2c', 's')).health === 'up', 20_000, 's back up');
  t.pass('followed over TLS');
});

// gRPC through lb end to end: a real @grpc/grpc-js client -> lb (an http listener with http2 = true: h2c
// with prior knowledge) -> real @grpc/grpc-js servers (a pool with protocol = "h2c"). Messages are raw
// bytes (identity serializers: no proto files). Unary, server streaming, client streaming and bidi
// streaming; a deadline the server exceeds (DEADLINE_EXCEEDED at the client, grpc-timeout seen by the
// server); a non-OK status with its grpc-message and custom trailing metadata intact; 8 MiB messages both
// ways; lb's own errors as gRPC statuses (UNAVAILABLE when no backend can be reached).

import t from 'tap';
import * as grpc from '@grpc/grpc-js';
import { freePort, startLb, type Lb } from './helpers/lb.js';

const raw = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};

const SERVICE = {
  Unary: { path: '/test.Echo/Unary', requestStream: false, responseStream: false, ...raw },
  Server: { path: '/test.Echo/Server', requestStream: false, responseStream: true, ...raw },
  Client: { path: '/test.Echo/Client', requestStream: true, responseStream: false, ...raw },
  Bidi: { path: '/test.Echo/Bidi', requestStream: true, responseStream: true, ...raw },
} as grpc.ServiceDefinition;

const BIG = 64 * 1024 * 1024;
const OPTIONS = { 'grpc.max_receive_message_length': BIG, 'grpc.max_send_message_length': BIG };

interface Seen {
  /** Deadlines the server saw on /slow calls (Infinity: none). */
  deadlines: number[];
}

async function startServer(seen: Seen): Promise<{ port: number; close: () => Promise<void> }> {
  const server = new grpc.Server(OPTIONS);
  server.addService(SERVICE, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const text = call.request.subarray(0, 16).toString('latin1');
      if (text.startsWith('fail')) {
        const md = new grpc.Metadata();
        md.set('x-custom', 'v1');
        md.set('x-trace-bin', Buffer.from([0, 1, 2, 255]));
        cb({ code: grpc.status.INVALID_ARGUMENT, details: 'bad thing: ü, 100%', metadata: md });
        return;
      }
      if (text.startsWith('slow')) {
        const d = call.getDeadline();
        seen.deadlines.push(d instanceof Date ? d.getTime() : Number(d));
        // Never answers in time; the call ends when the client's deadline cancels it.
        const timer = setTimeout(() => cb(null, Buffer.from('too late')), 10_000);
        call.on('cancelled', () => clearTimeout(timer));
        return;
      }
      cb(null, call.request);
    },
    Server: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`msg ${i}`));
      call.end();
    },
    Client: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      let count = 0;
      let bytes = 0;
      call.on('data', (m: Buffer) => {
        count++;
        bytes += m.length;
      });
      call.on('end', () => cb(null, Buffer.from(`${count} ${bytes}`)));
    },
    Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (m: Buffer) => call.write(Buffer.concat([Buffer.from('echo '), m])));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, close: () => new Promise<void>((r) => server.tryShutdown(() => r())) };
}

const Client = grpc.makeGenericClientConstructor(SERVICE, 'Echo');
interface EchoClient extends grpc.Client {
  Unary(msg: Buffer, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, v?: Buffer) => void): grpc.ClientUnaryCall;
  Server(msg: Buffer): grpc.ClientReadableStream<Buffer>;
  Client(cb: (err: grpc.ServiceError | null, v?: Buffer) => void): grpc.ClientWritableStream<Buffer>;
  Bidi(): grpc.ClientDuplexStream<Buffer, Buffer>;
}

function unary(c: EchoClient, msg: Buffer, deadlineMs = 30_000): Promise<{ err: grpc.ServiceError | null; value?: Buffer }> {
  return new Promise((resolve) => {
    c.Unary(msg, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, value?: Buffer) => resolve({ err, value }));
  });
}

function config(port: number, backend: number, dead: number): string {
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
http2 = true
pool = "grpc"
[[listeners.web.routes]]
path_prefix = "/dead."
pool = "dead"
[pools.grpc]
protocol = "h2c"
backends = [ { address = "127.0.0.1:${backend}" } ]
[pools.dead]
protocol = "h2c"
retries = 0
backends = [ { address = "127.0.0.1:${dead}" } ]
`;
}

t.test('gRPC through lb (h2c front, h2c pool)', async (t) => {
  const seen: Seen = { deadlines: [] };
  const server = await startServer(seen);
  t.teardown(() => server.close());
  const port = await freePort();
  const lb: Lb = await startLb(config(port, server.port, await freePort()), [port]);
  t.teardown(() => lb.stop());
  const c = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), OPTIONS) as unknown as EchoClient;
  t.teardown(() => c.close());

  // Unary.
  const u = await unary(c, Buffer.from('hello'));
  t.equal(u.err, null);
  t.equal(u.value?.toString(), 'hello');

  // Server streaming: 100 messages in order.
  const got: string[] = await new Promise((resolve, reject) => {
    const out: string[] = [];
    const call = c.Server(Buffer.from('100')) as grpc.ClientReadableStream<Buffer>;
    call.on('data', (m: Buffer) => out.push(m.toString()));
    call.on('end', () => resolve(out));
    call.on('error', reject);
  });
  t.equal(got.length, 100);
  t.equal(got[99], 'msg 99');

  // Client streaming: 50 messages of 1 KiB.
  const summed: string = await new Promise((resolve, reject) => {
    const call = c.Client((err: grpc.ServiceError | null, v?: Buffer) => (err ? reject(err) : resolve(v!.toString()))) as grpc.ClientWritableStream<Buffer>;
    for (let i = 0; i < 50; i++) call.write(Buffer.alloc(1024, i));
    call.end();
  });
  t.equal(summed, `50 ${50 * 1024}`);

  // Bidi: each message answered before the next is sent (a real conversation, not a batch).
  const bidi = c.Bidi() as grpc.ClientDuplexStream<Buffer, Buffer>;
  const replies: string[] = [];
  for (let i = 0; i < 10; i++) {
    const next = new Promise<string>((resolve) => bidi.once('data', (m: Buffer) => resolve(m.toString())));
    bidi.write(Buffer.from(`ping ${i}`));
    replies.push(await next);
  }
  const ended = new Promise<void>((resolve) => bidi.on('end', resolve));
  bidi.on('data', () => {});
  bidi.end();
  await ended;
  t.same(replies, Array.from({ length: 10 }, (_, i) => `echo ping ${i}`));

  // A deadline the server exceeds.
  const slow = await unary(c, Buffer.from('slow'), 500);
  t.equal(slow.err?.code, grpc.status.DEADLINE_EXCEEDED, `deadline: ${slow.err?.message}`);
  t.equal(seen.deadlines.length, 1);
  t.ok(Number.isFinite(seen.deadlines[0]), 'the server got the deadline (grpc-timeout passed through)');

  // A non-OK status: code, message and custom trailing metadata intact.
  const bad = await unary(c, Buffer.from('fail'));
  t.equal(bad.err?.code, grpc.status.INVALID_ARGUMENT);
  t.equal(bad.err?.details, 'bad thing: ü, 100%');
  t.same(bad.err?.metadata.get('x-custom'), ['v1']);
  t.same(bad.err?.metadata.get('x-trace-bin'), [Buffer.from([0, 1, 2, 255])]);

  // Large messages both ways: 8 MiB echoed.
  const big = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32BE(i, i);
  const echoed = await unary(c, big);
  t.equal(echoed.err, null);
  t.ok(echoed.value?.equals(big), '8 MiB message echoed intact');

  // lb's own error: no backend reachable for /dead.* -> UNAVAILABLE with lb's message.
  const deadClient = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  t.teardown(() => deadClient.close());
  const dead = await new Promise<grpc.ServiceError | null>((resolve) => {
    deadClient.makeUnaryRequest('/dead.Svc/Call', (b: Buffer) => b, (b: Buffer) => b, Buffer.from('x'), (err) => resolve(err));
  });
  t.equal(dead?.code, grpc.status.UNAVAILABLE);
  t.match(dead?.details ?? '', /502 Bad Gateway: backend .* failed \(ECONNREFUSED\)/);
});

// Fuzzing the admin protocol with fast-check (seeded): AdminServer.handle(line) called directly, without a
// socket, with a fake handler that validates fields as the daemon's does (and a hostile one that throws or
// rejects with arbitrary values); then the same over a real unix socket, with random lines cut into random
// chunks. Property: never a throw, a crash or a hang; every request line gets exactly one answer, and an
// answer is {ok:true,result} or {ok:false,error:{code,message}} with a non-empty code, serialisable as one
// line.

import t from 'tap';
import fc from 'fast-check';
import net from 'node:net';
import path from 'node:path';
import { AdminError, AdminServer, MAX_LINE, str, type AdminRequest, type AdminResponse } from '../src/admin/server.js';
import { tmpdir } from './helpers/lb.js';

/** The daemon's command surface, validated the way src/daemon/primary.ts does it. */
async function fakeDaemon(req: AdminRequest): Promise<unknown> {
  switch (req.cmd) {
    case 'status':
      return { pools: [{ name: 'app', backends: [{ name: 'a', state: 'up' }] }] };
    case 'reload':
      return { changes: [], listenErrors: [] };
    case 'drain':
    case 'ready':
    case 'weight': {
      const pool = str(req, 'pool');
      const backend = str(req, 'backend');
      if (pool !== 'app') throw new AdminError('UNKNOWN_POOL', `no pool ${pool}`);
      if (backend !== 'a') throw new AdminError('UNKNOWN_BACKEND', `pool ${pool} has no backend ${backend}`);
      if (req.cmd !== 'weight') return { pool, backend, state: req.cmd };
      const w = req.weight;
      if (w === undefined) throw new AdminError('MISSING_FIELD', '"weight" needs "weight"');
      if (typeof w !== 'number' || !Number.isInteger(w) || w < 0 || w > 1000) throw new AdminError('INVALID_FIELD', `"weight" must be an integer from 0 to 1000, got ${JSON.stringify(w)}`);
      return { pool, backend, weight: w };
    }
  }
  throw new AdminError('UNKNOWN_COMMAND', `unknown command ${JSON.stringify(req.cmd)}`);
}

function wellFormed(r: AdminResponse): boolean {
  const line = JSON.stringify(r);
  if (line.includes('\n')) throw new Error('answer spans lines');
  if (r.ok === true) return 'result' in r;
  if (r.ok !== false) throw new Error(`ok is ${String((r as { ok: unknown }).ok)}`);
  if (typeof r.error?.code !== 'string' || r.error.code === '') throw new Error(`no error code: ${line}`);
  if (typeof r.error.message !== 'string') throw new Error(`no error message: ${line}`);
  return true;
}

/** handle(line) within a deadline: a hang is a failure, not a stuck test. */
async function handleWithin(server: AdminServer, line: string, ms = 2000): Promise<AdminResponse> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`handle() hung on ${JSON.stringify(line.slice(0, 80))}`)), ms)));
  try {
    return await Promise.race([server.handle(line), hang]);
  } finally {
    clearTimeout(timer);
  }
}

const CMDS = ['status', 'reload', 'drain', 'ready', 'weight', 'inflight', 'test-block', '', 'STATUS', 'constructor', '__proto__', 'toString'];
const VALID = ['{"cmd":"status"}', '{"cmd":"reload"}', '{"cmd":"drain","pool":"app","backend":"a"}', '{"cmd":"ready","pool":"app","backend":"a"}', '{"cmd":"weight","pool":"app","backend":"a","weight":5}'];

const requestObject = fc.record(
  {
    cmd: fc.oneof(fc.constantFrom(...CMDS), fc.string(), fc.anything()),
    pool: fc.oneof(fc.constantFrom('app', '', 'nope'), fc.anything()),
    backend: fc.oneof(fc.constantFrom('a', '', 'z'), fc.anything()),
    weight: fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.double(), fc.anything()),
  },
  { requiredKeys: [] },
);
const mutatedValid = fc.tuple(fc.constantFrom(...VALID), fc.array(fc.tuple(fc.nat(), fc.nat(), fc.string({ maxLength: 3 })), { maxLength: 4 })).map(([line, ops]) => {
  let s = line;
  for (const [i, kind, text] of ops) {
    const at = i % (s.length + 1);
    s = kind % 3 === 0 ? s.slice(0, at) + s.slice(at + 1) : kind % 3 === 1 ? s.slice(0, at) + text + s.slice(at) : s.slice(0, at) + (text || 'x') + s.slice(at + 1);
  }
  return s;
});
const line = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.json(),
  fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
  requestObject.map((o) => {
    try {
      return JSON.stringify(o) ?? '{}';
    } catch {
      return '{}';
    }
  }),
  mutatedValid,
  fc.constantFrom('{"cmd":"status","__proto__":{"cmd":"reload"}}', '{"cmd":"drain","pool":{"toString":1},"backend":"a"}', '[]', 'null', '""', '1e999', `${'['.repeat(50_000)}`, `{"cmd":"${'x'.repeat(70_000)}"}`),
);

t.test('handle(line) with a daemon-like handler: always ok:true or ok:false with a code', async (t) => {
  const server = new AdminServer('/nonexistent/admin.sock', fakeDaemon);
  const seen = new Map<string, number>();
  await fc.assert(
    fc.asyncProperty(line, async (l) => {
      const r = await handleWithin(server, l);
      const key = r.ok ? 'ok' : r.error.code;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      return wellFormed(r);
    }),
    { seed: 42, numRuns: 2000 },
  );
  t.comment(`answers: ${[...seen].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  t.ok(seen.get('ok')! > 0 && seen.get('BAD_REQUEST')! > 0 && seen.get('UNKNOWN_COMMAND')! > 0, 'the inputs reached valid commands as well as every kind of refusal');
  t.notOk(seen.has('INTERNAL'), 'the daemon-like handler never produced INTERNAL');
});

t.test('handle(line) with a hostile handler that throws or rejects with anything: still ok:false with a code', async (t) => {
  let i = 0;
  await fc.assert(
    fc.asyncProperty(fc.anything({ withBigInt: true, withNullPrototype: true, withBoxedValues: true }), fc.boolean(), async (thrown, reject) => {
      const server = new AdminServer('/nonexistent/admin.sock', async () => {
        if (reject) return Promise.reject(thrown);
        throw thrown;
      });
      const r = await handleWithin(server, VALID[i++ % VALID.length]!);
      return wellFormed(r) && r.ok === false;
    }),
    { seed: 43, numRuns: 1000 },
  );
  t.pass('1000 hostile handlers');
});

t.test('over a real socket: random lines in random chunks, one answer per request line', async (t) => {
  const dir = tmpdir('lb-fuzz-admin-');
  const server = new AdminServer(path.join(dir, 'admin.sock'), fakeDaemon);
  await server.start();
  t.teardown(() => server.close());
  const safeLine = fc.oneof(line, fc.constantFrom(...VALID)).map((l) => l.replace(/\n/g, ' '));
  await fc.assert(
    fc.asyncProperty(fc.array(safeLine, { minLength: 1, maxLength: 8 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }), async (lines, cuts) => {
      const payload = Buffer.from(lines.map((l) => `${l}\n`).join(''));
      const expected = lines.filter((l) => l.trim() !== '');
      const tooLong = lines.findIndex((l) => Buffer.byteLength(l) > MAX_LINE);
      const got = await new Promise<string[]>((resolve, reject) => {
        const c = net.connect(server.socketPath);
        let buf = '';
        c.setEncoding('utf8');
        c.on('data', (d: string) => (buf += d));
        c.once('error', reject);
        const timer = setTimeout(() => reject(new Error('no end of answers within 5 s')), 5000);
        c.once('close', () => {
          clearTimeout(timer);
          resolve(buf.split('\n').filter(Boolean));
        });
        c.once('connect', async () => {
          // Write in chunks of the given sizes, with a turn of the event loop in between.
          let at = 0;
          for (let k = 0; at < payload.length; k++) {
            const n = cuts[k % cuts.length]!;
            if (!c.writable) break;
            c.write(payload.subarray(at, at + n));
            at += n;
            if (k % 4 === 3) await new Promise((r) => setImmediate(r));
          }
          c.end();
        });
      });
      const answers = got.map((g) => JSON.parse(g) as AdminResponse);
      answers.forEach(wellFormed);
      if (tooLong === -1) {
        if (answers.length !== expected.length) throw new Error(`${expected.length} lines, ${answers.length} answers`);
      } else if (answers[answers.length - 1]?.ok !== false || (answers[answers.length - 1] as { error: { code: string } }).error.code !== 'LINE_TOO_LONG') {
        throw new Error('a line over 64 KiB must end the conversation with LINE_TOO_LONG');
      }
      return true;
    }),
    { seed: 44, numRuns: 300 },
  );
  t.pass('300 conversations');
});

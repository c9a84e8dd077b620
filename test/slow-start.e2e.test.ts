// Slow start in a key-hashing pool through the real daemon (`lb run`): a backend that comes back up takes
// a growing share of the keys as the ramp goes on, a key that reached it stays there, and keys of the
// other backends never move (the table keeps the full weight; the ramp admits keys by a second hash).

import http from 'node:http';
import t from 'tap';
import { admin, backends, freePort, get, httpConfig, startLb, startUpstream, waitFor, type Upstream } from './helpers/lb.js';

const KEYS = Array.from({ length: 400 }, (_, i) => `user-${i}`);

interface Status {
  name: string;
  state: string;
  weight: number;
  ramp?: number;
}

async function backendStatus(socket: string, name: string): Promise<Status | undefined> {
  const r = await admin(socket, { cmd: 'status' });
  const p = (r.result.pools as Array<{ name: string; backends: Status[] }>).find((x) => x.name === 'app');
  return p?.backends.find((b) => b.name === name);
}

for (const algorithm of ['maglev', 'consistent-hash']) {
  t.test(`${algorithm} with slow_start: the returning backend's key share rises with the ramp, other keys stay put`, async (t) => {
    let u4Healthy = false;
    const ups: Upstream[] = await Promise.all(
      ['u1', 'u2', 'u3', 'u4'].map((name) =>
        startUpstream(name, (req, res) => {
          if (req.url === '/healthz') {
            res.writeHead(name !== 'u4' || u4Healthy ? 200 : 503).end();
            return;
          }
          res.writeHead(200, { 'content-type': 'text/plain' }).end(name);
        }),
      ),
    );
    t.teardown(() => Promise.all(ups.map((u) => u.close())));
    const port = await freePort();
    const lb = await startLb(
      httpConfig(
        port,
        `[pools.app]\nalgorithm = "${algorithm}"\nhash_key = "header:x-user"\nslow_start = "20s"\n` +
          `backends = ${backends(ups.map((u) => ({ name: u.name, port: u.port })))}\n` +
          `[pools.app.health_check]\ntype = "http"\npath = "/healthz"\ninterval = "500ms"\ntimeout = "500ms"\nrise = 1\nfall = 2\n`,
      ),
      [port],
    );
    t.teardown(() => lb.stop());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    t.teardown(() => agent.destroy());

    /** Who serves each key now. */
    const round = async (): Promise<string[]> => {
      const out: string[] = new Array(KEYS.length);
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < KEYS.length) {
            const i = next++;
            const r = await get(port, '/', { agent, headers: { 'x-user': KEYS[i]! } });
            if (r.status !== 200) throw new Error(`key ${KEYS[i]}: status ${r.status}`);
            out[i] = r.body;
          }
        }),
      );
      return out;
    };

    await waitFor(async () => (await backendStatus(lb.socket, 'u4'))?.state === 'down', 20_000, 'u4 down');
    const before = await round();
    t.equal(before.filter((b) => b === 'u4').length, 0, 'while u4 is down no key goes to it');

    u4Healthy = true;
    const up = await waitFor(async () => {
      const st = await backendStatus(lb.socket, 'u4');
      return st?.state === 'up' ? st : undefined;
    }, 20_000, 'u4 up');
    t.ok(up.ramp !== undefined && up.ramp < 1, `status shows the ramp (${up.ramp})`);
    const onU4: number[] = [];
    let movedAmongOthers = 0;
    let leftU4 = 0;
    let prev = before;
    // (Checks time out after 500 ms, the interval, and need two failures: on a loaded machine one slow check
    // must not mark u1-u3 down, which would move keys for a reason other than the ramp.)
    // Rounds until the ramp (20 s) is over by the status (no `ramp` any more) and two rounds in a row agree
    // (the worker has the last step too): then u4 holds its full share.
    let rounds = 0;
    let finished = false;
    for (;;) {
      finished ||= (await backendStatus(lb.socket, 'u4'))?.ramp === undefined;
      const now = await round();
      rounds++;
      for (let i = 0; i < KEYS.length; i++) {
        if (now[i] === prev[i]) continue;
        if (prev[i] === 'u4') leftU4++;
        else if (now[i] !== 'u4') movedAmongOthers++;
      }
      const same = now.every((b, i) => b === prev[i]);
      onU4.push(now.filter((b) => b === 'u4').length);
      prev = now;
      if (finished && same) break;
      if (rounds > 2000) throw new Error('the ramp did not finish');
    }
    t.equal(movedAmongOthers, 0, `no key moved between u1, u2, u3 during the ramp (${rounds} rounds of ${KEYS.length} keys)`);
    t.equal(leftU4, 0, 'no key left u4 once it reached it');
    t.same(
      onU4,
      [...onU4].sort((a, b) => a - b),
      `keys on u4 never fall: ${onU4.join(' ')}`,
    );
    const full = onU4.at(-1)!;
    t.ok(full > KEYS.length / 8, `after the ramp u4 holds its share (${full} of ${KEYS.length} keys)`);
    t.ok(onU4[0]! < full / 2, `early in the ramp it holds much less (${onU4[0]} of ${full})`);
    t.ok(onU4.some((n) => n > 0 && n < full), 'and in between, a part');
    // Every key that moved went to u4: the table was not rebuilt with another weight.
    const moved = before.filter((b, i) => b !== prev[i]);
    t.ok(moved.length === full, `exactly the keys now on u4 moved (${moved.length})`);
  });
}

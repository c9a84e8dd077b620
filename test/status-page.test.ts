// The status page (GET / on the metrics listener) in a real headless Chromium: backends and their states
// are on the page, it follows `lb drain` without a reload, and it shows traffic. Chromium is required:
// without /usr/bin/chromium (or $CHROMIUM) this test fails with a message saying so; it never skips.
//
// LB_UPDATE_SCREENSHOT=1 writes the 1280x800 screenshot taken with traffic flowing to docs/status-page.png
// (linked from README); otherwise it goes to the test's temp dir.

import t, { type Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { backends, cli, freePort, get, ROOT, startLb, startLoad, startUpstream, tmpdir, waitFor, type Upstream } from './helpers/lb.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/** An upstream with a little latency; `errorEvery` > 0 answers every n-th request with 500. */
function app(name: string, opts: { minMs?: number; maxMs?: number; errorEvery?: number } = {}): Promise<Upstream> {
  let n = 0;
  return startUpstream(name, (req, res) => {
    n++;
    const fail = opts.errorEvery ? n % opts.errorEvery === 0 : false;
    const ms = (opts.minMs ?? 1) + Math.random() * ((opts.maxMs ?? 6) - (opts.minMs ?? 1));
    setTimeout(() => {
      res.writeHead(fail ? 500 : 200, { 'content-type': 'text/plain' });
      res.end(fail ? 'oops' : name);
    }, req.url === '/healthz' ? 0 : ms);
  });
}

async function launch(t: Test): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await chromium.launchPersistentContext(tmpdir('lb-chromium-'), {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => ctx.close());
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  return { ctx, page };
}

const stateOf = (page: Page, pool: string, backend: string): Promise<string | null> =>
  page.evaluate(([p, b]) => document.querySelector(`tr[data-pool="${p}"][data-backend="${b}"] .state`)?.textContent ?? null, [pool, backend] as const);

t.test('the status page shows pools, backends and states, follows lb drain without a reload, and shows traffic', async (t) => {
  if (!fs.existsSync(CHROMIUM)) {
    t.fail(`Chromium not found at ${CHROMIUM}: this test needs a headless Chromium (Debian: apt-get install -y chromium; or set CHROMIUM=/path/to/chromium). It does not skip.`);
    return;
  }
  const ups = await Promise.all([app('app-1'), app('app-2', { minMs: 2, maxMs: 12 }), app('api-1', { errorEvery: 25 }), app('api-2')]);
  t.teardown(() => Promise.all(ups.map((u) => u.close())));
  const deadPort = await freePort();
  const [port, mport] = [await freePort(), await freePort()];
  const lb = await startLb(
    `
[daemon]
workers = 2
grace_period = "2s"
[admin]
socket = "{{socket}}"
[metrics]
listen = "127.0.0.1:${mport}"
[listeners.web]
protocol = "http"
listen = "127.0.0.1:${port}"
pool = "app"
[[listeners.web.routes]]
path_prefix = "/api/"
pool = "api"
[pools.app]
algorithm = "weighted-round-robin"
retries = 1
backends = ${backends([{ name: 'app-1', port: ups[0]!.port, weight: 3 }, { name: 'app-2', port: ups[1]!.port, weight: 2 }, { name: 'app-3', port: deadPort }])}
[pools.app.health_check]
type = "http"
path = "/healthz"
interval = "250ms"
timeout = "200ms"
rise = 1
fall = 1
[pools.api]
algorithm = "least-connections"
retries = 0
backends = ${backends([{ name: 'api-1', port: ups[2]!.port }, { name: 'api-2', port: ups[3]!.port }])}
`,
    [port, mport],
  );
  t.teardown(() => lb.stop());
  const web = startLoad(port, { concurrency: 3, keepAlive: true });
  const api = startLoad(port, { concurrency: 2, keepAlive: true, path: '/api/items' });
  t.teardown(async () => {
    await web.stop();
    await api.stop();
  });

  const { page } = await launch(t);
  const url = `http://127.0.0.1:${mport}/`;
  const res = await page.goto(url);
  t.equal(res?.status(), 200, 'GET / answers 200');
  t.match(res?.headers()['content-type'], /^text\/html/);
  t.equal(await page.title(), 'lb status');

  // Every backend is on the page with its state (the dead one goes down after one failed check).
  await page.waitForFunction(() => document.querySelectorAll('tr[data-backend]').length === 5, undefined, { timeout: 5_000 });
  const want: Array<[string, string, string]> = [
    ['app', 'app-1', 'up'],
    ['app', 'app-2', 'up'],
    ['app', 'app-3', 'down'],
    ['api', 'api-1', 'up'],
    ['api', 'api-2', 'up'],
  ];
  await waitFor(async () => {
    for (const [p, b, s] of want) if ((await stateOf(page, p, b)) !== s) return false;
    return true;
  }, 5_000, `the page to show ${want.map((w) => w.join('/')).join(', ')}`);
  t.pass(`states on the page: ${want.map((w) => `${w[0]}/${w[1]}=${w[2]}`).join(', ')}`);
  t.equal(await page.locator('section.card[data-pool="app"] h2').first().innerText().then((s) => s.split(/\s/)[0]), 'app', 'a card per pool');
  t.equal(await page.locator('section.card').count(), 2);
  const badgeColor = await page.locator('tr[data-backend="app-3"] .state').evaluate((el) => getComputedStyle(el).color);
  const upColor = await page.locator('tr[data-backend="app-1"] .state').evaluate((el) => getComputedStyle(el).color);
  t.not(badgeColor, upColor, `state badges are coloured by state (down ${badgeColor}, up ${upColor})`);

  // Drain through the CLI: the page must show it on its own (no reload, no navigation).
  await page.evaluate(() => ((window as unknown as { __sameDocument: boolean }).__sameDocument = true));
  let navigations = 0;
  page.on('framenavigated', () => navigations++);
  const drained = await cli(['drain', 'app/app-2', '-s', lb.socket]);
  t.equal(drained.code, 0, `lb drain app/app-2: ${drained.stdout.trim()} ${drained.stderr.trim()}`);
  const t0 = Date.now();
  await page.waitForFunction(() => document.querySelector('tr[data-pool="app"][data-backend="app-2"] .state')?.textContent === 'drain', undefined, { timeout: 5_000 });
  t.pass(`the page showed app-2 as drain ${Date.now() - t0}ms after lb drain returned`);
  t.equal(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, 'without a reload');
  t.equal(navigations, 0, 'and without a navigation');

  // Traffic: requests per second computed from consecutive polls; errors for api-1 (every 25th is a 500).
  await page.waitForFunction(
    () => {
      const cell = document.querySelector('tr[data-backend="app-1"] td:nth-child(5) span:last-child')?.textContent ?? '';
      return parseFloat(cell) > 0;
    },
    undefined,
    { timeout: 5_000 },
  );
  const rps = await page.locator('tr[data-backend="app-1"] td:nth-child(5) span').last().innerText();
  t.pass(`app-1 shows ${rps} req/s`);
  await page.waitForFunction(() => /%/.test(document.querySelector('tr[data-backend="api-1"] td:nth-child(6)')?.textContent ?? ''), undefined, { timeout: 5_000 });
  t.pass(`api-1 error rate: ${await page.locator('tr[data-backend="api-1"] td:nth-child(6)').innerText()}`);
  t.equal(await page.locator('#banner').isVisible(), false, 'no "cannot reach lb" banner');
  t.match(await page.locator('#workers').innerText(), /^2 \/ 2$/, 'header: workers answered / configured');

  // /status.json carries the totals the page computes its rates from.
  const status = JSON.parse((await get(mport, '/status.json')).body);
  const app1 = status.pools.find((p: { name: string }) => p.name === 'app').backends.find((b: { name: string }) => b.name === 'app-1');
  t.ok(app1.requests > 0 && typeof app1.errors === 'number', `status.json totals for app-1: ${app1.requests} requests, ${app1.errors} errors`);
  t.type(status.at, 'number');

  // The screenshot: let the sparklines fill a little first.
  await new Promise((r) => setTimeout(r, 15_000));
  const out = process.env.LB_UPDATE_SCREENSHOT === '1' ? path.join(ROOT, 'docs', 'status-page.png') : path.join(tmpdir('lb-shot-'), 'status-page.png');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out });
  const png = fs.readFileSync(out);
  t.equal(png.readUInt32BE(16), 1280, 'screenshot 1280 wide');
  t.equal(png.readUInt32BE(20), 800, 'screenshot 800 high');
  t.comment(`screenshot: ${out}`);

  // Read-only: nothing but GET/HEAD.
  const post = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: mport, path: '/', method: 'POST' }, (r) => {
      r.resume();
      resolve(r.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(post, 405, 'POST / is refused: read-only');
});

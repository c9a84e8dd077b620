// The read-only status page at GET / on the metrics listener: one self-contained HTML document (inline
// CSS and JS, no build step, no external requests) that polls /status.json every POLL_MS and redraws.
//
// Data contract (/status.json, src/metrics/primary.ts statusWithTotals): Primary.status() plus, per backend,
// `requests` and `errors` (monotonic totals since start) and a top-level `at` (server clock, ms). Requests
// per second and error rate are computed here from two consecutive polls: (Δrequests / Δat) and
// (Δerrors / Δrequests). Totals never go backwards (see primary.ts), so a negative Δ only happens across
// a daemon restart; the page then starts over.
//
// Hooks for tests and scripts: every backend row is `tr[data-pool=P][data-backend=B]` with its state in
// `.state` (text: up | down | drain | maint | unchecked); `#updated` holds the time of the last successful poll.

export const POLL_MS = 1000;

export function statusPage(): string {
  return PAGE;
}

const CSS = `
:root{--bg:#f5f6f8;--card:#fff;--ink:#1d2330;--muted:#6b7385;--line:#e6e8ee;--head:#fafbfc;
--up:#1f9d55;--up-bg:#e3f6eb;--down:#d64545;--down-bg:#fde8e8;--drain:#b7791f;--drain-bg:#fdf3dc;
--unchecked:#6b7385;--unchecked-bg:#eceef2;--accent:#3b6fd8;--spark:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1a1e26;--ink:#e4e7ee;--muted:#8b93a5;--line:#2a303b;
--head:#1f242d;--up-bg:#173324;--down-bg:#3a1c1c;--drain-bg:#3a2f17;--unchecked-bg:#2a2f38;--spark:#6f9bf0}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
-webkit-font-smoothing:antialiased}
body>header{display:flex;align-items:center;gap:28px;flex-wrap:wrap;padding:14px 28px;background:var(--card);border-bottom:1px solid var(--line)}
body>header h1{margin:0;font-size:20px;font-weight:700;letter-spacing:-.02em}
body>header h1 .dot{display:inline-block;width:9px;height:9px;border-radius:50%;background:var(--up);margin-left:8px;vertical-align:middle;transition:background .3s}
body>header h1 .dot.stale{background:var(--down)}
.facts{display:flex;gap:24px;flex-wrap:wrap;margin:0}
.facts div{display:flex;flex-direction:column}
.facts dt{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.facts dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.facts dd.path{font-weight:500;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;padding-top:2px}
main{padding:22px 28px 40px;display:grid;gap:20px;grid-template-columns:repeat(auto-fit,minmax(min(100%,760px),1fr))}
.scroll{overflow-x:auto}
.listeners{grid-column:1/-1;display:flex;gap:8px;flex-wrap:wrap;align-items:center;color:var(--muted);font-size:12.5px}
.chip{background:var(--card);border:1px solid var(--line);border-radius:999px;padding:3px 10px;color:var(--ink)}
.chip b{font-weight:600}.chip span{color:var(--muted)}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;box-shadow:0 1px 2px rgba(16,24,40,.04)}
.card h2{margin:0;font-size:15px;font-weight:650;display:flex;align-items:baseline;gap:10px}
.card header{padding:12px 16px;border-bottom:1px solid var(--line);display:flex;justify-content:space-between;align-items:baseline;gap:12px;flex-wrap:nowrap}
.card .sub{color:var(--muted);font-size:12.5px;font-weight:400}
.card .sum{font-variant-numeric:tabular-nums;color:var(--muted);font-size:12.5px;white-space:nowrap}
.card .sum b{color:var(--ink);font-weight:600}
table{width:100%;border-collapse:collapse;table-layout:fixed;min-width:900px}
col.c-name{width:17%}col.c-state{width:20%}col.c-w{width:7%}col.c-if{width:8%}col.c-rps{width:16%}col.c-err{width:8%}col.c-check{width:24%}
td{overflow:hidden;text-overflow:ellipsis}
th{font-size:11px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);font-weight:600;text-align:left;padding:8px 12px;background:var(--head);border-bottom:1px solid var(--line)}
td{padding:9px 12px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child td{border-bottom:0}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name{font-weight:600}.addr{display:block;color:var(--muted);font-size:12px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.badge{display:inline-block;min-width:74px;text-align:center;padding:2px 9px;border-radius:999px;font-size:12px;font-weight:650;letter-spacing:.02em}
.s-up{color:var(--up);background:var(--up-bg)}.s-down{color:var(--down);background:var(--down-bg)}
.s-drain,.s-maint{color:var(--drain);background:var(--drain-bg)}.s-unchecked{color:var(--unchecked);background:var(--unchecked-bg)}
.why{display:block;color:var(--muted);font-size:11.5px;margin-top:3px;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.muted{color:var(--muted)}.bad{color:var(--down);font-weight:600}
.rps{display:flex;align-items:center;justify-content:flex-end;gap:8px}
svg.spark{width:72px;height:20px;flex:none}
svg.spark polyline{fill:none;stroke:var(--spark);stroke-width:1.5;stroke-linejoin:round}
svg.spark polygon{fill:var(--spark);opacity:.12;stroke:none}
.check{font-size:12.5px;white-space:nowrap}.check .ok{color:var(--up)}.check .fail{color:var(--down)}
#banner{display:none;grid-column:1/-1;background:var(--down-bg);color:var(--down);border-radius:8px;padding:10px 14px;font-weight:600}
footer{color:var(--muted);font-size:12px;padding:0 28px 24px}
`;

const SCRIPT = `
const POLL_MS = ${POLL_MS};
const HISTORY = 40;
const prev = new Map();   // "pool/backend" -> { requests, errors, at }
const hist = new Map();   // "pool/backend" -> recent requests/s, oldest first
let lastOk = 0;

const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
const $ = (id) => document.getElementById(id);

function fmtUptime(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return d + 'd ' + h + 'h';
  if (h) return h + 'h ' + m + 'm';
  if (m) return m + 'm ' + (s % 60) + 's';
  return s + 's';
}
function fmtRate(x) {
  if (x === null) return '–';
  if (x === 0) return '0';
  if (x >= 1000) return (x / 1000).toFixed(x >= 10000 ? 0 : 1) + 'k';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}
function fmtPct(x) {
  if (x === null) return '<span class="muted">–</span>';
  const t = x === 0 ? '0%' : x < 0.001 ? '<0.1%' : (x * 100).toFixed(x < 0.1 ? 1 : 0) + '%';
  return x >= 0.01 ? '<span class="bad">' + t + '</span>' : t;
}
function fmtAge(ms) {
  if (ms < 1000) return ms + ' ms ago';
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s ago';
  return Math.round(ms / 60000) + ' min ago';
}
function spark(values) {
  if (values.length < 2) return '<svg class="spark"></svg>';
  const max = Math.max(1, ...values);
  // At least 12 slots wide, so that a young history is a short line at the right, not a squeezed blip.
  const step = 72 / (Math.max(values.length, 12) - 1);
  const x0 = 72 - step * (values.length - 1);
  const pts = values.map((v, i) => (x0 + i * step).toFixed(1) + ',' + (19 - (v / max) * 17).toFixed(1));
  return '<svg class="spark" viewBox="0 0 72 20" aria-hidden="true"><polygon points="' + x0.toFixed(1) + ',20 ' + pts.join(' ') + ' 72,20"/><polyline points="' + pts.join(' ') + '"/></svg>';
}

/** Requests/s and error rate since the previous poll, and the sparkline history. */
function rates(key, b, at) {
  const p = prev.get(key);
  prev.set(key, { requests: b.requests, errors: b.errors, at });
  let rps = null, err = null;
  if (p && at > p.at && b.requests >= p.requests) {
    const dr = b.requests - p.requests;
    rps = dr / ((at - p.at) / 1000);
    err = dr > 0 ? (b.errors - p.errors) / dr : null;
  }
  const h = hist.get(key) || [];
  if (rps !== null) { h.push(rps); if (h.length > HISTORY) h.shift(); }
  hist.set(key, h);
  return { rps, err, h };
}

function check(c) {
  if (!c) return '<span class="muted">–</span>';
  const mark = c.ok ? '<span class="ok">✓</span>' : '<span class="fail">✗</span>';
  return '<span class="check">' + mark + ' ' + esc(c.detail) + ' <span class="muted">· ' + Math.round(c.ms) + ' ms · ' + fmtAge(c.ageMs) + '</span></span>';
}

function render(s) {
  $('uptime').textContent = fmtUptime(s.uptimeSeconds);
  $('workers').textContent = s.workers.answered + ' / ' + s.workers.configured;
  $('workers').title = 'answered / configured; pids ' + (s.workers.pids || []).join(', ');
  $('config').textContent = s.config;
  $('pid').textContent = s.pid;
  $('listeners').innerHTML = '<span>Listeners</span>' + s.listeners.map((l) =>
    '<span class="chip"><b>' + esc(l.name) + '</b> <span>' + esc(l.protocol) + (l.tls ? '+tls' : '') + ' ' + esc(l.listen) + ' → ' + esc(l.pool) + '</span></span>').join('');
  const cards = s.pools.map((p) => {
    let poolRps = 0, poolKnown = false, up = 0;
    const rows = p.backends.map((b) => {
      const r = rates(p.name + '/' + b.name, b, s.at);
      if (r.rps !== null) { poolRps += r.rps; poolKnown = true; }
      if (b.state === 'up') up++;
      const weight = b.weight === b.configWeight ? esc(b.weight) : esc(b.weight) + ' <span class="muted">/ ' + esc(b.configWeight) + '</span>';
      const reason = b.state === 'drain' ? 'admin drain; health ' + b.health : b.state === 'maint' ? 'admin maintenance: no traffic, no health checks' : b.state === 'up' ? '' : b.reason;
      const why = reason ? '<span class="why" title="' + esc(reason) + '">' + esc(reason) + '</span>' : '';
      return '<tr data-pool="' + esc(p.name) + '" data-backend="' + esc(b.name) + '">' +
        '<td><span class="name">' + esc(b.name) + '</span>' + (b.address !== b.name ? '<span class="addr">' + esc(b.address) + '</span>' : '') + '</td>' +
        '<td><span class="badge state s-' + esc(b.state) + '">' + esc(b.state) + '</span>' + why + '</td>' +
        '<td class="num">' + weight + '</td>' +
        '<td class="num">' + esc(b.inflight) + '</td>' +
        '<td class="num"><div class="rps">' + spark(r.h) + '<span>' + fmtRate(r.rps) + '</span></div></td>' +
        '<td class="num">' + fmtPct(r.err) + '</td>' +
        '<td>' + check(b.lastCheck) + '</td></tr>';
    }).join('');
    const un = p.unrouted && p.unrouted.requests > 0 ? ' · <b>' + esc(p.unrouted.requests) + '</b> answered 503 (no usable backend)' : '';
    return '<section class="card" data-pool="' + esc(p.name) + '"><header><h2>' + esc(p.name) +
      ' <span class="sub">' + esc(p.algorithm) + (p.healthCheck ? ' · ' + esc(p.healthCheck) + ' checks' : ' · no active checks') + '</span></h2>' +
      '<span class="sum"><b>' + up + '</b> / ' + p.backends.length + ' up · <b>' + (poolKnown ? fmtRate(poolRps) : '–') + '</b> req/s' + un + '</span></header>' +
      '<div class="scroll"><table><colgroup><col class="c-name"><col class="c-state"><col class="c-w"><col class="c-if"><col class="c-rps"><col class="c-err"><col class="c-check"></colgroup><thead><tr><th>Backend</th><th>State</th><th class="num">Weight</th><th class="num">In-flight</th><th class="num">Req/s</th><th class="num">Errors</th><th>Last check</th></tr></thead>' +
      '<tbody>' + rows + '</tbody></table></div></section>';
  }).join('');
  $('pools').innerHTML = cards;
}

async function tick() {
  try {
    const res = await fetch('/status.json', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    render(await res.json());
    lastOk = Date.now();
    $('banner').style.display = 'none';
    $('dot').classList.remove('stale');
    $('updated').textContent = new Date(lastOk).toLocaleTimeString();
  } catch (err) {
    $('banner').style.display = 'block';
    $('banner').textContent = 'Cannot reach lb (' + err.message + '); showing data from ' + (lastOk ? new Date(lastOk).toLocaleTimeString() : 'never') + ', retrying…';
    $('dot').classList.add('stale');
  } finally {
    setTimeout(tick, POLL_MS);
  }
}
tick();
`;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>lb status</title><style>${CSS}</style></head>
<body>
<header>
  <h1>lb<span class="dot" id="dot" title="live"></span></h1>
  <dl class="facts">
    <div><dt>Uptime</dt><dd id="uptime">…</dd></div>
    <div><dt>Workers</dt><dd id="workers">…</dd></div>
    <div><dt>PID</dt><dd id="pid">…</dd></div>
    <div><dt>Config</dt><dd class="path" id="config">…</dd></div>
    <div><dt>Updated</dt><dd id="updated">…</dd></div>
  </dl>
</header>
<main>
  <div id="banner" role="alert"></div>
  <div class="listeners" id="listeners"></div>
  <div id="pools" style="display:contents"></div>
</main>
<footer>Read-only. Refreshes every ${POLL_MS / 1000} s from <a href="/status.json">/status.json</a>; Prometheus metrics at <a href="/metrics">/metrics</a>.</footer>
<script>${SCRIPT}</script>
</body></html>`;

// The read-only status page at GET / on the metrics listener: plain HTML + a script that polls
// /status.json and /metrics. No build step.

export function statusPage(): string {
  return PAGE;
}

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>lb status</title></head>
<body><h1>lb</h1><div id="pools">loading…</div>
<script>
async function tick() {
  const s = await (await fetch('/status.json', { cache: 'no-store' })).json();
  document.getElementById('pools').innerHTML = s.pools.map(p => '<h2>' + p.name + '</h2><table>' +
    p.backends.map(b => '<tr data-backend="' + b.name + '"><td>' + b.name + '</td><td class="state">' + b.state + '</td></tr>').join('') + '</table>').join('');
}
tick(); setInterval(tick, 1000);
</script></body></html>`;

// bench/h2.sh's report: the raw lines (round=N target rps=… p99_ms=… cpu_us_per_req=… ok=… failed=…) as a
// Markdown table of medians over the rounds, and lb/HAProxy per round (HAProxy with HTTP/1.1 backends, the
// same shape as lb's). Usage: node bench/h2-report.mjs raw.txt > README.md
import fs from 'node:fs';

const text = fs.readFileSync(process.argv[2], 'utf8');
const header = text.split('\n').find((l) => l.startsWith('#')) ?? '';
const rows = [];
for (const line of text.split('\n')) {
  const m = /^round=(\d+) (\S+) (.*)$/.exec(line);
  if (!m) continue;
  const f = Object.fromEntries(m[3].split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]));
  rows.push({ round: Number(m[1]), target: m[2], ...f });
}
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const targets = [...new Set(rows.map((r) => r.target))];
const out = [];
out.push('# h2 in front: lb vs HAProxy vs NGINX (`npm run bench:h2`)', '');
out.push(header.replace(/^# /, ''), '');
out.push('| target | req/s (median) | req/s per round | p99 ms (median) | CPU µs/req (median) | failed |');
out.push('|---|---|---|---|---|---|');
for (const t of targets) {
  const rs = rows.filter((r) => r.target === t);
  out.push(
    `| ${t} | ${Math.round(median(rs.map((r) => r.rps)))} | ${rs.map((r) => Math.round(r.rps)).join(', ')} | ${median(rs.map((r) => r.p99_ms)).toFixed(2)} | ${median(rs.map((r) => r.cpu_us_per_req)).toFixed(1)} | ${rs.reduce((a, r) => a + (r.failed || 0), 0)} |`,
  );
}
const ratios = [];
for (const round of [...new Set(rows.map((r) => r.round))]) {
  const lb = rows.find((r) => r.round === round && r.target === 'lb');
  const hp = rows.find((r) => r.round === round && r.target === 'haproxy');
  if (lb && hp && hp.rps > 0) ratios.push(lb.rps / hp.rps);
}
out.push('');
out.push(`lb / HAProxy (req/s, same round): ${ratios.map((x) => x.toFixed(2)).join(', ')}; median ${median(ratios).toFixed(2)}x.`);
out.push('');
out.push('CPU per request is the proxy process\'s utime+stime over the h2load run (warm-up included) divided by the');
out.push('requests h2load logged: an upper bound, comparable between rows. haproxy-h2be and lb-h2be: h2c to the upstream.');
const h2be = [];
for (const round of [...new Set(rows.map((r) => r.round))]) {
  const lb = rows.find((r) => r.round === round && r.target === 'lb-h2be');
  const hp = rows.find((r) => r.round === round && r.target === 'haproxy-h2be');
  if (lb && hp && hp.rps > 0) h2be.push(lb.rps / hp.rps);
}
if (h2be.length > 0) out.push('', `lb-h2be / haproxy-h2be (same round): ${h2be.map((x) => x.toFixed(2)).join(', ')}; median ${median(h2be).toFixed(2)}x.`);
console.log(out.join('\n'));

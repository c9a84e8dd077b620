// Writes sample.txt, the synthetic trace of trace-replay.toml: `node make-sample.mjs > sample.txt`.
// 3 s of Poisson arrivals at 1,800 req/s over 5,000 uniform keys, plus a flash crowd from 1.0 s to 1.8 s:
// 900 req/s more, on 5 keys. Seeded (mulberry32, seed 7), so the file is the same on every run.
let a = 7;
const rng = () => {
  a = (a + 0x6d2b79f5) >>> 0;
  let t = a;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const out = [];
for (let t = 0; ; ) {
  t += -Math.log(1 - rng()) / 1.8;
  if (t >= 3000) break;
  out.push([t, `user-${Math.floor(rng() * 5000)}`]);
}
for (let t = 1000; ; ) {
  t += -Math.log(1 - rng()) / 0.9;
  if (t >= 1800) break;
  out.push([t, `hot-${Math.floor(rng() * 5)}`]);
}
out.sort((x, y) => x[0] - y[0]);
process.stdout.write('# TIME_MS KEY (synthetic, see make-sample.mjs)\n' + out.map(([t, k]) => `${t.toFixed(3)} ${k}`).join('\n') + '\n');

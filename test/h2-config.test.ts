// `http2` listener keys: defaults, limits, and errors that name file, line and key.

import t from 'tap';
import { parseConfigText } from '../config/load.js';
import { formatIssue } from '../config/model.js';

const base = (listener: string, protocol = 'http'): string => `
[listeners.web]
protocol = "${protocol}"
listen = "127.0.0.1:8080"
pool = "app"
${listener}
[pools.app]
backends = [{ address = "127.0.0.1:9000" }]
`;

t.test('http2 off by default; on with its defaults; limits as given', async (t) => {
  t.equal(parseConfigText(base(''), 'lb.toml').config?.listeners.web?.http2, undefined, 'no http2 unless asked for');
  t.same(parseConfigText(base('http2 = true'), 'lb.toml').config?.listeners.web?.http2, { maxConcurrentStreams: 100, initialWindowSize: 65535 });
  t.same(
    parseConfigText(base('http2 = true\nhttp2_max_concurrent_streams = 250\nhttp2_initial_window_size = 1048576'), 'lb.toml').config?.listeners.web?.http2,
    { maxConcurrentStreams: 250, initialWindowSize: 1048576 },
  );
  t.equal(parseConfigText(base('http2 = false'), 'lb.toml').config?.listeners.web?.http2, undefined, 'http2 = false is off');
});

t.test('errors name file, line and key', async (t) => {
  const issues = (text: string) => parseConfigText(text, 'lb.toml').issues.map(formatIssue);
  const noFlag = issues(base('http2_max_concurrent_streams = 10'));
  t.match(noFlag.join('\n'), /lb\.toml:6:\d+: listeners\.web\.http2_max_concurrent_streams: .*only with http2 = true/, `limit without http2: ${noFlag}`);
  const tcp = issues(base('http2 = true', 'tcp'));
  t.match(tcp.join('\n'), /lb\.toml:6:\d+: listeners\.web\.http2: .*http listeners only/, `http2 on a tcp listener: ${tcp}`);
  const zero = issues(base('http2 = true\nhttp2_max_concurrent_streams = 0'));
  t.match(zero.join('\n'), /lb\.toml:7:\d+: listeners\.web\.http2_max_concurrent_streams/, `0 streams: ${zero}`);
  const small = issues(base('http2 = true\nhttp2_initial_window_size = 1000'));
  t.match(small.join('\n'), /lb\.toml:7:\d+: listeners\.web\.http2_initial_window_size/, `a window below 65535: ${small}`);
  const str = issues(base('http2 = "yes"'));
  t.match(str.join('\n'), /lb\.toml:6:\d+: listeners\.web\.http2/, `not a boolean: ${str}`);
});

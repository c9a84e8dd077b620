// `lb demo` (npm start): three small upstreams on 127.0.0.1:9001-9003 in a child process, and the daemon in
// the foreground with the given config (lb.example.toml points at them). Stopping lb stops the upstreams.

import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runPrimary } from './daemon/primary.js';

export async function runDemo(configFile: string): Promise<void> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const child = fork(path.join(here, 'demo-upstreams.js'), ['9001', '9002', '9003'], { stdio: 'inherit' });
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`demo upstreams exited with ${code}`)));
  });
  process.on('exit', () => child.kill());
  await runPrimary(configFile);
}

// A real dnsmasq (Debian's /usr/sbin/dnsmasq) on a free loopback port, serving records from files the test
// rewrites. What dnsmasq 2.90 re-reads, and how this helper changes each kind of record:
// - A and AAAA come from an --addn-hosts file ("IP NAME" lines), which dnsmasq re-reads on SIGHUP (SIGHUP
//   also clears its cache): setHosts() rewrites it, sends SIGHUP and waits for the "read FILE" log line.
// - SRV records (--srv-host) live only in the config file, which SIGHUP does not re-read, and dnsmasq has
//   no reloadable file for them (--servers-file and --dhcp-hostsfile hold other things), so setSrv()
//   rewrites the config and restarts dnsmasq on the same port.
// - Every name under the local domain ("test" unless given) that has no record answers NXDOMAIN
//   (--local=/test/), and a known name without a record of the asked type answers NOERROR with no records.
// - --local-ttl sets the TTL of every answer from these files (dnsmasq's default is 0).
// Failure modes observed with 2.90: a query under a domain forwarded (--server=/zone/IP#PORT) to a server
// that never answers gets no answer at all (not SERVFAIL) over UDP; a name outside every local and
// forwarded domain gets REFUSED (there are no upstream servers with --no-resolv).

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, tmpdir, waitFor } from './lb.js';

export interface SrvRecord {
  name: string;
  target: string;
  port: number;
  priority: number;
  weight: number;
}

export interface DnsmasqOptions {
  /** addn-hosts lines: "10.0.0.1 app.test". */
  hosts?: string;
  srv?: SrvRecord[];
  /** --local-ttl, seconds; default 0. */
  ttl?: number;
  /** Extra config file lines, e.g. "server=/dead.test/127.0.0.1#9". */
  extra?: string[];
  /** Domain answered only from the files (NXDOMAIN for unknown names); default "test". */
  local?: string;
}

export interface Dnsmasq {
  port: number;
  /** "127.0.0.1:PORT", as lb's resolvers take it. */
  address: string;
  pid(): number | undefined;
  /** Everything dnsmasq logged (stderr), across restarts. */
  log(): string;
  setHosts(lines: string): Promise<void>;
  setSrv(records: SrvRecord[]): Promise<void>;
  /** Stops dnsmasq (SIGTERM) and waits for it to exit; start() brings it back on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function startDnsmasq(opts: DnsmasqOptions = {}): Promise<Dnsmasq> {
  const dir = tmpdir('lb-dnsmasq-');
  const hostsFile = path.join(dir, 'hosts');
  const confFile = path.join(dir, 'dnsmasq.conf');
  let srv = opts.srv ?? [];
  let child: ChildProcess | undefined;
  let log = '';
  let port = 0;
  fs.writeFileSync(hostsFile, opts.hosts ?? '');
  const writeConf = () =>
    fs.writeFileSync(
      confFile,
      [
        `local=/${opts.local ?? 'test'}/`,
        ...srv.map((r) => `srv-host=${r.name},${r.target},${r.port},${r.priority},${r.weight}`),
        ...(opts.extra ?? []),
        '',
      ].join('\n'),
    );
  writeConf();

  const reads = () => log.split(`read ${hostsFile}`).length - 1;

  const launch = async (): Promise<boolean> => {
    const c = spawn('dnsmasq', [
      '--no-daemon', '--no-resolv', '--no-hosts', `--port=${port}`, '--listen-address=127.0.0.1',
      '--bind-interfaces', `--conf-file=${confFile}`, `--addn-hosts=${hostsFile}`, `--local-ttl=${opts.ttl ?? 0}`,
      '--log-facility=-',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    const readsBefore = reads();
    c.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    let gone = false;
    void exited.then(() => (gone = true));
    await waitFor(() => gone || reads() > readsBefore, 10_000, `dnsmasq on port ${port} to start`);
    if (gone) {
      child = undefined;
      return false;
    }
    return true;
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    await exited;
    child = undefined;
  };

  // A free TCP port may still be taken for UDP (or taken between the check and dnsmasq's bind): retry.
  for (let tries = 0; ; tries++) {
    port = await freePort();
    if (await launch()) break;
    if (tries >= 5 || !/Address already in use/.test(log)) throw new Error(`dnsmasq did not start:\n${log}`);
  }

  const start = async (): Promise<void> => {
    if (!(await launch())) throw new Error(`dnsmasq did not restart on port ${port}:\n${log}`);
  };

  return {
    port,
    address: `127.0.0.1:${port}`,
    pid: () => child?.pid,
    log: () => log,
    async setHosts(lines: string): Promise<void> {
      const before = reads();
      fs.writeFileSync(hostsFile, lines);
      child!.kill('SIGHUP');
      await waitFor(() => reads() > before, 10_000, 'dnsmasq to re-read its hosts file');
    },
    async setSrv(records: SrvRecord[]): Promise<void> {
      srv = records;
      writeConf();
      await stop();
      await start();
    },
    stop,
    start,
    async close(): Promise<void> {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

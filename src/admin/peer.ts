// Who is on the other end of an admin socket connection: { pid, uid } of the peer process, best-effort.
//
// Node has no SO_PEERCRED API, so this reconstructs it from what Linux exposes:
//   1. our end's inode: readlink /proc/self/fd/FD -> "socket:[INODE]" (FD is the accepted socket's fd);
//   2. the peer's inode: /proc/net/unix does NOT carry it (its columns are Num RefCount Protocol Flags Type
//      St Inode Path, see net/unix/af_unix.c unix_seq_show); the kernel gives it only through sock_diag
//      (NETLINK_SOCK_DIAG, UNIX_DIAG_PEER), which Node cannot speak. `ss -xn` (iproute2) reads exactly
//      that, so we run `ss -xnH src SOCKET_PATH` and take the row whose local inode is ours: its last column
//      is the peer's inode;
//   3. the peer's pid: the process that has an fd linking to "socket:[PEER_INODE]" in /proc/PID/fd (the
//      same walk `ss -p` does; newest pids first, stopping at the first match);
//   4. its uid: the effective uid from /proc/PID/status "Uid:" (what SO_PEERCRED would report).
//
// Limits (documented in README): Linux only; needs `ss` (iproute2) on PATH; step 3 can only look into
// processes the daemon may ptrace-read (root sees all; an unprivileged lb sees only its own uid's
// processes, so a peer of another uid comes back undefined); a process that received the fd over
// SCM_RIGHTS or by fork is reported as whichever holder is found first. The whole lookup is bounded by
// `deadlineMs` (an `ss` still running then is killed), at most MAX_CONCURRENT lookups run at once, and
// it only runs for admin commands that change something (once per connection), never on the data path.

import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import type net from 'node:net';
import { socketFd } from '../node-internals/handles.js';

export interface Peer {
  pid: number;
  uid: number;
}

const DEFAULT_DEADLINE_MS = 500;
/** Lookups in flight at once; more (a client opening many connections) get undefined at once. */
const MAX_CONCURRENT = 4;
let running = 0;

/** The peer of an accepted unix socket connection, or undefined when Linux does not tell us in time. */
export async function peerOf(sock: net.Socket, socketPath: string, deadlineMs = DEFAULT_DEADLINE_MS): Promise<Peer | undefined> {
  if (process.platform !== 'linux' || running >= MAX_CONCURRENT) return undefined;
  running++;
  try {
    return await bounded(sock, socketPath, deadlineMs);
  } finally {
    running--;
  }
}

async function bounded(sock: net.Socket, socketPath: string, deadlineMs: number): Promise<Peer | undefined> {
  const deadline = Date.now() + deadlineMs;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), deadlineMs);
    timer.unref();
  });
  try {
    return await Promise.race([lookup(sock, socketPath, deadline), timeout]);
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

async function lookup(sock: net.Socket, socketPath: string, deadline: number): Promise<Peer | undefined> {
  const fd = socketFd(sock);
  if (fd === undefined) return undefined;
  const ours = socketInode(await fs.readlink(`/proc/self/fd/${fd}`));
  if (ours === undefined) return undefined;
  const peer = await peerInode(ours, socketPath, deadline);
  if (peer === undefined) return undefined;
  const pid = await pidHolding(peer, deadline);
  if (pid === undefined) return undefined;
  const uid = await effectiveUid(pid);
  return uid === undefined ? undefined : { pid, uid };
}

function socketInode(link: string): number | undefined {
  const m = /^socket:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) : undefined;
}

/** The peer inode of the unix socket with local inode `ours`, from `ss -xnH` (sock_diag). */
async function peerInode(ours: number, socketPath: string, deadline: number): Promise<number | undefined> {
  const run = (args: string[]): Promise<string> =>
    new Promise((resolve) => {
      const ms = Math.max(1, deadline - Date.now());
      execFile('ss', args, { timeout: ms, maxBuffer: 16 << 20, encoding: 'utf8' }, (err, stdout) => resolve(err ? '' : stdout));
    });
  // Narrow first (only sockets bound to the admin path: cheap on a busy host), then every unix socket.
  for (const args of [['-xnH', 'src', socketPath], ['-xnH']]) {
    const found = parsePeer(await run(args), ours);
    if (found !== undefined || Date.now() >= deadline) return found;
  }
  return undefined;
}

/**
 * From `ss -xn` rows ("u_str ESTAB 0 0 /run/lb/admin.sock 202609 * 202608"): the last three columns are
 * local inode, peer address, peer inode (a local path may contain spaces, so count from the end).
 */
export function parsePeer(ssOutput: string, ours: number): number | undefined {
  for (const line of ssOutput.split('\n')) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 3) continue;
    const local = Number(cols[cols.length - 3]);
    const peer = Number(cols[cols.length - 1]);
    if (local === ours && Number.isInteger(peer) && peer > 0) return peer;
  }
  return undefined;
}

/** The first process (newest pid first) with an fd on socket inode `inode`. */
async function pidHolding(inode: number, deadline: number): Promise<number | undefined> {
  const target = `socket:[${inode}]`;
  const pids = (await fs.readdir('/proc'))
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((p) => p !== process.pid)
    .sort((a, b) => b - a);
  for (const pid of pids) {
    if (Date.now() >= deadline) return undefined;
    let fds: string[];
    try {
      fds = await fs.readdir(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to look into
    }
    const links = await Promise.all(fds.map((fd) => fs.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
    if (links.includes(target)) return pid;
  }
  return undefined;
}

async function effectiveUid(pid: number): Promise<number | undefined> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    // "Uid:\treal\teffective\tsaved\tfs"
    const m = /^Uid:\s+\d+\s+(\d+)/m.exec(status);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

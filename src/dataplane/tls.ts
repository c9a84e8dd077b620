// TLS termination material for an http listener: the default certificate, SNI certificates chosen by server
// name (exact or "*.example.com"), TLS 1.2 or newer by default. Files are read when the listener is built or
// updated (reload), so a renewed certificate is picked up by `lb reload` without closing connections.

import fs from 'node:fs';
import tls from 'node:tls';
import type https from 'node:https';
import type { TlsConfig } from '../../config/model.js';
import type { TlsMaterial } from './listener.js';

export function buildTls(cfg: TlsConfig): TlsMaterial {
  const read = (f: string): Buffer => fs.readFileSync(f);
  const base = { cert: read(cfg.cert), key: read(cfg.key), minVersion: cfg.minVersion };
  const contexts = new Map<string, tls.SecureContext>();
  for (const s of cfg.sni) {
    contexts.set(s.serverName.toLowerCase(), tls.createSecureContext({ cert: read(s.cert), key: read(s.key), minVersion: cfg.minVersion }));
  }
  const lookup = (servername: string): tls.SecureContext | undefined => {
    const name = servername.toLowerCase();
    const exact = contexts.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    return dot === -1 ? undefined : contexts.get(`*${name.slice(dot)}`);
  };
  return {
    options: {
      ...base,
      SNICallback: (servername, cb) => cb(null, lookup(servername)),
    } satisfies https.ServerOptions,
    attach() {},
  };
}

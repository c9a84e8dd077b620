// TLS termination material for a listener (http or tcp): the default certificate, SNI certificates chosen by
// server name (exact or "*.example.com"), TLS 1.2 or newer by default. Files are read when the listener is
// built and again on every `lb reload` (`reload`), so a renewed certificate is picked up without closing
// connections: the server's default context is swapped with setSecureContext and the SNI table replaced;
// connections already open keep the session they negotiated.

import fs from 'node:fs';
import tls from 'node:tls';
import type { TlsConfig } from '../../config/model.js';
import type { TlsMaterial } from './listener.js';

interface Loaded {
  base: { cert: Buffer; key: Buffer; minVersion: tls.SecureVersion };
  contexts: Map<string, tls.SecureContext>;
}

/**
 * Reads and checks every certificate and key of `cfg` (a key that does not match its certificate throws
 * here, not at the first handshake). Throws an Error naming the file; nothing is half-applied.
 */
function load(cfg: TlsConfig): Loaded {
  const read = (what: string, f: string): Buffer => {
    try {
      return fs.readFileSync(f);
    } catch (err) {
      throw new Error(`tls: cannot read ${what} ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const context = (name: string, opts: Loaded['base']): tls.SecureContext => {
    try {
      return tls.createSecureContext(opts);
    } catch (err) {
      throw new Error(`tls: bad certificate or key for ${name}: ${(err as Error).message}`);
    }
  };
  const base = { cert: read('cert', cfg.cert), key: read('key', cfg.key), minVersion: cfg.minVersion };
  context('the default certificate', base);
  const contexts = new Map<string, tls.SecureContext>();
  for (const s of cfg.sni) {
    contexts.set(s.serverName.toLowerCase(), context(s.serverName, { cert: read('cert', s.cert), key: read('key', s.key), minVersion: cfg.minVersion }));
  }
  return { base, contexts };
}

export function buildTls(cfg: TlsConfig): TlsMaterial {
  let current = load(cfg);
  let server: tls.Server | undefined;
  const lookup = (servername: string): tls.SecureContext | undefined => {
    const name = servername.toLowerCase();
    const exact = current.contexts.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    return dot === -1 ? undefined : current.contexts.get(`*${name.slice(dot)}`);
  };
  return {
    options: {
      ...current.base,
      SNICallback: (servername, cb) => cb(null, lookup(servername)),
    },
    attach(s) {
      server = s;
    },
    reload(next) {
      const loaded = load(next);
      server?.setSecureContext(loaded.base);
      current = loaded;
    },
  };
}

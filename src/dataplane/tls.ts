// TLS termination material for a listener (http or tcp): the default certificate, SNI certificates chosen by
// server name (exact or "*.example.com"), TLS 1.2 or newer by default. Files are read when the listener is
// built and again on every `lb reload` (`prepare`, then its commit), so a renewed certificate is picked up without closing
// connections: the server's default context is swapped with setSecureContext and the SNI table replaced;
// connections already open keep the session they negotiated.

import fs from 'node:fs';
import tls from 'node:tls';
import type { TlsConfig } from '../../config/model.js';
import type { TlsMaterial } from './listener.js';

interface Loaded {
  base: Base;
  contexts: Map<string, tls.SecureContext>;
}

type Base = { cert: Buffer; key: Buffer; minVersion: tls.SecureVersion };

/**
 * Reads one certificate and its key and checks that they pair (a key that does not match its certificate
 * throws here, not at the first handshake). Throws an Error naming the file, or `name` for a bad pair.
 * Also what `lb validate` runs for each certificate of the config (config/load.ts checkConfigFiles).
 */
export function loadCertificate(name: string, cert: string, key: string, minVersion: tls.SecureVersion): { base: Base; context: tls.SecureContext } {
  const read = (what: string, f: string): Buffer => {
    try {
      return fs.readFileSync(f);
    } catch (err) {
      throw new Error(`tls: cannot read ${what} ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const base = { cert: read('cert', cert), key: read('key', key), minVersion };
  try {
    return { base, context: tls.createSecureContext(base) };
  } catch (err) {
    throw new Error(`tls: bad certificate or key for ${name}: ${(err as Error).message}`);
  }
}

/** Every certificate and key of `cfg`; throws as loadCertificate does, nothing half-applied. */
function load(cfg: TlsConfig): Loaded {
  const { base } = loadCertificate('the default certificate', cfg.cert, cfg.key, cfg.minVersion);
  const contexts = new Map<string, tls.SecureContext>();
  for (const s of cfg.sni) contexts.set(s.serverName.toLowerCase(), loadCertificate(s.serverName, s.cert, s.key, cfg.minVersion).context);
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
    prepare(next) {
      const loaded = load(next);
      return () => {
        server?.setSecureContext(loaded.base);
        current = loaded;
      };
    },
  };
}

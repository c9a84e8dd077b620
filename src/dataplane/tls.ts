// TLS termination material for a listener (http or tcp): the default certificate, SNI certificates chosen by
// server name (exact or "*.example.com"), TLS 1.2 or newer by default. Files are read when the listener is
// built and again on every `lb reload` (`prepare`, then its commit), so a renewed certificate is picked up without closing
// connections: the server's default context is swapped with setSecureContext and the SNI table replaced;
// connections already open keep the session they negotiated.
//
// `client_auth` (mTLS from clients): the CA is put into every context (the default one and each SNI one, so
// that a handshake whose SNI picked another context verifies against the same CA), and the server asks for
// a certificate (requestCert); "required" also refuses a client without a valid one (rejectUnauthorized:
// without a certificate OpenSSL fails the handshake with an alert; with one that does not verify, node closes
// the connection as soon as the handshake is done, before a byte of it is read). Mode and CA follow
// reloads; open connections keep what they verified.

import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import type { TlsConfig } from '../../config/model.js';
import type { TlsMaterial } from './listener.js';

interface Loaded {
  base: Base;
  contexts: Map<string, tls.SecureContext>;
}

type Base = { cert: Buffer; key: Buffer; minVersion: tls.SecureVersion; ca?: Buffer };

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Reads a PEM file; with `certificates`, checks that it holds at least one certificate and that each parses
 * (node's createSecureContext accepts a CA file with no certificate in it silently, and then trusts nothing).
 * Throws an Error naming `what` and the file.
 */
export function readPem(what: string, file: string, certificates = false): Buffer {
  let data: Buffer;
  try {
    data = fs.readFileSync(file);
  } catch (err) {
    throw new Error(`tls: cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (certificates) {
    const blocks = data.toString('latin1').match(PEM_CERT) ?? [];
    if (blocks.length === 0) throw new Error(`tls: ${what} ${file} holds no PEM certificate`);
    blocks.forEach((b, i) => {
      try {
        new crypto.X509Certificate(b);
      } catch (err) {
        throw new Error(`tls: ${what} ${file}: certificate ${i + 1} cannot be parsed: ${(err as Error).message}`);
      }
    });
  }
  return data;
}

/**
 * Reads one certificate and its key and checks that they pair (a key that does not match its certificate
 * throws here, not at the first handshake). Throws an Error naming the file, or `name` for a bad pair.
 * Also what `lb validate` runs for each certificate of the config (config/load.ts checkConfigFiles).
 */
export function loadCertificate(name: string, cert: string, key: string, minVersion: tls.SecureVersion, ca?: Buffer): { base: Base; context: tls.SecureContext } {
  const base: Base = { cert: readPem('cert', cert), key: readPem('key', key), minVersion, ...(ca ? { ca } : {}) };
  try {
    return { base, context: tls.createSecureContext(base) };
  } catch (err) {
    throw new Error(`tls: bad certificate or key for ${name}: ${(err as Error).message}`);
  }
}

/** Every certificate and key of `cfg`; throws as loadCertificate does, nothing half-applied. */
function load(cfg: TlsConfig): Loaded {
  const ca = cfg.clientAuth ? readPem('client_auth ca', cfg.clientAuth.ca, true) : undefined;
  const { base } = loadCertificate('the default certificate', cfg.cert, cfg.key, cfg.minVersion, ca);
  const contexts = new Map<string, tls.SecureContext>();
  for (const s of cfg.sni) contexts.set(s.serverName.toLowerCase(), loadCertificate(s.serverName, s.cert, s.key, cfg.minVersion, ca).context);
  return { base, contexts };
}

/** requestCert / rejectUnauthorized for a listener's client_auth (node reads them off the server per connection). */
function verifyMode(cfg: TlsConfig): { requestCert: boolean; rejectUnauthorized: boolean } {
  return { requestCert: !!cfg.clientAuth, rejectUnauthorized: cfg.clientAuth?.mode === 'required' };
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
      ...verifyMode(cfg),
      SNICallback: (servername, cb) => cb(null, lookup(servername)),
    },
    clientAuth: cfg.clientAuth?.mode,
    attach(s) {
      server = s;
    },
    prepare(next) {
      const loaded = load(next);
      return () => {
        server?.setSecureContext(loaded.base);
        if (server) Object.assign(server, verifyMode(next));
        this.clientAuth = next.clientAuth?.mode;
        current = loaded;
      };
    },
  };
}

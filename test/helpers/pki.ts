// A throwaway PKI for TLS tests, made with the openssl command line into a temp dir: CAs, server and client
// certificates (ECDSA P-256, valid two days). No private key is committed.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A self-signed CA: NAME.pem and NAME.key in `dir`. */
export function makeCa(dir: string, name: string): string {
  openssl(['req', '-x509', ...EC, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return path.join(dir, `${name}.pem`);
}

let serial = 1;

/**
 * A leaf certificate NAME.pem / NAME.key signed by CA `ca` (made by makeCa in the same dir), with subject
 * `subject` (e.g. "/CN=app.internal/O=lb test") and the given subjectAltNames ("DNS:x", "IP:127.0.0.1").
 * `client`: extendedKeyUsage clientAuth, else serverAuth. Files are replaced atomically.
 */
export function makeLeaf(dir: string, ca: string, name: string, subject: string, sans: string[], client = false): { cert: string; key: string } {
  const ext = [`basicConstraints=CA:FALSE`, `extendedKeyUsage=${client ? 'clientAuth' : 'serverAuth'}`];
  if (sans.length > 0) ext.push(`subjectAltName=${sans.join(',')}`);
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext.join('\n') + '\n');
  openssl(['req', ...EC, '-keyout', `${name}.key.new`, '-out', `${name}.csr`, '-subj', subject], dir);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-set_serial', String(serial++), '-days', '2', '-out', `${name}.pem.new`, '-extfile', `${name}.ext`], dir);
  fs.renameSync(path.join(dir, `${name}.key.new`), path.join(dir, `${name}.key`));
  fs.renameSync(path.join(dir, `${name}.pem.new`), path.join(dir, `${name}.pem`));
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}

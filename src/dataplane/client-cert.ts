// Client certificates on TLS listeners (`listeners.NAME.tls.client_auth`): what the verification found,
// once per connection, passed to the backend as request fields and written to the access log.
//
// Fields, after NGINX's $ssl_client_verify / $ssl_client_s_dn / $ssl_client_fingerprint (names as the
// de-facto X-Client-* convention):
//   X-Client-Verify             SUCCESS | NONE (no certificate sent) | FAILED:<reason> (optional mode only)
//   X-Client-Cert-Subject       the verified subject, RFC 4514 string order ("CN=alice,O=Example")
//   X-Client-Cert-Fingerprint   SHA-256 of the DER certificate, lower-case hex
//   X-Client-Cert-San           subjectAltName as node prints it ("DNS:a.example, URI:spiffe://x/y")
// The subject, fingerprint and SAN are sent only for SUCCESS. Non-printable characters are escaped (\XX),
// so a value can never break a header line.
//
// Forgery: a client must not be able to send these itself. Every http listener (with client_auth or not:
// a backend reached through a listener without it could otherwise be told SUCCESS) drops them from every
// request, including spellings with "_" for "-" (CGI-style backends fold both into one variable) and when a
// Connection header names them; lb's own values are added after that (http-proxy.ts scanRequest,
// http-listener.ts). Each request of a pipelined or kept-alive connection is scanned on its own.

import crypto from 'node:crypto';
import type net from 'node:net';
import type tls from 'node:tls';

export type VerifyResult = 'success' | 'none' | 'failed';

export interface ClientCert {
  result: VerifyResult;
  /** X-Client-Verify's value. */
  verify: string;
  subject?: string;
  fingerprint?: string;
  san?: string;
}

/** Request fields lb sets from the client certificate: always removed from what clients send. */
export const CLIENT_CERT_FIELDS: ReadonlySet<string> = new Set([
  'x-client-verify',
  'x-client-cert-subject',
  'x-client-cert-fingerprint',
  'x-client-cert-san',
]);

const kCert = Symbol('lb.clientCert');
type Marked = net.Socket & { [kCert]?: ClientCert };

/** Verification outcomes per listener: listener -> result -> count (handshakes refused in required mode included). */
export const clientCertVerifications = new Map<string, Map<VerifyResult, number>>();

function count(listener: string, result: VerifyResult): void {
  let m = clientCertVerifications.get(listener);
  if (!m) clientCertVerifications.set(listener, (m = new Map()));
  m.set(result, (m.get(result) ?? 0) + 1);
}

/** Printable ASCII only; anything else as \XX (RFC 4514 section 2.4 hex escapes), so that no value can break a field. */
function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, (c) =>
    Array.from(Buffer.from(c, 'utf8'))
      .map((b) => `\\${b.toString(16).toUpperCase().padStart(2, '0')}`)
      .join(''),
  );
}

/** node's multi-line subject ("C=US\nO=Example\nCN=alice") as an RFC 4514 string ("CN=alice,O=Example,C=US"). */
function rfc4514(subject: string): string {
  return subject.split('\n').filter(Boolean).reverse().join(',');
}

/**
 * The verification result of a TLS client connection, computed once and kept on the socket; counted once
 * in lb_client_cert_verifications_total.
 */
export function clientCertOf(socket: net.Socket, listener: string): ClientCert {
  const s = socket as Marked;
  const known = s[kCert];
  if (known) return known;
  const t = socket as tls.TLSSocket;
  const peer = typeof t.getPeerCertificate === 'function' ? t.getPeerCertificate() : undefined;
  let c: ClientCert;
  if (!peer || !peer.raw) c = { result: 'none', verify: 'NONE' };
  else if (!t.authorized) c = { result: 'failed', verify: `FAILED:${printable(String(t.authorizationError ?? 'unknown'))}` };
  else {
    c = {
      result: 'success',
      verify: 'SUCCESS',
      subject: printable(rfc4514(new crypto.X509Certificate(peer.raw).subject)),
      fingerprint: crypto.createHash('sha256').update(peer.raw).digest('hex'),
      ...(peer.subjectaltname ? { san: printable(peer.subjectaltname) } : {}),
    };
  }
  s[kCert] = c;
  count(listener, c.result);
  return c;
}

/** What clientCertOf found for `socket`, if it was asked (the access log; no work otherwise). */
export function knownClientCert(socket: net.Socket): ClientCert | undefined {
  return (socket as Marked)[kCert];
}

/** Appends lb's X-Client-* fields to a forwarded header list (the client's own were removed by the scan). */
export function addClientCertFields(headers: string[], c: ClientCert): void {
  headers.push('x-client-verify', c.verify);
  if (c.subject !== undefined) headers.push('x-client-cert-subject', c.subject);
  if (c.fingerprint !== undefined) headers.push('x-client-cert-fingerprint', c.fingerprint);
  if (c.san !== undefined) headers.push('x-client-cert-san', c.san);
}

/**
 * A handshake a `required` listener refused (tlsClientError): counted as `none` (no certificate: OpenSSL
 * refuses it with a certificate_required / handshake_failure alert) or `failed` (a certificate that does not
 * verify: node closes the connection once the handshake is done, leaving the reason in authorizationError,
 * and the error it reports is a plain reset). Other handshake errors are not about the certificate and are
 * not counted.
 */
export function clientCertRefused(listener: string, err: Error & { code?: string }, socket: net.Socket): void {
  const code = err.code ?? '';
  if ((socket as tls.TLSSocket).authorizationError) count(listener, 'failed');
  else if (code.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || code.includes('CERTIFICATE_REQUIRED')) count(listener, 'none');
}

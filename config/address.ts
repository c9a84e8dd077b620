// `host:port` addresses of the config file: "10.0.0.1:80", "localhost:3000", "[::1]:8080", "0.0.0.0:80".

import { isIPv4, isIPv6 } from 'node:net';
import type { Address } from './model.js';

/**
 * JSON Schema pattern: a superset of what parseAddress accepts (editors flag the rest), so that whatever
 * fails the pattern also fails parseAddress and gets its message.
 */
export const ADDRESS_PATTERN = '^(?:\\[[^\\]]+\\]|[^\\s:\\[\\]/]+):[0-9]+$';

export interface AddressOptions {
  /**
   * Accept port 0 (an ephemeral port chosen at bind time). Listeners allow it: under node:cluster the
   * primary binds once and every worker shares that port, which tests and local runs rely on. Backends
   * never do.
   */
  allowPortZero?: boolean;
}

export type AddressResult = { ok: true; address: Address } | { ok: false; error: string };

const HOST_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$/;

export function tryParseAddress(text: string, opts: AddressOptions = {}): AddressResult {
  const bad = (why: string): AddressResult => ({ ok: false, error: `invalid address ${JSON.stringify(text)}: ${why}` });
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(text);
  if (scheme) {
    const rest = text.slice(scheme[0].length).replace(/\/.*$/, '');
    const example = rest.includes(':') ? rest : `${rest || 'example.com'}:80`;
    return bad(`write host:port without a scheme or path, e.g. ${JSON.stringify(example)}`);
  }
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return bad('missing "]" after the IPv6 address, e.g. "[::1]:8080"');
    host = text.slice(1, close);
    const after = text.slice(close + 1);
    if (after === '') return bad(`missing port; use [host]:port, e.g. "[${host}]:8080"`);
    if (!after.startsWith(':')) return bad('expected ":PORT" after "]", e.g. "[::1]:8080"');
    portText = after.slice(1);
    if (!isIPv6(host)) return bad(`${JSON.stringify(host)} is not a valid IPv6 address`);
  } else {
    const colons = text.split(':').length - 1;
    if (colons > 1) {
      const last = text.lastIndexOf(':');
      const h = text.slice(0, last);
      const p = text.slice(last + 1);
      const example = isIPv6(h) && /^[0-9]+$/.test(p) ? `[${h}]:${p}` : '[::1]:8080';
      return bad(`put IPv6 addresses in brackets, e.g. ${JSON.stringify(example)}`);
    }
    if (colons === 0) return bad(`missing port; use host:port, e.g. ${JSON.stringify(`${text || 'localhost'}:8080`)}`);
    const colon = text.indexOf(':');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host === '') {
      const p = /^[0-9]+$/.test(portText) ? portText : '8080';
      return bad(`missing host; use "0.0.0.0:${p}" for every IPv4 interface or "[::]:${p}" for every interface`);
    }
    if (/^[0-9.]+$/.test(host)) {
      if (!isIPv4(host)) return bad(`${JSON.stringify(host)} is not a valid IPv4 address`);
    } else if (host.length > 253 || !host.replace(/\.$/, '').split('.').every((l) => HOST_LABEL.test(l))) {
      return bad(`${JSON.stringify(host)} is not a valid host name or IP address`);
    }
  }
  const min = opts.allowPortZero ? 0 : 1;
  if (portText === '') return bad('missing port after ":"');
  if (!/^[0-9]+$/.test(portText)) return bad(`port ${JSON.stringify(portText)} is not a number`);
  const port = Number(portText);
  if (port < min || port > 65535) return bad(`port must be ${min}..65535`);
  return { ok: true, address: { host, port, text } };
}

/** The parsed address, or throws an Error whose message is the one tryParseAddress gives. */
export function parseAddress(text: string, opts: AddressOptions = {}): Address {
  const r = tryParseAddress(text, opts);
  if (!r.ok) throw new Error(r.error);
  return r.address;
}

// The request smuggling and malformed-HTTP corpus (test/hardening-smuggling.test.ts sends it through lb run;
// test/http-parser.test.ts feeds it to both HTTP parsers and compares what they report).

export const MAX_HEADER = 8192;

export interface Row {
  id: string;
  /** Why this request is dangerous or malformed. */
  why: string;
  /** Raw request bytes; `ID` is replaced by the row id (paths /bad-ID and /smuggled-ID mark its bytes). */
  bytes: string;
  expect: number[];
}

export const inner = 'GET /smuggled-ID HTTP/1.1\r\nHost: h\r\n\r\n';
const chunkedInner = `0\r\n\r\n${inner}`;
const head = (extra: string, method = 'POST', target = '/bad-ID'): string => `${method} ${target} HTTP/1.1\r\nHost: h\r\n${extra}\r\n`;

export const ROWS: Row[] = [
  // Content-Length / Transfer-Encoding conflicts (CL.TE, TE.CL)
  { id: 'cl-te', why: 'Content-Length and Transfer-Encoding: chunked (CL.TE)', bytes: head(`Content-Length: ${chunkedInner.length}\r\nTransfer-Encoding: chunked\r\n`) + chunkedInner, expect: [400] },
  { id: 'te-cl', why: 'Transfer-Encoding: chunked then Content-Length (TE.CL)', bytes: head('Transfer-Encoding: chunked\r\nContent-Length: 4\r\n') + `5c\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'cl-cl-diff', why: 'two different Content-Lengths', bytes: head(`Content-Length: 5\r\nContent-Length: ${5 + inner.length}\r\n`) + 'hello' + inner, expect: [400] },
  { id: 'cl-cl-same', why: 'two identical Content-Length headers', bytes: head('Content-Length: 5\r\nContent-Length: 5\r\n') + 'hello', expect: [400] },
  { id: 'cl-list', why: 'Content-Length list "5, 5"', bytes: head('Content-Length: 5, 5\r\n') + 'hello', expect: [400] },
  { id: 'cl-plus', why: 'Content-Length "+5"', bytes: head('Content-Length: +5\r\n') + 'hello', expect: [400] },
  { id: 'cl-neg', why: 'Content-Length "-1"', bytes: head('Content-Length: -1\r\n') + inner, expect: [400] },
  { id: 'cl-hex', why: 'Content-Length "0x5"', bytes: head('Content-Length: 0x5\r\n') + 'hello', expect: [400] },
  { id: 'cl-junk', why: 'Content-Length "5x"', bytes: head('Content-Length: 5x\r\n') + 'hello', expect: [400] },
  { id: 'cl-huge', why: 'Content-Length beyond 2^64', bytes: head('Content-Length: 99999999999999999999999\r\n') + 'hello', expect: [400] },
  // Transfer-Encoding variants
  { id: 'te-chunked-x', why: 'Transfer-Encoding "chunked, x" (chunked not last)', bytes: head('Transfer-Encoding: chunked, x\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-x-chunked', why: 'Transfer-Encoding "x, chunked" (unknown coding before chunked)', bytes: head('Transfer-Encoding: x, chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-gzip-chunked', why: 'Transfer-Encoding "gzip, chunked" (a coding lb would drop while forwarding)', bytes: head('Transfer-Encoding: gzip, chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-space-colon', why: '"Transfer-Encoding : chunked" (space before the colon)', bytes: head('Transfer-Encoding : chunked\r\n') + chunkedInner, expect: [400] },
  { id: 'te-xchunked', why: 'Transfer-Encoding "xchunked"', bytes: head('Transfer-Encoding: xchunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-chunkedx', why: 'Transfer-Encoding "chunkedx"', bytes: head('Transfer-Encoding: chunkedx\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-identity', why: 'Transfer-Encoding "identity"', bytes: head('Transfer-Encoding: identity\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-twice', why: 'two Transfer-Encoding: chunked headers (chunked applied twice)', bytes: head('Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-chunked-identity', why: 'Transfer-Encoding: chunked, then Transfer-Encoding: identity', bytes: head('Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-obs-fold', why: 'Transfer-Encoding continued by obs-fold', bytes: head('Transfer-Encoding: identity\r\n chunked\r\n') + chunkedInner, expect: [400] },
  { id: 'te-vtab', why: 'Transfer-Encoding value with a vertical tab', bytes: head('Transfer-Encoding:\x0bchunked\r\n') + chunkedInner, expect: [400, 501] },
  { id: 'te-http10', why: 'Transfer-Encoding on an HTTP/1.0 request', bytes: `POST /bad-ID HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunkedInner}`, expect: [400, 501] },
  // Chunked framing
  { id: 'chunk-size-junk', why: 'chunk size "zz"', bytes: head('Transfer-Encoding: chunked\r\n') + `zz\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-size-overflow', why: 'chunk size overflowing 64 bits', bytes: head('Transfer-Encoding: chunked\r\n') + `fffffffffffffffff1\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-size-neg', why: 'chunk size "-1"', bytes: head('Transfer-Encoding: chunked\r\n') + `-1\r\n${inner}\r\n0\r\n\r\n`, expect: [400] },
  { id: 'chunk-too-long', why: 'chunk data longer than its size', bytes: head('Transfer-Encoding: chunked\r\n') + `3\r\nhello\r\n0\r\n\r\n${inner}`, expect: [400] },
  { id: 'chunk-bare-lf', why: 'chunk lines ended by bare LF', bytes: head('Transfer-Encoding: chunked\r\n') + `5\nhello\n0\n\n${inner}`, expect: [400] },
  { id: 'chunk-space-size', why: 'chunk size followed by spaces', bytes: head('Transfer-Encoding: chunked\r\n') + `5   \r\nhello\r\n0\r\n\r\n${inner}`, expect: [400] },
  // Line endings, folding, control characters
  { id: 'obs-fold', why: 'obs-fold header continuation', bytes: head('X-Folded: a\r\n b\r\n', 'GET'), expect: [400] },
  { id: 'leading-ws-header', why: 'whitespace before the first header', bytes: 'GET /bad-ID HTTP/1.1\r\n Host: h\r\n\r\n', expect: [400] },
  { id: 'bare-lf', why: 'request ended by bare LFs', bytes: 'GET /bad-ID HTTP/1.1\nHost: h\n\n', expect: [400] },
  { id: 'bare-lf-header', why: 'one header ended by a bare LF', bytes: 'GET /bad-ID HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n', expect: [400] },
  { id: 'bare-cr', why: 'bare CR inside a header value', bytes: head('X-A: a\rb\r\n', 'GET'), expect: [400] },
  { id: 'nul-value', why: 'NUL in a header value', bytes: head('X-A: a\0b\r\n', 'GET'), expect: [400] },
  { id: 'nul-name', why: 'NUL in a header name', bytes: head('X-\0A: b\r\n', 'GET'), expect: [400] },
  { id: 'space-in-name', why: 'space inside a header name', bytes: head('X A: b\r\n', 'GET'), expect: [400] },
  { id: 'no-colon', why: 'header line without a colon', bytes: head('NoColonHere\r\n', 'GET'), expect: [400] },
  { id: 'ctl-in-target', why: 'control character in the request target', bytes: 'GET /bad-ID\x01 HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400] },
  { id: 'bad-method', why: 'method with a non-token character', bytes: 'G@T /bad-ID HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400] },
  { id: 'bad-version', why: 'HTTP/9.9', bytes: 'GET /bad-ID HTTP/9.9\r\nHost: h\r\n\r\n', expect: [400, 505] },
  { id: 'no-version', why: 'HTTP/0.9-style request line', bytes: 'GET /bad-ID\r\n\r\n', expect: [400] },
  // Host
  { id: 'no-host', why: 'HTTP/1.1 request without Host', bytes: 'GET /bad-ID HTTP/1.1\r\nX-A: b\r\n\r\n', expect: [400] },
  { id: 'two-hosts', why: 'two different Host headers (routing confusion)', bytes: 'GET /bad-ID HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n', expect: [400] },
  // Sizes
  { id: 'header-too-big', why: `one header over max_header_size (${MAX_HEADER})`, bytes: head(`X-Big: ${'a'.repeat(MAX_HEADER + 100)}\r\n`, 'GET'), expect: [431] },
  { id: 'head-too-big', why: 'many headers adding up to more than max_header_size', bytes: head(Array.from({ length: 200 }, (_, i) => `X-H${i}: ${'v'.repeat(60)}\r\n`).join(''), 'GET'), expect: [431] },
  { id: 'too-many-headers', why: '1001 tiny header fields (under the byte limit, over the 1000-field limit)', bytes: head('x:1\r\n'.repeat(1001), 'GET'), expect: [431] },
  { id: 'target-too-long', why: 'request line over the head limit', bytes: `GET /bad-ID?${'q'.repeat(MAX_HEADER + 100)} HTTP/1.1\r\nHost: h\r\n\r\n`, expect: [414, 431, 400] },
  // Not a forward proxy
  { id: 'authority-form-get', why: 'authority-form target on GET', bytes: 'GET evil.example:443 HTTP/1.1\r\nHost: h\r\nX-Id: bad-ID\r\n\r\n', expect: [400] },
  { id: 'connect', why: 'CONNECT (tunnel request)', bytes: 'CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nX-Id: bad-ID\r\n\r\n', expect: [501] },
  { id: 'connect-origin', why: 'CONNECT with an origin-form target', bytes: 'CONNECT /bad-ID HTTP/1.1\r\nHost: h\r\n\r\n', expect: [400, 501] },
  { id: 'upgrade-cl-te', why: 'websocket upgrade carrying CL and TE', bytes: head(`Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: ${chunkedInner.length}\r\nTransfer-Encoding: chunked\r\n`, 'GET') + chunkedInner, expect: [400] },
];

/** Valid requests that look unusual: they must be answered 200 and reach the upstream as sent. */
export const VALID = [
  { id: 'ok-chunked-upper', bytes: head('Transfer-Encoding: CHUNKED\r\n', 'POST', '/okraw-ID') + '5\r\nhello\r\n0\r\n\r\n', bodyBytes: 5 },
  { id: 'ok-chunk-ext', bytes: head('Transfer-Encoding: chunked\r\n', 'POST', '/okraw-ID') + '5;name=v\r\nhello\r\n0\r\n\r\n', bodyBytes: 5 },
  { id: 'ok-cl', bytes: head('Content-Length: 5\r\n', 'POST', '/okraw-ID') + 'hello', bodyBytes: 5 },
  { id: 'ok-expect-continue', bytes: head('Expect: 100-continue\r\nContent-Length: 5\r\n', 'POST', '/okraw-ID') + 'hello', bodyBytes: 5 },
  { id: 'ok-http10', bytes: 'POST /okraw-ID HTTP/1.0\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello', bodyBytes: 5 },
  { id: 'ok-1000-fields', bytes: head('x:1\r\n'.repeat(998), 'GET', '/okraw-ID'), bodyBytes: 0 },
];

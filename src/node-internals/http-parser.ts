// A strict HTTP/1.1 message parser in JavaScript: the fallback for Node's llhttp binding (llhttp.ts), used
// when `_http_common` has no HTTPParser of the expected shape or LB_NODE_FALLBACK names http_parser.
//
// Contract: the interface and callback semantics of node's binding (src/node_http_parser.cc) over llhttp
// initialized with kLenientNone, as lb's server (http-server.ts) and upstream client (upstream.ts) use them:
// - callbacks in the slots kOnMessageBegin() / kOnHeaders(headers[], url) / kOnHeadersComplete(major, minor,
//   headers[], method, url, statusCode, statusText, upgrade, shouldKeepAlive) / kOnBody(chunk) /
//   kOnMessageComplete(), called with the parser as `this`; headers are flat [name, value, ...] latin1
//   strings, values without leading or trailing whitespace. More than 32 fields in one head are handed over
//   32 at a time through kOnHeaders, the rest (and the url) then too, and kOnHeadersComplete gets undefined
//   for both (node's "slow path"); trailers always come through kOnHeaders, before kOnMessageComplete.
// - kOnHeadersComplete returns 0, 1 (no body: the response to HEAD, and the like) or 2 (no body, and what
//   follows the head is another protocol), as llhttp's on_headers_complete.
// - execute(buf) returns the bytes parsed, or an Error with `code` (HPE_*), `reason` and `bytesParsed`;
//   after an error every execute returns it again. After an upgrade (CONNECT, or a request with
//   `Connection: upgrade` and Upgrade, or a 101 response) the message completes and execute returns the
//   offset where the other protocol starts (node resumes llhttp after HPE_PAUSED_UPGRADE the same way).
// - finish() at the end of the input: completes a body delimited by the connection's end, returns an
//   HPE_INVALID_EOF_STATE Error inside any other message, else undefined.
// - kOnBody chunks are views into the buffer given to execute (node copies): callers must not reuse
//   that buffer (socket 'data' buffers are not reused).
// - header size: url, status text, field names and values (after leading whitespace) count, as node's
//   TrackHeader; reaching maxHeaderSize is HPE_HEADER_OVERFLOW. Chunk extensions: 16 KiB per chunk, as
//   node's kMaxChunkExtensionsSize (HPE_CHUNK_EXTENSIONS_OVERFLOW).
//
// Stricter than the binding, on purpose (lb's listener refuses these afterwards anyway): only HTTP/1.0
// and HTTP/1.1 (llhttp also parses 0.9 and 2.0), and whitespace-only runs before a header value count
// towards maxHeaderSize after 4x its size (bounds what one connection can make this parser hold).
// consume()/unconsume() do nothing: this parser is fed from 'data' events (consumeSocket returns undefined).

export const K_ON_MESSAGE_BEGIN = 0;
export const K_ON_HEADERS = 1;
export const K_ON_HEADERS_COMPLETE = 2;
export const K_ON_BODY = 3;
export const K_ON_MESSAGE_COMPLETE = 4;
export const K_ON_EXECUTE = 5;

/** llhttp's method numbers (llhttp.h HTTP_METHOD_MAP): the names node's `methods` lists, QUERY at 46. */
const METHOD_NUMBERS: ReadonlyMap<string, number> = new Map([
  ...['DELETE', 'GET', 'HEAD', 'POST', 'PUT', 'CONNECT', 'OPTIONS', 'TRACE', 'COPY', 'LOCK', 'MKCOL', 'MOVE', 'PROPFIND', 'PROPPATCH', 'SEARCH', 'UNLOCK', 'BIND', 'REBIND', 'UNBIND', 'ACL', 'REPORT', 'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'PATCH', 'PURGE', 'MKCALENDAR', 'LINK', 'UNLINK', 'SOURCE'].map((m, i): [string, number] => [m, i]),
  ['QUERY', 46],
]);
/** Method names by number, for when there is no binding to take node's `methods` from. */
export const FALLBACK_METHODS: readonly string[] = (() => {
  const a: string[] = [];
  for (const [name, n] of METHOD_NUMBERS) a[n] = name;
  return a;
})();
const CONNECT = 5;

/** Node's kMaxHeaderFieldsCount: fields handed over at once. */
const MAX_FIELDS = 32;
/** Node's kMaxChunkExtensionsSize. */
const MAX_CHUNK_EXTENSIONS = 16 * 1024;
const DEFAULT_MAX_HEADER = 16 * 1024;

function table(test: (c: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = test(c) ? 1 : 0;
  return t;
}
const isAlnum = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
/** RFC 9110 §5.6.2 tchar. */
const TOKEN = table((c) => isAlnum(c) || "!#$%&'*+-.^_`|~".includes(String.fromCharCode(c)));
/** RFC 9110 §5.5 field-value octets: HTAB, SP, VCHAR, obs-text (no CTL, no DEL). */
const FIELD_VALUE = table((c) => c === 0x09 || (c >= 0x20 && c !== 0x7f));
/** Request-target octets llhttp accepts: visible ASCII. */
const URL_CHAR = table((c) => c > 0x20 && c < 0x7f);
const METHOD_CHAR = table((c) => (c >= 0x41 && c <= 0x5a) || c === 0x2d);
const HEX_VALUE = new Uint8Array(256).map((_, c) => parseInt(String.fromCharCode(c), 16) || 0);
const HEX = table((c) => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
/** Chunk extension quoted-string octets: qdtext (RFC 9110 §5.6.4), HTAB, SP, obs-text. */
const QDTEXT = table((c) => c === 0x09 || c === 0x20 || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e) || c >= 0x80);

/** "HTTP/" */
const HTTP_SLASH = [0x48, 0x54, 0x54, 0x50, 0x2f];
const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;

const enum S {
  Start,
  Method,
  AfterMethod,
  Url,
  ReqVersion,
  ResVersion,
  StatusCode,
  StatusText,
  StartLineLf,
  FieldStart,
  Field,
  ValueOws,
  Value,
  ValueLf,
  HeadLf,
  BodyLength,
  BodyEof,
  ChunkSize,
  ChunkExtNameStart,
  ChunkExtName,
  ChunkExtValueStart,
  ChunkExtValue,
  ChunkExtQuoted,
  ChunkExtQuotedEscape,
  ChunkExtAfterQuoted,
  ChunkSizeLf,
  ChunkData,
  ChunkDataCr,
  ChunkDataLf,
  Closed,
  Dead,
}

// Flags, as llhttp's.
const F_CONNECTION_KEEP_ALIVE = 1;
const F_CONNECTION_CLOSE = 2;
const F_CONNECTION_UPGRADE = 4;
const F_CHUNKED = 8;
const F_UPGRADE = 16;
const F_CONTENT_LENGTH = 32;
const F_SKIPBODY = 64;
const F_TRANSFER_ENCODING = 256;

export interface ParseError extends Error {
  code: string;
  reason: string;
  bytesParsed: number;
}

function parseError(code: string, reason: string, bytesParsed: number): ParseError {
  return Object.assign(new Error(`Parse Error: ${reason}`), { code, reason, bytesParsed });
}

type Callback = (...args: unknown[]) => unknown;

export class FallbackHTTPParser {
  static readonly REQUEST = 1;
  static readonly RESPONSE = 2;
  static readonly kOnMessageBegin = K_ON_MESSAGE_BEGIN;
  static readonly kOnHeaders = K_ON_HEADERS;
  static readonly kOnHeadersComplete = K_ON_HEADERS_COMPLETE;
  static readonly kOnBody = K_ON_BODY;
  static readonly kOnMessageComplete = K_ON_MESSAGE_COMPLETE;
  static readonly kOnExecute = K_ON_EXECUTE;
  static readonly kLenientNone = 0;

  [key: number]: unknown;

  private request = true;
  private maxHeaderSize = DEFAULT_MAX_HEADER;
  private state = S.Start;
  private error: ParseError | undefined;
  private closed = false;
  /** The buffer being parsed (getCurrentBuffer). */
  private current: Buffer = Buffer.alloc(0);
  /** The span being read (method, url, status, field, value, chunk size...) carried over from earlier reads. */
  private carry = '';
  /** Raw bytes of the head so far (bounds leading-whitespace runs, which do not count as header bytes). */
  private rawHead = 0;
  /** Header bytes as node counts them (TrackHeader). */
  private headerBytes = 0;
  private inTrailers = false;
  private flushed = false;
  private fields: string[] = [];
  private fieldName = '';
  private url = '';
  private method = 0;
  private major = 0;
  private minor = 0;
  private status = 0;
  private statusText = '';
  private flags = 0;
  private contentLength = 0;
  private upgrade = false;
  private keepAlive = false;
  private remaining = 0;
  private chunkExt = 0;
  private hexDigits = 0;
  /** After an upgrade pause: finish() is not at a message boundary (as llhttp). */
  private afterUpgrade = false;

  initialize(type: number, _resource: object, maxHeaderSize: number, lenient: number): void {
    if (lenient !== 0) throw new Error('the fallback HTTP parser is strict only (kLenientNone)');
    this.request = type === FallbackHTTPParser.REQUEST;
    this.maxHeaderSize = maxHeaderSize > 0 ? maxHeaderSize : DEFAULT_MAX_HEADER;
    this.state = S.Start;
    this.error = undefined;
    this.closed = false;
    this.reset();
  }

  consume(_handle: unknown): void {}
  unconsume(): void {}

  getCurrentBuffer(): Buffer {
    return this.current;
  }

  close(): void {
    this.closed = true;
    this.current = Buffer.alloc(0);
    this.fields = [];
  }

  /** Node's binding has these for node:http's own use; lb does not pause the parser. */
  remove(): void {}

  finish(): ParseError | undefined {
    if (this.error) return undefined;
    switch (this.state) {
      case S.Start:
      case S.Closed:
        if (!this.afterUpgrade) return undefined;
        break;
      case S.BodyEof:
        this.state = S.Start;
        this.messageComplete();
        return undefined;
      default:
        break;
    }
    return parseError('HPE_INVALID_EOF_STATE', 'Invalid EOF state', 0);
  }

  execute(data: Buffer): number | ParseError {
    if (this.closed) return parseError('HPE_CLOSED_CONNECTION', 'Parser closed', 0);
    if (this.error) return this.error;
    this.current = data;
    this.afterUpgrade = false;
    let r: number | ParseError;
    try {
      r = this.run(data);
    } catch (err) {
      // A callback threw: the parser is unusable, as node's after got_exception_; the error is the caller's.
      this.fail('HPE_USER', 'Callback threw', 0);
      throw err;
    }
    return r;
  }

  private reset(): void {
    this.carry = '';
    this.rawHead = 0;
    this.headerBytes = 0;
    this.inTrailers = false;
    this.flushed = false;
    this.fields = [];
    this.fieldName = '';
    this.url = '';
    this.method = 0;
    this.major = 0;
    this.minor = 0;
    this.status = 0;
    this.statusText = '';
    this.flags = 0;
    this.contentLength = 0;
    this.upgrade = false;
    this.keepAlive = false;
    this.remaining = 0;
    this.chunkExt = 0;
    this.hexDigits = 0;
  }

  private fail(code: string, reason: string, at: number): ParseError {
    this.state = S.Dead;
    this.error = parseError(code, reason, at);
    return this.error;
  }

  private cb(slot: number, ...args: unknown[]): unknown {
    const f = this[slot];
    return typeof f === 'function' ? (f as Callback).apply(this, args) : undefined;
  }

  /** Header bytes as node counts them; false when the limit is reached. */
  private track(n: number): boolean {
    this.headerBytes += n;
    return this.headerBytes < this.maxHeaderSize;
  }

  private pushField(name: string, value: string): void {
    if (this.fields.length === MAX_FIELDS * 2) {
      this.flush();
    }
    this.fields.push(name, value);
  }

  /** Hands the fields (and url) collected so far to kOnHeaders (node's Flush). */
  private flush(): void {
    const fields = this.fields;
    this.fields = [];
    this.flushed = true;
    this.cb(K_ON_HEADERS, fields, this.url);
    this.url = '';
  }

  private messageComplete(): void {
    if (this.fields.length > 0) this.flush();
    this.cb(K_ON_MESSAGE_COMPLETE);
  }

  private run(d: Buffer): number | ParseError {
    const n = d.length;
    let i = 0;
    let mark = 0;
    const span = (end: number): string => {
      const s = this.carry + d.toString('latin1', mark, end);
      this.carry = '';
      return s;
    };
    while (i < n) {
      const c = d[i]!;
      switch (this.state) {
        case S.Start:
          if (c === CR || c === LF) {
            i++;
            break;
          }
          this.reset();
          this.cb(K_ON_MESSAGE_BEGIN);
          this.state = this.request ? S.Method : S.ResVersion;
          mark = i;
          break;
        case S.Closed:
          if (c === CR || c === LF) {
            i++;
            break;
          }
          return this.fail('HPE_CLOSED_CONNECTION', 'Data after `Connection: close`', i);

        // ---- request line: method SP+ request-target SP HTTP-version CRLF
        case S.Method:
          if (METHOD_CHAR[c]) {
            if (i - mark + this.carry.length >= 16) return this.fail('HPE_INVALID_METHOD', 'Invalid method encountered', i);
            i++;
            break;
          }
          if (c !== SP) return this.fail('HPE_INVALID_METHOD', 'Invalid method encountered', i);
          {
            const m = METHOD_NUMBERS.get(span(i));
            if (m === undefined) return this.fail('HPE_INVALID_METHOD', 'Invalid method encountered', i);
            this.method = m;
          }
          this.state = S.AfterMethod;
          i++;
          break;
        case S.AfterMethod:
          if (c === SP) {
            i++;
            break;
          }
          this.state = S.Url;
          mark = i;
          break;
        case S.Url: {
          while (i < n && URL_CHAR[d[i]!]) i++;
          if (i === n) break;
          const e = d[i]!;
          const part = i - mark;
          if (!this.track(part)) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', i);
          if (e === CR || e === LF) return this.fail('HPE_INVALID_VERSION', 'HTTP/0.9 is not supported', i);
          if (e !== SP) return this.fail('HPE_INVALID_URL', 'Invalid characters in url', i);
          const url = span(i);
          if (!validTarget(url, this.method)) return this.fail('HPE_INVALID_URL', 'Invalid request target', i);
          this.url = url;
          this.state = S.ReqVersion;
          i++;
          mark = i;
          break;
        }
        case S.ReqVersion:
        case S.ResVersion: {
          // "HTTP/" DIGIT "." DIGIT, checked octet by octet (as llhttp, an error shows at the first bad one).
          const have = this.carry.length + (i - mark);
          if (have < 8) {
            const ok = have < 5 ? c === HTTP_SLASH[have] : have === 6 ? c === 0x2e : c >= 0x30 && c <= 0x39;
            if (!ok) return this.fail(have < 5 ? 'HPE_INVALID_CONSTANT' : 'HPE_INVALID_VERSION', have < 5 ? 'Expected HTTP/' : 'Invalid HTTP version', i);
            i++;
            break;
          }
          const v = span(i);
          if (v !== 'HTTP/1.1' && v !== 'HTTP/1.0') return this.fail('HPE_INVALID_VERSION', 'Invalid HTTP version', i);
          this.major = 1;
          this.minor = v === 'HTTP/1.1' ? 1 : 0;
          if (this.state === S.ReqVersion) {
            if (c !== CR) return this.fail('HPE_INVALID_VERSION', 'Expected CRLF after version', i);
            this.state = S.StartLineLf;
          } else {
            if (c !== SP) return this.fail('HPE_INVALID_VERSION', 'Expected space after version', i);
            this.state = S.StatusCode;
            mark = i + 1;
          }
          i++;
          break;
        }

        // ---- status line: HTTP-version SP 3DIGIT [SP reason] CRLF
        case S.StatusCode: {
          const have = this.carry.length + (i - mark);
          if (have < 3) {
            if (c < 0x30 || c > 0x39) return this.fail('HPE_INVALID_STATUS', 'Invalid status code', i);
            i++;
            break;
          }
          this.status = Number(span(i));
          if (c === SP) {
            this.state = S.StatusText;
            i++;
            mark = i;
          } else if (c === CR) {
            this.state = S.StartLineLf;
            i++;
          } else {
            return this.fail('HPE_INVALID_STATUS', 'Invalid response status', i);
          }
          break;
        }
        case S.StatusText: {
          while (i < n && FIELD_VALUE[d[i]!]) i++;
          if (i === n) break;
          if (!this.track(i - mark)) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', i);
          if (d[i] === LF) return this.fail('HPE_CR_EXPECTED', 'Missing expected CR after response line', i);
          if (d[i] !== CR) return this.fail('HPE_INVALID_STATUS', 'Invalid response status', i);
          this.statusText = span(i);
          this.state = S.StartLineLf;
          i++;
          break;
        }
        case S.StartLineLf:
          if (c !== LF) return this.fail('HPE_LF_EXPECTED', 'Expected LF after start line', i);
          this.state = S.FieldStart;
          i++;
          break;

        // ---- header fields (and trailers)
        case S.FieldStart:
          if (c === CR) {
            this.state = S.HeadLf;
            i++;
            break;
          }
          if (c === SP || c === HTAB) {
            // Whitespace before the first field (RFC 9112 §2.2), or obs-fold (§5.2): both refused.
            if (this.fields.length === 0 && !this.flushed && !this.inTrailers) return this.fail('HPE_UNEXPECTED_SPACE', 'Unexpected space after start line', i);
            return this.fail('HPE_INVALID_HEADER_TOKEN', 'Unexpected whitespace after header value', i);
          }
          if (!TOKEN[c]) return this.fail('HPE_INVALID_HEADER_TOKEN', 'Invalid header token', i);
          this.state = S.Field;
          mark = i;
          break;
        case S.Field: {
          while (i < n && TOKEN[d[i]!]) i++;
          if (i === n) break;
          if (!this.track(i - mark)) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', i);
          if (d[i] !== 0x3a) return this.fail('HPE_INVALID_HEADER_TOKEN', 'Invalid header token', i);
          this.fieldName = span(i);
          this.state = S.ValueOws;
          i++;
          break;
        }
        case S.ValueOws:
          if (c === SP || c === HTAB) {
            if (++this.rawHead > 4 * this.maxHeaderSize) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', i);
            i++;
            break;
          }
          this.state = S.Value;
          mark = i;
          break;
        case S.Value: {
          while (i < n && FIELD_VALUE[d[i]!]) i++;
          if (i === n) break;
          if (!this.track(i - mark)) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', i);
          if (d[i] === LF) return this.fail('HPE_CR_EXPECTED', 'Missing expected CR after header value', i);
          if (d[i] !== CR) return this.fail('HPE_INVALID_HEADER_TOKEN', 'Invalid header value char', i);
          const raw = span(i);
          const value = trimEnd(raw);
          const err = this.inTrailers ? undefined : this.header(this.fieldName, value, raw);
          if (err) return this.fail(err[0], err[1], i);
          this.pushField(this.fieldName, value);
          this.state = S.ValueLf;
          i++;
          break;
        }
        case S.ValueLf:
          if (c !== LF) return this.fail('HPE_LF_EXPECTED', 'Missing expected LF after header value', i);
          this.state = S.FieldStart;
          i++;
          break;
        case S.HeadLf: {
          if (c !== LF) return this.fail('HPE_LF_EXPECTED', 'Missing expected LF after headers', i);
          i++;
          if (this.inTrailers) {
            if (this.endMessage()) return this.pauseUpgrade(i);
            break;
          }
          const r = this.headersComplete(i);
          if (typeof r !== 'number') return r;
          if (r < 0) return this.pauseUpgrade(i);
          break;
        }

        // ---- bodies
        case S.BodyLength: {
          const take = Math.min(this.remaining, n - i);
          this.remaining -= take;
          const chunk = d.subarray(i, i + take);
          i += take;
          this.cb(K_ON_BODY, chunk);
          if (this.remaining === 0 && this.endMessage()) return this.pauseUpgrade(i);
          break;
        }
        case S.BodyEof:
          this.cb(K_ON_BODY, d.subarray(i));
          i = n;
          break;
        case S.ChunkSize:
          if (HEX[c]) {
            this.hexDigits++;
            this.remaining = this.remaining * 16 + HEX_VALUE[c]!;
            if (this.remaining > Number.MAX_SAFE_INTEGER) return this.fail('HPE_INVALID_CHUNK_SIZE', 'Chunk size overflow', i);
            i++;
            break;
          }
          if (this.hexDigits === 0) return this.fail('HPE_INVALID_CHUNK_SIZE', 'Invalid character in chunk size', i);
          if (c === CR) this.state = S.ChunkSizeLf;
          else if (c === 0x3b) this.state = S.ChunkExtNameStart;
          else if (c === LF) return this.fail('HPE_CR_EXPECTED', 'Missing expected CR after chunk size', i);
          else return this.fail('HPE_INVALID_CHUNK_SIZE', 'Invalid character in chunk size', i);
          i++;
          break;
        // chunk-ext = *( ";" token [ "=" ( token / quoted-string ) ] ), no whitespace (RFC 9112 §7.1.1, strict)
        case S.ChunkExtNameStart:
        case S.ChunkExtName:
        case S.ChunkExtValueStart:
        case S.ChunkExtValue:
        case S.ChunkExtQuoted:
        case S.ChunkExtQuotedEscape:
        case S.ChunkExtAfterQuoted: {
          if (++this.chunkExt > MAX_CHUNK_EXTENSIONS) return this.fail('HPE_CHUNK_EXTENSIONS_OVERFLOW', 'Chunk extensions overflow', i);
          const next = chunkExt(this.state, c);
          if (next === undefined) return this.fail('HPE_STRICT', 'Invalid character in chunk extensions', i);
          this.state = next;
          i++;
          break;
        }
        case S.ChunkSizeLf:
          if (c !== LF) return this.fail('HPE_STRICT', 'Expected LF after chunk size', i);
          i++;
          this.hexDigits = 0;
          this.chunkExt = 0;
          if (this.remaining === 0) {
            this.inTrailers = true;
            this.headerBytes = 0;
            this.state = S.FieldStart;
          } else {
            this.state = S.ChunkData;
          }
          break;
        case S.ChunkData: {
          const take = Math.min(this.remaining, n - i);
          this.remaining -= take;
          const chunk = d.subarray(i, i + take);
          i += take;
          this.cb(K_ON_BODY, chunk);
          if (this.remaining === 0) this.state = S.ChunkDataCr;
          break;
        }
        case S.ChunkDataCr:
          if (c !== CR) return this.fail('HPE_STRICT', 'Expected LF after chunk data', i);
          this.state = S.ChunkDataLf;
          i++;
          break;
        case S.ChunkDataLf:
          if (c !== LF) return this.fail('HPE_STRICT', 'Expected LF after chunk data', i);
          this.state = S.ChunkSize;
          i++;
          break;
        case S.Dead:
          return this.error!;
      }
    }
    // The read ends inside a span: keep its bytes for the next one, and count them now (as node does).
    switch (this.state) {
      case S.Method:
      case S.ReqVersion:
      case S.ResVersion:
      case S.StatusCode:
        this.carry += d.toString('latin1', mark, n);
        break;
      case S.Url:
      case S.StatusText:
      case S.Field:
      case S.Value:
        if (!this.track(n - mark)) return this.fail('HPE_HEADER_OVERFLOW', 'Header overflow', n);
        this.carry += d.toString('latin1', mark, n);
        break;
      default:
        break;
    }
    return n;
  }

  /** The special fields llhttp interprets (strict). Returns [code, reason] for an error. */
  private header(name: string, value: string, raw: string): [string, string] | undefined {
    switch (name.length) {
      case 14:
        if (name.toLowerCase() !== 'content-length') return undefined;
        if (value === '') return ['HPE_INVALID_CONTENT_LENGTH', 'Empty Content-Length'];
        if (this.flags & F_CONTENT_LENGTH) return ['HPE_UNEXPECTED_CONTENT_LENGTH', 'Duplicate Content-Length'];
        if (this.flags & F_TRANSFER_ENCODING) return ['HPE_INVALID_CONTENT_LENGTH', "Content-Length can't be present with Transfer-Encoding"];
        // Digits, then spaces only (llhttp refuses a trailing HTAB there).
        if (!/^[0-9]+ *$/.test(raw)) return ['HPE_INVALID_CONTENT_LENGTH', 'Invalid character in Content-Length'];
        this.contentLength = Number(value);
        if (!Number.isSafeInteger(this.contentLength)) return ['HPE_INVALID_CONTENT_LENGTH', 'Content-Length overflow'];
        this.flags |= F_CONTENT_LENGTH;
        return undefined;
      case 17: {
        if (name.toLowerCase() !== 'transfer-encoding') return undefined;
        // A Transfer-Encoding after one that ended in chunked: chunked is not the final coding (strict).
        if (this.flags & F_CHUNKED) return ['HPE_INVALID_TRANSFER_ENCODING', 'Invalid `Transfer-Encoding` header value'];
        this.flags |= F_TRANSFER_ENCODING;
        const codings = tokens(raw);
        const at = codings.indexOf('chunked');
        if (at === codings.length - 1) this.flags |= F_CHUNKED;
        else if (at >= 0 && this.request) return ['HPE_INVALID_TRANSFER_ENCODING', 'Invalid `Transfer-Encoding` header value'];
        return undefined;
      }
      case 10:
        if (name.toLowerCase() !== 'connection') return undefined;
        for (const token of tokens(raw)) {
          if (token === 'close') this.flags |= F_CONNECTION_CLOSE;
          else if (token === 'keep-alive') this.flags |= F_CONNECTION_KEEP_ALIVE;
          else if (token === 'upgrade') this.flags |= F_CONNECTION_UPGRADE;
        }
        return undefined;
      case 7:
        // (llhttp: an empty Upgrade asks for nothing.)
        if (value !== '' && name.toLowerCase() === 'upgrade') this.flags |= F_UPGRADE;
        return undefined;
      default:
        return undefined;
    }
  }

  /** llhttp_message_needs_eof. */
  private needsEof(): boolean {
    if (this.request) return false;
    const s = this.status;
    if ((s >= 100 && s < 200) || s === 204 || s === 304 || this.flags & F_SKIPBODY) return false;
    if (this.flags & F_TRANSFER_ENCODING && !(this.flags & F_CHUNKED)) return true;
    return !(this.flags & (F_CHUNKED | F_CONTENT_LENGTH));
  }

  /** llhttp_should_keep_alive. */
  private shouldKeepAlive(): boolean {
    if (this.minor > 0) {
      if (this.flags & F_CONNECTION_CLOSE) return false;
    } else if (!(this.flags & F_CONNECTION_KEEP_ALIVE)) {
      return false;
    }
    return !this.needsEof();
  }

  /** The state after a message (llhttp: `closed` when the connection is not kept alive). */
  private nextMessage(): S {
    return this.keepAlive || this.upgrade ? S.Start : S.Closed;
  }

  /** After the head's last CRLF (at offset `at`): the callback, then the body's framing; -1 for an upgrade pause. */
  private headersComplete(at: number): number | ParseError {
    const f = this.flags;
    if (f & F_TRANSFER_ENCODING && f & F_CONTENT_LENGTH) return this.fail('HPE_INVALID_TRANSFER_ENCODING', "Transfer-Encoding can't be present with Content-Length", at);
    // llhttp__before_headers_complete.
    if (f & F_UPGRADE && f & F_CONNECTION_UPGRADE) this.upgrade = this.request || this.status === 101;
    else this.upgrade = this.request && this.method === CONNECT;
    this.keepAlive = this.shouldKeepAlive();
    const slow = this.flushed;
    if (slow) this.flush();
    const headers = slow ? undefined : this.fields;
    this.fields = [];
    const ret = this.cb(
      K_ON_HEADERS_COMPLETE,
      this.major,
      this.minor,
      headers,
      this.request ? this.method : undefined,
      this.request && !slow ? this.url : undefined,
      this.request ? undefined : this.status,
      this.request ? undefined : this.statusText,
      this.upgrade,
      this.keepAlive,
    );
    this.headerBytes = 0;
    this.rawHead = 0;
    if (ret === 1) this.flags |= F_SKIPBODY;
    else if (ret === 2) {
      this.upgrade = true;
      this.flags |= F_SKIPBODY;
    } else if (ret !== 0 && ret !== undefined) {
      return this.fail('HPE_CB_HEADERS_COMPLETE', 'User callback error', at);
    }
    // llhttp__after_headers_complete.
    const flags = this.flags;
    const hasBody = (flags & F_CHUNKED) !== 0 || this.contentLength > 0;
    if ((this.upgrade && (this.method === CONNECT || flags & F_SKIPBODY || !hasBody)) || (!this.request && this.status === 101)) {
      this.state = S.Start;
      this.messageComplete();
      return -1;
    }
    if (!this.request && this.status === 100) return this.complete();
    if (flags & F_SKIPBODY || (!this.request && (this.status === 102 || this.status === 103 || this.status === 204 || this.status === 304))) return this.complete();
    if (flags & F_CHUNKED) {
      this.state = S.ChunkSize;
      this.remaining = 0;
      this.hexDigits = 0;
      return 0;
    }
    if (flags & F_TRANSFER_ENCODING) {
      if (this.request) return this.fail('HPE_INVALID_TRANSFER_ENCODING', 'Request has invalid `Transfer-Encoding`', at);
      this.state = S.BodyEof;
      return 0;
    }
    if (!(flags & F_CONTENT_LENGTH)) {
      if (!this.needsEof()) return this.complete();
      this.state = S.BodyEof;
      return 0;
    }
    if (this.contentLength === 0) return this.complete();
    this.remaining = this.contentLength;
    this.state = S.BodyLength;
    return 0;
  }

  /** The message ends with the head. */
  private complete(): number {
    this.state = this.nextMessage();
    this.messageComplete();
    return 0;
  }

  /** The message ends after its body; true when it was an upgrade (llhttp pauses after it). */
  private endMessage(): boolean {
    this.state = this.nextMessage();
    this.messageComplete();
    return this.upgrade;
  }

  /** The message before `at` was an upgrade: the rest of the read is another protocol's. */
  private pauseUpgrade(at: number): number {
    this.state = S.Start;
    this.afterUpgrade = at < this.current.length;
    return at;
  }
}

/** The chunk extension state after octet `c`; undefined for an octet not allowed there. */
function chunkExt(s: S, c: number): S | undefined {
  switch (s) {
    case S.ChunkExtNameStart:
      return TOKEN[c] ? S.ChunkExtName : undefined;
    case S.ChunkExtName:
      if (TOKEN[c]) return S.ChunkExtName;
      return c === 0x3d ? S.ChunkExtValueStart : c === 0x3b ? S.ChunkExtNameStart : c === CR ? S.ChunkSizeLf : undefined;
    case S.ChunkExtValueStart:
      // (llhttp takes an empty value: `;a=` then CR or `;`.)
      if (TOKEN[c]) return S.ChunkExtValue;
      return c === 0x22 ? S.ChunkExtQuoted : c === 0x3b ? S.ChunkExtNameStart : c === CR ? S.ChunkSizeLf : undefined;
    case S.ChunkExtValue:
      if (TOKEN[c]) return S.ChunkExtValue;
      return c === 0x3b ? S.ChunkExtNameStart : c === CR ? S.ChunkSizeLf : undefined;
    case S.ChunkExtQuoted:
      return c === 0x22 ? S.ChunkExtAfterQuoted : c === 0x5c ? S.ChunkExtQuotedEscape : QDTEXT[c] ? S.ChunkExtQuoted : undefined;
    case S.ChunkExtQuotedEscape:
      return c === HTAB || (c >= 0x20 && c !== 0x7f) ? S.ChunkExtQuoted : undefined;
    case S.ChunkExtAfterQuoted:
      return c === 0x3b ? S.ChunkExtNameStart : c === CR ? S.ChunkSizeLf : undefined;
    default:
      return undefined;
  }
}

/**
 * A comma-separated token list as llhttp matches it: lowercased, whitespace before each token dropped,
 * only spaces after it (`chunked<HTAB>` is not `chunked`).
 */
function tokens(raw: string): string[] {
  return raw.split(',').map((t) => t.replace(/^[ \t]+/, '').replace(/ +$/, '').toLowerCase());
}

function trimEnd(s: string): string {
  let e = s.length;
  while (e > 0 && (s.charCodeAt(e - 1) === SP || s.charCodeAt(e - 1) === HTAB)) e--;
  return e === s.length ? s : s.slice(0, e);
}

/** RFC 9112 §3.2 request-target forms (origin, absolute, authority for CONNECT, asterisk). */
function validTarget(url: string, method: number): boolean {
  if (url.length === 0) return false;
  if (method === CONNECT) return true; // authority-form is checked by lb's listener, as with llhttp
  return url[0] === '/' || url === '*' || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(url);
}

// Where a key path is written in a TOML document. One pass over the text records the position of every
// table, key and array element under its full path; lookups fall back to the deepest recorded ancestor.
// The scanner assumes the text is valid TOML (it has already been parsed by smol-toml) and follows the
// TOML 1.0 grammar (https://toml.io/en/v1.0.0): tables, arrays of tables, dotted and quoted keys, inline
// tables, arrays, the four string kinds and comments. Inline tables may span lines (TOML 1.1).

export type PathSegment = string | number;

/** 1-based line and column; columns count UTF-16 code units, as JavaScript strings index them. */
export interface Position {
  line: number;
  col: number;
}

/** The map key of a path: array indexes are numbers, so ["a", 1] and ["a", "1"] differ. */
export function pathKey(path: readonly PathSegment[]): string {
  return JSON.stringify(path);
}

interface Entry {
  offset: number;
  /** False for a key only implied by a longer dotted key or header, e.g. `a` in `[a.b]`. */
  explicit: boolean;
}

const BARE_KEY = /[A-Za-z0-9_-]/;
const SCALAR_END = new Set([',', ']', '}', '#', '\n', '\r']);

class Scanner {
  private i = 0;
  readonly entries = new Map<string, Entry>();
  /** Element count of every array of tables, by pathKey. */
  private readonly aot = new Map<string, number>();

  constructor(private readonly s: string) {}

  scan(): void {
    let table: PathSegment[] = [];
    for (;;) {
      this.skipBlank();
      if (this.i >= this.s.length) return;
      if (this.s[this.i] === '[') table = this.header();
      else this.keyValue(table);
    }
  }

  private record(path: PathSegment[], offset: number, explicit: boolean): void {
    const key = pathKey(path);
    const old = this.entries.get(key);
    if (!old || (explicit && !old.explicit)) this.entries.set(key, { offset, explicit });
  }

  private header(): PathSegment[] {
    const start = this.i;
    const isArray = this.s.startsWith('[[', this.i);
    this.i += isArray ? 2 : 1;
    const keys = this.key();
    this.skipSpace();
    this.i += isArray ? 2 : 1;
    const path: PathSegment[] = [];
    keys.forEach(([name, offset], k) => {
      const last = k === keys.length - 1;
      path.push(name);
      this.record(path, offset, last);
      const count = this.aot.get(pathKey(path));
      if (count !== undefined && !(last && isArray)) path.push(count - 1);
    });
    if (isArray) {
      const key = pathKey(path);
      const n = this.aot.get(key) ?? 0;
      this.aot.set(key, n + 1);
      path.push(n);
      this.record(path, start, true);
    }
    return path;
  }

  /** `a.b."c" = value`, relative to `base`. */
  private keyValue(base: PathSegment[]): void {
    const path = [...base];
    const keys = this.key();
    keys.forEach(([name, offset], k) => {
      path.push(name);
      this.record(path, offset, k === keys.length - 1);
    });
    this.skipSpace();
    this.i++; // '='
    this.skipSpace();
    this.value(path);
  }

  /** A dotted key: its segments, each with the offset where it starts. */
  private key(): Array<[string, number]> {
    const out: Array<[string, number]> = [];
    for (;;) {
      this.skipSpace();
      const start = this.i;
      const c = this.s[this.i];
      let name: string;
      if (c === '"') name = this.basicString();
      else if (c === "'") name = this.literalString();
      else {
        while (this.i < this.s.length && BARE_KEY.test(this.s[this.i] as string)) this.i++;
        name = this.s.slice(start, this.i);
      }
      out.push([name, start]);
      this.skipSpace();
      if (this.s[this.i] !== '.') return out;
      this.i++;
    }
  }

  private value(path: PathSegment[]): void {
    const c = this.s[this.i];
    if (c === '"' || c === "'") {
      if (this.s.startsWith(c.repeat(3), this.i)) this.multilineString(c);
      else if (c === '"') this.basicString();
      else this.literalString();
    } else if (c === '{') {
      this.i++;
      for (;;) {
        this.skipBlank();
        if (this.s[this.i] === '}' || this.i >= this.s.length) break;
        this.keyValue(path);
        this.skipBlank();
        if (this.s[this.i] === ',') this.i++;
      }
      this.i++;
    } else if (c === '[') {
      this.i++;
      for (let n = 0; ; n++) {
        this.skipBlank();
        if (this.s[this.i] === ']' || this.i >= this.s.length) break;
        const element = [...path, n];
        const before = this.i;
        this.record(element, before, true);
        this.value(element);
        if (this.i === before) this.i++;
        this.skipBlank();
        if (this.s[this.i] === ',') this.i++;
      }
      this.i++;
    } else {
      // Numbers, booleans, dates and times (which may contain a space): up to the next delimiter.
      while (this.i < this.s.length && !SCALAR_END.has(this.s[this.i] as string)) this.i++;
    }
  }

  /** At the opening quote; returns the decoded text and leaves the scanner after the closing quote. */
  private basicString(): string {
    let out = '';
    this.i++;
    while (this.i < this.s.length) {
      const c = this.s[this.i] as string;
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c === '\\') {
        const [text, length] = unescape(this.s, this.i);
        out += text;
        this.i += length;
      } else {
        out += c;
        this.i++;
      }
    }
    return out;
  }

  private literalString(): string {
    const end = this.s.indexOf("'", this.i + 1);
    const stop = end < 0 ? this.s.length : end;
    const text = this.s.slice(this.i + 1, stop);
    this.i = stop + 1;
    return text;
  }

  /** `"""..."""` or `'''...'''`; up to two quotes may directly precede the closing delimiter. */
  private multilineString(q: string): void {
    this.i += 3;
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (q === '"' && c === '\\') {
        this.i += 2;
      } else if (c === q && this.s.startsWith(q.repeat(3), this.i)) {
        let run = 3;
        while (run < 5 && this.s[this.i + run] === q) run++;
        this.i += run;
        return;
      } else {
        this.i++;
      }
    }
  }

  private skipSpace(): void {
    while (this.s[this.i] === ' ' || this.s[this.i] === '\t') this.i++;
  }

  /** Whitespace, newlines and comments. */
  private skipBlank(): void {
    for (;;) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') this.i++;
      else if (c === '#') {
        const nl = this.s.indexOf('\n', this.i);
        this.i = nl < 0 ? this.s.length : nl;
      } else return;
    }
  }
}

const ESCAPES: Readonly<Record<string, string>> = {
  b: '\b', t: '\t', n: '\n', f: '\f', r: '\r', e: '\x1b', '"': '"', '\\': '\\',
};

/** The escape sequence at s[i] (a backslash) in a basic string: its text and its length in the source. */
function unescape(s: string, i: number): [string, number] {
  const c = s[i + 1] ?? '';
  const simple = ESCAPES[c];
  if (simple !== undefined) return [simple, 2];
  const hexLength = c === 'u' ? 4 : c === 'U' ? 8 : c === 'x' ? 2 : 0;
  if (hexLength > 0) {
    const code = parseInt(s.slice(i + 2, i + 2 + hexLength), 16);
    const text = Number.isNaN(code) || code > 0x10ffff ? '' : String.fromCodePoint(code);
    return [text, 2 + hexLength];
  }
  return [c, 2];
}

/** Offsets where lines start, for offset → line/col. */
function lineStarts(s: string): number[] {
  const starts = [0];
  for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) starts.push(i + 1);
  return starts;
}

function position(starts: readonly number[], offset: number): Position {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((starts[mid] as number) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, col: offset - (starts[lo] as number) + 1 };
}

export type Locator = (path: readonly PathSegment[]) => Position;

/**
 * Scans `text` once and returns a lookup: the position of `path`, or of its deepest ancestor written in
 * the text, or line 1 col 1 when not even its first segment is.
 */
export function createLocator(text: string): Locator {
  const scanner = new Scanner(text);
  scanner.scan();
  const starts = lineStarts(text);
  return (path) => {
    for (let n = path.length; n > 0; n--) {
      const e = scanner.entries.get(pathKey(path.slice(0, n)));
      if (e) return position(starts, e.offset);
    }
    return { line: 1, col: 1 };
  };
}

/** One-off form of createLocator(text)(path). */
export function locate(text: string, path: readonly PathSegment[]): Position {
  return createLocator(text)(path);
}

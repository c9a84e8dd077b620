// Every timer of the health monitor lives here, by key, so that `stop()` is one call and a callback can
// never throw out of a timer: errors (sync or async) go to `onError`.

export class Timers {
  private readonly map = new Map<string, NodeJS.Timeout>();

  constructor(private readonly onError: (key: string, err: unknown) => void) {}

  /** (Re)arms `key` to run `fn` in `ms` (clamped to >= 0); an earlier timer under the same key is cleared. */
  set(key: string, ms: number, fn: () => unknown): void {
    this.clear(key);
    const t = setTimeout(() => {
      if (this.map.get(key) === t) this.map.delete(key);
      try {
        const r = fn();
        if (r instanceof Promise) r.catch((err: unknown) => this.onError(key, err));
      } catch (err) {
        this.onError(key, err);
      }
    }, Math.max(0, ms));
    this.map.set(key, t);
  }

  has(key: string): boolean {
    return this.map.has(key);
  }

  clear(key: string): void {
    const t = this.map.get(key);
    if (t) {
      clearTimeout(t);
      this.map.delete(key);
    }
  }

  clearAll(): void {
    for (const t of this.map.values()) clearTimeout(t);
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

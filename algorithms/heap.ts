// An indexed binary min-heap over the integers 0 .. capacity-1 (candidate positions), for the O(log N)
// pickers (weighted-round-robin and least-connections above SMALL_POOL candidates). Entries are ordered
// by (primary[i], secondary[i], i), arrays the caller owns and writes: a strict total order, so that the
// heap and a plain O(N) scan for the minimum agree on every pick. The comparison is written out rather
// than passed as a function, which V8 would not inline across heaps of different keys. `pos` lets an
// entry whose key changed be moved in O(log N) (update), as in Sedgewick's IndexMinPQ. No allocation
// after construction.

/**
 * Pools up to this many eligible candidates keep the O(N) scans of weighted-round-robin (NGINX smooth WRR)
 * and least-connections; above it they use the O(log N) heaps. At this size a scan costs about as much as
 * a heap operation (see docs/benchmarks.md, "pick cost").
 */
export const SMALL_POOL = 32;

export class IndexedHeap {
  /** heap[k]: the entry at heap slot k. */
  private readonly heap: Int32Array;
  /** pos[i]: the heap slot of entry i, -1 when i is not in the heap. */
  private readonly pos: Int32Array;
  size = 0;

  constructor(
    capacity: number,
    private readonly primary: Float64Array,
    private readonly secondary: Float64Array = new Float64Array(capacity),
  ) {
    this.heap = new Int32Array(capacity);
    this.pos = new Int32Array(capacity).fill(-1);
  }

  private less(a: number, b: number): boolean {
    const pa = this.primary[a]!;
    const pb = this.primary[b]!;
    if (pa !== pb) return pa < pb;
    const sa = this.secondary[a]!;
    const sb = this.secondary[b]!;
    return sa !== sb ? sa < sb : a < b;
  }

  /** The least entry, or -1 when empty. */
  top(): number {
    return this.size > 0 ? this.heap[0]! : -1;
  }

  has(i: number): boolean {
    return this.pos[i]! >= 0;
  }

  push(i: number): void {
    const k = this.size++;
    this.heap[k] = i;
    this.pos[i] = k;
    this.up(k);
  }

  /** Removes and returns the least entry (-1 when empty). */
  pop(): number {
    if (this.size === 0) return -1;
    const top = this.heap[0]!;
    this.remove(top);
    return top;
  }

  remove(i: number): void {
    const k = this.pos[i]!;
    if (k < 0) return;
    const last = this.heap[--this.size]!;
    this.pos[i] = -1;
    if (last === i) return;
    this.heap[k] = last;
    this.pos[last] = k;
    this.up(k);
    this.down(this.pos[last]!);
  }

  /** Entry i's key changed: restores the heap order. */
  update(i: number): void {
    const k = this.pos[i]!;
    if (k < 0) return;
    this.up(k);
    this.down(this.pos[i]!);
  }

  private up(k: number): void {
    const { heap, pos } = this;
    const e = heap[k]!;
    while (k > 0) {
      const parent = (k - 1) >> 1;
      const p = heap[parent]!;
      if (!this.less(e, p)) break;
      heap[k] = p;
      pos[p] = k;
      k = parent;
    }
    heap[k] = e;
    pos[e] = k;
  }

  private down(k: number): void {
    const { heap, pos, size } = this;
    const e = heap[k]!;
    for (;;) {
      let c = 2 * k + 1;
      if (c >= size) break;
      if (c + 1 < size && this.less(heap[c + 1]!, heap[c]!)) c++;
      const child = heap[c]!;
      if (!this.less(child, e)) break;
      heap[k] = child;
      pos[child] = k;
      k = c;
    }
    heap[k] = e;
    pos[e] = k;
  }
}

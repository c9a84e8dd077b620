// The one interface every balancing algorithm implements.
//
// An Algorithm builds a Picker from a list of backends. The Picker is built once from the membership and
// weights at that moment and is then immutable in membership and weights: a weight change or a backend
// added/removed makes the pool build a new Picker and swap it in (Pingora's selection model). A Picker may
// keep private rotation state (round-robin counters, smooth-WRR current weights) and may read a
// candidate's `inflight` live, at pick time.
//
// Algorithms never read health or admin state. The caller passes a `usable` predicate that already folds in
// health, drain, weight 0 and "already tried for this request" (retries); a Picker walks its candidates in
// its own preference order and returns the first usable one, or undefined when none is, so failover works
// the same way for every algorithm.

export interface Candidate {
  /** Stable identity, unique in the pool; the input of hash-based algorithms. */
  readonly name: string;
  /** Weight as configured or set at runtime (> 0 for every candidate a Picker is built with; see below). */
  readonly weight: number;
  /** Requests/connections in flight to this backend from this process, read live. */
  readonly inflight: number;
}

export interface PickContext {
  /**
   * Requests/connections in flight over all of the Picker's candidates (the sum of their `inflight`), when
   * the caller keeps that sum incrementally (the pool does). Bounded-load hashing reads it; a Picker that
   * needs it and finds it undefined sums the candidates itself (O(N)).
   */
  readonly inflightTotal?: number;
  /**
   * The request's hash key (client IP, a header value, ...), for algorithms with `usesKey`. Undefined when
   * the request has none (e.g. the header is absent): hash algorithms then fall back to a round-robin walk
   * over usable candidates, as HAProxy's `balance hdr()` does.
   */
  readonly key?: string;
}

export type Usable<B> = (candidate: B, index: number) => boolean;

/** How a request or connection sent to a candidate ended (see Picker.done). */
export interface Outcome {
  /**
   * Milliseconds from sending to the end: http, until the response is complete (or the attempt failed);
   * tcp and websocket upgrades, the connect time.
   */
  readonly latencyMs: number;
  /** False when the attempt failed (connect error, reset, timeout, 5xx counted as failure by `passive`). */
  readonly ok: boolean;
  /** http: the response status, when one came. */
  readonly status?: number;
}

export interface Picker<B extends Candidate = Candidate> {
  /** The first usable candidate in this algorithm's preference order, or undefined when none is usable. */
  pick(ctx: PickContext, usable: Usable<B>): B | undefined;
  /**
   * Optional completion callback: the data plane calls it once for every attempt sent to `candidate` (a
   * retry is a new attempt) when that attempt ends, with the candidate's `inflight` already decremented.
   * Latency-aware algorithms (peak-ewma) learn from it. `candidate` may belong to an older Picker of the
   * same pool (an attempt that began before a rebuild): ignore candidates not known.
   */
  done?(candidate: B, outcome: Outcome): void;
  /**
   * Optional in-flight hook: called after every change of a candidate's `inflight` (the pool calls it
   * from Backend.begin/end), so that a Picker may keep candidates ordered by load (least-connections above
   * 32 candidates keeps a heap) instead of reading every `inflight` at each pick. A Picker that has it
   * must be told of every change; one without it reads `inflight` live and costs the caller nothing.
   * `candidate` may belong to an older Picker of the same pool: ignore candidates not known.
   */
  inflightChanged?(candidate: B): void;
}

export interface Algorithm {
  /** The config name (`algorithm = "..."`). */
  readonly name: string;
  /** True when the algorithm honours weights (the conformance test checks the shares). */
  readonly usesWeights: boolean;
  /** True when picks depend on PickContext.key (`hash_key` is only valid for these). */
  readonly usesKey: boolean;
  /**
   * Builds a Picker over `candidates`, in the given order (the pool's config order). Candidates with
   * weight 0 may be passed; a Picker must never return them. `create` must be deterministic for
   * algorithms with `usesKey`: the same names and weights give the same picks in every process.
   */
  create<B extends Candidate>(candidates: readonly B[], options?: Readonly<Record<string, unknown>>): Picker<B>;
  /**
   * Checks a pool's `algorithm_options` table (`[pools.NAME.algorithm_options]`) before any create: one
   * message per problem, each starting with the option's key (`"table_size: must be a prime"`); config
   * loading turns them into errors located at that key. Unknown keys should be reported. Without it, any
   * options are accepted and passed to create as they are.
   */
  validateOptions?(options: Readonly<Record<string, unknown>>): string[];
}

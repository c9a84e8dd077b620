// Envoy's retry budget (cluster circuit_breakers.thresholds.retry_budget): retries in flight over a pool
// at most `budget_percent` of the pool's requests in flight, but always `min_retry_concurrency`, so that
// retries cannot multiply an outage (every request failing and retried `retries` times would send
// (1 + retries) x the traffic to backends already failing). Counted per worker, like the in-flight counts
// it is a share of.
//
// A request holds one slot while an attempt it sent as a retry is in flight; a further retry of the same
// request asks again (Envoy counts each retry attempt as it starts and releases it when it ends).

export class RetryBudget {
  /** Retry attempts in flight. */
  active = 0;

  constructor(
    private readonly percent: number,
    private readonly minRetries: number,
  ) {}

  /** A slot for one retry attempt, given the pool's requests in flight (`inflight`); false when spent. */
  acquire(inflight: number): boolean {
    const limit = Math.max(this.minRetries, Math.floor((this.percent * inflight) / 100));
    if (this.active >= limit) return false;
    this.active++;
    return true;
  }

  release(): void {
    if (this.active > 0) this.active--;
  }
}

/** Retry and budget counters of a pool for /metrics (kept across reloads with the pool's name). */
export class RetryStats {
  /** Retries sent, by the condition that caused them (connect-failure, reset, timeout, or a status). */
  readonly byReason = new Map<string, number>();
  /** Retries not sent because the budget was spent. */
  budgetExhausted = 0;

  count(reason: string): void {
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
  }
}

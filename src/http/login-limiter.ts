/**
 * Failed logins per remote address in fixed one-minute windows. Once an
 * address reaches the limit it is refused until its window is over, whatever
 * it sends: a guesser gets no answer about tokens, and the audit table gets
 * at most `max` failures plus one "rate-limited" entry per address per window.
 * Successes change nothing: a valid token from a shared address (a proxy, a
 * NAT) must not reset the count of a guesser behind the same address.
 */
export class FailedLoginLimiter {
  private readonly windows = new Map<string, { start: number; failures: number; limitReported: boolean }>();

  constructor(
    private readonly max: number,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
    /** Addresses tracked at most; memory stays bounded when many addresses fail once. */
    private readonly maxTracked = 10_000,
  ) {}

  /** Seconds until the address may try again; 0 when it may try now. */
  retryAfterSeconds(address: string): number {
    const w = this.current(address);
    if (!w || w.failures < this.max) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - this.now()) / 1000));
  }

  /** True once per window: the first refusal of an address is worth an audit entry, the rest are not. */
  firstRefusal(address: string): boolean {
    const w = this.current(address);
    if (!w || w.limitReported) return false;
    w.limitReported = true;
    return true;
  }

  /** Counts one failure; returns the failures of the address in its current window. */
  recordFailure(address: string): number {
    let w = this.current(address);
    if (!w) {
      this.makeRoom();
      w = { start: this.now(), failures: 0, limitReported: false };
      this.windows.set(address, w);
    }
    w.failures++;
    return w.failures;
  }

  get tracked(): number {
    return this.windows.size;
  }

  private current(address: string) {
    const w = this.windows.get(address);
    if (w && this.now() - w.start >= this.windowMs) {
      this.windows.delete(address);
      return undefined;
    }
    return w;
  }

  private makeRoom(): void {
    if (this.windows.size < this.maxTracked) return;
    const now = this.now();
    for (const [a, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(a);
    // Still full: forget the oldest windows (Map keeps insertion order) rather than grow without bound.
    for (const a of this.windows.keys()) {
      if (this.windows.size < this.maxTracked) break;
      this.windows.delete(a);
    }
  }
}

/**
 * Group commit: items submitted while a batch is being committed wait and go
 * into the next batch together, so N connections share one durable commit
 * (one fsync) instead of queueing N of them. Items resolve only after `run`
 * returns, i.e. after their batch committed (or failed).
 *
 * When a batch starts: every sender waits for its ACK before sending again,
 * so the senders answered by the last commit are the ones about to come back.
 * Once as many items are queued as the last batch held, the batch starts on
 * the next event-loop turn (so every frame already readable on other sockets
 * joins it); until then it waits at most `windowMs` for the rest. A lone
 * sender (last batch 1) therefore never waits, and when senders go quiet the
 * expectation drops to what actually came, so the wait is paid at most once.
 *
 * Used by HL7 inbound (one transaction per batch, a savepoint per message) and
 * by C-STORE / STOW-RS ingest (StudyService.storeInstance: windowMs 0, as the
 * instances of several associations arrive milliseconds apart anyway).
 */
export class GroupCommitQueue<I, O> {
  private pending: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Items expected back for the next batch: the size of the last one. */
  private expected = 1;
  /** Batches committed and items in them: the batching actually achieved (for metrics and tests). */
  readonly stats = { batches: 0, items: 0, largestBatch: 0 };

  constructor(
    /** Runs one batch in one transaction and returns one outcome per item, in order. */
    private readonly run: (batch: I[]) => Promise<O[]>,
    private readonly maxBatch = 64,
    /** Longest a batch waits for the senders of the previous one (0: start on the next turn, whatever is queued). */
    private readonly windowMs = 1,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.running) this.schedule();
    });
  }

  get depth(): number {
    return this.pending.length;
  }

  /** Nothing queued and no batch committing: an item submitted now starts a batch of its own on the next turn. */
  get idle(): boolean {
    return !this.running && this.pending.length === 0;
  }

  private schedule(): void {
    if (this.immediate || this.pending.length === 0) return;
    if (this.pending.length >= Math.min(this.expected, this.maxBatch) || this.windowMs <= 0) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      // A transaction over better-sqlite3 runs entirely in microtasks, so nothing else is read while it
      // runs: starting the batch on the next turn lets every frame already readable on other sockets join it.
      this.immediate = setImmediate(() => void this.drain());
    } else {
      this.timer ??= setTimeout(() => void this.drain(), this.windowMs);
    }
  }

  private async drain(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.immediate = undefined;
    this.running = true;
    try {
      const batch = this.pending.splice(0, this.maxBatch);
      this.expected = batch.length;
      this.stats.batches++;
      this.stats.items += batch.length;
      this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
      try {
        const out = await this.run(batch.map((b) => b.item));
        batch.forEach((b, i) => b.resolve(out[i]!));
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    } finally {
      this.running = false;
    }
    // Left over (more than maxBatch), or submitted while the batch ran: no reason to wait.
    if (this.pending.length > 0 && !this.immediate) this.immediate = setImmediate(() => void this.drain());
  }
}

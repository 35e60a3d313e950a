/**
 * Group commit: items submitted while a batch is being committed wait and go
 * into the next batch together, so N connections share one durable commit
 * (one fsync) instead of queueing N of them. A lone sender waits one event
 * loop turn at most. Items resolve only after `run` returns,
 * i.e. after their batch committed (or failed).
 */
export class GroupCommitQueue<I, O> {
  private pending: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  /** Batches committed and items in them: the batching actually achieved (for metrics and tests). */
  readonly stats = { batches: 0, items: 0, largestBatch: 0 };

  constructor(
    /** Runs one batch in one transaction and returns one outcome per item, in order. */
    private readonly run: (batch: I[]) => Promise<O[]>,
    private readonly maxBatch = 64,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ item, resolve, reject });
      if (!this.running) {
        this.running = true;
        // A transaction over better-sqlite3 runs entirely in microtasks, so nothing else is read while it
        // runs: starting the batch on the next turn lets every frame already readable on other sockets join it.
        setImmediate(() => void this.drain());
      }
    });
  }

  get depth(): number {
    return this.pending.length;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.maxBatch);
        this.stats.batches++;
        this.stats.items += batch.length;
        this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length);
        try {
          const out = await this.run(batch.map((b) => b.item));
          batch.forEach((b, i) => b.resolve(out[i]!));
        } catch (err) {
          for (const b of batch) b.reject(err);
        }
      }
    } finally {
      this.running = false;
    }
  }
}

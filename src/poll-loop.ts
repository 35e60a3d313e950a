/**
 * The one way a durable queue in this gateway looks for work: a pass every
 * `intervalMs`, or at once when kicked (a kick during a pass runs another
 * right after it). Passes never overlap; a failed pass is reported and the
 * next one comes as usual. The rows are the truth, so a lost kick costs at
 * most one interval.
 */
export class PollLoop {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private pass: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly run: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.running = true;
    this.schedule(0);
  }

  /** Stops scheduling and waits for the pass under way. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.pass;
  }

  kick(): void {
    if (!this.running) return;
    if (this.pass) this.again = true;
    else this.schedule(0);
  }

  /** The pass under way, if any. */
  get current(): Promise<void> | undefined {
    return this.pass;
  }

  private schedule(delayMs: number): void {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pass = this.run()
        .catch((err: unknown) => this.onError(err))
        .finally(() => {
          this.pass = undefined;
          const next = this.again ? 0 : this.intervalMs;
          this.again = false;
          this.schedule(next);
        });
    }, delayMs);
    this.timer.unref?.();
  }
}

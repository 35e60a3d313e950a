import { randomBytes } from 'node:crypto';
import type { CompiledQuery } from 'kysely';
import type { Db } from '../db/database.js';
import { createIdSource } from '../db/sortable-id.js';
import type { Logger } from '../logger.js';
import { PollLoop } from '../poll-loop.js';
import {
  claimDueJobs,
  completeJob,
  holdsClaim,
  insertJob,
  killJob,
  renewJob,
  rescheduleJob,
  retryJob,
  runPendingNow,
  type Claim,
  type ClaimWant,
} from './job.repository.js';
import type { JobRow } from './job.table.js';
import {
  JobClaimLostError,
  JobPermanentError,
  type EnqueueOptions,
  type JobContext,
  type JobHandler,
  type JobKindOptions,
  type JobOutcome,
  type JobQueue,
} from './job.types.js';

/** What the runner reports to /metrics (GatewayMetrics implements it). */
export interface JobMetrics {
  /** A job was claimed `latencySeconds` after it became due (database clock). */
  jobClaimed(kind: string, latencySeconds: number): void;
  /** A run ended: done, rescheduled, retried, dead, or lost (the claim was taken over). */
  jobFinished(kind: string, outcome: 'done' | 'rescheduled' | 'retried' | 'dead' | 'lost'): void;
}

export interface JobRunnerOptions {
  db: Db;
  logger: Logger;
  /** This process, as written in `locked_by` (the gateway's instance id). */
  workerId: string;
  /** How often the table is looked at when nothing woke the runner (other instances' enqueues, retries coming due). */
  pollMs?: number;
  metrics?: JobMetrics | undefined;
  /**
   * The database's commit notifications (OpenedDatabase.commits): a job enqueued in a transaction is claimable
   * once it commits, so the runner looks right then instead of guessing with a timer.
   */
  commits?: { add(listener: () => void): () => void } | undefined;
  /** Defaults for kinds that do not set their own. */
  defaults?: Partial<Required<JobKindOptions>>;
  random?: () => number;
}

const DEFAULTS: Required<JobKindOptions> = { concurrency: 1, leaseSeconds: 60, maxAttempts: 10, backoffBaseSeconds: 5, backoffMaxSeconds: 600 };

interface Kind {
  handler: JobHandler<unknown>;
  options: Required<JobKindOptions>;
  running: number;
}

/**
 * Full jitter: uniformly between 0 and the capped exponential delay, so jobs
 * that failed together (a destination down) come back spread out.
 */
export function backoffSeconds(attempt: number, base: number, max: number, random: () => number = Math.random): number {
  return random() * Math.min(max, base * 2 ** Math.max(0, attempt - 1));
}

/**
 * Runs the jobs of the kinds registered with it: a poll every `pollMs`, and at
 * once after this process enqueues. Per kind, at most `concurrency` jobs run at
 * a time; each runs under a lease renewed every third of its length, and a
 * renewal that finds the claim gone aborts the handler's signal. The rows are
 * the truth: a crash loses nothing but the lease time.
 */
export class JobRunner implements JobQueue {
  private readonly kinds = new Map<string, Kind>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly recurringKinds: string[] = [];
  private readonly loop: PollLoop;
  private readonly log: Logger;
  private readonly newId = createIdSource();
  private readonly defaults: Required<JobKindOptions>;
  private readonly random: () => number;
  private started = false;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeDue = Infinity;
  /** The kinds of the jobs enqueued since the last commit this runner was told of. */
  private readonly enqueuedSinceCommit = new Set<string>();
  /**
   * The kinds the next pass looks for when it is not a full one: those this process enqueued or finished a job of
   * since the last pass. A claim names every kind it looks for, and PostgreSQL plans it anew each time (planning
   * the claim for all kinds cost several times its execution); other instances' jobs, retries and later runs are
   * found by the full pass (every `pollMs`, and at once when a wakeAt timer fires; runNow hints its own kind).
   */
  private readonly hinted = new Set<string>();
  /** When the last pass that looked for every kind ran (0: one is due now). */
  private lastFullPass = 0;
  private stopListening: (() => void) | undefined;
  /** The claim statement compiled for each set of kinds, limits and leases this runner has asked with (claimDueJobs). */
  private readonly claimStatements = new Map<string, CompiledQuery>();
  private readonly pollMs: number;

  constructor(private readonly o: JobRunnerOptions) {
    this.log = o.logger.child({ component: 'jobs' });
    this.defaults = { ...DEFAULTS, ...o.defaults };
    this.random = o.random ?? Math.random;
    this.pollMs = o.pollMs ?? 1000;
    this.loop = new PollLoop(
      () => this.pass().then(() => undefined),
      this.pollMs,
      (err) => this.log.error('job claim failed', { error: (err as Error).message }),
    );
  }

  register<P>(kind: string, handler: JobHandler<P>, options: JobKindOptions = {}): void {
    if (this.kinds.has(kind)) throw new Error(`job kind ${kind} registered twice`);
    this.kinds.set(kind, { handler: handler as JobHandler<unknown>, options: { ...this.defaults, ...options }, running: 0 });
  }

  /**
   * A periodic task as a job: one job of `kind` (its kind is its key) that runs
   * `task` and then again `everySeconds` later, on whichever instance claims it,
   * never on two at once. Enqueued at start if missing (a dead one is replaced
   * at the next start); a failure is retried with backoff like any job.
   */
  recurring(kind: string, everySeconds: number, task: () => Promise<unknown>, options: JobKindOptions = {}): void {
    this.register(
      kind,
      async () => {
        await task();
        return { runAgainAt: new Date(Date.now() + everySeconds * 1000) };
      },
      options,
    );
    this.recurringKinds.push(kind);
  }

  /** Brings a recurring job's next run forward to now (database clock); a run under way is left to finish. */
  async runNow(kind: string): Promise<void> {
    await runPendingNow(this.o.db, kind, kind);
    this.hinted.add(kind);
    if (this.started && this.kinds.has(kind)) this.loop.kick();
  }

  async enqueue(trx: Db, kind: string, payload: unknown, options: EnqueueOptions = {}): Promise<void> {
    const maxAttempts = options.maxAttempts ?? this.kinds.get(kind)?.options.maxAttempts ?? this.defaults.maxAttempts;
    await insertJob(trx, {
      id: this.newId(),
      kind,
      payload: JSON.stringify(payload ?? null),
      key: options.key,
      queue: options.queue,
      runAt: options.runAt?.toISOString(),
      maxAttempts,
    });
    // Outside a transaction the row is there now; in one, it is claimable once the caller's transaction commits:
    // the commit notification kicks then. Another transaction may commit first and take that kick (it reports
    // only that some transaction committed), so a look a little later covers the rest; the poll is the backstop.
    this.hinted.add(kind);
    if (this.started && this.kinds.has(kind)) {
      if (options.runAt && options.runAt.getTime() > Date.now()) {
        this.wakeAt(options.runAt.getTime());
      } else {
        this.enqueuedSinceCommit.add(kind);
        setImmediate(() => this.loop.kick());
        setTimeout(() => {
          this.hinted.add(kind);
          this.loop.kick();
        }, 50).unref?.();
      }
    }
  }

  /**
   * A look at the table at `ms` (this host's clock; the claim itself uses the
   * database's): jobs this process knows come due then (a later run, a retry)
   * run on time instead of at the next poll. One timer, for the earliest.
   */
  private wakeAt(ms: number): void {
    if (!this.started || ms >= this.wakeDue) return;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeDue = ms;
    this.wakeTimer = setTimeout(
      () => {
        this.wakeTimer = undefined;
        this.wakeDue = Infinity;
        this.lastFullPass = 0;
        this.loop.kick();
      },
      Math.max(0, ms - Date.now() + 5),
    );
    this.wakeTimer.unref?.();
  }

  /** A transaction committed: what it enqueued can be claimed now. */
  private committed(): void {
    if (!this.started || this.enqueuedSinceCommit.size === 0) return;
    for (const kind of this.enqueuedSinceCommit) this.hinted.add(kind);
    this.enqueuedSinceCommit.clear();
    this.loop.kick();
  }

  async start(): Promise<void> {
    for (const kind of this.recurringKinds) await this.enqueue(this.o.db, kind, null, { key: kind });
    this.stopListening = this.o.commits?.add(() => this.committed());
    this.started = true;
    this.loop.start();
  }

  /** Stops claiming and waits for the jobs under way to finish (their handlers see no abort: they end as usual). */
  async stop(): Promise<void> {
    this.started = false;
    this.stopListening?.();
    this.stopListening = undefined;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    this.wakeDue = Infinity;
    await this.loop.stop();
    await this.idle();
  }

  /** Resolves when no job of this process is running. */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /**
   * Claims and runs due jobs until none is left (tests, and stop-free
   * draining): each round waits for its jobs, so jobs they enqueue run too.
   */
  async drain(kinds?: readonly string[]): Promise<void> {
    for (;;) {
      // Every kind (of `kinds`) each round: draining looks at the whole table, whatever this process knows of.
      const claimed = await this.pass(kinds ?? [...this.kinds.keys()]);
      await this.idle();
      if (claimed === 0) return;
    }
  }

  /** One look at the table: one claim statement for every kind (of `only`) with a free slot. Returns how many jobs were claimed. */
  private async pass(only?: readonly string[]): Promise<number> {
    const full = only !== undefined || Date.now() - this.lastFullPass >= this.pollMs;
    const hinted = new Set(this.hinted);
    this.hinted.clear();
    if (full && only === undefined) this.lastFullPass = Date.now();
    const wants: ClaimWant[] = [];
    for (const [kind, k] of this.kinds) {
      if (only ? !only.includes(kind) : !full && !hinted.has(kind)) continue;
      const free = k.options.concurrency - k.running;
      if (free > 0) wants.push({ kind, limit: free, leaseSeconds: k.options.leaseSeconds });
    }
    if (wants.length === 0) return 0;
    const token = randomBytes(12).toString('hex');
    const rows = await claimDueJobs(this.o.db, wants, this.o.workerId, token, this.claimStatements);
    let claimed = 0;
    for (const row of rows) {
      const k = this.kinds.get(row.kind)!;
      if (row.state === 'dead') {
        this.log.warn('job dead-lettered: its runs never finished', { jobId: row.id, kind: row.kind, attempts: row.attempts });
        this.o.metrics?.jobFinished(row.kind, 'dead');
        continue;
      }
      claimed++;
      this.o.metrics?.jobClaimed(row.kind, Math.max(0, (Date.parse(row.locked_until!) - k.options.leaseSeconds * 1000 - Date.parse(row.run_at)) / 1000));
      k.running++;
      const run = this.run(k, row, { id: row.id, workerId: this.o.workerId, token }).finally(() => {
        k.running--;
        this.inflight.delete(run);
        this.hinted.add(row.kind);
        // A slot is free: more of this kind (or the next in its queue) may be due.
        if (this.started) this.loop.kick();
      });
      this.inflight.add(run);
    }
    return claimed;
  }

  private async run(k: Kind, row: JobRow, claim: Claim): Promise<void> {
    const db = this.o.db;
    const log = this.log.child({ jobId: row.id, kind: row.kind, attempt: row.attempts });
    const abort = new AbortController();
    const lost = (): JobClaimLostError => {
      const err = new JobClaimLostError(row.id);
      if (!abort.signal.aborted) abort.abort(err);
      return err;
    };
    const leaseMs = k.options.leaseSeconds * 1000;
    let renewedAt = Date.now();
    const renew = async (): Promise<void> => {
      if (abort.signal.aborted) throw lost();
      if (!(await renewJob(db, claim, k.options.leaseSeconds))) throw lost();
      renewedAt = Date.now();
    };
    const timer = setInterval(
      () => {
        renew().catch((err: unknown) => {
          if (err instanceof JobClaimLostError) return;
          // The database is unreachable: once the lease has run out by our own count, another worker may take the job.
          if (Date.now() - renewedAt >= leaseMs) lost();
          log.warn('job lease renewal failed', { error: (err as Error).message });
        });
      },
      Math.max(50, Math.floor(leaseMs / 3)),
    );
    timer.unref?.();
    // Set when the handler completed the job inside a fenced transaction and that transaction committed.
    let completedIn: Db | undefined;
    let completed = false;
    const context: JobContext<unknown> = {
      id: row.id,
      kind: row.kind,
      payload: JSON.parse(row.payload) as unknown,
      attempt: row.attempts,
      maxAttempts: row.max_attempts,
      signal: abort.signal,
      renew,
      fenced: async <T>(fn: (trx: Db) => Promise<T>): Promise<T> => {
        if (abort.signal.aborted) throw lost();
        try {
          const result = await db.transaction().execute(async (trx) => {
            const r = await fn(trx);
            // The fence is checked last, just before COMMIT: the check locks the job row (PostgreSQL) until the commit,
            // so a takeover cannot slip between it and the commit, and a lost claim rolls back everything `fn` wrote.
            // A transaction that completed the job needs no check: the fenced delete found the claim ours.
            if (completedIn !== trx && !(await holdsClaim(trx, claim))) throw lost();
            return r;
          });
          if (completedIn !== undefined) completed = true;
          return result;
        } finally {
          completedIn = undefined;
        }
      },
      completeIn: async (trx: Db): Promise<void> => {
        // Fenced like every completion: the delete finds the row only while the claim is ours, and locks it to the commit.
        if (!(await completeJob(trx, claim))) throw lost();
        completedIn = trx;
      },
    };
    let outcome: JobOutcome = undefined;
    let failure: unknown;
    let failed = false;
    try {
      outcome = await k.handler(context);
    } catch (err) {
      failed = true;
      failure = err;
    } finally {
      clearInterval(timer);
    }
    try {
      if (completed) {
        // The row went with the handler's last transaction: nothing left to write.
        if (failed) log.warn('job completed, then its handler failed (not retried)', { error: errorText(failure) });
        this.o.metrics?.jobFinished(row.kind, 'done');
        return;
      }
      if (abort.signal.aborted || failure instanceof JobClaimLostError) {
        log.warn('job claim lost: another worker owns it now; this run wrote nothing more');
        this.o.metrics?.jobFinished(row.kind, 'lost');
        return;
      }
      let written: boolean;
      let result: 'done' | 'rescheduled' | 'retried' | 'dead';
      if (!failed) {
        if (outcome && outcome.runAgainAt) {
          written = await rescheduleJob(db, claim, outcome.runAgainAt.toISOString());
          result = 'rescheduled';
          if (written) this.wakeAt(outcome.runAgainAt.getTime());
        } else {
          written = await completeJob(db, claim);
          result = 'done';
        }
      } else {
        const message = errorText(failure);
        if (failure instanceof JobPermanentError || row.attempts >= row.max_attempts) {
          written = await killJob(db, claim, message);
          result = 'dead';
          log.warn('job dead-lettered', { error: message, maxAttempts: row.max_attempts });
        } else {
          const delay = backoffSeconds(row.attempts, k.options.backoffBaseSeconds, k.options.backoffMaxSeconds, this.random);
          written = await retryJob(db, claim, message, delay);
          result = 'retried';
          if (written) this.wakeAt(Date.now() + delay * 1000);
          log.info('job failed, will retry', { error: message, retryInSeconds: Math.round(delay) });
        }
      }
      if (!written) {
        log.warn('job claim lost before its outcome was written: another worker owns it now');
        this.o.metrics?.jobFinished(row.kind, 'lost');
        return;
      }
      this.o.metrics?.jobFinished(row.kind, result);
    } catch (err) {
      // The outcome could not be written (database down): the lease runs out and the job runs again.
      log.error('job outcome not recorded; it will run again when its lease expires', { error: (err as Error).message });
    }
  }
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.length > 2000 ? `${text.slice(0, 2000)}…` : text;
}

import type { Db } from '../db/database.js';

/**
 * The contract of the one durable job engine (src/jobs/): every background task
 * (deliveries, write-backs, outputs, audit messages, SLA checks, stability,
 * rule evaluations) is a job of a kind, enqueued in the transaction of the data
 * that causes it and run by the handler registered for its kind.
 */

/** A claimed job as its handler sees it. */
export interface JobContext<P = unknown> {
  readonly id: string;
  readonly kind: string;
  readonly payload: P;
  /** 1 on the first run: attempts are counted when the job is claimed, so a run that kills the process counts. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Aborted when the claim is lost (renewal failed, or the lease ran out and another worker took the job): stop, write nothing. */
  readonly signal: AbortSignal;
  /** Extends the lease (database clock); throws JobClaimLostError and aborts `signal` if the claim is no longer this worker's. */
  renew(): Promise<void>;
  /**
   * Runs `fn` in a transaction that commits only while the claim is still this worker's (fencing: checked before
   * COMMIT, with the job row locked to it); otherwise rolls back what `fn` wrote and throws JobClaimLostError.
   * `fn` writes to the database only (no sends): its effects must be undone by the rollback.
   */
  fenced<T>(fn: (trx: Db) => Promise<T>): Promise<T>;
  /**
   * Completes the job inside `trx`, the handler's last fenced transaction: the job row goes with the handler's
   * writes (one commit, no completion of its own after it). Once that transaction commits the run is done,
   * whatever the handler returns or throws afterwards.
   */
  completeIn(trx: Db): Promise<void>;
}

/**
 * What a handler returns: nothing (done: the job is completed), or a time to run
 * again without counting a failure (a poll, a wait for the next step). A thrown
 * error is a failure: retried with backoff and jitter while attempts remain, then
 * dead-lettered; a `JobPermanentError` is dead-lettered at once.
 */
export type JobOutcome = void | { readonly runAgainAt: Date };

export type JobHandler<P = unknown> = (job: JobContext<P>) => Promise<JobOutcome>;

export interface EnqueueOptions {
  /** De-duplication: while a job of this kind and key is not finished, enqueuing another is a no-op. */
  readonly key?: string;
  /** Jobs that share a queue run one at a time, oldest first (one destination's deliveries, one case's write-backs). */
  readonly queue?: string;
  /** Not before (default: now, by the database's clock). */
  readonly runAt?: Date;
  readonly maxAttempts?: number;
}

export interface JobKindOptions {
  /** Jobs of this kind one worker runs at once (default 1). */
  readonly concurrency?: number;
  readonly leaseSeconds?: number;
  readonly maxAttempts?: number;
  readonly backoffBaseSeconds?: number;
  readonly backoffMaxSeconds?: number;
}

export interface JobQueue {
  /** Inside the caller's transaction: the job exists if and only if the caller's data commits. */
  enqueue(trx: Db, kind: string, payload: unknown, options?: EnqueueOptions): Promise<void>;
  register<P>(kind: string, handler: JobHandler<P>, options?: JobKindOptions): void;
}

/** The claim was lost: the handler must stop without writing. */
export class JobClaimLostError extends Error {
  constructor(jobId: string) {
    super(`job ${jobId}: claim lost`);
    this.name = 'JobClaimLostError';
  }
}

/** A failure no retry can cure (refused by the peer, invalid data): dead-letter at once. */
export class JobPermanentError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'JobPermanentError';
  }
}

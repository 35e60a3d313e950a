import { sql, type CompiledQuery } from 'kysely';
import type { Db } from '../db/database.js';
import { dbNow, forClaim, forUpdate } from '../db/dialect.js';
import { JOB_COLUMNS, type JobRow, type JobState } from './job.table.js';

/**
 * All SQL of the job engine. Every time comparison and every time written for
 * a lease uses the database's clock (`dbNow`), never this host's. Writes by a
 * worker are fenced: they match the job id, the worker and the claim's token,
 * so a worker whose claim was taken over changes nothing.
 */

/** Why a job was dead-lettered at claim time: its runs so far all ended without a completion or a failure being recorded. */
export const CRASHED = 'every attempt ended without finishing (the worker stopped or the process died)';

export interface NewJob {
  id: string;
  kind: string;
  payload: string;
  key?: string | undefined;
  queue?: string | undefined;
  /** ISO-8601; undefined: now by the database's clock. */
  runAt?: string | undefined;
  maxAttempts: number;
}

export interface Claim {
  id: string;
  workerId: string;
  token: string;
}

/** Inserts the job in the caller's transaction; a no-op while an unfinished job of the same kind and key exists. */
export async function insertJob(db: Db, job: NewJob): Promise<boolean> {
  const now = dbNow(db);
  const result = await db
    .insertInto('jobs')
    .values({
      id: job.id,
      kind: job.kind,
      key: job.key ?? null,
      active_key: job.key ?? null,
      queue: job.queue ?? null,
      payload: job.payload,
      state: 'pending',
      run_at: job.runAt ?? now,
      attempts: 0,
      max_attempts: job.maxAttempts,
      locked_by: null,
      lock_token: null,
      locked_until: null,
      last_error: null,
      created_at: now,
      updated_at: now,
    })
    .onConflict((oc) => oc.columns(['kind', 'active_key']).doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0) > 0;
}

/** What one pass wants to claim of one kind: at most `limit` jobs (its free slots), each leased for `leaseSeconds`. */
export interface ClaimWant {
  kind: string;
  limit: number;
  leaseSeconds: number;
}

/**
 * The one claim statement, for every kind a pass has room for at once (one
 * round trip, however many kinds are registered): per kind, up to its `limit`
 * due jobs, oldest due first, taken by `workerId` with a fresh `token` until
 * now + the kind's `leaseSeconds` (database clock). Due: pending with `run_at`
 * passed, or running with its lease expired (its worker died or stalled). A job
 * whose `queue` holds an earlier unfinished job is not due: a queue runs one job
 * at a time, in creation order. Attempts are counted here, so a run that kills
 * the process counts; a job that would exceed its attempts is dead-lettered by
 * this same statement instead of being run again (returned with state 'dead' so
 * the caller can report it).
 */
export async function claimDueJobs(
  db: Db,
  wants: readonly ClaimWant[],
  workerId: string,
  token: string,
  cache?: Map<string, CompiledQuery>,
): Promise<JobRow[]> {
  const wanted = wants.filter((w) => w.limit > 0);
  if (wanted.length === 0) return [];
  // Building this statement costs more than running it (a derived table per kind), and a runner claims with the same
  // kinds, limits and leases pass after pass: compiled once per such set, with placeholders for the worker and token.
  const signature = wanted.map((w) => `${w.kind}:${w.limit}:${w.leaseSeconds}`).join('|');
  let compiled = cache?.get(signature);
  if (!compiled) {
    compiled = buildClaim(db, wanted, WORKER_PLACEHOLDER, TOKEN_PLACEHOLDER).compile();
    if (cache) {
      if (cache.size >= 256) cache.clear();
      cache.set(signature, compiled);
    }
  }
  const parameters = compiled.parameters.map((p) => (p === WORKER_PLACEHOLDER ? workerId : p === TOKEN_PLACEHOLDER ? token : p));
  const result = await db.executeQuery<JobRow>({ ...compiled, parameters });
  return result.rows;
}

const WORKER_PLACEHOLDER = '\u0000worker';
const TOKEN_PLACEHOLDER = '\u0000token';

function buildClaim(db: Db, wanted: readonly ClaimWant[], workerId: string, token: string) {
  const now = dbNow(db);
  const exhausted = sql<boolean>`attempts + 1 > max_attempts`;
  // Each kind's candidates in a derived table of their own: its LIMIT applies to that kind alone, and on PostgreSQL
  // its rows are locked there, skipping rows another instance has locked.
  const arm = (w: ClaimWant) =>
    db
      .selectFrom(
        forClaim(
          db,
          db
            .selectFrom('jobs as j')
            .select('j.id')
            .where('j.kind', '=', w.kind)
            .where((eb) =>
              eb.or([
                eb.and([eb('j.state', '=', 'pending'), eb('j.run_at', '<=', now)]),
                eb.and([eb('j.state', '=', 'running'), eb('j.locked_until', '<=', now)]),
              ]),
            )
            .where((eb) =>
              eb.or([
                eb('j.queue', 'is', null),
                eb.not(
                  eb.exists(
                    eb.selectFrom('jobs as e').select('e.id').whereRef('e.queue', '=', 'j.queue').whereRef('e.id', '<', 'j.id').where('e.state', '<>', 'dead'),
                  ),
                ),
              ]),
            )
            .orderBy('j.run_at')
            .orderBy('j.id')
            .limit(w.limit),
        ).as('k'),
      )
      .select('k.id');
  let candidates = arm(wanted[0]!);
  for (const w of wanted.slice(1)) candidates = candidates.unionAll(arm(w));
  const leases = new Set(wanted.map((w) => w.leaseSeconds));
  const lockedUntil =
    leases.size === 1
      ? dbNow(db, wanted[0]!.leaseSeconds)
      : sql<string>`case kind ${sql.join(
          wanted.map((w) => sql`when ${w.kind} then ${dbNow(db, w.leaseSeconds)}`),
          sql` `,
        )} end`;
  return db
    .updateTable('jobs')
    .set({
      state: sql<JobState>`case when ${exhausted} then 'dead' else 'running' end`,
      attempts: sql<number>`case when ${exhausted} then attempts else attempts + 1 end`,
      active_key: sql<string | null>`case when ${exhausted} then null else active_key end`,
      last_error: sql<string | null>`case when ${exhausted} then ${CRASHED} else last_error end`,
      locked_by: workerId,
      lock_token: token,
      locked_until: lockedUntil,
      updated_at: now,
    })
    .where('id', 'in', candidates)
    .returning(JOB_COLUMNS);
}

/** The claim of one kind (claimDueJobs with one want): up to `limit` due jobs of `kind`. */
export async function claimJobs(db: Db, kind: string, workerId: string, token: string, leaseSeconds: number, limit: number): Promise<JobRow[]> {
  return claimDueJobs(db, [{ kind, limit, leaseSeconds }], workerId, token);
}

/** Done: the job is removed. False if the claim was no longer this worker's. */
export async function completeJob(db: Db, c: Claim): Promise<boolean> {
  const r = await fenced(db.deleteFrom('jobs'), c).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** Runs again at `runAt` without counting this run as an attempt (a poll, a wait for the next step). */
export async function rescheduleJob(db: Db, c: Claim, runAt: string): Promise<boolean> {
  const r = await fenced(
    db.updateTable('jobs').set({
      state: 'pending',
      run_at: runAt,
      attempts: sql<number>`case when attempts > 0 then attempts - 1 else 0 end`,
      locked_by: null,
      lock_token: null,
      locked_until: null,
      updated_at: dbNow(db),
    }),
    c,
  ).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** A failed run: back to pending after `retryInSeconds` (database clock), keeping the error. */
export async function retryJob(db: Db, c: Claim, error: string, retryInSeconds: number): Promise<boolean> {
  const r = await fenced(
    db.updateTable('jobs').set({
      state: 'pending',
      run_at: dbNow(db, retryInSeconds),
      last_error: error,
      locked_by: null,
      lock_token: null,
      locked_until: null,
      updated_at: dbNow(db),
    }),
    c,
  ).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Dead letter: kept for a person to see and retry; no longer de-duplicates its key. */
export async function killJob(db: Db, c: Claim, error: string): Promise<boolean> {
  const r = await fenced(
    db.updateTable('jobs').set({ state: 'dead', active_key: null, last_error: error, locked_until: null, updated_at: dbNow(db) }),
    c,
  ).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/** Extends the lease to now + `leaseSeconds` (database clock); false if the claim is no longer this worker's. */
export async function renewJob(db: Db, c: Claim, leaseSeconds: number): Promise<boolean> {
  const r = await fenced(db.updateTable('jobs').set({ locked_until: dbNow(db, leaseSeconds), updated_at: dbNow(db) }), c).executeTakeFirst();
  return Number(r.numUpdatedRows) > 0;
}

/**
 * In a transaction: whether the claim is still this worker's, locking the row
 * for the rest of the transaction on PostgreSQL (a takeover waits for the
 * fenced write to commit, then finds a new state).
 */
export async function holdsClaim(trx: Db, c: Claim): Promise<boolean> {
  const row = await forUpdate(
    trx,
    trx
      .selectFrom('jobs')
      .select('id')
      .where('id', '=', c.id)
      .where('locked_by', '=', c.workerId)
      .where('lock_token', '=', c.token)
      .where('state', '=', 'running'),
  ).executeTakeFirst();
  return row !== undefined;
}

// A structural type of the update/delete builders' `where`, so both can be fenced the same way.
interface Whereable<T> {
  where(column: 'id' | 'locked_by' | 'lock_token' | 'state', op: '=', value: string): T;
}

function fenced<T extends Whereable<T>>(q: T, c: Claim): T {
  return q.where('id', '=', c.id).where('locked_by', '=', c.workerId).where('lock_token', '=', c.token).where('state', '=', 'running');
}

/**
 * At start: jobs still running under this worker id were claimed by an earlier
 * process under the same id, which is gone; their leases end now (database
 * clock) so they run again at once rather than after their lease.
 */
export async function expireJobClaimsOf(db: Db, workerId: string): Promise<number> {
  const r = await db
    .updateTable('jobs')
    .set({ locked_until: dbNow(db) })
    .where('state', '=', 'running')
    .where('locked_by', '=', workerId)
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** A dead job back to pending, attempts reset (a person's retry). False if it is not dead, or an unfinished job already holds its key. */
export async function reviveJob(db: Db, id: string): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const row = await forUpdate(trx, trx.selectFrom('jobs').selectAll().where('id', '=', id).where('state', '=', 'dead')).executeTakeFirst();
    if (!row) return false;
    if (row.key !== null) {
      const twin = await trx.selectFrom('jobs').select('id').where('kind', '=', row.kind).where('active_key', '=', row.key).executeTakeFirst();
      if (twin) return false;
    }
    const now = dbNow(trx);
    await trx
      .updateTable('jobs')
      .set({ state: 'pending', active_key: row.key, attempts: 0, run_at: now, locked_by: null, lock_token: null, locked_until: null, updated_at: now })
      .where('id', '=', id)
      .execute();
    return true;
  });
}

/** Makes the pending job of `kind` and `key` due now (database clock): what it waited for has happened. */
export async function runPendingNow(db: Db, kind: string, key: string): Promise<void> {
  const now = dbNow(db);
  await db
    .updateTable('jobs')
    .set({ run_at: now, updated_at: now })
    .where('kind', '=', kind)
    .where('active_key', '=', key)
    .where('state', '=', 'pending')
    .execute();
}

/** Removes dead jobs of `kind` and `key` (a person's retry enqueues a fresh one in the same transaction). */
export async function deleteDeadJobs(db: Db, kind: string, key: string): Promise<number> {
  const r = await db.deleteFrom('jobs').where('kind', '=', kind).where('key', '=', key).where('state', '=', 'dead').executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Removes unfinished jobs of `kind` and `key` that no worker holds (the work they stood for is gone). */
export async function deletePendingJobs(db: Db, kind: string, key: string): Promise<number> {
  const r = await db.deleteFrom('jobs').where('kind', '=', kind).where('key', '=', key).where('state', '=', 'pending').executeTakeFirst();
  return Number(r.numDeletedRows);
}

export async function findJob(db: Db, id: string): Promise<JobRow | undefined> {
  return db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function jobsOf(db: Db, kind: string, state?: JobState): Promise<JobRow[]> {
  let q = db.selectFrom('jobs').selectAll().where('kind', '=', kind);
  if (state) q = q.where('state', '=', state);
  return q.orderBy('id').execute();
}

/** Whether a job of `kind` is running, or pending and due now (database clock): work is under way or about to be. */
export async function hasUnfinishedDueJobs(db: Db, kind: string): Promise<boolean> {
  const now = dbNow(db);
  const row = await db
    .selectFrom('jobs')
    .select('id')
    .where('kind', '=', kind)
    .where((eb) => eb.or([eb('state', '=', 'running'), eb.and([eb('state', '=', 'pending'), eb('run_at', '<=', now)])]))
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}

/** For /metrics: jobs by kind and state ('due' is pending with run_at passed, by the database's clock). */
export async function jobCounts(db: Db): Promise<{ kind: string; state: string; n: number }[]> {
  const now = dbNow(db);
  const rows = await db
    .selectFrom('jobs')
    .select((eb) => [
      'kind',
      eb
        .case()
        .when(eb.and([eb('state', '=', 'pending'), eb('run_at', '<=', now)]))
        .then('due')
        .else(eb.ref('state'))
        .end()
        .as('state'),
      eb.fn.countAll<number>().as('n'),
    ])
    .groupBy(['kind', sql`2`])
    .execute();
  return rows.map((r) => ({ kind: r.kind, state: String(r.state), n: Number(r.n) }));
}

/** For /metrics: per kind, the `run_at` of the oldest pending job that is due, and the database's now. */
export async function oldestDue(db: Db): Promise<{ kind: string; runAt: string; now: string }[]> {
  const now = dbNow(db);
  const rows = await db
    .selectFrom('jobs')
    .select((eb) => ['kind', eb.fn.min<string>('run_at').as('run_at'), now.as('now')])
    .where('state', '=', 'pending')
    .where('run_at', '<=', now)
    .groupBy('kind')
    .execute();
  return rows.map((r) => ({ kind: r.kind, runAt: r.run_at, now: r.now }));
}

/** The database's clock, as the engine uses it. */
export async function databaseNow(db: Db): Promise<string> {
  const r = await sql<{ now: string }>`select ${dbNow(db)} as now`.execute(db);
  return r.rows[0]!.now;
}

/** Keys of the unfinished jobs of `kind` (start-up checks for work that predates its job). */
export function activeKeysOf(db: Db, kind: string) {
  return db.selectFrom('jobs').select('active_key').where('kind', '=', kind).where('active_key', 'is not', null);
}
